import FaultlineMM
import FaultlineWorkloads
import Foundation

/// Where and when a comparison ran.
public struct MachineInfo: Sendable, Codable {
    public var date: String
    public var cpu: String
    public var cpus: Int
    public var kernel: String
    public var memoryGiB: Double

    /// This machine, now.
    public static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown"
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let kb = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal") }
            .flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Double($0) } } ?? 0
        let f = ISO8601DateFormatter()
        return MachineInfo(date: f.string(from: Date()), cpu: model, cpus: ProcessInfo.processInfo.activeProcessorCount,
                           kernel: release, memoryGiB: (kb / 1_048_576 * 10).rounded() / 10)
    }
}

/// One row of the comparison: a column (design or host) × workload × thread count, over the
/// repetitions.
public struct Row: Sendable, Codable {
    public var design: String
    public var workload: String
    public var threads: Int
    /// Median, minimum and maximum ops/s over repetitions.
    public var opsPerSecond: Double
    public var minOpsPerSecond: Double
    public var maxOpsPerSecond: Double
    /// Median ops/s ÷ `global`'s median in the same workload and thread count.
    public var ratioToGlobal: Double?
    /// Latency over all repetitions (histograms merged).
    public var latencyNs: LatencySummary
    public var latencyCurve: [[Double]]
    /// Counters summed over repetitions (nil for the host).
    public var counters: DesignCounters?
    /// Aborts per fault handled.
    public var abortRate: Double?
    /// maps-reader: whole reads of maps per second.
    public var mapsReadsPerSecond: Double?
    /// Host: page faults the kernel took per operation.
    public var hostFaultsPerOp: Double?
    /// A recorded trace's timed replay: medians of its calls/s and recorded faults/s (its
    /// operations are both), and the operations the model refused per pass (threads replay
    /// with no order between them but the clones).
    public var callsPerSecond: Double? = nil
    public var faultsPerSecond: Double? = nil
    public var refusedPerPass: Double? = nil
    /// Workloads whose workers each time one kind of operation (seed-mix, maps-reader,
    /// maps-baseline): the fault workers' latency and the call workers' apart.
    public var faultLatencyNs: LatencySummary? = nil
    public var callLatencyNs: LatencySummary? = nil
    /// The model's share of thread time spent waiting for `mmap_lock` (read or write): the
    /// waits summed over threads and repetitions ÷ (threads × measured seconds). Nil for the
    /// host, and in results files from before it was kept.
    public var mmapLockWaitShare: Double? = nil
    /// The model's major faults (faults that waited for I/O) per second.
    public var majorFaultsPerSecond: Double? = nil
    /// reclaim: pages reclaim freed per second of the cells (warm-up included), and the share
    /// direct reclaim freed.
    public var reclaimedPerSecond: Double? = nil
    public var directReclaimShare: Double? = nil

    /// `mmapLockWaitShare` as the tables print it.
    var mmapLockWaitText: String { mmapLockWaitShare.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    /// `majorFaultsPerSecond` as the tables print it.
    var majorFaultsText: String { majorFaultsPerSecond.map { si($0) } ?? "–" }
}

/// How a replayed trace agreed with the model when it was loaded (`replay --check`'s figures).
public struct ReplayCheck: Sendable, Codable, Equatable {
    public var calls: Int
    public var callMismatches: Int
    public var faults: Int
    /// Matched (raced included) and extra shares of the recorded user faults.
    public var faultsMatched: Double
    public var faultsExtra: Double
    public var threads: Int

    public init(calls: Int, callMismatches: Int, faults: Int, faultsMatched: Double, faultsExtra: Double, threads: Int) {
        self.calls = calls
        self.callMismatches = callMismatches
        self.faults = faults
        self.faultsMatched = faultsMatched
        self.faultsExtra = faultsExtra
        self.threads = threads
    }
}

/// Everything `faultline compare` measured.
public struct Comparison: Sendable, Codable {
    public var machine: MachineInfo
    public var designs: [String]
    public var workloads: [String]
    public var threads: [Int]
    public var repetitions: Int
    public var secondsPerCell: Double
    public var sizeMiB: Double
    /// One object per measured cell.
    public var cells: [CellResult]
    /// Cells aggregated over repetitions.
    public var rows: [Row]
    /// The command line that produced it (`faultline compare …`); nil in files from before it
    /// was recorded.
    public var command: String?
    /// Replayed traces (`replay:FILE`, `gallery`) by workload name: how they checked.
    public var replayChecks: [String: ReplayCheck]? = nil

    public init(machine: MachineInfo, designs: [String], workloads: [String], threads: [Int], repetitions: Int,
                secondsPerCell: Double, sizeMiB: Double, cells: [CellResult]) {
        self.machine = machine
        self.designs = designs
        self.workloads = workloads
        // Replayed traces run at their own thread counts.
        self.threads = Array(Set(threads + cells.map(\.threads))).sorted()
        self.repetitions = repetitions
        self.secondsPerCell = secondsPerCell
        self.sizeMiB = sizeMiB
        self.cells = cells
        rows = Self.aggregate(cells, designs: designs, workloads: workloads, threads: self.threads)
    }

    /// The most threads `workload` ran at (a replayed trace runs at its own count).
    func topThreads(_ workload: String) -> Int {
        rows.filter { $0.workload == workload }.map(\.threads).max() ?? (threads.max() ?? 1)
    }

    /// What one operation of `workload` is.
    static func unit(_ workload: String) -> String {
        if workload.hasPrefix("replay:") { return "calls and faults" }
        return Workload(rawValue: workload)?.unit ?? "ops"
    }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func aggregate(_ cells: [CellResult], designs: [String], workloads: [String], threads: [Int]) -> [Row] {
        var rows: [Row] = []
        for w in workloads {
            for t in threads {
                var group: [Row] = []
                for d in designs {
                    let cs = cells.filter { $0.design == d && $0.workload == w && $0.threads == t }
                    guard !cs.isEmpty else { continue }
                    var h = LatencyHistogram()
                    for c in cs { h.merge(c.histogram) }
                    let ops = cs.map(\.opsPerSecond)
                    var counters: DesignCounters?
                    if cs.allSatisfy({ $0.counters != nil }) {
                        var sum = DesignCounters()
                        for c in cs { sum = sum + c.counters! }
                        counters = sum
                    }
                    let secs = cs.reduce(0) { $0 + $1.seconds }
                    let reads = cs.compactMap(\.mapsReads)
                    let hostFaults = cs.compactMap(\.hostFaults)
                    let totalOps = cs.reduce(0) { $0 + $1.ops }
                    let calls = cs.compactMap(\.callsPerSecond), faults = cs.compactMap(\.faultsPerSecond)
                    let passes = cs.compactMap(\.replayPasses).reduce(0, +)
                    let refused = cs.compactMap(\.replayErrors).reduce(0, +)
                    var fh: LatencyHistogram? = nil, ch: LatencyHistogram? = nil
                    if cs.allSatisfy({ $0.faultHistogram != nil && $0.callHistogram != nil }) {
                        var f = LatencyHistogram(), c = LatencyHistogram()
                        for x in cs { f.merge(x.faultHistogram!); c.merge(x.callHistogram!) }
                        fh = f
                        ch = c
                    }
                    let reclaimed = cs.compactMap(\.reclaimedPages).reduce(0, +)
                    let direct = cs.compactMap(\.directReclaimedPages).reduce(0, +)
                    let cellSecs = cs.compactMap(\.cellSeconds).reduce(0, +)
                    group.append(Row(design: d, workload: w, threads: t, opsPerSecond: median(ops),
                                     minOpsPerSecond: ops.min()!, maxOpsPerSecond: ops.max()!, ratioToGlobal: nil,
                                     latencyNs: h.summary, latencyCurve: h.curve, counters: counters,
                                     abortRate: counters.map { $0.abortRate },
                                     mapsReadsPerSecond: reads.isEmpty ? nil : Double(reads.reduce(0, +)) / secs,
                                     hostFaultsPerOp: hostFaults.isEmpty || totalOps == 0 ? nil
                                        : Double(hostFaults.reduce(0, +)) / Double(totalOps),
                                     callsPerSecond: calls.isEmpty ? nil : median(calls),
                                     faultsPerSecond: faults.isEmpty ? nil : median(faults),
                                     refusedPerPass: passes == 0 ? nil : Double(refused) / Double(passes),
                                     faultLatencyNs: fh?.summary, callLatencyNs: ch?.summary,
                                     mmapLockWaitShare: counters.flatMap { secs > 0 ? Double($0.mmapLockWaitNs) / (secs * Double(t) * 1e9) : nil },
                                     majorFaultsPerSecond: counters.flatMap { secs > 0 ? Double($0.majorFaults) / secs : nil },
                                     reclaimedPerSecond: cellSecs > 0 ? Double(reclaimed) / cellSecs : nil,
                                     directReclaimShare: reclaimed > 0 ? Double(direct) / Double(reclaimed) : nil))
                }
                if let g = group.first(where: { $0.design == Design.global.rawValue }), g.opsPerSecond > 0 {
                    for i in group.indices { group[i].ratioToGlobal = group[i].opsPerSecond / g.opsPerSecond }
                }
                rows += group
            }
        }
        return rows
    }
}
