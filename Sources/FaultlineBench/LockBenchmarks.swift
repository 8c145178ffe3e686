import CFaultline
import FaultlineSync
import Synchronization

/// The scenarios of `faultline bench locks`.
public enum LockBenchmarks {
    public static func scenarios() -> [MicroScenario] {
        [
            atomicAdd(shared: false),
            atomicAdd(shared: true),
            spinlock(),
            rwsem("read-only", writePercent: 0),
            rwsem("90/10", writePercent: 10),
            rwsem("50/50", writePercent: 50),
            seqcountBesideWriter(),
            rcuReadLock(),
            range({ ListRangeLock(statistics: true) }, "list-range-lock", overlapping: false, mode: .write),
            range({ ListRangeLock(parking: false, statistics: true) }, "list-range-lock-kdi", overlapping: false, mode: .write),
            range({ TreeRangeLock() }, "tree-range-lock", overlapping: false, mode: .write),
            range({ ListRangeLock(statistics: true) }, "list-range-lock", overlapping: true, mode: .write),
            range({ ListRangeLock(parking: false, statistics: true) }, "list-range-lock-kdi", overlapping: true, mode: .write),
            range({ TreeRangeLock() }, "tree-range-lock", overlapping: true, mode: .write),
            range({ ListRangeLock(statistics: true) }, "list-range-lock", overlapping: true, mode: .read),
            range({ ListRangeLock(parking: false, statistics: true) }, "list-range-lock-kdi", overlapping: true, mode: .read),
            range({ TreeRangeLock() }, "tree-range-lock", overlapping: true, mode: .read),
            sweep({ ListRangeLock(statistics: true) }, "list-range-lock"),
            sweep({ ListRangeLock(parking: false, statistics: true) }, "list-range-lock-kdi"),
            sweep({ TreeRangeLock() }, "tree-range-lock"),
        ]
    }

    /// An atomic add on a per-worker padded word (uncontended) or one shared word.
    static func atomicAdd(shared: Bool) -> MicroScenario {
        MicroScenario(primitive: "atomic", scenario: shared ? "add-shared" : "add-uncontended") { threads in
            let (base, stride) = allocatePadded(Atomic<UInt64>.self, count: max(threads, 1))
            for i in 0..<max(threads, 1) { (base + i * stride).bindMemory(to: Atomic<UInt64>.self, capacity: 1).initialize(to: Atomic(0)) }
            let words = Shared(base)
            return { w, stop in
                let p = (words.value + (shared ? 0 : w * stride)).assumingMemoryBound(to: Atomic<UInt64>.self)
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval { p.pointee.wrappingAdd(1, ordering: .relaxed) }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops)
            }
        }
    }

    static func spinlock() -> MicroScenario {
        MicroScenario(primitive: "spinlock", scenario: "lock-unlock") { _ in
            let box = SpinBox()
            return { _, stop in
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        box.lock.lock()
                        box.lock.unlock()
                    }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops)
            }
        }
    }

    static func rwsem(_ name: String, writePercent: UInt64) -> MicroScenario {
        MicroScenario(primitive: "rwsem", scenario: name) { _ in
            let box = RWSemBox()
            return { w, stop in
                var rng = FastRandom(seed: UInt64(w + 1) &* 0x9E37_79B9_7F4A_7C15)
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        if writePercent > 0 && rng.next() % 100 < writePercent {
                            box.sem.lockWrite()
                            box.sem.unlockWrite()
                        } else {
                            box.sem.lockRead()
                            box.sem.unlockRead()
                        }
                    }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops)
            }
        }
    }

    /// Readers of a four-word payload while one extra thread rewrites it continuously.
    static func seqcountBesideWriter() -> MicroScenario {
        MicroScenario(primitive: "seqcount", scenario: "read-beside-writer", helperThreads: 1) { threads in
            let box = SeqBox()
            return { w, stop in
                if w == threads {   // the helper: the writer
                    var v: UInt64 = 0
                    while !stop.isSet {
                        box.seq.writeBegin()
                        v &+= 1
                        for i in 0..<4 { box.words[i].store(v, ordering: .relaxed) }
                        box.seq.writeEnd()
                    }
                    return WorkerTally(ops: 0)
                }
                var ops: UInt64 = 0
                var retries: UInt64 = 0
                var sink: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        while true {
                            let s = box.seq.readBegin()
                            var x: UInt64 = 0
                            for i in 0..<4 { x &+= box.words[i].load(ordering: .relaxed) }
                            if !box.seq.readRetry(s) {
                                sink &+= x
                                break
                            }
                            retries &+= 1
                        }
                    }
                    ops &+= stopCheckInterval
                }
                fl_blackhole_u64(sink)
                return WorkerTally(ops: ops, extra: ["retriesPerRead": retries])
            }
        }
    }

    static func rcuReadLock() -> MicroScenario {
        MicroScenario(primitive: "rcu", scenario: "read-lock-unlock") { _ in
            let rs = RCU.shared.readSide
            return { _, stop in
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        rs.readLock()
                        rs.readUnlock()
                    }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops)
            }
        }
    }

    /// Each worker locks and unlocks its own 4 KiB range (disjoint) or the same one.
    static func range<L: RangeLock>(_ make: @escaping @Sendable () -> L, _ name: String, overlapping: Bool, mode: RangeLockMode) -> MicroScenario {
        let scenario = (overlapping ? "overlapping" : "disjoint") + (mode == .read ? "-read" : "-write")
        return MicroScenario(primitive: name, scenario: scenario) { _ in
            let lock = make()
            return { w, stop in
                let base = overlapping ? 0 : UInt64(w) << 30
                let r = base..<(base + 4096)
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        let h = lock.lock(r, mode: mode)
                        lock.unlock(h)
                    }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops, extra: listLockStatistics(lock))
            }
        }
    }
}


extension LockBenchmarks {
    /// What a fault does under the range design: each worker read-locks the next 4 KiB page
    /// of its own 1 GiB region (a different range every time), so nodes are never re-locked.
    static func sweep<L: RangeLock>(_ make: @escaping @Sendable () -> L, _ name: String) -> MicroScenario {
        MicroScenario(primitive: name, scenario: "disjoint-sweep-read") { _ in
            let lock = make()
            return { w, stop in
                let base = UInt64(w) << 30
                var page: UInt64 = 0
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        let start = base + (page & 0x3FFFF) << 12
                        let h = lock.lock(start..<(start + 4096), mode: .read)
                        lock.unlock(h)
                        page &+= 1
                    }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops, extra: listLockStatistics(lock))
            }
        }
    }
}

/// The calling worker's slow-path counts, when the lock is a list lock keeping them.
func listLockStatistics<L: RangeLock>(_ lock: L) -> [String: UInt64] {
    guard let s = (lock as? ListRangeLock)?.statistics else { return [:] }
    return Dictionary(uniqueKeysWithValues: ListRangeLock.Statistic.allCases.map { ($0.name, s.mine($0.rawValue)) })
}

final class SpinBox: @unchecked Sendable { let lock = SpinLock() }
final class RWSemBox: @unchecked Sendable { let sem = RWSemaphore() }
final class SeqBox: @unchecked Sendable {
    let seq = SeqCount()
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    init() {
        words = .allocate(capacity: 4)
        for i in 0..<4 { (words + i).initialize(to: Atomic(0)) }
    }
    deinit { words.deallocate() }
}
