import FaultlineSync

/// An mmap-locking design: which locks surround the shared mechanism, and how a fault finds,
/// pins and validates its VMA. Chosen per address space at run time; the fault path switches
/// on it once per fault (a predictable branch, no dynamic dispatch) into code specialised for
/// the design.
public enum Design: String, CaseIterable, Sendable {
    /// Stock Linux before 6.4: one rw-semaphore (`mmap_lock`) per address space.
    case global
    /// Michel Lespinasse's speculative page faults (2021): an mm-wide sequence count.
    case spfMMSeq = "spf-mmseq"
    /// Laurent Dufour's speculative page faults (v11, 2018): per-VMA sequence counts and
    /// VMA reference counts.
    case spfVMASeq = "spf-vmaseq"
    /// Suren Baghdasaryan's per-VMA locks (Linux 6.4).
    case perVMA = "per-vma"
    /// Per-VMA locks where a fault that must wait for I/O retries under the VMA lock.
    case perVMARetry = "per-vma-retry"
    /// Lespinasse's fine-grained locking: a short lock for the VMA tree plus a range lock
    /// (Kogan–Dice–Issa list lock) held for the operation's range.
    case range
    /// The same with the interval-tree range lock (Kara/Bueso) as the baseline.
    case rangeTree = "range-tree"
    /// Test-only: `spf-mmseq` with the validation removed. The stress test must catch it.
    case brokenSPF = "broken-spf"

    /// The designs a user picks from (`broken-spf` is for proving the stress test).
    public static var selectable: [Design] { allCases.filter { $0 != .brokenSPF } }

    /// One line for `--help` and reports.
    public var summary: String {
        switch self {
        case .global:
            "mmap_lock rwsem: faults/madvise read, mmap/munmap/mprotect/mremap/brk write; munmap downgrades before zapping; I/O faults drop the lock and retry"
        case .spfMMSeq:
            "speculative faults under RCU, validated under the PTE lock against an mm-wide sequence count bumped by every mmap writer; any change aborts to mmap_lock"
        case .spfVMASeq:
            "speculative faults validated against the faulting VMA's own sequence count (and holding a VMA reference); COW faults on present PTEs go to mmap_lock"
        case .perVMA:
            "lock_vma_under_rcu: read-trylock the VMA's lock, fail if vm_lock_seq == mm_lock_seq or detached; fall back to mmap_lock; I/O retries under mmap_lock"
        case .perVMARetry:
            "per-VMA locks; a fault that waited for I/O retries under the VMA lock"
        case .range:
            "short lock for the VMA tree + list range lock for the operation's range; faults read-lock their page"
        case .rangeTree:
            "short lock for the VMA tree + interval-tree range lock (FIFO); faults read-lock their page"
        case .brokenSPF:
            "TEST ONLY: spf-mmseq without validation"
        }
    }

    /// Writers mark VMAs with `vm_lock_seq` (per-VMA locks).
    @inlinable public var usesVMALocks: Bool { self == .perVMA || self == .perVMARetry }
    /// Writers bump each changed VMA's sequence count (Dufour's SPF).
    @inlinable public var usesVMASeq: Bool { self == .spfVMASeq }
    /// Writers bump the mm-wide sequence count (Lespinasse's SPF).
    @inlinable public var usesMMSeq: Bool { self == .spfMMSeq || self == .brokenSPF }
    /// Writers take a range lock around a short tree lock.
    @inlinable public var usesRangeLock: Bool { self == .range || self == .rangeTree }

    /// Faults find their VMA without `mmap_lock` (under RCU).
    @inlinable public var faultsLocklessly: Bool { self != .global && !usesRangeLock }

    /// Whether the design can run on `tree` (lockless readers need the RCU-safe maple tree).
    public func allowsTree(_ tree: VMATreeKind) -> Bool {
        tree == .maple || self == .global
    }

    /// What the lock-free `/proc/pid/maps` walk does under this design.
    public var locklessMapsSummary: String {
        switch self {
        case .global: "no lock-free structure: takes mmap_lock for read per VMA instead of for the whole walk"
        case .spfMMSeq, .brokenSPF: "copies each VMA under RCU, validated by the mm sequence count; mmap_lock for that VMA on a change"
        case .spfVMASeq: "copies each VMA under RCU, validated by its sequence count; mmap_lock for that VMA on a change"
        case .perVMA, .perVMARetry: "read-locks each VMA under RCU (lock_next_vma); mmap_lock for that VMA when the lock fails"
        case .range, .rangeTree: "takes the short tree lock per VMA instead of for the whole walk"
        }
    }
}

/// How `/proc/pid/maps` is read.
public enum MapsReader: String, CaseIterable, Sendable {
    /// `mmap_lock` (the short lock in range designs) held for read across the whole walk: a
    /// slow reader holds off every writer, and every fault queued behind that writer.
    case locked
    /// Per-VMA (Linux 6.16+): each VMA is locked or validated on its own, with `mmap_lock`
    /// taken for one VMA only when that fails; never reports a gap that did not exist.
    case lockless
}

/// Per-address-space state that only some designs use.
public final class DesignState: @unchecked Sendable {
    public let design: Design
    @usableFromInline let listLock: ListRangeLock?
    @usableFromInline let treeLock: TreeRangeLock?
    /// Waits for VMA locks (per-VMA designs), per thread, in `RWSemStat` columns.
    public let vmaLockStats: PerThreadCounters
    /// Range-lock waits: [acquisitions that waited, ns waited].
    public let rangeWaits: PerThreadCounters

    init(design: Design) {
        self.design = design
        listLock = design == .range ? ListRangeLock() : nil
        treeLock = design == .rangeTree ? TreeRangeLock() : nil
        vmaLockStats = PerThreadCounters(width: RWSemStat.width)
        rangeWaits = PerThreadCounters(width: 2)
    }
}
