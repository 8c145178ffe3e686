import Foundation
import Glibc
import FaultlineMM
import FaultlineSync
@testable import FaultlineWorkloads
import Testing

/// A cell's `ready` step (where a model cell mirrors this process's layout) runs once every
/// worker thread exists — its stack and malloc arena already in the layout, as they are when
/// a host cell's threads make their first mmap — and before any of them maps anything.
@Suite("Cell start")
struct CellStartTests {
    /// The thread ids of this process (other tests' threads come and go meanwhile: compare
    /// sets, not counts).
    static func threadsOfThisProcess() -> Set<String> {
        Set((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [])
    }

    @Test func readyRunsWhenEveryWorkerExistsAndNoneHasMapped() {
        var o = smallOptions(.seedMix, threads: 3)
        o.layout = .empty
        let system = WorkloadRunner.makeSystem(o, workloads: [.seedMix], threads: 3)
        let mm = AddressSpace(system: system, design: .perVMA615)
        let target = ModelTarget(mm: mm, files: [], reader: .lockless, slowReaderNs: 0)
        let before = Self.threadsOfThisProcess()
        var atReady: (threads: Set<String>, vmas: Int)? = nil
        let r = WorkloadRunner.run(target, o, name: "per-vma-6.15", rep: 0,
                                   ready: { atReady = (Self.threadsOfThisProcess(), mm.mapsLines(reader: .locked).count) }) { nil }
        #expect(atReady != nil)
        // At least the three workers are threads that did not exist before.
        #expect((atReady?.threads.subtracting(before).count ?? 0) >= 3, "\(String(describing: atReady)) threads, \(before) before")
        #expect(atReady?.vmas == 0, "a worker mapped before ready")
        #expect(r.ops > 0)
        // The workers' CPU time over the window: a share of it (not ns against s), and what
        // the rest of the process took, not negative.
        let share = r.workerCPUShare ?? -1
        #expect(share > 0 && share <= 1.05, "\(share)")
        #expect((r.otherCPUSeconds ?? -1) >= 0 && (r.otherCPUSeconds ?? 1) < o.seconds * 4)
        // Where two CPUs can be used, the round trip between the first two was measured (a
        // cache line's: tens to hundreds of ns, never a timer tick).
        if Threads.availableCPUs >= 2 {
            let t = r.cpuRoundTripNs ?? -1
            #expect(t > 1 && t < 1_000_000, "\(t)")
        } else {
            #expect(r.cpuRoundTripNs == nil)
        }
    }

    /// Under `--file-cache warm` page_fault2/3's files are passed over once before the cell, the
    /// host's (every page resident, by mincore) and the model's (every page cached) alike;
    /// under `cold`, and for other workloads, they are not touched.
    @Test func warmFilesAreInThePageCacheBeforeTheCell() {
        var o = smallOptions(.pageFault2, threads: 1)
        let pages = Int(o.bytes / Linux.pageSize)
        // The host: a fresh sparse file, as runHost makes them.
        func hostResident(_ mode: FileCacheMode, _ w: Workload) -> Int {
            var template = Array("/tmp/faultline-warm-XXXXXX".utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            defer { close(fd) }
            _ = ftruncate(fd, off_t(o.bytes))
            var oo = o
            oo.fileCache = mode
            oo.workload = w
            WorkloadRunner.warmFiles(HostTarget(fds: [fd], slowReaderNs: 0), oo)
            let p = mmap(nil, Int(o.bytes), PROT_READ, MAP_SHARED, fd, 0)!
            defer { munmap(p, Int(o.bytes)) }
            var vec = [UInt8](repeating: 0, count: pages)
            _ = mincore(p, Int(o.bytes), &vec)
            return vec.filter { $0 & 1 != 0 }.count
        }
        #expect(hostResident(.warm, .pageFault2) == pages)
        #expect(hostResident(.cold, .pageFault2) == 0)
        #expect(hostResident(.warm, .mmap1) == 0)
        // The model.
        o.fileCache = .warm
        let system = MMSystem(frames: 4 * pages)
        let file = system.makeFile(path: "/w", size: o.bytes)
        let mm = AddressSpace(system: system, design: .perVMA615)
        WorkloadRunner.warmFiles(ModelTarget(mm: mm, files: [file], reader: .lockless, slowReaderNs: 0), o)
        #expect((0..<UInt64(pages)).allSatisfy { file.cachedPage($0) != nil })
        #expect(mm.mapCount == 0, "the pass unmapped what it mapped")
        o.fileCache = .cold
        let cold = system.makeFile(path: "/c", size: o.bytes)
        WorkloadRunner.warmFiles(ModelTarget(mm: mm, files: [cold], reader: .lockless, slowReaderNs: 0), o)
        #expect((0..<UInt64(pages)).allSatisfy { cold.cachedPage($0) == nil })
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
