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
        if design != .global && !design.usesRangeLock { #expect(r.counters.locklessSuccesses > 0) }
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

/// The control: validation removed, the stress must say so, fast. (Skipped under TSan: the
/// control's stale PTEs race on frame memory for real.)
@Suite("BrokenControl stress", .serialized)
struct BrokenControlStressTests {
    @Test
    func brokenSPFIsCaughtWithinSeconds() {
        var o = StressOptions()
        o.design = .brokenSPF
        o.seconds = 10
        o.threads = 4
        o.epoch = 0.25
        o.seed = 3
        let r = DesignStress(options: o).run()
        #expect(!r.violations.isEmpty)
        #expect((r.firstViolationAfter ?? 99) < 10)
    }

}
