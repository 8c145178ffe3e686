import FaultlineMM

/// One memory-management system call of a differential test, with raw arguments as a
/// program would pass them (so invalid ones are representable).
public enum Call: Sendable, Equatable {
    case mmap(addr: UInt64, length: UInt64, prot: UInt32, flags: UInt32, fd: Int, offset: UInt64)
    case munmap(addr: UInt64, length: UInt64)
    case mprotect(addr: UInt64, length: UInt64, prot: UInt32)
    case mremap(addr: UInt64, oldLength: UInt64, newLength: UInt64, flags: UInt32, newAddr: UInt64)
    case madvise(addr: UInt64, length: UInt64, advice: Int32)
    case brk(addr: UInt64)
    case fork

    /// The helper's command line.
    public var command: String {
        switch self {
        case let .mmap(a, l, p, f, fd, o): "mmap \(a) \(l) \(p) \(f) \(fd) \(o)"
        case let .munmap(a, l): "munmap \(a) \(l)"
        case let .mprotect(a, l, p): "mprotect \(a) \(l) \(p)"
        case let .mremap(a, o, n, f, na): "mremap \(a) \(o) \(n) \(f) \(na)"
        case let .madvise(a, l, adv): "madvise \(a) \(l) \(adv)"
        case let .brk(a): "brk \(a)"
        case .fork: "fork"
        }
    }

    /// Runs the call on the model; the result as the kernel encodes it (value or -errno).
    func run(on mm: AddressSpace, files: [MMFile]) -> Int64 {
        func enc(_ r: Result<UInt64, Errno>) -> Int64 {
            switch r {
            case .success(let v): Int64(bitPattern: v)
            case .failure(let e): -Int64(e.rawValue)
            }
        }
        func enc(_ r: Result<Void, Errno>) -> Int64 {
            switch r {
            case .success: 0
            case .failure(let e): -Int64(e.rawValue)
            }
        }
        switch self {
        case let .mmap(a, l, p, f, fd, o):
            let flags = MapFlags(rawValue: f)
            var file: MMFile? = nil
            if !flags.contains(.anonymous) {
                // A descriptor that is not open: the model sees no file (EBADF, after its
                // argument checks).
                if fd >= 0 && fd < files.count { file = files[fd] }
            }
            return enc(mm.mmap(a, l, Prot(rawValue: p), flags, file: file, offset: o))
        case let .munmap(a, l): return enc(mm.munmap(a, l))
        case let .mprotect(a, l, p): return enc(mm.mprotect(a, l, Prot(rawValue: p)))
        case let .mremap(a, o, n, f, na): return enc(mm.mremap(a, o, n, MremapFlags(rawValue: f), newAddress: na))
        case let .madvise(a, l, adv): return enc(mm.madvise(a, l, adv))
        case let .brk(a): return Int64(bitPattern: mm.brk(a))
        case .fork: return 0
        }
    }

    /// The call in strace syntax, with the result.
    public func strace(result: Int64, files: [String]) -> String {
        func res(_ r: Int64, hex: Bool) -> String {
            if r < 0 && r > -4096, let e = Errno(rawValue: Int32(-r)) { return "-1 \(e) (\(errnoText(e)))" }
            return hex ? "0x" + String(UInt64(bitPattern: r), radix: 16) : String(r)
        }
        func addr(_ a: UInt64) -> String { a == 0 ? "NULL" : "0x" + String(a, radix: 16) }
        switch self {
        case let .mmap(a, l, p, f, fd, o):
            let fdText = fd < 0 ? "-1" : (fd < files.count ? "\(fd + 3)<\(files[fd])>" : "\(fd + 3)")
            return "mmap(\(addr(a)), \(l), \(protText(p)), \(mapFlagsText(f)), \(fdText), \(o == 0 ? "0" : "0x" + String(o, radix: 16))) = \(res(result, hex: true))"
        case let .munmap(a, l): return "munmap(\(addr(a)), \(l)) = \(res(result, hex: false))"
        case let .mprotect(a, l, p): return "mprotect(\(addr(a)), \(l), \(protText(p))) = \(res(result, hex: false))"
        case let .mremap(a, o, n, f, na):
            let extra = f & (MremapFlags.fixed.rawValue | MremapFlags.dontUnmap.rawValue) != 0 ? ", \(addr(na))" : ""
            return "mremap(\(addr(a)), \(o), \(n), \(mremapFlagsText(f))\(extra)) = \(res(result, hex: true))"
        case let .madvise(a, l, adv): return "madvise(\(addr(a)), \(l), \(Advice(rawValue: adv)?.name ?? String(adv))) = \(res(result, hex: false))"
        case let .brk(a): return "brk(\(addr(a))) = " + "0x" + String(UInt64(bitPattern: result), radix: 16)
        case .fork: return "fork() = 0 (the sequence continues in the child)"
        }
    }
}

func flagText(_ v: UInt32, _ names: [(UInt32, String)], zero: String) -> String {
    var rest = v
    var parts: [String] = []
    for (bit, name) in names where bit != 0 && rest & bit == bit {
        parts.append(name)
        rest &= ~bit
    }
    if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
    return parts.isEmpty ? zero : parts.joined(separator: "|")
}

func protText(_ p: UInt32) -> String {
    flagText(p, [(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC"), (8, "PROT_SEM"),
                 (0x0100_0000, "PROT_GROWSDOWN"), (0x0200_0000, "PROT_GROWSUP")], zero: "PROT_NONE")
}

func mapFlagsText(_ f: UInt32) -> String {
    let type: String
    switch f & 0x0f {
    case 1: type = "MAP_SHARED"
    case 2: type = "MAP_PRIVATE"
    case 3: type = "MAP_SHARED_VALIDATE"
    default: type = "0x" + String(f & 0x0f, radix: 16)
    }
    let rest = flagText(f & ~0x0f, [(0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x40, "MAP_32BIT"), (0x100, "MAP_GROWSDOWN"),
                                    (0x800, "MAP_DENYWRITE"), (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"),
                                    (0x4000, "MAP_NORESERVE"), (0x8000, "MAP_POPULATE"), (0x10000, "MAP_NONBLOCK"),
                                    (0x20000, "MAP_STACK"), (0x40000, "MAP_HUGETLB"), (0x80000, "MAP_SYNC"),
                                    (0x100000, "MAP_FIXED_NOREPLACE")], zero: "")
    return rest.isEmpty ? type : type + "|" + rest
}

func mremapFlagsText(_ f: UInt32) -> String {
    flagText(f, [(1, "MREMAP_MAYMOVE"), (2, "MREMAP_FIXED"), (4, "MREMAP_DONTUNMAP")], zero: "0")
}

func errnoText(_ e: Errno) -> String {
    switch e {
    case .EPERM: "Operation not permitted"
    case .ENOENT: "No such file or directory"
    case .EINTR: "Interrupted system call"
    case .EBADF: "Bad file descriptor"
    case .EAGAIN: "Resource temporarily unavailable"
    case .ENOMEM: "Cannot allocate memory"
    case .EACCES: "Permission denied"
    case .EFAULT: "Bad address"
    case .EBUSY: "Device or resource busy"
    case .EEXIST: "File exists"
    case .EINVAL: "Invalid argument"
    case .ENOSPC: "No space left on device"
    case .EOVERFLOW: "Value too large for defined data type"
    case .EOPNOTSUPP: "Operation not supported"
    }
}
