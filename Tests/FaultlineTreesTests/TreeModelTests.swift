import FaultlineSync
import FaultlineTrees
import PropertyBased
import Testing

let opGen = zip(Gen.int(in: 0...11), Gen.uint64(in: 0...650), Gen.uint64(in: 1...48), Gen.uint(in: 1...1_000_000))
    .map { TreeOp.make(kind: $0, offset: $1, length: $2, value: $3) }

@Suite("Range trees against a sorted-array model")
struct TreeModelTests {
    @Test func mapleTreeMatchesModel() async {
        await propertyCheck(count: 40, input: opGen.array(of: 1...200)) { ops in
            let t = MapleTree<V>(rcu: nil)
            #expect(checkAgainstModel(t, ops) { $0._checkInvariants() } == nil)
        }
    }

    @Test func gapRBTreeMatchesModel() async {
        await propertyCheck(count: 40, input: opGen.array(of: 1...200)) { ops in
            let t = GapRBTree<V>()
            #expect(checkAgainstModel(t, ops) { $0._checkInvariants() } == nil)
        }
    }

    @Test func sortedArrayMatchesModel() async {
        await propertyCheck(count: 40, input: opGen.array(of: 1...200)) { ops in
            let t = SortedRangeArray<V>()
            #expect(checkAgainstModel(t, ops) { _ in } == nil)
        }
    }

    /// Long sequences to reach deeper trees (many entries, splits and merges at every level).
    @Test(arguments: [1, 2, 3])
    func mapleTreeLongSequences(seed: UInt64) {
        var rng = SplitMix(seed: seed)
        let t = MapleTree<V>(rcu: nil)
        var model = RangeModel()
        for step in 0..<6000 {
            let first = rng.next() % 20_000
            let len = 1 + rng.next() % (step % 500 == 0 ? 3000 : 30)
            let erase = rng.next() % 4 == 0
            let v = V(UInt(1 + rng.next() % 1_000_000))
            t.store(first...(first + len - 1), erase ? nil : v)
            model.store(first...(first + len - 1), erase ? nil : v)
            if step % 100 == 0 {
                t._checkInvariants()
                #expect(compare(t, model) == nil, "step \(step)")
            }
        }
        t._checkInvariants()
        #expect(compare(t, model) == nil)
        #expect(t.depth >= 3)
    }
}

typealias SplitMix = SplitMix64
