import CFaultline
import FaultlineSync
import FaultlineTrees
import Synchronization

/// A tree value for benchmarks: a non-zero word.
public struct BenchValue: MapleValue {
    public var word: UInt
    public init(mapleBits: UInt) { word = mapleBits }
    public var mapleBits: UInt { word }
}

/// The scenarios of `faultline bench trees`, over the maple tree, the pre-6.1 gap rbtree and
/// a sorted array (the floor). Layout: VMA-like ranges of 4 pages separated by 1–3 page gaps.
public enum TreeBenchmarks {
    public static let sizes = [10, 1_000, 65_530]
    public static let structures = ["maple", "rbtree", "sorted-array"]
    static let page: UInt64 = 4096
    static let base: UInt64 = 0x10_0000_0000

    /// Deterministic layout for `n` ranges.
    public static func layout(_ n: Int) -> [RangeEntry<BenchValue>] {
        var rng = FastRandom(seed: 0xC0FFEE &+ UInt64(n))
        var a = base
        var out: [RangeEntry<BenchValue>] = []
        out.reserveCapacity(n)
        for k in 0..<n {
            out.append(RangeEntry(first: a, last: a + 4 * page - 1, value: BenchValue(mapleBits: UInt(k + 1))))
            a += (4 + 1 + rng.next() % 3) * page
        }
        return out
    }

    public static func scenarios(structures: [String] = structures, sizes: [Int] = sizes) -> [MicroScenario] {
        var out: [MicroScenario] = []
        for size in sizes {
            for s in structures {
                switch s {
                case "maple": out += cells(s, size) { MapleTree<BenchValue>(rcu: .shared) }
                case "rbtree": out += cells(s, size) { GapRBTree<BenchValue>() }
                default: out += cells(s, size) { SortedRangeArray<BenchValue>() }
                }
            }
        }
        return out
    }

    static func cells<T: RangeTree & SendableMetatype>(_ name: String, _ size: Int, _ make: @escaping @Sendable () -> T) -> [MicroScenario]
    where T.Value == BenchValue {
        let entries = layout(size)
        let shared = Shared(entries)
        let fresh: @Sendable () -> T = {
            let t = make()
            t.bulkLoad(shared.value)
            return t
        }
        let one: @Sendable (Int) -> Bool = { $0 == 1 }
        var cells: [MicroScenario] = []

        cells.append(MicroScenario(primitive: name, scenario: "lookup", size: size, supports: one) { _ in
            let tree = Shared(fresh())
            let probes = Shared(probeAddresses(shared.value, count: 4096))
            return { _, stop in
                let t = tree.value
                let p = probes.value
                var ops: UInt64 = 0
                var i = 0
                var sink: UInt = 0
                RCU.shared.readLock()
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        sink &+= t.lookup(p[i])?.value.word ?? 0
                        i = (i + 1) & 4095
                    }
                    ops &+= stopCheckInterval
                }
                RCU.shared.readUnlock()
                fl_blackhole_u64(UInt64(sink))
                return WorkerTally(ops: ops)
            }
        })

        cells.append(MicroScenario(primitive: name, scenario: "store-erase", size: size, supports: one) { _ in
            let tree = Shared(fresh())
            return { _, stop in
                let t = tree.value
                let e = shared.value
                var rng = FastRandom(seed: 7)
                var ops: UInt64 = 0
                while !stop.isSet {
                    for _ in 0..<(stopCheckInterval / 16) {
                        let x = e[Int(rng.next() % UInt64(e.count))]
                        t.erase(x.range)
                        t.store(x.range, x.value)
                    }
                    ops &+= stopCheckInterval / 8
                }
                return WorkerTally(ops: ops)
            }
        })

        for highest in [false, true] {
            cells.append(MicroScenario(primitive: name, scenario: highest ? "highest-gap" : "lowest-gap", size: size, supports: one) { _ in
                let tree = Shared(fresh())
                return { _, stop in
                    let t = tree.value
                    let e = shared.value
                    let lo = e.first!.first
                    let hi = e.last!.last
                    var rng = FastRandom(seed: 11)
                    var ops: UInt64 = 0
                    var sink: UInt64 = 0
                    while !stop.isSet {
                        for _ in 0..<(stopCheckInterval / 16) {
                            // A random window start, as mmap hints and top-down limits vary.
                            let a = lo + rng.next() % max(hi - lo, 1)
                            let w = highest ? lo...a : a...UInt64.max
                            sink &+= (highest ? t.highestGap(size: 3 * page, in: w) : t.lowestGap(size: 3 * page, in: w)) ?? 0
                        }
                        ops &+= stopCheckInterval / 16
                    }
                    fl_blackhole_u64(sink)
                    return WorkerTally(ops: ops)
                }
            })
        }

        cells.append(MicroScenario(primitive: name, scenario: "iterate", size: size, supports: one) { _ in
            let tree = Shared(fresh())
            return { _, stop in
                let t = tree.value
                var ops: UInt64 = 0
                var sink: UInt = 0
                while !stop.isSet {
                    RCU.shared.readLock()
                    t.forEach(in: 0...UInt64.max) { sink &+= $0.value.word; return true }
                    RCU.shared.readUnlock()
                    ops &+= UInt64(size)
                }
                fl_blackhole_u64(UInt64(sink))
                return WorkerTally(ops: ops)
            }
        })

        // Two readers look up while a third thread churns. The maple tree's readers use RCU
        // alone; the others take the rwsem for read, as pre-6.1 faults took mmap_lock.
        cells.append(MicroScenario(primitive: name, scenario: "lookup-beside-writer", size: size, helperThreads: 1,
                                   supports: { $0 == 2 }) { threads in
            let tree = Shared(fresh())
            let lock = RWSemBox()
            let probes = Shared(probeAddresses(shared.value, count: 4096))
            let lockFree = T.readersNeedNoLock
            return { w, stop in
                let t = tree.value
                if w == threads {
                    let e = shared.value
                    var rng = FastRandom(seed: 3)
                    while !stop.isSet {
                        let x = e[Int(rng.next() % UInt64(e.count))]
                        lock.sem.lockWrite()
                        t.erase(x.range)
                        t.store(x.range, x.value)
                        lock.sem.unlockWrite()
                    }
                    return WorkerTally(ops: 0)
                }
                let p = probes.value
                var ops: UInt64 = 0
                var misses: UInt64 = 0
                var i = w * 997
                let rs = RCU.shared.readSide
                while !stop.isSet {
                    for _ in 0..<stopCheckInterval {
                        let a = p[i & 4095]
                        let hit: Bool
                        if lockFree {
                            rs.readLock()
                            hit = t.lookup(a) != nil
                            rs.readUnlock()
                        } else {
                            lock.sem.lockRead()
                            hit = t.lookup(a) != nil
                            lock.sem.unlockRead()
                        }
                        if !hit { misses &+= 1 }
                        i &+= 1
                    }
                    ops &+= stopCheckInterval
                }
                return WorkerTally(ops: ops, extra: ["missRate": misses])
            }
        })
        return cells
    }

    static func probeAddresses(_ e: [RangeEntry<BenchValue>], count: Int) -> [UInt64] {
        var rng = FastRandom(seed: 99)
        return (0..<count).map { _ in
            let x = e[Int(rng.next() % UInt64(e.count))]
            return x.first + rng.next() % (x.last - x.first + 1)
        }
    }
}
