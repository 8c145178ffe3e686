import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a long run is, on stderr: on a terminal one line rewritten in place; otherwise (a log,
/// CI) one line per step, at most one per `minInterval` seconds when steps are many. Each line
/// says the step (i of n), the time elapsed and an estimate of the time left.
final class Progress {
    let total: Int
    let minInterval: Double
    let terminal = isatty(2) != 0
    let began = Date()
    var lastLine = Date.distantPast
    var shown = false

    /// Steps are a share of the run (time-bound runs): shown as a percentage.
    let percent: Bool

    init(total: Int, minInterval: Double = 0, percent: Bool = false) {
        self.total = max(total, 1)
        self.minInterval = minInterval
        self.percent = percent
    }

    /// `done` steps of `total` are finished and `label` is the one starting now.
    func step(_ done: Int, _ label: String) {
        let now = Date()
        let elapsed = now.timeIntervalSince(began)
        let at = percent ? "\(100 * (done + 1) / total)%" : "\(done + 1)/\(total)"
        var line = "[\(at)] \(label) · \(Self.duration(elapsed)) elapsed"
        if done > 0 {
            line += ", ~\(Self.duration(elapsed / Double(done) * Double(total - done))) left"
        }
        if terminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
            shown = true
        } else if now.timeIntervalSince(lastLine) >= minInterval || done + 1 == total {
            lastLine = now
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    /// Clears the terminal line (before results are printed).
    func finish() {
        if terminal && shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }

    static func duration(_ s: Double) -> String {
        if s < 60 { return String(format: "%.0f s", s) }
        if s < 3600 { return String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60) }
        return String(format: "%d h %02d min", Int(s) / 3600, Int(s) % 3600 / 60)
    }
}
