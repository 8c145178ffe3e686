import FaultlineHarnesses
import FaultlineMM
import Testing

/// Short stress runs: every design must come out clean. (`faultline stress` runs them long.)
@Suite("Design stress", .serialized)
struct DesignStressTests {
    @Test(arguments: Design.selectable)
    func stressFindsNoViolation(design: Design) {
        var o = StressOptions()
        o.design = design
        o.seconds = 1.5
        o.threads = 4
        o.epoch = 0.25
        o.seed = 7
        let r = DesignStress(options: o).run()
        #expect(r.violations.isEmpty, "\(r.violations.prefix(10))")
        #expect(r.epochs >= 2)
        // It did race: the owners changed their slots while the others faulted into them.
        #expect(r.operations["munmap-slot"]! > 0 && r.operations["mprotect-slot"]! > 0 && r.operations["fault-other"]! > 0)
        #expect(r.counters.faults > 0)
        if ![.global, .range, .rangeTree].contains(design) { #expect(r.counters.locklessSuccesses > 0) }
    }

    @Test
    func globalOnThePre61RBTree() {
        var o = StressOptions()
        o.design = .global
        o.tree = .rbtree
        o.seconds = 1
        o.threads = 3
        o.epoch = 0.25
        let r = DesignStress(options: o).run()
        #expect(r.violations.isEmpty, "\(r.violations.prefix(10))")
        #expect(r.counters.faults > 0)
    }

    @Test(arguments: [MapsReader.locked, .lockless])
    func stressWithOneMapsReader(reader: MapsReader) {
        var o = StressOptions()
        o.design = .perVMA
        o.seconds = 1
        o.threads = 3
        o.epoch = 0.25
        o.mapsReader = reader
        let r = DesignStress(options: o).run()
        #expect(r.violations.isEmpty, "\(r.violations.prefix(10))")
        #expect(r.operations["maps-read"]! > 0)
        if reader == .lockless { #expect(r.counters.mapsVMAs > 0) }
    }
}

/// The controls, each broken on purpose: the stress must say so within 30 s. `broken-spf`
/// has no validation; the others are subtle (a missing re-check, a writer that does not mark,
/// a missing sequence-count bump, a zap outside the range held). (Skipped under TSan: the
/// controls' stale PTEs race on frame memory for real.)
@Suite("BrokenControl stress", .serialized)
struct BrokenControlStressTests {
    @Test(arguments: Design.allCases.filter(\.isBrokenControl))
    func brokenControlIsCaughtWithin60Seconds(design: Design) {
        var o = StressOptions()
        o.design = design
        // Alone, all six are caught in 4.5 s together; beside the rest of a parallel test run
        // on two CPUs the stress threads seldom run at once, and the per-VMA re-check controls
        // once went 30 s uncaught (local CI, 2026-12-07). The run stops at the first violation.
        o.seconds = 60
        o.threads = 4
        o.epoch = 0.25
        o.seed = 3
        // Debug builds run a fifth as many operations: widen the race windows more often.
        o.delayOneIn = 8
        // The controls break the VMA and fault protocols; huge pages (with their own broken
        // twin, `THPStressTests`) are left out so that each race comes up as often as before
        // them (a full parallel test run once missed broken-per-vma-recheck in 30 s with them).
        o.hugePages = false
        let r = DesignStress(options: o).run()
        #expect(!r.violations.isEmpty, "\(design.rawValue) was not caught")
        #expect((r.firstViolationAfter ?? 99) < 60)
    }
}

/// Huge pages under the stress: the shared area's THPs are faulted, split by every operation
/// of part of them, copied on write after fork and paged out, and the quiescent check walks
/// each huge PMD. Its broken twin never splits a huge PMD, which the check must catch.
@Suite("THP stress", .serialized)
struct THPStressTests {
    static func options(_ design: Design) -> StressOptions {
        var o = StressOptions()
        o.design = design
        o.seconds = 2
        o.threads = 4
        o.epoch = 0.25
        o.seed = 11
        return o
    }

    @Test(arguments: [Design.global, .perVMA615, .spfVMASeq, .range])
    func hugePagesStayConsistent(design: Design) {
        let r = DesignStress(options: Self.options(design)).run()
        #expect(r.violations.isEmpty, "\(r.violations.prefix(10))")
        #expect(r.thpFaults > 0 && r.thpSplits > 0 && r.thpCollapses > 0, "THPs faulted \(r.thpFaults), split \(r.thpSplits), collapsed \(r.thpCollapses)")
    }

    @Test func neverSplittingIsCaught() {
        var o = Self.options(.perVMA615)
        o.seconds = 30
        o.brokenTHPNeverSplits = true
        // Every shared-area operation a huge-page one: a THP made and at once cut.
        o.hugePageOneIn = 1
        let r = DesignStress(options: o).run()
        // Caught: by the worker that cut a THP, checking its PMD under the table's lock at once
        // (the quiescent check sees a cut PMD only if no one remapped it before the epoch),
        // or by what an unsplit PMD leads to (a moved or copied "huge" table whose pages the
        // reverse map or the counts then disagree with).
        #expect(!r.violations.isEmpty, "the stress missed huge PMDs that are never split (\(r.epochs) epochs; THPs faulted \(r.thpFaults), fell back \(r.thpFallbacks), collapsed \(r.thpCollapses); operations \(r.operations))")
        #expect((r.firstViolationAfter ?? 99) < 60)
    }
}
