import CFaultline
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// A deliberately broken lock: checks and then sets in two steps, so two threads can both
/// see it free. The mutual-exclusion stress must catch it.
final class BrokenSpinLock: @unchecked Sendable {
    let word = Atomic<UInt32>(0)
    func lock() {
        while word.load(ordering: .acquiring) != 0 { fl_cpu_relax() }
        dwell(4)
        word.store(1, ordering: .relaxed)
    }
    func unlock() { word.store(0, ordering: .releasing) }
}

final class SpinLockBox: @unchecked Sendable {
    let lock = SpinLock()
}

@Suite("SpinLock")
struct SpinLockTests {
    @Test func tryLockFailsWhileHeld() {
        let l = SpinLock()
        let v1 = l.tryLock()
        #expect(v1)
        let v2 = l.isLocked
        #expect(v2)
        let v3 = !l.tryLock()
        #expect(v3)
        l.unlock()
        let v4 = l.tryLock()
        #expect(v4)
        l.unlock()
    }

    @Test func mutualExclusionUnderStress() {
        let box = SpinLockBox()
        let checker = ExclusionChecker(units: 1)
        stress(threads: 4, seconds: 1.0) { _, _ in
            box.lock.lock()
            checker.enter(0..<1, write: true)
            dwell(20)
            checker.exit(0..<1, write: true)
            box.lock.unlock()
        }
        #expect(checker.entryCount > 1000)
        #expect(checker.violationCount == 0)
    }

    @Test func counterIncrementsAreNotLost() {
        let box = SpinLockBox()
        let counter = Shared(UnsafeMutablePointer<Int>.allocate(capacity: 1))
        counter.value.initialize(to: 0)
        defer { counter.value.deallocate() }
        Threads.run(4) { _ in
            for _ in 0..<50_000 {
                box.lock.lock()
                counter.value.pointee += 1
                box.lock.unlock()
            }
        }
        #expect(counter.value.pointee == 200_000)
    }
}

@Suite("Broken controls: the stress tests catch weakened primitives")
struct BrokenControlSpinLock {
    @Test func exclusionStressCatchesCheckThenSetLock() {
        let broken = BrokenSpinLock()
        let checker = ExclusionChecker(units: 1)
        stress(threads: 4, seconds: 2.0) { _, _ in
            broken.lock()
            checker.enter(0..<1, write: true)
            dwell(20)
            checker.exit(0..<1, write: true)
            broken.unlock()
        }
        #expect(checker.violationCount > 0)
    }
}
