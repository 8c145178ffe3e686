import FaultlineSync
import FaultlineTestSupport
import Testing

struct Key {
    var key: Int
    var maxKey: Int
}

enum MaxKey: RBAugmentation {
    typealias Payload = Key
    static func recompute(_ n: UnsafeMutablePointer<RBNode<Key>>) {
        var m = n.pointee.payload.key
        if let l = n.pointee.left { m = max(m, l.pointee.payload.maxKey) }
        if let r = n.pointee.right { m = max(m, r.pointee.payload.maxKey) }
        n.pointee.payload.maxKey = m
    }
}

@Suite("RBTree")
struct RBTreeTests {
    @Test func randomInsertRemoveKeepsInvariantsAndAugmentation() {
        var rng = SplitMix(seed: 42)
        var tree = RBTree<Key, MaxKey>()
        var live: [UnsafeMutablePointer<RBNode<Key>>] = []
        var model: [Int] = []
        for step in 0..<4000 {
            if live.isEmpty || rng.next() % 3 != 0 {
                let k = Int(rng.next() % 1000)
                let n = UnsafeMutablePointer<RBNode<Key>>.allocate(capacity: 1)
                n.initialize(to: RBNode(payload: Key(key: k, maxKey: k)))
                tree.insert(n) { $0.key < $1.key }
                live.append(n)
                model.append(k)
            } else {
                let i = Int(rng.next() % UInt64(live.count))
                let n = live.remove(at: i)
                model.remove(at: model.firstIndex(of: n.pointee.payload.key)!)
                tree.remove(n)
                n.deallocate()
            }
            if step % 50 == 0 {
                tree._checkInvariants { n in
                    var m = n.pointee.payload.key
                    if let l = n.pointee.left { m = max(m, l.pointee.payload.maxKey) }
                    if let r = n.pointee.right { m = max(m, r.pointee.payload.maxKey) }
                    precondition(n.pointee.payload.maxKey == m)
                }
                var inOrder: [Int] = []
                var c = tree.first
                while let n = c {
                    inOrder.append(n.pointee.payload.key)
                    c = RBTree<Key, MaxKey>.next(n)
                }
                #expect(inOrder == model.sorted())
                #expect(tree.count == model.count)
            }
        }
        for n in live { n.deallocate() }
    }

    @Test func heightStaysLogarithmic() {
        var tree = RBTree<Key, RBNoAugmentation<Key>>()
        var nodes: [UnsafeMutablePointer<RBNode<Key>>] = []
        for k in 0..<65_530 {   // sorted insertion is the worst case for an unbalanced tree
            let n = UnsafeMutablePointer<RBNode<Key>>.allocate(capacity: 1)
            n.initialize(to: RBNode(payload: Key(key: k, maxKey: k)))
            tree.insert(n) { $0.key < $1.key }
            nodes.append(n)
        }
        let blackHeight = tree._checkInvariants()
        #expect(blackHeight <= 17)
        var backwards: [Int] = []
        var c = tree.last
        while let n = c, backwards.count < 3 {
            backwards.append(n.pointee.payload.key)
            c = RBTree<Key, RBNoAugmentation<Key>>.prev(n)
        }
        #expect(backwards == [65_529, 65_528, 65_527])
        for n in nodes { tree.remove(n); n.deallocate() }
        #expect(tree.isEmpty)
    }
}
