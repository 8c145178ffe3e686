import ArgumentParser
import FaultlineReplay
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Run a program on the host and write one trace of its memory calls and page faults.",
        discussion: """
        Runs COMMAND under strace (-f -y --timestamps=unix,ns -e trace=memory,process) inside \
        perf record (exceptions:page_fault_user, exceptions:page_fault_kernel, and the MMAP2 \
        records of what execve mapped), then merges the two on one clock into an strace-format \
        file with fault and exec_map lines (docs/record.md). Without a usable perf it says why \
        in one line and records the calls only. `faultline replay --check FILE` checks it.
        """
    )

    @Option(name: .shortAndLong, help: "The trace to write.")
    var output = "faultline.trace"

    @Flag(help: "Record the calls only (no perf).")
    var callsOnly = false

    @Option(help: "perf's ring buffer per CPU, in pages (perf record -m); larger loses fewer events.")
    var perfPages = 2048

    @Option(name: .customLong("merge"), parsing: .upToNextOption,
            help: "Merge a recording made elsewhere instead of running a program: CALLS (strace -f -y --timestamps=unix,ns) and PERF (perf script output; docs/record.md says how). The clock offset comes from the mappings both streams show.")
    var mergeFiles: [String] = []

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments (after --, or after the options).")
    var command: [String] = []

    func validate() throws {
        // The program's arguments are captured as they are; a first `--help` is ours.
        if command.first == "--help" || command.first == "-h" { throw CleanExit.helpRequest(self) }
        if !mergeFiles.isEmpty {
            if mergeFiles.count != 2 { throw ValidationError("--merge takes two files: CALLS PERF") }
            if !command.isEmpty && command != ["--"] { throw ValidationError("--merge records no program") }
            return
        }
        if command.first == "--" && command.count == 1 || command.isEmpty { throw ValidationError("no command to record") }
        if perfPages < 1 { throw ValidationError("--perf-pages must be positive") }
    }

    /// `--merge`: the two streams of a recording made elsewhere, on the clock their common
    /// mappings give.
    func mergeElsewhere() throws {
        guard let calls = FileManager.default.contents(atPath: mergeFiles[0]).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw ValidationError("cannot read \(mergeFiles[0])")
        }
        guard let perfText = FileManager.default.contents(atPath: mergeFiles[1]).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw ValidationError("cannot read \(mergeFiles[1])")
        }
        let events = Recording.parsePerfScript(perfText).events
        guard let w = Recording.clockWindow(strace: calls, perf: events) else {
            throw ValidationError("the two files share no execve or mmap to put them on one clock (were they recorded together, strace with --timestamps=unix,ns and perf with -d?)")
        }
        let lost = Recording.lostEvents(perfText)
        var header = ["faultline record --merge \(mergeFiles[0]) \(mergeFiles[1])",
                      String(format: "clock offset %lld ns, from %d anchors (window %.1f µs)", w.estimate, w.anchors, Double(w.width) / 1000)]
        if lost > 0 { header.append("perf lost \(lost) events: the fault stream has gaps") }
        try write(Recording.merge(strace: calls, perf: events, offsetNs: w.estimate, header: header), header: header, lost: lost,
                  perf: true, status: nil)
    }

    /// Writes the merged trace with its file lines, and says what is in it.
    func write(_ merged: (text: String, stats: Recording.MergeStats), header: [String], lost: Int, perf: Bool, status: Int32?) throws {
        let stats = merged.stats
        // The files the trace names (strace's descriptors and execve's mappings), as they are.
        let files = Recording.describeFiles(Recording.filePaths(strace: merged.text) + Recording.execMapPaths(merged.text))
        var lines = merged.text.split(separator: "\n", maxSplits: header.count, omittingEmptySubsequences: false).map(String.init)
        lines.insert(contentsOf: files.map { "# " + $0.headerLine }, at: header.count)
        let text = lines.joined(separator: "\n")
        guard FileManager.default.createFile(atPath: output, contents: Data(text.utf8)) else {
            throw ValidationError("cannot write \(output)")
        }
        var summary = "wrote \(output): \(stats.calls) call lines"
        if perf {
            summary += ", \(stats.faults) user faults, \(stats.kernelFaults) kernel faults on user memory, \(stats.execMaps) execve mappings, \(stats.pageCacheAdds) page-cache insertions"
            if stats.foreignFaults > 0 { summary += " (\(stats.foreignFaults) faults of strace itself left out)" }
            if stats.deferredFaults > 0 { summary += "; \(stats.deferredFaults) faults stamped inside their task's own call moved after it" }
            if stats.unmatchedExecs > 0 { summary += "; \(stats.unmatchedExecs) execs without a successful execve line: their mappings are left out" }
        }
        if let status { summary += "; the program exited with \(status)" }
        if lost > 0 { summary += "; perf LOST \(lost) events (raise --perf-pages)" }
        note(summary)
    }

    func run() throws {
        if !mergeFiles.isEmpty { return try mergeElsewhere() }
        let cmd = command.first == "--" ? Array(command.dropFirst()) : command
        guard let strace = Self.which("strace") else {
            throw ValidationError("strace is not installed (apt-get install strace)")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("faultline-record-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let straceOut = tmp.appendingPathComponent("strace.txt").path
        let perfData = tmp.appendingPathComponent("perf.data").path

        var perf: String? = nil
        if !callsOnly {
            switch Self.perfUsable(tmp) {
            case .success(let p): perf = p
            case .failure(let why): note("recording calls only: \(why.message)")
            }
        }
        let straceArgs = ["-f", "-y", "--timestamps=unix,ns", "-e", "trace=memory,process", "-o", straceOut, "--"] + cmd
        let exe: String
        let args: [String]
        if let perf {
            exe = perf
            args = ["record", "-q", "-d", "-m", String(perfPages), "-k", "monotonic",
                    "-e", "exceptions:page_fault_user", "-e", "exceptions:page_fault_kernel",
                    "-e", "filemap:mm_filemap_add_to_page_cache",
                    "-o", perfData, "--", strace] + straceArgs
        } else {
            exe = strace
            args = straceArgs
        }
        var offset = Self.realtimeMinusMonotonic()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let began = Date()
        try p.run()
        var lastReport = began
        while p.isRunning {
            usleep(100_000)
            if Date().timeIntervalSince(lastReport) >= 5 {
                lastReport = Date()
                let size = (try? FileManager.default.attributesOfItem(atPath: straceOut)[.size] as? Int) ?? 0
                note(String(format: "recording: %.0f s, %d KiB of calls so far", Date().timeIntervalSince(began), size / 1024))
            }
        }
        let status = p.terminationStatus
        guard let straceText = FileManager.default.contents(atPath: straceOut).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw ValidationError("strace wrote no trace (is ptrace allowed here?)")
        }
        var header = ["faultline record: " + cmd.map(Self.quoted).joined(separator: " "),
                      "strace -f -y --timestamps=unix,ns -e trace=memory,process"]
        var events: [Recording.PerfEvent] = []
        var lost = 0
        if let perf {
            let script = tmp.appendingPathComponent("perf.txt").path
            let q = Process()
            q.executableURL = URL(fileURLWithPath: perf)
            q.arguments = ["script", "-i", perfData, "--ns", "--show-mmap-events", "--show-task-events", "--show-lost-events",
                           "-F", "pid,tid,time,event,trace"]
            guard FileManager.default.createFile(atPath: script, contents: nil) else {
                throw ValidationError("cannot create \(script)")
            }
            q.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: script))
            q.standardError = FileHandle.nullDevice
            try q.run()
            q.waitUntilExit()
            let text = FileManager.default.contents(atPath: script).map { String(decoding: $0, as: UTF8.self) } ?? ""
            events = Recording.parsePerfScript(text).events
            lost = Recording.lostEvents(text)
            header.append("perf record -k monotonic -e exceptions:page_fault_user,exceptions:page_fault_kernel,filemap:mm_filemap_add_to_page_cache -d; clock offset realtime-monotonic \(offset) ns")
            if lost > 0 { header.append("perf lost \(lost) events: the fault stream has gaps") }
        } else {
            header.append("calls only: no perf events")
        }
        if perf != nil {
            // The offset measured against the one the streams' common mappings allow.
            if let w = Recording.clockWindow(strace: straceText, perf: events) {
                if offset < w.lower || offset > w.upper {
                    note(String(format: "the measured clock offset lies %.1f µs outside the window %d mappings allow; using the window's middle",
                                Double(offset < w.lower ? w.lower - offset : offset - w.upper) / 1000, w.anchors))
                    offset = w.estimate
                }
                header.append(String(format: "clock check: %d anchors allow a window of %.1f µs; the offset used lies in it", w.anchors, Double(w.width) / 1000))
            }
        }
        try write(Recording.merge(strace: straceText, perf: events, offsetNs: offset, header: header), header: header, lost: lost,
                  perf: perf != nil, status: status)
    }

    func note(_ s: String) { FileHandle.standardError.write(Data("faultline record: \(s)\n".utf8)) }

    static func quoted(_ s: String) -> String {
        s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,".contains($0) }) ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    struct Unusable: Error { var message: String }

    /// perf, if it is installed and may record these tracepoints here (a one-line reason if not).
    static func perfUsable(_ tmp: URL) -> Result<String, Unusable> {
        guard let perf = which("perf") else { return .failure(Unusable(message: "perf is not installed (apt-get install linux-perf)")) }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: perf)
        probe.arguments = ["record", "-q", "-k", "monotonic", "-e", "exceptions:page_fault_user", "-o",
                           tmp.appendingPathComponent("probe.data").path, "--", "/bin/true"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        do { try probe.run() } catch { return .failure(Unusable(message: "perf did not start: \(error)")) }
        probe.waitUntilExit()
        if probe.terminationStatus != 0 {
            let paranoid = (try? String(contentsOfFile: "/proc/sys/kernel/perf_event_paranoid", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            return .failure(Unusable(message: "perf may not record exceptions:page_fault_user here (perf_event_paranoid is \(paranoid); tracepoints need -1 or CAP_PERFMON, and tracefs mounted)"))
        }
        return .success(perf)
    }

    /// CLOCK_REALTIME − CLOCK_MONOTONIC in ns, from the closest of several back-to-back reads.
    static func realtimeMinusMonotonic() -> Int64 {
        var best: (gap: Int64, offset: Int64) = (.max, 0)
        for _ in 0..<16 {
            var m0 = timespec(), r = timespec(), m1 = timespec()
            clock_gettime(CLOCK_MONOTONIC, &m0)
            clock_gettime(CLOCK_REALTIME, &r)
            clock_gettime(CLOCK_MONOTONIC, &m1)
            func ns(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }
            let gap = ns(m1) - ns(m0)
            if gap < best.gap { best = (gap, ns(r) - (ns(m0) + gap / 2)) }
        }
        return best.offset
    }
}
