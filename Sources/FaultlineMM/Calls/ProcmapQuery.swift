/// One `ioctl(fd, PROCMAP_QUERY, &arg)` on `/proc/pid/maps` (Linux 6.11): the VMA covering an
/// address — or, with `PROCMAP_QUERY_COVERING_OR_NEXT_VMA`, the first one ending after it —
/// that has the permissions and kind the flags ask for. The inputs of `struct procmap_query`
/// that change the answer; the helper passes a zeroed struct with a name buffer of
/// `nameBufferSize` bytes (none when 0).
public struct ProcmapQuery: Hashable, Sendable, CustomStringConvertible {
    /// `query_flags` bits.
    public static let readable: UInt64 = 0x01, writable: UInt64 = 0x02, executable: UInt64 = 0x04, shared: UInt64 = 0x08
    public static let coveringOrNext: UInt64 = 0x10, fileBacked: UInt64 = 0x20
    /// Every flag 6.18 knows; any other is EINVAL.
    public static let knownFlags: UInt64 = 0x3f
    /// `sizeof(struct procmap_query)` as of 6.11.
    public static let structSize: UInt64 = 104
    /// `_IOWR('f', 17, struct procmap_query)`.
    public static let ioctlNumber: UInt64 = 0xc068_6611

    public var address: UInt64
    public var flags: UInt64
    /// `size`: what user space says the struct's size is.
    public var size: UInt64
    public var nameBufferSize: UInt32

    public init(address: UInt64, flags: UInt64, size: UInt64 = ProcmapQuery.structSize, nameBufferSize: UInt32 = 0) {
        self.address = address
        self.flags = flags
        self.size = size
        self.nameBufferSize = nameBufferSize
    }

    /// What the helper runs: `pmq ADDR FLAGS SIZE NAMESIZE`.
    public var hostCommand: String { "pmq \(address) \(flags) \(size) \(nameBufferSize)" }

    public var description: String {
        "ioctl(maps, PROCMAP_QUERY, {size=\(size), query_flags=0x\(String(flags, radix: 16)), "
            + "query_addr=0x\(String(address, radix: 16)), vma_name_size=\(nameBufferSize)})"
    }

    public func text(outcome: ProcmapAnswer) -> String { description + " = " + outcome.description }

    /// The errno the arguments alone earn: `copy_struct_from_user()` refuses a struct shorter
    /// than up to `query_addr` (EINVAL) or larger than a page (E2BIG; the helper zeroes what
    /// lies beyond the kernel's struct, as it must be); an unknown flag is EINVAL.
    public var argumentError: Errno? {
        if size < 24 { return .EINVAL }
        if size > Linux.pageSize { return .E2BIG }
        if flags & ~Self.knownFlags != 0 { return .EINVAL }
        return nil
    }

    /// The name buffer the kernel sees: none unless the struct reaches `vma_name_size`.
    public var effectiveNameBuffer: UInt32 { size >= 84 ? nameBufferSize : 0 }

    /// Runs the query on the model.
    public func run(on mm: AddressSpace) -> ProcmapAnswer {
        switch mm.procmapQuery(self) {
        case .success(let v): return .found(v)
        case .failure(let e): return .failed(e)
        }
    }
}

/// The outputs of `struct procmap_query` that the model and the host both know (not the
/// inode and device numbers: the model's files are not the host's), or the errno.
public struct ProcmapVMA: Hashable, Sendable {
    public var start: UInt64
    public var end: UInt64
    /// `vma_flags`: PROCMAP_QUERY_VMA_READABLE/WRITABLE/EXECUTABLE/SHARED as the VMA has them.
    public var flags: UInt64
    public var pageSize: UInt64
    public var offset: UInt64
    /// `vma_name_size`: the name's length with its NUL, 0 when it has none (or none was asked).
    public var nameSize: UInt32
    public var name: String

    public init(start: UInt64, end: UInt64, flags: UInt64, pageSize: UInt64, offset: UInt64, nameSize: UInt32, name: String) {
        self.start = start
        self.end = end
        self.flags = flags
        self.pageSize = pageSize
        self.offset = offset
        self.nameSize = nameSize
        self.name = name
    }
}

extension ProcmapVMA {
    /// What `copy_to_user()` of `min(size, sizeof)` leaves the caller: fields beyond `size`
    /// stay as the caller left them (zero).
    public func copiedOut(size: UInt64) -> ProcmapVMA {
        var v = self
        if size < 32 { v.start = 0 }
        if size < 40 { v.end = 0 }
        if size < 48 { v.flags = 0 }
        if size < 56 { v.pageSize = 0 }
        if size < 64 { v.offset = 0 }
        return v
    }
}

public enum ProcmapAnswer: Hashable, Sendable, CustomStringConvertible {
    case found(ProcmapVMA)
    case failed(Errno)

    /// Reads the helper's answer: `result -ERRNO`, or
    /// `result 0 START END FLAGS PAGESIZE OFFSET NAMESIZE [NAME]`.
    public init?(hostLine line: Substring) {
        let parts = line.split(separator: " ", maxSplits: 8, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0] == "result", let r = Int64(parts[1]) else { return nil }
        if r < 0 {
            guard parts.count == 2, let e = Errno(rawValue: Int32(-r)) else { return nil }
            self = .failed(e)
            return
        }
        guard parts.count >= 8, let s = UInt64(parts[2]), let e = UInt64(parts[3]), let f = UInt64(parts[4]),
              let p = UInt64(parts[5]), let o = UInt64(parts[6]), let n = UInt32(parts[7]) else { return nil }
        self = .found(ProcmapVMA(start: s, end: e, flags: f, pageSize: p, offset: o, nameSize: n,
                                 name: parts.count > 8 ? String(parts[8]) : ""))
    }

    public var description: String {
        switch self {
        case .failed(let e): return "-1 \(e)"
        case .found(let v):
            return "0 {vma_start=0x\(String(v.start, radix: 16)), vma_end=0x\(String(v.end, radix: 16)), "
                + "vma_flags=0x\(String(v.flags, radix: 16)), vma_page_size=\(v.pageSize), "
                + "vma_offset=0x\(String(v.offset, radix: 16)), vma_name_size=\(v.nameSize)"
                + (v.name.isEmpty ? "" : ", name=\"\(v.name)\"") + "}"
        }
    }
}

extension AddressSpace {
    /// `do_procmap_query()` (6.11; 6.17 runs it under per-VMA locks): each step of the search
    /// is one step of the design's lock-free maps walk (`MMDesign.nextMapsLine`), as
    /// `query_vma_find_by_addr()` is `lock_next_vma()`'s.
    public func procmapQuery(_ q: ProcmapQuery) -> Result<ProcmapVMA, Errno> {
        // copy_struct_from_user(): smaller than up to query_addr is EINVAL, larger than a page
        // E2BIG (the helper zeroes what lies beyond the struct, as it must be).
        if let e = q.argumentError { return .failure(e) }
        let nameBuffer = q.effectiveNameBuffer
        var from = q.address
        var found: MapsLine?
        while let line = designType.nextMapsLine(self, from) {
            count(.mapsVMAs)
            let f = Self.procmapFlags(line)
            let fileBacked = line.inode != 0
            let wanted = q.flags & (ProcmapQuery.readable | ProcmapQuery.writable | ProcmapQuery.executable | ProcmapQuery.shared)
            let matches = f & wanted == wanted && (q.flags & ProcmapQuery.fileBacked == 0 || fileBacked)
            if matches && (q.flags & ProcmapQuery.coveringOrNext != 0 || line.start <= q.address) {
                found = line
                break
            }
            if q.flags & ProcmapQuery.coveringOrNext == 0 { break }
            from = line.end
        }
        guard let line = found else { return .failure(.ENOENT) }
        var v = ProcmapVMA(start: line.start, end: line.end, flags: Self.procmapFlags(line), pageSize: Linux.pageSize,
                           offset: line.offset, nameSize: 0, name: "")
        if nameBuffer > 0 && !line.path.isEmpty {
            let size = UInt32(line.path.utf8.count + 1)
            if size > nameBuffer { return .failure(.ENAMETOOLONG) }
            v.nameSize = size
            v.name = line.path
        }
        return .success(v.copiedOut(size: q.size))
    }

    /// `vma_flags` from a maps line's permissions.
    static func procmapFlags(_ l: MapsLine) -> UInt64 {
        let p = Array(l.perms.utf8)
        var f: UInt64 = 0
        if p[0] == UInt8(ascii: "r") { f |= ProcmapQuery.readable }
        if p[1] == UInt8(ascii: "w") { f |= ProcmapQuery.writable }
        if p[2] == UInt8(ascii: "x") { f |= ProcmapQuery.executable }
        if p[3] == UInt8(ascii: "s") { f |= ProcmapQuery.shared }
        return f
    }
}
