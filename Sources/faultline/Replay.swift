import ArgumentParser
import FaultlineMM
import FaultlineReplay
import FaultlineWorkloads
import Foundation

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay an strace log (strace -f -y -e trace=memory,process) against the model.",
        discussion: """
        Calls are replayed in trace order, each process on its own address space (CLONE_VM children \
        share it; fork copies it; execve starts a fresh one). A mapping whose address the kernel \
        chose is placed where the trace says it went. A call runs as recorded; only when the model \
        disagrees with a recorded success that needs memory the trace never showed (what execve \
        mapped before the first traced call) is that memory inferred, counted by reason and \
        reported apart from mismatches. Memory the trace itself mapped, unmapped or saw fail is \
        never inferred: a success that needs it is a mismatch (--lenient infers it, counted).
        """
    )

    @Argument(help: "The strace output file ('-' for standard input).")
    var trace: String

    @Option(help: "The process whose maps --maps prints and --threads replays (default: the first traced).")
    var pid: Int?

    @Flag(help: "Compare every replayed call's result and errno with the recorded one; exit 1 on any mismatch.")
    var check = false

    @Flag(help: "Print the final /proc/pid/maps of the process, in the kernel's format.")
    var maps = false

    @Option(help: "The design the model runs under.")
    var design: Design = .global

    @Option(help: "VMA index for global: maple or rbtree.")
    var tree: VMATreeKind = .maple

    @Flag(help: "Skip malformed lines (and count them) instead of stopping at the first, and infer memory a recorded success needs even where the trace mapped, unmapped or saw it fail (counted) instead of a mismatch.")
    var lenient = false

    @Flag(help: "Timed mode: replay the process's threads, each on its own OS thread in its recorded order, for --seconds.")
    var threads = false

    @Option(help: "Timed mode: seconds to replay for.")
    var seconds: Double = 2

    @Option(help: "--check with recorded faults: fail when fewer than 1−T of them match or more than T are extra.")
    var faultTolerance = 0.05

    @Option(help: "fault_around_bytes: what a read fault on a file maps around it (Linux's default 65536; a power of two, 4096 to 2 MiB).")
    var faultAroundBytes = 65_536

    @Flag(help: "Print the skipped calls by reason.")
    var verbose = false

    func validate() throws {
        if seconds <= 0 { throw ValidationError("--seconds must be positive") }
        if faultAroundBytes < 4096 || faultAroundBytes > 2 << 20 || faultAroundBytes & (faultAroundBytes - 1) != 0 {
            throw ValidationError("--fault-around-bytes must be a power of two from 4096 to 2097152")
        }
        if !design.allowsTree(tree) { throw ValidationError("--tree rbtree needs --design global") }
    }

    func run() throws {
        let text: String
        if trace == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let d = FileManager.default.contents(atPath: trace) else {
                throw ValidationError("cannot read \(trace)")
            }
            text = String(decoding: d, as: UTF8.self)
        }
        let parsed: ParsedTrace
        do {
            parsed = try StraceParser.parse(text, lenient: lenient)
        } catch let e as TraceSyntaxError {
            FileHandle.standardError.write(Data("faultline replay: \(trace): \(e)\n".utf8))
            throw ExitCode(2)
        }
        var o = ReplayOptions()
        o.design = design
        o.tree = tree
        o.pid = pid
        o.inferIntoTouched = lenient
        o.faultAroundBytes = faultAroundBytes
        if let pid, !parsed.events.contains(where: { $0.pid == pid }) {
            throw ValidationError("pid \(pid) does not appear in the trace")
        }
        let r = TraceReplayer(trace: parsed, options: o)
        let s = r.run()
        if check {
            for m in s.mismatches { print(m) }
        }
        if maps {
            for line in s.maps { print(line) }
        }
        if threads, let script = r.script {
            var progress: Progress? = nil
            let cell = r.timed(script, design: design, seconds: seconds, workload: "replay:" + trace) { done, total, label in
                if progress == nil { progress = Progress(total: total, minInterval: 10, percent: true) }
                progress!.step(done, label)
            }
            progress?.finish()
            print(String(format: "timed: %d threads, %d passes, %.0f ops/s (%.0f calls/s, %.0f faults/s), p50 %d ns, p99 %d ns, %d refused; %d cross-thread waits per pass (the trace's order on shared ranges)",
                         cell.threads, cell.replayPasses ?? 0, cell.opsPerSecond, cell.callsPerSecond ?? 0, cell.faultsPerSecond ?? 0,
                         cell.latencyNs.p50, cell.latencyNs.p99, cell.replayErrors ?? 0, script.waits))
        }
        print(s.summaryLine)
        var extra = "\(s.inferred) mappings inferred (\(s.inferredBytes / 1024) KiB), \(s.processes) address spaces, \(s.threads) tasks"
        if s.malformed > 0 { extra += ", \(s.malformed) malformed lines skipped" }
        print(extra)
        for (k, v) in s.inferredByReason.sorted(by: { $0.key < $1.key }) { print("  inferred \(v): \(k)") }
        if !s.faults.isEmpty {
            for line in faultReport(s.faults) { print(line) }
            if check || verbose {
                for e in s.faults.examples.prefix(verbose ? 50 : 10) { print("  " + e) }
            }
        }
        if verbose {
            for (k, v) in s.skippedByReason.sorted(by: { $0.value > $1.value }) { print("  skipped \(v): \(k)") }
        }
        if check && !s.mismatches.isEmpty { throw ExitCode(1) }
        if check && !s.faults.isEmpty && (s.faults.matchedFraction < 1 - faultTolerance || s.faults.extraFraction > faultTolerance) {
            print(String(format: "fault check failed: %.1f%% matched, %.1f%% extra (tolerance %.1f%%)",
                         100 * s.faults.matchedFraction, 100 * s.faults.extraFraction, 100 * faultTolerance))
            throw ExitCode(1)
        }
    }
}

/// The fault check as lines: totals, then one line per VMA kind.
func faultReport(_ f: FaultCheck) -> [String] {
    func pct(_ a: Int, _ b: Int) -> String { b == 0 ? "-" : String(format: "%.1f%%", 100 * Double(a) / Double(b)) }
    func row(_ name: String, _ t: FaultCheck.Tally) -> String {
        "  " + name.padding(toLength: 16, withPad: " ", startingAt: 0)
            + String(format: "%8d recorded %8d matched %6d raced (%@) %6d missing %6d outcome %6d extra (%@)",
                     t.recorded, t.matched, t.raced, pct(t.matched + t.raced, t.recorded), t.missing, t.outcome, t.extra, pct(t.extra, t.recorded))
    }
    var out: [String] = []
    let u = f.userTotal
    out.append("faults: \(u.recorded) user faults recorded: \(u.matched) matched and \(u.raced) raced (\(pct(u.matched + u.raced, u.recorded))), \(u.missing) missing, \(u.outcome) with another outcome, \(u.extra) extra (\(pct(u.extra, u.recorded))); \(f.causeDiffers) matched for another cause; \(f.warmedFiles) files started in the page cache (\(f.coldFiles) of them with pages the host read in while recording)" + (f.unwarmedFiles > 0 ? ", \(f.unwarmedFiles) left uncached (too large for --frames)" : ""))
    for (k, t) in f.user.sorted(by: { $0.value.recorded > $1.value.recorded }) { out.append(row(k, t)) }
    let k = f.kernelTotal
    if k.recorded > 0 {
        out.append("kernel faults on user memory: \(k.recorded) recorded: \(k.matched) matched (\(pct(k.matched, k.recorded))), \(k.missing) missing, \(k.outcome) with another outcome")
        for (n, t) in f.kernel.sorted(by: { $0.value.recorded > $1.value.recorded }) { out.append(row(n, t)) }
    }
    return out
}

/// Reads and prepares `replay:FILE` for `compare` and `run`.
func loadReplay(_ path: String) throws -> ReplayWorkload {
    guard let d = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read trace \(path)") }
    do {
        let w = try ReplayWorkload(path: path, text: String(decoding: d, as: UTF8.self),
                                   name: "replay:" + URL(fileURLWithPath: path).lastPathComponent)
        if !w.summary.mismatches.isEmpty {
            FileHandle.standardError.write(Data("faultline: \(path): \(w.summary.mismatches.count) calls disagree with the model (see faultline replay --check)\n".utf8))
        }
        let f = w.summary.faults
        if !f.isEmpty && (f.matchedFraction < 0.95 || f.extraFraction > 0.05) {
            FileHandle.standardError.write(Data(String(format: "faultline: %@: only %.1f%% of the recorded faults matched, %.1f%% extra (see faultline replay --check)\n",
                                                       path, 100 * f.matchedFraction, 100 * f.extraFraction).utf8))
        }
        return w
    } catch let e as ReplayWorkload.LoadError {
        throw ValidationError(e.description)
    }
}

/// The recorded traces of a gallery directory (`*.trace`), sorted.
func galleryTraces(_ directory: String) throws -> [String] {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else {
        throw ValidationError("no gallery at \(directory) (run from the repository root, or pass --gallery DIR)")
    }
    let traces = names.filter { $0.hasSuffix(".trace") }.sorted().map { directory + "/" + $0 }
    if traces.isEmpty { throw ValidationError("\(directory) holds no *.trace files") }
    return traces
}
