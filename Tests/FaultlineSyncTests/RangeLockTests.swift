import CFaultline
@_spi(Testing) import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// A deliberately broken range lock: every request is taken as a read, so writers overlap.
final class ModeBlindRangeLock: RangeLock, @unchecked Sendable {
    let inner = ListRangeLock()
    func lock(_ range: Range<UInt64>, mode: RangeLockMode) -> ListRangeLock.Handle { inner.lock(range, mode: .read) }
    func tryLock(_ range: Range<UInt64>, mode: RangeLockMode) -> ListRangeLock.Handle? { inner.tryLock(range, mode: .read) }
    func unlock(_ handle: ListRangeLock.Handle) { inner.unlock(handle) }
}

/// Random ranges over `units` slots, random modes, checked by an `ExclusionChecker`.
func rangeExclusionStress<L: RangeLock>(_ lock: L, units: Int = 64, seconds: Double, writePercent: Int = 50) -> ExclusionChecker {
    let checker = ExclusionChecker(units: units)
    stress(threads: 4, seconds: seconds) { _, rng in
        let a = Int(rng.next() % UInt64(units))
        let len = 1 + Int(rng.next() % 8)
        let r = a..<min(units, a + len)
        let write = Int(rng.next() % 100) < writePercent
        if rng.next() % 8 == 0 {
            guard let h = lock.tryLock(UInt64(r.lowerBound)..<UInt64(r.upperBound), mode: write ? .write : .read) else { return }
            checker.enter(r, write: write)
            dwell(20)
            checker.exit(r, write: write)
            lock.unlock(h)
        } else {
            let h = lock.lock(UInt64(r.lowerBound)..<UInt64(r.upperBound), mode: write ? .write : .read)
            checker.enter(r, write: write)
            dwell(20)
            checker.exit(r, write: write)
            lock.unlock(h)
        }
    }
    return checker
}

/// Workers that mostly re-lock one favourite range in one mode (so the list lock's unlock
/// parks the node and the next lock revives it), sometimes another thread's favourite or a
/// wide read, with occasional tryLock: every favourite overlaps its neighbours' in both
/// modes, so revives race with requests that must kill parked nodes.
func parkingExclusionStress<L: RangeLock>(_ lock: L, seconds: Double) -> ExclusionChecker {
    let units = 16
    let checker = ExclusionChecker(units: units)
    // Thread t's favourite: [3t, 3t + 5) — writers on even threads, readers on odd ones.
    @Sendable func favourite(_ t: Int) -> (Range<Int>, Bool) { (3 * t..<min(units, 3 * t + 5), t % 2 == 0) }
    stress(threads: 4, seconds: seconds) { t, rng in
        let pick = rng.next() % 16
        let (r, write): (Range<Int>, Bool)
        switch pick {
        case 0..<11: (r, write) = favourite(t)
        case 11..<14: (r, write) = favourite(Int(rng.next() % 4))
        case 14: (r, write) = (0..<units, false)
        default: (r, write) = (0..<units, true)
        }
        let range = UInt64(r.lowerBound)..<UInt64(r.upperBound)
        let h: L.Handle
        if rng.next() % 8 == 0 {
            guard let got = lock.tryLock(range, mode: write ? .write : .read) else { return }
            h = got
        } else {
            h = lock.lock(range, mode: write ? .write : .read)
        }
        checker.enter(r, write: write)
        dwell(20)
        checker.exit(r, write: write)
        lock.unlock(h)
    }
    return checker
}

func tryLockRules<L: RangeLock>(_ l: L) {
    let w = l.lock(0..<10, mode: .write)
    #expect(l.tryLock(5..<15, mode: .write) == nil)
    #expect(l.tryLock(5..<15, mode: .read) == nil)
    #expect(l.tryLock(9..<10, mode: .read) == nil)
    let disjoint = l.tryLock(10..<20, mode: .write)
    #expect(disjoint != nil)
    if let d = disjoint { l.unlock(d) }
    l.unlock(w)

    let r = l.lock(0..<10, mode: .read)
    let r2 = l.tryLock(5..<15, mode: .read)
    #expect(r2 != nil)
    #expect(l.tryLock(5..<15, mode: .write) == nil)
    #expect(l.tryLock(0..<1, mode: .write) == nil)
    if let r2 { l.unlock(r2) }
    let w2 = l.tryLock(10..<11, mode: .write)
    #expect(w2 != nil)
    if let w2 { l.unlock(w2) }
    l.unlock(r)
    let all = l.tryLock(0..<UInt64.max, mode: .write)
    #expect(all != nil)
    if let all { l.unlock(all) }
}

/// A thread holding [0, 10) for a while must not delay a writer of [20, 30).
func disjointProceeds<L: RangeLock>(_ l: L) -> Bool {
    let box = Shared(l)
    let held = DoneBox()
    let release = Atomic<Bool>(false)
    let holder = Threads.spawn {
        let h = box.value.lock(0..<10, mode: .write)
        held.count.store(1, ordering: .releasing)
        while !release.load(ordering: .acquiring) { fl_sleep_ns(1_000_000) }
        box.value.unlock(h)
    }
    while held.count.load(ordering: .acquiring) == 0 { fl_sleep_ns(500_000) }
    let h = l.lock(20..<30, mode: .write)   // would block forever if it waited for the holder
    let got = !release.load(ordering: .acquiring)
    l.unlock(h)
    release.store(true, ordering: .releasing)
    Threads.join(holder)
    return got
}

/// Writers of overlapping ranges held long enough that waiters go to sleep.
func sleepingWaitersAllWake<L: RangeLock>(_ l: L) -> Bool {
    let box = Shared(l)
    return finishes(threads: 6, iterations: 400, timeout: 60) { t, k in
        let base = UInt64((t + k) % 4) * 4
        let h = box.value.lock(base..<(base + 8), mode: k % 3 == 0 ? .read : .write)
        if k % 8 == 0 { fl_sleep_ns(50_000) } else { dwell(100) }
        box.value.unlock(h)
    }
}

@Suite("Range locks")
struct RangeLockTests {
    @Test func listTryLockRules() { tryLockRules(ListRangeLock()) }
    @Test func treeTryLockRules() { tryLockRules(TreeRangeLock()) }

    @Test(arguments: [0, 30, 100])
    func listExclusion(writePercent: Int) {
        let c = rangeExclusionStress(ListRangeLock(), seconds: 0.75, writePercent: writePercent)
        #expect(c.entryCount > 500)
        #expect(c.violationCount == 0)
    }

    @Test(arguments: [0, 30, 100])
    func treeExclusion(writePercent: Int) {
        let c = rangeExclusionStress(TreeRangeLock(), seconds: 0.75, writePercent: writePercent)
        #expect(c.entryCount > 500)
        #expect(c.violationCount == 0)
    }

    @Test func listParkingExclusion() {
        let c = parkingExclusionStress(ListRangeLock(), seconds: 1)
        #expect(c.entryCount > 500)
        #expect(c.violationCount == 0)
    }

    @Test func treeParkingExclusion() {
        let c = parkingExclusionStress(TreeRangeLock(), seconds: 0.5)
        #expect(c.entryCount > 500)
        #expect(c.violationCount == 0)
    }

    /// The same thread re-locking its range parks and revives its node; another thread's
    /// conflicting request kills it; tryLock sees a parked node as free.
    @Test func listParkedNodeIsFreeForOthers() {
        let l = ListRangeLock()
        let box = Shared(l)
        for mode in [RangeLockMode.write, .read] {
            // The second unlock of the same range in a row parks; the third lock revives.
            for _ in 0..<3 { l.unlock(l.lock(0..<10, mode: mode)) }
            // Another thread takes an overlapping write range while ours is parked.
            let other = DoneBox()
            let th = Threads.spawn {
                guard let w = box.value.tryLock(5..<15, mode: .write) else { return }
                other.count.store(1, ordering: .releasing)
                box.value.unlock(w)
            }
            Threads.join(th)
            #expect(other.count.load(ordering: .acquiring) == 1)
            // Ours was killed: the next lock inserts afresh and still excludes others.
            let h3 = l.lock(0..<10, mode: .write)
            #expect(l.tryLock(9..<20, mode: .read) == nil)
            l.unlock(h3)
        }
        let all = l.tryLock(0..<UInt64.max, mode: .write)
        #expect(all != nil)
        if let all { l.unlock(all) }
    }

    /// A request that must wait for a conflicting holder does not wait inside its RCU read
    /// section (the list walk's): every grace period, and so all reuse of nodes, frames,
    /// VMAs and page tables, would wait for the longest range-lock wait. A writer and a
    /// reader request are checked.
    @Test(arguments: [RangeLockMode.write, RangeLockMode.read])
    func listWaitersDoNotHoldUpGracePeriods(_ waiterMode: RangeLockMode) {
        let lock = ListRangeLock()
        let held = lock.lock(0..<4096, mode: .write)
        // [0] waiter started, [1] waiter got the range, [2] a grace period completed.
        let w = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 3))
        for i in 0..<3 { (w.value + i).initialize(to: Atomic(0)) }
        defer { w.value.deallocate() }
        let waiter = Threads.spawn {
            w.value[0].store(1, ordering: .releasing)
            let h = lock.lock(0..<4096, mode: waiterMode)
            w.value[1].store(1, ordering: .releasing)
            lock.unlock(h)
        }
        while w.value[0].load(ordering: .acquiring) == 0 { fl_sleep_ns(100_000) }
        fl_sleep_ns(50_000_000)   // past its spinning: asleep on the futex
        let gp = Threads.spawn {
            RCU.shared.synchronize()
            w.value[2].store(1, ordering: .releasing)
        }
        let giveUp = monotonicNanoseconds() + 3_000_000_000
        while w.value[2].load(ordering: .acquiring) == 0 && monotonicNanoseconds() < giveUp { fl_sleep_ns(1_000_000) }
        let gpWhileWaiting = w.value[2].load(ordering: .acquiring) == 1 && w.value[1].load(ordering: .acquiring) == 0
        lock.unlock(held)
        Threads.join(waiter)
        Threads.join(gp)
        #expect(gpWhileWaiting, "a grace period waited for a range-lock waiter")
        #expect(w.value[1].load(ordering: .acquiring) == 1)
    }

    @Test func listDisjointRangesProceedInParallel() { #expect(disjointProceeds(ListRangeLock())) }
    @Test func treeDisjointRangesProceedInParallel() { #expect(disjointProceeds(TreeRangeLock())) }

    @Test func listNoLostWakeups() { #expect(sleepingWaitersAllWake(ListRangeLock())) }
    @Test func treeNoLostWakeups() { #expect(sleepingWaitersAllWake(TreeRangeLock())) }

    /// The statistics count a wait where a request met a held conflicting node, and nothing
    /// on uncontended re-locks.
    @Test func listStatisticsCountWaits() {
        let l = ListRangeLock(statistics: true)
        for _ in 0..<100 { l.unlock(l.lock(0..<10, mode: .write)) }
        #expect(l.statistics!.sums() == [0, 0, 0])
        let held = l.lock(0..<10, mode: .write)
        let box = Shared(l)
        let waits = DoneBox()
        let th = Threads.spawn {
            let h = box.value.lock(5..<15, mode: .write)
            waits.count.store(Int(box.value.statistics!.mine(ListRangeLock.Statistic.waits.rawValue)), ordering: .releasing)
            box.value.unlock(h)
        }
        // The wait is counted before the waiter spins or sleeps: release once it is.
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while l.statistics!.sum(ListRangeLock.Statistic.waits.rawValue) == 0 && monotonicNanoseconds() < deadline {
            fl_sleep_ns(1_000_000)
        }
        l.unlock(held)
        Threads.join(th)
        #expect(waits.count.load(ordering: .acquiring) >= 1)
        #expect(l.statistics!.sum(ListRangeLock.Statistic.waits.rawValue) >= 1)
    }

    @Test func treeReaderQueuesBehindEarlierOverlappingWriter() {
        // FIFO fairness (Bueso): R1 holds; W waits on R1; a later reader R2 overlapping W must
        // wait for W even though it is compatible with R1.
        let l = TreeRangeLock()
        let r1 = l.lock(0..<10, mode: .read)
        let box = Shared(l)
        let wGot = DoneBox()
        let th = Threads.spawn {
            let w = box.value.lock(5..<15, mode: .write)
            wGot.count.store(1, ordering: .releasing)
            box.value.unlock(w)
        }
        while l.requestCount < 2 { fl_sleep_ns(500_000) }
        #expect(l.tryLock(0..<10, mode: .read) == nil)
        l.unlock(r1)
        Threads.join(th)
        #expect(wGot.count.load(ordering: .acquiring) == 1)
        #expect(l.requestCount == 0)
    }
}

@Suite("Broken controls: range locks")
struct BrokenControlRangeLock {
    @Test func exclusionStressCatchesAModeBlindLock() {
        let c = rangeExclusionStress(ModeBlindRangeLock(), seconds: 1.5, writePercent: 100)
        #expect(c.violationCount > 0)
    }

    /// Requests that pass parked nodes instead of killing them let a revive overlap a holder.
    @Test func parkingStressCatchesPassedParkedNodes() {
        let c = parkingExclusionStress(ListRangeLock._brokenForTesting(), seconds: 3)
        #expect(c.violationCount > 0)
    }
}
