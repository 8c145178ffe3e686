import CFaultline
import FaultlineSync
import Synchronization

/// The VMA index Linux used before 6.1: an augmented red-black tree keyed by start
/// (`mm->mm_rb`) whose nodes record the free gap before them and the largest such gap in their
/// subtree (`rb_subtree_gap`), a sorted doubly linked list of the same entries
/// (`vm_next`/`vm_prev`), and a per-thread cache of the last four lookups (`vmacache`,
/// invalidated by a per-tree sequence number, `vmacache_seqnum`).
///
/// Not RCU-safe: readers must hold the caller's lock against writers (that is what the
/// maple tree changed).
public final class GapRBTree<Value: MapleValue>: RangeTree, @unchecked Sendable {
    public static var readersNeedNoLock: Bool { false }

    public struct Payload {
        @usableFromInline var first: UInt64
        @usableFromInline var last: UInt64
        @usableFromInline var value: Value
        /// Free indices between the previous entry (or 0) and `first`.
        @usableFromInline var gapBefore: UInt64
        /// Largest `gapBefore` in this subtree.
        @usableFromInline var maxGap: UInt64
        @usableFromInline var prev: UnsafeMutablePointer<RBNode<Payload>>?
        @usableFromInline var next: UnsafeMutablePointer<RBNode<Payload>>?

        @inlinable
        init(first: UInt64, last: UInt64, value: Value, gapBefore: UInt64, maxGap: UInt64,
             prev: UnsafeMutablePointer<RBNode<Payload>>?, next: UnsafeMutablePointer<RBNode<Payload>>?) {
            self.first = first
            self.last = last
            self.value = value
            self.gapBefore = gapBefore
            self.maxGap = maxGap
            self.prev = prev
            self.next = next
        }
    }

    public enum SubtreeGap: RBAugmentation {
        public typealias Payload = GapRBTree.Payload
        @inlinable @inline(__always)
        public static func recompute(_ n: UnsafeMutablePointer<RBNode<Payload>>) {
            var m = n.pointee.payload.gapBefore
            if let l = n.pointee.left, l.pointee.payload.maxGap > m { m = l.pointee.payload.maxGap }
            if let r = n.pointee.right, r.pointee.payload.maxGap > m { m = r.pointee.payload.maxGap }
            n.pointee.payload.maxGap = m
        }
    }

    public typealias Node = UnsafeMutablePointer<RBNode<Payload>>

    @usableFromInline @exclusivity(unchecked) var tree = RBTree<Payload, SubtreeGap>()
    @usableFromInline @exclusivity(unchecked) var head: Node?
    @usableFromInline @exclusivity(unchecked) var tail: Node?
    @usableFromInline @exclusivity(unchecked) var freeNodes: [Node] = []
    /// `vmacache_seqnum`: bumped by every write; a thread's cache is valid only at its value.
    @usableFromInline let seq: UnsafeMutablePointer<Atomic<UInt64>>
    /// Per-thread caches: `[seq, 4 entries]` per thread index.
    @usableFromInline let caches: UnsafeMutableRawPointer
    @usableFromInline let cacheStride: Int
    public var useCache: Bool

    public init(useCache: Bool = true) {
        self.useCache = useCache
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        seq = raw.bindMemory(to: Atomic<UInt64>.self, capacity: 1)
        seq.initialize(to: Atomic(1))
        cacheStride = 64
        caches = UnsafeMutableRawPointer.allocate(byteCount: cacheStride * Int(FL_MAX_THREADS), alignment: 64)
        caches.initializeMemory(as: UInt8.self, repeating: 0, count: cacheStride * Int(FL_MAX_THREADS))
    }

    deinit {
        removeAll()
        for n in freeNodes { n.deallocate() }
        caches.deallocate()
        UnsafeMutableRawPointer(seq).deallocate()
    }

    public var count: Int { tree.count }

    // MARK: Nodes

    @inlinable
    func makeNode(_ first: UInt64, _ last: UInt64, _ value: Value) -> Node {
        let n = freeNodes.popLast() ?? Node.allocate(capacity: 1)
        n.initialize(to: RBNode(payload: Payload(first: first, last: last, value: value, gapBefore: 0,
                                                 maxGap: 0, prev: nil, next: nil)))
        return n
    }

    @inlinable
    func linkAfter(_ n: Node, _ p: Node?) {
        n.pointee.payload.prev = p
        let nx = p == nil ? head : p!.pointee.payload.next
        n.pointee.payload.next = nx
        if let p { p.pointee.payload.next = n } else { head = n }
        if let nx { nx.pointee.payload.prev = n } else { tail = n }
    }

    @inlinable
    func unlink(_ n: Node) {
        let p = n.pointee.payload.prev
        let nx = n.pointee.payload.next
        if let p { p.pointee.payload.next = nx } else { head = nx }
        if let nx { nx.pointee.payload.prev = p } else { tail = p }
    }

    @inlinable @inline(__always)
    func insertNode(_ n: Node, after p: Node?) {
        linkAfter(n, p)
        tree.insert(n) { $0.first < $1.first }
    }

    @inlinable
    func removeNode(_ n: Node) {
        tree.remove(n)
        unlink(n)
        freeNodes.append(n)
    }

    /// `vma_compute_gap()` for `n`, then `vma_gap_update()` up to the root.
    @inlinable
    func refreshGap(_ n: Node) {
        let prevEnd = n.pointee.payload.prev.map { $0.pointee.payload.last &+ 1 } ?? 0
        n.pointee.payload.gapBefore = n.pointee.payload.first - prevEnd
        tree.propagate(from: n)
    }

    // MARK: Lookups

    /// `find_vma()` on the tree: the first node whose last index is ≥ `index`.
    @inlinable @inline(__always)
    func firstEndingAtOrAfter(_ index: UInt64) -> Node? {
        var n = tree.root
        var best: Node? = nil
        while let c = n {
            if c.pointee.payload.last >= index {
                best = c
                if c.pointee.payload.first <= index { return c }
                n = c.pointee.left
            } else {
                n = c.pointee.right
            }
        }
        return best
    }

    @inlinable @inline(__always)
    func entry(_ n: Node) -> RangeEntry<Value> {
        RangeEntry(first: n.pointee.payload.first, last: n.pointee.payload.last, value: n.pointee.payload.value)
    }

    /// `find_vma()` with `vmacache_find()` in front of it.
    @inlinable
    public func lookup(_ index: UInt64) -> RangeEntry<Value>? {
        if useCache {
            let c = caches + currentThreadIndex() &* cacheStride
            let cur = seq.pointee.load(ordering: .relaxed)
            let slot = Int((index >> 12) & 3)
            if c.load(as: UInt64.self) == cur {
                if let n = (c + 8 + slot * 8).load(as: Node?.self),
                   n.pointee.payload.first <= index && index <= n.pointee.payload.last {
                    return entry(n)
                }
            } else {
                // `vmacache_flush()`: a write happened since this thread last looked.
                c.storeBytes(of: cur, as: UInt64.self)
                for i in 0..<4 { (c + 8 + i * 8).storeBytes(of: nil, as: Node?.self) }
            }
            guard let n = firstEndingAtOrAfter(index), n.pointee.payload.first <= index else { return nil }
            (c + 8 + slot * 8).storeBytes(of: n, as: Node?.self)
            return entry(n)
        }
        guard let n = firstEndingAtOrAfter(index), n.pointee.payload.first <= index else { return nil }
        return entry(n)
    }

    @inlinable
    public func find(from index: UInt64) -> RangeEntry<Value>? { firstEndingAtOrAfter(index).map(entry) }

    @inlinable
    public func next(after index: UInt64) -> RangeEntry<Value>? {
        guard index < UInt64.max, var n = firstEndingAtOrAfter(index &+ 1) else { return nil }
        if n.pointee.payload.first <= index {
            guard let nx = n.pointee.payload.next else { return nil }
            n = nx
        }
        return entry(n)
    }

    @inlinable
    public func prev(before index: UInt64) -> RangeEntry<Value>? {
        guard index > 0 else { return nil }
        if let n = firstEndingAtOrAfter(index) {
            return n.pointee.payload.prev.map(entry)
        }
        return tail.map(entry)
    }

    @inlinable
    public func forEach(in window: ClosedRange<UInt64>, _ body: (RangeEntry<Value>) -> Bool) {
        var n = firstEndingAtOrAfter(window.lowerBound)
        while let c = n, c.pointee.payload.first <= window.upperBound {
            if !body(entry(c)) { return }
            n = c.pointee.payload.next
        }
    }

    // MARK: Writes

    @inlinable
    public func store(_ range: ClosedRange<UInt64>, _ value: Value?) {
        let s = range.lowerBound
        let e = range.upperBound
        seq.pointee.wrappingAdd(1, ordering: .relaxed)
        var touched: [Node] = []
        var n = firstEndingAtOrAfter(s)
        var before: Node? = n == nil ? tail : n!.pointee.payload.prev
        while let c = n, c.pointee.payload.first <= e {
            let nx = c.pointee.payload.next
            let cf = c.pointee.payload.first
            let cl = c.pointee.payload.last
            if cf < s && cl > e {
                // `__split_vma()`: keep the head, re-add the tail.
                c.pointee.payload.last = s - 1
                let t = makeNode(e + 1, cl, c.pointee.payload.value)
                insertNode(t, after: c)
                touched.append(t)
                before = c
                break
            } else if cf < s {
                c.pointee.payload.last = s - 1
                before = c
            } else if cl > e {
                // Moving the start right keeps the tree order: nothing else lies in [cf, e].
                c.pointee.payload.first = e + 1
                touched.append(c)
                break
            } else {
                if let nx { touched.append(nx) }
                removeNode(c)
            }
            n = nx
        }
        if let value {
            let node = makeNode(s, e, value)
            insertNode(node, after: before)
            touched.append(node)
            if let nx = node.pointee.payload.next { touched.append(nx) }
        } else if let b = before, let nx = b.pointee.payload.next {
            touched.append(nx)
        } else if before == nil, let h = head {
            touched.append(h)
        }
        for t in touched where t.pointee.parent != nil || tree.root == t { refreshGap(t) }
    }

    public func removeAll() {
        seq.pointee.wrappingAdd(1, ordering: .relaxed)
        var n = head
        while let c = n {
            n = c.pointee.payload.next
            freeNodes.append(c)
        }
        head = nil
        tail = nil
        tree = RBTree()
    }

    public func bulkLoad(_ entries: [RangeEntry<Value>]) {
        precondition(count == 0, "bulkLoad needs an empty tree")
        var prevLast: UInt64? = nil
        for e in entries {
            if let p = prevLast { precondition(e.first > p, "entries must be sorted and disjoint") }
            let n = makeNode(e.first, e.last, e.value)
            insertNode(n, after: tail)
            refreshGap(n)
            prevLast = e.last
        }
        seq.pointee.wrappingAdd(1, ordering: .relaxed)
    }

    // MARK: Gaps (`unmapped_area` / `unmapped_area_topdown`)

    @inlinable
    public func lowestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? {
        precondition(size > 0)
        if let a = lowest(tree.root, size, window) { return a }
        let tailStart = tail.map { $0.pointee.payload.last == UInt64.max ? nil : $0.pointee.payload.last + 1 } ?? 0
        guard let ts = tailStart else { return nil }
        let a = max(ts, window.lowerBound)
        return fits(a, size, window.upperBound) ? a : nil
    }

    @inlinable
    public func highestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? {
        precondition(size > 0)
        let tailStart: UInt64? = tail.map { $0.pointee.payload.last == UInt64.max ? nil : $0.pointee.payload.last + 1 } ?? 0
        if let ts = tailStart {
            let bottom = max(ts, window.lowerBound)
            if fits(bottom, size, window.upperBound) { return window.upperBound - (size - 1) }
        }
        return highest(tree.root, size, window)
    }

    @inlinable
    func lowest(_ node: Node?, _ size: UInt64, _ window: ClosedRange<UInt64>) -> UInt64? {
        guard let n = node, n.pointee.payload.maxGap >= size else { return nil }
        let first = n.pointee.payload.first
        let gapLo = first - n.pointee.payload.gapBefore
        if first > window.lowerBound, let r = lowest(n.pointee.left, size, window) { return r }
        if n.pointee.payload.gapBefore >= size && first > 0 {
            let a = max(gapLo, window.lowerBound)
            if fits(a, size, min(first - 1, window.upperBound)) { return a }
        }
        if n.pointee.payload.last < window.upperBound { return lowest(n.pointee.right, size, window) }
        return nil
    }

    @inlinable
    func highest(_ node: Node?, _ size: UInt64, _ window: ClosedRange<UInt64>) -> UInt64? {
        guard let n = node, n.pointee.payload.maxGap >= size else { return nil }
        let first = n.pointee.payload.first
        let gapLo = first - n.pointee.payload.gapBefore
        if n.pointee.payload.last < window.upperBound, let r = highest(n.pointee.right, size, window) { return r }
        if n.pointee.payload.gapBefore >= size && first > 0 {
            let top = min(first - 1, window.upperBound)
            if fits(max(gapLo, window.lowerBound), size, top) { return top - (size - 1) }
        }
        if gapLo > window.lowerBound { return highest(n.pointee.left, size, window) }
        return nil
    }

    // MARK: Checking

    /// Red-black invariants, order, list/tree agreement and gap summaries (in every build);
    /// returns the nodes checked.
    @discardableResult
    public func _checkInvariants() -> Int {
        _ = tree._checkInvariants { n in
            var m = n.pointee.payload.gapBefore
            if let l = n.pointee.left { m = max(m, l.pointee.payload.maxGap) }
            if let r = n.pointee.right { m = max(m, r.pointee.payload.maxGap) }
            precondition(n.pointee.payload.maxGap == m, "gap rbtree: stale subtree gap")
        }
        var c = tree.first
        var l = head
        var prevLast: UInt64? = nil
        var k = 0
        while let t = c {
            precondition(l == t, "gap rbtree: list and tree disagree")
            let p = t.pointee.payload
            precondition(p.first <= p.last, "gap rbtree: empty range")
            if let pl = prevLast { precondition(p.first > pl, "gap rbtree: overlap or disorder") }
            precondition(p.gapBefore == p.first - (prevLast.map { $0 + 1 } ?? 0), "gap rbtree: wrong gap")
            prevLast = p.last
            c = RBTree<Payload, SubtreeGap>.next(t)
            l = t.pointee.payload.next
            k += 1
        }
        precondition(l == nil && k == count, "gap rbtree: list longer than tree")
        return k
    }
}
