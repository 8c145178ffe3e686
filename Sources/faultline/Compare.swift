import ArgumentParser
import FaultlineMM
import FaultlineReplay
import FaultlineReport
import FaultlineWorkloads
import Foundation

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Every design (and the host kernel) × the workloads, side by side: a table, results.json/.csv and an HTML report.",
        discussion: """
        Defaults: every design and host × \(Workload.defaults.map(\.rawValue).joined(separator: ", ")) at 1, 2, 4, … \
        threads up to nproc, 3 repetitions of 0.4 s per cell (about 3 minutes on 2 cores); --quick is one \
        repetition of 0.15 s at 32 MiB per thread (under a minute). Columns are interleaved inside \
        each repetition. Writes DIR/results.json (one object per cell), DIR/results.csv and \
        DIR/index.html (self-contained, inline SVG charts).
        """
    )

    @Option(parsing: .upToNextOption, help: "Columns: host and designs (default: host and every design).")
    var designs: [String] = ["host"] + Design.selectable.map(\.rawValue)

    @Option(parsing: .upToNextOption, help: "Workloads (default: \(Workload.defaults.map(\.rawValue).joined(separator: " "))); replay:FILE replays a trace (strace log or faultline record), each traced thread on its own thread; gallery replays every trace of --gallery.")
    var workloads: [String] = Workload.defaults.map(\.rawValue)

    @Option(help: "The directory `gallery` takes its recorded traces (*.trace) from.")
    var gallery = "gallery"


    @Option(help: "Thread counts, comma-separated (default: 1, 2, 4, … up to the CPUs available, and that count).")
    var threads: String?

    @Option(help: "Repetitions.")
    var reps: Int?

    @Option(help: "Seconds measured per cell.")
    var seconds: Double?

    @Flag(help: "One short repetition at 32 MiB per thread (a smoke run).")
    var quick = false

    @Option(help: "Directory for results.json, results.csv and index.html.")
    var out: String = "report"

    @OptionGroup var args: WorkloadArguments

    @Flag(help: "Print the JSON instead of the table.")
    var json = false

    func validate() throws {
        for w in workloads where !w.hasPrefix("replay:") && w != "gallery" && Workload(rawValue: w) == nil {
            throw ValidationError("unknown workload \(w); choose replay:FILE, gallery, or one of \(Workload.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        for d in designs where d != "host" {
            guard let design = Design(rawValue: d) else {
                throw ValidationError("unknown design \(d); choose host or one of \(Design.selectable.map(\.rawValue).joined(separator: ", "))")
            }
            if design.isBrokenControl { throw ValidationError("\(d) is a broken control, for faultline stress only") }
        }
        if let t = threads, parseThreadCounts(t) == nil { throw ValidationError("--threads takes comma-separated counts, e.g. 1,2") }
        if let r = reps, r < 1 { throw ValidationError("--reps must be positive") }
        if let s = seconds, s <= 0 { throw ValidationError("--seconds must be positive") }
    }


    func run() throws {
        var o = CompareOptions()
        o.columns = designs
        o.workloads = workloads.compactMap(Workload.init(rawValue:))
        o.replays = try workloads.flatMap { w -> [String] in
            if w.hasPrefix("replay:") { return [String(w.dropFirst(7))] }
            return w == "gallery" ? try galleryTraces(gallery) : []
        }.map { try loadReplay($0) }
        args.apply(&o.base)
        if quick {
            o.repetitions = 1
            o.base.seconds = 0.15
            o.base.warmup = 0.05
            if args.size == 128 { o.base.size = 32 << 20 }
        }
        if let t = threads { o.threads = parseThreadCounts(t)! }
        if let r = reps { o.repetitions = r }
        if let s = seconds { o.base.seconds = s }
        let started = Date()
        var progress: Progress? = nil
        var result = Comparison.run(o) { done, total, label in
            if progress == nil { progress = Progress(total: total) }
            progress!.step(done, label)
        }
        result.command = (["faultline"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        progress?.finish()
        try result.write(to: out)
        if json {
            print(String(decoding: try result.json(), as: UTF8.self))
            return
        }
        print("faultline compare — \(result.machine.date), \(result.machine.cpu), \(result.machine.cpus) CPUs, Linux \(result.machine.kernel)")
        print(result.textTable())
        print(String(format: "%d cells in %.0f s; wrote %@/results.json, %@/results.csv, %@/index.html",
                     result.cells.count, Date().timeIntervalSince(started), out, out, out))
    }
}

/// `--threads 1,2,4`: comma-separated counts from 1 to 512; nil when any is not one.
func parseThreadCounts(_ s: String) -> [Int]? {
    let xs = s.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !xs.isEmpty, xs.allSatisfy({ $0 != nil && $0! >= 1 && $0! <= 512 }) else { return nil }
    return xs.map { $0! }
}
