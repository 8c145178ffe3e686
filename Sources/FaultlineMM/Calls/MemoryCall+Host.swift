import CFaultline

extension MemoryCall {
    /// The x86-64 system call number and argument registers, as a program would load them;
    /// nil for the process calls (their effect is a new task or a new program, not a result).
    @inlinable
    public var registers: SyscallRegisters? {
        switch self {
        case let .mmap(a, l, p, f, fd, o):
            return SyscallRegisters(9, a, l, UInt64(p.rawValue), UInt64(f.rawValue), UInt64(bitPattern: Int64(fd.number)), o, count: 6)
        case let .mprotect(a, l, p): return SyscallRegisters(10, a, l, UInt64(p.rawValue), count: 3)
        case let .munmap(a, l): return SyscallRegisters(11, a, l, count: 2)
        case let .brk(a): return SyscallRegisters(12, a, count: 1)
        case let .mremap(a, o, n, f, na): return SyscallRegisters(25, a, o, n, UInt64(f.rawValue), na, count: 5)
        case let .madvise(a, l, adv): return SyscallRegisters(28, a, l, UInt64(UInt32(bitPattern: adv)), count: 3)
        case let .mseal(a, l, f): return SyscallRegisters(462, a, l, f, count: 3)
        case let .ftruncate(fd, l): return SyscallRegisters(77, UInt64(bitPattern: Int64(fd.number)), l, count: 2)
        case let .mlock(a, l): return SyscallRegisters(149, a, l, count: 2)
        case let .munlock(a, l): return SyscallRegisters(150, a, l, count: 2)
        case let .mlockall(f): return SyscallRegisters(151, UInt64(f), count: 1)
        case .munlockall: return SyscallRegisters(152, count: 0)
        case let .mlock2(a, l, f): return SyscallRegisters(325, a, l, UInt64(f), count: 3)
        case .clone, .execve, .exit: return nil
        }
    }

    /// Runs the call on the host kernel, in this process (the workloads' host target). Process
    /// calls are ENOSYS here: forking or replacing a Swift process is the caller's business.
    @inlinable
    public func runOnHost() -> SyscallResult {
        guard let r = registers else { return SyscallResult(errno: .ENOSYS) }
        return SyscallResult(raw: fl_syscall6(r.number, r.a0, r.a1, r.a2, r.a3, r.a4, r.a5))
    }

    /// The line `faultline-host` (the differential tester's helper) reads: `syscall NR A0 … A5`,
    /// or `fork` (the helper forks and the sequence continues in the child).
    public var hostCommand: String {
        guard let r = registers else { return isFork ? "fork" : "unsupported \(name)" }
        return "syscall \(r.number)" + r.arguments.map { " \($0)" }.joined()
    }

    /// A clone that copies the address space.
    public var isFork: Bool {
        if case .clone(let f) = self { return !f.sharesVM }
        return false
    }
}

/// A system call as the CPU sees it: the number and up to six argument registers.
public struct SyscallRegisters: Hashable, Sendable {
    public var number: Int64
    public var a0, a1, a2, a3, a4, a5: UInt64
    /// How many arguments the call takes.
    public var count: Int

    @inlinable
    public init(_ number: Int64, _ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0, _ a3: UInt64 = 0,
                _ a4: UInt64 = 0, _ a5: UInt64 = 0, count: Int) {
        self.number = number
        (self.a0, self.a1, self.a2, self.a3, self.a4, self.a5) = (a0, a1, a2, a3, a4, a5)
        self.count = count
    }

    public var arguments: [UInt64] { Array([a0, a1, a2, a3, a4, a5].prefix(count)) }
}
