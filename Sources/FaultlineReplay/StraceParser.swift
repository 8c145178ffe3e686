import FaultlineMM

/// What a system call returned, as strace printed it after `=`.
public struct TraceResult: Equatable, Sendable, CustomStringConvertible {
    /// The value (bit pattern of a negative number too); nil for `= ?`.
    public var value: UInt64?
    /// `ENOMEM` in `= -1 ENOMEM (Cannot allocate memory)`; nil on success.
    public var errno: String?

    public init(value: UInt64?, errno: String? = nil) {
        self.value = value
        self.errno = errno
    }

    public var succeeded: Bool { value != nil && errno == nil }

    /// The child a successful clone/fork returned: a pid is 1…`PID_MAX_LIMIT` (2^22); any
    /// other value (a damaged trace) names no task.
    public var childPid: Int? {
        guard succeeded, let v = value, v > 0, v <= 1 << 22 else { return nil }
        return Int(v)
    }

    public var description: String {
        if let errno { return "-1 \(errno)" }
        guard let value else { return "?" }
        return value > 0xffff ? "0x" + String(value, radix: 16) : String(value)
    }
}

/// One system call, with its arguments as strace printed them (top-level, comments removed).
public struct TraceCall: Equatable, Sendable {
    /// The 1-based line that completed the call (the `resumed` line for a split call).
    public var line: Int
    /// The line that began it (the `<unfinished ...>` line for a split call).
    public var startLine: Int
    public var pid: Int
    public var name: String
    public var args: [String]
    public var result: TraceResult
    /// The text of the line(s), for messages.
    public var text: String
}

/// One event of a trace, in the order strace printed them.
public enum TraceEvent: Equatable, Sendable {
    case call(TraceCall)
    /// `+++ exited with N +++`.
    case exited(pid: Int, line: Int, status: Int)
    /// `+++ killed by SIGKILL +++`.
    case killed(pid: Int, line: Int, signal: String)
    /// `--- SIGCHLD {...} ---`.
    case signal(pid: Int, line: Int, name: String)
    /// A call strace began but never finished (`<unfinished ...>` with no `resumed`).
    case unfinished(pid: Int, line: Int, name: String)
    /// A page fault `faultline record` took from perf (`--- page_fault_user {…} ---`).
    case fault(RecordedFault)
    /// A mapping execve made, from perf's MMAP2 record (`--- exec_map {…} ---`).
    case execMap(ExecMapping)
    /// File pages entering the page cache (`--- page_cache_add {…} ---`).
    case pageCacheAdd(PageCacheAdd)

    public var pid: Int {
        switch self {
        case .call(let c): c.pid
        case .exited(let p, _, _), .killed(let p, _, _), .signal(let p, _, _), .unfinished(let p, _, _): p
        case .fault(let f): f.pid
        case .execMap(let m): m.pid
        case .pageCacheAdd(let a): a.pid
        }
    }

    func withPid(_ p: Int) -> TraceEvent {
        switch self {
        case .call(var c): c.pid = p; return .call(c)
        case .exited(_, let l, let s): return .exited(pid: p, line: l, status: s)
        case .killed(_, let l, let s): return .killed(pid: p, line: l, signal: s)
        case .signal(_, let l, let n): return .signal(pid: p, line: l, name: n)
        case .unfinished(_, let l, let n): return .unfinished(pid: p, line: l, name: n)
        case .fault(var f): f.pid = p; return .fault(f)
        case .execMap(var m): m.pid = p; return .execMap(m)
        case .pageCacheAdd(var a): a.pid = p; return .pageCacheAdd(a)
        }
    }

    public var line: Int {
        switch self {
        case .call(let c): c.line
        case .exited(_, let l, _), .killed(_, let l, _), .signal(_, let l, _), .unfinished(_, let l, _): l
        case .fault(let f): f.line
        case .execMap(let m): m.line
        case .pageCacheAdd(let a): a.line
        }
    }
}

/// A line the parser could not read.
public struct TraceSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var text: String
    public var reason: String

    public var description: String { "line \(line): \(reason): \(text)" }
}

/// A parsed trace.
public struct ParsedTrace: Sendable {
    public var events: [TraceEvent] = []
    /// Lines skipped under `lenient` (never more than the trace has).
    public var malformed: [TraceSyntaxError] = []
    /// Whether lines carried pid prefixes (`strace -f`).
    public var hasPids = false
    /// The files `faultline record` described in its header (`# file {…}`), by path: the
    /// replay sizes them and keys their page cache from the recording, not this machine.
    public var files: [String: RecordedFile] = [:]
    /// The pid of the first event: the process strace started or attached to first.
    public var firstPid: Int? { events.first?.pid }

    public var calls: [TraceCall] {
        events.compactMap { if case .call(let c) = $0 { c } else { nil } }
    }
}

/// Reads `strace` output: `-f` pid prefixes (`123 ` as `-o` writes them, or `[pid 123] `),
/// `-t`/`-tt`/`-ttt`/`-r` timestamps, `-T` durations, `-y` fd paths, split calls
/// (`<unfinished ...>` / `<... X resumed>`), exits, signals, and strace's own messages.
public enum StraceParser {
    /// The pid given to lines without a pid prefix (a trace without `-f`).
    public static let defaultPid = 0

    /// Parses `text`. A malformed line throws, naming its line number; with `lenient` it is
    /// recorded in `malformed` and skipped.
    public static func parse(_ text: String, lenient: Bool = false) throws -> ParsedTrace {
        var trace = ParsedTrace()
        // pid → (name, argument text so far, line)
        var pending: [Int: (name: String, args: String, line: Int, text: String)] = [:]
        var lineNumber = 0
        // strace writing to a terminal or stderr may print "strace: Process N attached" in the
        // middle of a line; the line then continues on the next one.
        var carried: (text: String, line: Int)? = nil
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(raw)
            if line.last == "\r" { line = line.dropLast() }
            var number = lineNumber
            var joined: String? = nil
            if let c = carried {
                joined = c.text + line
                number = c.line
                carried = nil
            }
            if let j = joined { line = Substring(j) }
            if let cut = interjection(in: line) {
                carried = (String(line[..<cut]), number)
                continue
            }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            do {
                try parseLine(line, number: number, into: &trace, pending: &pending)
            } catch let e as TraceSyntaxError {
                if !lenient { throw e }
                trace.malformed.append(e)
            }
        }
        if let c = carried {
            let e = TraceSyntaxError(line: c.line, text: c.text, reason: "the trace ends inside a line")
            if !lenient { throw e }
            trace.malformed.append(e)
        }
        for (pid, p) in pending.sorted(by: { $0.value.line < $1.value.line }) {
            trace.events.append(.unfinished(pid: pid, line: p.line, name: p.name))
        }
        if trace.hasPids { resolveUnprefixed(&trace) }
        return trace
    }

    /// Where "strace: Process N attached|detached" begins inside a line (not at its start).
    static func interjection(in line: Substring) -> String.Index? {
        guard let r = line.findSubstring("strace: Process "), r.lowerBound != line.startIndex else { return nil }
        let tail = line[r.upperBound...]
        let digits = tail.prefix(while: \.isNumber)
        let rest = tail.dropFirst(digits.count)
        guard !digits.isEmpty, rest == " attached" || rest == " detached" else { return nil }
        let before = line[..<r.lowerBound]
        // A whole line of its own, after a pid prefix or timestamp, is not an interjection.
        if before.allSatisfy({ $0 == " " }) { return nil }
        return r.lowerBound
    }

    /// strace -f writing to stderr prefixes `[pid N]` only while it traces more than one task:
    /// unprefixed lines belong to the only task alive, or to the first process.
    static func resolveUnprefixed(_ trace: inout ParsedTrace) {
        guard trace.events.contains(where: { $0.pid == defaultPid }) else { return }
        var children: Set<Int> = []
        for case .call(let c) in trace.events where ["clone", "clone3", "fork", "vfork"].contains(c.name) {
            if let child = c.result.childPid { children.insert(child) }
        }
        guard let root = trace.events.first(where: { $0.pid != defaultPid && !children.contains($0.pid) })?.pid
                ?? trace.events.first(where: { $0.pid != defaultPid })?.pid else { return }
        var live: Set<Int> = [root]
        for i in trace.events.indices {
            var e = trace.events[i]
            if e.pid == defaultPid {
                let owner = live.count == 1 ? live.first! : root
                e = e.withPid(owner)
                trace.events[i] = e
            }
            live.insert(e.pid)
            switch e {
            case .call(let c) where ["clone", "clone3", "fork", "vfork"].contains(c.name):
                if let child = c.result.childPid { live.insert(child) }
            case .exited(let p, _, _), .killed(let p, _, _): live.remove(p)
            default: break
            }
        }
    }

    static func parseLine(_ full: Substring, number: Int, into trace: inout ParsedTrace,
                          pending: inout [Int: (name: String, args: String, line: Int, text: String)]) throws {
        func fail(_ reason: String) -> TraceSyntaxError {
            TraceSyntaxError(line: number, text: String(full), reason: reason)
        }
        var s = full.drop(while: { $0 == " " })
        if s.hasPrefix("strace: ") || s.hasPrefix("[ Process PID=") { return }
        // `faultline record`'s header: strace itself never starts a line with '#'.
        if s.hasPrefix("#") {
            if s.hasPrefix(RecordedFile.headerPrefix) {
                let f = try RecordedFile(s.dropFirst(2), fail: fail)
                trace.files[f.path] = f
            }
            return
        }
        var pid = defaultPid
        if s.hasPrefix("[pid ") {
            let afterTag = s.dropFirst(5).drop(while: { $0 == " " })
            let digits = afterTag.prefix(while: \.isNumber)
            guard let p = Int(digits), afterTag.dropFirst(digits.count).first == "]" else { throw fail("bad [pid N] prefix") }
            pid = p
            trace.hasPids = true
            s = afterTag.dropFirst(digits.count + 1).drop(while: { $0 == " " })
        } else {
            let digits = s.prefix(while: \.isNumber)
            let after = s.dropFirst(digits.count)
            if !digits.isEmpty, let c = after.first, c == " " || c == "\t" {
                guard let p = Int(digits) else { throw fail("bad pid") }
                pid = p
                trace.hasPids = true
                s = after.drop(while: { $0 == " " || $0 == "\t" })
            }
        }
        // Timestamps: 02:20:44[.669029] (-t, -tt), 1795746044.703188 (-ttt), 0.000123 (-r).
        var stampNs: UInt64? = nil
        if let c = s.first, c.isNumber {
            let stamp = s.prefix(while: { $0.isNumber || $0 == ":" || $0 == "." })
            stampNs = Recording.parseSeconds(stamp)
            let after = s.dropFirst(stamp.count)
            guard after.first == " " || after.first == "\t" else { throw fail("expected a system call after the number") }
            s = after.drop(while: { $0 == " " || $0 == "\t" })
        }
        if s.hasPrefix("+++ ") {
            guard s.hasSuffix(" +++") else { throw fail("unterminated +++ line") }
            let body = s.dropFirst(4).dropLast(4)
            if body.hasPrefix("exited with ") {
                guard let st = Int(body.dropFirst(12)) else { throw fail("bad exit status") }
                trace.events.append(.exited(pid: pid, line: number, status: st))
            } else if body.hasPrefix("killed by ") {
                let sig = body.dropFirst(10).prefix(while: { $0 != " " })
                trace.events.append(.killed(pid: pid, line: number, signal: String(sig)))
            } else if body.hasPrefix("superseded by execve") {
                // A thread replaced by its group leader's execve: nothing to replay.
            } else {
                throw fail("unknown +++ line")
            }
            return
        }
        if s.hasPrefix("--- ") {
            guard s.hasSuffix(" ---") else { throw fail("unterminated --- line") }
            let body = s.dropFirst(4)
            if body.hasPrefix(RecordedFault.userTag + " {") || body.hasPrefix(RecordedFault.kernelTag + " {") {
                var f = try RecordedFault(body.dropLast(4), pid: pid, line: number, fail: fail)
                f.time = stampNs
                trace.events.append(.fault(f))
                return
            }
            if body.hasPrefix(PageCacheAdd.tag + " {") {
                trace.events.append(.pageCacheAdd(try PageCacheAdd(body.dropLast(4), pid: pid, line: number, fail: fail)))
                return
            }
            if body.hasPrefix(ExecMapping.tag + " {") {
                trace.events.append(.execMap(try ExecMapping(body.dropLast(4), pid: pid, line: number, fail: fail)))
                return
            }
            let name = body.hasPrefix("stopped by ") ? body.dropFirst(11).prefix(while: { $0 != " " })
                                                    : body.prefix(while: { $0 != " " })
            trace.events.append(.signal(pid: pid, line: number, name: String(name)))
            return
        }
        if s.hasPrefix("<... ") {
            let body = s.dropFirst(5)
            let name = body.prefix(while: { $0 != " " })
            let afterName = body.dropFirst(name.count)
            guard afterName.hasPrefix(" resumed>") else { throw fail("expected '<... NAME resumed>'") }
            let rest = afterName.dropFirst(9)
            guard let p = pending.removeValue(forKey: pid) else { throw fail("'\(name) resumed' without an unfinished call of pid \(pid)") }
            guard p.name == name else { throw fail("'\(name) resumed' but pid \(pid) began \(p.name)") }
            var call = try finishCall(name: p.name, argsPrefix: p.args, rest: rest, pid: pid, line: number,
                                      text: p.text + "\n" + String(full), fail: fail)
            call.startLine = p.line
            trace.events.append(.call(call))
            return
        }
        // NAME(ARGS) = RESULT  or  NAME(ARGS <unfinished ...>
        let name = s.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "?" })
        guard !name.isEmpty, s.dropFirst(name.count).first == "(" else { throw fail("expected NAME(...)") }
        let afterParen = s.dropFirst(name.count + 1)
        if afterParen.hasSuffix("<unfinished ...>") {
            var args = afterParen.dropLast(16)
            while args.last == " " { args = args.dropLast() }
            if pending[pid] != nil { throw fail("pid \(pid) began a call while another is unfinished") }
            pending[pid] = (String(name), String(args), number, String(full))
            return
        }
        let call = try finishCall(name: String(name), argsPrefix: "", rest: afterParen, pid: pid, line: number,
                                  text: String(full), fail: fail)
        trace.events.append(.call(call))
    }

    /// `rest` holds the remaining argument text, the closing `)`, ` = RESULT` and any `<T>`.
    static func finishCall(name: String, argsPrefix: String, rest: Substring, pid: Int, line: Int, text: String,
                           fail: (String) -> TraceSyntaxError) throws -> TraceCall {
        // Scan prefix and rest as one, so brackets opened before the split still count.
        var scanner = StraceSyntax.ArgumentScanner(depth: 0)
        let whole = Array(argsPrefix + String(rest))
        guard let close = scanner.closingParen(in: whole) else { throw fail("unbalanced parentheses or quotes") }
        let argText = Substring(String(whole[..<close]))
        var tail = Substring(String(whole[(close + 1)...])).drop(while: { $0 == " " || $0 == "\t" })
        guard tail.first == "=" else { throw fail("expected ' = RESULT' after the arguments") }
        tail = tail.dropFirst().drop(while: { $0 == " " })
        let result = try parseResult(tail, fail: fail)
        return TraceCall(line: line, startLine: line, pid: pid, name: name, args: StraceSyntax.splitArguments(argText), result: result, text: text)
    }

    static func parseResult(_ t: Substring, fail: (String) -> TraceSyntaxError) throws -> TraceResult {
        let token = t.prefix(while: { $0 != " " && $0 != "\t" })
        if token == "?" { return TraceResult(value: nil) }
        guard let v = StraceSyntax.parseNumber(token) else { throw fail("bad result '\(token)'") }
        let after = t.dropFirst(token.count).drop(while: { $0 == " " })
        if let c = after.first, c == "E" {
            let err = after.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" })
            return TraceResult(value: v, errno: String(err))
        }
        return TraceResult(value: v)
    }
}

extension Substring {
    /// The range of the first occurrence of `needle`.
    func findSubstring(_ needle: String) -> Range<String.Index>? {
        let n = Array(needle)
        guard let first = n.first else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i] == first {
                var j = i, k = 0
                while k < n.count, j < endIndex, self[j] == n[k] { j = index(after: j); k += 1 }
                if k == n.count { return i..<j }
            }
            i = index(after: i)
        }
        return nil
    }
}
