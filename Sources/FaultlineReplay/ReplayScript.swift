import FaultlineMM

/// One model operation of the timed replay: a call as the checked replay resolved it
/// (kernel-chosen addresses made fixed, inferred mappings included) and the file it maps.
public struct ScriptStep: @unchecked Sendable {
    public var call: MemoryCall
    public var file: MMFile?

    /// Runs on `mm`; false when the model returned an error.
    @inlinable
    public func run(on mm: AddressSpace) -> Bool { call.run(on: mm, file: file).succeeded }
}

/// The chosen process's calls, one list per traced thread, for timed replays.
public struct ReplayScript: @unchecked Sendable {
    public var pid: Int
    public var tasks: [[ScriptStep]]
    public var brkStart: UInt64?
    public var operations: Int { tasks.reduce(0) { $0 + $1.count } }
}

extension TraceReplayer {
    /// The script of the chosen process (after `run()`).
    public var script: ReplayScript? {
        guard let p = chosenProcess, let pid = chosenPid else { return nil }
        return ReplayScript(pid: pid, tasks: p.taskOrder.map { p.script[$0]! }, brkStart: p.brkStart)
    }
}
