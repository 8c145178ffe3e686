import CFaultline
import FaultlineMM
import FaultlineSync
#if canImport(Glibc)
import Glibc
#endif

/// One repetition of `faultline bench fault`.
public struct FaultSample: Codable, Sendable {
    /// ns per anonymous write fault in the model (fresh region, one `access` per page).
    public var modelFaultNs: Double
    /// ns to zero one cold 4 KiB frame (memset over a region larger than the caches).
    public var zeroFrameNs: Double
    /// ns per first-touch write fault on the host kernel (real mmap, real page faults).
    public var hostFaultNs: Double
}

/// The cost of an anonymous write fault in the model against its floor (zeroing the frame)
/// and the host kernel doing the same.
public enum FaultBenchmark {
    /// Measures once; `bytes` is the region size (128 MiB in the definition).
    public static func sample(design: Design, bytes: UInt64, system: MMSystem, zeroArea: UnsafeMutableRawPointer) -> FaultSample {
        let pages = Int(bytes / Linux.pageSize)
        // Model.
        let mm = AddressSpace(system: system, design: design)
        let base = mm.mmap(0, bytes, [.read, .write], [.private, .anonymous]).must()
        var t0 = fl_now_ns()
        var a = base
        for _ in 0..<pages {
            _ = mm.access(a, .write)
            a &+= Linux.pageSize
        }
        let model = Double(fl_now_ns() - t0) / Double(pages)
        _ = mm.munmap(base, bytes)
        system.rcu.barrier()
        // Floor: zero each 4 KiB page of an area bigger than the last-level cache.
        t0 = fl_now_ns()
        var p = zeroArea
        for _ in 0..<pages {
            p.initializeMemory(as: UInt64.self, repeating: 0, count: Int(Linux.pageSize) / 8)
            p += Int(Linux.pageSize)
        }
        fl_blackhole_ptr(zeroArea)
        let zero = Double(fl_now_ns() - t0) / Double(pages)
        // Host kernel: a fresh anonymous region, one byte written per page.
        let h = Glibc.mmap(nil, Int(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        t0 = fl_now_ns()
        var q = h
        for _ in 0..<pages {
            q.storeBytes(of: 1, as: UInt8.self)
            q += Int(Linux.pageSize)
        }
        let host = Double(fl_now_ns() - t0) / Double(pages)
        Glibc.munmap(h, Int(bytes))
        return FaultSample(modelFaultNs: model, zeroFrameNs: zero, hostFaultNs: host)
    }

    /// Frames for a region of `bytes`, backed up front so the model pays no host faults; the
    /// per-thread page lists sized for this machine's memory (a pool of a few MiB alone would
    /// get Linux's batch for a few-MiB zone, 1: the pool's lock on every fault).
    public static func makeSystem(bytes: UInt64) -> MMSystem {
        MMSystem(frames: Int(bytes / Linux.pageSize) + 1024, prefault: true,
                 perCPUZoneFrames: max(sysconf(Int32(_SC_PHYS_PAGES)), Int(bytes / Linux.pageSize) + 1024))
    }

    /// An already-backed area for the zeroing floor.
    public static func makeZeroArea(bytes: UInt64) -> UnsafeMutableRawPointer {
        let p = Glibc.mmap(nil, Int(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)!
        return p
    }
}

extension Result {
    func must() -> Success {
        switch self {
        case .success(let v): return v
        case .failure(let e): fatalError("unexpected \(e)")
        }
    }
}
