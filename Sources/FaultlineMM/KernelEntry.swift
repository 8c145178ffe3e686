import CFaultline

/// What crossing from user space into the kernel costs the model: `asm_exc_page_fault` for a
/// fault, `entry_SYSCALL_64` for a call, and the return to user space after either. The model
/// runs in the caller's own context, where a fault or call is a function call; Linux pays an
/// exception or system-call entry and exit (on a machine with mitigations — PTI's CR3
/// switches, retpolines, buffer clearing on exit — hundreds of nanoseconds: on the 2-vCPU
/// box, `getppid` 166–176 ns, a read fault that maps the zero page 633–723 ns). That work is
/// per CPU: it dilutes whatever the threads share, and without it the model weighs shared
/// costs (memory bandwidth for zeroing, the pool's and LRU's locks) several times as heavily
/// as the host does.
public enum KernelEntry: String, Sendable, CaseIterable {
    /// No crossing: a fault or call costs only the model's own work.
    case none
    /// Each fault and each memory call makes one real round trip into the host kernel (a
    /// system call that does nothing): the crossing costs what it costs on this machine,
    /// measured by doing it, not a delay. Reading maps is not charged (the model reads the
    /// whole text in one pass, the host in read()s of 4 KiB).
    case syscall
    /// As `syscall` for memory calls, but each fault enters as the host's does, by a
    /// page-fault exception (`asm_exc_page_fault`): a call into the vsyscall page, which in
    /// the kernel's default execute-only mode faults, and the page-fault handler emulates it
    /// before any memory-management work (`emulate_vsyscall()`). On the 2-vCPU box: 316–326
    /// ns against `getppid`'s 189–209. Where the vsyscall page is not execute-only
    /// (`vsyscall=none` or `emulate`, or not x86-64), faults cross as system calls and
    /// `exceptionAvailable` says so.
    case exception

    /// Whether this machine lets a fault's crossing be a real page-fault exception.
    public static var exceptionAvailable: Bool { exceptionUsable }

    /// The crossing this mode makes on this machine: `.exception` without an execute-only
    /// vsyscall page crosses as `.syscall`, and a cell records that rather than what was asked.
    public var effective: KernelEntry { self == .exception && !Self.exceptionUsable ? .syscall : self }

    /// Makes a memory call's crossing, if any.
    @inlinable @inline(__always)
    public func enter() {
        if self != .none { _ = fl_kernel_entry() }
    }

    /// Makes a fault's crossing, if any.
    @inlinable @inline(__always)
    public func enterFault() {
        switch self {
        case .none: break
        case .syscall: _ = fl_kernel_entry()
        case .exception: Self.enterByException()
        }
    }

    /// Out of line: the availability check runs once per process.
    @usableFromInline @inline(never)
    static func enterByException() {
        if exceptionUsable { _ = fl_exception_entry() } else { _ = fl_kernel_entry() }
    }

    @usableFromInline static let exceptionUsable: Bool = fl_exception_entry_available() != 0

    /// Crossings made by the calling thread so far (for tests and reports).
    public static var enteredOnThisThread: UInt { fl_kernel_entries() }
}
