import FaultlineMM
import FaultlineReplay

/// The strace parser and replay under arbitrary bytes: a parse, or an error naming a line that
/// exists; `--lenient` never fails; a parsed trace replays on the model without a crash and
/// leaves every address space consistent. Violations trap (libFuzzer reports them).
public enum StraceFuzz {
    public static func run(_ bytes: UnsafeBufferPointer<UInt8>) {
        let text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).count
        let trace: ParsedTrace
        do {
            trace = try StraceParser.parse(text)
        } catch let e as TraceSyntaxError {
            precondition(e.line >= 1 && e.line <= lines, "error names line \(e.line) of \(lines)")
            let lenient = try! StraceParser.parse(text, lenient: true)
            precondition(!lenient.malformed.isEmpty, "strict parse failed, lenient found nothing malformed")
            precondition(lenient.malformed.allSatisfy { $0.line >= 1 && $0.line <= lines })
            return
        } catch {
            preconditionFailure("parse threw \(error)")
        }
        for c in trace.calls {
            precondition(c.line >= 1 && c.line <= lines && c.startLine <= c.line)
            do { _ = try MemoryCall.decode(c) } catch let e as TraceSyntaxError {
                precondition(e.line == c.line, "decode error names line \(e.line), call ends on \(c.line)")
            } catch {
                preconditionFailure("decode threw \(error)")
            }
        }
        var o = ReplayOptions()
        o.frames = 1024
        let r = TraceReplayer(trace: trace, options: o)
        let s = r.run()
        precondition(s.mismatches.allSatisfy { $0.line >= 1 && $0.line <= lines })
        let problems = r.checkInvariants()
        precondition(problems.isEmpty, problems.joined(separator: "\n"))
    }
}
