extension MapleCore {
    /// Checks every structural invariant, trapping on the first violation: pivots strictly
    /// increasing inside each node's bounds; uniform height; fill bounds (non-root leaves ≥ 6
    /// slots, internal nodes ≥ 4 children, a non-leaf root ≥ 2); gap summaries exact; parent
    /// links; no dead node reachable; no two adjacent NULL ranges anywhere; the value count.
    /// Writer side (call with writers excluded). Compiled into every build, release too, so
    /// the release-built stress and fuzzers check the tree; returns the nodes checked.
    @discardableResult
    func _checkInvariants() -> Int {
        guard let root = MapleNode(address: rootSlot.pointee.load(ordering: .acquiring)) else {
            precondition(height == 0 && count == 0, "maple: empty root but height \(height), count \(count)")
            return 0
        }
        var nodes = 0
        precondition(root.parentWord() & ~MapleNode.metaMask == 0, "maple: root has a parent")
        var values = 0
        var prevNull = false
        var expectNext: UInt64 = 0
        func walk(_ n: MapleNode, lo: UInt64, hi: UInt64, depth: Int, isRoot: Bool) -> UInt64 {
            let w = n.parentWord()
            nodes += 1
            precondition(!n.isDead(), "maple: dead node reachable")
            precondition(w & MapleNode.freshBit == 0, "maple: fresh bit left on a published node")
            let end = MapleNode.end(w)
            let leaf = MapleNode.isLeaf(w)
            precondition(leaf == (depth == height), "maple: leaf at depth \(depth), height \(height)")
            precondition(end < (leaf ? MapleNode.leafSlots : MapleNode.internalSlots), "maple: end \(end) too large")
            if !isRoot {
                precondition(end + 1 >= (leaf ? MapleNode.leafMin : MapleNode.internalMin), "maple: under-filled node (\(end + 1))")
            } else if !leaf {
                precondition(end >= 1, "maple: internal root with one child")
            }
            var first = lo
            var maxGap: UInt64 = 0
            for i in 0...end {
                let last = i < end ? n.pivot(i) : hi
                precondition(last >= first, "maple: pivot \(last) below range start \(first)")
                if i < end { precondition(last < hi, "maple: pivot \(last) not below node max \(hi)") }
                if leaf {
                    precondition(first == expectNext, "maple: leaves not contiguous")
                    let v = n.leafSlot(i)
                    if v == 0 {
                        precondition(!prevNull, "maple: adjacent NULL ranges at \(first)")
                        maxGap = max(maxGap, span(first, last))
                        prevNull = true
                    } else {
                        values += 1
                        prevNull = false
                    }
                    expectNext = last &+ 1
                } else {
                    let child = MapleNode(address: n.childSlot(i))!
                    precondition(child.parentWord() & ~MapleNode.metaMask == n.address, "maple: bad parent link")
                    let g = walk(child, lo: first, hi: last, depth: depth + 1, isRoot: false)
                    precondition(n.gap(i) == g, "maple: gap \(n.gap(i)) recorded, \(g) actual")
                    maxGap = max(maxGap, g)
                }
                first = last &+ 1
            }
            return maxGap
        }
        _ = walk(root, lo: 0, hi: UInt64.max, depth: 1, isRoot: true)
        precondition(values == count, "maple: count \(count) but \(values) values")
        return nodes
    }
}
