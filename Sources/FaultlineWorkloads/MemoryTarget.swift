import CFaultline
import FaultlineMM
import FaultlineSync
#if canImport(Glibc)
import Glibc
#endif

/// What a workload does to memory, on the model or on the host kernel: the calls of the
/// vocabulary (`MemoryCall`) and the accesses. Workloads are generic over it and specialised at
/// the call site (no dynamic dispatch per operation).
public protocol MemoryTarget {
    /// Runs one memory call.
    func perform(_ call: MemoryCall) -> SyscallResult
    /// The descriptor of this thread's file `file`.
    func descriptor(ofFile file: Int) -> FileDescriptor
    /// Writes one byte (faulting as needed).
    func write(_ a: UInt64)
    /// Reads one byte (faulting as needed).
    func read(_ a: UInt64)
    /// Reads `/proc/pid/maps` whole; returns the lines read.
    func readMaps() -> Int
    /// Drops the page cache of file `file` (the next access reads it again).
    func dropCache(_ file: Int)
}

extension MemoryTarget {
    /// A private anonymous read-write mapping of `len` bytes (at `at` with MAP_FIXED when given).
    @inline(__always)
    public func mapAnon(_ len: UInt64, at: UInt64?) -> UInt64? {
        let flags: MapFlags = at == nil ? [.private, .anonymous] : [.private, .anonymous, .fixed]
        let r = perform(.mmap(addr: at ?? 0, length: len, prot: [.read, .write], flags: flags, fd: .none, offset: 0))
        return r.succeeded ? r.value : nil
    }

    /// A mapping of this thread's file `file`, shared or private, readable, writable unless `readOnly`.
    @inline(__always)
    public func mapFile(_ file: Int, _ len: UInt64, shared: Bool, readOnly: Bool) -> UInt64? {
        let prot: Prot = readOnly ? [.read, .exec] : [.read, .write]
        let r = perform(.mmap(addr: 0, length: len, prot: prot, flags: shared ? .shared : .private,
                              fd: descriptor(ofFile: file), offset: 0))
        return r.succeeded ? r.value : nil
    }

    @inline(__always)
    public func unmap(_ a: UInt64, _ len: UInt64) { _ = perform(.munmap(addr: a, length: len)) }

    @inline(__always)
    public func protect(_ a: UInt64, _ len: UInt64, writable: Bool) {
        _ = perform(.mprotect(addr: a, length: len, prot: writable ? [.read, .write] : .read))
    }

    @inline(__always)
    public func pageout(_ a: UInt64, _ len: UInt64) { _ = perform(.madvise(addr: a, length: len, advice: Advice.pageOut.rawValue)) }

    @inline(__always)
    public func dontneed(_ a: UInt64, _ len: UInt64) { _ = perform(.madvise(addr: a, length: len, advice: Advice.dontNeed.rawValue)) }
}

/// The model: one address space under one design, with per-thread files.
public struct ModelTarget: MemoryTarget {
    public let mm: AddressSpace
    let files: [MMFile]
    let reader: MapsReader
    let slowReaderNs: UInt64

    /// Files are descriptors 3, 4, … in the order given.
    @inline(__always)
    public func perform(_ call: MemoryCall) -> SyscallResult {
        call.run(on: mm, file: call.fileDescriptor.flatMap { fd in
            let i = Int(fd.number) - 3
            return i >= 0 && i < files.count ? files[i] : nil
        })
    }

    public func descriptor(ofFile file: Int) -> FileDescriptor { FileDescriptor(Int32(3 + file), path: nil) }

    @inline(__always) public func write(_ a: UInt64) { _ = mm.store(a, 1) }
    @inline(__always) public func read(_ a: UInt64) { _ = mm.load(a) }

    public func readMaps() -> Int {
        let ns = slowReaderNs
        if ns == 0 { return mm.mapsLines(reader: reader).count }
        return mm.mapsLines(reader: reader) { n in if n % 32 == 0 { fl_sleep_ns(ns) } }.count
    }

    public func dropCache(_ file: Int) {
        // posix_fadvise(POSIX_FADV_DONTNEED), as the host target does.
        files[file].invalidateMappingPages()
    }
}

/// The host kernel: real mappings, real page touches, real `/proc/self/maps`.
public struct HostTarget: MemoryTarget {
    let fds: [Int32]
    /// maps-reader: ns the reader pauses after each read() of 4 KiB (0: whole reads of 64 KiB).
    let slowReaderNs: UInt64

    @inline(__always)
    public func perform(_ call: MemoryCall) -> SyscallResult { call.runOnHost() }

    public func descriptor(ofFile file: Int) -> FileDescriptor { FileDescriptor(fds[file]) }

    @inline(__always) public func write(_ a: UInt64) { UnsafeMutablePointer<UInt8>(bitPattern: UInt(a))!.pointee = 1 }

    @inline(__always) public func read(_ a: UInt64) {
        fl_blackhole_u64(UInt64(UnsafeMutablePointer<UInt8>(bitPattern: UInt(a))!.pointee))
    }

    public func readMaps() -> Int {
        let fd = open("/proc/self/maps", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var lines = 0
        // A slow reader pauses between reads of a page (about 50 lines): the kernel takes and
        // drops its locks (or its RCU walk) inside each read(), so the pause holds nothing —
        // the host cannot pause inside one read as the model's reader does.
        let pause = slowReaderNs
        var buf = [UInt8](repeating: 0, count: pause == 0 ? 65536 : 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            for i in 0..<n where buf[i] == 10 { lines += 1 }
            if pause > 0 { fl_sleep_ns(pause) }
        }
        return lines
    }

    public func dropCache(_ file: Int) { posix_fadvise(fds[file], 0, 0, POSIX_FADV_DONTNEED) }
}
