import FaultlineMM
import FaultlineReport
import FaultlineWorkloads
import Foundation
import Testing

/// `faultline calibrate`'s arithmetic: each repetition's N-thread cell over the same
/// repetition's 1-thread cell, medians and spreads, the error and the tolerance.
@Suite("Calibration")
struct CalibrationTests {
    static let summary = LatencyHistogram().summary

    func cell(_ design: String, _ workload: String, _ threads: Int, _ rep: Int, _ ops: Double) -> CellResult {
        CellResult(design: design, workload: workload, threads: threads, rep: rep, seconds: 1, ops: UInt64(ops),
                   opsPerSecond: ops, latencyNs: Self.summary, latencyCurve: [], counters: nil, mapsReads: nil)
    }

    func comparison(_ cells: [CellResult]) -> Comparison {
        Comparison(machine: .current(), designs: ["host", "per-vma-6.15"], workloads: ["page_fault1", "mmap1"],
                   threads: [1, 2], repetitions: 3, secondsPerCell: 1, sizeMiB: 1, cells: cells)
    }

    @Test func ratiosPairTheSameRepetition() {
        var cells: [CellResult] = []
        // Host: 2 threads ÷ 1 thread per repetition = 2.0, 1.5, 1.0 → median 1.5.
        for (rep, (one, two)) in [(100.0, 200.0), (100, 150), (200, 200)].enumerated() {
            cells += [cell("host", "page_fault1", 1, rep, one), cell("host", "page_fault1", 2, rep, two)]
        }
        // Model: 1.6, 1.7, 1.8 → median 1.7, +13% of the host's.
        for (rep, r) in [1.6, 1.7, 1.8].enumerated() {
            cells += [cell("per-vma-6.15", "page_fault1", 1, rep, 1000), cell("per-vma-6.15", "page_fault1", 2, rep, 1000 * r)]
        }
        // mmap1: the model collapses where the host holds (0.5 against 1.0): outside.
        for rep in 0..<3 {
            cells += [cell("host", "mmap1", 1, rep, 10), cell("host", "mmap1", 2, rep, 10),
                      cell("per-vma-6.15", "mmap1", 1, rep, 10), cell("per-vma-6.15", "mmap1", 2, rep, 5)]
        }
        let c = Calibration(comparison(cells), design: "per-vma-6.15", tolerance: 0.15)
        #expect(c.rows.count == 2)
        let pf = c.rows.first { $0.workload == "page_fault1" }!
        #expect(pf.threads == 2)
        #expect(abs(pf.host.median - 1.5) < 1e-9 && pf.host.min == 1.0 && pf.host.max == 2.0 && pf.host.count == 3)
        #expect(abs(pf.model.median - 1.7) < 1e-9)
        #expect(abs(pf.error - (1.7 / 1.5 - 1)) < 1e-9 && pf.within)
        let m = c.rows.first { $0.workload == "mmap1" }!
        #expect(abs(m.error + 0.5) < 1e-9 && !m.within)
        #expect(!c.passed)
        let text = c.text()
        #expect(text.contains("+13%") && text.contains("within ±15%"))
        #expect(text.contains("-50%") && text.contains("OUTSIDE ±15%"))
        #expect(text.contains("1 of 2 ratios within ±15%"))
        // compare's report has the same section when it ran the host and per-vma-6.15.
        let html = comparison(cells).html()
        #expect(html.contains("<h2>Calibration: does per-vma-6.15 scale as the host does?</h2>"))
        #expect(html.contains("+13%</td>") && html.contains("-50%</td>"))
        // So has the results page.
        let page = comparison(cells).markdown(source: "r/results.json")
        #expect(page.contains("## Calibration: does per-vma-6.15 scale as the host does?"))
        #expect(page.contains("| page_fault1 | 2 ÷ 1 | 1.50× | 1.00×–2.00× | 1.70× | 1.60×–1.80× | +13% |"))
        #expect(page.contains("| mmap1 | 2 ÷ 1 | 1.00× | 1.00×–1.00× | 0.50× | 0.50×–0.50× | -50% |"))
    }

    /// Cells that ran with the CPUs far apart (a round trip over twice the run's lower
    /// quartile) leave their repetitions out of the ratios, with the ratios over every repetition and
    /// the count left out said beside them; fewer than three near ones keep every repetition.
    @Test func repetitionsWithTheCPUsFarApartAreLeftOutAndSaid() {
        func timed(_ c: CellResult, _ ns: Double) -> CellResult { var c = c; c.cpuRoundTripNs = ns; return c }
        var cells: [CellResult] = []
        // page_fault1, five repetitions; in repetition 4 the CPUs sat far apart (350 ns against
        // 70) and the model's 2-thread cell collapsed.
        for rep in 0..<5 {
            let far = rep == 4
            cells += [timed(cell("host", "page_fault1", 1, rep, 100), 70), timed(cell("host", "page_fault1", 2, rep, far ? 150 : 180), far ? 350 : 72),
                      timed(cell("per-vma-6.15", "page_fault1", 1, rep, 1000), 71), timed(cell("per-vma-6.15", "page_fault1", 2, rep, far ? 600 : 1800), far ? 350 : 75)]
        }
        // mmap1: only two near repetitions of five: every repetition stays.
        for rep in 0..<5 {
            let far = rep >= 2
            cells += [timed(cell("host", "mmap1", 1, rep, 10), 70), timed(cell("host", "mmap1", 2, rep, 10), far ? 340 : 70),
                      timed(cell("per-vma-6.15", "mmap1", 1, rep, 10), 70), timed(cell("per-vma-6.15", "mmap1", 2, rep, far ? 4 : 9), far ? 340 : 70)]
        }
        let c = Calibration(comparison(cells), design: "per-vma-6.15", tolerance: 0.15)
        let pf = c.rows.first { $0.workload == "page_fault1" }!
        #expect(pf.host.count == 4 && abs(pf.host.median - 1.8) < 1e-9)
        #expect(pf.model.count == 4 && abs(pf.model.median - 1.8) < 1e-9 && pf.within)
        #expect(pf.hostAll?.count == 5 && pf.modelAll?.count == 5)
        let m = c.rows.first { $0.workload == "mmap1" }!
        #expect(m.host.count == 5 && m.model.count == 5 && m.hostAll == nil)
        let p = c.placement ?? ""
        #expect(p.contains("70 ns") && p.contains("350 ns"))
        #expect(p.contains("page_fault1 2 ÷ 1: host 1, model 1 of 5"))
        #expect(p.contains("mmap1 2 ÷ 1: kept every repetition"))
        #expect(c.text().contains("over every repetition, page_fault1 2 ÷ 1"))
        #expect(c.conditions.contains { $0.contains("round trip between CPUs 0 and 1") && $0.contains("70–350 ns") })
        #expect(comparison(cells).markdown(source: "r/results.json").contains("CPU placement:"))
        // Without round trips (results from before the measurement), nothing is left out.
        let plain = Calibration(comparison(cells.map { var c = $0; c.cpuRoundTripNs = nil; return c }), design: "per-vma-6.15")
        #expect(plain.placement == nil && plain.rows.allSatisfy { $0.hostAll == nil && $0.host.count == 5 })
    }

    /// The host cells' CPU share is said, and the cells whose workers lost time are named.
    @Test func hostWorkersCPUShareIsSaid() {
        var cells = [cell("host", "page_fault1", 1, 0, 10), cell("host", "page_fault1", 2, 0, 20),
                     cell("host", "mmap1", 1, 0, 10), cell("host", "mmap1", 2, 0, 5)]
        for (i, share) in [1.0, 0.98, 0.99, 0.54].enumerated() {
            cells[i].workerCPUShare = share
            cells[i].otherCPUSeconds = 0.002
        }
        let c = Calibration(comparison(cells), design: "per-vma-6.15")
        let line = c.conditions.first { $0.hasPrefix("measured: the host cells' workers") }
        #expect(line?.contains("54–100% of their windows (median 98%)") == true, "\(c.conditions)")
        #expect(line?.contains("at most 2 ms") == true)
        #expect(line?.contains("below 90% (the workers blocked or waited for a CPU): mmap1 2T 54%") == true)
        #expect(Calibration(comparison(Array(cells.prefix(0))), design: "per-vma-6.15").conditions.isEmpty)
    }

    @Test func aWorkloadWithoutHostCellsHasNoRow() {
        let cells = [cell("per-vma-6.15", "page_fault1", 1, 0, 10), cell("per-vma-6.15", "page_fault1", 2, 0, 20)]
        let c = Calibration(comparison(cells), design: "per-vma-6.15")
        #expect(c.rows.isEmpty && !c.passed)
    }

    @Test func hostConditionsSayWhatWasNotControlled() {
        let lines = Calibration.hostConditions(warmup: 0.1)
        #expect(lines.first?.hasPrefix("controlled:") == true)
        #expect(lines.first?.contains("this process's mappings") == true)
        #expect(Calibration.hostConditions(warmup: 0.1, layout: .empty).first?.contains("--layout empty") == true)
        #expect(lines.first?.contains("passed over once") == true)
        #expect(Calibration.hostConditions(warmup: 0.1, fileCache: .cold).first?.contains("--file-cache cold") == true)
        #expect(lines.first?.contains("enters this machine's kernel once") == true)
        #expect(Calibration.hostConditions(warmup: 0.1, kernelEntry: .none).first?.contains("--kernel-entry none") == true)
        // The crossing, measured: a system call, a page-fault exception (where the vsyscall page
        // is execute-only) and a zero-page fault all cost something; the default charges a fault
        // the exception's, a call the system call's.
        let crossing = lines.first { $0.contains("the crossing into the kernel") }
        let costs = crossing.map { c in c.split(separator: " ").compactMap { Int($0) } } ?? []
        if KernelEntry.exceptionAvailable {
            #expect(crossing?.hasPrefix("controlled:") == true, "\(lines)")
            #expect(crossing?.contains("charges each fault a page-fault exception's crossing and each call a system call's") == true, "\(lines)")
            #expect(costs.count == 3 && costs.allSatisfy { $0 > 0 }, "\(String(describing: crossing))")
        } else {
            #expect(crossing?.contains("falls back") == true, "\(lines)")
            #expect(costs.count == 2 && costs.allSatisfy { $0 > 0 }, "\(String(describing: crossing))")
        }
        let bySyscall = Calibration.hostConditions(warmup: 0.1, kernelEntry: .syscall).first { $0.contains("the crossing into the kernel") }
        #expect(bySyscall?.hasPrefix("not controlled:") == true && bySyscall?.contains("charges each fault and call a system call's crossing (--kernel-entry syscall)") == true, "\(String(describing: bySyscall))")
        // The memory cgroup: charged as this process is, or said why not.
        let memcg = lines.first { $0.contains("memory cgroup") }
        if let p = MemCgroup.hostPlacement(), p.depth > 1 {
            #expect(memcg?.hasPrefix("controlled:") == true && memcg?.contains(p.path) == true, "\(lines)")
        } else {
            #expect(memcg?.hasPrefix("not controlled:") == true, "\(lines)")
        }
        #expect(Calibration.hostConditions(warmup: 0.1, memcg: .none).contains { $0.contains("--memcg none") })
        // A machine that exposes its THP setting has it said.
        if FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage/enabled") {
            #expect(lines.contains { $0.contains("transparent huge pages") })
        }
    }
}
