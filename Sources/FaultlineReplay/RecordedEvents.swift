import FaultlineMM

/// One page fault as `faultline record` writes it from perf's `exceptions:page_fault_user`
/// (or `page_fault_kernel`, a kernel access to user memory such as `copy_to_user`):
/// `PID TIME --- page_fault_user {address=0x…, ip=0x…, error_code=0x…} ---`.
public struct RecordedFault: Equatable, Sendable {
    public var pid: Int
    public var line: Int
    public var address: UInt64
    public var ip: UInt64
    /// The x86 page-fault error code (`enum x86_pf_error_code`).
    public var errorCode: UInt64
    /// Taken in the kernel on a user address (`page_fault_kernel`), not by user code.
    public var kernel: Bool
    /// When, in ns since the epoch (the line's `unix,ns` stamp), if the line had one.
    public var time: UInt64? = nil
    /// A kernel fault's ip as perf names it (`elf_load`); `ip` is then 0.
    public var ipSymbol: String? = nil

    public static let userTag = "page_fault_user"
    public static let kernelTag = "page_fault_kernel"

    /// `X86_PF_PROT`: the page was present; the access was not allowed.
    public static let protBit: UInt64 = 1 << 0
    /// `X86_PF_WRITE`.
    public static let writeBit: UInt64 = 1 << 1
    /// `X86_PF_USER`.
    public static let userBit: UInt64 = 1 << 2
    /// `X86_PF_INSTR`: an instruction fetch.
    public static let instrBit: UInt64 = 1 << 4

    public init(pid: Int, line: Int = 0, address: UInt64, ip: UInt64, errorCode: UInt64, kernel: Bool = false) {
        self.pid = pid
        self.line = line
        self.address = address
        self.ip = ip
        self.errorCode = errorCode
        self.kernel = kernel
    }

    /// The access that faulted.
    public var kind: AccessKind {
        if errorCode & Self.instrBit != 0 { return .exec }
        return errorCode & Self.writeBit != 0 ? .write : .read
    }

    /// The PTE was present (a protection fault: write to read-only, COW), not missing.
    public var protection: Bool { errorCode & Self.protBit != 0 }

    /// The event's text after `--- ` and before ` ---`.
    public var body: String {
        "\(kernel ? Self.kernelTag : Self.userTag) {address=0x\(String(address, radix: 16)), ip=\(ipSymbol ?? "0x" + String(ip, radix: 16)), error_code=0x\(String(errorCode, radix: 16))}"
    }

    init(_ body: Substring, pid: Int, line: Int, fail: (String) -> TraceSyntaxError) throws {
        let kernel = body.hasPrefix(Self.kernelTag)
        let fields = try RecordSyntax.fields(body, fail: fail)
        guard let a = fields["address"].flatMap({ StraceSyntax.parseNumber($0) }),
              let ipText = fields["ip"], !ipText.isEmpty,
              let ec = fields["error_code"].flatMap({ StraceSyntax.parseNumber($0) }) else {
            throw fail("a page fault needs address=, ip= and error_code=")
        }
        let ip = StraceSyntax.parseNumber(ipText)
        guard ip != nil || kernel else { throw fail("a user fault's ip must be a number") }
        self.init(pid: pid, line: line, address: a, ip: ip ?? 0, errorCode: ec, kernel: kernel)
        if ip == nil { ipSymbol = ipText }
    }
}

/// A mapping execve made before the program ran (the stack, the executable, the
/// interpreter, the vDSO), from perf's MMAP2 record:
/// `PID TIME --- exec_map {start=0x…, end=0x…, prot=r-xp, offset=0x…, dev=fe:00, ino=N, path="…"} ---`.
@dynamicMemberLookup
public struct ExecMapping: Equatable, Sendable {
    public var pid: Int
    public var line: Int
    /// The mapping as maps would print it; `offset` is in bytes (perf's `pgoff`, which it
    /// prints in bytes), `path` a file, `[stack]`, `[vdso]`, `[vvar]`, `[vvar_vclock]`, or
    /// `//anon` (anonymous memory).
    public var map: MapsLine

    public static let tag = "exec_map"

    public init(pid: Int, line: Int = 0, start: UInt64, end: UInt64, perms: String, offset: UInt64,
                device: String = "00:00", inode: UInt64 = 0, path: String) {
        self.pid = pid
        self.line = line
        map = MapsLine(start: start, end: end, perms: perms, offset: offset, device: device, inode: inode, path: path)
    }

    public subscript<T>(dynamicMember key: KeyPath<MapsLine, T>) -> T { map[keyPath: key] }

    /// Anonymous memory (perf names it `//anon`).
    public var isAnonymous: Bool { map.path == "//anon" || map.path.isEmpty }
    /// A kernel special mapping (`[vdso]`, `[vvar]`, …) other than the stack.
    public var isSpecial: Bool { map.path.hasPrefix("[") && map.path != "[stack]" }
    public var isFile: Bool { !isAnonymous && !map.path.hasPrefix("[") }

    public var body: String {
        let m = map
        return "\(Self.tag) {start=0x\(String(m.start, radix: 16)), end=0x\(String(m.end, radix: 16)), prot=\(m.perms), offset=0x\(String(m.offset, radix: 16)), dev=\(m.device), ino=\(m.inode), path=\"\(RecordSyntax.escape(m.path))\"}"
    }

    init(_ body: Substring, pid: Int, line: Int, fail: (String) -> TraceSyntaxError) throws {
        let f = try RecordSyntax.fields(body, fail: fail)
        guard let s = f["start"].flatMap({ StraceSyntax.parseNumber($0) }),
              let e = f["end"].flatMap({ StraceSyntax.parseNumber($0) }),
              let perms = f["prot"], perms.count == 4,
              let off = f["offset"].flatMap({ StraceSyntax.parseNumber($0) }),
              let path = f["path"] else {
            throw fail("an exec_map needs start=, end=, prot=, offset= and path=")
        }
        guard s < e, s & (Linux.pageSize - 1) == 0, e & (Linux.pageSize - 1) == 0 else {
            throw fail("an exec_map's start and end must be page-aligned, start below end")
        }
        self.init(pid: pid, line: line, start: s, end: e, perms: perms, offset: off, device: f["dev"] ?? "00:00",
                  inode: f["ino"].flatMap { UInt64($0) } ?? 0, path: path)
    }
}

/// The `{key=value, …}` body of `faultline record`'s own lines.
enum RecordSyntax {
    /// Fields of `tag {k=v, k="quoted, with \\"escapes\\""}`.
    static func fields(_ body: Substring, fail: (String) -> TraceSyntaxError) throws -> [String: String] {
        guard let open = body.firstIndex(of: "{"), body.last == "}" else { throw fail("expected '{…}'") }
        let inner = Array(body[body.index(after: open)..<body.index(before: body.endIndex)])
        var out: [String: String] = [:]
        var i = 0
        while i < inner.count {
            while i < inner.count && (inner[i] == " " || inner[i] == ",") { i += 1 }
            guard i < inner.count else { break }
            var key = ""
            while i < inner.count && inner[i] != "=" { key.append(inner[i]); i += 1 }
            guard i < inner.count else { throw fail("field '\(key)' has no value") }
            i += 1
            var value = ""
            if i < inner.count && inner[i] == "\"" {
                i += 1
                var closed = false
                while i < inner.count {
                    if inner[i] == "\\" && i + 1 < inner.count { value.append(inner[i + 1]); i += 2; continue }
                    if inner[i] == "\"" { closed = true; i += 1; break }
                    value.append(inner[i])
                    i += 1
                }
                guard closed else { throw fail("unterminated quoted value of '\(key)'") }
            } else {
                while i < inner.count && inner[i] != "," { value.append(inner[i]); i += 1 }
            }
            out[key.trimmingSpaces] = value
        }
        return out
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for c in s {
            if c == "\"" || c == "\\" { o.append("\\") }
            o.append(c)
        }
        return o
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

/// A page-cache insertion perf saw while recording (`filemap:mm_filemap_add_to_page_cache`):
/// the file's pages at `index` (a folio of `pages`) were not cached before this point.
/// `PID TIME --- page_cache_add {dev=254:0, ino=0x…, index=N, pages=N} ---`.
public struct PageCacheAdd: Equatable, Sendable {
    public var pid: Int
    public var line: Int
    /// `major:minor`, decimal, as the tracepoint prints them.
    public var device: String
    public var inode: UInt64
    public var index: UInt64
    public var pages: UInt64

    public static let tag = "page_cache_add"

    public init(pid: Int, line: Int = 0, device: String, inode: UInt64, index: UInt64, pages: UInt64) {
        self.pid = pid
        self.line = line
        self.device = device
        self.inode = inode
        self.index = index
        self.pages = pages
    }

    public var body: String {
        "\(Self.tag) {dev=\(device), ino=0x\(String(inode, radix: 16)), index=\(index), pages=\(pages)}"
    }

    init(_ body: Substring, pid: Int, line: Int, fail: (String) -> TraceSyntaxError) throws {
        let f = try RecordSyntax.fields(body, fail: fail)
        guard let dev = f["dev"], let ino = f["ino"].flatMap({ StraceSyntax.parseNumber($0) }),
              let index = f["index"].flatMap({ UInt64($0) }), let pages = f["pages"].flatMap({ UInt64($0) }),
              pages > 0, pages <= 512, pages & (pages - 1) == 0, index < 1 << 52 else {
            throw fail("a page_cache_add needs dev=, ino=, index= and pages= (a folio: a power of two up to 512)")
        }
        self.init(pid: pid, line: line, device: dev, inode: ino, index: index, pages: pages)
    }
}

/// A file the recorded program named, as it was on the recording machine:
/// `# file {dev=254:0, ino=0x…, size=N, path="…"}`.
public struct RecordedFile: Equatable, Sendable {
    /// `major:minor`, decimal.
    public var device: String
    public var inode: UInt64
    public var size: UInt64
    public var path: String
    /// A regular file (not a device, pipe or socket).
    public var regular: Bool

    static let headerPrefix = "# file {"

    public init(device: String, inode: UInt64, size: UInt64, path: String, regular: Bool = true) {
        self.device = device
        self.inode = inode
        self.size = size
        self.path = path
        self.regular = regular
    }

    public var major: UInt32 { UInt32(device.split(separator: ":").first ?? "0") ?? 0 }
    public var minor: UInt32 { UInt32(device.split(separator: ":").last ?? "0") ?? 0 }

    public var headerLine: String {
        "file {dev=\(device), ino=0x\(String(inode, radix: 16)), size=\(size), regular=\(regular ? 1 : 0), path=\"\(RecordSyntax.escape(path))\"}"
    }

    init(_ body: Substring, fail: (String) -> TraceSyntaxError) throws {
        let f = try RecordSyntax.fields(body, fail: fail)
        guard let dev = f["dev"], dev.split(separator: ":").count == 2,
              let ino = f["ino"].flatMap({ StraceSyntax.parseNumber($0) }),
              let size = f["size"].flatMap({ UInt64($0) }), let path = f["path"] else {
            throw fail("a file line needs dev=MAJOR:MINOR, ino=, size= and path=")
        }
        self.init(device: dev, inode: ino, size: size, path: path, regular: f["regular"] != "0")
    }
}
