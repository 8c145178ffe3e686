import CFaultline
import FaultlineMM
import FaultlineSync
#if canImport(Glibc)
import Glibc
#endif

/// What a workload does to memory, on the model or on the host kernel. Workloads are generic
/// over it and specialised at the call site (no dynamic dispatch per operation).
public protocol MemoryTarget {
    /// A private anonymous read-write mapping of `len` bytes (at `at` with MAP_FIXED when given).
    func mapAnon(_ len: UInt64, at: UInt64?) -> UInt64?
    /// A mapping of this thread's file `file`, shared or private, readable, writable unless `readOnly`.
    func mapFile(_ file: Int, _ len: UInt64, shared: Bool, readOnly: Bool) -> UInt64?
    func unmap(_ a: UInt64, _ len: UInt64)
    func protect(_ a: UInt64, _ len: UInt64, writable: Bool)
    func dontneed(_ a: UInt64, _ len: UInt64)
    /// Writes one byte (faulting as needed).
    func write(_ a: UInt64)
    /// Reads one byte (faulting as needed).
    func read(_ a: UInt64)
    /// Reads `/proc/pid/maps` whole; returns the lines read.
    func readMaps() -> Int
    /// Drops the page cache of file `file` (the next access reads it again).
    func dropCache(_ file: Int)
}

/// The model: one address space under one design, with per-thread files.
public struct ModelTarget: MemoryTarget {
    public let mm: AddressSpace
    let files: [MMFile]
    let reader: MapsReader
    let slowReaderNs: UInt64

    public func mapAnon(_ len: UInt64, at: UInt64?) -> UInt64? {
        let flags: MapFlags = at == nil ? [.private, .anonymous] : [.private, .anonymous, .fixed]
        if case .success(let a) = mm.mmap(at ?? 0, len, [.read, .write], flags) { return a }
        return nil
    }

    public func mapFile(_ file: Int, _ len: UInt64, shared: Bool, readOnly: Bool) -> UInt64? {
        let prot: Prot = readOnly ? [.read, .exec] : [.read, .write]
        if case .success(let a) = mm.mmap(0, len, prot, shared ? [.shared] : [.private], file: files[file]) { return a }
        return nil
    }

    public func unmap(_ a: UInt64, _ len: UInt64) { _ = mm.munmap(a, len) }
    public func protect(_ a: UInt64, _ len: UInt64, writable: Bool) { _ = mm.mprotect(a, len, writable ? [.read, .write] : .read) }
    public func dontneed(_ a: UInt64, _ len: UInt64) { _ = mm.madvise(a, len, .dontNeed) }
    @inline(__always) public func write(_ a: UInt64) { _ = mm.store(a, 1) }
    @inline(__always) public func read(_ a: UInt64) { _ = mm.load(a) }

    public func readMaps() -> Int {
        let ns = slowReaderNs
        if ns == 0 { return mm.mapsLines(reader: reader).count }
        return mm.mapsLines(reader: reader) { n in if n % 32 == 0 { fl_sleep_ns(ns) } }.count
    }

    public func dropCache(_ file: Int) {
        let f = files[file]
        let size = f.size
        f.resize(0)
        f.resize(size)
    }
}

/// The host kernel: real mappings, real page touches, real `/proc/self/maps`.
public struct HostTarget: MemoryTarget {
    let fds: [Int32]

    public func mapAnon(_ len: UInt64, at: UInt64?) -> UInt64? {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (at == nil ? 0 : MAP_FIXED)
        let p = Glibc.mmap(at.map { UnsafeMutableRawPointer(bitPattern: UInt($0)) } ?? nil, Int(len), PROT_READ | PROT_WRITE, flags, -1, 0)
        return p == MAP_FAILED ? nil : UInt64(UInt(bitPattern: p))
    }

    public func mapFile(_ file: Int, _ len: UInt64, shared: Bool, readOnly: Bool) -> UInt64? {
        let prot = readOnly ? PROT_READ | PROT_EXEC : PROT_READ | PROT_WRITE
        let p = Glibc.mmap(nil, Int(len), prot, shared ? MAP_SHARED : MAP_PRIVATE, fds[file], 0)
        return p == MAP_FAILED ? nil : UInt64(UInt(bitPattern: p))
    }

    public func unmap(_ a: UInt64, _ len: UInt64) { Glibc.munmap(UnsafeMutableRawPointer(bitPattern: UInt(a)), Int(len)) }

    public func protect(_ a: UInt64, _ len: UInt64, writable: Bool) {
        Glibc.mprotect(UnsafeMutableRawPointer(bitPattern: UInt(a)), Int(len), writable ? PROT_READ | PROT_WRITE : PROT_READ)
    }

    public func dontneed(_ a: UInt64, _ len: UInt64) { Glibc.madvise(UnsafeMutableRawPointer(bitPattern: UInt(a)), Int(len), MADV_DONTNEED) }

    @inline(__always) public func write(_ a: UInt64) { UnsafeMutablePointer<UInt8>(bitPattern: UInt(a))!.pointee = 1 }

    @inline(__always) public func read(_ a: UInt64) {
        fl_blackhole_u64(UInt64(UnsafeMutablePointer<UInt8>(bitPattern: UInt(a))!.pointee))
    }

    public func readMaps() -> Int {
        let fd = open("/proc/self/maps", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var lines = 0
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            for i in 0..<n where buf[i] == 10 { lines += 1 }
        }
        return lines
    }

    public func dropCache(_ file: Int) { posix_fadvise(fds[file], 0, 0, POSIX_FADV_DONTNEED) }
}
