/// One load or store by the program, run as the MMU runs it: satisfied by a PTE or through a
/// fault, ending in a value or a signal. The unit of memory in the differential tester.
public struct MemoryAccess: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        case load, store
    }

    public var kind: Kind
    public var address: UInt64
    /// The byte a store writes (0 for loads).
    public var value: UInt8

    public init(load address: UInt64) {
        kind = .load
        self.address = address
        value = 0
    }

    public init(store address: UInt64, value: UInt8) {
        kind = .store
        self.address = address
        self.value = value
    }

    /// Runs the access on the model.
    public func run(on mm: AddressSpace) -> AccessOutcome {
        switch kind {
        case .load:
            switch mm.load(address) {
            case .success(let v): return .value(v)
            case .failure(let e): return .signal(e)
            }
        case .store:
            switch mm.store(address, value) {
            case .success: return .stored
            case .failure(let e): return .signal(e)
            }
        }
    }

    /// The line `faultline-host` reads: `load ADDR` or `store ADDR VALUE`.
    public var hostCommand: String {
        kind == .load ? "load \(address)" : "store \(address) \(value)"
    }

    /// `load(0x7f…)` or `store(0x7f…, 0x2a)`, in the style of the calls' strace lines.
    public var description: String {
        let a = "0x" + String(address, radix: 16)
        return kind == .load ? "load(\(a))" : "store(\(a), 0x\(String(value, radix: 16)))"
    }

    /// The access and how it ended: `load(0x7f…) = 0x2a`, `store(…) = SIGSEGV {si_code=SEGV_ACCERR}`.
    public func text(outcome: AccessOutcome) -> String { description + " = " + outcome.description }
}

/// How a load or store ended: the byte loaded, a completed store, or the signal raised.
public enum AccessOutcome: Hashable, Sendable, CustomStringConvertible {
    case value(UInt8)
    case stored
    case signal(FaultError)

    /// Reads the helper's answer: `result V` (a load's byte; a store answers `result 0`) or
    /// `signal SIGNO CODE` (`siginfo`'s signal number and `si_code`).
    public init?(hostLine line: Substring, kind: MemoryAccess.Kind) {
        let parts = line.split(separator: " ")
        switch parts.first {
        case "result":
            guard parts.count == 2, let v = UInt8(parts[1]) else { return nil }
            self = kind == .load ? .value(v) : .stored
        case "signal":
            guard parts.count == 3, let signo = Int32(parts[1]), let code = Int32(parts[2]) else { return nil }
            switch (signo, code) {
            case (11, 1): self = .signal(.segvMapErr)   // SIGSEGV, SEGV_MAPERR
            case (11, 2): self = .signal(.segvAccErr)   // SIGSEGV, SEGV_ACCERR
            case (11, 4): self = .signal(.segvPkuErr)   // SIGSEGV, SEGV_PKUERR
            case (7, 2): self = .signal(.bus)           // SIGBUS, BUS_ADRERR
            default: return nil
            }
        default:
            return nil
        }
    }

    public var description: String {
        switch self {
        case .value(let v): return "0x" + String(v, radix: 16)
        case .stored: return "ok"
        case .signal(.segvMapErr): return "SIGSEGV {si_code=SEGV_MAPERR}"
        case .signal(.segvAccErr): return "SIGSEGV {si_code=SEGV_ACCERR}"
        case .signal(.segvPkuErr): return "SIGSEGV {si_code=SEGV_PKUERR}"
        case .signal(.bus): return "SIGBUS {si_code=BUS_ADRERR}"
        case .signal(.oom): return "out of memory (VM_FAULT_OOM)"
        }
    }
}
