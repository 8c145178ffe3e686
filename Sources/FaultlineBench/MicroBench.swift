import CFaultline
import FaultlineSync
import Synchronization

/// One measured cell of a micro-benchmark: the median over repetitions, with the spread.
public struct MicroResult: Codable, Sendable {
    public var primitive: String
    public var scenario: String
    /// Structure size, for scenarios that have one (trees).
    public var size: Int?
    public var threads: Int
    /// Average time one worker spends per operation: wall time × workers ÷ operations.
    /// Flat across thread counts means perfect scaling.
    public var nsPerOp: Double
    public var nsPerOpMin: Double
    public var nsPerOpMax: Double
    /// Aggregate throughput of all workers, from the median repetition.
    public var opsPerSecond: Double
    public var reps: Int
    /// Scenario-specific extras (e.g. seqcount retries per read), medians.
    public var extra: [String: Double]
}

/// What a scenario's worker returns: operations done, plus optional named counts.
public struct WorkerTally: Sendable {
    public var ops: UInt64
    public var extra: [String: UInt64]
    public init(ops: UInt64, extra: [String: UInt64] = [:]) {
        self.ops = ops
        self.extra = extra
    }
}

/// A micro-benchmark scenario. `prepare(threads)` builds fresh shared state for one
/// repetition and returns the worker body; each worker loops until `stop` is set, checking it
/// every batch of operations, and reports what it did. The body is generic code specialised
/// per scenario: no dynamic dispatch per operation.
public struct MicroScenario: Sendable {
    public let primitive: String
    public let scenario: String
    public let size: Int?
    /// Extra threads the scenario runs beside the measured workers (e.g. a writer).
    public let helperThreads: Int
    /// Whether this scenario is meaningful at this many measured workers.
    public let supports: @Sendable (Int) -> Bool
    public let prepare: @Sendable (Int) -> @Sendable (_ worker: Int, _ stop: StopFlag) -> WorkerTally

    public init(primitive: String, scenario: String, size: Int? = nil, helperThreads: Int = 0,
                supports: @escaping @Sendable (Int) -> Bool = { _ in true },
                prepare: @escaping @Sendable (Int) -> @Sendable (Int, StopFlag) -> WorkerTally) {
        self.primitive = primitive
        self.scenario = scenario
        self.size = size
        self.helperThreads = helperThreads
        self.supports = supports
        self.prepare = prepare
    }
}

/// Runs scenarios × thread counts × repetitions, interleaved: every repetition runs every cell
/// once, so slow drift of a noisy machine spreads over all cells alike.
public struct MicroBenchRunner {
    public var seconds: Double
    public var reps: Int
    public var pin: Bool
    public var progress: ((String) -> Void)?

    public init(seconds: Double, reps: Int, pin: Bool = true, progress: ((String) -> Void)? = nil) {
        self.seconds = seconds
        self.reps = reps
        self.pin = pin
        self.progress = progress
    }

    struct Sample {
        var nsPerOp: Double
        var opsPerSecond: Double
        var extra: [String: Double]
    }

    public func run(_ scenarios: [MicroScenario], threadCounts: [Int]) -> [MicroResult] {
        var cells: [(MicroScenario, Int)] = []
        for s in scenarios {
            for t in threadCounts where s.supports(t) { cells.append((s, t)) }
        }
        var samples = Array(repeating: [Sample](), count: cells.count)
        for rep in 0..<reps {
            for (i, (s, t)) in cells.enumerated() {
                progress?("rep \(rep + 1)/\(reps): \(s.primitive) \(s.scenario)\(s.size.map { " @\($0)" } ?? "") ×\(t)")
                samples[i].append(measure(s, threads: t))
            }
        }
        return cells.enumerated().map { i, cell in
            let sorted = samples[i].sorted { $0.nsPerOp < $1.nsPerOp }
            let mid = sorted[sorted.count / 2]
            return MicroResult(primitive: cell.0.primitive, scenario: cell.0.scenario, size: cell.0.size, threads: cell.1,
                               nsPerOp: mid.nsPerOp, nsPerOpMin: sorted.first!.nsPerOp,
                               nsPerOpMax: sorted.last!.nsPerOp, opsPerSecond: mid.opsPerSecond,
                               reps: sorted.count, extra: mid.extra)
        }
    }

    func measure(_ s: MicroScenario, threads: Int) -> Sample {
        let body = s.prepare(threads)
        let total = threads + s.helperThreads
        let stop = StopFlag()
        let barrier = SpinBarrier(parties: total + 1)
        let tallies = TallyBox(count: total)
        let pinThreads = pin
        let cpus = Threads.availableCPUs
        let workers = (0..<total).map { w in
            Threads.spawn {
                if pinThreads { _ = fl_pin_to_cpu(Int32(w % max(cpus, 1))) }
                barrier.wait()
                let t = body(w, stop)
                tallies.set(w, t)
            }
        }
        barrier.wait()
        let t0 = fl_now_ns()
        fl_sleep_ns(UInt64(seconds * 1e9))
        stop.set()
        for th in workers { Threads.join(th) }
        let elapsed = Double(fl_now_ns() - t0)
        // Only the measured workers (the first `threads`) count; helpers are background load.
        var ops: UInt64 = 0
        var extra: [String: UInt64] = [:]
        for w in 0..<threads {
            let t = tallies.get(w)
            ops += t.ops
            for (k, v) in t.extra { extra[k, default: 0] += v }
        }
        let safeOps = Double(max(ops, 1))
        return Sample(nsPerOp: elapsed * Double(threads) / safeOps,
                      opsPerSecond: safeOps / (elapsed / 1e9),
                      extra: extra.mapValues { Double($0) / safeOps })
    }
}

final class TallyBox: @unchecked Sendable {
    var tallies: [WorkerTally]
    let lock = SpinLock()
    init(count: Int) { tallies = Array(repeating: WorkerTally(ops: 0), count: count) }
    func set(_ i: Int, _ t: WorkerTally) { lock.withLock { tallies[i] = t } }
    func get(_ i: Int) -> WorkerTally { lock.withLock { tallies[i] } }
}

/// xorshift64*, for per-worker choices inside hot loops.
@frozen
public struct FastRandom {
    @usableFromInline var state: UInt64
    @inlinable public init(seed: UInt64) { state = seed | 1 }
    @inlinable @inline(__always)
    public mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
}

/// How often workers look at the stop flag.
public let stopCheckInterval: UInt64 = 256

/// Formats results as an aligned text table.
public func formatMicroTable(_ results: [MicroResult]) -> String {
    let sized = results.contains { $0.size != nil }
    var rows: [[String]] = [["primitive", "scenario"] + (sized ? ["size"] : []) + ["threads", "ns/op (median)", "min–max", "Mops/s", "extra"]]
    for r in results {
        let extra = r.extra.sorted { $0.key < $1.key }.map { "\($0.key)=\(fmt($0.value, 3))" }.joined(separator: " ")
        rows.append([r.primitive, r.scenario] + (sized ? [r.size.map(String.init) ?? ""] : []) + ["\(r.threads)", fmt(r.nsPerOp, 2),
                     "\(fmt(r.nsPerOpMin, 2))–\(fmt(r.nsPerOpMax, 2))", fmt(r.opsPerSecond / 1e6, 2), extra])
    }
    return formatTable(rows)
}

/// Left-aligned text columns separated by two spaces.
public func formatTable(_ rows: [[String]]) -> String {
    guard let cols = rows.map(\.count).max() else { return "" }
    var widths = Array(repeating: 0, count: cols)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
        r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(to: widths[i]) }.joined(separator: "  ")
    }.joined(separator: "\n")
}

/// Fixed-point formatting without Foundation.
public func fmt(_ v: Double, _ digits: Int) -> String {
    guard v.isFinite else { return "\(v)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(v) * scale).rounded()
    let whole = Int(rounded / scale)
    var frac = String(Int(rounded.truncatingRemainder(dividingBy: scale)))
    while frac.count < digits { frac = "0" + frac }
    return (v < 0 && rounded != 0 ? "-" : "") + (digits > 0 ? "\(whole).\(frac)" : "\(whole)")
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
