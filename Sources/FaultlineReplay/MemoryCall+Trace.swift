import FaultlineMM

extension MemoryCall {
    /// Decodes a traced call into the vocabulary; nil for a call outside it (the replay counts
    /// those as skipped); a call in it whose arguments cannot be read throws, naming the line.
    public static func decode(_ call: TraceCall) throws -> MemoryCall? {
        do { return try decode(name: call.name, arguments: call.args) } catch let e as MemoryCall.SyntaxError {
            throw TraceSyntaxError(line: call.line, text: call.text, reason: e.reason)
        }
    }

    /// exit and exit_group: they return nothing (`= ?`).
    var endsTask: Bool {
        if case .exit = self { return true }
        return false
    }
}
