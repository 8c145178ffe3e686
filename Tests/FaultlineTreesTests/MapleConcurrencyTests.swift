import CFaultline
#if canImport(Glibc)
import Glibc
#endif
@_spi(Testing) import FaultlineSync
import FaultlineTrees
import Synchronization
import Testing

/// Slot k is the range [16k, 16k+7]; values carry k in their high bits. Any answer a reader
/// gets must be one that some version of the tree could have given.
enum Slots {
    static let count: UInt64 = 512
    static func range(_ k: UInt64) -> ClosedRange<UInt64> { (k * 16)...(k * 16 + 7) }
    static func value(_ k: UInt64, _ gen: UInt64) -> V { V(UInt(k << 24 | (gen & 0xFF_FFFF) | 1)) }
    static func legal(_ e: RangeEntry<V>) -> Bool {
        let k = e.first / 16
        return e.first % 16 == 0 && e.last == e.first + 7 && UInt64(e.value.id) >> 24 == k
            && e.value.id != MapleTree<V>.poisonValue
    }
}

final class TreeBox: @unchecked Sendable {
    let tree: MapleTree<V>
    let rcu: RCU
    init(_ t: MapleTree<V>, _ r: RCU) { tree = t; rcu = r }
}

/// One writer stores, erases and erases runs of slots (in place, a new leaf, or a new path);
/// readers look up, find and iterate (one of them over the whole tree), inside RCU read-side
/// sections, and count answers no version of the tree could give.
///
/// `fullIteration`: one reader walks the whole tree each time (with nodes reused at once, a
/// cursor that climbs a long way reads a reused node's slots as children and dereferences a
/// value: the broken control runs in a process of its own).
func mapleReaderStress(rcu: RCU, seconds: Double, fullIteration: Bool = true) -> (reads: Int, violations: Int) {
    let tree = MapleTree<V>(rcu: rcu, poisonFreedNodes: true)
    tree.bulkLoad((0..<Slots.count).map { RangeEntry(first: Slots.range($0).lowerBound, last: Slots.range($0).upperBound, value: Slots.value($0, 1)) })
    let box = TreeBox(tree, rcu)
    let reads = Atomic<Int>(0)
    let bad = Atomic<Int>(0)
    let stop = StopFlag()
    Threads.run(4) { t in
        var rng = SplitMix(seed: UInt64(t) &+ 99)
        if t == 0 {
            let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
            var gen: UInt64 = 2
            while monotonicNanoseconds() < deadline {
                let k = rng.next() % Slots.count
                switch rng.next() % 6 {
                case 0:
                    box.tree.erase(Slots.range(k))
                case 1:
                    let m = min(Slots.count - 1, k + rng.next() % 40)
                    box.tree.erase(Slots.range(k).lowerBound...Slots.range(m).upperBound)
                default:
                    box.tree.store(Slots.range(k), Slots.value(k, gen))
                }
                gen += 1
            }
            stop.set()
            return
        }
        while !stop.isSet {
            box.rcu.readLock()
            let a = rng.next() % (Slots.count * 16)
            var ok = true
            if let e = box.tree.lookup(a) {
                ok = ok && Slots.legal(e) && e.first <= a && a <= e.last
            }
            if let e = box.tree.find(from: a) { ok = ok && Slots.legal(e) && e.last >= a }
            var prevLast: UInt64? = nil
            // One reader iterates the whole tree: its cursor climbs through every level.
            box.tree.forEach(in: t == 3 && fullIteration ? 0...UInt64.max : a...(a + 256)) { e in
                ok = ok && Slots.legal(e) && (prevLast.map { e.first > $0 } ?? true)
                prevLast = e.last
                return true
            }
            box.rcu.readUnlock()
            if !ok { bad.wrappingAdd(1, ordering: .relaxed) }
            reads.wrappingAdd(1, ordering: .relaxed)
        }
    }
    rcu.barrier()
    tree._checkInvariants()
    return (reads.load(ordering: .relaxed), bad.load(ordering: .relaxed))
}

@Suite("Maple tree under concurrent readers")
struct MapleConcurrencyTests {
    @Test func readersOnlySeeLegalAnswersWhileAWriterChurns() {
        let r = mapleReaderStress(rcu: RCU(batchSize: 32), seconds: 1.5)
        #expect(r.reads > 1000)
        #expect(r.violations == 0)
    }

    @Test func nodesComeBackAfterTeardownAndAGracePeriod() {
        let rcu = RCU()
        let tree = MapleTree<V>(rcu: rcu)
        for k in 0..<2000 as Range<UInt64> { tree.store(Slots.range(k), Slots.value(k, 1)) }
        #expect(tree.nodesInUse > 100)
        for k in 0..<2000 as Range<UInt64> { tree.erase(Slots.range(k)) }
        #expect(tree.count == 0)
        rcu.barrier()
        #expect(tree.nodesInUse == 0)
        tree.bulkLoad((0..<2000).map { RangeEntry(first: Slots.range($0).lowerBound, last: Slots.range($0).upperBound, value: Slots.value($0, 1)) })
        tree.removeAll()
        rcu.barrier()
        #expect(tree.nodesInUse == 0)
    }
}

@Suite("Broken controls: maple tree reclamation")
struct BrokenControlMapleTree {
    /// Nodes reused at once: a reader counts answers no tree could give — or reads a reused
    /// node's values as children and crashes (or stops at an empty child slot). Either is the
    /// failure this control must show, so it runs in a process of its own and must not exit
    /// cleanly. (In-process, the crash took down `swift test` in CI at a75dd17.)
    @Test func readerStressCatchesNodesFreedWithoutAGracePeriod() async {
        await #expect(processExitsWith: .failure) {
            let r = mapleReaderStress(rcu: RCU._brokenForTesting(), seconds: 2.0)
            exit(r.violations > 0 ? 1 : 0)
        }
    }
}
