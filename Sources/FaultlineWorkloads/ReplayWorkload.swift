import CFaultline
import FaultlineMM
import FaultlineReplay
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension TraceReplayer {
    /// Replays `script` under `design` for about `seconds`: each pass builds a fresh address
    /// space and runs every traced thread on its own OS thread, in its recorded order (no order
    /// between threads but what the trace proves: a thread starts at its creator's clone, and
    /// a step waits for the other threads' steps it followed on ranges it needs or changes
    /// (`ScriptStep.after`). One operation is one call or one recorded fault (an access, which
    /// faults unless another thread already mapped the page).
    /// `progress(elapsedMs, totalMs, label)` after each pass.
    public func timed(_ script: ReplayScript, design: Design, seconds: Double, warmupPasses: Int = 1,
                      workload: String, rep: Int = 0,
                      progress: (Int, Int, String) -> Void = { _, _, _ in }) -> CellResult {
        let n = script.tasks.count
        var hist = LatencyHistogram()
        var ops: UInt64 = 0
        var errors: UInt64 = 0
        var busyNs: UInt64 = 0
        var counters = DesignCounters()
        var passes = 0
        let deadline = fl_now_ns() + UInt64(seconds * 1e9)
        repeat {
            var cfg = AddressSpace.Configuration()
            if design.allowsTree(options.tree) { cfg.tree = options.tree }
            cfg.startStack = script.startStack
            cfg.faultAroundPages = max(1, options.faultAroundBytes / Int(Linux.pageSize))
            let mm = AddressSpace(system: system, design: design, configuration: cfg)
            if let b = script.brkStart { _ = mm.setBrkStart(b) }
            let results = UnsafeMutablePointer<(start: UInt64, end: UInt64, errors: UInt64, hist: LatencyHistogram)>.allocate(capacity: n)
            results.initialize(repeating: (0, 0, 0, LatencyHistogram()), count: n)
            let box = Shared(results)
            // A thread runs once the task that created it reached the clone (the trace's one
            // order between threads); the roots start at once.
            let go = UnsafeMutablePointer<Atomic<Bool>>.allocate(capacity: n)
            for i in 0..<n { (go + i).initialize(to: Atomic(false)) }
            for r in script.roots { go[r].store(true, ordering: .releasing) }
            let gate = Shared(go)
            // Steps each task has finished: a step the trace ordered after another task's
            // waits for it (`ScriptStep.after`).
            let doneSteps = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: n)
            for i in 0..<n { (doneSteps + i).initialize(to: Atomic(0)) }
            let done = Shared(doneSteps)
            let threads = (0..<n).map { i in
                Threads.spawn {
                    let list = script.tasks[i]
                    var h = LatencyHistogram()
                    var errs: UInt64 = 0
                    while !gate.value[i].load(ordering: .acquiring) { sched_yield() }
                    let t0 = fl_now_ns()
                    var last = t0
                    for (k, op) in list.enumerated() {
                        for w in op.after {
                            while done.value[w.task].load(ordering: .acquiring) < w.count { sched_yield() }
                        }
                        if let child = op.spawnedTask {
                            if child >= 0 { gate.value[child].store(true, ordering: .releasing) }
                        } else {
                            if !op.run(on: mm) { errs &+= 1 }
                            let now = fl_now_ns()
                            h.record(now &- last)
                            last = now
                        }
                        done.value[i].store(k + 1, ordering: .releasing)
                    }
                    box.value[i] = (t0, last, errs, h)
                }
            }
            for t in threads { Threads.join(t) }
            go.deinitialize(count: n)
            go.deallocate()
            doneSteps.deinitialize(count: n)
            doneSteps.deallocate()
            let c = mm.designCounters
            if passes >= warmupPasses {
                let start = (0..<n).map { results[$0].start }.min() ?? 0
                let end = (0..<n).map { results[$0].end }.max() ?? 0
                busyNs &+= end &- start
                ops &+= UInt64(script.operations)
                for i in 0..<n {
                    errors &+= results[i].errors
                    hist.merge(results[i].hist)
                }
                counters = counters + c
            }
            results.deinitialize(count: n)
            results.deallocate()
            passes += 1
            let total = Int(seconds * 1000)
            progress(min(total - 1, Int((fl_now_ns() &+ UInt64(seconds * 1e9) &- deadline) / 1_000_000)), max(total, 1),
                     "pass \(passes), \(errors) refused")
        } while fl_now_ns() < deadline || passes <= warmupPasses
        system.rcu.barrier()
        let secs = Double(max(busyNs, 1)) / 1e9
        var r = CellResult(design: design.rawValue, workload: workload, threads: n, rep: rep, seconds: secs, ops: ops,
                           opsPerSecond: Double(ops) / secs, latencyNs: hist.summary, latencyCurve: hist.curve,
                           counters: counters, mapsReads: nil)
        r.histogram = hist
        r.replayErrors = errors
        r.replayPasses = passes - warmupPasses
        let faults = UInt64(script.faults) * UInt64(passes - warmupPasses)
        r.replayFaults = faults
        r.faultsPerSecond = Double(faults) / secs
        r.callsPerSecond = Double(ops - faults) / secs
        return r
    }
}

/// A trace prepared as a workload (`replay:FILE` in `faultline compare` and `faultline run`):
/// parsed, replayed once with checking, its chosen process's calls kept as a script.
public struct ReplayWorkload: @unchecked Sendable {
    public let name: String
    public let replayer: TraceReplayer
    public let script: ReplayScript
    public let summary: ReplaySummary

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `name` is how results label it (`replay:FILE`).
    public init(path: String, text: String, name: String? = nil, pid: Int? = nil, lenient: Bool = false) throws {
        let parsed: ParsedTrace
        do { parsed = try StraceParser.parse(text, lenient: lenient) } catch let e as TraceSyntaxError {
            throw LoadError(description: "\(path): \(e)")
        }
        var o = ReplayOptions()
        o.pid = pid
        o.inferIntoTouched = lenient
        let r = TraceReplayer(trace: parsed, options: o)
        summary = r.run()
        guard let s = r.script, s.operations > 0 else {
            throw LoadError(description: "\(path): the traced process made no memory calls or faults to replay")
        }
        replayer = r
        script = s
        self.name = name ?? "replay:" + path
    }

    /// One timed cell under `design`.
    public func run(design: Design, seconds: Double, rep: Int = 0) -> CellResult {
        replayer.timed(script, design: design, seconds: seconds, workload: name, rep: rep)
    }
}
