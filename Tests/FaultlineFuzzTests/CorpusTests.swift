import FaultlineFuzz
import Foundation
import Testing

/// The committed fuzz corpora (seeds and the inputs that once crashed) through the same checks
/// the libFuzzer targets run: every one must pass, on every build, without libFuzzer.
@Suite("Fuzz corpora")
struct CorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus").standardized

    static func inputs(_ target: String) -> [URL] {
        let dir = root.appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted().map { dir.appendingPathComponent($0) }
    }

    @Test("strace corpus: parsed or a line-numbered error; replays consistent")
    func strace() throws {
        let files = Self.inputs("strace")
        #expect(files.count >= 5)
        for f in files {
            let d = try Data(contentsOf: f)
            d.withUnsafeBytes { StraceFuzz.run($0.bindMemory(to: UInt8.self)) }
        }
    }

    @Test("syscall corpus: every call leaves the address space consistent")
    func syscalls() throws {
        let files = Self.inputs("syscalls")
        #expect(files.count >= 10)
        #expect(files.contains { $0.lastPathComponent.hasPrefix("regression-") })
        for f in files {
            let d = try Data(contentsOf: f)
            d.withUnsafeBytes { SyscallFuzz.run($0.bindMemory(to: UInt8.self)) }
        }
    }
}
