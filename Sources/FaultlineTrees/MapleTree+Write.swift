import FaultlineSync
import Synchronization

/// One entry of a node being rebuilt: its last index and its slot (a value, 0 for NULL, or a
/// child node's address), plus the child's largest gap for internal nodes.
struct MapleEntry {
    var last: UInt64
    var slot: UInt
    var gap: UInt64 = 0
}

/// A node produced by a rebuild: it covers up to `last`, holds `count` entries, and its
/// subtree's largest gap is `gap`.
struct MaplePiece {
    var node: MapleNode
    var last: UInt64
    var gap: UInt64
    var count: Int

    static let none = MaplePiece(node: MapleNode(words: UnsafeMutablePointer(bitPattern: 0x100)!), last: 0, gap: 0, count: 0)
}

/// What one rebuild step returns: at most two nodes. (A leaf step sees at most 16 + 2 entries;
/// an internal step at most 10 - 1 + 2 + 2 children; a merge at most two full nodes; each
/// of these fits in two nodes, so no step ever needs a third — the code checks it.)
struct MaplePieces {
    var count = 0
    var first = MaplePiece.none
    var second = MaplePiece.none

    subscript(i: Int) -> MaplePiece { i == 0 ? first : second }

    mutating func append(_ p: MaplePiece) {
        precondition(count < 2, "maple: a rebuild step produced more than two nodes")
        if count == 0 { first = p } else { second = p }
        count += 1
    }
}

/// Stack scratch for up to `n` entries or pieces (no heap allocation on the write path).
@inline(__always)
func withEntries<R>(_ n: Int, _ body: (UnsafeMutablePointer<MapleEntry>) -> R) -> R {
    withUnsafeTemporaryAllocation(of: MapleEntry.self, capacity: n) { body($0.baseAddress!) }
}

@inline(__always)
func withPieces<R>(_ n: Int, _ body: (UnsafeMutablePointer<MaplePiece>) -> R) -> R {
    withUnsafeTemporaryAllocation(of: MaplePiece.self, capacity: n) { body($0.baseAddress!) }
}

extension MapleCore {
    // MARK: Public writes

    /// `mas_store()`: every index in `range` now maps to `value` (nil erases). Adjacent NULL
    /// ranges are coalesced, so a gap is always one slot in one leaf and the gap summaries
    /// are exact.
    @usableFromInline
    func store(_ first: UInt64, _ last: UInt64, _ v: UInt) {
        precondition(first <= last, "empty range")
        var s = first
        var e = last
        if v == 0 {
            // Widen an erase over its NULL neighbours; one walk when both are in one leaf.
            var after: MapleLeafPosition? = nil
            if s > 0, let p = walker.walk(s - 1) {
                if p.leaf.leafSlot(p.slot) == 0 { s = p.bounds(p.slot).0 }
                if e < p.hi {
                    var q = p
                    while q.slot < q.end && q.leaf.pivot(q.slot) <= e { q.slot += 1 }
                    after = q
                }
            }
            if e < UInt64.max, let p = after ?? walker.walk(e + 1), p.leaf.leafSlot(p.slot) == 0 { e = p.bounds(p.slot).1 }
        }
        beginWrite()
        guard let root = MapleNode(address: rootSlot.pointee.load(ordering: .relaxed)) else {
            guard v != 0 else { return finishWrite(MaplePieces()) }
            let pieces = withEntries(3) { out -> MaplePieces in
                var n = 0
                if s > 0 { out[n] = MapleEntry(last: s - 1, slot: 0); n += 1 }
                out[n] = MapleEntry(last: e, slot: v); n += 1
                if e < UInt64.max { out[n] = MapleEntry(last: UInt64.max, slot: 0); n += 1 }
                return buildNodes(out, n, leaf: true, lo: 0)
            }
            opCountDelta += 1
            height = 1
            return finishWrite(pieces)
        }
        finishWrite(place(root, lo: 0, hi: UInt64.max, newHi: UInt64.max, s: s, e: e, v: v, height: height))
    }

    /// Empties the tree.
    func removeAll() {
        beginWrite()
        if let root = MapleNode(address: rootSlot.pointee.load(ordering: .relaxed)) {
            discardSubtree(root, height: height)
        }
        finishWrite(MaplePieces())
    }

    /// Loads sorted, non-overlapping entries (`gap` carries each one's first index) into an
    /// empty tree bottom-up, leaves packed full (what fork's `__mt_dup` achieves by copying
    /// node by node).
    func bulkLoad(_ entries: [MapleEntry]) {
        precondition(rootSlot.pointee.load(ordering: .relaxed) == 0, "bulkLoad needs an empty tree")
        guard !entries.isEmpty else { return }
        var level: [MapleEntry] = []
        level.reserveCapacity(entries.count * 2 + 1)
        var next: UInt64 = 0
        var prevLast: UInt64? = nil
        for e in entries {
            let first = e.gap
            precondition(first <= e.last && e.slot != 0, "bad entry")
            if let p = prevLast { precondition(first > p, "entries must be sorted and disjoint") }
            if first > next { level.append(MapleEntry(last: first - 1, slot: 0)) }
            level.append(MapleEntry(last: e.last, slot: e.slot))
            prevLast = e.last
            next = e.last &+ 1
        }
        if entries.last!.last < UInt64.max { level.append(MapleEntry(last: UInt64.max, slot: 0)) }
        beginWrite()
        opCountDelta = entries.count
        var leaf = true
        height = 1
        while true {
            let cap = leaf ? MapleNode.leafSlots : MapleNode.internalSlots
            let k = (level.count + cap - 1) / cap
            var up: [MapleEntry] = []
            up.reserveCapacity(k)
            var start = 0
            var lo: UInt64 = 0
            for j in 0..<k {
                let size = level.count / k + (j < level.count % k ? 1 : 0)
                let p = level.withUnsafeMutableBufferPointer { buildNode($0.baseAddress! + start, size, leaf: leaf, lo: lo) }
                up.append(MapleEntry(last: p.last, slot: p.node.address, gap: p.gap))
                lo = p.last &+ 1
                start += size
            }
            if k == 1 {
                var top = MaplePieces()
                top.append(piece(of: MapleNode(address: up[0].slot)!, last: UInt64.max, gap: up[0].gap))
                return finishWrite(top)
            }
            level = up
            leaf = false
            height += 1
        }
    }

    // MARK: Write bookkeeping

    func beginWrite() {
        opAllocated.removeAll()
        opRetired.removeAll()
        opCountDelta = 0
    }

    /// Builds the root from the top pieces, publishes it, then retires what was replaced.
    func finishWrite(_ top: MaplePieces) {
        var newRoot: MaplePiece? = nil
        if top.count > 0 {
            var root = top.first
            if top.count == 2 {
                // `mas_split` reached the root: the tree grows a level.
                root = withEntries(2) { out in
                    out[0] = MapleEntry(last: top.first.last, slot: top.first.node.address, gap: top.first.gap)
                    out[1] = MapleEntry(last: top.second.last, slot: top.second.node.address, gap: top.second.gap)
                    return buildNode(out, 2, leaf: false, lo: 0)
                }
                height += 1
            }
            // A root with one child gives way to the child.
            while height > 1 && root.count == 1 {
                let child = MapleNode(address: root.node.childSlot(0))!
                discard(root.node)
                root = piece(of: child, last: UInt64.max, gap: root.gap)
                height -= 1
            }
            if height == 1 && root.count == 1 && root.node.leafSlot(0) == 0 {
                discard(root.node)
            } else {
                newRoot = root
            }
        }
        if newRoot == nil { height = 0 }
        if let r = newRoot?.node, r.parentWordRelaxed() & ~MapleNode.metaMask != 0 { r.setParent(0) }
        for n in opAllocated.buffer where n.parentWordRelaxed() & MapleNode.freshBit != 0 {
            n.setParentWord(n.parentWordRelaxed() & ~MapleNode.freshBit)
        }
        // Publish (`rcu_assign_pointer(mt->ma_root, …)`), then mark the old nodes dead.
        rootSlot.pointee.store(newRoot?.node.address ?? 0, ordering: .releasing)
        entryCount.pointee.wrappingAdd(opCountDelta, ordering: .relaxed)
        guard !opRetired.isEmpty else { return }
        let retired = opRetired.buffer
        for n in retired {
            n.setParentWord((n.parentWordRelaxed() & MapleNode.metaMask) | n.address)
        }
        if let rcu = rcuRef {
            rcu._withUnsafeGuaranteedRef { allocator.retire(retired, rcu: $0) }
        } else {
            for n in retired { allocator.release(n) }
        }
    }

    /// A node leaves the tree: freed now if this write built it, else retired.
    func discard(_ n: MapleNode) {
        if n.parentWordRelaxed() & MapleNode.freshBit != 0 {
            n.setParentWord(0)
            allocator.release(n)
        } else {
            opRetired.append(n)
        }
    }

    /// Discards a whole subtree, counting the values that go with it.
    func discardSubtree(_ n: MapleNode, height h: Int) {
        let end = MapleNode.end(n.parentWordRelaxed())
        if h == 1 {
            for i in 0...end where n.leafSlot(i) != 0 { opCountDelta -= 1 }
        } else {
            for i in 0...end { discardSubtree(MapleNode(address: n.childSlot(i))!, height: h - 1) }
        }
        discard(n)
    }

    // MARK: Reading and building nodes

    /// Writes `n`'s entries (the last one ending at `hi`) to `out`; returns how many.
    @inline(__always)
    func readEntries(_ n: MapleNode, hi: UInt64, into out: UnsafeMutablePointer<MapleEntry>) -> Int {
        let w = n.parentWordRelaxed()
        let end = MapleNode.end(w)
        if MapleNode.isLeaf(w) {
            for i in 0...end { out[i] = MapleEntry(last: i < end ? n.pivot(i) : hi, slot: n.leafSlot(i)) }
        } else {
            for i in 0...end { out[i] = MapleEntry(last: i < end ? n.pivot(i) : hi, slot: n.childSlot(i), gap: n.gap(i)) }
        }
        return end + 1
    }

    /// Splits `n` entries evenly into as few nodes as fit (`mab_calc_split`).
    func buildNodes(_ entries: UnsafeMutablePointer<MapleEntry>, _ n: Int, leaf: Bool, lo: UInt64) -> MaplePieces {
        let cap = leaf ? MapleNode.leafSlots : MapleNode.internalSlots
        precondition(n > 0 && n <= 2 * cap, "maple: \(n) entries for one rebuild step")
        var out = MaplePieces()
        if n <= cap {
            out.append(buildNode(entries, n, leaf: leaf, lo: lo))
        } else {
            let left = (n + 1) / 2
            let a = buildNode(entries, left, leaf: leaf, lo: lo)
            out.append(a)
            out.append(buildNode(entries + left, n - left, leaf: leaf, lo: a.last &+ 1))
        }
        return out
    }

    func buildNode(_ entries: UnsafeMutablePointer<MapleEntry>, _ count: Int, leaf: Bool, lo: UInt64) -> MaplePiece {
        let node = allocator.allocate()
        opAllocated.append(node)
        var gap: UInt64 = 0
        var first = lo
        for i in 0..<count {
            let e = entries[i]
            if i < count - 1 { node.setPivot(i, e.last) }
            if leaf {
                node.setLeafSlot(i, e.slot)
                if e.slot == 0 { gap = max(gap, span(first, e.last)) }
            } else {
                node.setChildSlot(i, e.slot)
                node.setGap(i, e.gap)
                gap = max(gap, e.gap)
                MapleNode(address: e.slot)!.setParent(node.address)
            }
            first = e.last &+ 1
        }
        node.setParentWord(UInt(count - 1) | (leaf ? MapleNode.leafBit : 0) | MapleNode.freshBit)
        return MaplePiece(node: node, last: entries[count - 1].last, gap: gap, count: count)
    }

    @inline(__always)
    func piece(of child: MapleNode, last: UInt64, gap: UInt64) -> MaplePiece {
        MaplePiece(node: child, last: last, gap: gap, count: MapleNode.end(child.parentWordRelaxed()) + 1)
    }

    // MARK: The rewrite

    /// Stores `[s, e] → v` inside `node`, which covers `[lo, hi]` and is to cover `[lo, newHi]`
    /// (`newHi > hi` only when the store runs past `hi`, so then `e == newHi`). Entries of the
    /// node outside `[s, e]` stay. Returns the replacement nodes, same height, covering
    /// `[lo, newHi]` — or `node` itself when the store changed it in place (`slotStore`,
    /// `nodeStore`).
    func place(_ node: MapleNode, lo: UInt64, hi: UInt64, newHi: UInt64,
               s: UInt64, e: UInt64, v: UInt, height h: Int) -> MaplePieces {
        if h == 1 {
            return withEntries(MapleNode.leafSlots) { old in
                let count = readEntries(node, hi: hi, into: old)
                if newHi == hi, let p = slotStore(node, old, count, lo: lo, hi: hi, s: s, e: e, v: v) { return p }
                discard(node)
                return placeInLeaf(old, count, lo: lo, s: s, e: e, v: v)
            }
        }
        // Children i_s (holds s) … i_e (holds min(e, hi)), found from the pivots alone: most
        // stores end in one child and leave this node as it is but for one slot.
        let count = MapleNode.end(node.parentWordRelaxed()) + 1
        let b = min(e, hi)
        var iS = 0
        while iS < count - 1 && node.pivot(iS) < s { iS += 1 }
        var iE = iS
        while iE < count - 1 && node.pivot(iE) < b { iE += 1 }
        var inner = MaplePieces()
        if iS == iE {
            let loS = iS == 0 ? lo : node.pivot(iS - 1) + 1
            let lastS = iS < count - 1 ? node.pivot(iS) : hi
            let childNewHi = iS == count - 1 ? newHi : lastS
            inner = place(MapleNode(address: node.childSlot(iS))!, lo: loS, hi: lastS, newHi: childNewHi,
                          s: s, e: e, v: v, height: h - 1)
            if newHi == hi, let p = nodeStore(node, count, slot: iS, child: inner, childHeight: h - 1, hi: hi) { return p }
        }
        return withEntries(MapleNode.leafSlots) { old in
            _ = readEntries(node, hi: hi, into: old)
            let loS = iS == 0 ? lo : old[iS - 1].last + 1
            let childS = MapleNode(address: old[iS].slot)!
            discard(node)
            return withPieces(16) { kids in
                var n = 0
                for i in 0..<iS {
                    kids[n] = piece(of: MapleNode(address: old[i].slot)!, last: old[i].last, gap: old[i].gap)
                    n += 1
                }
                func add(_ p: MaplePieces) {
                    for k in 0..<p.count { kids[n] = p[k]; n += 1 }
                }
                if iS == iE {
                    add(inner)
                } else {
                    for i in (iS + 1)..<iE { discardSubtree(MapleNode(address: old[i].slot)!, height: h - 1) }
                    // The new entry goes to the left child, which now reaches e; the right is cut.
                    add(place(childS, lo: loS, hi: old[iS].last, newHi: e, s: s, e: e, v: v, height: h - 1))
                    let childE = MapleNode(address: old[iE].slot)!
                    if e < old[iE].last {
                        add(trimLeft(childE, lo: old[iE - 1].last + 1, hi: old[iE].last, newLo: e + 1, height: h - 1))
                    } else {
                        discardSubtree(childE, height: h - 1)
                    }
                }
                for i in (iE + 1)..<max(iE + 1, count) {
                    kids[n] = piece(of: MapleNode(address: old[i].slot)!, last: old[i].last, gap: old[i].gap)
                    n += 1
                }
                return rebuildParent(kids, n, childHeight: h - 1, lo: lo)
            }
        }
    }

    /// `mas_wr_slot_store()` at its simplest: `[s, e]` is exactly one slot of the leaf, so the
    /// new value is one release store into the published node (a reader sees the old value or
    /// the new, both whole). nil when the store changes the leaf's boundaries.
    @inline(__always)
    func slotStore(_ node: MapleNode, _ old: UnsafeMutablePointer<MapleEntry>, _ count: Int,
                   lo: UInt64, hi: UInt64, s: UInt64, e: UInt64, v: UInt) -> MaplePieces? {
        var i = 0
        while old[i].last < e { i += 1 }
        let first = i == 0 ? lo : old[i - 1].last &+ 1
        guard first == s, old[i].last == e else { return nil }
        // A NULL slot between two NULL neighbours would break the coalescing rule; `store`
        // widened an erase to its NULL neighbours, so this only guards a non-NULL → NULL store.
        if v == 0 && ((i > 0 && old[i - 1].slot == 0) || (i < count - 1 && old[i + 1].slot == 0)) { return nil }
        let was = old[i].slot
        if was != v {
            node.setLeafSlot(i, v)
            opCountDelta += (v != 0 ? 1 : 0) - (was != 0 ? 1 : 0)
            old[i].slot = v
        }
        var gap: UInt64 = 0
        var f = lo
        for k in 0..<count {
            if old[k].slot == 0 { gap = max(gap, span(f, old[k].last)) }
            f = old[k].last &+ 1
        }
        var out = MaplePieces()
        out.append(MaplePiece(node: node, last: hi, gap: gap, count: count))
        return out
    }

    /// `mas_wr_node_store()` one level up: the child's replacement is one node of legal fill
    /// covering the child's old range, so this node keeps its pivots and takes the new child
    /// with one release store of the slot (the child's own contents were written before it);
    /// the gap summary, writer-only data, is updated in place. nil when the node must be
    /// rebuilt (the child split, merged or under-fills).
    @inline(__always)
    func nodeStore(_ node: MapleNode, _ count: Int, slot i: Int, child: MaplePieces, childHeight: Int,
                   hi: UInt64) -> MaplePieces? {
        guard child.count == 1 else { return nil }
        let c = child.first
        let minFill = childHeight == 1 ? MapleNode.leafMin : MapleNode.internalMin
        guard c.count >= minFill else { return nil }
        if c.node.address != node.childSlot(i) {
            c.node.setParent(node.address)
            node.setChildSlot(i, c.node.address)
        }
        if node.gap(i) != c.gap { node.setGap(i, c.gap) }
        var gap: UInt64 = 0
        for k in 0..<count { gap = max(gap, node.gap(k)) }
        var out = MaplePieces()
        out.append(MaplePiece(node: node, last: hi, gap: gap, count: count))
        return out
    }

    func placeInLeaf(_ old: UnsafeMutablePointer<MapleEntry>, _ count: Int, lo: UInt64,
                     s: UInt64, e: UInt64, v: UInt) -> MaplePieces {
        withEntries(MapleNode.leafSlots + 3) { out in
            var n = 0
            var first = lo
            var placed = false
            for k in 0..<count {
                let ent = old[k]
                let entFirst = first
                first = ent.last &+ 1
                if ent.last < s || entFirst > e {
                    out[n] = ent; n += 1
                    continue
                }
                if ent.slot != 0 { opCountDelta -= 1 }
                if entFirst < s {
                    out[n] = MapleEntry(last: s - 1, slot: ent.slot); n += 1
                    if ent.slot != 0 { opCountDelta += 1 }
                }
                if !placed {
                    out[n] = MapleEntry(last: e, slot: v); n += 1
                    if v != 0 { opCountDelta += 1 }
                    placed = true
                }
                if ent.last > e {
                    out[n] = MapleEntry(last: ent.last, slot: ent.slot); n += 1
                    if ent.slot != 0 { opCountDelta += 1 }
                }
            }
            if !placed {
                out[n] = MapleEntry(last: e, slot: v); n += 1
                if v != 0 { opCountDelta += 1 }
            }
            return buildNodes(out, n, leaf: true, lo: lo)
        }
    }

    /// Drops everything below `newLo` from `node` (covering `[lo, hi]`, `lo < newLo <= hi`).
    func trimLeft(_ node: MapleNode, lo: UInt64, hi: UInt64, newLo: UInt64, height h: Int) -> MaplePieces {
        withEntries(MapleNode.leafSlots) { old in
            let count = readEntries(node, hi: hi, into: old)
            discard(node)
            if h == 1 {
                var k = 0
                while old[k].last < newLo {
                    if old[k].slot != 0 { opCountDelta -= 1 }
                    k += 1
                }
                return buildNodes(old + k, count - k, leaf: true, lo: newLo)
            }
            return withPieces(16) { kids in
                var n = 0
                var childLo = lo
                for k in 0..<count {
                    let ent = old[k]
                    let child = MapleNode(address: ent.slot)!
                    if ent.last < newLo {
                        discardSubtree(child, height: h - 1)
                    } else if childLo < newLo {
                        let p = trimLeft(child, lo: childLo, hi: ent.last, newLo: newLo, height: h - 1)
                        for j in 0..<p.count { kids[n] = p[j]; n += 1 }
                    } else {
                        kids[n] = piece(of: child, last: ent.last, gap: ent.gap)
                        n += 1
                    }
                    childLo = ent.last &+ 1
                }
                return rebuildParent(kids, n, childHeight: h - 1, lo: newLo)
            }
        }
    }

    /// Builds the parent level over `kids` after repairing under-filled ones (`mas_rebalance`),
    /// split in two if it overflows (`mas_split`).
    func rebuildParent(_ kids: UnsafeMutablePointer<MaplePiece>, _ count: Int, childHeight: Int, lo: UInt64) -> MaplePieces {
        var n = count
        let minFill = childHeight == 1 ? MapleNode.leafMin : MapleNode.internalMin
        var scan = 0
        while n > 1 {
            while scan < n && kids[scan].count >= minFill { scan += 1 }
            if scan == n { break }
            let j = scan == n - 1 ? scan - 1 : scan
            let aLo = j == 0 ? lo : kids[j - 1].last + 1
            let m = merge(kids[j], kids[j + 1], height: childHeight, lo: aLo)
            kids[j] = m.first
            if m.count == 2 {
                kids[j + 1] = m.second
            } else {
                for k in (j + 1)..<(n - 1) { kids[k] = kids[k + 1] }
                n -= 1
            }
            scan = max(j - 1, 0)
        }
        return withEntries(2 * MapleNode.internalSlots) { entries in
            for k in 0..<n { entries[k] = MapleEntry(last: kids[k].last, slot: kids[k].node.address, gap: kids[k].gap) }
            return buildNodes(entries, n, leaf: false, lo: lo)
        }
    }

    /// Two adjacent nodes of the same height become one or two. For internal nodes the
    /// concatenated children are repaired first: an under-filled node can sit below an
    /// under-filled parent when a store removed most of a subtree.
    func merge(_ a: MaplePiece, _ b: MaplePiece, height: Int, lo: UInt64) -> MaplePieces {
        withEntries(2 * MapleNode.leafSlots) { entries in
            var n = readEntries(a.node, hi: a.last, into: entries)
            n += readEntries(b.node, hi: b.last, into: entries + n)
            discard(a.node)
            discard(b.node)
            if height == 1 { return buildNodes(entries, n, leaf: true, lo: lo) }
            return withPieces(2 * MapleNode.internalSlots) { kids in
                for k in 0..<n { kids[k] = piece(of: MapleNode(address: entries[k].slot)!, last: entries[k].last, gap: entries[k].gap) }
                return rebuildParent(kids, n, childHeight: height - 1, lo: lo)
            }
        }
    }
}
