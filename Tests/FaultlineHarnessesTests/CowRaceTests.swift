import FaultlineHarnesses
import FaultlineMM
import Testing

/// Lespinasse's copy-on-write race, deterministically (see `CowRace`).
@Suite("COW race", .serialized)
struct CowRaceTests {
    @Test(arguments: Design.selectable)
    func safeDesignsKeepTheWrite(design: Design) {
        let r = CowRace.run(design: design)
        #expect(!r.lostWrite)
        #expect(r.problems.isEmpty, "\(r.problems)")
        // Only Lespinasse's design lets fork run while the fault is held — and catches it.
        #expect(r.forkRanWhileHeld == (design == .spfMMSeq))
    }
}

@Suite("BrokenControl COW race", .serialized)
struct BrokenControlCowRaceTests {
    @Test
    func revalidatingOnlyTheVMALosesTheWrite() {
        let r = CowRace.run(design: .spfVMASeq, allowSpeculativeCOW: true)
        #expect(r.forkRanWhileHeld)
        #expect(r.lostWrite)
        #expect(r.problems.isEmpty, "\(r.problems)")
    }

    @Test
    func noValidationLosesTheWrite() {
        let r = CowRace.run(design: .brokenSPF)
        #expect(r.lostWrite)
    }
}
