@_spi(Testing) import FaultlineDiff
import Testing

/// `DiffRunner.judge`: when a diverging sequence is a disagreement, and when it is the host
/// varying between runs (CI, 2026-12-07: fault-around on the host left out one cached file
/// page, seed 54 under range, which 30 reruns of the same sequence never repeated).
@Suite("Difftest reruns")
struct RerunPolicyTests {
    /// Runs `judge` over scripted attempts; returns its verdict, khugepaged reruns, and the
    /// `watch` each attempt was given.
    func judge(_ script: [DiffAttempt<Int>]) -> (DiffRunner.RunVerdict<Int>, Int, [Int?]) {
        var watched: [Int?] = []
        var i = 0
        let r = DiffRunner.judge { (w: Int?) -> DiffAttempt<Int> in
            watched.append(w)
            defer { i += 1 }
            #expect(i < script.count, "judge ran the sequence more often than scripted")
            return script[min(i, script.count - 1)]
        }
        return (r.verdict, r.khugepagedReruns, watched)
    }

    func attempt(_ d: Int?, khugepaged: Bool = false, repeated: Bool = false) -> DiffAttempt<Int> {
        DiffAttempt(divergence: d, khugepagedMoved: khugepaged, modelRepeated: repeated)
    }

    @Test func anAgreeingSequenceRunsOnce() {
        let (v, k, w) = judge([attempt(nil)])
        guard case .agreed = v else { Issue.record("\(v)"); return }
        #expect(k == 0)
        #expect(w == [nil])
    }

    @Test func aDivergenceTheHostRepeatsIsADisagreement() {
        let (v, _, w) = judge([attempt(7), attempt(7, repeated: true)])
        guard case .diverged(7) = v else { Issue.record("\(v)"); return }
        // The rerun watches the first run's diverging step.
        #expect(w == [nil, 7])
    }

    @Test func aDivergenceTheRerunDoesNotRepeatIsTheHostVarying() {
        let (v, _, _) = judge([attempt(7), attempt(nil, repeated: true)])
        guard case .hostVaried(7) = v else { Issue.record("\(v)"); return }
    }

    /// The model must answer the same sequence the same way: if its answer at the diverging
    /// step changed, the agreement of the rerun proves nothing about the host.
    @Test func aModelThatAnswersDifferentlyWhenRunAgainIsADisagreement() {
        let (v, _, _) = judge([attempt(7), attempt(nil, repeated: false)])
        guard case .diverged(7) = v else { Issue.record("\(v)"); return }
    }

    @Test func aRerunDivergingElsewhereIsADisagreement() {
        let (v, _, _) = judge([attempt(7), attempt(3)])
        guard case .diverged(3) = v else { Issue.record("\(v)"); return }
    }

    @Test func khugepagedRunsAreRunAgainAndGivenUpAfterThree() {
        let (v, k, _) = judge([attempt(7, khugepaged: true), attempt(7, khugepaged: true), attempt(7, khugepaged: true)])
        guard case .givenUp = v else { Issue.record("\(v)"); return }
        #expect(k == 3)
        // A khugepaged run in between does not stand for the host repeating a divergence.
        let (v2, k2, w2) = judge([attempt(7), attempt(7, khugepaged: true), attempt(7, repeated: true)])
        guard case .diverged(7) = v2 else { Issue.record("\(v2)"); return }
        #expect(k2 == 1)
        #expect(w2 == [nil, 7, 7])
    }

    /// A divergence during which khugepaged ran, followed by a clean run: as before, agreement.
    @Test func aKhugepagedDivergenceThenAgreementAgrees() {
        let (v, k, _) = judge([attempt(7, khugepaged: true), attempt(nil)])
        guard case .agreed = v else { Issue.record("\(v)"); return }
        #expect(k == 1)
    }
}
