import FaultlineSync

/// `struct rb_root_cached i_mmap` with `vma_interval_tree_*` (mm/interval_tree.c): a file's
/// VMAs in an rbtree ordered by their first file page (`vm_pgoff`), each node carrying the
/// largest last page of its subtree, so a walk over file pages `[first, last]` visits only the
/// VMAs that map some of them. Callers hold the file's `i_mmap_rwsem` (`MMFile.iMmapLock`).
struct VMAIntervalTree {
    /// `vma->shared.rb` and what the walk needs: the VMA, its address space, its file pages
    /// `[first, last]` and the subtree's largest `last` (`shared.rb_subtree_last`).
    struct Entry {
        var vma: VMARef
        var mm: Unmanaged<AddressSpace>
        var first: UInt64
        var last: UInt64
        var subtreeLast: UInt64
    }

    enum SubtreeLast: RBAugmentation {
        typealias Payload = Entry
        @inline(__always)
        static func recompute(_ node: UnsafeMutablePointer<RBNode<Entry>>) {
            var m = node.pointee.payload.last
            if let l = node.pointee.left, l.pointee.payload.subtreeLast > m { m = l.pointee.payload.subtreeLast }
            if let r = node.pointee.right, r.pointee.payload.subtreeLast > m { m = r.pointee.payload.subtreeLast }
            node.pointee.payload.subtreeLast = m
        }
    }

    typealias Node = UnsafeMutablePointer<RBNode<Entry>>

    var tree = RBTree<Entry, SubtreeLast>()
    /// Where each VMA's node is (Linux embeds the node in the VMA).
    var nodes: [VMARef: Node] = [:]

    var count: Int { tree.count }

    /// File pages `[first, last]` of `v` (an empty VMA cannot be linked).
    static func pages(of v: VMARef) -> (UInt64, UInt64) {
        let n = (v.vmEnd &- v.vmStart) >> Linux.pageShift
        return (v.vmPgoff, v.vmPgoff &+ n &- 1)
    }

    /// `vma_interval_tree_insert()`.
    mutating func insert(_ v: VMARef, _ mm: AddressSpace) {
        precondition(nodes[v] == nil, "i_mmap: VMA linked twice")
        let (first, last) = Self.pages(of: v)
        let node = Node.allocate(capacity: 1)
        node.initialize(to: RBNode(payload: Entry(vma: v, mm: .passUnretained(mm), first: first, last: last, subtreeLast: last)))
        nodes[v] = node
        tree.insert(node) { a, b in a.first < b.first }
    }

    /// `vma_interval_tree_remove()`.
    mutating func remove(_ v: VMARef) {
        guard let node = nodes.removeValue(forKey: v) else { preconditionFailure("i_mmap: VMA not linked") }
        tree.remove(node)
        node.deinitialize(count: 1)
        node.deallocate()
    }

    /// The VMA's range changed (`vma_prepare` removed it, `vma_complete` inserts it again).
    mutating func update(_ v: VMARef) {
        guard let node = nodes[v] else { preconditionFailure("i_mmap: VMA not linked") }
        tree.remove(node)
        let (first, last) = Self.pages(of: v)
        node.pointee.payload.first = first
        node.pointee.payload.last = last
        node.pointee.payload.subtreeLast = last
        tree.insert(node) { a, b in a.first < b.first }
    }

    /// `vma_interval_tree_foreach()`: every VMA mapping some of file pages `[first, last]`,
    /// in order of first page.
    func forEachOverlap(_ first: UInt64, _ last: UInt64, _ body: (VMARef, AddressSpace) -> Void) {
        func visit(_ n: Node?) {
            guard let n, n.pointee.payload.subtreeLast >= first else { return }
            visit(n.pointee.left)
            let e = n.pointee.payload
            guard e.first <= last else { return }
            if e.last >= first { body(e.vma, e.mm.takeUnretainedValue()) }
            visit(n.pointee.right)
        }
        visit(tree.root)
    }

    /// Red-black shape, order, exact subtree maxima, and every node's range still its VMA's.
    func _checkInvariants() {
        tree._checkInvariants { n in
            let e = n.pointee.payload
            let (first, last) = Self.pages(of: e.vma)
            precondition(e.first == first && e.last == last, "i_mmap: node holds pages \(e.first)–\(e.last), its VMA \(first)–\(last)")
            var m = e.last
            if let l = n.pointee.left {
                precondition(l.pointee.payload.first <= e.first, "i_mmap: out of order")
                m = max(m, l.pointee.payload.subtreeLast)
            }
            if let r = n.pointee.right {
                precondition(r.pointee.payload.first >= e.first, "i_mmap: out of order")
                m = max(m, r.pointee.payload.subtreeLast)
            }
            precondition(e.subtreeLast == m, "i_mmap: subtree last \(e.subtreeLast), actual \(m)")
        }
        precondition(nodes.count == tree.count, "i_mmap: \(nodes.count) VMAs indexed, \(tree.count) linked")
    }

    mutating func removeAll() {
        for (_, node) in nodes {
            node.deinitialize(count: 1)
            node.deallocate()
        }
        nodes.removeAll()
        tree = RBTree()
    }
}
