import FaultlineSync

/// The registry of mmap-locking designs: the names users pick (`--design`) and, for each, the
/// type that implements it (`MMDesign`, one file each under `Designs/`). Adding a design is a
/// file there, a case here and its arm in `visit`.
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
    /// Linux 6.15–6.18's per-VMA lock: a reference count, VMAs reused at once
    /// (SLAB_TYPESAFE_BY_RCU), MADV_DONTNEED/MADV_FREE and maps under the VMA lock. The
    /// host's own design.
    case perVMA615 = "per-vma-6.15"
    /// Lespinasse's fine-grained locking: a short lock for the VMA tree plus a range lock
    /// (Kogan–Dice–Issa list lock) held for the operation's range.
    case range
    /// The same with the interval-tree range lock (Kara/Bueso) as the baseline.
    case rangeTree = "range-tree"
    /// Test-only broken controls (`faultline stress --design broken-…` must fail; never in
    /// `compare`): `spf-mmseq` with the validation removed; per-VMA locks without the
    /// re-check after the trylock; per-VMA locks whose mprotect marks nothing; `spf-vmaseq`
    /// without the bump on mprotect; `range` whose munmap zaps outside the range it holds;
    /// `per-vma-6.15` without the re-checks a reused VMA needs.
    case brokenSPF = "broken-spf"
    case brokenPerVMARecheck = "broken-per-vma-recheck"
    case brokenUnmarkedMprotect = "broken-unmarked-mprotect"
    case brokenSPFVMASeqMprotect = "broken-spf-vmaseq-mprotect"
    case brokenRangeZap = "broken-range-zap"
    case brokenPerVMA615Recheck = "broken-per-vma-6.15-recheck"

    /// Calls `visitor` with the design's type (and `mm`, passed as an argument so that it is
    /// borrowed, never retained): one switch, each arm specialised for its design — how the
    /// fault path reaches a design without an existential call.
    @inlinable @inline(__always)
    public func visit<V: DesignVisitor>(_ visitor: V, _ mm: AddressSpace?) -> V.Output {
        switch self {
        case .global: visitor.visit(GlobalDesign.self, mm)
        case .spfMMSeq: visitor.visit(SPFMMSeqDesign.self, mm)
        case .spfVMASeq: visitor.visit(SPFVMASeqDesign.self, mm)
        case .perVMA: visitor.visit(PerVMADesign.self, mm)
        case .perVMARetry: visitor.visit(PerVMARetryDesign.self, mm)
        case .perVMA615: visitor.visit(PerVMA615Design.self, mm)
        case .range: visitor.visit(RangeDesign.self, mm)
        case .rangeTree: visitor.visit(RangeTreeDesign.self, mm)
        case .brokenSPF: visitor.visit(BrokenSPFDesign.self, mm)
        case .brokenPerVMARecheck: visitor.visit(BrokenPerVMARecheckDesign.self, mm)
        case .brokenUnmarkedMprotect: visitor.visit(BrokenUnmarkedMprotectDesign.self, mm)
        case .brokenSPFVMASeqMprotect: visitor.visit(BrokenSPFVMASeqMprotectDesign.self, mm)
        case .brokenRangeZap: visitor.visit(BrokenRangeZapDesign.self, mm)
        case .brokenPerVMA615Recheck: visitor.visit(BrokenPerVMA615RecheckDesign.self, mm)
        }
    }

    /// The design's type, for the hooks that run once per call (writer side, maps, reports).
    public var type: any MMDesign.Type { visit(MetatypeVisitor(), nil) }

    /// The designs a user picks from (broken controls are for proving the stress test).
    public static var selectable: [Design] { allCases.filter { !$0.type.isBrokenControl } }

    /// Broken on purpose: only `faultline stress` (and tests) may run it.
    public var isBrokenControl: Bool { type.isBrokenControl }

    /// One line for `--help` and reports.
    public var summary: String { type.summary }

    /// What the lock-free `/proc/pid/maps` walk does under this design.
    public var locklessMapsSummary: String { type.locklessMapsSummary }

    /// Whether the design can run on `tree` (lockless readers need the RCU-safe maple tree).
    public func allowsTree(_ tree: VMATreeKind) -> Bool {
        tree == .maple || !type.readsTreeLocklessly
    }

    /// Whether Lespinasse's COW race loses the child's write under this design.
    public func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool {
        type.losesCOWRace(allowSpeculativeCOW: allowSpeculativeCOW)
    }
}

/// Something done with a design's type (on an address space, or nil), specialised per design
/// (see `Design.visit`).
public protocol DesignVisitor {
    associatedtype Output
    func visit<D: MMDesign>(_ design: D.Type, _ mm: AddressSpace?) -> Output
}

/// The metatype itself, for cold paths.
public struct MetatypeVisitor: DesignVisitor {
    public init() {}
    public func visit<D: MMDesign>(_ design: D.Type, _ mm: AddressSpace?) -> any MMDesign.Type { design }
}

/// The calls that open a writer section through `withWriter` (what a design may treat
/// differently; the broken controls use it to leave out one call's marks).
public enum WriterCall: Sendable {
    case mprotect, mremap, madvise, brk, fork, mseal, mlock
    /// A fault below a VM_GROWSDOWN VMA growing it (`expand_stack`).
    case expandStack
    /// The replay's inferred mappings and other set-up.
    case mirror
    /// khugepaged's `collapse_huge_page()` (`mmap_write_lock`).
    case khugepaged
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

/// Per-address-space state that only some designs use, made by the design
/// (`MMDesign.makeState`).
public final class DesignState: @unchecked Sendable {
    @usableFromInline let listLock: ListRangeLock?
    @usableFromInline let treeLock: TreeRangeLock?
    /// The same locks for the fault path, used through `_withUnsafeGuaranteedRef`: a retain
    /// per fault would write the lock object's header line, which every thread shares.
    @usableFromInline let listLockRef: Unmanaged<ListRangeLock>?
    @usableFromInline let treeLockRef: Unmanaged<TreeRangeLock>?
    /// Waits for VMA locks (per-VMA designs), per thread, in `RWSemStat` columns.
    public let vmaLockStats: PerThreadCounters
    /// Range-lock waits: [acquisitions that waited, ns waited].
    public let rangeWaits: PerThreadCounters

    /// State with at most one range lock (none for designs that take `mmap_lock`).
    public init(listLock: ListRangeLock? = nil, treeLock: TreeRangeLock? = nil) {
        precondition(listLock == nil || treeLock == nil, "one range lock per design")
        self.listLock = listLock
        self.treeLock = treeLock
        listLockRef = listLock.map { Unmanaged.passUnretained($0) }
        treeLockRef = treeLock.map { Unmanaged.passUnretained($0) }
        vmaLockStats = PerThreadCounters(width: RWSemStat.width)
        rangeWaits = PerThreadCounters(width: 2)
    }
}
