import ArgumentParser
import FaultlineBench
import FaultlineSync
import Foundation

struct BenchLocks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locks",
        abstract: "ns/op of each synchronisation primitive at 1 and N threads.",
        discussion: """
        Scenarios: atomic add (per-thread and shared), spinlock, rwsem read-only / 90-10 / 50-50, \
        seqcount reads beside a writer, RCU read lock, range locks — the list lock with node \
        parking, the paper's list lock (list-range-lock-kdi) and the tree lock — each worker \
        re-locking its own range or one shared range, and sweeping ever new 4 KiB pages as \
        faults do (disjoint-sweep-read). Every repetition runs every cell once (interleaved); the table shows \
        the median and the min–max over repetitions. ns/op is per worker: wall time × workers ÷ \
        operations, so a flat line across thread counts is perfect scaling. The list locks also \
        report their slow paths per operation: CASes lost to a concurrent change, walks \
        restarted from the head, waits for a conflicting holder.
        """
    )

    @Option(help: "The N of '1 and N threads' (default: the CPUs available).")
    var threads: Int?

    @Option(help: "Seconds per cell per repetition.")
    var seconds: Double = 0.2

    @Option(help: "Repetitions (the median is reported).")
    var reps: Int = 5

    @Option(help: "Only scenarios whose primitive or scenario name contains this text.")
    var filter: String?

    @Flag(help: "Print JSON (one object per cell) instead of a table.")
    var json = false

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if seconds <= 0 { throw ValidationError("--seconds must be positive") }
        if reps < 1 { throw ValidationError("--reps must be at least 1") }
    }

    func run() throws {
        let n = threads ?? Threads.availableCPUs
        let counts = n == 1 ? [1] : [1, n]
        var scenarios = LockBenchmarks.scenarios()
        if let f = filter {
            scenarios = scenarios.filter { $0.primitive.contains(f) || $0.scenario.contains(f) }
            if scenarios.isEmpty { throw ValidationError("--filter \(f) matches no scenario") }
        }
        let runner = MicroBenchRunner(seconds: seconds, reps: reps, progress: progressLine)
        let results = runner.run(scenarios, threadCounts: counts)
        progressLine(nil)
        if json {
            print(try encodeJSON(results))
        } else {
            print(formatMicroTable(results))
        }
    }
}

/// A one-line progress display on stderr, only when stderr is a terminal; nil clears it.
func progressLine(_ msg: String?) {
    guard isatty(2) != 0 else { return }
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + (msg ?? "")).utf8))
}

func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}
