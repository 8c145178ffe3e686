import CFaultline
@_spi(Testing) import FaultlineMM
import FaultlineSync
import Synchronization

/// Options of one stress run (`faultline stress`).
public struct StressOptions: Sendable {
    public var design: Design = .global
    /// The VMA index (`rbtree` only under `global`).
    public var tree: VMATreeKind = .maple
    public var seconds: Double = 5
    public var threads: Int = 4
    public var seed: UInt64 = 1
    /// How the threads read `/proc/pid/maps`; nil alternates both forms.
    public var mapsReader: MapsReader? = nil
    /// Every `epoch` seconds all threads park and the quiescent invariants are checked.
    public var epoch: Double = 0.5
    /// Stop at the first epoch that finds a violation.
    public var stopOnViolation = true
    /// Simulated I/O latency of the second file (exercises `VM_FAULT_RETRY` paths).
    public var ioLatencyNs: UInt64 = 20_000
    /// One fault in this many sleeps `delayNs` just before it validates and installs its PTE,
    /// widening every design's race window so that other threads run inside it (0: never).
    public var delayOneIn: UInt64 = 64
    public var delayNs: UInt64 = 20_000
    /// Swap device slots (0: none); its reads and writes take `ioLatencyNs`.
    public var swapPages = 4096
    /// Memory in 4 KiB frames with reclaim on (kswapd and direct reclaim under a limit), or 0:
    /// as many frames as the layout needs and no reclaim.
    public var memoryPages = 0
    /// The shared area's aligned 2 MiB gets MADV_HUGEPAGE now and then (and MADV_NOHUGEPAGE),
    /// so faults there map THPs and the other operations split them.
    public var hugePages = true
    /// khugepaged's pause between passes, in ms (0: off). The shared area's MADV_HUGEPAGE puts
    /// the address space on its list; its passes collapse under the writer side beside the
    /// threads' calls and faults.
    public var khugepagedMillis = 10
    /// One shared-area operation in this many is the huge-page one.
    public var hugePageOneIn = 7
    /// Broken control (tests): huge PMDs are never split (`AddressSpace._brokenTHPNeverSplits`).
    public var brokenTHPNeverSplits = false
    public init() {}
}

/// What a stress run found.
public struct StressReport: Sendable {
    public var design: Design
    public var seconds: Double
    public var threads: Int
    public var epochs = 0
    /// Operations by kind, summed over threads.
    public var operations: [String: UInt64] = [:]
    public var counters = DesignCounters()
    /// Violations, in the order found (the first few of each epoch).
    public var violations: [String] = []
    /// Seconds from the start to the first violation.
    public var firstViolationAfter: Double?
    /// VMA-tree nodes the quiescent checks walked (the tree invariants run in release builds).
    public var treeNodesChecked = 0
    /// Pages written to and read back from the swap device (0 without one).
    public var swapOuts = 0
    public var swapIns = 0
    /// Pages reclaim freed (kswapd, direct) and direct reclaim calls, under `--memory`.
    public var reclaimed = 0
    /// Compaction for THPs: attempts (`compact_stall`), blocks it made whole, pages it migrated.
    public var compactStalls = 0
    public var compactSuccesses = 0
    public var pagesMigrated = 0
    public var directReclaims = 0
    /// Accesses that failed with OOM under the memory limit (reported, not violations).
    public var oomFailures = 0
    /// THPs faulted (huge zero page copies included), huge PMDs split, THPs MADV_COLLAPSE made.
    public var thpFaults = 0
    public var thpSplits = 0
    public var thpCollapses = 0
    /// 2 MiB khugepaged collapsed.
    public var khugepagedCollapses = 0
    /// Faults that could have mapped a THP but took a small page (no whole free 2 MiB block).
    public var thpFallbacks = 0
    /// At the end: frames free, and whole free 2 MiB blocks among them.
    public var freeFramesAtEnd = 0
    public var wholeBlocksAtEnd = 0

    public var passed: Bool { violations.isEmpty }
}

/// Threads doing mmap, munmap, mprotect, mremap, madvise(DONTNEED), faults and maps reads on
/// overlapping and disjoint ranges of one address space, with invariants checked as they go
/// and, every epoch, with all threads parked.
///
/// Each thread owns slots in its own area that only it maps, unmaps, protects and moves, and
/// writes a signature at offset 0 of their pages; every thread also faults into the others'
/// slots (at offsets ≥ 8) and churns a shared area where all operations overlap. Because only
/// the owner changes its slots, the owner knows exactly what must be true of them at any
/// moment, whatever the others do: no PTE after its munmap returns, no writable PTE after its
/// mprotect(PROT_READ) returns, its signatures intact, maps lines covering exactly its mapped
/// slots with their permissions. The epoch check adds the global invariants
/// (`MMSystem.checkQuiescent`): PTEs only inside VMAs that allow them, frame reference and map
/// counts equal to mappings, nothing free and mapped, the anonymous reverse map finding every
/// mapping of every page, no write after free.
public final class DesignStress: @unchecked Sendable {
    public let options: StressOptions
    let system: MMSystem
    public let mm: AddressSpace
    let files: [MMFile]
    let layout: StressLayout

    let pause = Atomic<Bool>(false)
    let parked = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let violationLock = SpinLock()
    var violations: [String] = []
    let violationCount = Atomic<Int>(0)
    /// Accesses that ran out of memory under `--memory` (not violations; reported).
    let oomFailures = Atomic<Int>(0)
    let opCounts: PerThreadCounters
    /// Each thread's hot slot (`StressWorker.hot`).
    let hotSlots: UnsafeMutablePointer<Atomic<Int>>

    /// Per thread: this fault was delayed between vma_start_read's check and its trylock.
    let delayedAtCheck: UnsafeMutablePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: Int(FL_MAX_THREADS))
        p.initialize(repeating: 0, count: Int(FL_MAX_THREADS))
        return p
    }()

    public init(options: StressOptions) {
        self.options = options
        layout = StressLayout(threads: options.threads)
        system = MMSystem(frames: options.memoryPages > 0 ? options.memoryPages : layout.framesNeeded, poison: true)
        // Charged, so that the quiescent checks hold the memcg's usage to its pages and stocks.
        system.attach(memcg: MemCgroup.chain("/stress"))
        if options.swapPages > 0 { system.swapOn(pages: options.swapPages, ioLatencyNs: options.ioLatencyNs) }
        if options.memoryPages > 0 { system.enableReclaim() }
        system._brokenTHPNeverSplits = options.brokenTHPNeverSplits
        if options.hugePages && options.khugepagedMillis > 0 {
            var k = KhugepagedSettings()
            k.scanSleepMillis = options.khugepagedMillis
            system.enableKhugepaged(k)
        }
        var cfg = AddressSpace.Configuration()
        cfg.tree = options.tree
        if options.delayOneIn > 0 {
            let every = options.delayOneIn, ns = options.delayNs
            let flags = Shared(delayedAtCheck)
            cfg.faultHook = { stage, page in
                // A cheap per-page hash picks the faults to delay (no shared state).
                let pick = page >> 12 &* 0x9E37_79B9_7F4A_7C15 ^ fl_rdtsc()
                switch stage {
                case .beforeInstall:
                    // A fault delayed in vma_start_read's window is delayed here too, past
                    // the writer that marked meanwhile (see `.vmaMarked`).
                    let t = currentThreadIndex()
                    if flags.value[t] != 0 {
                        flags.value[t] = 0
                        fl_sleep_ns(2 * ns)
                    } else if pick % every == 0 {
                        fl_sleep_ns(ns)
                    }
                case .vmaLockChecked:
                    if pick % 8 == 0 {
                        flags.value[currentThreadIndex()] = 1
                        fl_sleep_ns(ns)
                    }
                case .vmaMarked:
                    // A writer pauses between marking a VMA and changing it: a fault that
                    // slipped in unmarked reads the old VMA, then installs after the change.
                    if pick % 8 == 0 { fl_sleep_ns(2 * ns) }
                case .cowCopied, .pageCacheFound, .anonVMAReady:
                    break
                }
            }
        }
        mm = AddressSpace(system: system, design: options.design, configuration: cfg)
        let filePages = UInt64(layout.threads * StressLayout.slotsPerThread * StressLayout.pagesPerSlot)
        files = [
            system.makeFile(path: "/stress/file0", size: filePages * Linux.pageSize),
            system.makeFile(path: "/stress/file1", size: filePages * Linux.pageSize, ioLatencyNs: options.ioLatencyNs),
        ]
        opCounts = PerThreadCounters(width: StressOp.allCases.count)
        hotSlots = .allocate(capacity: options.threads)
        for i in 0..<options.threads { (hotSlots + i).initialize(to: Atomic(0)) }
    }

    deinit {
        hotSlots.deallocate()
        delayedAtCheck.deallocate()
    }

    /// Records a violation (thread-safe).
    func violation(_ s: String) {
        violationCount.wrappingAdd(1, ordering: .relaxed)
        violationLock.withLock { if violations.count < 200 { violations.append(s) } }
    }

    /// Runs the stress for `options.seconds` and reports; `progress(epochsDone, epochsPlanned,
    /// label)` after each epoch's check.
    public func run(progress: (Int, Int, String) -> Void = { _, _, _ in }) -> StressReport {
        let n = options.threads
        let workers = (0..<n).map { StressWorker(stress: self, index: $0, seed: options.seed &+ UInt64($0) &* 0x9E37_79B9) }
        let start = fl_now_ns()
        let deadline = start + UInt64(options.seconds * 1e9)
        let threads = workers.map { w in Threads.spawn { w.run() } }
        var report = StressReport(design: options.design, seconds: options.seconds, threads: n)
        let c0 = mm.designCounters
        while true {
            let now = fl_now_ns()
            let last = now >= deadline
            if !last { fl_sleep_ns(min(UInt64(options.epoch * 1e9), deadline - now)) }
            // Park everyone, check, resume.
            pause.store(true, ordering: .sequentiallyConsistent)
            while parked.load(ordering: .acquiring) < n { fl_sleep_ns(50_000) }
            report.epochs += 1
            let before = violationCount.load(ordering: .relaxed)
            for p in system.checkQuiescent([mm]) { violation("epoch \(report.epochs): " + p) }
            for w in workers { w.checkOwnSlotsQuiescent() }
            let found = violationCount.load(ordering: .relaxed) > before || violationCount.load(ordering: .relaxed) > 0
            if found && report.firstViolationAfter == nil {
                report.firstViolationAfter = Double(fl_now_ns() - start) / 1e9
            }
            let done = last || fl_now_ns() >= deadline || (found && options.stopOnViolation)
            let planned = max(report.epochs + 1, Int((options.seconds / options.epoch).rounded(.up)) + 1)
            progress(report.epochs, planned, "epoch \(report.epochs) checked, \(violationCount.load(ordering: .relaxed)) violations")
            if done { stop.store(true, ordering: .sequentiallyConsistent) }
            pause.store(false, ordering: .sequentiallyConsistent)
            if done { break }
        }
        for t in threads { Threads.join(t) }
        report.counters = mm.designCounters - c0
        report.treeNodesChecked = system.treeNodesChecked.load(ordering: .relaxed)
        report.swapOuts = system.swap?.pagesOut ?? 0
        report.swapIns = system.swap?.pagesIn ?? 0
        report.reclaimed = system.vmscan[.pgstealKswapd] + system.vmscan[.pgstealDirect]
        report.compactStalls = system.vmscan[.compactStall]
        report.compactSuccesses = system.vmscan[.compactSuccess]
        report.pagesMigrated = system.vmscan[.pgmigrateSuccess]
        report.directReclaims = system.vmscan[.directReclaims]
        report.oomFailures = oomFailures.load(ordering: .relaxed)
        let thp = mm.thpStats
        report.thpFaults = thp.faultAlloc
        report.thpSplits = thp.splitPMD
        report.thpFallbacks = thp.faultFallback
        report.khugepagedCollapses = system.khugepagedStats.pagesCollapsed
        system.rcu.barrier()
        report.freeFramesAtEnd = system.frames.freeFrames
        report.wholeBlocksAtEnd = system.frames.freeHugeBlocks
        report.thpCollapses = Int(mm.stats.sum(MMStat.thpCollapseAlloc.rawValue))
        let ops = opCounts.sums()
        for op in StressOp.allCases { report.operations[op.rawValue] = ops[op.index] }
        report.violations = violationLock.withLock { violations }
        if report.violations.isEmpty, violationCount.load(ordering: .relaxed) > 0 {
            report.violations = ["\(violationCount.load(ordering: .relaxed)) violations"]
        }
        return report
    }

    /// Called by workers between operations.
    @inline(__always)
    func parkIfAsked() -> Bool {
        if stop.load(ordering: .relaxed) { return false }
        if !pause.load(ordering: .acquiring) { return true }
        parked.wrappingAdd(1, ordering: .acquiringAndReleasing)
        while pause.load(ordering: .acquiring) { fl_sleep_ns(100_000) }
        parked.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        return !stop.load(ordering: .acquiring)
    }
}

/// Where things go: per-thread areas of slots, a shared area, all inside a window far below
/// `mmap_base` (kernel-placed mappings land near the top, never here).
struct StressLayout: Sendable {
    static let window: UInt64 = 0x2000_0000_0000
    static let slotsPerThread = 12
    static let pagesPerSlot = 32
    static var slotBytes: UInt64 { UInt64(pagesPerSlot) * Linux.pageSize }
    /// Each thread's area: its slots, then one slot of space so areas never touch.
    static var areaBytes: UInt64 { UInt64(slotsPerThread + 1) * slotBytes }
    static let sharedPages: UInt64 = 1024

    let threads: Int
    var sharedArea: Range<UInt64> {
        let s = Self.window + UInt64(threads + 1) * Self.areaBytes
        return s..<(s + Self.sharedPages * Linux.pageSize)
    }

    func area(_ t: Int) -> Range<UInt64> {
        let s = Self.window + UInt64(t) * Self.areaBytes
        return s..<(s + UInt64(Self.slotsPerThread) * Self.slotBytes)
    }

    func slot(_ t: Int, _ k: Int) -> UInt64 { area(t).lowerBound + UInt64(k) * Self.slotBytes }

    /// Frames for the worst case: every slot and the shared area resident, both files cached,
    /// copies on write, kernel-placed mappings, with room to spare.
    var framesNeeded: Int {
        let slots = threads * Self.slotsPerThread * Self.pagesPerSlot
        return 4 * slots + 4 * Int(Self.sharedPages) + threads * 1024 + 8192
    }
}

/// Operation kinds counted per thread.
enum StressOp: String, CaseIterable {
    case faultOwn = "fault-own", faultOther = "fault-other", faultShared = "fault-shared"
    case mmapSlot = "mmap-slot", munmapSlot = "munmap-slot", mprotectSlot = "mprotect-slot"
    case dontneedSlot = "dontneed-slot", mremapSlot = "mremap-slot", verifySlot = "verify-slot", pageoutSlot = "pageout-slot"
    case sharedOp = "shared-op", kernelPlaced = "kernel-placed", mapsRead = "maps-read"

    var index: Int { Self.allCases.firstIndex(of: self)! }
}
