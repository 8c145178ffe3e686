import ArgumentParser
import FaultlineBench
import FaultlineMM
import FaultlineWorkloads
import Foundation

extension Workload: ExpressibleByArgument {}
extension LayoutMode: ExpressibleByArgument {}
extension KernelEntry: ExpressibleByArgument {}
extension MemcgMode: ExpressibleByArgument {}
extension FileCacheMode: ExpressibleByArgument {}

/// Workload options shared by `run` and `compare`.
struct WorkloadArguments: ParsableArguments {
    @Option(help: "Bytes per thread, in MiB (will-it-scale: 128).")
    var size: Double = 128

    @Option(help: "maps-reader: µs the reader pauses: the model's every 32 lines inside its read, the host's between read()s of 4 KiB (0: none).")
    var slowReader: Double = 0

    @Option(help: "How the model reads maps in maps-reader: locked or lockless (default: each design's natural form).")
    var maps: MapsReader?

    @Option(help: "VMA index for global: maple or rbtree (the other designs always use the maple tree).")
    var tree: VMATreeKind = .maple

    @Option(help: "app-launch: simulated I/O latency of a page-cache miss; swap-churn and reclaim: of a swap device read; in µs.")
    var ioLatency: Double = 50

    @Option(help: "reclaim: the memory limit in MiB (its own system per cell, kswapd and direct reclaim on, a swap device twice the size).")
    var memory: Int = 32

    @Option(help: "What the model's address space holds when a cell starts: host (this process's mappings, mirrored from /proc/self/smaps, so that mmap places and merges as the host's does) or empty.")
    var layout: LayoutMode = .host

    @Option(help: "What a model fault or memory call costs to enter the kernel: exception (each fault a real page-fault exception into this machine's kernel — a call into the execute-only vsyscall page, which the fault handler emulates — and each call a real system call, as the host's enter), syscall (a system call for both) or none (the model's own work only).")
    var kernelEntry: KernelEntry = .exception

    @Option(help: "Which memory cgroup the model charges its pages to: host (a chain as deep as this process's memory cgroup, unlimited: the per-thread stock and the shared counters Linux charges) or none.")
    var memcg: MemcgMode = .host

    @Option(help: "Whether page_fault2/3's per-thread files start in the page cache: warm (one pass of the workload over them before the cell, as a long will-it-scale run has them) or cold (the cell's first pass populates the cache).")
    var fileCache: FileCacheMode = .warm

    func apply(_ o: inout WorkloadOptions) {
        o.layout = layout
        o.fileCache = fileCache
        o.kernelEntry = kernelEntry
        o.memcg = memcg
        o.size = UInt64(size * 1_048_576)
        o.slowReaderNs = UInt64(slowReader * 1000)
        o.mapsReader = maps
        o.tree = tree
        o.ioLatencyNs = UInt64(ioLatency * 1000)
        o.memoryPages = memory * 256
    }

    func validate() throws {
        if size <= 0 || slowReader < 0 || ioLatency < 0 { throw ValidationError("--size must be positive, --slow-reader and --io-latency not negative") }
        if memory < 4 || memory > 65536 { throw ValidationError("--memory must be in 4...65536 (MiB)") }
    }
}

/// `host` or a design.
enum Column: Equatable {
    case host
    case design(Design)

    init?(_ s: String) {
        if s == "host" { self = .host } else if let d = Design(rawValue: s) { self = .design(d) } else { return nil }
    }

    var name: String {
        switch self {
        case .host: "host"
        case .design(let d): d.rawValue
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "One cell: a design (or the host kernel) × a workload × a thread count.",
        discussion: "Workloads:\n" + Workload.allCases.map { "  \($0.rawValue): \($0.summary)" }.joined(separator: "\n")
            + "\nDesigns: host (the real kernel; will-it-scale workloads and seed-mix), "
            + Design.allCases.map(\.rawValue).joined(separator: ", ") + "."
    )

    @Option(help: "Design, or host.")
    var design: String = "global"

    @Option(help: "Workload, or replay:FILE (an strace log; --threads is the trace's own).")
    var workload: String = Workload.pageFault1.rawValue

    @Option(help: "Threads (workers).")
    var threads: Int = 1

    @Option(help: "Seconds measured.")
    var seconds: Double = 2

    @Option(help: "Seconds of warm-up before measuring.")
    var warmup: Double = 0.3

    @OptionGroup var args: WorkloadArguments

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard let c = Column(design) else {
            throw ValidationError("unknown design \(design); choose host or one of \(Design.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if workload.hasPrefix("replay:") {
            if c == .host { throw ValidationError("a replayed trace runs on the model only") }
        } else {
            guard let w = Workload(rawValue: workload) else {
                throw ValidationError("unknown workload \(workload); choose replay:FILE or one of \(Workload.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if c == .host && !w.runsOnHost { throw ValidationError("\(workload) does not run on the host") }
        }
        if case .design(let d) = c, !d.allowsTree(args.tree) { throw ValidationError("\(d.rawValue) needs the maple tree") }
        if threads < 1 || threads > 512 || seconds <= 0 || warmup < 0 { throw ValidationError("--threads in 1...512, --seconds positive") }
    }

    func run() throws {
        var o = WorkloadOptions()
        let r: CellResult
        if workload.hasPrefix("replay:") {
            guard case .design(let d) = Column(design)! else { return }
            r = try loadReplay(String(workload.dropFirst(7))).run(design: d, seconds: seconds)
        } else {
            o.workload = Workload(rawValue: workload)!
            r = runWorkload(&o)
        }
        if json {
            print(try encodeJSON(r))
            return
        }
        var rows = [["design", "workload", "threads", "ops/s", "p50 ns", "p99 ns", "p99.9 ns", "max ns"]]
        rows.append([r.design, r.workload, String(r.threads), fmt(r.opsPerSecond, 0), String(r.latencyNs.p50),
                     String(r.latencyNs.p99), String(r.latencyNs.p999), String(r.latencyNs.max)])
        print(formatTable(rows))
        if let c = r.counters {
            print("faults \(c.faults), lockless \(c.locklessSuccesses), aborts \(c.aborts), fallbacks \(c.fallbacks), retries \(c.retries)")
            if let events = c.vmaLockEventsLine { print(events) }
        }
        if let m = r.mapsReads { print("maps reads: \(m)") }
        if let m = r.memcg { print("memory cgroup charged: \(m)") }
        if let share = r.workerCPUShare, let other = r.otherCPUSeconds {
            print(String(format: "workers ran %.0f%% of the measured window; the rest of this process took %.3f CPU s", share * 100, other))
        }
        if let p = r.replayPasses {
            print("passes over the trace: \(p), operations the model refused: \(r.replayErrors ?? 0)")
            if let f = r.faultsPerSecond, let c = r.callsPerSecond, (r.replayFaults ?? 0) > 0 {
                print(String(format: "recorded faults: %.0f/s, calls: %.0f/s", f, c))
            }
        }
    }

    func runWorkload(_ o: inout WorkloadOptions) -> CellResult {
        let workload = o.workload
        o.threads = threads
        o.seconds = seconds
        o.warmup = warmup
        args.apply(&o)
        let r: CellResult
        switch Column(design)! {
        case .host:
            r = WorkloadRunner.runHost(options: o)
        case .design(let d):
            let system = WorkloadRunner.makeSystem(o, workloads: [workload], threads: threads)
            r = WorkloadRunner.runModel(design: d, options: o, system: system)
        }
        return r
    }
}
