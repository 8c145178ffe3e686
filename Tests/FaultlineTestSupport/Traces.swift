import FaultlineMM
import FaultlineReplay
import Foundation

/// The recorded strace logs (their README says how each was recorded).
public let traceDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../FaultlineReplayTests/Traces").standardized

public func loadTrace(_ name: String) throws -> String {
    try String(contentsOf: traceDirectory.appendingPathComponent(name), encoding: .utf8)
}

/// Parses and replays `text` under `design`.
public func replay(_ text: String, design: Design = .global, pid: Int? = nil) throws -> (ReplaySummary, TraceReplayer) {
    var o = ReplayOptions()
    o.design = design
    o.pid = pid
    let r = TraceReplayer(trace: try StraceParser.parse(text), options: o)
    return (r.run(), r)
}

/// The gallery of recorded programs (`faultline record`; gallery/README.md says how).
public let galleryDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../gallery").standardized

public func loadGallery(_ name: String) throws -> String {
    try String(contentsOf: galleryDirectory.appendingPathComponent(name), encoding: .utf8)
}

/// Replays `text` with `options` (design, fault-around) and returns the summary.
public func replay(_ text: String, options: ReplayOptions) throws -> ReplaySummary {
    TraceReplayer(trace: try StraceParser.parse(text), options: options).run()
}
