import FaultlineSync
import FaultlineTrees
import Testing

/// The writer's pattern from `mapleReaderStress`, alone, with every retired node poisoned
/// after each write's grace period: a node the tree still reaches after it was retired would
/// be found (poisoned values, broken invariants) at the next check.
@Suite("Maple tree: no retired node stays reachable")
struct MapleRetireTests {
    @Test(arguments: [1, 2, 3, 4])
    func retiredNodesAreUnreachable(seed: Int) {
        let rcu = RCU(batchSize: 1)
        let tree = MapleTree<V>(rcu: rcu, poisonFreedNodes: true)
        tree.bulkLoad((0..<Slots.count).map { RangeEntry(first: Slots.range($0).lowerBound, last: Slots.range($0).upperBound, value: Slots.value($0, 1)) })
        var present = Array(repeating: true, count: Int(Slots.count))
        var rng = SplitMix(seed: UInt64(seed) &* 7919)
        var gen: UInt64 = 2
        for step in 0..<4000 {
            let k = rng.next() % Slots.count
            switch rng.next() % 6 {
            case 0:
                tree.erase(Slots.range(k))
                present[Int(k)] = false
            case 1:
                let m = min(Slots.count - 1, k + rng.next() % 40)
                tree.erase(Slots.range(k).lowerBound...Slots.range(m).upperBound)
                for j in k...m { present[Int(j)] = false }
            default:
                tree.store(Slots.range(k), Slots.value(k, gen))
                present[Int(k)] = true
            }
            gen += 1
            rcu.barrier()
            if step % 50 == 0 {
                tree._checkInvariants()
                for j in 0..<Slots.count {
                    let e = tree.lookup(Slots.range(j).lowerBound)
                    #expect((e != nil) == present[Int(j)], "step \(step) slot \(j)")
                    if let e { #expect(Slots.legal(e), "step \(step) slot \(j)") }
                }
            }
        }
    }
}
