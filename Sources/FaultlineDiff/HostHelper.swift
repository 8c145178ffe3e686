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

    /// Reads `result N` and the maps lines after it.
    func readResponse() throws -> (Int64, [MapsLine]) {
        guard let r = readLine(), r.hasPrefix("result "), let v = Int64(r.dropFirst(7)) else {
            throw HostError(description: "helper gave no result")
        }
        var maps: [MapsLine] = []
        while let l = readLine(), l != "end" {
            if l.hasPrefix("map "), let m = MapsLine(parsing: l.dropFirst(4)) { maps.append(m) }
        }
        return (v, maps)
    }
}

import FaultlineMM
