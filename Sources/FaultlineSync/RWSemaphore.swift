import CFaultline
import Synchronization

/// `struct rw_semaphore` with Linux's semantics (kernel/locking/rwsem.c, 6.x):
///
/// - one count word: bit 0 `WRITER_LOCKED`, bit 1 `FLAG_WAITERS`, bit 2 `FLAG_HANDOFF`,
///   readers counted from bit 8;
/// - a FIFO wait list under a spinlock; once anybody waits, new readers take the slow path and
///   queue unless the lock is free of writers and not already reader-owned (reader lock
///   stealing), so a waiting writer stops a stream of new readers;
/// - a writer that has waited more than 4 ms (`RWSEM_WAIT_TIMEOUT`) sets `FLAG_HANDOFF`, after
///   which nobody but the first waiter may take the lock: no writer starvation;
/// - waking readers grants them the lock (the waker adds their bias); waking a writer only
///   makes it retry;
/// - writers spin optimistically (bounded) before they sleep; sleeping is a futex per waiter.
///
/// All state is atomic and every method is non-mutating, so the semaphore can live in
/// manually allocated memory (a VMA) or as a `let` in a class.
public struct RWSemaphore: ~Copyable, @unchecked Sendable {
    @usableFromInline static var writerLocked: Int { 1 << 0 }
    @usableFromInline static var flagWaiters: Int { 1 << 1 }
    @usableFromInline static var flagHandoff: Int { 1 << 2 }
    @usableFromInline static var readerShift: Int { 8 }
    @usableFromInline static var readerBias: Int { 1 << 8 }
    @usableFromInline static var readerMask: Int { ~(readerBias - 1) }
    @usableFromInline static var lockMask: Int { writerLocked | readerMask }
    @usableFromInline static var readFailedMask: Int { writerLocked | flagWaiters | flagHandoff }
    /// `RWSEM_WAIT_TIMEOUT`: 4 ms.
    @usableFromInline static var handoffTimeoutNs: UInt64 { 4_000_000 }
    /// `MAX_READERS_WAKEUP`.
    @usableFromInline static var maxReadersWakeup: Int { 256 }

    @usableFromInline let count: Atomic<Int>
    @usableFromInline let waitLock: SpinLock
    @usableFromInline let head: Atomic<UnsafeMutablePointer<RWSemWaiter>?>
    @usableFromInline let tail: Atomic<UnsafeMutablePointer<RWSemWaiter>?>
    /// Where acquisitions and waits are counted (`RWSemStat` order), or nil for no statistics.
    @usableFromInline let stats: CounterSlots?
    /// Pause iterations a writer spins on a writer owner before it queues (standing in for
    /// Linux's "while the owner runs on a CPU").
    @usableFromInline let spinLimit: Int

    /// - Parameters:
    ///   - stats: counters of width ≥ `RWSemStat.width` to record into; nil costs one branch.
    ///   - spinLimit: pause iterations of optimistic spinning before a writer sleeps.
    public init(stats: PerThreadCounters? = nil, spinLimit: Int = 512) {
        precondition(stats == nil || stats!.width >= RWSemStat.width)
        self.init(slots: stats?.slots, spinLimit: spinLimit)
    }

    /// As `init(stats:spinLimit:)`, with the counters' slots (whose owner outlives the lock):
    /// a lock made per object (a VMA's) then takes no reference to the shared counters object.
    @inlinable
    public init(slots: CounterSlots?, spinLimit: Int = 512) {
        count = Atomic(0)
        waitLock = SpinLock()
        head = Atomic(nil)
        tail = Atomic(nil)
        stats = slots
        self.spinLimit = spinLimit
    }

    // MARK: Readers

    /// `down_read()`.
    @inlinable @inline(__always)
    public func lockRead() {
        let c = count.wrappingAdd(Self.readerBias, ordering: .acquiring).newValue
        if _fastPath(c & Self.readFailedMask == 0) {
            stats?.add(RWSemStat.readAcquired.rawValue)
            return
        }
        lockReadSlow(c)
    }

    /// `down_read_trylock()`.
    @inlinable @inline(__always)
    public func tryLockRead() -> Bool {
        var c = count.load(ordering: .relaxed)
        while c & Self.readFailedMask == 0 {
            let r = count.weakCompareExchange(expected: c, desired: c &+ Self.readerBias,
                                              successOrdering: .acquiring, failureOrdering: .relaxed)
            if r.exchanged {
                stats?.add(RWSemStat.readAcquired.rawValue)
                return true
            }
            c = r.original
        }
        return false
    }

    /// `up_read()`.
    @inlinable @inline(__always)
    public func unlockRead() {
        let c = count.wrappingSubtract(Self.readerBias, ordering: .releasing).newValue
        if _slowPath(c & (Self.lockMask | Self.flagWaiters) == Self.flagWaiters) { wake() }
    }

    // MARK: Writers

    /// `down_write()`.
    @inlinable @inline(__always)
    public func lockWrite() {
        if _fastPath(count.compareExchange(expected: 0, desired: Self.writerLocked, ordering: .acquiring).exchanged) {
            stats?.add(RWSemStat.writeAcquired.rawValue)
            return
        }
        lockWriteSlow()
    }

    /// `down_write_trylock()`.
    @inlinable @inline(__always)
    public func tryLockWrite() -> Bool {
        if count.compareExchange(expected: 0, desired: Self.writerLocked, ordering: .acquiring).exchanged {
            stats?.add(RWSemStat.writeAcquired.rawValue)
            return true
        }
        return false
    }

    /// `up_write()`.
    @inlinable @inline(__always)
    public func unlockWrite() {
        let c = count.wrappingSubtract(Self.writerLocked, ordering: .releasing).newValue
        if _slowPath(c & Self.flagWaiters != 0) { wake() }
    }

    /// `downgrade_write()`: turns the caller's write lock into a read lock without a window in
    /// which another writer could get in; readers queued at the front are let in with it.
    @inlinable
    public func downgradeWrite() {
        let c = count.wrappingAdd(Self.readerBias &- Self.writerLocked, ordering: .releasing).newValue
        if c & Self.flagWaiters != 0 { downgradeWake() }
    }

    // MARK: Snapshots (racy; for assertions and tests)

    /// `rwsem_is_locked()`.
    public var isLocked: Bool { count.load(ordering: .relaxed) & Self.lockMask != 0 }
    /// Whether a writer holds it.
    public var isWriteLocked: Bool { count.load(ordering: .relaxed) & Self.writerLocked != 0 }
    /// Readers holding it (including readers counted by a writer's failed attempt).
    public var readerCount: Int { count.load(ordering: .relaxed) >> Self.readerShift }
    /// Whether anyone is queued.
    public var hasWaiters: Bool { count.load(ordering: .relaxed) & Self.flagWaiters != 0 }
}

/// Which `PerThreadCounters` column an `RWSemaphore` records into.
public enum RWSemStat: Int, CaseIterable, Sendable {
    case readAcquired, writeAcquired, readContended, writeContended, readWaitNs, writeWaitNs
    public static let width = 6
}

/// `struct rwsem_waiter`, on the waiting thread's stack. `next`/`prev`/`handoffSet` are guarded
/// by the wait lock; `flag` is the futex word the waker sets.
@usableFromInline
struct RWSemWaiter {
    var next: UnsafeMutablePointer<RWSemWaiter>?
    var prev: UnsafeMutablePointer<RWSemWaiter>?
    let flag: UnsafeMutablePointer<Atomic<UInt32>>
    let isWriter: Bool
    var handoffSet: Bool
    let startNs: UInt64
}

/// `enum rwsem_wake_type`.
@usableFromInline
enum RWSemWakeType {
    /// Wake whatever is at the front.
    case any
    /// Wake readers only.
    case readers
    /// The caller already owns the lock for read.
    case readOwned
}

/// `DEFINE_WAKE_Q`: futex words to poke once the wait lock is dropped. Flags are set under the
/// wait lock (so a waiter can never see a wake meant for an earlier wait); only the syscall is
/// deferred, and a wake that lands on a stale address is a harmless spurious wake-up.
@usableFromInline
struct WakeQueue {
    let slots: UnsafeMutablePointer<UnsafeMutablePointer<UInt32>>
    var count = 0

    mutating func add(_ w: UnsafeMutablePointer<RWSemWaiter>) {
        // Read the waiter before granting: once the flag is set it may return and reuse the
        // stack its waiter record lives on.
        let flag = w.pointee.flag
        slots[count] = futexAddress(flag)
        count += 1
        flag.pointee.store(1, ordering: .releasing)
    }

    /// `wake_up_q()`.
    mutating func deliver() {
        for i in 0..<count { _ = fl_futex_wake(slots[i], 1) }
        count = 0
    }
}

@inline(__always)
func withWakeQueue<R>(_ body: (inout WakeQueue) -> R) -> R {
    withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt32>.self, capacity: RWSemaphore.maxReadersWakeup + 2) { buf in
        var q = WakeQueue(slots: buf.baseAddress!)
        let r = body(&q)
        q.deliver()
        return r
    }
}

@inline(__always)
func withWaiter<R>(isWriter: Bool, _ body: (UnsafeMutablePointer<RWSemWaiter>) -> R) -> R {
    withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { raw in
        let flag = raw.baseAddress!.bindMemory(to: Atomic<UInt32>.self, capacity: 1)
        flag.initialize(to: Atomic(0))
        let w = (raw.baseAddress! + 16).bindMemory(to: RWSemWaiter.self, capacity: 1)
        w.initialize(to: RWSemWaiter(next: nil, prev: nil, flag: flag, isWriter: isWriter,
                                     handoffSet: false, startNs: fl_now_ns()))
        return body(w)
    }
}

extension RWSemaphore {
    // MARK: Wait list (wait lock held)

    func enqueue(_ w: UnsafeMutablePointer<RWSemWaiter>) {
        let t = tail.load(ordering: .relaxed)
        w.pointee.prev = t
        w.pointee.next = nil
        if let t { t.pointee.next = w } else { head.store(w, ordering: .relaxed) }
        tail.store(w, ordering: .relaxed)
    }

    func remove(_ w: UnsafeMutablePointer<RWSemWaiter>) {
        if let p = w.pointee.prev { p.pointee.next = w.pointee.next } else { head.store(w.pointee.next, ordering: .relaxed) }
        if let n = w.pointee.next { n.pointee.prev = w.pointee.prev } else { tail.store(w.pointee.prev, ordering: .relaxed) }
        w.pointee.next = nil
        w.pointee.prev = nil
    }

    var listIsSingular: Bool {
        let h = head.load(ordering: .relaxed)
        return h != nil && h == tail.load(ordering: .relaxed)
    }

    /// `rwsem_mark_wake()`.
    func markWake(_ type: RWSemWakeType, _ q: inout WakeQueue) {
        guard let first = head.load(ordering: .relaxed) else { return }
        if first.pointee.isWriter {
            // A writer is woken to retry; it takes the lock itself (it stays queued until then).
            if type == .any { q.add(first) }
            return
        }
        var adjustment = 0
        if type != .readOwned {
            // Take a reader bias first so that a writer cannot steal the lock under us.
            adjustment = Self.readerBias
            let old = count.wrappingAdd(adjustment, ordering: .acquiring).oldValue
            if old & Self.writerLocked != 0 {
                // A writer got in: back out; a reader that waited too long asks for hand-off.
                if fl_now_ns() &- first.pointee.startNs > Self.handoffTimeoutNs {
                    if old & Self.flagHandoff == 0 { adjustment -= Self.flagHandoff }
                    first.pointee.handoffSet = true
                }
                count.wrappingSubtract(adjustment, ordering: .relaxed)
                return
            }
        }
        // Grant the read lock to the readers in the queue, in order, skipping writers.
        var woken = 0
        var cur: UnsafeMutablePointer<RWSemWaiter>? = first
        while let w = cur, woken < Self.maxReadersWakeup {
            cur = w.pointee.next
            if w.pointee.isWriter { continue }
            remove(w)
            q.add(w)
            woken += 1
        }
        adjustment = woken &* Self.readerBias &- adjustment
        if head.load(ordering: .relaxed) == nil { adjustment -= Self.flagWaiters }
        // A reader has been woken, so writers no longer need to be forced to hand off.
        if woken > 0 && count.load(ordering: .relaxed) & Self.flagHandoff != 0 { adjustment -= Self.flagHandoff }
        if adjustment != 0 { count.wrappingAdd(adjustment, ordering: .relaxed) }
    }

    /// `rwsem_wake()`.
    @usableFromInline @inline(never)
    func wake() {
        withWakeQueue { q in
            waitLock.lock()
            if head.load(ordering: .relaxed) != nil { markWake(.any, &q) }
            waitLock.unlock()
        }
    }

    @usableFromInline @inline(never)
    func downgradeWake() {
        withWakeQueue { q in
            waitLock.lock()
            if head.load(ordering: .relaxed) != nil { markWake(.readOwned, &q) }
            waitLock.unlock()
        }
    }

    // MARK: Slow paths

    /// `rwsem_down_read_slowpath()`; `c` is the count after our failed fast-path add.
    @usableFromInline @inline(never)
    func lockReadSlow(_ c: Int) {
        let t0 = fl_now_ns()
        let rcnt = c >> Self.readerShift
        // Don't steal when other readers very likely own it: that would starve a queued writer.
        let readerOwned = rcnt > 1 && c & Self.writerLocked == 0
        if !readerOwned && c & (Self.writerLocked | Self.flagHandoff) == 0 {
            // Reader optimistic lock stealing; the first such reader lets queued readers in too.
            if rcnt == 1 && c & Self.flagWaiters != 0 {
                withWakeQueue { q in
                    waitLock.lock()
                    if head.load(ordering: .relaxed) != nil { markWake(.readOwned, &q) }
                    waitLock.unlock()
                }
            }
            stats?.add(RWSemStat.readAcquired.rawValue)
            return
        }
        let acquiredWithoutSleep: Bool = withWaiter(isWriter: false) { w in
            withWakeQueue { q in
                var adjustment = -Self.readerBias
                waitLock.lock()
                if head.load(ordering: .relaxed) == nil {
                    // Empty queue and no writer: our bias already stands, the lock is ours.
                    if count.load(ordering: .acquiring) & Self.writerLocked == 0 {
                        waitLock.unlock()
                        return true
                    }
                    adjustment += Self.flagWaiters
                }
                enqueue(w)
                let now = count.wrappingAdd(adjustment, ordering: .acquiring).newValue
                // No active lock: wake the front. No writer and we are first: wake ourselves.
                if now & Self.lockMask == 0
                    || (now & Self.writerLocked == 0 && adjustment & Self.flagWaiters != 0) {
                    markWake(.any, &q)
                }
                waitLock.unlock()
                q.deliver()
                _ = waitWhileZero(w.pointee.flag, spins: 64)
                return false
            }
        }
        if let s = stats {
            s.add(RWSemStat.readAcquired.rawValue)
            if !acquiredWithoutSleep {
                s.add(RWSemStat.readContended.rawValue)
                s.add(RWSemStat.readWaitNs.rawValue, fl_now_ns() &- t0)
            }
        }
    }

    /// `rwsem_try_write_lock_unqueued()`.
    @inline(__always)
    func tryWriteLockUnqueued() -> Bool {
        var c = count.load(ordering: .relaxed)
        while c & (Self.lockMask | Self.flagHandoff) == 0 {
            let r = count.weakCompareExchange(expected: c, desired: c | Self.writerLocked,
                                              successOrdering: .acquiring, failureOrdering: .relaxed)
            if r.exchanged { return true }
            c = r.original
        }
        return false
    }

    /// `rwsem_optimistic_spin()`: the writer tries the lock each time it looks free, with one
    /// pause between looks (`rwsem_spin_on_owner()`'s `cpu_relax()`), so it sees a release
    /// within a pause. Linux spins on a writer owner for as long as that owner runs on a CPU,
    /// which the model cannot see: `spinLimit` pauses stand in for it. On a reader-owned lock
    /// it spins for `rwsem_rspin_threshold()`: (10 + readers/2) µs, at most 25 µs, the clock
    /// read every 16 pauses.
    func optimisticSpinWrite() -> Bool {
        var writerSpins = 0
        var loop = 0
        var readerDeadline: UInt64 = 0
        while true {
            if tryWriteLockUnqueued() { return true }
            let c = count.load(ordering: .relaxed)
            if c & Self.writerLocked == 0 && c & Self.readerMask != 0 {
                if readerDeadline == 0 {
                    readerDeadline = fl_now_ns() &+ Self.rspinThresholdNs(readers: c >> Self.readerShift)
                    loop = 0
                } else {
                    loop &+= 1
                    if loop & 15 == 0 && fl_now_ns() > readerDeadline { return false }
                }
            } else {
                readerDeadline = 0
                writerSpins &+= 1
                if writerSpins > spinLimit { return false }
            }
            fl_cpu_relax()
        }
    }

    /// `rwsem_rspin_threshold()`: how long a writer spins on a lock `readers` readers hold
    /// before it queues, in ns: (10 + readers/2) µs, at most 25 µs.
    @inline(__always)
    public static func rspinThresholdNs(readers: Int) -> UInt64 { UInt64(20 + min(max(readers, 0), 30)) * 1_000 / 2 }

    /// `rwsem_try_write_lock()`, wait lock held.
    func tryWriteLock(_ w: UnsafeMutablePointer<RWSemWaiter>) -> Bool {
        let first = head.load(ordering: .relaxed)!
        var c = count.load(ordering: .relaxed)
        var new = 0
        while true {
            let hasHandoff = c & Self.flagHandoff != 0
            // Honour hand-off only when the first waiter set it and we are not it.
            if hasHandoff && first.pointee.handoffSet && first != w { return false }
            new = c
            if c & Self.lockMask != 0 {
                // Still held: only a waiter that has waited too long may ask for hand-off.
                if hasHandoff || fl_now_ns() &- w.pointee.startNs <= Self.handoffTimeoutNs { return false }
                new |= Self.flagHandoff
            } else {
                new |= Self.writerLocked
                new &= ~Self.flagHandoff
                if listIsSingular { new &= ~Self.flagWaiters }
            }
            let r = count.weakCompareExchange(expected: c, desired: new,
                                              successOrdering: .acquiring, failureOrdering: .relaxed)
            if r.exchanged { break }
            c = r.original
        }
        if new & Self.flagHandoff != 0 {
            first.pointee.handoffSet = true
            return false
        }
        remove(w)
        return true
    }

    /// `rwsem_down_write_slowpath()`.
    @usableFromInline @inline(never)
    func lockWriteSlow() {
        let t0 = fl_now_ns()
        if optimisticSpinWrite() {
            if let s = stats {
                s.add(RWSemStat.writeAcquired.rawValue)
                s.add(RWSemStat.writeContended.rawValue)
                s.add(RWSemStat.writeWaitNs.rawValue, fl_now_ns() &- t0)
            }
            return
        }
        withWaiter(isWriter: true) { w in
            withWakeQueue { q in
                waitLock.lock()
                let wasEmpty = head.load(ordering: .relaxed) == nil
                enqueue(w)
                if wasEmpty {
                    count.bitwiseOr(Self.flagWaiters, ordering: .relaxed)
                } else {
                    // `rwsem_cond_wake_waiter()`: if no writer holds it, let the front in.
                    let c = count.load(ordering: .relaxed)
                    if c & Self.writerLocked == 0 {
                        markWake(c & Self.readerMask != 0 ? .readers : .any, &q)
                    }
                }
                while !tryWriteLock(w) {
                    // `handoffSet` is written by other waiters under the wait lock: read it here.
                    let spins = w.pointee.handoffSet ? 4096 : 64
                    waitLock.unlock()
                    q.deliver()
                    _ = waitWhileZero(w.pointee.flag, spins: spins)
                    waitLock.lock()
                    w.pointee.flag.pointee.store(0, ordering: .relaxed)
                }
                waitLock.unlock()
            }
        }
        if let s = stats {
            s.add(RWSemStat.writeAcquired.rawValue)
            s.add(RWSemStat.writeContended.rawValue)
            s.add(RWSemStat.writeWaitNs.rawValue, fl_now_ns() &- t0)
        }
    }
}
