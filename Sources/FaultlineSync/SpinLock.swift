import CFaultline
import Synchronization

/// `spinlock_t`: test-and-test-and-set with exponential backoff.
///
/// User space cannot disable preemption, so a waiter that has spun for long yields the CPU:
/// on a 2-core box a spinner would otherwise burn the time slice of a preempted holder.
public struct SpinLock: ~Copyable, @unchecked Sendable {
    @usableFromInline let word: Atomic<UInt32>

    public init() { word = Atomic(0) }

    /// `spin_lock()`.
    @inlinable @inline(__always)
    public func lock() {
        if word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
        lockSlow()
    }

    @usableFromInline @inline(never)
    func lockSlow() {
        var backoff = 1
        var rounds = 0
        while true {
            while word.load(ordering: .relaxed) != 0 {
                var i = 0
                while i < backoff { fl_cpu_relax(); i += 1 }
                if backoff < 128 { backoff &<<= 1 }
                rounds += 1
                if rounds >= 64 { fl_yield(); rounds = 32 }
            }
            if word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
        }
    }

    /// `spin_trylock()`.
    @inlinable @inline(__always)
    public func tryLock() -> Bool {
        word.load(ordering: .relaxed) == 0
            && word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }

    /// `spin_unlock()`.
    @inlinable @inline(__always)
    public func unlock() { word.store(0, ordering: .releasing) }

    /// `spin_is_locked()`: a racy snapshot, for assertions.
    @inlinable
    public var isLocked: Bool { word.load(ordering: .relaxed) != 0 }

    @inlinable @inline(__always)
    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}
