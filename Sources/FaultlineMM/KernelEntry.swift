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

    /// Makes the crossing, if any.
    @inlinable @inline(__always)
    public func enter() {
        if self == .syscall { _ = fl_kernel_entry() }
    }

    /// Crossings made by the calling thread so far (`.syscall` only; for tests and reports).
    public static var enteredOnThisThread: UInt { fl_kernel_entries() }
}
