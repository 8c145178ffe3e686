import CFaultline
import Synchronization

/// User-space RCU, the membarrier flavour of liburcu (`urcu-memb`), with a 64-bit grace-period
/// counter so a single scan suffices.
///
/// Read side (`rcu_read_lock` / `rcu_read_unlock`): the thread writes only its own padded slot:
/// the current grace-period number, odd-tagged, on entry; zero (a release store) on exit. No
/// fence: `synchronize()` issues `membarrier(PRIVATE_EXPEDITED)`, which runs a full barrier on
/// every CPU executing this process, so a reader's entry store is visible before the writer
/// scans. Where membarrier is missing the reader falls back to a full fence.
///
/// Update side: `synchronize()` bumps the counter and waits until every slot is idle or shows a
/// number at least the new one (a reader that began after the bump cannot hold an old pointer).
/// `callRCU` queues a callback on the caller's slot; a reclaimer thread batches them, waits for
/// one grace period per batch and runs them (`call_rcu` + the RCU callback kthread).
///
/// Rules: read-side sections may nest, must not span an `await`, and must not call
/// `synchronize()` or `barrier()`.
public final class RCU: @unchecked Sendable {
    /// The process-wide domain (the kernel has one RCU).
    public static let shared = RCU()

    /// The read-side view, for hot paths that must not touch a class reference.
    public let readSide: RCUReadSide

    @usableFromInline let slotBase: UnsafeMutableRawPointer
    @usableFromInline let slotStride: Int
    let gp: UnsafeMutablePointer<Atomic<UInt64>>
    let gpLock = Mutex<Void>(())
    let reclaimLock = Mutex<Void>(())
    /// Reclaimer passes so far (written under `reclaimLock`; atomic because ThreadSanitizer
    /// does not see `Mutex` order accesses).
    let passes = Atomic<UInt64>(0)
    /// Callbacks queued per slot before the reclaimer is kicked.
    let batchSize: Int
    /// Queued callbacks per slot past which the reclaimer is kicked at once and `throttle()`
    /// makes the queueing thread reclaim synchronously.
    let backPressure: Int
    /// Test hook: when set, `synchronize()` does not wait for readers. Only for proving that the
    /// RCU tests catch a broken grace period.
    let _brokenNoWait: Bool

    let reclaimer: ReclaimerState

    public convenience init(batchSize: Int = 512, backPressure: Int = 65_536) {
        self.init(batchSize: batchSize, backPressure: backPressure, brokenNoWait: false)
    }

    /// A domain whose grace periods do not wait for readers. Broken on purpose: it exists so
    /// that tests can prove they catch a reader that outlives a grace period.
    @_spi(Testing) public static func _brokenForTesting() -> RCU {
        RCU(batchSize: 512, backPressure: 65_536, brokenNoWait: true)
    }

    init(batchSize: Int, backPressure: Int, brokenNoWait: Bool) {
        self.batchSize = batchSize
        self.backPressure = backPressure
        _brokenNoWait = brokenNoWait
        let (base, stride) = allocatePadded(RCUSlot.self, count: Int(FL_MAX_THREADS))
        slotBase = base
        slotStride = stride
        for i in 0..<Int(FL_MAX_THREADS) {
            (base + i * stride).bindMemory(to: RCUSlot.self, capacity: 1).initialize(to: RCUSlot())
        }
        let gpRaw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        gp = gpRaw.bindMemory(to: Atomic<UInt64>.self, capacity: 1)
        gp.initialize(to: Atomic(1))
        let fence = RCU.membarrierAvailable == false
        readSide = RCUReadSide(slots: base, stride: stride, gp: gp, needsFence: fence)
        reclaimer = ReclaimerState()
    }

    deinit {
        reclaimer.stopAndJoin()
        drain()
        UnsafeMutableRawPointer(gp).deallocate()
        slotBase.deallocate()
    }

    /// Registered once per process; false where the kernel lacks `membarrier`.
    static let membarrierAvailable: Bool = fl_membarrier_register() == 0

    /// Whether readers pay a full fence (no membarrier on this kernel).
    public var readersUseFence: Bool { readSide.needsFence }

    @inlinable
    func slot(_ t: Int) -> UnsafeMutablePointer<RCUSlot> {
        (slotBase + t &* slotStride).assumingMemoryBound(to: RCUSlot.self)
    }

    /// `rcu_read_lock()`.
    @inlinable @inline(__always)
    public func readLock() { readSide.readLock() }

    /// `rcu_read_unlock()`.
    @inlinable @inline(__always)
    public func readUnlock() { readSide.readUnlock() }

    /// Runs `body` inside a read-side critical section.
    @inlinable
    public func withReadLock<R>(_ body: () throws -> R) rethrows -> R {
        readSide.readLock()
        defer { readSide.readUnlock() }
        return try body()
    }

    /// Whether the calling thread is inside a read-side section (`rcu_read_lock_held()`).
    public var isReadLockHeld: Bool {
        slot(currentThreadIndex()).pointee.nesting.load(ordering: .relaxed) != 0
    }

    /// `synchronize_rcu()`: returns once every read-side section that began before the call
    /// has ended.
    public func synchronize() {
        precondition(!isReadLockHeld, "synchronize() inside an RCU read-side section deadlocks")
        gpLock.withLock { _ in
            fullBarrierAllThreads()
            let target = gp.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
            if _brokenNoWait { return }
            for t in 0..<threadIndexHighWater() {
                let s = slot(t)
                var spins = 0
                while true {
                    let c = s.pointee.ctr.load(ordering: .acquiring)
                    if c & 1 == 0 || c >> 1 >= target { break }
                    spins += 1
                    if spins < 128 { fl_cpu_relax() } else if spins < 2048 { fl_yield() } else { fl_sleep_ns(20_000) }
                }
            }
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
    }

    func fullBarrierAllThreads() {
        if readSide.needsFence || fl_membarrier() != 0 {
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
    }

    /// Grace periods completed so far (each `synchronize()` is one).
    public var gracePeriods: UInt64 { gp.pointee.load(ordering: .relaxed) - 1 }
}

/// The per-thread reader record, alone on its padded line.
@usableFromInline
struct RCUSlot: ~Copyable {
    /// 0 when outside a read-side section; `(grace period << 1) | 1` inside one.
    @usableFromInline let ctr: Atomic<UInt64>
    /// Read-side nesting depth; written only by the owning thread.
    @usableFromInline let nesting: Atomic<UInt32>
    /// Deferred callbacks queued by the owning thread (pushed by it, taken by the reclaimer).
    let callbacks: Atomic<UnsafeMutablePointer<RCUHead>?>
    /// Callbacks the owning thread queued that have not run yet (whoever runs them takes them off).
    let pending: Atomic<Int>
    /// Set by `call_rcu` when this thread's queue reached a batch: `throttle()` kicks the
    /// reclaimer (written by the owning thread only).
    let kickWanted: Atomic<Bool>
    /// Callbacks whose grace period is over, handed back for the owning thread to run at its
    /// return to user space (`rcu_core()` runs a CPU's own ready callbacks, on that CPU).
    let done: Atomic<UnsafeMutablePointer<RCUHead>?>
    /// The reclaimer pass that found `done` empty and filled it (reclaimer-only): a list not
    /// taken a pass later is run by the reclaimer (the owner is blocked or gone).
    let doneSince: Atomic<UInt64>
    /// Whether the owning thread is running its `done` list now (`barrier()` waits for it).
    let invoking: Atomic<Bool>
    /// Whether the owning thread comes back through `throttle()` and so runs its own callbacks.
    let runsOwn: Atomic<Bool>
    /// Taken by the current reclaimer pass and waiting for its grace period (used under
    /// `reclaimLock` only; atomic for ThreadSanitizer's sake, as `passes`).
    let waiting: Atomic<UnsafeMutablePointer<RCUHead>?>

    init() {
        ctr = Atomic(0)
        nesting = Atomic(0)
        callbacks = Atomic(nil)
        pending = Atomic(0)
        kickWanted = Atomic(false)
        done = Atomic(nil)
        doneSince = Atomic(0)
        invoking = Atomic(false)
        runsOwn = Atomic(false)
        waiting = Atomic(nil)
    }
}

/// The read side of an `RCU` domain as a plain value: raw pointers, no reference counting.
@frozen
public struct RCUReadSide: @unchecked Sendable {
    @usableFromInline let slots: UnsafeMutableRawPointer
    @usableFromInline let stride: Int
    @usableFromInline let gp: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let needsFence: Bool

    @usableFromInline
    init(slots: UnsafeMutableRawPointer, stride: Int, gp: UnsafeMutablePointer<Atomic<UInt64>>, needsFence: Bool) {
        self.slots = slots
        self.stride = stride
        self.gp = gp
        self.needsFence = needsFence
    }

    /// `rcu_read_lock()`.
    @inlinable @inline(__always)
    public func readLock() {
        let s = (slots + currentThreadIndex() &* stride).assumingMemoryBound(to: RCUSlot.self)
        let n = s.pointee.nesting.load(ordering: .relaxed)
        s.pointee.nesting.store(n &+ 1, ordering: .relaxed)
        if n == 0 {
            let g = gp.pointee.load(ordering: .relaxed)
            s.pointee.ctr.store(g &<< 1 | 1, ordering: .relaxed)
            if needsFence {
                atomicMemoryFence(ordering: .sequentiallyConsistent)
            } else {
                fl_compiler_barrier()
            }
        }
    }

    /// `rcu_read_unlock()`.
    @inlinable @inline(__always)
    public func readUnlock() {
        let s = (slots + currentThreadIndex() &* stride).assumingMemoryBound(to: RCUSlot.self)
        let n = s.pointee.nesting.load(ordering: .relaxed) &- 1
        s.pointee.nesting.store(n, ordering: .relaxed)
        if n == 0 { s.pointee.ctr.store(0, ordering: .releasing) }
    }
}
