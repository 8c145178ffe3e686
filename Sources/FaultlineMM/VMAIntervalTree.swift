import FaultlineSync

/// `struct rb_root_cached i_mmap` with `vma_interval_tree_*` (mm/interval_tree.c): a file's
/// VMAs in an interval tree (`RBIntervalAugmentation`) over the file pages they map, so a walk
/// over file pages visits only the VMAs that map some of them. Callers hold the file's
/// `i_mmap_rwsem` (`MMFile.iMmapLock`).
struct VMAIntervalTree {
    /// `vma->shared.rb` and what the walk needs: the VMA, its address space, its file pages
    /// `[first, end)` (`vm_pgoff` up to `vma_last_pgoff() + 1`) and the subtree's largest end
    /// (`shared.rb_subtree_last`, exclusive here).
    struct Entry: RBIntervalPayload {
        var vma: VMARef
        var mm: Unmanaged<AddressSpace>
        var first: UInt64
        var end: UInt64
        var subtreeEnd: UInt64

        var intervalStart: UInt64 { first }
        var intervalEnd: UInt64 { end }
    }

    typealias Node = UnsafeMutablePointer<RBNode<Entry>>

    var tree = RBTree<Entry, RBIntervalAugmentation<Entry>>()
    /// Where each VMA's node is (Linux embeds the node in the VMA).
    var nodes: [VMARef: Node] = [:]

    var count: Int { tree.count }

    /// File pages `[first, end)` of `v`.
    static func pages(of v: VMARef) -> (first: UInt64, end: UInt64) {
        (v.vmPgoff, v.vmPgoff &+ (v.vmEnd &- v.vmStart) >> Linux.pageShift)
    }

    /// `vma_interval_tree_insert()`.
    mutating func insert(_ v: VMARef, _ mm: AddressSpace) {
        precondition(nodes[v] == nil, "i_mmap: VMA linked twice")
        let (first, end) = Self.pages(of: v)
        let node = Node.allocate(capacity: 1)
        node.initialize(to: RBNode(payload: Entry(vma: v, mm: .passUnretained(mm), first: first, end: end, subtreeEnd: end)))
        nodes[v] = node
        tree.insertInterval(node)
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
        (node.pointee.payload.first, node.pointee.payload.end) = Self.pages(of: v)
        node.pointee.payload.subtreeEnd = node.pointee.payload.end
        tree.insertInterval(node)
    }

    /// `vma_interval_tree_foreach()`: every VMA mapping some of file pages `[first, end)`, in
    /// order of first page.
    func forEachOverlap(_ first: UInt64, _ end: UInt64, _ body: (VMARef, AddressSpace) -> Void) {
        tree.forEachOverlap(first, end) { n in body(n.pointee.payload.vma, n.pointee.payload.mm.takeUnretainedValue()) }
    }

    /// What is wrong with `v`'s node, if anything: linked, with `mm`, over the pages it maps.
    func problem(_ v: VMARef, _ mm: AddressSpace) -> String? {
        guard let node = nodes[v] else { return "not in its file's i_mmap" }
        let e = node.pointee.payload
        if e.mm.takeUnretainedValue() !== mm { return "in its file's i_mmap under another address space" }
        let (first, end) = Self.pages(of: v)
        if e.first != first || e.end != end { return "i_mmap has file pages \(e.first)..<\(e.end), the VMA maps \(first)..<\(end)" }
        return nil
    }

    /// The tree's invariants, and every node's range still its VMA's.
    func _checkInvariants() {
        tree._checkIntervals { n in
            let e = n.pointee.payload
            let (first, end) = Self.pages(of: e.vma)
            precondition(e.first == first && e.end == end, "i_mmap: node holds pages \(e.first)..<\(e.end), its VMA \(first)..<\(end)")
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
