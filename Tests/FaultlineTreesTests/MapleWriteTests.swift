import FaultlineSync
import FaultlineTrees
import Testing

/// The maple tree's in-place writes (`mas_wr_slot_store`, `mas_wr_node_store`): what each
/// store builds, and that the tree stays what the sorted-array model says.
@Suite("Maple tree: writes build only what changes")
struct MapleWriteTests {
    /// 2,000 four-page ranges with one-page gaps: a tree four levels deep.
    static func loaded(rcu: RCU?) -> MapleTree<V> {
        let t = MapleTree<V>(rcu: rcu)
        t.bulkLoad((0..<2000).map { RangeEntry(first: UInt64($0) * 5 * 4096, last: UInt64($0) * 5 * 4096 + 4 * 4096 - 1, value: V(UInt($0) + 1)) })
        return t
    }

    @Test func aStoreOverOneWholeEntryBuildsNoNode() {
        let t = Self.loaded(rcu: nil)
        #expect(t.depth >= 3)
        let before = t.nodesBuilt
        let r: ClosedRange<UInt64> = (700 * 5 * 4096)...(700 * 5 * 4096 + 4 * 4096 - 1)
        t.store(r, V(99_999))
        #expect(t.nodesBuilt == before)
        #expect(t.lookup(r.lowerBound + 4096)?.value == V(99_999))
        #expect(t.lookup(r.lowerBound + 4096)?.first == r.lowerBound)
        t._checkInvariants()
    }

    @Test func anEraseInsideOneLeafBuildsOneNode() {
        let t = Self.loaded(rcu: nil)
        var model = RangeModel()
        for k in 0..<2000 { model.store((UInt64(k) * 5 * 4096)...(UInt64(k) * 5 * 4096 + 4 * 4096 - 1), V(UInt(k) + 1)) }
        for k in stride(from: 3, to: 2000, by: 97) {
            let r: ClosedRange<UInt64> = (UInt64(k) * 5 * 4096)...(UInt64(k) * 5 * 4096 + 4 * 4096 - 1)
            let before = t.nodesBuilt
            t.erase(r)
            model.store(r, nil)
            let built = t.nodesBuilt - before
            // Bulk loading packs 16 slots (8 entries and their gaps) per leaf. An erase widens
            // over the NULL neighbours: inside one leaf that is one new leaf, the ancestors
            // taking it in place; for a leaf's first entry the gap before it is in the leaf to
            // the left, so the store spans two leaves and the path above them is rebuilt.
            if k % 8 == 0 {
                #expect(built > 1 && built <= 2 * t.depth, "k \(k): \(built) nodes")
            } else {
                #expect(built == 1, "k \(k): \(built) nodes")
            }
            t._checkInvariants()
        }
        #expect(t.entries() == model.entries)
    }

    @Test func inPlaceWritesKeepTheModel() {
        let rcu = RCU()
        let t = Self.loaded(rcu: rcu)
        var model = RangeModel()
        for k in 0..<2000 { model.store((UInt64(k) * 5 * 4096)...(UInt64(k) * 5 * 4096 + 4 * 4096 - 1), V(UInt(k) + 1)) }
        var rng = SplitMix(seed: 5)
        for step in 0..<6000 {
            let k = rng.next() % 2000
            let base = k * 5 * 4096
            let r: ClosedRange<UInt64>
            switch rng.next() % 4 {
            case 0: r = base...(base + 4 * 4096 - 1)                   // a whole entry: in place
            case 1: r = (base + 4096)...(base + 2 * 4096 - 1)          // inside one: a new leaf
            case 2: r = base...(base + 5 * 4096 * (1 + rng.next() % 30)) // across leaves: a new path
            default: r = (base + 4 * 4096)...(base + 5 * 4096 - 1)     // a gap
            }
            let v: V? = rng.next() % 3 == 0 ? nil : V(UInt(step) + 10_000)
            t.store(r, v)
            model.store(r, v)
            if step % 500 == 0 {
                t._checkInvariants()
                #expect(t.entries() == model.entries, "step \(step)")
            }
        }
        rcu.barrier()
        t._checkInvariants()
        #expect(t.entries() == model.entries)
    }
}
