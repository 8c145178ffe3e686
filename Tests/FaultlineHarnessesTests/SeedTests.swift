import FaultlineHarnesses
import FaultlineMM
import Testing

/// The seed scenario's mechanics (its numbers are a benchmark: `faultline seed`).
@Suite("Seed scenario")
struct SeedScenarioTests {
    @Test(arguments: [Design.global, .spfMMSeq, .perVMA, .range])
    func trialsCountWhatTheyDid(design: Design) {
        var o = SeedScenario.Options()
        o.seconds = 0.1
        o.regionPages = 256
        o.churnPages = 16
        o.pin = false
        let solo = SeedScenario.trial(design, o, beside: .none)
        let busy = SeedScenario.trial(design, o, beside: .mm)
        #expect(solo.failedWrites == 0 && busy.failedWrites == 0)
        #expect(solo.faultsPerSecond > 0 && busy.faultsPerSecond > 0)
        #expect(solo.churnOpsPerSecond == 0 && busy.churnOpsPerSecond > 0)
        #expect(SeedScenario.churnAlone(design, o) > 0)
        // Every write was a fault: the region is dropped after each pass.
        #expect(solo.counters.faults > 0)
        if design == .perVMA { #expect(solo.counters.locklessSuccesses > 0) }
        if design == .spfMMSeq {
            // The churner's mmap/munmap bump the mm-wide count under the faulter.
            #expect(busy.counters.abortReasons["seq-changed"]! > 0)
        }
    }
}
