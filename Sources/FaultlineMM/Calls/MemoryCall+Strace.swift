import CFaultline

// MARK: Flag names (x86-64): one table per flag type, read both ways.

extension Prot {
    /// strace's names for `PROT_*` bits.
    public static let straceNames: [(UInt64, String)] = [
        (0x1, "PROT_READ"), (0x2, "PROT_WRITE"), (0x4, "PROT_EXEC"), (0x8, "PROT_SEM"),
        (0x0100_0000, "PROT_GROWSDOWN"), (0x0200_0000, "PROT_GROWSUP"),
    ]
}

extension MapFlags {
    /// The mapping types (the `MAP_TYPE` bits).
    public static let straceTypeNames: [(UInt64, String)] = [
        (0x1, "MAP_SHARED"), (0x2, "MAP_PRIVATE"), (0x3, "MAP_SHARED_VALIDATE"), (0x8, "MAP_DROPPABLE"),
    ]
    /// strace's names for the other `MAP_*` bits.
    public static let straceNames: [(UInt64, String)] = [
        (0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x40, "MAP_32BIT"), (0x80, "MAP_ABOVE4G"), (0x100, "MAP_GROWSDOWN"),
        (0x800, "MAP_DENYWRITE"), (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"), (0x4000, "MAP_NORESERVE"),
        (0x8000, "MAP_POPULATE"), (0x10000, "MAP_NONBLOCK"), (0x20000, "MAP_STACK"), (0x40000, "MAP_HUGETLB"),
        (0x80000, "MAP_SYNC"), (0x100000, "MAP_FIXED_NOREPLACE"), (0x400_0000, "MAP_UNINITIALIZED"),
    ]
    /// Names strace or a person may write that the tables above do not print.
    static let straceAliases: [String: UInt64] = [
        "MAP_FILE": 0, "MAP_ANON": 0x20, "MAP_HUGE_2MB": 21 << 26, "MAP_HUGE_1GB": 30 << 26,
    ]
    /// `MAP_HUGE_SHIFT`: the huge page size's log2 sits in bits 26–31.
    static let hugeShift: UInt64 = 26
}

extension MremapFlags {
    public static let straceNames: [(UInt64, String)] = [(1, "MREMAP_MAYMOVE"), (2, "MREMAP_FIXED"), (4, "MREMAP_DONTUNMAP")]
}

extension CloneFlags {
    public static let straceNames: [(UInt64, String)] = [
        (0x100, "CLONE_VM"), (0x200, "CLONE_FS"), (0x400, "CLONE_FILES"), (0x800, "CLONE_SIGHAND"),
        (0x1000, "CLONE_PIDFD"), (0x2000, "CLONE_PTRACE"), (0x4000, "CLONE_VFORK"), (0x8000, "CLONE_PARENT"),
        (0x10000, "CLONE_THREAD"), (0x20000, "CLONE_NEWNS"), (0x40000, "CLONE_SYSVSEM"), (0x80000, "CLONE_SETTLS"),
        (0x100000, "CLONE_PARENT_SETTID"), (0x200000, "CLONE_CHILD_CLEARTID"), (0x400000, "CLONE_DETACHED"),
        (0x800000, "CLONE_UNTRACED"), (0x1000000, "CLONE_CHILD_SETTID"), (0x2000000, "CLONE_NEWCGROUP"),
        (0x4000000, "CLONE_NEWUTS"), (0x8000000, "CLONE_NEWIPC"), (0x10000000, "CLONE_NEWUSER"),
        (0x20000000, "CLONE_NEWPID"), (0x40000000, "CLONE_NEWNET"), (0x80000000, "CLONE_IO"),
    ]
    /// The exit signal (low byte) by name: the standard signals 1–31.
    static let signalNames: [(UInt64, String)] = [
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP",
        "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH",
        "SIGIO", "SIGPWR", "SIGSYS",
    ].enumerated().map { (UInt64($0.offset + 1), $0.element) }
}

extension Advice {
    /// Advice the model does not act on, by the names strace prints.
    public static let straceExtraNames: [(Int32, String)] = [
        (100, "MADV_HWPOISON"), (101, "MADV_SOFT_OFFLINE"),
    ]

    /// `MADV_DONTNEED`, or the number when the advice has no name.
    public static func straceName(_ advice: Int32) -> String {
        Advice(rawValue: advice)?.name ?? straceExtraNames.first { $0.0 == advice }?.1 ?? String(advice)
    }

    /// The advice number of a name or a number as strace prints it.
    public static func straceNumber(_ text: String) -> Int32? {
        if let a = Advice(name: text) { return a.rawValue }
        if let x = straceExtraNames.first(where: { $0.1 == text }) { return x.0 }
        return StraceSyntax.parseNumber(text).map { Int32(truncatingIfNeeded: Int64(bitPattern: $0)) }
    }
}

// MARK: Rendering

extension MemoryCall {
    /// The call in strace syntax (`-y` descriptors), with ` = result` when given.
    public func strace(result: SyscallResult? = nil) -> String {
        func addr(_ a: UInt64) -> String { a == 0 ? "NULL" : "0x" + String(a, radix: 16) }
        let call: String
        var hex = false
        switch self {
        case let .mmap(a, l, p, f, fd, o):
            hex = true
            call = "mmap(\(addr(a)), \(l), \(StraceSyntax.text(p)), \(StraceSyntax.text(f)), \(StraceSyntax.text(fd)), "
                + (o == 0 ? "0" : "0x" + String(o, radix: 16)) + ")"
        case let .munmap(a, l): call = "munmap(\(addr(a)), \(l))"
        case let .mprotect(a, l, p): call = "mprotect(\(addr(a)), \(l), \(StraceSyntax.text(p)))"
        case let .mremap(a, o, n, f, na):
            hex = true
            let extra = f.contains(.fixed) || f.contains(.dontUnmap) ? ", \(addr(na))" : ""
            call = "mremap(\(addr(a)), \(o), \(n), \(StraceSyntax.flags(UInt64(f.rawValue), MremapFlags.straceNames, zero: "0"))\(extra))"
        case let .madvise(a, l, adv): call = "madvise(\(addr(a)), \(l), \(Advice.straceName(adv)))"
        case let .brk(a):
            hex = true
            call = "brk(\(addr(a)))"
        case let .mseal(a, l, f): call = "mseal(\(addr(a)), \(l), \(f == 0 ? "0" : "0x" + String(f, radix: 16)))"
        case let .ftruncate(fd, l): call = "ftruncate(\(StraceSyntax.text(fd)), \(Int64(bitPattern: l)))"
        case let .mlock(a, l): call = "mlock(\(addr(a)), \(l))"
        case let .munlock(a, l): call = "munlock(\(addr(a)), \(l))"
        case let .mlock2(a, l, f):
            call = "mlock2(\(addr(a)), \(l), \(StraceSyntax.flags(UInt64(f), Self.mlock2Names, zero: "0")))"
        case let .mlockall(f): call = "mlockall(\(StraceSyntax.flags(UInt64(f), Self.mlockallNames, zero: "0")))"
        case .munlockall: call = "munlockall()"
        case let .clone(f):
            call = f == .sigchld ? "fork()" : "clone(child_stack=NULL, flags=\(StraceSyntax.text(f)))"
        case let .execve(path): call = "execve(\(StraceSyntax.quote(path)), NULL, NULL)"
        case let .exit(group): call = (group ? "exit_group" : "exit") + "(0)"
        }
        guard let result else { return call }
        return call + " = " + result.strace(hex: hex && result.raw != 0)
    }
}

// MARK: Decoding

extension MemoryCall {
    /// A call strace printed that this vocabulary cannot take.
    public struct SyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// Decodes a call from its name and its top-level arguments as strace printed them
    /// (`StraceSyntax.splitArguments`); nil for a call outside the vocabulary (and
    /// `pkey_mprotect` with a key, which the model does not have). Arguments it cannot read throw.
    public static func decode(name nameIn: String, arguments a: [String]) throws -> MemoryCall? {
        // strace older than a call prints it by number: `syscall_0x1ce(…)` is mseal.
        var name = nameIn
        if name.hasPrefix("syscall_0x"), let n = Int(name.dropFirst(10), radix: 16), let known = Self.x86_64Names[n] { name = known }
        func fail(_ why: String) -> SyntaxError { SyntaxError(reason: why) }
        func need(_ n: Int) throws {
            if a.count < n { throw fail("\(name) needs \(n) arguments, has \(a.count)") }
        }
        func num(_ i: Int) throws -> UInt64 {
            guard let v = StraceSyntax.parseNumber(a[i]) else { throw fail("argument \(i + 1) of \(name) is not a number: '\(a[i])'") }
            return v
        }
        func flags(_ i: Int, _ names: [(UInt64, String)], _ aliases: [String: UInt64] = [:]) throws -> UInt64 {
            do { return try StraceSyntax.decodeFlags(a[i], names, aliases) } catch let e as StraceSyntax.UnknownSymbol {
                throw fail("unknown flag '\(e.symbol)' in argument \(i + 1) of \(name)")
            }
        }
        func prot(_ i: Int) throws -> Prot { Prot(rawValue: UInt32(truncatingIfNeeded: try flags(i, Prot.straceNames, ["PROT_NONE": 0]))) }
        switch name {
        case "mmap", "mmap2":
            try need(6)
            guard let fd = StraceSyntax.fileDescriptor(a[4]) else { throw fail("bad file descriptor '\(a[4])'") }
            var off = try num(5)
            if name == "mmap2" { off <<= 12 }
            let f = try flags(3, MapFlags.straceTypeNames + MapFlags.straceNames, MapFlags.straceAliases)
            return .mmap(addr: try num(0), length: try num(1), prot: try prot(2),
                         flags: MapFlags(rawValue: UInt32(truncatingIfNeeded: f)), fd: fd, offset: off)
        case "munmap":
            try need(2)
            return .munmap(addr: try num(0), length: try num(1))
        case "mprotect":
            try need(3)
            return .mprotect(addr: try num(0), length: try num(1), prot: try prot(2))
        case "pkey_mprotect":
            // With key -1 it is mprotect; other keys are not modelled.
            try need(4)
            guard a[3] == "-1" else { return nil }
            return .mprotect(addr: try num(0), length: try num(1), prot: try prot(2))
        case "mremap":
            try need(4)
            let f = MremapFlags(rawValue: UInt32(truncatingIfNeeded: try flags(3, MremapFlags.straceNames)))
            return .mremap(addr: try num(0), oldLength: try num(1), newLength: try num(2), flags: f,
                           newAddr: a.count > 4 ? try num(4) : 0)
        case "madvise":
            try need(3)
            guard let adv = Advice.straceNumber(a[2]) else { throw fail("unknown advice '\(a[2])'") }
            return .madvise(addr: try num(0), length: try num(1), advice: adv)
        case "brk":
            try need(1)
            return .brk(addr: try num(0))
        case "mseal":
            try need(3)
            return .mseal(addr: try num(0), length: try num(1), flags: try num(2))
        case "mlock", "munlock":
            try need(2)
            return name == "mlock" ? .mlock(addr: try num(0), length: try num(1)) : .munlock(addr: try num(0), length: try num(1))
        case "mlock2":
            try need(3)
            return .mlock2(addr: try num(0), length: try num(1), flags: UInt32(truncatingIfNeeded: try flags(2, Self.mlock2Names)))
        case "mlockall":
            try need(1)
            return .mlockall(flags: UInt32(truncatingIfNeeded: try flags(0, Self.mlockallNames)))
        case "munlockall":
            return .munlockall
        case "ftruncate", "ftruncate64":
            try need(2)
            guard let fd = StraceSyntax.fileDescriptor(a[0]) else { throw fail("bad file descriptor '\(a[0])'") }
            return .ftruncate(fd: fd, length: try num(1))
        case "fork":
            return .fork
        case "vfork":
            return .clone(flags: [.vm, .vfork, .sigchld])
        case "clone", "clone3":
            // clone(child_stack=…, flags=CLONE_VM|…|SIGCHLD, …); clone3({flags=…, …}, size).
            let text = a.joined(separator: ", ")
            guard let r = text.find("flags=") else { throw fail("\(name) without flags=") }
            let word = String(text[r...].prefix(while: { $0 != "," && $0 != "}" && $0 != " " }))
            do {
                return .clone(flags: CloneFlags(rawValue: try StraceSyntax.decodeFlags(word, CloneFlags.straceNames + CloneFlags.signalNames, [:])))
            } catch let e as StraceSyntax.UnknownSymbol {
                throw fail("unknown flag '\(e.symbol)' in the flags of \(name)")
            }
        case "execve", "execveat":
            let i = name == "execve" ? 0 : 1
            try need(i + 1)
            return .execve(path: StraceSyntax.unquote(a[i]))
        case "exit":
            return .exit(group: false)
        case "exit_group":
            return .exit(group: true)
        default:
            return nil
        }
    }

    /// The x86-64 numbers of the calls in the vocabulary.
    static let x86_64Names: [Int: String] = [
        9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk", 25: "mremap", 28: "madvise", 56: "clone", 57: "fork",
        58: "vfork", 59: "execve", 60: "exit", 77: "ftruncate", 149: "mlock", 150: "munlock", 151: "mlockall",
        152: "munlockall", 231: "exit_group", 325: "mlock2", 322: "execveat", 329: "pkey_mprotect",
        435: "clone3", 462: "mseal",
    ]

    /// `MLOCK_*` and `MCL_*` as strace names them.
    static let mlock2Names: [(UInt64, String)] = [(1, "MLOCK_ONFAULT")]
    static let mlockallNames: [(UInt64, String)] = [(1, "MCL_CURRENT"), (2, "MCL_FUTURE"), (4, "MCL_ONFAULT")]

    /// Parses one call as strace prints it, `mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)`,
    /// with or without its ` = result`; a call outside the vocabulary throws.
    public init(strace text: String) throws {
        let chars = Array(text)
        guard let open = chars.firstIndex(of: "(") else { throw SyntaxError(reason: "no '(' in '\(text)'") }
        let name = String(chars[..<open]).trimmingSpaces()
        var scanner = StraceSyntax.ArgumentScanner(depth: 0)
        guard let close = scanner.closingParen(in: Array(chars[(open + 1)...])) else {
            throw SyntaxError(reason: "no ')' closing the arguments of '\(text)'")
        }
        let args = StraceSyntax.splitArguments(Substring(String(chars[(open + 1)..<(open + 1 + close)])))
        guard let call = try MemoryCall.decode(name: name, arguments: args) else {
            throw SyntaxError(reason: "'\(name)' is not a call Faultline models")
        }
        self = call
    }
}

// MARK: strace's syntax

/// strace's syntax: numbers, argument lists, quoted strings, `-y` descriptors, flag words.
public enum StraceSyntax {
    /// A flag word's part that no table names.
    public struct UnknownSymbol: Error { public var symbol: String }

    /// Decimal, `0x` hex, octal with a leading 0, negative decimal, `NULL`; nil otherwise.
    public static func parseNumber<S: StringProtocol>(_ s: S) -> UInt64? {
        if s == "NULL" { return 0 }
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt64(s.dropFirst(2), radix: 16) }
        if s.hasPrefix("-") {
            guard let m = UInt64(s.dropFirst()) else { return nil }
            return UInt64(bitPattern: -Int64(bitPattern: m))
        }
        if s.count > 1 && s.hasPrefix("0") && s.allSatisfy({ $0 >= "0" && $0 <= "7" }) { return UInt64(s.dropFirst(), radix: 8) }
        return UInt64(s)
    }

    /// `v` as a flag word: names joined by `|`, unnamed bits in hex, `zero` for no bits.
    public static func flags(_ v: UInt64, _ names: [(UInt64, String)], zero: String) -> String {
        var rest = v
        var parts: [String] = []
        for (bit, name) in names where bit != 0 && rest & bit == bit {
            parts.append(name)
            rest &= ~bit
        }
        if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
        return parts.isEmpty ? zero : parts.joined(separator: "|")
    }

    static func text(_ p: Prot) -> String { flags(UInt64(p.rawValue), Prot.straceNames, zero: "PROT_NONE") }

    static func text(_ f: MapFlags) -> String {
        let v = UInt64(f.rawValue)
        let type = v & 0x0f
        var parts = [MapFlags.straceTypeNames.first { $0.0 == type }?.1 ?? "0x" + String(type, radix: 16)]
        var rest = v & ~0x0f
        let huge = rest >> MapFlags.hugeShift
        rest &= (1 << MapFlags.hugeShift) - 1
        let named = flags(rest, MapFlags.straceNames, zero: "")
        if !named.isEmpty { parts.append(named) }
        if huge != 0 { parts.append("\(huge)<<MAP_HUGE_SHIFT") }
        return parts.joined(separator: "|")
    }

    static func text(_ f: CloneFlags) -> String {
        let signal = f.rawValue & 0xff
        var parts: [String] = []
        let named = flags(f.rawValue & ~0xff, CloneFlags.straceNames, zero: "")
        if !named.isEmpty { parts.append(named) }
        if signal != 0 { parts.append(CloneFlags.signalNames.first { $0.0 == signal }?.1 ?? String(signal)) }
        return parts.isEmpty ? "0" : parts.joined(separator: "|")
    }

    static func text(_ fd: FileDescriptor) -> String {
        guard fd.number >= 0, let path = fd.path else { return String(fd.number) }
        return "\(fd.number)<\(path)>"
    }

    /// `PROT_READ|PROT_WRITE`, `MAP_PRIVATE|0x80`, `21<<MAP_HUGE_SHIFT`, `0`.
    public static func decodeFlags(_ text: String, _ names: [(UInt64, String)], _ aliases: [String: UInt64]) throws -> UInt64 {
        var v: UInt64 = 0
        for part in text.split(separator: "|") {
            let p = String(part).trimmingSpaces()
            if let x = names.first(where: { $0.1 == p }) { v |= x.0; continue }
            if let x = aliases[p] { v |= x; continue }
            if let x = parseNumber(p) { v |= x; continue }
            if p.hasSuffix("<<MAP_HUGE_SHIFT"), let n = UInt64(p.dropLast(16)), n < 64 { v |= n << MapFlags.hugeShift; continue }
            throw UnknownSymbol(symbol: p)
        }
        return v
    }

    /// `-1`, `3`, `3</usr/lib/libc.so.6>`, `AT_FDCWD`: the descriptor and the path strace showed.
    public static func fileDescriptor(_ text: String) -> FileDescriptor? {
        let digits = text.prefix(while: { $0.isNumber || $0 == "-" })
        guard let n = Int64(digits) else {
            if text == "AT_FDCWD" { return FileDescriptor(-100) }
            return nil
        }
        let number = Int32(truncatingIfNeeded: n)
        var rest = text.dropFirst(digits.count)
        if rest.isEmpty { return FileDescriptor(number) }
        // `4</memfd:x>(deleted)`: the kernel's " (deleted)" suffix, outside the brackets.
        var deleted = false
        if rest.hasSuffix("(deleted)") {
            deleted = true
            rest = rest.dropLast(9)
            while rest.last == " " { rest = rest.dropLast() }
        }
        guard rest.first == "<", rest.last == ">" else { return nil }
        return FileDescriptor(number, path: unescapePath(String(rest.dropFirst().dropLast())) + (deleted ? " (deleted)" : ""))
    }

    /// A string as strace quotes it.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.utf8 {
            switch u {
            case UInt8(ascii: "\""): out += "\\\""
            case UInt8(ascii: "\\"): out += "\\\\"
            case 10: out += "\\n"
            case 9: out += "\\t"
            case 0x20..<0x7f: out.append(Character(Unicode.Scalar(u)))
            default: out += "\\x" + (u < 16 ? "0" : "") + String(u, radix: 16)
            }
        }
        return out + "\""
    }

    /// A C string as strace prints it (`"a\"b\n"`, possibly followed by `...`), decoded.
    public static func unquote(_ s: String) -> String {
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

    /// `ENOMEM`, or `E<number>` for a number glibc does not name.
    public static func errnoName(_ n: Int32) -> String {
        if let p = fl_errno_name(n) { return String(cString: p) }
        return "E\(n)"
    }

    /// strace's text for an errno: `strerror`.
    public static func errnoText(_ n: Int32) -> String { String(cString: fl_errno_text(n)) }

    /// Splits an argument list at top-level commas; comments (`/* 39 vars */`) are dropped.
    public static func splitArguments(_ text: Substring) -> [String] {
        var out: [String] = []
        var cur = ""
        var depth = 0
        var inString = false
        var escaped = false
        var angle = 0
        var chars = Array(text)
        // Drop comments outside strings.
        var cleaned: [Character] = []
        var i = 0
        var q = false, esc = false
        while i < chars.count {
            let c = chars[i]
            if q {
                cleaned.append(c)
                if esc { esc = false } else if c == "\\" { esc = true } else if c == "\"" { q = false }
                i += 1
                continue
            }
            if c == "\"" { q = true }
            if c == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                var j = i + 2
                while j + 1 < chars.count && !(chars[j] == "*" && chars[j + 1] == "/") { j += 1 }
                i = j + 2
                continue
            }
            cleaned.append(c)
            i += 1
        }
        chars = cleaned
        var prev: Character = " "
        for (k, c) in chars.enumerated() {
            let next: Character = k + 1 < chars.count ? chars[k + 1] : " "
            if inString {
                cur.append(c)
                if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
                prev = c
                continue
            }
            if angle > 0 {
                cur.append(c)
                if c == "<" { angle += 1 } else if c == ">" { angle -= 1 }
                prev = c
                continue
            }
            switch c {
            case "\"": inString = true; cur.append(c)
            case "<" where prev.isNumber && next != "<": angle = 1; cur.append(c)
            case "(", "[", "{": depth += 1; cur.append(c)
            case ")", "]", "}": depth -= 1; cur.append(c)
            case "," where depth == 0:
                out.append(cur.trimmingSpaces())
                cur = ""
            default: cur.append(c)
            }
            prev = c
        }
        let last = cur.trimmingSpaces()
        if !last.isEmpty || !out.isEmpty { out.append(last) }
        return out
    }

    /// Finds the `)` that closes a call's argument list, skipping strings, fd paths and
    /// brackets; `depth` carries over lines of a call strace split.
    public struct ArgumentScanner {
        public var depth: Int

        public init(depth: Int) { self.depth = depth }

        /// The offset of the closing `)` in `s`, or nil.
        public mutating func closingParen(in s: [Character]) -> Int? {
            var inString = false, escaped = false, inComment = false
            var angle = 0
            var prev: Character = " "
            for (i, c) in s.enumerated() {
                let next: Character = i + 1 < s.count ? s[i + 1] : " "
                if inComment {
                    if c == "/" && prev == "*" { inComment = false }
                } else if inString {
                    if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
                } else if angle > 0 {
                    if c == "<" { angle += 1 } else if c == ">" { angle -= 1 }
                } else {
                    switch c {
                    case "\"": inString = true
                    case "*" where prev == "/": inComment = true
                    case "<" where prev.isNumber && next != "<" && prev != "<": angle = 1
                    case "(", "[", "{": depth += 1
                    case "]", "}": depth -= 1
                    case ")":
                        if depth == 0 { return i }
                        depth -= 1
                    default: break
                    }
                }
                prev = c
            }
            return nil
        }
    }
}

extension String {
    /// The index just past the first occurrence of `needle`.
    package func find(_ needle: String) -> String.Index? {
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

    /// Without leading and trailing spaces and tabs.
    package func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
