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

    @Flag(help: "Print the skipped calls by reason.")
    var verbose = false

    func validate() throws {
        if seconds <= 0 { throw ValidationError("--seconds must be positive") }
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
            let cell = r.timed(script, design: design, seconds: seconds, workload: "replay:" + trace)
            print(String(format: "timed: %d threads, %d passes, %.0f calls/s, p50 %d ns, p99 %d ns, %d refused (threads replay unordered)",
                         cell.threads, cell.replayPasses ?? 0, cell.opsPerSecond, cell.latencyNs.p50, cell.latencyNs.p99,
                         cell.replayErrors ?? 0))
        }
        print(s.summaryLine)
        var extra = "\(s.inferred) mappings inferred (\(s.inferredBytes / 1024) KiB), \(s.processes) address spaces, \(s.threads) tasks"
        if s.malformed > 0 { extra += ", \(s.malformed) malformed lines skipped" }
        print(extra)
        for (k, v) in s.inferredByReason.sorted(by: { $0.key < $1.key }) { print("  inferred \(v): \(k)") }
        if verbose {
            for (k, v) in s.skippedByReason.sorted(by: { $0.value > $1.value }) { print("  skipped \(v): \(k)") }
        }
        if check && !s.mismatches.isEmpty { throw ExitCode(1) }
    }
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
        return w
    } catch let e as ReplayWorkload.LoadError {
        throw ValidationError(e.description)
    }
}
