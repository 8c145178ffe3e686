import CFaultline
import FaultlineMM
import FaultlineReplay
import FaultlineWorkloads
import Foundation

/// What `faultline compare` runs.
public struct CompareOptions: Sendable {
    /// Column names: `host` and design names.
    public var columns: [String] = ["host"] + Design.selectable.map(\.rawValue)
    public var workloads: [Workload] = Workload.defaults
    /// Traces replayed as workloads (`replay:FILE`): each traced thread on its own thread, so
    /// their thread count is the trace's, not `threads`.
    public var replays: [ReplayWorkload] = []
    public var threads: [Int] = CompareOptions.threadLadder(cpus: ProcessInfo.processInfo.activeProcessorCount)
    public var repetitions = 3
    public var base = WorkloadOptions()

    /// The default thread counts on `cpus` CPUs: 1, 2, 4, … up to the CPUs, and the CPUs
    /// themselves (1, 2, 4, 6 on six), so a scaling line has a point per doubling.
    public static func threadLadder(cpus: Int) -> [Int] {
        let n = max(cpus, 1)
        var out: [Int] = []
        var t = 1
        while t < n { out.append(t); t *= 2 }
        out.append(n)
        return out
    }

    public init() {
        base.seconds = 0.4
        base.warmup = 0.1
    }
}

extension Comparison {
    /// Runs every column × workload × thread count, `repetitions` times; within a repetition the
    /// columns are interleaved (and their order rotates), so slow drift of the machine spreads
    /// over all of them.
    /// `progress(done, total, label)` before each cell.
    public static func run(_ o: CompareOptions, progress: (Int, Int, String) -> Void = { _, _, _ in }) -> Comparison {
        let threads = Array(Set(o.threads)).sorted()
        let maxT = threads.max() ?? 1
        let system = WorkloadRunner.makeSystem(o.base, workloads: o.workloads, threads: maxT)
        var cells: [CellResult] = []
        let designColumns = o.columns.filter { Design(rawValue: $0) != nil }
        let total = o.repetitions * (o.workloads.count * threads.count * o.columns.count + o.replays.count * designColumns.count)
        var done = 0
        for rep in 0..<o.repetitions {
            for w in o.workloads {
                for t in threads {
                    var opts = o.base
                    opts.workload = w
                    opts.threads = t
                    opts.seed = o.base.seed &+ UInt64(rep)
                    let k = rep % max(o.columns.count, 1)
                    let order = Array(o.columns[k...] + o.columns[..<k])
                    for c in order {
                        progress(done, total, "rep \(rep + 1) \(w.rawValue) \(t) thread\(t == 1 ? "" : "s") \(c)")
                        done += 1
                        if c == "host" {
                            if w.runsOnHost { cells.append(WorkloadRunner.runHost(options: opts, rep: rep)) }
                        } else if let d = Design(rawValue: c) {
                            cells.append(WorkloadRunner.runModel(design: d, options: opts, system: system, rep: rep))
                        }
                    }
                }
            }
            for w in o.replays {
                let k = rep % max(designColumns.count, 1)
                for c in Array(designColumns[k...] + designColumns[..<k]) {
                    progress(done, total, "rep \(rep + 1) \(w.name) \(w.script.tasks.count) threads \(c)")
                    done += 1
                    cells.append(w.run(design: Design(rawValue: c)!, seconds: o.base.seconds, rep: rep))
                }
            }
        }
        var c = Comparison(machine: .current(), designs: o.columns, workloads: o.workloads.map(\.rawValue) + o.replays.map(\.name), threads: threads,
                           repetitions: o.repetitions, secondsPerCell: o.base.seconds,
                           sizeMiB: Double(o.base.size) / 1_048_576, cells: cells)
        if !o.replays.isEmpty {
            c.replayChecks = Dictionary(uniqueKeysWithValues: o.replays.map { w in
                (w.name, ReplayCheck(calls: w.summary.replayed, callMismatches: w.summary.mismatches.count,
                                     faults: w.summary.faults.userTotal.recorded, faultsMatched: w.summary.faults.matchedFraction,
                                     faultsExtra: w.summary.faults.extraFraction, threads: w.script.tasks.count))
            })
        }
        return c
    }

    /// Writes `results.json`, `results.csv` and `index.html` into `directory`.
    public func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try json().write(to: URL(fileURLWithPath: directory + "/results.json"))
        try csv().write(toFile: directory + "/results.csv", atomically: true, encoding: .utf8)
        try html().write(toFile: directory + "/index.html", atomically: true, encoding: .utf8)
    }
}
