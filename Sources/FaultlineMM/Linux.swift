#if canImport(Glibc)
import Glibc
#endif
import CFaultline

/// Constants of Linux x86-64 (4-level paging), as the kernel defines them.
public enum Linux {
    /// `totalram_pages() + total_swap_pages` of this machine: the most one call may commit
    /// under the default heuristic overcommit (`vm.overcommit_memory = 0`).
    public static let hostCommitLimitPages: UInt64 = fl_commit_limit_pages()

    /// `gnu_dev_major()` / `gnu_dev_minor()` of a `st_dev`.
    public static func deviceNumbers(_ dev: UInt64) -> (major: UInt32, minor: UInt32) {
        (UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)),
         UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff)))
    }

    /// `read_ahead_kb` of the device holding `directory`, in pages (`bdi->ra_pages`): what a
    /// file there reads around a fault. Linux's default (128 KiB) when it cannot be read.
    public static func hostReadaheadPages(for directory: String) -> Int {
        var st = stat()
        guard stat(directory, &st) == 0 else { return 32 }
        let (major, minor) = deviceNumbers(UInt64(st.st_dev))
        guard let f = fopen("/sys/class/bdi/\(major):\(minor)/read_ahead_kb", "r") else { return 32 }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 32)
        guard fgets(&buf, 32, f) != nil else { return 32 }
        let text = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let kb = Int(text.filter(\.isNumber)) else { return 32 }
        return kb / 4
    }
    /// This process's `RLIMIT_STACK` (bytes; `UInt64.max` when unlimited): how far a
    /// VM_GROWSDOWN VMA may grow (`acct_stack_growth`).
    public static let hostStackLimit: UInt64 = fl_stack_limit()
    /// This process's `RLIMIT_MEMLOCK` (bytes; UInt64.max: unlimited).
    public static let hostMemlockLimit: UInt64 = fl_memlock_limit()
    /// Whether this process has CAP_IPC_LOCK (locking beyond `RLIMIT_MEMLOCK`).
    public static let hostCapIPCLock: Bool = fl_cap_ipc_lock() != 0
    /// Whether the host kernel runs with memory protection keys (x86 PKU, CPUID OSPKE): then
    /// an execute-only mapping gets the execute-only pkey and data accesses to it fail with
    /// SEGV_PKUERR.
    public static let hostHasPKeys: Bool = fl_cpu_has_ospke() != 0
    /// The host's `/sys/kernel/mm/transparent_hugepage/enabled` (the bracketed word);
    /// `madvise`, the usual distribution default, where it cannot be read.
    public static let hostTHPMode: THPMode = {
        guard let f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r") else { return .madvise }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 128)
        guard fgets(&buf, 128, f) != nil else { return .madvise }
        let line = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"), open < close else { return .madvise }
        return THPMode(rawValue: String(line[line.index(after: open)..<close])) ?? .madvise
    }()

    public static let pageShift: UInt64 = 12
    public static let pageSize: UInt64 = 1 << pageShift
    public static let pageMask: UInt64 = ~(pageSize - 1)
    /// `PMD_SIZE`: the THP alignment for large anonymous mappings.
    public static let pmdSize: UInt64 = 2 << 20
    /// `TASK_SIZE` (`TASK_SIZE_MAX` with 4-level paging): `(1 << 47) - PAGE_SIZE`.
    public static let taskSize: UInt64 = (1 << 47) - pageSize
    /// `mmap_min_addr` default.
    public static let mmapMinAddr: UInt64 = 65_536
    /// `sysctl_max_map_count` default.
    public static let maxMapCount = 65_530
    /// `stack_guard_gap`: 256 pages.
    public static let stackGuardGap: UInt64 = 256 << pageShift
    /// `mmap_base()` with no randomisation and an 8 MiB stack rlimit: the gap is clamped to
    /// its 128 MiB minimum.
    public static let defaultMmapBase: UInt64 = taskSize - (128 << 20)

    /// `PAGE_ALIGN()`: wraps to 0 past the top, as the C macro does (callers check).
    @inlinable public static func pageAlign(_ x: UInt64) -> UInt64 { (x &+ (pageSize - 1)) & pageMask }
    @inlinable public static func pageAlignDown(_ x: UInt64) -> UInt64 { x & pageMask }
    @inlinable public static func offsetInPage(_ x: UInt64) -> UInt64 { x & (pageSize - 1) }
}

/// Linux errno values returned by the model's calls.
public enum Errno: Int32, Error, CustomStringConvertible, Sendable, CaseIterable {
    case EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, E2BIG = 7, EBADF = 9, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14
    case EBUSY = 16, EEXIST = 17, EINVAL = 22, EFBIG = 27, ENOSPC = 28, ENAMETOOLONG = 36, ENOSYS = 38, EOVERFLOW = 75
    case EOPNOTSUPP = 95

    public var description: String {
        switch self {
        case .EPERM: "EPERM"
        case .ENOENT: "ENOENT"
        case .ESRCH: "ESRCH"
        case .EINTR: "EINTR"
        case .E2BIG: "E2BIG"
        case .EBADF: "EBADF"
        case .EAGAIN: "EAGAIN"
        case .ENOMEM: "ENOMEM"
        case .EACCES: "EACCES"
        case .EFAULT: "EFAULT"
        case .EBUSY: "EBUSY"
        case .EEXIST: "EEXIST"
        case .EINVAL: "EINVAL"
        case .EFBIG: "EFBIG"
        case .ENOSPC: "ENOSPC"
        case .ENAMETOOLONG: "ENAMETOOLONG"
        case .ENOSYS: "ENOSYS"
        case .EOVERFLOW: "EOVERFLOW"
        case .EOPNOTSUPP: "EOPNOTSUPP"
        }
    }

    public init?(name: String) {
        guard let e = Errno.allCases.first(where: { $0.description == name }) else { return nil }
        self = e
    }
}

/// `PROT_*`.
public struct Prot: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let none: Prot = []
    public static let read = Prot(rawValue: 0x1)
    public static let write = Prot(rawValue: 0x2)
    public static let exec = Prot(rawValue: 0x4)
    public static let growsDown = Prot(rawValue: 0x0100_0000)
    public static let growsUp = Prot(rawValue: 0x0200_0000)
}

/// `MAP_*` (x86-64 values).
public struct MapFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let shared = MapFlags(rawValue: 0x01)
    public static let `private` = MapFlags(rawValue: 0x02)
    public static let sharedValidate = MapFlags(rawValue: 0x03)
    /// `MAP_DROPPABLE` (6.11): private anonymous memory reclaim may drop at any time.
    public static let droppable = MapFlags(rawValue: 0x08)
    public static let typeMask = MapFlags(rawValue: 0x0f)
    public static let fixed = MapFlags(rawValue: 0x10)
    public static let anonymous = MapFlags(rawValue: 0x20)
    public static let growsDown = MapFlags(rawValue: 0x0100)
    public static let denyWrite = MapFlags(rawValue: 0x0800)
    public static let executable = MapFlags(rawValue: 0x1000)
    public static let locked = MapFlags(rawValue: 0x2000)
    public static let noReserve = MapFlags(rawValue: 0x4000)
    public static let populate = MapFlags(rawValue: 0x8000)
    public static let nonBlock = MapFlags(rawValue: 0x10000)
    public static let stack = MapFlags(rawValue: 0x20000)
    public static let hugeTLB = MapFlags(rawValue: 0x40000)
    public static let sync = MapFlags(rawValue: 0x80000)
    public static let fixedNoReplace = MapFlags(rawValue: 0x100000)
    public static let uninitialized = MapFlags(rawValue: 0x4000000)
    /// `MAP_32BIT`.
    public static let bit32 = MapFlags(rawValue: 0x40)

    /// The flags `MAP_SHARED_VALIDATE` accepts (`LEGACY_MAP_MASK` | `MAP_SYNC` | …), with
    /// MAP_ABOVE4G (0x80) and the MAP_HUGE_2MB | MAP_HUGE_1GB size bits.
    static let legacyMask: MapFlags = [.shared, .private, .fixed, .anonymous, .denyWrite, .executable, .uninitialized,
                                        .growsDown, .locked, .noReserve, .populate, .nonBlock, .stack, .hugeTLB, .bit32,
                                        MapFlags(rawValue: 0x80), MapFlags(rawValue: (21 << 26) | (30 << 26))]
    public var type: UInt32 { rawValue & 0x0f }
}

/// `MREMAP_*`.
public struct MremapFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let mayMove = MremapFlags(rawValue: 1)
    public static let fixed = MremapFlags(rawValue: 2)
    public static let dontUnmap = MremapFlags(rawValue: 4)
}

/// `MADV_*`.
public enum Advice: Int32, Sendable, CaseIterable {
    case normal = 0, random = 1, sequential = 2, willNeed = 3, dontNeed = 4, free = 8, remove = 9
    case dontFork = 10, doFork = 11, mergeable = 12, unmergeable = 13, hugePage = 14, noHugePage = 15
    case dontDump = 16, doDump = 17, wipeOnFork = 18, keepOnFork = 19, cold = 20, pageOut = 21
    case populateRead = 22, populateWrite = 23, dontNeedLocked = 24, collapse = 25
    case guardInstall = 102, guardRemove = 103

    public var name: String {
        switch self {
        case .normal: "MADV_NORMAL"
        case .random: "MADV_RANDOM"
        case .sequential: "MADV_SEQUENTIAL"
        case .willNeed: "MADV_WILLNEED"
        case .dontNeed: "MADV_DONTNEED"
        case .free: "MADV_FREE"
        case .remove: "MADV_REMOVE"
        case .dontFork: "MADV_DONTFORK"
        case .doFork: "MADV_DOFORK"
        case .mergeable: "MADV_MERGEABLE"
        case .unmergeable: "MADV_UNMERGEABLE"
        case .hugePage: "MADV_HUGEPAGE"
        case .noHugePage: "MADV_NOHUGEPAGE"
        case .dontDump: "MADV_DONTDUMP"
        case .doDump: "MADV_DODUMP"
        case .wipeOnFork: "MADV_WIPEONFORK"
        case .keepOnFork: "MADV_KEEPONFORK"
        case .cold: "MADV_COLD"
        case .pageOut: "MADV_PAGEOUT"
        case .populateRead: "MADV_POPULATE_READ"
        case .populateWrite: "MADV_POPULATE_WRITE"
        case .dontNeedLocked: "MADV_DONTNEED_LOCKED"
        case .collapse: "MADV_COLLAPSE"
        case .guardInstall: "MADV_GUARD_INSTALL"
        case .guardRemove: "MADV_GUARD_REMOVE"
        }
    }

    public init?(name: String) {
        guard let a = Advice.allCases.first(where: { $0.name == name }) else { return nil }
        self = a
    }
}

/// `vm_flags_t` bits (include/linux/mm.h).
public struct VMFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let read = VMFlags(rawValue: 0x1)
    public static let write = VMFlags(rawValue: 0x2)
    public static let exec = VMFlags(rawValue: 0x4)
    public static let shared = VMFlags(rawValue: 0x8)
    public static let mayRead = VMFlags(rawValue: 0x10)
    public static let mayWrite = VMFlags(rawValue: 0x20)
    public static let mayExec = VMFlags(rawValue: 0x40)
    public static let mayShare = VMFlags(rawValue: 0x80)
    public static let growsDown = VMFlags(rawValue: 0x100)
    public static let pfnMap = VMFlags(rawValue: 0x400)
    /// `VM_MAYBE_GUARD` (smaps `gu`): MADV_GUARD_INSTALL ran on the VMA; sticky (a merge
    /// keeps it, removing the markers does not clear it), ignored by the merge checks, and
    /// fork copies the page tables of such a VMA, markers and pages alike (probed on 6.18).
    public static let maybeGuard = VMFlags(rawValue: 0x800)
    public static let locked = VMFlags(rawValue: 0x2000)
    public static let io = VMFlags(rawValue: 0x4000)
    public static let seqRead = VMFlags(rawValue: 0x8000)
    public static let randRead = VMFlags(rawValue: 0x10000)
    public static let dontCopy = VMFlags(rawValue: 0x20000)
    public static let dontExpand = VMFlags(rawValue: 0x40000)
    public static let lockOnFault = VMFlags(rawValue: 0x80000)
    public static let account = VMFlags(rawValue: 0x100000)
    public static let noReserve = VMFlags(rawValue: 0x200000)
    public static let hugeTLB = VMFlags(rawValue: 0x400000)
    public static let sync = VMFlags(rawValue: 0x800000)
    public static let wipeOnFork = VMFlags(rawValue: 0x2000000)
    public static let dontDump = VMFlags(rawValue: 0x4000000)
    public static let softDirty = VMFlags(rawValue: 0x8000000)
    public static let mixedMap = VMFlags(rawValue: 0x10000000)
    public static let hugePage = VMFlags(rawValue: 0x20000000)
    public static let noHugePage = VMFlags(rawValue: 0x40000000)
    public static let mergeable = VMFlags(rawValue: 0x80000000)
    /// `VM_SEALED` (mseal, 6.10; a high bit on 64-bit): the VMA may not be unmapped, moved,
    /// resized, replaced or reprotected, nor its read-only anonymous pages discarded.
    public static let sealed = VMFlags(rawValue: 1 << 63)
    /// `VM_PKEY_BIT0` (`VM_HIGH_ARCH_0`): the VMA's protection key is the execute-only key
    /// (`execute_only_pkey()`), the only key the model hands out. smaps shows it as
    /// `ProtectionKey:`, not in `VmFlags:`.
    public static let pkeyExecOnly = VMFlags(rawValue: 1 << 32)
    /// `VM_DROPPABLE` (MAP_DROPPABLE, smaps `dp`): its anonymous folios are never swap-backed,
    /// so reclaim discards them, dirty or not; mlock does not lock it.
    public static let droppable = VMFlags(rawValue: 1 << 40)

    public static let accessFlags: VMFlags = [.read, .write, .exec]
    /// `VM_STICKY`: kept by merges, ignored by their checks.
    public static let sticky: VMFlags = [.maybeGuard]
    /// `VM_DATA_DEFAULT_FLAGS` on x86-64 (`VM_DATA_FLAGS_TSK_EXEC` without READ_IMPLIES_EXEC).
    public static let dataDefault: VMFlags = [.read, .write, .mayRead, .mayWrite, .mayExec]

    /// `calc_vm_prot_bits()`.
    public static func from(prot: Prot) -> VMFlags {
        var f: VMFlags = []
        if prot.contains(.read) { f.insert(.read) }
        if prot.contains(.write) { f.insert(.write) }
        if prot.contains(.exec) { f.insert(.exec) }
        return f
    }

    /// The mnemonics of `/proc/pid/smaps` `VmFlags:` (show_smap_vma_flags), in bit order.
    static let mnemonics: [(UInt64, String)] = [
        (0x1, "rd"), (0x2, "wr"), (0x4, "ex"), (0x8, "sh"), (0x10, "mr"), (0x20, "mw"), (0x40, "me"), (0x80, "ms"),
        (0x100, "gd"), (0x400, "pf"), (0x800, "gu"), (0x2000, "lo"), (0x4000, "io"), (0x8000, "sr"), (0x10000, "rr"),
        (0x20000, "dc"), (0x40000, "de"), (0x80000, "lf"), (0x100000, "ac"), (0x200000, "nr"), (0x400000, "ht"), (0x800000, "sf"),
        (0x2000000, "wf"), (0x4000000, "dd"), (0x8000000, "sd"), (0x10000000, "mm"), (0x20000000, "hg"),
        (0x40000000, "nh"), (0x80000000, "mg"), (1 << 40, "dp"), (1 << 63, "sl"),
    ]

    public var smapsDescription: String {
        Self.mnemonics.filter { rawValue & $0.0 != 0 }.map(\.1).joined(separator: " ")
    }

    /// The flags an smaps `VmFlags:` line names (mnemonics the model has no bit for are
    /// ignored).
    public init<S: StringProtocol>(smapsMnemonics line: S) {
        var raw: UInt64 = 0
        for word in line.split(separator: " ") {
            if let m = Self.mnemonics.first(where: { $0.1 == word }) { raw |= m.0 }
        }
        self.init(rawValue: raw)
    }
}

/// What a memory access asks for.
public enum AccessKind: Sendable, Hashable {
    case read, write, exec
}

/// How an access ended when it could not complete: the signal a process would get.
public enum FaultError: Error, Sendable, Hashable {
    /// SIGSEGV/SEGV_MAPERR: no VMA at the address.
    case segvMapErr
    /// SIGSEGV/SEGV_ACCERR: the VMA forbids this access.
    case segvAccErr
    /// SIGSEGV/SEGV_PKUERR: a data access to an execute-only mapping (its protection key
    /// denies access: `bad_area_access_from_pkeys()`).
    case segvPkuErr
    /// SIGBUS: a file page beyond end of file.
    case bus
    /// Out of frames (`VM_FAULT_OOM`).
    case oom
}

extension Result {
    /// The error, or nil on success (handy where `Success` is `Void`, which is not Equatable).
    @inlinable public var error: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }

    @inlinable public var succeeded: Bool { error == nil }
}
