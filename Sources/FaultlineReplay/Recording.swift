import FaultlineMM
#if canImport(Glibc)
import Glibc
#endif

/// `faultline record`'s merge: strace's calls and perf's page faults and execve mappings on
/// one clock, in one strace-format trace.
public enum Recording {
    /// One record of `perf script --ns --show-mmap-events --show-task-events -F pid,tid,time,event,trace`.
    public struct PerfEvent: Equatable, Sendable {
        public enum Kind: Equatable, Sendable {
            case fault(RecordedFault)
            case mmap(ExecMapping)
            /// `PERF_RECORD_COMM exec`: the task has just execve'd.
            case exec
            case pageCacheAdd(PageCacheAdd)
        }
        /// perf's clock (CLOCK_MONOTONIC), in nanoseconds.
        public var time: UInt64
        public var tid: Int
        public var kind: Kind
    }

    /// Parses `perf script` output; lines of other kinds (FORK, EXIT, kernel MMAP) are not
    /// needed and are counted in `ignored`.
    public static func parsePerfScript(_ text: String) -> (events: [PerfEvent], ignored: Int) {
        var events: [PerfEvent] = []
        var ignored = 0
        for raw in text.split(separator: "\n") {
            guard let e = parsePerfLine(raw) else { ignored += 1; continue }
            events.append(e)
        }
        return (events, ignored)
    }

    static func parsePerfLine(_ raw: Substring) -> PerfEvent? {
        var s = raw.drop(while: { $0 == " " })
        // "PID/TID TIME: REST"
        let ids = s.prefix(while: { $0 != " " })
        let parts = ids.split(separator: "/")
        guard parts.count == 2, let tid = Int(parts[1]), tid > 0 else { return nil }
        s = s.dropFirst(ids.count).drop(while: { $0 == " " })
        let stamp = s.prefix(while: { $0 != ":" })
        guard let time = parseSeconds(stamp) else { return nil }
        s = s.dropFirst(stamp.count + 1).drop(while: { $0 == " " })
        if s.hasPrefix("exceptions:page_fault_user:") || s.hasPrefix("exceptions:page_fault_kernel:") {
            let kernel = s.hasPrefix("exceptions:page_fault_kernel:")
            var fields: [Substring: Substring] = [:]
            for tok in s.split(separator: " ").dropFirst() {
                let kv = tok.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { fields[kv[0]] = kv[1] }
            }
            guard let a = fields["address"].flatMap({ StraceSyntax.parseNumber($0) }),
                  let ec = fields["error_code"].flatMap({ StraceSyntax.parseNumber($0) }),
                  let ipText = fields["ip"] else { return nil }
            // perf prints a kernel ip as a symbol (`ip=elf_load`).
            var f = RecordedFault(pid: tid, address: a, ip: StraceSyntax.parseNumber(ipText) ?? 0, errorCode: ec, kernel: kernel)
            if StraceSyntax.parseNumber(ipText) == nil { f.ipSymbol = String(ipText) }
            return PerfEvent(time: time, tid: tid, kind: .fault(f))
        }
        if s.hasPrefix("filemap:mm_filemap_add_to_page_cache:") {
            // dev 254:0 ino 4e50 pfn=0x… ofs=4096 order=0
            let w = s.split(separator: " ")
            guard let d = w.firstIndex(of: "dev"), d + 1 < w.count, let i = w.firstIndex(of: "ino"), i + 1 < w.count,
                  let ino = UInt64(w[i + 1], radix: 16),
                  let ofs = w.first(where: { $0.hasPrefix("ofs=") }).flatMap({ UInt64($0.dropFirst(4)) }),
                  let order = w.first(where: { $0.hasPrefix("order=") }).flatMap({ UInt64($0.dropFirst(6)) }), order <= 9 else { return nil }
            return PerfEvent(time: time, tid: tid, kind: .pageCacheAdd(PageCacheAdd(
                pid: tid, device: String(w[d + 1]), inode: ino, index: ofs >> Linux.pageShift, pages: 1 << order)))
        }
        if s.hasPrefix("PERF_RECORD_COMM exec:") { return PerfEvent(time: time, tid: tid, kind: .exec) }
        if s.hasPrefix("PERF_RECORD_MMAP2 ") {
            // [0xSTART(0xLEN) @ 0xPGOFF MAJ:MIN INO GEN]: PERMS PATH
            guard let open = s.firstIndex(of: "["), let close = s.firstIndex(of: "]") else { return nil }
            let inside = s[s.index(after: open)..<close].split(separator: " ")
            guard inside.count >= 4, inside[1] == "@" else { return nil }
            let range = inside[0]
            guard let paren = range.firstIndex(of: "("),
                  let start = StraceSyntax.parseNumber(range[..<paren]),
                  let len = StraceSyntax.parseNumber(range[range.index(after: paren)...].dropLast()),
                  let off = StraceSyntax.parseNumber(inside[2]) else { return nil }
            let ino = inside.count > 4 ? UInt64(inside[4]) ?? 0 : 0
            var rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            rest = rest.dropFirst().drop(while: { $0 == " " })
            let perms = rest.prefix(while: { $0 != " " })
            let path = rest.dropFirst(perms.count).drop(while: { $0 == " " })
            guard perms.count == 4, len > 0 else { return nil }
            return PerfEvent(time: time, tid: tid, kind: .mmap(ExecMapping(
                pid: tid, start: start, end: start &+ len, perms: String(perms), offset: off,
                device: String(inside[3]), inode: ino, path: String(path))))
        }
        return nil
    }

    /// Events perf's ring buffer dropped (`PERF_RECORD_LOST … lost N`, `--show-lost-events`).
    public static func lostEvents(_ text: String) -> Int {
        var n = 0
        for l in text.split(separator: "\n") where l.contains("PERF_RECORD_LOST") {
            let words = l.split(separator: " ")
            if let i = words.lastIndex(of: "lost"), i + 1 < words.count, let v = Int(words[i + 1]) { n += v }
        }
        return n
    }

    /// The paths strace's `-y` printed for descriptors (`3</usr/lib/libc.so.6>`), in order of
    /// first appearance.
    public static func filePaths(strace: String) -> [String] {
        var seen: Set<String> = []
        var out: [String] = []
        let c = Array(strace.utf8)
        var i = 0
        while i < c.count {
            if c[i] == UInt8(ascii: "<"), i > 0, c[i - 1] >= UInt8(ascii: "0"), c[i - 1] <= UInt8(ascii: "9"),
               i + 1 < c.count, c[i + 1] == UInt8(ascii: "/") {
                var j = i + 1
                while j < c.count && c[j] != UInt8(ascii: ">") && c[j] != UInt8(ascii: "\n") { j += 1 }
                if j < c.count && c[j] == UInt8(ascii: ">") {
                    let p = String(decoding: c[(i + 1)..<j], as: UTF8.self)
                    if seen.insert(p).inserted { out.append(p) }
                }
                i = j
            }
            i += 1
        }
        return out
    }

    /// The files of a trace's `exec_map` lines.
    public static func execMapPaths(_ text: String) -> [String] {
        var seen: Set<String> = []
        var out: [String] = []
        for l in text.split(separator: "\n") where l.contains("--- \(ExecMapping.tag) {") {
            guard let r = l.findSubstring("path=\""), l.hasSuffix("\"} ---") else { continue }
            let p = String(l[r.upperBound...].dropLast(6))
            if p.hasPrefix("/"), !p.contains("\\"), seen.insert(p).inserted { out.append(p) }
        }
        return out
    }

    /// The files at `paths` as they are now (after the recorded run); paths that are gone are
    /// left out (the replay then sizes them from the trace).
    public static func describeFiles(_ paths: [String]) -> [RecordedFile] {
        var seen: Set<String> = []
        return paths.compactMap { path in
            guard seen.insert(path).inserted else { return nil }
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            let (major, minor) = Linux.deviceNumbers(UInt64(st.st_dev))
            return RecordedFile(device: "\(major):\(minor)", inode: UInt64(st.st_ino), size: UInt64(st.st_size), path: path,
                                regular: (st.st_mode & S_IFMT) == S_IFREG)
        }
    }

    /// `SECONDS.NANOSECONDS` as nanoseconds (perf's and strace's `unix,ns` stamps).
    static func parseSeconds<S: StringProtocol>(_ s: S) -> UInt64? {
        let p = s.split(separator: ".", omittingEmptySubsequences: false)
        guard p.count == 2, let sec = UInt64(p[0]), !p[1].isEmpty, p[1].count <= 9, let frac = UInt64(p[1]) else { return nil }
        var f = frac
        for _ in p[1].count..<9 { f *= 10 }
        // A stamp past 2554 (or a damaged one) does not fit: no time rather than a trap.
        let (ns, o1) = sec.multipliedReportingOverflow(by: 1_000_000_000)
        let (t, o2) = ns.addingReportingOverflow(f)
        return o1 || o2 ? nil : t
    }

    static func stamp(_ ns: UInt64) -> String {
        let frac = String(ns % 1_000_000_000)
        return "\(ns / 1_000_000_000)." + String(repeating: "0", count: 9 - frac.count) + frac
    }

    /// The realtime − monotonic offsets consistent with both streams: each mmap strace shows
    /// (entry stamp, and the task's next line) bounds perf's MMAP2 record of the same mapping
    /// (same task, same start), as an execve's line and the task's next one bound its
    /// `COMM exec`. For traces recorded elsewhere (no offset measured), and as a check of the
    /// measured one.
    public struct ClockWindow: Equatable, Sendable {
        public var lower: Int64
        public var upper: Int64
        public var anchors: Int
        public var estimate: Int64 { lower / 2 + upper / 2 }
        public var width: Int64 { upper - lower }
    }

    public static func clockWindow(strace: String, perf: [PerfEvent]) -> ClockWindow? {
        // strace's lines: task, stamp, and for a completed mmap its result.
        struct Line { var tid: Int; var time: UInt64; var mmapResult: UInt64?; var exec: Bool; var opens: Bool }
        var lines: [Line] = []
        for raw in strace.split(separator: "\n") {
            let s = raw.drop(while: { $0 == " " })
            let digits = s.prefix(while: \.isNumber)
            guard let tid = Int(digits) else { continue }
            var rest = s.dropFirst(digits.count).drop(while: { $0 == " " })
            let stamp = rest.prefix(while: { $0.isNumber || $0 == "." })
            guard let t = parseSeconds(stamp) else { continue }
            rest = rest.dropFirst(stamp.count).drop(while: { $0 == " " })
            var result: UInt64? = nil
            if rest.hasPrefix("mmap("), !rest.hasSuffix("<unfinished ...>"), let eq = rest.lastIndex(of: "=") {
                let value = rest[rest.index(after: eq)...].drop(while: { $0 == " " }).prefix(while: { $0 != " " })
                if value.hasPrefix("0x") { result = StraceSyntax.parseNumber(value) }
            }
            let exec = (rest.hasPrefix("execve(") || rest.hasPrefix("<... execve resumed>")) && rest.hasSuffix("= 0")
            lines.append(Line(tid: tid, time: t, mmapResult: result, exec: exec, opens: rest.hasSuffix("<unfinished ...>")))
        }
        var nextOfTask: [Int?] = Array(repeating: nil, count: lines.count)
        var later: [Int: Int] = [:]
        for i in lines.indices.reversed() {
            nextOfTask[i] = later[lines[i].tid]
            later[lines[i].tid] = i
        }
        var mmaps: [String: [UInt64]] = [:]
        var execs: [Int: [UInt64]] = [:]
        for e in perf {
            switch e.kind {
            case .mmap(let m): mmaps["\(e.tid) \(m.start)", default: []].append(e.time)
            case .exec: execs[e.tid, default: []].append(e.time)
            default: break
            }
        }
        var lower = Int64.min, upper = Int64.max, anchors = 0
        func bound(_ entry: UInt64, _ next: UInt64?, _ candidates: [UInt64]) {
            // The record made inside this call: the candidate that fits between the line and
            // the task's next (on the window so far), nearest the line.
            let fits = candidates.filter { m in
                let lo = Int64(bitPattern: entry) &- Int64(bitPattern: m)
                let hi = next.map { Int64(bitPattern: $0) &- Int64(bitPattern: m) } ?? .max
                return max(lo, lower) <= min(hi, upper)
            }
            guard fits.count == 1, let m = fits.first else { return }
            lower = max(lower, Int64(bitPattern: entry) &- Int64(bitPattern: m))
            if let n = next { upper = min(upper, Int64(bitPattern: n) &- Int64(bitPattern: m)) }
            anchors += 1
        }
        var previousOfTask: [Int?] = Array(repeating: nil, count: lines.count)
        var earlier: [Int: Int] = [:]
        for i in lines.indices {
            previousOfTask[i] = earlier[lines[i].tid]
            earlier[lines[i].tid] = i
        }
        for (i, l) in lines.enumerated() where l.exec {
            // A split execve began at the task's `<unfinished ...>` line and ended at this one.
            if let p = previousOfTask[i], lines[p].opens {
                bound(lines[p].time, l.time, execs[l.tid] ?? [])
            } else {
                bound(l.time, nextOfTask[i].map { lines[$0].time }, execs[l.tid] ?? [])
            }
        }
        for (i, l) in lines.enumerated() {
            guard let r = l.mmapResult else { continue }
            bound(l.time, nextOfTask[i].map { lines[$0].time }, mmaps["\(l.tid) \(r)"] ?? [])
        }
        guard anchors > 0, lower <= upper, upper != .max else { return nil }
        // A task's user fault comes after its previous line (an entry stamp, or a `resumed`
        // one, stamped while the task was stopped) and before its next line's entry: where
        // the window leaves no doubt which lines those are, they narrow it.
        var byTask: [Int: [Int]] = [:]
        for (i, l) in lines.enumerated() { byTask[l.tid, default: []].append(i) }
        let faults = perf.compactMap { e -> (Int, UInt64)? in
            if case .fault(let f) = e.kind, !f.kernel { return (e.tid, e.time) } else { return nil }
        }
        for _ in 0..<3 {
            for (tid, m) in faults {
                guard let idx = byTask[tid] else { continue }
                // The task's last line at or before a real time (binary search over its lines).
                func last(_ t: Int64) -> Int {
                    var lo = 0, hi = idx.count
                    while lo < hi {
                        let mid = (lo + hi) / 2
                        if Int64(bitPattern: lines[idx[mid]].time) <= t { lo = mid + 1 } else { hi = mid }
                    }
                    return lo - 1
                }
                let a = last(Int64(bitPattern: m) &+ lower), b = last(Int64(bitPattern: m) &+ upper)
                guard a == b else { continue }
                if a >= 0, !lines[idx[a]].opens {
                    lower = max(lower, Int64(bitPattern: lines[idx[a]].time) &- Int64(bitPattern: m))
                }
                if a + 1 < idx.count {
                    upper = min(upper, Int64(bitPattern: lines[idx[a + 1]].time) &- Int64(bitPattern: m))
                }
                anchors += 1
            }
        }
        guard lower <= upper else { return nil }
        return ClockWindow(lower: lower, upper: upper, anchors: anchors)
    }

    /// What the merge did.
    public struct MergeStats: Equatable, Sendable {
        public var calls = 0
        public var faults = 0
        public var kernelFaults = 0
        public var execMaps = 0
        public var pageCacheAdds = 0
        /// Faults of tasks strace did not trace (strace itself, perf's own child).
        public var foreignFaults = 0
        /// Kernel faults on kernel addresses (not the process's memory).
        public var kernelAddressFaults = 0
        /// execs perf saw that strace's trace has no successful execve for.
        public var unmatchedExecs = 0
        /// User faults stamped inside their own task's call, moved to just after it.
        public var deferredFaults = 0
    }

    /// Merges strace's output (`-f --timestamps=unix,ns`, in its own order) with perf's
    /// events of the traced tasks: faults go by time (perf's clock plus `offsetNs`, the
    /// realtime−monotonic offset measured when recording began); the mappings an execve
    /// made go right after that execve's completion line, before anything the new program did.
    public static func merge(strace: String, perf: [PerfEvent], offsetNs: Int64, userLimit: UInt64 = Linux.taskSize,
                             header: [String] = []) -> (text: String, stats: MergeStats) {
        var stats = MergeStats()
        let lines = strace.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // Tasks strace traced: every pid prefix, and every child a clone/fork returned.
        var traced: Set<Int> = []
        var lineTid: [Int?] = []
        var lineTime: [UInt64?] = []
        var execLines: [Int: [Int]] = [:]   // tid → indices of successful execve completions
        for l in lines {
            let s = l.drop(while: { $0 == " " })
            let digits = s.prefix(while: \.isNumber)
            let tid = Int(digits)
            lineTid.append(tid)
            var after = s.dropFirst(digits.count).drop(while: { $0 == " " })
            let stampText = after.prefix(while: { $0.isNumber || $0 == "." })
            lineTime.append(parseSeconds(stampText))
            after = after.dropFirst(stampText.count).drop(while: { $0 == " " })
            guard let tid else { continue }
            traced.insert(tid)
            if after.hasPrefix("clone") || after.hasPrefix("fork") || after.hasPrefix("vfork")
                || after.hasPrefix("<... clone") || after.hasPrefix("<... fork") || after.hasPrefix("<... vfork") {
                if let eq = after.lastIndex(of: "=") {
                    let v = after[after.index(after: eq)...].drop(while: { $0 == " " }).prefix(while: \.isNumber)
                    if let child = Int(v), child > 0 { traced.insert(child) }
                }
            }
            if (after.hasPrefix("execve(") || after.hasPrefix("execveat(") || after.hasPrefix("<... execve resumed>")
                || after.hasPrefix("<... execveat resumed>")) && after.hasSuffix("= 0") && !after.hasSuffix("<unfinished ...>") {
                execLines[tid, default: []].append(lineTime.count - 1)
            }
        }
        // Exec groups: a task's MMAP2 records from its COMM exec to its first user fault.
        var attached: [Int: [String]] = [:]    // strace line index → bodies after it
        var timed: [(time: UInt64, body: String, pid: Int)] = []
        // A task's exec group: execve's mappings, and the kernel's faults on the new memory
        // before the program runs (elf_load zeroing the bss), after the execve's line.
        var open: [Int: [String]] = [:]
        var execCount: [Int: Int] = [:]
        // The first task runs strace's code between its fork and its execve of the program.
        let root = lineTid.lazy.compactMap { $0 }.first
        // (Only if it execs at all in perf's stream: a task strace attached to runs its own code.)
        var rootExecuted = !perf.contains { e in
            if case .exec = e.kind { return e.tid == root } else { return false }
        }
        func close(_ tid: Int) {
            guard let group = open.removeValue(forKey: tid) else { return }
            let k = execCount[tid, default: 0]
            execCount[tid] = k + 1
            if let idx = execLines[tid], k < idx.count {
                attached[idx[k], default: []] += group
            } else {
                stats.unmatchedExecs += 1
            }
        }
        for e in perf.sorted(by: { $0.time < $1.time }) {
            if e.tid == root, case .exec = e.kind { rootExecuted = true }
            guard traced.contains(e.tid), e.tid != root || rootExecuted else {
                if case .fault = e.kind { stats.foreignFaults += 1 }
                continue
            }
            switch e.kind {
            case .exec:
                close(e.tid)
                open[e.tid] = []
            case .pageCacheAdd(let a):
                timed.append((UInt64(max(0, Int64(bitPattern: e.time) &+ offsetNs)), a.body, e.tid))
                stats.pageCacheAdds += 1
            case .mmap(let m):
                if open[e.tid] != nil, m.end <= userLimit {
                    open[e.tid]!.append(m.body)
                    stats.execMaps += 1
                }
            case .fault(let f):
                if f.kernel && f.address >= userLimit { stats.kernelAddressFaults += 1; continue }
                if f.kernel, open[e.tid] != nil {
                    open[e.tid]!.append(f.body)
                    stats.kernelFaults += 1
                    continue
                }
                if !f.kernel { close(e.tid) }
                let t = UInt64(max(0, Int64(bitPattern: e.time) &+ offsetNs))
                timed.append((t, f.body, e.tid))
                if f.kernel { stats.kernelFaults += 1 } else { stats.faults += 1 }
            }
        }
        for tid in Array(open.keys) { close(tid) }
        // Strace's order stands; each fault goes before the first line stamped after it.
        var out = header.map { "# " + $0 }
        var j = 0
        var lastTime: UInt64 = 0
        var inCall: Set<Int> = []
        var deferred: [Int: [String]] = [:]
        func emitFaults(upTo t: UInt64?) {
            while j < timed.count, t == nil || timed[j].time < t! {
                let f = timed[j]
                let line = "\(f.pid) \(stamp(f.time)) --- \(f.body) ---"
                if inCall.contains(f.pid) && f.body.hasPrefix(RecordedFault.userTag) {
                    deferred[f.pid, default: []].append(line)
                    stats.deferredFaults += 1
                } else {
                    out.append(line)
                }
                j += 1
            }
        }
        for (i, l) in lines.enumerated() {
            if i == lines.count - 1 && l.isEmpty { break }
            if let t = lineTime[i] { lastTime = max(lastTime, t) }
            emitFaults(upTo: lineTime[i] ?? lastTime)
            out.append(l)
            if let tid = lineTid[i] {
                // A task inside a call takes no user fault: one stamped there waits for the
                // call's end (the clocks are one only to within microseconds).
                if l.hasSuffix("<unfinished ...>") {
                    inCall.insert(tid)
                } else if inCall.remove(tid) != nil, let held = deferred.removeValue(forKey: tid) {
                    out += held
                }
            }
            if lineTid[i] != nil, !l.isEmpty { stats.calls += 1 }
            if let group = attached[i], let tid = lineTid[i] {
                let t = stamp(lineTime[i] ?? lastTime)
                for body in group { out.append("\(tid) \(t) --- \(body) ---") }
            }
        }
        emitFaults(upTo: nil)
        for tid in deferred.keys.sorted() { out += deferred[tid]! }
        return (out.joined(separator: "\n") + "\n", stats)
    }
}
