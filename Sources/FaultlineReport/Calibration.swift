import CFaultline
import FaultlineMM
import FaultlineWorkloads
import Foundation

/// `faultline calibrate`: how well one design of the model predicts the host's scaling. Per
/// workload, the N-thread ÷ 1-thread throughput ratio of every repetition — the host's and the
/// model's, measured interleaved in one run — the spread of each, and the model's error
/// against the host's median. A lab whose model collapses where Linux scales ranks designs on
/// costs Linux does not have; one that cannot say how noisy the host is cannot say it matches.
public struct Calibration: Sendable, Codable {
    /// Median, lowest and highest of a set of ratios.
    public struct Spread: Sendable, Codable, Equatable {
        public var median: Double
        public var min: Double
        public var max: Double
        public var count: Int

        public init?(_ xs: [Double]) {
            guard !xs.isEmpty else { return nil }
            median = Comparison.median(xs)
            min = xs.min()!
            max = xs.max()!
            count = xs.count
        }
    }

    public struct Row: Sendable, Codable {
        public var workload: String
        /// The N of N ÷ 1 threads.
        public var threads: Int
        public var host: Spread
        public var model: Spread
        /// model median ÷ host median − 1.
        public var error: Double
        /// |error| within the tolerance.
        public var within: Bool
        /// Over every repetition, where `host` and `model` leave out repetitions whose cells
        /// ran with the CPUs far apart (`Calibration.placement`); nil when none was left out.
        public var hostAll: Spread? = nil
        public var modelAll: Spread? = nil
    }

    /// A cell ran with the CPUs far apart when its CPU-to-CPU round trip took more than this
    /// many times the run's near placement: the lower quartile of its cells' round trips
    /// (`CellResult.cpuRoundTripNs`; not the fastest, which one cell on SMT siblings sets).
    public static let farPlacementFactor = 2.0
    /// The repetitions left out of the ratios because their cells ran with the CPUs far apart,
    /// and why, or nil when none was (or the results predate the measurement).
    public var placement: String? = nil

    public var design: String
    public var tolerance: Double
    public var rows: [Row]
    /// What the run held steady on the host and what it could not, one line each.
    public var conditions: [String]

    /// The ratios of `comparison`'s cells: each repetition's N-thread cell over the same
    /// repetition's 1-thread cell, for the host and for `design`.
    public init(_ comparison: Comparison, design: String, tolerance: Double = 0.15, conditions: [String] = []) {
        self.design = design
        self.tolerance = tolerance
        self.conditions = conditions
        let cells = comparison.cells
        // Where the hypervisor put the virtual CPUs moves every cost two CPUs share (a cache
        // line's round trip here: 60–90 ns, or about 350 ns for minutes at a time), and it
        // moves the host's cells and the model's by different amounts: a ratio is taken over
        // the repetitions whose two cells both ran with the CPUs as near as the run saw them.
        let trips = cells.compactMap(\.cpuRoundTripNs).sorted()
        // The run's near placement: the lower quartile of the round trips.
        let nearNs = trips.isEmpty ? nil : trips[(trips.count - 1) / 4]
        func far(_ c: CellResult) -> Bool {
            guard let f = nearNs, let t = c.cpuRoundTripNs else { return false }
            return t > Self.farPlacementFactor * f
        }
        func ratios(_ column: String, _ workload: String, _ n: Int, near: Bool) -> [Double] {
            let one = cells.filter { $0.design == column && $0.workload == workload && $0.threads == 1 }
            return cells.filter { $0.design == column && $0.workload == workload && $0.threads == n }.compactMap { c in
                guard let base = one.first(where: { $0.rep == c.rep }), base.opsPerSecond > 0 else { return nil }
                if near && (far(c) || far(base)) { return nil }
                return c.opsPerSecond / base.opsPerSecond
            }
        }
        var rows: [Row] = []
        var left: [String] = []
        for w in comparison.workloads {
            for n in comparison.threads where n > 1 {
                guard let hAll = Spread(ratios("host", w, n, near: false)), let mAll = Spread(ratios(design, w, n, near: false)),
                      hAll.median > 0 else { continue }
                var h = hAll, m = mAll
                var filtered = false
                let hNear = ratios("host", w, n, near: true), mNear = ratios(design, w, n, near: true)
                if hNear.count < hAll.count || mNear.count < mAll.count {
                    // Near repetitions only when at least three of each remain (else every one, said so).
                    if hNear.count >= 3, mNear.count >= 3, let hn = Spread(hNear), let mn = Spread(mNear), hn.median > 0 {
                        h = hn
                        m = mn
                        filtered = true
                        left.append("\(w) \(n) ÷ 1: host \(hAll.count - hn.count), model \(mAll.count - mn.count) of \(hAll.count)")
                    } else {
                        left.append("\(w) \(n) ÷ 1: kept every repetition (fewer than three near ones)")
                    }
                }
                let e = m.median / h.median - 1
                var row = Row(workload: w, threads: n, host: h, model: m, error: e, within: abs(e) <= tolerance)
                if filtered {
                    row.hostAll = hAll
                    row.modelAll = mAll
                }
                rows.append(row)
            }
        }
        self.rows = rows
        if let f = nearNs, !left.isEmpty {
            let farCells = cells.filter(far)
            let worst = farCells.compactMap(\.cpuRoundTripNs).max() ?? f
            placement = String(format: "CPU placement: a cache line's round trip between CPUs 0 and 1 took %.0f ns in the run's lower quartile and over twice that, up to %.0f ns, in %d of %d cells (the virtual CPUs placed farther apart); ratios over the repetitions whose cells all ran at most %.0f× the quartile — repetitions left out: ",
                               f, worst, farCells.count, cells.filter { $0.cpuRoundTripNs != nil }.count, Self.farPlacementFactor)
                + left.joined(separator: "; ")
        }
        if let line = Self.cpuShareCondition(cells) { self.conditions.append(line) }
        if let line = Self.roundTripCondition(cells) { self.conditions.append(line) }
    }

    /// The CPU-to-CPU round trips the cells measured, nil without any.
    static func roundTripCondition(_ cells: [CellResult]) -> String? {
        let ts = cells.compactMap(\.cpuRoundTripNs)
        guard !ts.isEmpty else { return nil }
        return String(format: "measured: a cache line's round trip between CPUs 0 and 1 (before and after each cell) took %.0f–%.0f ns (median %.0f)",
                      ts.min()!, ts.max()!, Comparison.median(ts))
    }

    /// How much of each host cell's window its workers ran: a cell whose workers ran
    /// throughout and was still slow did slower work; one whose workers waited lost CPU
    /// time (to other work, or blocked on each other). Nil without host cells that say it.
    static func cpuShareCondition(_ cells: [CellResult]) -> String? {
        let host = cells.filter { $0.design == "host" && $0.workerCPUShare != nil }
        guard !host.isEmpty else { return nil }
        let shares = host.map { $0.workerCPUShare! }
        let other = host.compactMap(\.otherCPUSeconds)
        var line = String(format: "measured: the host cells' workers ran %.0f–%.0f%% of their windows (median %.0f%%)",
                          shares.min()! * 100, shares.max()! * 100, Comparison.median(shares) * 100)
        if let m = other.max() { line += String(format: "; the rest of this process took at most %.0f ms of CPU during one", m * 1000) }
        let low = host.filter { $0.workerCPUShare! < 0.9 }
        if !low.isEmpty {
            let byCell = Dictionary(grouping: low) { "\($0.workload) \($0.threads)T" }
            line += "; below 90% (the workers blocked or waited for a CPU): " + byCell.keys.sorted().map { k in
                let xs = byCell[k]!.map { String(format: "%.0f%%", $0.workerCPUShare! * 100) }
                return "\(k) \(xs.joined(separator: ", "))"
            }.joined(separator: "; ")
        }
        return line
    }

    /// Every row within the tolerance (and at least one row).
    public var passed: Bool { !rows.isEmpty && rows.allSatisfy(\.within) }

    /// The table `faultline calibrate` prints.
    public func text() -> String {
        func r(_ x: Double) -> String { String(format: "%.2f×", x) }
        var lines = ["calibration of \(design) against the host: N-thread ÷ 1-thread throughput, per repetition (median, min–max)"]
        let header = ["workload", "threads", "host", "host min–max", design, "model min–max", "error", ""]
        var table = [header]
        for row in rows {
            table.append([row.workload, "\(row.threads) ÷ 1", r(row.host.median), r(row.host.min) + "–" + r(row.host.max),
                          r(row.model.median), r(row.model.min) + "–" + r(row.model.max),
                          String(format: "%+.0f%%", row.error * 100),
                          row.within ? "within ±\(Int(tolerance * 100))%" : "OUTSIDE ±\(Int(tolerance * 100))%"])
        }
        let widths = (0..<header.count).map { i in table.map { $0[i].count }.max()! }
        for t in table {
            lines.append(t.enumerated().map { i, s in i < 2 ? s.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[i] - s.count) + s }.joined(separator: "  "))
        }
        let inside = rows.filter(\.within).count
        lines.append("\(inside) of \(rows.count) ratios within ±\(Int(tolerance * 100))% of the host's median")
        if let placement {
            lines.append(placement)
            for row in rows {
                guard let h = row.hostAll, let m = row.modelAll else { continue }
                lines.append("  over every repetition, \(row.workload) \(row.threads) ÷ 1: host \(r(h.median)) (\(r(h.min))–\(r(h.max))), model \(r(m.median)) (\(r(m.min))–\(r(m.max))), error "
                             + String(format: "%+.0f%%", (m.median / h.median - 1) * 100))
            }
        }
        if !conditions.isEmpty {
            lines.append("host conditions:")
            lines += conditions.map { "  " + $0 }
        }
        return lines.joined(separator: "\n")
    }

    /// What crossing into this machine's kernel costs, measured now (the median of three
    /// tries each): a system call's round trip, which the model charges per memory call (and
    /// per fault under `--kernel-entry syscall`); a page-fault exception's, which it charges per
    /// fault under `--kernel-entry exception` (the vsyscall page's emulation: the exception's
    /// entry, the fault handler's preamble and exit); and a read fault that maps the zero page,
    /// the host's cheapest real fault.
    public static func crossingCondition(kernelEntry: KernelEntry) -> String {
        func median(_ f: () -> Double) -> Double { [f(), f(), f()].sorted()[1] }
        let call = median { fl_kernel_entry_ns(100_000) }
        let fault = median { fl_zero_page_fault_ns(8192) }
        let exception = KernelEntry.exceptionAvailable ? median { fl_exception_entry_ns(100_000) } : -1
        let exceptionText = exception >= 0
            ? ", a page-fault exception's entry and exit (the vsyscall page's emulation) \(Int(exception.rounded())) ns"
            : ", and no page-fault exception can be made without memory-management work (the vsyscall page is not execute-only here)"
        let charged: String
        switch kernelEntry {
        case .exception where exception >= 0:
            charged = "the model charges each fault a page-fault exception's crossing and each call a system call's"
        case .exception:
            charged = "the model charges each fault and call a system call's crossing (--kernel-entry exception falls back: no execute-only vsyscall page here), not the fault's exception entry and exit"
        case .syscall:
            charged = "the model charges each fault and call a system call's crossing (--kernel-entry syscall), not the fault's exception entry and exit"
        case .none:
            charged = "the model charges no crossing (--kernel-entry none)"
        }
        let controlled = kernelEntry == .exception && exception >= 0 ? "controlled" : "not controlled"
        return "\(controlled): the crossing into the kernel — here a system call's round trip costs \(Int(call.rounded())) ns\(exceptionText), a read fault that maps the zero page \(Int(fault.rounded())) ns; \(charged)"
    }

    /// What shapes the host's numbers that the run does not control, read from this machine,
    /// and what it does control.
    /// How the model's pages are charged against how the host's are.
    public static func memcgCondition(_ mode: MemcgMode) -> String {
        let made = mode.make()
        let host = MemCgroup.hostPlacement()
        let swapAccount = host?.version == 1 ? "; the host's v1 controller also charges memory+swap (memsw) at each level, which the model does not" : ""
        if made.memcg != nil {
            return "controlled: model pages charged to a memory cgroup as deep as this process's, \(made.description), none limited: a per-thread stock of \(MemCgroup.chargeBatch) pages, each miss and each batch of frees writing every level's counter\(swapAccount)"
        }
        return "not controlled: the model charges no memory cgroup, \(made.description); the host's pages are charged to \(host?.description ?? "none")"
    }

    public static func hostConditions(warmup: Double, layout: LayoutMode = .host, kernelEntry: KernelEntry = .exception,
                                      memcg: MemcgMode = .host, fileCache: FileCacheMode = .warm) -> [String] {
        let start = layout == .host
            ? "model cells start from this process's mappings (mmap finds the host's gaps)"
            : "model cells start from an empty address space (--layout empty: new mappings sit side by side and merge where the host's would not)"
        let entry: String
        switch kernelEntry {
        case .exception:
            entry = "each model fault and memory call enters this machine's kernel once, as the host's do (a fault by a page-fault exception where the vsyscall page allows, a call by a getppid round trip)"
        case .syscall:
            entry = "each model fault and memory call enters this machine's kernel once, as the host's do (a getppid round trip: the syscall entry's cost, not the page-fault exception's)"
        case .none:
            entry = "model faults and calls do not enter the kernel (--kernel-entry none: the host pays an exception or system call per fault or call that the model does not)"
        }
        var out = ["controlled: host and model cells interleaved in each repetition, their order rotating; \(warmup) s warm-up per cell; workers pinned one per CPU; per-thread files created fresh and sized, \(fileCache == .warm ? "then passed over once (page_fault2/3, host and model: the cache a long run has after its first pass)" : "not pre-read (--file-cache cold: a cell's first pass populates the cache)"); " + start + "; " + entry]
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        /// The bracketed choice of a sysfs setting.
        func chosen(_ path: String) -> Substring? {
            read(path)?.split(separator: " ").first { $0.hasPrefix("[") }.map { $0.dropFirst().dropLast() }
        }
        if let mode = chosen("/sys/kernel/mm/transparent_hugepage/enabled") {
            let note = mode == "madvise"
                ? "as the model's cells run: THPs only where a workload asks with MADV_HUGEPAGE"
                : "the model's cells run `madvise`: under `always` the host's anonymous faults may map 2 MiB at once where the model's do not"
            out.append("not controlled: transparent huge pages \(mode) (\(note))")
        }
        if let mode = chosen("/sys/kernel/mm/transparent_hugepage/shmem_enabled") {
            out.append("not controlled: shmem huge pages \(mode) (page_fault3's shared file faults)")
        }
        out.append(crossingCondition(kernelEntry: kernelEntry))
        out.append(memcgCondition(memcg))
        let procs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var kernelThreads: [String: Int] = [:]
        for p in procs where Int(p) != nil {
            guard let comm = read("/proc/\(p)/comm") else { continue }
            for name in ["kdamond", "khugepaged", "kcompactd", "kswapd"] where comm.hasPrefix(name) {
                kernelThreads[name, default: 0] += 1
            }
        }
        if let n = kernelThreads["kdamond"] {
            out.append("not controlled: \(n) DAMON kdamond thread\(n == 1 ? "" : "s") running (they sample and may act on this process's memory)")
        }
        for name in ["khugepaged", "kcompactd", "kswapd"] where kernelThreads[name] != nil {
            out.append("not controlled: \(name) runs (background work the model does not have)")
        }
        if let cpuinfo = read("/proc/cpuinfo"), cpuinfo.contains(" hypervisor") {
            out.append("not controlled: a virtual machine (the hypervisor flag): other guests and the host's scheduling are invisible here")
        }
        return out
    }
}
