import ArgumentParser
import FaultlineMM
import FaultlineReport
import FaultlineWorkloads
import Foundation

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "How well the model's Linux design predicts this machine: the host and the design side by side, each workload's N-thread ÷ 1-thread ratio with its spread, and the model's error.",
        discussion: """
        Runs the host kernel and one design (default per-vma-6.15, the host's own design) \
        interleaved, --reps times, on each workload at 1 and N threads; per repetition it \
        divides the N-thread throughput by the same repetition's 1-thread throughput, and \
        prints the median and spread of those ratios on the host and in the model, the \
        model's error against the host's median, and what on the host it could not hold \
        steady (THP, DAMON, a hypervisor). Writes DIR/results.json (every cell, as compare \
        does, with results.csv and index.html) and DIR/calibration.json. --check exits 1 when a \
        ratio is outside the tolerance.
        """
    )

    @Option(help: "The design to calibrate.")
    var design: String = Design.perVMA615.rawValue

    @Option(parsing: .upToNextOption, help: "Workloads that run on the host too.")
    var workloads: [String] = ["page_fault1", "page_fault2", "page_fault3", "mmap1", "seed-mix", "maps-reader"]

    @Option(help: "Thread counts, comma-separated (default: 1 and the CPUs available).")
    var threads: String?

    @Option(help: "Repetitions (the host's spread needs several).")
    var reps: Int = 7

    @Option(help: "Seconds measured per cell.")
    var seconds: Double = 0.4

    @Option(help: "Tolerance of the error, in percent.")
    var tolerance: Double = 15

    @Option(help: "Directory for results.json, results.csv, index.html and calibration.json.")
    var out: String = "calibration"

    @Flag(help: "Exit 1 when any ratio is outside the tolerance.")
    var check = false

    @OptionGroup var args: WorkloadArguments

    func validate() throws {
        guard let d = Design(rawValue: design), !d.isBrokenControl else {
            throw ValidationError("unknown design \(design); choose one of \(Design.selectable.map(\.rawValue).joined(separator: ", "))")
        }
        for w in workloads {
            guard let wl = Workload(rawValue: w) else { throw ValidationError("unknown workload \(w)") }
            if !wl.runsOnHost { throw ValidationError("\(w) does not run on the host: nothing to calibrate against") }
        }
        if reps < 2 { throw ValidationError("--reps must be at least 2 (one repetition has no spread)") }
        if seconds <= 0 || tolerance <= 0 { throw ValidationError("--seconds and --tolerance must be positive") }
        if let t = threads, parseThreadCounts(t).map({ $0.contains(1) && Set($0).count >= 2 }) != true {
            throw ValidationError("--threads takes comma-separated counts including 1 and at least one more, e.g. 1,2")
        }
    }

    func run() throws {
        var o = CompareOptions()
        o.columns = ["host", design]
        o.workloads = workloads.compactMap(Workload.init(rawValue:))
        args.apply(&o.base)
        o.base.seconds = seconds
        if let t = threads { o.threads = parseThreadCounts(t)! }
        if o.threads.count < 2 { o.threads = [1, 2] }   // one CPU: still a 2-thread ratio
        o.repetitions = reps
        var progress: Progress? = nil
        var comparison = Comparison.run(o) { done, total, label in
            if progress == nil { progress = Progress(total: total) }
            progress!.step(done, label)
        }
        comparison.command = (["faultline"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        progress?.finish()
        let calibration = Calibration(comparison, design: design, tolerance: tolerance / 100,
                                      conditions: Calibration.hostConditions(warmup: o.base.warmup, layout: o.base.layout, kernelEntry: o.base.kernelEntry, memcg: o.base.memcg, fileCache: o.base.fileCache))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try comparison.write(to: out)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(calibration).write(to: URL(fileURLWithPath: out + "/calibration.json"))
        let m = comparison.machine
        print("faultline calibrate — \(m.date), \(m.cpu), \(m.cpus) CPUs, Linux \(m.kernel)")
        print(calibration.text())
        print("wrote \(out)/results.json, \(out)/results.csv, \(out)/index.html, \(out)/calibration.json")
        if check && !calibration.passed { throw ExitCode(1) }
    }
}
