import ArgumentParser
import FaultlineBench
import FaultlineSync
import Foundation

struct BenchTrees: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trees",
        abstract: "Maple tree vs the pre-6.1 gap rbtree vs a sorted array.",
        discussion: """
        Operations: random-hit lookup, store/erase churn, lowest and highest gap search from a \
        random window, full iteration (ns per entry), and lookups by 2 threads beside a third \
        that churns (the maple tree's readers use RCU only; the others take an rwsem for read). \
        Sizes 10, 1,000 and 65,530 ranges (Linux's max_map_count). Repetitions interleave \
        every cell; the median and min–max are shown, and the ratios maple / rbtree.
        """
    )

    @Option(help: "Seconds per cell per repetition.")
    var seconds: Double = 0.15

    @Option(help: "Repetitions (the median is reported).")
    var reps: Int = 3

    @Option(parsing: .upToNextOption, help: "Sizes to run (default 10 1000 65530).")
    var sizes: [Int] = TreeBenchmarks.sizes

    @Option(parsing: .upToNextOption, help: "Structures to run: maple, rbtree, sorted-array (default all).")
    var structures: [String] = TreeBenchmarks.structures

    @Option(help: "Only operations whose name contains this text.")
    var filter: String?

    @Flag(help: "Print JSON (one object per cell) instead of a table.")
    var json = false

    func validate() throws {
        if seconds <= 0 { throw ValidationError("--seconds must be positive") }
        if reps < 1 { throw ValidationError("--reps must be at least 1") }
        if sizes.isEmpty || sizes.contains(where: { $0 < 1 }) { throw ValidationError("--sizes must be positive") }
        for s in structures where !TreeBenchmarks.structures.contains(s) {
            throw ValidationError("unknown structure \(s); choose from \(TreeBenchmarks.structures.joined(separator: ", "))")
        }
    }

    struct Row: Codable {
        var structure: String
        var operation: String
        var size: Int
        var threads: Int
        var nsPerOp: Double
        var nsPerOpMin: Double
        var nsPerOpMax: Double
        var reps: Int
        var extra: [String: Double]
    }

    func run() throws {
        let runner = MicroBenchRunner(seconds: seconds, reps: reps, progress: progressLine)
        var scenarios = TreeBenchmarks.scenarios(structures: structures, sizes: sizes)
        if let f = filter { scenarios = scenarios.filter { $0.scenario.contains(f) } }
        if scenarios.isEmpty { throw ValidationError("no scenario matches") }
        let results = runner.run(scenarios, threadCounts: [1, 2])
        progressLine(nil)
        if json {
            print(try encodeJSON(results.map {
                Row(structure: $0.primitive, operation: $0.scenario, size: $0.size ?? 0, threads: $0.threads,
                    nsPerOp: $0.nsPerOp, nsPerOpMin: $0.nsPerOpMin, nsPerOpMax: $0.nsPerOpMax, reps: $0.reps, extra: $0.extra)
            }))
            return
        }
        print(formatMicroTable(results))
        print("")
        var ratioRows: [[String]] = [["operation", "size", "maple / rbtree", "maple / sorted-array"]]
        let byKey = Dictionary(grouping: results) { "\($0.scenario)|\($0.size ?? 0)" }
        for op in ["lookup", "store-erase", "lowest-gap", "highest-gap", "iterate", "lookup-beside-writer"] {
            for size in sizes {
                guard let cells = byKey["\(op)|\(size)"],
                      let m = cells.first(where: { $0.primitive == "maple" }),
                      let r = cells.first(where: { $0.primitive == "rbtree" }),
                      let a = cells.first(where: { $0.primitive == "sorted-array" }) else { continue }
                ratioRows.append([op, "\(size)", fmt(m.nsPerOp / r.nsPerOp, 2) + "×", fmt(m.nsPerOp / a.nsPerOp, 2) + "×"])
            }
        }
        print("ns/op ratios (below 1 means the maple tree is faster):")
        print(formatTable(ratioRows))
    }
}
