import CFaultline
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// The reader/writer interface the stress harness drives, so that the same checks run on the
/// real `RWSemaphore` and on deliberately broken locks.
protocol RWLockUnderTest: AnyObject, Sendable {
    func lockRead()
    func unlockRead()
    func lockWrite()
    func unlockWrite()
    func downgradeWrite()
}

final class RealRWSem: RWLockUnderTest, @unchecked Sendable {
    let sem: RWSemaphore
    init(stats: PerThreadCounters? = nil) { sem = RWSemaphore(stats: stats) }
    func lockRead() { sem.lockRead() }
    func unlockRead() { sem.unlockRead() }
    func lockWrite() { sem.lockWrite() }
    func unlockWrite() { sem.unlockWrite() }
    func downgradeWrite() { sem.downgradeWrite() }
}

/// Broken: readers never look at the writer bit.
final class ReadersIgnoreWriterLock: RWLockUnderTest, @unchecked Sendable {
    let inner = RWSemaphore()
    func lockRead() {}
    func unlockRead() {}
    func lockWrite() { inner.lockWrite() }
    func unlockWrite() { inner.unlockWrite() }
    func downgradeWrite() { inner.downgradeWrite(); inner.unlockRead() }
}

/// Broken: a reader-preferring lock (new readers enter whenever no writer *holds* it), the
/// classic design that starves writers; and a downgrade that opens a window.
final class ReaderPreferringLock: RWLockUnderTest, @unchecked Sendable {
    let state = Atomic<Int>(0)  // -1 writer, n readers
    func lockRead() {
        while true {
            let s = state.load(ordering: .relaxed)
            if s >= 0, state.compareExchange(expected: s, desired: s + 1, ordering: .acquiring).exchanged { return }
            fl_cpu_relax()
        }
    }
    func unlockRead() { state.wrappingSubtract(1, ordering: .releasing) }
    func lockWrite() {
        while !state.compareExchange(expected: 0, desired: -1, ordering: .acquiring).exchanged { fl_yield() }
    }
    func unlockWrite() { state.store(0, ordering: .releasing) }
    func downgradeWrite() {
        unlockWrite()
        fl_yield()
        lockRead()
    }
}

func rwExclusionStress(_ lock: RWLockUnderTest, seconds: Double, writePercent: Int) -> ExclusionChecker {
    let checker = ExclusionChecker(units: 1)
    stress(threads: 4, seconds: seconds) { _, rng in
        if Int(rng.next() % 100) < writePercent {
            lock.lockWrite()
            checker.enter(0..<1, write: true)
            dwell(30)
            checker.exit(0..<1, write: true)
            lock.unlockWrite()
        } else {
            lock.lockRead()
            checker.enter(0..<1, write: false)
            dwell(30)
            checker.exit(0..<1, write: false)
            lock.unlockRead()
        }
    }
    return checker
}

/// Three readers keep the lock continuously read-owned (staggered 1 ms sections that
/// re-enter at once); returns the longest time a writer waited for each of `writes`
/// acquisitions, or nil if one took over `limit` seconds.
func writerWaitUnderReaderStream(_ lock: RWLockUnderTest, writes: Int, limit: Double) -> UInt64? {
    let stop = StopFlag()
    let maxWait = Atomic<UInt64>(0)
    let gaveUp = Atomic<Bool>(false)
    Threads.run(4) { i in
        if i < 3 {
            fl_sleep_ns(UInt64(i) * 330_000)
            while !stop.isSet {
                lock.lockRead()
                fl_sleep_ns(1_000_000)
                lock.unlockRead()
            }
            return
        }
        fl_sleep_ns(20_000_000)
        for _ in 0..<writes {
            let t0 = monotonicNanoseconds()
            let acquired = DoneBox()
            // Acquire on a helper thread so that a starving writer cannot hang the test.
            let th = Threads.spawn {
                lock.lockWrite()
                lock.unlockWrite()
                acquired.count.store(1, ordering: .releasing)
            }
            while acquired.count.load(ordering: .acquiring) == 0 {
                if monotonicNanoseconds() - t0 > UInt64(limit * 1e9) {
                    gaveUp.store(true, ordering: .relaxed)
                    break
                }
                fl_sleep_ns(100_000)
            }
            if gaveUp.load(ordering: .relaxed) {
                stop.set()
                Threads.join(th)
                return
            }
            Threads.join(th)
            let w = monotonicNanoseconds() - t0
            if w > maxWait.load(ordering: .relaxed) { maxWait.store(w, ordering: .relaxed) }
            fl_sleep_ns(2_000_000)
        }
        stop.set()
    }
    return gaveUp.load(ordering: .relaxed) ? nil : maxWait.load(ordering: .relaxed)
}

/// Downgrade must keep writers out between the write and the read phase: the downgrader
/// stamps a value under the write lock and must still see its own stamp after downgrading.
func downgradeKeepsWritersOut(_ lock: RWLockUnderTest, seconds: Double) -> Int {
    let value = Atomic<Int>(0)
    let lost = Atomic<Int>(0)
    stress(threads: 3, seconds: seconds) { t, rng in
        lock.lockWrite()
        let stamp = Int(truncatingIfNeeded: rng.next()) | 1
        value.store(stamp, ordering: .relaxed)
        lock.downgradeWrite()
        dwell(50)
        if value.load(ordering: .relaxed) != stamp { lost.wrappingAdd(1, ordering: .relaxed) }
        lock.unlockRead()
        _ = t
    }
    return lost.load(ordering: .relaxed)
}

@Suite("RWSemaphore")
struct RWSemaphoreTests {
    @Test func tryLocksFollowTheRules() {
        let s = RWSemaphore()
        let v1 = s.tryLockRead()
        #expect(v1)
        let v2 = s.tryLockRead()
        #expect(v2)
        let v3 = s.readerCount == 2
        #expect(v3)
        let v4 = !s.tryLockWrite()
        #expect(v4)
        s.unlockRead()
        s.unlockRead()
        let v5 = s.tryLockWrite()
        #expect(v5)
        let v6 = s.isWriteLocked
        #expect(v6)
        let v7 = !s.tryLockRead()
        #expect(v7)
        let v8 = !s.tryLockWrite()
        #expect(v8)
        s.downgradeWrite()
        let v9 = !s.isWriteLocked
        #expect(v9)
        let v10 = s.readerCount == 1
        #expect(v10)
        let v11 = s.tryLockRead()
        #expect(v11)
        let v12 = !s.tryLockWrite()
        #expect(v12)
        s.unlockRead()
        s.unlockRead()
        let v13 = !s.isLocked
        #expect(v13)
    }

    @Test(arguments: [0, 10, 50, 100])
    func readerWriterExclusion(writePercent: Int) {
        let c = rwExclusionStress(RealRWSem(), seconds: 0.75, writePercent: writePercent)
        #expect(c.entryCount > 500)
        #expect(c.violationCount == 0)
    }

    /// `rwsem_rspin_threshold()`: (10 + readers/2) µs, capped at 25 µs (30 readers).
    @Test func aWriterSpinsOnReadersForLinuxsThreshold() {
        #expect(RWSemaphore.rspinThresholdNs(readers: 0) == 10_000)
        #expect(RWSemaphore.rspinThresholdNs(readers: 1) == 10_500)
        #expect(RWSemaphore.rspinThresholdNs(readers: 30) == 25_000)
        #expect(RWSemaphore.rspinThresholdNs(readers: 500) == 25_000)
    }

    /// A writer behind a reader that keeps the lock spins for the threshold, then queues and
    /// sleeps (FLAG_WAITERS set) while the reader still holds it; the reader's release lets
    /// it in.
    @Test func aWriterBehindAReaderQueuesAfterSpinning() {
        let box = SemBox()
        box.sem.lockRead()
        let started = Atomic<UInt64>(0)
        let acquired = Atomic<Bool>(false)
        let t = Threads.spawn {
            started.store(fl_now_ns(), ordering: .releasing)
            box.sem.lockWrite()
            acquired.store(true, ordering: .releasing)
            box.sem.unlockWrite()
        }
        while started.load(ordering: .acquiring) == 0 { fl_cpu_relax() }
        let deadline = fl_now_ns() + 2_000_000_000
        while !box.sem.hasWaiters && fl_now_ns() < deadline { fl_cpu_relax() }
        let queuedAfter = fl_now_ns() - started.load(ordering: .acquiring)
        let queued = box.sem.hasWaiters
        let early = acquired.load(ordering: .acquiring)
        #expect(queued, "the writer queued")
        #expect(queuedAfter >= RWSemaphore.rspinThresholdNs(readers: 1), "it spun for the threshold first")
        #expect(!early)
        box.sem.unlockRead()
        Threads.join(t)
        let late = acquired.load(ordering: .acquiring)
        #expect(late)
    }

    @Test func waitingWriterIsNotStarvedByAReaderStream() {
        let w = writerWaitUnderReaderStream(RealRWSem(), writes: 20, limit: 2.0)
        #expect(w != nil, "a writer waited more than 2 s behind overlapping readers")
    }

    @Test func downgradeAdmitsNoWriterInBetween() {
        #expect(downgradeKeepsWritersOut(RealRWSem(), seconds: 1.0) == 0)
    }

    @Test func downgradeLetsQueuedReadersIn() {
        let s = RealRWSem()
        s.lockWrite()
        let entered = DoneBox()
        let th = Threads.spawn {
            s.lockRead()
            entered.count.store(1, ordering: .releasing)
            s.unlockRead()
        }
        fl_sleep_ns(20_000_000)
        #expect(entered.count.load(ordering: .acquiring) == 0)
        s.downgradeWrite()
        let t0 = monotonicNanoseconds()
        while entered.count.load(ordering: .acquiring) == 0 && monotonicNanoseconds() - t0 < 5_000_000_000 {
            fl_sleep_ns(1_000_000)
        }
        #expect(entered.count.load(ordering: .acquiring) == 1, "reader still blocked after downgrade")
        s.unlockRead()
        Threads.join(th)
        let v14 = !s.sem.isLocked
        #expect(v14)
    }

    @Test func noLostWakeupsWithSleepingWaiters() {
        let s = RealRWSem()
        let ok = finishes(threads: 6, iterations: 3000, timeout: 60) { t, k in
            if (t + k) % 3 == 0 {
                s.lockWrite()
                if k % 16 == 0 { fl_yield() }
                s.unlockWrite()
            } else {
                s.lockRead()
                if k % 16 == 0 { fl_yield() }
                s.unlockRead()
            }
        }
        #expect(ok)
    }

    @Test func statisticsCountAcquisitionsAndWaits() {
        let stats = PerThreadCounters(width: RWSemStat.width)
        let s = RealRWSem(stats: stats)
        // All three start together: thread start-up under ASan on a loaded 2-core box can
        // outlast a whole loop, and threads that never overlap never contend.
        let started = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        started.value.initialize(to: Atomic(0))
        defer { started.value.deallocate() }
        Threads.run(3) { _ in
            started.value.pointee.wrappingAdd(1, ordering: .acquiringAndReleasing)
            while started.value.pointee.load(ordering: .acquiring) < 3 { fl_yield() }
            for k in 0..<2000 {
                if k % 4 == 0 {
                    s.lockWrite()
                    dwell(200)
                    s.unlockWrite()
                } else {
                    s.lockRead()
                    dwell(50)
                    s.unlockRead()
                }
            }
        }
        // A contention that does not depend on the scheduler: one thread holds the lock for
        // write until the other two have said they are about to take it for read, and a while
        // after (under ASan on a loaded 2-core box the loop above can run its threads one at a
        // time: CI at 8d7a4da counted no contention).
        let phase = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        phase.value.initialize(to: Atomic(0))
        defer { phase.value.deallocate() }
        Threads.run(3) { t in
            if t == 0 {
                s.lockWrite()
                phase.value.pointee.store(1, ordering: .releasing)
                while phase.value.pointee.load(ordering: .acquiring) < 3 { fl_yield() }
                fl_sleep_ns(20_000_000)
                s.unlockWrite()
            } else {
                while phase.value.pointee.load(ordering: .acquiring) < 1 { fl_yield() }
                phase.value.pointee.wrappingAdd(1, ordering: .acquiringAndReleasing)
                s.lockRead()
                s.unlockRead()
            }
        }
        #expect(stats.sum(RWSemStat.writeAcquired.rawValue) == 1501)
        #expect(stats.sum(RWSemStat.readAcquired.rawValue) == 4502)
        let contended = stats.sum(RWSemStat.readContended.rawValue) + stats.sum(RWSemStat.writeContended.rawValue)
        let waited = stats.sum(RWSemStat.readWaitNs.rawValue) + stats.sum(RWSemStat.writeWaitNs.rawValue)
        #expect(contended > 0)
        #expect(waited > 0)
    }
}

@Suite("Broken controls: RW semaphore")
struct BrokenControlRWSemaphore {
    @Test func exclusionStressCatchesReadersThatIgnoreWriters() {
        let c = rwExclusionStress(ReadersIgnoreWriterLock(), seconds: 1.5, writePercent: 50)
        #expect(c.violationCount > 0)
    }

    @Test func starvationTestCatchesReaderPreferringLock() {
        let w = writerWaitUnderReaderStream(ReaderPreferringLock(), writes: 20, limit: 1.0)
        #expect(w == nil, "the reader-preferring lock should have starved the writer")
    }

    @Test func downgradeTestCatchesUnlockThenLock() {
        #expect(downgradeKeepsWritersOut(ReaderPreferringLock(), seconds: 1.5) > 0)
    }
}

private final class SemBox: @unchecked Sendable { let sem = RWSemaphore() }
