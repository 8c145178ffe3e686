import FaultlineMM
#if canImport(Glibc)
import Glibc
#endif

/// Errors running the host side.
public struct HostError: Error, CustomStringConvertible {
    public let description: String
}

/// A running `faultline-host`: commands in through a pipe, answers out through another.
final class HostHelper {
    let pid: pid_t
    let input: Int32
    let output: Int32
    var buffer: [UInt8] = []
    var position = 0

    init(path: String, files: [(String, UInt64)]) throws {
        var inPipe: [Int32] = [0, 0]
        var outPipe: [Int32] = [0, 0]
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0 else { throw HostError(description: "pipe failed") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_addclose(&actions, inPipe[1])
        posix_spawn_file_actions_addclose(&actions, outPipe[0])
        var p: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
        defer { for a in argv { free(a) } }
        let rc = posix_spawn(&p, path, &actions, nil, argv, environ)
        posix_spawn_file_actions_destroy(&actions)
        Glibc.close(inPipe[0])
        Glibc.close(outPipe[1])
        guard rc == 0 else { throw HostError(description: "cannot start \(path): error \(rc)") }
        pid = p
        input = inPipe[1]
        output = outPipe[0]
        for (path, size) in files { send("file \(path) \(size)") }
        send("ready")
    }

    deinit {
        send("exit")
        Glibc.close(input)
        Glibc.close(output)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    func send(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(input, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { return }
            off += n
        }
    }

    func readLine() -> String? {
        while true {
            if let nl = buffer[position...].firstIndex(of: 10) {
                let line = String(decoding: buffer[position..<nl], as: UTF8.self)
                position = nl + 1
                if position > 65_536 {
                    buffer.removeFirst(position)
                    position = 0
                }
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let n = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress!, $0.count) }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Reads one answer: its first line (`result N`, or `signal SIGNO CODE` after a load or
    /// store) and the state after it.
    func readResponse() throws -> (String, HostState) {
        guard let r = readLine(), r.hasPrefix("result ") || r.hasPrefix("signal ") else {
            throw HostError(description: "helper gave no result")
        }
        var state = HostState()
        while let l = readLine(), l != "end" {
            if l.hasPrefix("map "), let m = MapsLine(parsing: l.dropFirst(4)) {
                state.maps.append(m)
            } else if l.hasPrefix("pages ") {
                let parts = l.split(separator: " ")
                guard parts.count == 3, let start = UInt64(parts[1]) else { throw HostError(description: "helper: " + l) }
                state.appendPages(start, String(parts[2]))
            } else if l.hasPrefix("smaps ") {
                let parts = l.split(separator: " ").compactMap { UInt64($0) }
                guard parts.count == 7 else { throw HostError(description: "helper: " + l) }
                state.usage.append(VMAUsage(start: parts[0], rssKB: parts[1], anonymousKB: parts[2], lazyFreeKB: parts[3],
                                            lockedKB: parts[4], swapKB: parts[5], anonHugeKB: parts[6]))
            }
        }
        return (r, state)
    }
}

/// The pagemap entries of a run of pages, as the helper prints them: two hex digits per page,
/// the entry's top byte masked to `Pagemap.modelled`.
struct PageRun: Equatable {
    var start: UInt64
    var entries: String

    /// One character pair per page, as `faultline-host` writes it.
    static func encode(_ entries: [UInt64]) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(entries.count * 2)
        for e in entries {
            let b = Int((e & Pagemap.modelled) >> 56)
            out.append(hex[b >> 4])
            out.append(hex[b & 15])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Per page: `.` not present, `a` anonymous (or the zero page), `f` file or shmem —
    /// capitals when mapped exclusively; `s` swapped, `g` a guard marker, `?` anything else.
    var picture: String {
        let b = Array(entries.utf8)
        var out = ""
        var i = 0
        while i + 1 < b.count {
            let v = UInt8(String(decoding: b[i...i + 1], as: UTF8.self), radix: 16) ?? 0xff
            switch v {
            case 0x00: out += "."
            case 0x80: out += "a"
            case 0x81: out += "A"
            case 0xa0: out += "f"
            case 0xa1: out += "F"
            case 0x40, 0x60: out += "s"
            case 0x04: out += "g"
            default: out += "?"
            }
            i += 2
        }
        return out
    }
}

/// One VMA's smaps `Rss:`, `Anonymous:`, `LazyFree:`, `Locked:` and `Swap:` (the model runs
/// without a swap device when compared with a host that has none: both must show 0).
struct VMAUsage: Equatable {
    var start: UInt64
    var rssKB: UInt64
    var anonymousKB: UInt64
    var lazyFreeKB: UInt64
    var lockedKB: UInt64
    var swapKB: UInt64
    /// smaps `AnonHugePages`.
    var anonHugeKB: UInt64
}

/// What the differential tester compares after every step, besides the result.
struct HostState {
    var maps: [MapsLine] = []
    var pages: [PageRun] = []
    var usage: [VMAUsage] = []

    /// Equal as compared: maps lines by range, permissions, offset and path (device and
    /// inode numbers are the host's own), pages and usage exactly.
    /// Adds pagemap entries from `start`, joined to the run before when contiguous (the
    /// helper writes at most 65,536 pages a line; the model one run a VMA): runs are compared
    /// in the same canonical form, VMA boundaries by the maps lines.
    mutating func appendPages(_ start: UInt64, _ entries: String) {
        if let last = pages.last, last.start + UInt64(last.entries.utf8.count / 2) * Linux.pageSize == start {
            pages[pages.count - 1].entries += entries
        } else {
            pages.append(PageRun(start: start, entries: entries))
        }
    }

    func agrees(with o: HostState) -> Bool {
        maps.map(\.comparable) == o.maps.map(\.comparable) && pages == o.pages && usage == o.usage
    }
}
