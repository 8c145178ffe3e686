import CFaultline
@_spi(Testing) import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import FaultlineTestSupport
import Testing

/// Eight-word nodes stamped with a generation; a reclaimed node is poisoned and recycled, so a
/// reader that still holds it sees poison or a changed stamp.
final class PoisonPool: @unchecked Sendable {
    static let poison: UInt64 = 0xDEAD_BEEF_DEAD_BEEF
    let current = Atomic<UnsafeMutablePointer<UInt64>?>(nil)
    let lock = SpinLock()
    var free: [UnsafeMutablePointer<UInt64>] = []
    let violations = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    var all: [UnsafeMutablePointer<UInt64>] = []

    func node(stamp: UInt64) -> UnsafeMutablePointer<UInt64> {
        let n: UnsafeMutablePointer<UInt64> = lock.withLock {
            if let p = free.popLast() { return p }
            let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 8)
            all.append(p)
            return p
        }
        for i in 0..<8 { n[i] = stamp }
        return n
    }

    func reclaim(_ n: UnsafeMutablePointer<UInt64>) {
        for i in 0..<8 { n[i] = PoisonPool.poison }
        lock.withLock { free.append(n) }
    }

    func read(_ rcu: RCU) {
        rcu.readLock()
        if let n = current.load(ordering: .acquiring) {
            let stamp = n[0]
            var ok = stamp != PoisonPool.poison
            for _ in 0..<3 {
                for i in 0..<8 where n[i] != stamp { ok = false }
                dwell(10)
            }
            if !ok { violations.wrappingAdd(1, ordering: .relaxed) }
        }
        rcu.readUnlock()
        reads.wrappingAdd(1, ordering: .relaxed)
    }

    deinit { for p in all { p.deallocate() } }
}

/// A callback that queues its successor until told to stop (or a deadline): steady traffic.
final class CallbackChain: @unchecked Sendable {
    let rcu: RCU
    let stop: UnsafeMutablePointer<Atomic<Int>>
    let deadline: UInt64
    init(rcu: RCU, stop: UnsafeMutablePointer<Atomic<Int>>, deadline: UInt64) {
        self.rcu = rcu
        self.stop = stop
        self.deadline = deadline
    }
    func step() {
        (stop + 1).pointee.wrappingAdd(1, ordering: .relaxed)
        guard stop.pointee.load(ordering: .acquiring) == 0 && monotonicNanoseconds() < deadline else { return }
        rcu.callRCU { self.step() }
    }
}

final class RCUBox: @unchecked Sendable {
    let rcu: RCU
    init(_ rcu: RCU) { self.rcu = rcu }
}

func rcuPoisonStress(_ rcu: RCU, deferred: Bool, seconds: Double) -> (reads: Int, violations: Int) {
    let pool = PoisonPool()
    pool.current.store(pool.node(stamp: 1), ordering: .releasing)
    let box = RCUBox(rcu)
    let stamp = Atomic<UInt64>(2)
    stress(threads: 3, seconds: seconds) { t, _ in
        if t == 0 {
            let n = pool.node(stamp: stamp.wrappingAdd(1, ordering: .relaxed).newValue)
            let old = pool.current.exchange(n, ordering: .acquiringAndReleasing)!
            if deferred {
                let o = Shared(old)
                box.rcu.callRCU { pool.reclaim(o.value) }
            } else {
                box.rcu.synchronize()
                pool.reclaim(old)
            }
        } else {
            for _ in 0..<16 { pool.read(box.rcu) }
        }
    }
    rcu.barrier()
    return (pool.reads.load(ordering: .relaxed), pool.violations.load(ordering: .relaxed))
}

@Suite("RCU")
struct RCUTests {
    @Test func synchronizeWaitsForAReaderInsideItsSection() {
        let rcu = RCUBox(RCU())
        let inside = DoneBox()
        let leaving = Atomic<Bool>(false)
        let th = Threads.spawn {
            rcu.rcu.readLock()
            inside.count.store(1, ordering: .releasing)
            fl_sleep_ns(150_000_000)
            leaving.store(true, ordering: .releasing)
            rcu.rcu.readUnlock()
        }
        while inside.count.load(ordering: .acquiring) == 0 { fl_sleep_ns(1_000_000) }
        rcu.rcu.synchronize()
        let v1 = leaving.load(ordering: .acquiring)
        #expect(v1, "synchronize returned while a reader was inside")
        Threads.join(th)
    }

    @Test func nestedSectionsEndAtTheOutermostUnlock() {
        let rcu = RCU()
        rcu.readLock()
        rcu.readLock()
        #expect(rcu.isReadLockHeld)
        rcu.readUnlock()
        #expect(rcu.isReadLockHeld)
        rcu.readUnlock()
        #expect(!rcu.isReadLockHeld)
        rcu.synchronize()
        #expect(rcu.gracePeriods == 1)
    }

    @Test func readersNeverSeeReclaimedMemoryWithSynchronize() {
        let r = rcuPoisonStress(RCU(), deferred: false, seconds: 1.0)
        #expect(r.reads > 1000)
        #expect(r.violations == 0)
    }

    @Test func readersNeverSeeReclaimedMemoryWithCallRCU() {
        let r = rcuPoisonStress(RCU(batchSize: 64), deferred: true, seconds: 1.0)
        #expect(r.reads > 1000)
        #expect(r.violations == 0)
    }

    @Test func barrierRunsEveryQueuedCallback() {
        let rcu = RCU(batchSize: 1_000_000)
        let ran = Atomic<Int>(0)
        let box = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        box.value.initialize(to: Atomic(0))
        defer { box.value.deallocate() }
        Threads.run(4) { _ in
            for _ in 0..<500 { rcu.callRCU { box.value.pointee.wrappingAdd(1, ordering: .relaxed) } }
        }
        rcu.barrier()
        #expect(box.value.pointee.load(ordering: .relaxed) == 2000)
        #expect(rcu.pendingCallbacks == 0)
        _ = ran
    }

    @Test func intrusiveHeadsAreFreedAfterAGracePeriod() {
        let rcu = RCU(batchSize: 8)
        let freed = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        freed.value.initialize(to: Atomic(0))
        defer { freed.value.deallocate() }
        for _ in 0..<100 {
            let h = UnsafeMutablePointer<RCUHead>.allocate(capacity: 1)
            h.initialize(to: RCUHead(context: UnsafeMutableRawPointer(freed.value)) { raw in
                let h = raw.assumingMemoryBound(to: RCUHead.self)
                h.pointee.context!.assumingMemoryBound(to: Atomic<Int>.self).pointee.wrappingAdd(1, ordering: .relaxed)
                h.deallocate()
            })
            rcu.callRCU(h)
        }
        rcu.barrier()
        #expect(freed.value.pointee.load(ordering: .relaxed) == 100)
        #expect(rcu.gracePeriods >= 1)
    }

    /// `rcu_barrier()` waits for the callbacks queued before it, not for an empty queue: under
    /// steady `call_rcu` traffic — here a callback that queues its successor, forever — it
    /// must return (it used to loop until a pass found nothing, which that never allows).
    @Test func barrierReturnsUnderSteadyCallbackTraffic() {
        let rcu = RCU(batchSize: 1_000_000)
        // [0] stop the chain, [1] links run, [2] the marker ran, [3] barrier returned,
        // [4] the marker had run when it returned.
        let w = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 5))
        for i in 0..<5 { (w.value + i).initialize(to: Atomic(0)) }
        defer { w.value.deallocate() }
        let chain = CallbackChain(rcu: rcu, stop: w.value, deadline: monotonicNanoseconds() + 10_000_000_000)
        chain.step()
        rcu.callRCU { w.value[2].store(1, ordering: .releasing) }
        let waiter = Threads.spawn {
            rcu.barrier()
            w.value[4].store(w.value[2].load(ordering: .acquiring), ordering: .relaxed)
            w.value[3].store(1, ordering: .releasing)
        }
        let giveUp = monotonicNanoseconds() + 5_000_000_000
        while w.value[3].load(ordering: .acquiring) == 0 && monotonicNanoseconds() < giveUp { fl_sleep_ns(1_000_000) }
        let returnedUnderTraffic = w.value[3].load(ordering: .acquiring) == 1
        w.value[0].store(1, ordering: .releasing)
        Threads.join(waiter)
        #expect(returnedUnderTraffic, "barrier() did not return within 5 s under steady call_rcu traffic")
        #expect(w.value[4].load(ordering: .relaxed) == 1, "barrier() returned before a callback queued before it ran")
        #expect(w.value[1].load(ordering: .relaxed) >= 1)
        rcu.barrier()
        rcu.barrier()
    }

    /// `call_rcu()` never waits for a grace period: its caller may hold a lock that a reader
    /// inside its section is waiting for (a range lock held across munmap's frees, a PTE
    /// lock). Past the back-pressure mark it used to run a barrier right there: a deadlock.
    @Test func callRCUNeverWaitsForAReader() {
        let rcu = RCU(batchSize: 4, backPressure: 8)
        // [0] reader inside, [1] "lock" released by the caller, [2] caller done.
        let w = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 3))
        for i in 0..<3 { (w.value + i).initialize(to: Atomic(0)) }
        defer { w.value.deallocate() }
        let deadline = monotonicNanoseconds() + 10_000_000_000
        let reader = Threads.spawn {
            rcu.readLock()
            w.value[0].store(1, ordering: .releasing)
            // Waits, inside its section, for what the caller holds.
            while w.value[1].load(ordering: .acquiring) == 0 && monotonicNanoseconds() < deadline { fl_sleep_ns(100_000) }
            rcu.readUnlock()
        }
        while w.value[0].load(ordering: .acquiring) == 0 { fl_sleep_ns(100_000) }
        let caller = Threads.spawn {
            for _ in 0..<64 { rcu.callRCU { } }
            w.value[2].store(1, ordering: .releasing)
            w.value[1].store(1, ordering: .releasing)
        }
        let giveUp = monotonicNanoseconds() + 5_000_000_000
        while w.value[2].load(ordering: .acquiring) == 0 && monotonicNanoseconds() < giveUp { fl_sleep_ns(1_000_000) }
        let callerFinished = w.value[2].load(ordering: .acquiring) == 1
        w.value[1].store(1, ordering: .releasing)
        Threads.join(caller)
        Threads.join(reader)
        #expect(callerFinished, "callRCU waited for a reader that was waiting for its caller")
        rcu.barrier()
    }

    /// `call_rcu()` wakes nobody: a wake is a system call, and on its way back the woken
    /// reclaimer preempted the caller with its locks held (mmap_lock, a VMA's write lock: a
    /// perf trace of seed-mix at two threads found 2,232 of 5,277 context switches there per
    /// second). A batch's kick waits for `throttle()`, the return to user space.
    @Test func callRCUWakesNobodyUntilTheReturnToUser() {
        let rcu = RCU(batchSize: 4, backPressure: 1_000)
        let kicks = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 3))
        for i in 0..<3 { (kicks.value + i).initialize(to: Atomic(0)) }
        defer { kicks.value.deallocate() }
        let t = Threads.spawn {
            let before = rcu._reclaimerKicks
            for _ in 0..<9 { rcu.callRCU { } }
            kicks.value[0].store(rcu._reclaimerKicks - before, ordering: .releasing)
            rcu.throttle()
            kicks.value[1].store(rcu._reclaimerKicks - before, ordering: .releasing)
            rcu.throttle()
            kicks.value[2].store(rcu._reclaimerKicks - before, ordering: .releasing)
        }
        Threads.join(t)
        #expect(kicks.value[0].load(ordering: .acquiring) == 0, "callRCU woke the reclaimer from inside the caller's section")
        #expect(kicks.value[1].load(ordering: .acquiring) == 1, "throttle() did not kick for the queued batch")
        #expect(kicks.value[2].load(ordering: .acquiring) == 1, "throttle() kicked again with no new batch")
        rcu.drain()
    }

    /// Callbacks run on the thread that queued them, at its return to user space, as Linux runs
    /// a CPU's ready callbacks in that CPU's softirq: a reclaimer on another CPU ran them for
    /// free while a one-thread cell had a spare CPU, and took a worker's CPU at two threads on
    /// two. A thread that never comes back through `throttle()` has its callbacks run by the
    /// reclaimer, a pass after their grace period.
    @Test func callbacksRunOnTheThreadThatQueuedThem() {
        let rcu = RCU(batchSize: 4, backPressure: 10_000)
        // [0] callbacks run, [1] ran elsewhere than the queueing thread, [2] the queueing thread.
        let w = Shared(UnsafeMutablePointer<Atomic<UInt>>.allocate(capacity: 3))
        for i in 0..<3 { (w.value + i).initialize(to: Atomic(0)) }
        defer { w.value.deallocate() }
        @Sendable func queue(_ n: Int) {
            let me = w.value[2].load(ordering: .acquiring)
            for _ in 0..<n {
                rcu.callRCU {
                    if UInt(pthread_self()) != me { w.value[1].wrappingAdd(1, ordering: .relaxed) }
                    w.value[0].wrappingAdd(1, ordering: .releasing)
                }
            }
        }
        let owner = Threads.spawn {
            w.value[2].store(UInt(pthread_self()), ordering: .releasing)
            rcu.throttle()
            queue(8)
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while w.value[0].load(ordering: .acquiring) < 8 && monotonicNanoseconds() < deadline {
                rcu.throttle()
                fl_sleep_ns(200_000)
            }
        }
        Threads.join(owner)
        #expect(w.value[0].load(ordering: .acquiring) == 8, "the owner's callbacks did not run")
        #expect(w.value[1].load(ordering: .acquiring) == 0, "\(w.value[1].load(ordering: .acquiring)) of the owner's callbacks ran on another thread")
        // A thread that never returns through throttle(): the reclaimer runs them.
        let silent = Threads.spawn {
            w.value[2].store(UInt(pthread_self()), ordering: .releasing)
            queue(8)
            rcu.expedite()
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while w.value[0].load(ordering: .acquiring) < 16 && monotonicNanoseconds() < deadline { fl_sleep_ns(200_000) }
        }
        Threads.join(silent)
        #expect(w.value[0].load(ordering: .acquiring) == 16, "a silent thread's callbacks did not run")
        #expect(w.value[1].load(ordering: .acquiring) == 8, "a silent thread's callbacks ran on it")
        rcu.drain()
    }

    /// The back pressure `callRCU` no longer applies is paid at `throttle()`, where the caller
    /// holds nothing (the address space calls it on the way out of every writer call).
    @Test func throttlePaysTheBacklog() {
        let rcu = RCU(batchSize: 1_000_000, backPressure: 8)
        let w = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 2))
        for i in 0..<2 { (w.value + i).initialize(to: Atomic(0)) }
        defer { w.value.deallocate() }
        let t = Threads.spawn {
            for _ in 0..<4 { rcu.callRCU { } }
            rcu.throttle()
            w.value[0].store(rcu.pendingCallbacksOfThisThread, ordering: .releasing)
            for _ in 0..<64 { rcu.callRCU { } }
            rcu.throttle()
            w.value[1].store(rcu.pendingCallbacksOfThisThread, ordering: .releasing)
        }
        Threads.join(t)
        #expect(w.value[0].load(ordering: .acquiring) == 4, "throttle() waited below the mark")
        #expect(w.value[1].load(ordering: .acquiring) == 0, "throttle() left the backlog queued")
        rcu.drain()
    }

    /// The reclaimer starts on the thread that queues first, often a worker pinned to one
    /// CPU; it must not keep that pin (it then competed with the worker for its CPU: the list
    /// lock's sweep ran 3.6× slower once a pinned worker had started it).
    @Test func reclaimerRunsOnEveryCPUWhoeverStartsIt() {
        let cpus = Threads.availableCPUs
        let rcu = RCU(batchSize: 1)
        let seen = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        seen.value.initialize(to: Atomic(0))
        defer { seen.value.deallocate() }
        Threads.run(1, pin: true) { _ in
            rcu.callRCU { seen.value.pointee.store(Int(fl_available_cpus()), ordering: .releasing) }
            rcu.expedite()
        }
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while seen.value.pointee.load(ordering: .acquiring) == 0 && monotonicNanoseconds() < deadline {
            fl_sleep_ns(1_000_000)
        }
        #expect(seen.value.pointee.load(ordering: .acquiring) == cpus, "the reclaimer may run on \(seen.value.pointee.load(ordering: .acquiring)) of \(cpus) CPUs")
    }
}

@Suite("Broken controls: RCU")
struct BrokenControlRCU {
    @Test func poisonStressCatchesAGracePeriodThatDoesNotWait() {
        let r = rcuPoisonStress(RCU._brokenForTesting(), deferred: false, seconds: 1.5)
        #expect(r.violations > 0)
    }
}
