import FaultlineSync
import FaultlineTrees
import Testing

/// Linux's `max_map_count`.
let maxMapCount: UInt64 = 65_530

func buildAndTearDown<T: RangeTree>(_ tree: T, check: (T) -> Void) where T.Value == V {
    // VMA-like: 4 pages each, 1-page gaps, in page units.
    for k in 0..<maxMapCount { tree.store((k * 5)...(k * 5 + 3), V(UInt(k + 1))) }
    check(tree)
    #expect(tree.count == Int(maxMapCount))
    var misses = 0
    for k in stride(from: 0, to: maxMapCount, by: 7) where tree.lookup(k * 5 + 2)?.value != V(UInt(k + 1)) { misses += 1 }
    #expect(misses == 0)
    #expect(tree.lowestGap(size: 1, in: 0...UInt64.max) == 4)
    #expect(tree.lowestGap(size: 2, in: 0...UInt64.max) == maxMapCount * 5 - 1)
    #expect(tree.highestGap(size: 1, in: 0...(maxMapCount * 5 - 2)) == maxMapCount * 5 - 6)
    // Tear down from the middle outwards, a few at a time.
    for k in stride(from: 0, to: maxMapCount, by: 3) { tree.erase((k * 5)...(min(k + 2, maxMapCount - 1) * 5 + 3)) }
    check(tree)
    #expect(tree.count == 0)
}

@Suite("65,530 ranges")
struct LargeTreeTests {
    @Test func mapleTree() {
        let rcu = RCU()
        let t = MapleTree<V>(rcu: rcu)
        buildAndTearDown(t) { $0._checkInvariants() }
        #expect(t.depth == 0)
        rcu.barrier()
        #expect(t.nodesInUse == 0)
        t.bulkLoad((0..<maxMapCount).map { RangeEntry(first: $0 * 5, last: $0 * 5 + 3, value: V(UInt($0 + 1))) })
        t._checkInvariants()
        #expect(t.depth <= 5)
        #expect(t.lookup(5 * 40_000 + 1)?.value == V(40_001))
    }

    @Test func gapRBTree() {
        let t = GapRBTree<V>()
        buildAndTearDown(t) { $0._checkInvariants() }
    }

    @Test func sortedArray() {
        buildAndTearDown(SortedRangeArray<V>()) { _ in }
    }
}
