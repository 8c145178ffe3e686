import FaultlineMM
import Foundation

/// The mappings of the process the host cells run in (`/proc/self/smaps`), for the model's
/// cells to start from. A real process is never empty: libraries, thread stacks, malloc's
/// arenas and the model's own frames sit where a new mapping would otherwise go, so the
/// host places a thread's regions in gaps apart from each other's, where an empty model
/// put them side by side and merged them (seed-mix: every mmap and munmap of the mapper
/// expanded or split the faulter's VMA and write-locked it; on the host they never touch).
public struct ProcessLayout: Sendable {
    /// One mapping: its maps line, its `VmFlags`, and whether it has anonymous pages (so an
    /// anon_vma, which decides what may merge with it).
    public struct Mapping: Sendable {
        public var line: MapsLine
        public var flags: VMFlags
        public var hasAnonymousPages: Bool
    }

    public var mappings: [Mapping]
    /// Lines left out because they overlapped an earlier one: a read of smaps takes several
    /// read() calls, and a thread that changes the mappings between them can leave a VMA that
    /// grew below where the last call stopped shown twice.
    public var overlapping = 0

    /// `mm->mmap_base`, as the process shows it: the end of the highest mapping below the
    /// stack (the top-down search starts there; the loader's first mapping sits right below
    /// it). nil when the layout has no stack.
    public var mmapBase: UInt64? {
        guard let stack = mappings.first(where: { $0.line.path == "[stack]" })?.line.start else { return nil }
        return mappings.map(\.line).filter { $0.end <= stack && $0.path != "[vsyscall]" }.map(\.end).max()
    }

    /// Parses smaps text: a maps line per mapping, then its fields (`Anonymous:`, `VmFlags:`).
    public init(smaps text: String) {
        var out: [Mapping] = []
        var skipping = false
        for raw in text.split(separator: "\n") {
            if let line = MapsLine(parsing: raw) {
                skipping = out.last.map { line.start < $0.line.end } ?? false
                if skipping { overlapping += 1; continue }
                out.append(Mapping(line: line, flags: AddressSpace.flags(forPerms: line.perms), hasAnonymousPages: false))
            } else if skipping || out.isEmpty {
                continue
            } else if raw.hasPrefix("VmFlags:") {
                out[out.count - 1].flags = VMFlags(smapsMnemonics: raw.dropFirst(8))
            } else if raw.hasPrefix("Anonymous:") {
                let kb = raw.dropFirst(10).split(separator: " ").first.flatMap { Int($0) } ?? 0
                out[out.count - 1].hasAnonymousPages = kb > 0
            }
        }
        mappings = out
    }

    /// This process's layout now, or nil if smaps cannot be read.
    static func readOnce() -> ProcessLayout? {
        guard let text = readProcFile("/proc/self/smaps") else { return nil }
        let layout = ProcessLayout(smaps: text)
        return layout.mappings.isEmpty ? nil : layout
    }

    /// A proc or sysfs file's whole text, or nil if it cannot be read. Such a file reports size
    /// 0 (Foundation's `String(contentsOfFile:)` stops short of a large one): read to the end.
    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { break }
            bytes += buf[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// This process's layout, read again (up to three times) while a read came out torn.
    public static func current() -> ProcessLayout? {
        var layout = readOnce()
        for _ in 0..<2 where (layout?.overlapping ?? 0) > 0 { layout = readOnce() }
        return layout
    }

    /// The configuration's search starts where the process's does, and its stack is named.
    public func configure(_ cfg: inout AddressSpace.Configuration) {
        if let b = mmapBase, b < cfg.taskSize { cfg.mmapBase = b }
        if let s = mappings.first(where: { $0.line.path == "[stack]" }) { cfg.startStack = s.line.start }
    }

    /// Mirrors every mapping below the task size into `mm` (which must be empty), with its
    /// flags, file offset and name; file mappings get a stand-in file per path, sized to
    /// cover them. Returns how many it mirrored.
    @discardableResult
    public func mirror(into mm: AddressSpace) -> Int {
        var files: [String: MMFile] = [:]
        var sizes: [String: UInt64] = [:]
        for m in mappings where m.line.inode != 0 && m.line.path.hasPrefix("/") {
            sizes[m.line.path] = max(sizes[m.line.path] ?? 0, m.line.offset + (m.line.end - m.line.start))
        }
        var n = 0
        for m in mappings where m.line.end <= mm.config.taskSize && m.line.start < m.line.end {
            let l = m.line
            var file: MMFile?
            var special: String?
            if let size = sizes[l.path], l.inode != 0 {
                file = files[l.path] ?? mm.system.makeFile(path: l.path, size: size)
                files[l.path] = file
            } else if l.path.hasPrefix("[") && l.path != "[stack]" && l.path != "[heap]" {
                // vvar, vdso and the like: special mappings (the stack and heap are not).
                special = l.path
            }
            mm.mirror(start: l.start, end: l.end, flags: m.flags, file: file,
                      pgoff: file == nil ? nil : l.offset >> Linux.pageShift,
                      anonymous: m.hasAnonymousPages, specialName: special)
            n += 1
        }
        return n
    }
}
