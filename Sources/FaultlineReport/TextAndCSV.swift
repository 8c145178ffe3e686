import FaultlineMM
import FaultlineWorkloads
import Foundation

/// A number with an SI suffix: 1.23M, 456k, 7.8.
public func si(_ v: Double) -> String {
    let a = abs(v)
    func f(_ x: Double, _ s: String) -> String {
        let digits = x >= 100 ? 0 : (x >= 10 ? 1 : 2)
        return String(format: "%.\(digits)f", x) + s
    }
    if a >= 1e9 { return f(v / 1e9, "G") }
    if a >= 1e6 { return f(v / 1e6, "M") }
    if a >= 1e3 { return f(v / 1e3, "k") }
    return f(v, "")
}

/// Nanoseconds as ns, µs or ms.
public func duration(_ ns: UInt64) -> String {
    let v = Double(ns)
    if v >= 1e6 { return String(format: "%.1f ms", v / 1e6) }
    if v >= 1e3 { return String(format: "%.1f µs", v / 1e3) }
    return "\(ns) ns"
}

extension Row {
    /// "faults p99 …, calls p99 …" where the workload times the two kinds apart.
    public var roleLatencyNote: String {
        guard let f = faultLatencyNs, let c = callLatencyNs else { return "" }
        return "faults p99 \(duration(f.p99)), calls p99 \(duration(c.p99))"
    }

    /// The note column of the printed table (`replay`: a timed replay's rates replace the rest)
    /// and of the results pages.
    func note(replay: Bool) -> String {
        var parts: [String] = []
        if let m = mapsReadsPerSecond { parts.append("maps reads/s \(si(m))") }
        if let f = hostFaultsPerOp { parts.append(String(format: "kernel faults/op %.2f", f)) }
        if let r = reclaimedPerSecond {
            parts.append("reclaimed \(si(r)) pages/s" + (directReclaimShare.map { String(format: " (%.0f%% direct)", $0 * 100) } ?? ""))
        }
        if let c = counters, c.thpFaults + c.thpFallbacks > 0 {
            let share = Double(c.thpFallbacks) / Double(c.thpFaults + c.thpFallbacks)
            parts.append("THPs \(c.thpFaults)" + (c.thpFallbacks > 0 ? String(format: " (%.0f%% fell back)", share * 100) : ""))
        }
        if replay, let c = callsPerSecond, let f = faultsPerSecond {
            parts = ["calls/s \(si(c)), faults/s \(si(f))" + (refusedPerPass.map { String(format: ", refused/pass %.0f", $0) } ?? "")]
        }
        return ([roleLatencyNote] + parts).filter { !$0.isEmpty }.joined(separator: "; ")
    }
}

extension Comparison {
    /// The table `faultline compare` prints.
    public func textTable() -> String {
        var out = ""
        for w in workloads {
            for t in threads {
                let rs = rows.filter { $0.workload == w && $0.threads == t }
                guard !rs.isEmpty else { continue }
                let unit = Comparison.unit(w)
                out += "\n\(w), \(t) thread\(t == 1 ? "" : "s") (\(unit)/s, median of \(repetitions))\n"
                var cells = [["design", "ops/s", "min–max", "× global", "p50", "p99", "p99.9", "abort rate", "mmap_lock wait", "majors/s", "note"]]
                for r in rs {
                    let note = r.note(replay: true)
                    cells.append([r.design, si(r.opsPerSecond), "\(si(r.minOpsPerSecond))–\(si(r.maxOpsPerSecond))",
                                  r.ratioToGlobal.map { String(format: "%.2f", $0) } ?? "–",
                                  duration(r.latencyNs.p50), duration(r.latencyNs.p99), duration(r.latencyNs.p999),
                                  r.abortRate.map { String(format: "%.3f", $0) } ?? "–", r.mmapLockWaitText, r.majorFaultsText, note])
                }
                out += Self.format(cells)
            }
        }
        return out
    }

    static func format(_ rows: [[String]]) -> String {
        let cols = rows.map(\.count).max() ?? 0
        var widths = Array(repeating: 0, count: cols)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        return rows.map { r in
            r.enumerated().map { i, c in i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[i] - c.count) + c }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    public static let csvHeader = "design,workload,threads,rep,seconds,ops,opsPerSecond,p50Ns,p90Ns,p99Ns,p999Ns,maxNs,"
        + "faults,speculativeSuccesses,aborts,fallbacks,retries,mmapLockWaitNs,vmaLockWaitNs,rangeLockWaitNs,mapsReads,hostFaults,"
        + "faultP99Ns,callP99Ns"

    /// One line per cell.
    public func csv() -> String {
        var out = Self.csvHeader + "\n"
        for c in cells {
            let k = c.counters
            let fields: [String] = [
                c.design, c.workload, String(c.threads), String(c.rep), String(format: "%.4f", c.seconds), String(c.ops),
                String(format: "%.1f", c.opsPerSecond), String(c.latencyNs.p50), String(c.latencyNs.p90), String(c.latencyNs.p99),
                String(c.latencyNs.p999), String(c.latencyNs.max),
                k.map { String($0.faults) } ?? "", k.map { String($0.locklessSuccesses) } ?? "", k.map { String($0.aborts) } ?? "",
                k.map { String($0.fallbacks) } ?? "", k.map { String($0.retries) } ?? "", k.map { String($0.mmapLockWaitNs) } ?? "",
                k.map { String($0.vmaLockWaitNs) } ?? "", k.map { String($0.rangeLockWaitNs) } ?? "",
                c.mapsReads.map { String($0) } ?? "", c.hostFaults.map { String($0) } ?? "",
                c.faultLatencyNs.map { String($0.p99) } ?? "", c.callLatencyNs.map { String($0.p99) } ?? "",
            ]
            out += fields.joined(separator: ",") + "\n"
        }
        return out
    }

    public func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try enc.encode(self)
    }
}
