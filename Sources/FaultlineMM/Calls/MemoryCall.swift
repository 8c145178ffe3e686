/// One system call of the vocabulary Faultline models, with its arguments as a program passes
/// them (so invalid ones are representable): the memory calls, and the process calls that
/// decide which address space runs them. The differential tester, the strace replay and its
/// timed mode, the fuzzer and the workloads all speak it; a new call or flag is added here once.
///
/// It parses from and renders to strace syntax (`MemoryCall+Strace.swift`), runs on the model
/// (`run(on:file:)`) and on the host kernel (`MemoryCall+Host.swift`).
public enum MemoryCall: Hashable, Sendable {
    /// `mmap(2)`.
    case mmap(addr: UInt64, length: UInt64, prot: Prot, flags: MapFlags, fd: FileDescriptor, offset: UInt64)
    /// `munmap(2)`.
    case munmap(addr: UInt64, length: UInt64)
    /// `mprotect(2)` (and `pkey_mprotect` with key -1).
    case mprotect(addr: UInt64, length: UInt64, prot: Prot)
    /// `mremap(2)`; `newAddr` is read only with MREMAP_FIXED or MREMAP_DONTUNMAP.
    case mremap(addr: UInt64, oldLength: UInt64, newLength: UInt64, flags: MremapFlags, newAddr: UInt64)
    /// `madvise(2)`: the advice as a number, so that unknown advice is representable.
    case madvise(addr: UInt64, length: UInt64, advice: Int32)
    /// `brk(2)`.
    case brk(addr: UInt64)
    /// `mseal(2)` (6.10); `flags` is reserved.
    case mseal(addr: UInt64, length: UInt64, flags: UInt64)
    /// `mlock(2)`.
    case mlock(addr: UInt64, length: UInt64)
    /// `mlock2(2)`: `flags` MLOCK_ONFAULT (1), anything else is EINVAL.
    case mlock2(addr: UInt64, length: UInt64, flags: UInt32)
    /// `munlock(2)`.
    case munlock(addr: UInt64, length: UInt64)
    /// `mlockall(2)`: `MCL_*` as a number, so that unknown bits are representable.
    case mlockall(flags: UInt32)
    /// `munlockall(2)`.
    case munlockall
    /// `ftruncate(2)`: the file's size, and so which of its mapped pages exist; `length` as
    /// the register holds it (a negative one is representable).
    case ftruncate(fd: FileDescriptor, length: UInt64)
    /// `clone(2)`, `clone3`, `fork`, `vfork`: a new task, sharing the address space with
    /// CLONE_VM, a copy of it (fork) otherwise.
    case clone(flags: CloneFlags)
    /// `execve(2)`: a fresh address space.
    case execve(path: String)
    /// `exit` ends one task, `exit_group` the process.
    case exit(group: Bool)

    /// `fork()`: clone with SIGCHLD as the exit signal and no flags.
    public static let fork = MemoryCall.clone(flags: .sigchld)

    /// clone, execve, exit: they change which address spaces exist, which the caller models
    /// (`AddressSpace.fork()`); on one address space they are ENOSYS.
    public var isProcessCall: Bool {
        switch self {
        case .clone, .execve, .exit: true
        default: false
        }
    }

    /// The call's name as strace prints it.
    public var name: String {
        switch self {
        case .mmap: "mmap"
        case .munmap: "munmap"
        case .mprotect: "mprotect"
        case .mremap: "mremap"
        case .madvise: "madvise"
        case .brk: "brk"
        case .mseal: "mseal"
        case .ftruncate: "ftruncate"
        case .mlock: "mlock"
        case .mlock2: "mlock2"
        case .munlock: "munlock"
        case .mlockall: "mlockall"
        case .munlockall: "munlockall"
        case .clone(let f): f == .sigchld ? "fork" : "clone"
        case .execve: "execve"
        case .exit(let group): group ? "exit_group" : "exit"
        }
    }

    /// The descriptor of the file a call works on — an mmap of a file, ftruncate — (nil for
    /// anonymous memory and every other call): the caller resolves it to the file that
    /// `run(on:file:)` takes.
    @inlinable
    public var fileDescriptor: FileDescriptor? {
        switch self {
        case let .mmap(_, _, _, flags, fd, _): return flags.contains(.anonymous) ? nil : fd
        case let .ftruncate(fd, _): return fd
        default: return nil
        }
    }

    /// Runs the call on `mm`; `file` is the file `fileDescriptor` names (nil when it names
    /// none: the model returns EBADF after its argument checks, as the kernel does). Process
    /// calls return ENOSYS: `isProcessCall`.
    @inlinable
    public func run(on mm: AddressSpace, file: MMFile? = nil) -> SyscallResult {
        switch self {
        case let .mmap(a, l, p, f, _, o):
            return SyscallResult(mm.mmap(a, l, p, f, file: f.contains(.anonymous) ? nil : file, offset: o))
        case let .munmap(a, l):
            return SyscallResult(mm.munmap(a, l))
        case let .mprotect(a, l, p):
            return SyscallResult(mm.mprotect(a, l, p))
        case let .mremap(a, o, n, f, na):
            return SyscallResult(mm.mremap(a, o, n, f, newAddress: na))
        case let .madvise(a, l, adv):
            return SyscallResult(mm.madvise(a, l, adv))
        case let .brk(a):
            return SyscallResult(value: mm.brk(a))
        case let .mseal(a, l, f):
            return SyscallResult(mm.mseal(a, l, f))
        case let .ftruncate(_, l):
            return SyscallResult(mm.ftruncate(file, l))
        case let .mlock(a, l):
            return SyscallResult(mm.mlock(a, l))
        case let .mlock2(a, l, f):
            return SyscallResult(mm.mlock2(a, l, f))
        case let .munlock(a, l):
            return SyscallResult(mm.munlock(a, l))
        case let .mlockall(f):
            return SyscallResult(mm.mlockall(f))
        case .munlockall:
            return SyscallResult(mm.munlockall())
        case .clone, .execve, .exit:
            return SyscallResult(errno: .ENOSYS)
        }
    }
}

/// A file descriptor argument: its number, and the path strace's `-y` showed for it.
public struct FileDescriptor: Hashable, Sendable {
    public var number: Int32
    public var path: String?

    public init(_ number: Int32, path: String? = nil) {
        self.number = number
        self.path = path
    }

    /// `-1`: no file (anonymous mappings).
    public static let none = FileDescriptor(-1)
}

/// The kernel's return register: a value, or -errno (-4095…-1).
public struct SyscallResult: Hashable, Sendable, CustomStringConvertible {
    public var raw: Int64

    @inlinable public init(raw: Int64) { self.raw = raw }
    @inlinable public init(value: UInt64) { raw = Int64(bitPattern: value) }
    @inlinable public init(errno: Errno) { raw = -Int64(errno.rawValue) }

    @inlinable
    public init(_ r: Result<UInt64, Errno>) {
        switch r {
        case .success(let v): self.init(value: v)
        case .failure(let e): self.init(errno: e)
        }
    }

    @inlinable
    public init(_ r: Result<Void, Errno>) {
        switch r {
        case .success: self.init(raw: 0)
        case .failure(let e): self.init(errno: e)
        }
    }

    /// The errno number of a failure; nil on success.
    @inlinable public var errnoNumber: Int32? { raw < 0 && raw >= -4095 ? Int32(-raw) : nil }
    /// The errno of a failure, when it is one the model returns.
    public var errno: Errno? { errnoNumber.flatMap(Errno.init(rawValue:)) }
    /// The errno's name (`ENOMEM`), or `E<number>` for one the model does not know.
    public var errnoName: String? { errnoNumber.map(StraceSyntax.errnoName) }
    @inlinable public var succeeded: Bool { errnoNumber == nil }
    @inlinable public var value: UInt64 { UInt64(bitPattern: raw) }

    public var description: String { strace(hex: value > 0xffff) }

    /// As strace prints a result: `0x7f…` or `0`, or `-1 ENOMEM (Cannot allocate memory)`.
    public func strace(hex: Bool) -> String {
        if let n = errnoNumber { return "-1 \(errnoName!) (\(StraceSyntax.errnoText(n)))" }
        return hex ? "0x" + String(value, radix: 16) : String(raw)
    }
}

/// `CLONE_*` and the exit signal in the low byte.
public struct CloneFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let vm = CloneFlags(rawValue: 0x100)
    public static let fs = CloneFlags(rawValue: 0x200)
    public static let files = CloneFlags(rawValue: 0x400)
    public static let sighand = CloneFlags(rawValue: 0x800)
    public static let pidfd = CloneFlags(rawValue: 0x1000)
    public static let ptrace = CloneFlags(rawValue: 0x2000)
    public static let vfork = CloneFlags(rawValue: 0x4000)
    public static let parent = CloneFlags(rawValue: 0x8000)
    public static let thread = CloneFlags(rawValue: 0x10000)
    public static let newNS = CloneFlags(rawValue: 0x20000)
    public static let sysvSem = CloneFlags(rawValue: 0x40000)
    public static let setTLS = CloneFlags(rawValue: 0x80000)
    public static let parentSetTID = CloneFlags(rawValue: 0x100000)
    public static let childClearTID = CloneFlags(rawValue: 0x200000)
    public static let detached = CloneFlags(rawValue: 0x400000)
    public static let untraced = CloneFlags(rawValue: 0x800000)
    public static let childSetTID = CloneFlags(rawValue: 0x1000000)
    public static let newCgroup = CloneFlags(rawValue: 0x2000000)
    public static let newUTS = CloneFlags(rawValue: 0x4000000)
    public static let newIPC = CloneFlags(rawValue: 0x8000000)
    public static let newUser = CloneFlags(rawValue: 0x10000000)
    public static let newPID = CloneFlags(rawValue: 0x20000000)
    public static let newNet = CloneFlags(rawValue: 0x40000000)
    public static let io = CloneFlags(rawValue: 0x80000000)
    /// `SIGCHLD` as the exit signal (`CSIGNAL` bits).
    public static let sigchld = CloneFlags(rawValue: 17)

    /// CLONE_VM: the child runs in the parent's address space (a thread, or vfork).
    @inlinable public var sharesVM: Bool { contains(.vm) }
}
