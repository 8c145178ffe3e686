import FaultlineMM

/// One model operation of the timed replay: a call as the checked replay resolved it
/// (kernel-chosen addresses made fixed, inferred mappings included), a recorded fault (an
/// access: it faults only if the page tables do not already allow it), or a mapping execve
/// made that no call can make (the stack, the vDSO), mirrored.
public struct ScriptStep: @unchecked Sendable {
    public enum Operation {
        case call(MemoryCall)
        case access(address: UInt64, kind: AccessKind)
        case mirror(start: UInt64, end: UInt64, flags: VMFlags, anonymous: Bool, special: String?)
        /// The task creates a thread (clone with CLONE_VM): the thread's operations may start.
        /// Recorded as the child's pid; in a script, the child's index in `tasks`.
        case spawn(task: Int)
    }
    public var operation: Operation
    public var file: MMFile?
    /// Steps of other tasks that must be done first (task index in the script — the pid while
    /// the checked replay builds it — and how many of its steps): the trace's cross-thread order.
    public var after: [(task: Int, count: Int)] = []

    public init(call: MemoryCall, file: MMFile? = nil) {
        operation = .call(call)
        self.file = file
    }

    public init(_ operation: Operation) {
        self.operation = operation
        file = nil
    }

    /// A recorded fault (counted apart from calls: faults/s and calls/s).
    @inlinable
    public var isFault: Bool { if case .access = operation { true } else { false } }

    /// The thread this step starts (no model operation, not counted), if it is a spawn.
    @inlinable
    public var spawnedTask: Int? { if case .spawn(let t) = operation { t } else { nil } }

    /// Runs on `mm`; false when the model returned an error (or the access a signal).
    @inlinable
    public func run(on mm: AddressSpace) -> Bool {
        switch operation {
        case .call(let c): return c.run(on: mm, file: file).succeeded
        case .access(let a, let k):
            if case .failure = mm.access(a, k) { return false }
            return true
        case let .mirror(start, end, flags, anonymous, special):
            // A fresh pass's address space is empty there, as execve's was.
            guard mm.mapsLines(in: start..<end).isEmpty else { return false }
            mm.mirror(start: start, end: end, flags: flags, anonymous: anonymous, specialName: special)
            return true
        case .spawn: return true
        }
    }
}

/// The chosen process's operations, one list per traced thread, for timed replays.
public struct ReplayScript: @unchecked Sendable {
    public var pid: Int
    public var tasks: [[ScriptStep]]
    public var brkStart: UInt64?
    /// `[stack]`'s place (maps names it), when execve's layout was recorded.
    public var startStack: UInt64?
    /// Calls and faults (spawns are not operations).
    public var operations: Int { tasks.reduce(0) { $0 + $1.lazy.filter { $0.spawnedTask == nil }.count } }
    /// The tasks no other task of the script spawns: they start at once.
    public var roots: [Int] {
        let spawned = Set(tasks.flatMap { $0.compactMap(\.spawnedTask) }.filter { $0 >= 0 })
        return tasks.indices.filter { !spawned.contains($0) }
    }
    /// Cross-thread waits the trace's order put into the script.
    public var waits: Int { tasks.reduce(0) { $0 + $1.reduce(0) { $0 + $1.after.count } } }
    /// Of `operations`, the recorded faults.
    public var faults: Int { tasks.reduce(0) { $0 + $1.lazy.filter(\.isFault).count } }
}

extension TraceReplayer {
    /// The script of the chosen process (after `run()`).
    public var script: ReplayScript? {
        guard let p = chosenProcess, let pid = chosenPid else { return nil }
        let index = Dictionary(uniqueKeysWithValues: p.taskOrder.enumerated().map { ($1, $0) })
        // Pids become indices; a spawn of a thread that did nothing stays as a no-op, so that
        // step counts (which `after` names) stay as they were.
        let tasks = p.taskOrder.map { t in
            p.script[t]!.map { step -> ScriptStep in
                var s = step
                if let child = step.spawnedTask { s = ScriptStep(.spawn(task: index[child] ?? -1)) }
                s.after = step.after.compactMap { a in index[a.task].map { ($0, a.count) } }
                return s
            }
        }
        return ReplayScript(pid: pid, tasks: tasks, brkStart: p.brkStart, startStack: p.mm.config.startStack)
    }
}
