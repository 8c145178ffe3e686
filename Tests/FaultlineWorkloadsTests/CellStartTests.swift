import Foundation
import FaultlineMM
@testable import FaultlineWorkloads
import Testing

/// A cell's `ready` step (where a model cell mirrors this process's layout) runs once every
/// worker thread exists — its stack and malloc arena already in the layout, as they are when
/// a host cell's threads make their first mmap — and before any of them maps anything.
@Suite("Cell start")
struct CellStartTests {
    static func threadsOfThisProcess() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task"))?.count ?? 0
    }

    @Test func readyRunsWhenEveryWorkerExistsAndNoneHasMapped() {
        var o = smallOptions(.seedMix, threads: 3)
        o.layout = .empty
        let system = WorkloadRunner.makeSystem(o, workloads: [.seedMix], threads: 3)
        let mm = AddressSpace(system: system, design: .perVMA615)
        let target = ModelTarget(mm: mm, files: [], reader: .lockless, slowReaderNs: 0)
        let before = Self.threadsOfThisProcess()
        var atReady: (threads: Int, vmas: Int)? = nil
        let r = WorkloadRunner.run(target, o, name: "per-vma-6.15", rep: 0,
                                   ready: { atReady = (Self.threadsOfThisProcess(), mm.mapsLines(reader: .locked).count) }) { nil }
        #expect(atReady != nil)
        #expect((atReady?.threads ?? 0) >= before + 3, "\(String(describing: atReady)) threads, \(before) before")
        #expect(atReady?.vmas == 0, "a worker mapped before ready")
        #expect(r.ops > 0)
    }

    static func mappingsOfThisProcess() -> Int { ProcessLayout.current()?.mappings.count ?? 0 }

    /// maps-reader's 500 VMAs are the host's own when a host cell makes them: the cell unmaps
    /// them (left, every later cell — host and mirrored model — ran among thousands more).
    @Test func aHostMapsReaderCellLeavesNoMappingsBehind() {
        var o = smallOptions(.mapsReader, threads: 2)
        o.seconds = 0.05
        let before = Self.mappingsOfThisProcess()
        var grew = 0
        for _ in 0..<3 {
            _ = WorkloadRunner.runHost(options: o)
            grew = Self.mappingsOfThisProcess() - before
        }
        // Other tests map and unmap meanwhile; a leak would be 1,500 here.
        #expect(grew < 400, "\(grew) more mappings after three cells")
    }
}
