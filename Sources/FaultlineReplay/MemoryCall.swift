import FaultlineMM

/// A traced call decoded into what the replay acts on.
public enum MemoryCall: Equatable, Sendable {
    case mmap(addr: UInt64, length: UInt64, prot: UInt32, flags: UInt32, fd: Int64, path: String?, offset: UInt64)
    case munmap(addr: UInt64, length: UInt64)
    case mprotect(addr: UInt64, length: UInt64, prot: UInt32)
    case mremap(addr: UInt64, oldLength: UInt64, newLength: UInt64, flags: UInt32, newAddr: UInt64)
    case madvise(addr: UInt64, length: UInt64, advice: Int32)
    case brk(addr: UInt64)
    /// clone, clone3, fork, vfork: `sharesVM` is CLONE_VM.
    case clone(sharesVM: Bool)
    case execve(path: String)
    /// `exit` ends one thread, `exit_group` the process.
    case exit(group: Bool)
    /// Counted and skipped.
    case other(String)

    /// exit and exit_group: they return nothing (`= ?`).
    var endsTask: Bool {
        if case .exit = self { return true }
        return false
    }

    /// Decodes `call`; a call the replay acts on whose arguments it cannot read throws.
    public init(_ call: TraceCall) throws {
        let a = call.args
        func fail(_ why: String) -> TraceSyntaxError {
            TraceSyntaxError(line: call.line, text: call.text, reason: why)
        }
        func need(_ n: Int) throws {
            if a.count < n { throw fail("\(call.name) needs \(n) arguments, has \(a.count)") }
        }
        func num(_ i: Int) throws -> UInt64 {
            guard let v = StraceParser.parseNumber(a[i]) else { throw fail("argument \(i + 1) of \(call.name) is not a number: '\(a[i])'") }
            return v
        }
        func flags(_ i: Int, _ table: [String: UInt64]) throws -> UInt64 {
            do { return try FlagSymbols.decode(a[i], table) } catch let e as FlagSymbols.Unknown {
                throw fail("unknown flag '\(e.symbol)' in argument \(i + 1) of \(call.name)")
            }
        }
        switch call.name {
        case "mmap", "mmap2":
            try need(6)
            let (fd, path) = try FlagSymbols.fd(a[4]).orThrow(fail("bad file descriptor '\(a[4])'"))
            var off = try num(5)
            if call.name == "mmap2" { off <<= 12 }
            self = .mmap(addr: try num(0), length: try num(1), prot: UInt32(truncatingIfNeeded: try flags(2, FlagSymbols.prot)),
                         flags: UInt32(truncatingIfNeeded: try flags(3, FlagSymbols.map)), fd: fd, path: path, offset: off)
        case "munmap":
            try need(2)
            self = .munmap(addr: try num(0), length: try num(1))
        case "mprotect":
            try need(3)
            self = .mprotect(addr: try num(0), length: try num(1), prot: UInt32(truncatingIfNeeded: try flags(2, FlagSymbols.prot)))
        case "pkey_mprotect":
            // With pkey -1 it is mprotect; other keys are not modelled.
            try need(4)
            guard a[3] == "-1" else { self = .other(call.name); return }
            self = .mprotect(addr: try num(0), length: try num(1), prot: UInt32(truncatingIfNeeded: try flags(2, FlagSymbols.prot)))
        case "mremap":
            try need(4)
            let f = UInt32(truncatingIfNeeded: try flags(3, FlagSymbols.mremap))
            self = .mremap(addr: try num(0), oldLength: try num(1), newLength: try num(2), flags: f,
                           newAddr: a.count > 4 ? try num(4) : 0)
        case "madvise":
            try need(3)
            let adv: Int64
            if let x = Advice(name: a[2]) { adv = Int64(x.rawValue) }
            else if let x = FlagSymbols.extraAdvice[a[2]] { adv = x }
            else if let x = StraceParser.parseNumber(a[2]) { adv = Int64(bitPattern: x) }
            else { throw fail("unknown advice '\(a[2])'") }
            self = .madvise(addr: try num(0), length: try num(1), advice: Int32(truncatingIfNeeded: adv))
        case "brk":
            try need(1)
            self = .brk(addr: try num(0))
        case "fork":
            self = .clone(sharesVM: false)
        case "vfork":
            self = .clone(sharesVM: true)
        case "clone", "clone3":
            // clone(child_stack=…, flags=CLONE_VM|…, …); clone3({flags=…, …}, size).
            let text = a.joined(separator: ", ")
            guard let r = text.find("flags=") else { throw fail("\(call.name) without flags=") }
            let f = text[r...].prefix(while: { $0 != "," && $0 != "}" && $0 != " " })
            self = .clone(sharesVM: f.split(separator: "|").contains("CLONE_VM"))
        case "execve", "execveat":
            let i = call.name == "execve" ? 0 : 1
            try need(i + 1)
            self = .execve(path: FlagSymbols.unquote(a[i]))
        case "exit":
            self = .exit(group: false)
        case "exit_group":
            self = .exit(group: true)
        default:
            self = .other(call.name)
        }
    }
}

extension Optional {
    func orThrow(_ e: @autoclosure () -> Error) throws -> Wrapped {
        guard let v = self else { throw e() }
        return v
    }
}

/// strace's symbolic names for flag arguments (x86-64).
enum FlagSymbols {
    struct Unknown: Error { var symbol: String }

    static let prot: [String: UInt64] = [
        "PROT_NONE": 0, "PROT_READ": 0x1, "PROT_WRITE": 0x2, "PROT_EXEC": 0x4, "PROT_SEM": 0x8,
        "PROT_GROWSDOWN": 0x0100_0000, "PROT_GROWSUP": 0x0200_0000,
    ]
    static let map: [String: UInt64] = [
        "MAP_FILE": 0, "MAP_SHARED": 0x1, "MAP_PRIVATE": 0x2, "MAP_SHARED_VALIDATE": 0x3, "MAP_DROPPABLE": 0x8,
        "MAP_FIXED": 0x10, "MAP_ANONYMOUS": 0x20, "MAP_ANON": 0x20, "MAP_32BIT": 0x40, "MAP_GROWSDOWN": 0x100,
        "MAP_DENYWRITE": 0x800, "MAP_EXECUTABLE": 0x1000, "MAP_LOCKED": 0x2000, "MAP_NORESERVE": 0x4000,
        "MAP_POPULATE": 0x8000, "MAP_NONBLOCK": 0x10000, "MAP_STACK": 0x20000, "MAP_HUGETLB": 0x40000,
        "MAP_SYNC": 0x80000, "MAP_FIXED_NOREPLACE": 0x100000, "MAP_UNINITIALIZED": 0x400_0000,
        "MAP_HUGE_2MB": 21 << 26, "MAP_HUGE_1GB": 30 << 26,
    ]
    static let mremap: [String: UInt64] = ["MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4]
    static let extraAdvice: [String: Int64] = [
        "MADV_HWPOISON": 100, "MADV_SOFT_OFFLINE": 101, "MADV_GUARD_INSTALL": 102, "MADV_GUARD_REMOVE": 103,
    ]

    /// `PROT_READ|PROT_WRITE`, `MAP_PRIVATE|0x80`, `21<<MAP_HUGE_SHIFT`, `0`.
    static func decode(_ text: String, _ table: [String: UInt64]) throws -> UInt64 {
        var v: UInt64 = 0
        for part in text.split(separator: "|") {
            let p = part.trimmingCharacters()
            if let x = table[p] { v |= x; continue }
            if let x = StraceParser.parseNumber(p) { v |= x; continue }
            if p.hasSuffix("<<MAP_HUGE_SHIFT"), let n = UInt64(p.dropLast(16)) { v |= n << 26; continue }
            throw Unknown(symbol: p)
        }
        return v
    }

    /// `-1`, `3`, `3</usr/lib/libc.so.6>`: the descriptor and the path strace showed.
    static func fd(_ text: String) -> (Int64, String?)? {
        let digits = text.prefix(while: { $0.isNumber || $0 == "-" })
        guard let n = Int64(digits) else {
            if text == "AT_FDCWD" { return (-100, nil) }
            return nil
        }
        var rest = text.dropFirst(digits.count)
        if rest.isEmpty { return (n, nil) }
        // `4</memfd:x>(deleted)`: the kernel's " (deleted)" suffix, outside the brackets.
        var deleted = false
        if rest.hasSuffix("(deleted)") {
            deleted = true
            rest = rest.dropLast(9)
            while rest.last == " " { rest = rest.dropLast() }
        }
        guard rest.first == "<", rest.last == ">" else { return nil }
        return (n, unescapePath(String(rest.dropFirst().dropLast())) + (deleted ? " (deleted)" : ""))
    }

    /// A C string as strace prints it (`"a\"b\n"`, possibly followed by `...`), decoded.
    static func unquote(_ s: String) -> String {
        var u = Array(s.utf8)[...]
        guard u.first == UInt8(ascii: "\"") else { return s }
        u = u.dropFirst()
        var out: [UInt8] = []
        while let c = u.first {
            u = u.dropFirst()
            if c == UInt8(ascii: "\"") { break }
            guard c == UInt8(ascii: "\\"), let e = u.first else { out.append(c); continue }
            u = u.dropFirst()
            switch e {
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "v"): out.append(11)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "x"):
                let h = u.prefix(2)
                if let v = UInt8(String(decoding: h, as: UTF8.self), radix: 16) { out.append(v); u = u.dropFirst(2) }
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = UInt32(e - UInt8(ascii: "0"))
                var n = 1
                while n < 3, let d = u.first, d >= UInt8(ascii: "0"), d <= UInt8(ascii: "7") {
                    v = v * 8 + UInt32(d - UInt8(ascii: "0")); u = u.dropFirst(); n += 1
                }
                out.append(UInt8(truncatingIfNeeded: v))
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// strace writes `\x3c` style escapes for special bytes in paths.
    static func unescapePath(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var bytes: [UInt8] = []
        var u = Array(s.utf8)[...]
        while let c = u.first {
            u = u.dropFirst()
            if c == UInt8(ascii: "\\"), u.count >= 3, u.first == UInt8(ascii: "x"),
               let v = UInt8(String(decoding: u.dropFirst().prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                u = u.dropFirst(3)
            } else {
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    /// The index just past the first occurrence of `needle`.
    func find(_ needle: String) -> String.Index? {
        let n = Array(needle)
        var i = startIndex
        while i < endIndex {
            var j = i, k = 0
            while k < n.count, j < endIndex, self[j] == n[k] { j = index(after: j); k += 1 }
            if k == n.count { return j }
            i = index(after: i)
        }
        return nil
    }
}

extension StringProtocol {
    func trimmingCharacters() -> String { String(self).trimmingSpaces() }
}
