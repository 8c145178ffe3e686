/// A payload with a half-open interval `[intervalStart, intervalEnd)` and the largest
/// `intervalEnd` in its subtree (`INTERVAL_TREE_DEFINE`'s `ITSTART`, `ITLAST` and
/// `ITSUBTREE`, with the end exclusive): what an interval tree keeps in each node.
public protocol RBIntervalPayload {
    var intervalStart: UInt64 { get }
    var intervalEnd: UInt64 { get }
    var subtreeEnd: UInt64 { get set }
}

/// The interval-tree augmentation (include/linux/interval_tree_generic.h): a node's summary is
/// the largest end below it.
public enum RBIntervalAugmentation<Payload: RBIntervalPayload>: RBAugmentation {
    @inlinable @inline(__always)
    public static func recompute(_ node: UnsafeMutablePointer<RBNode<Payload>>) {
        var m = node.pointee.payload.intervalEnd
        if let l = node.pointee.left, l.pointee.payload.subtreeEnd > m { m = l.pointee.payload.subtreeEnd }
        if let r = node.pointee.right, r.pointee.payload.subtreeEnd > m { m = r.pointee.payload.subtreeEnd }
        node.pointee.payload.subtreeEnd = m
    }
}

extension RBTree where Payload: RBIntervalPayload, Augment == RBIntervalAugmentation<Payload> {
    /// Links `node`, ordered by interval start.
    @inlinable
    public mutating func insertInterval(_ node: Node) {
        insert(node) { a, b in a.intervalStart < b.intervalStart }
    }

    /// `interval_tree_iter_first/next()`: calls `body` on every node whose interval overlaps
    /// `[start, end)`, in order of start; subtrees whose largest end is at or below `start`
    /// are skipped.
    @inlinable
    public func forEachOverlap(_ start: UInt64, _ end: UInt64, _ body: (Node) -> Void) {
        func visit(_ n: Node?) {
            guard let n, n.pointee.payload.subtreeEnd > start else { return }
            visit(n.pointee.left)
            guard n.pointee.payload.intervalStart < end else { return }
            if n.pointee.payload.intervalEnd > start { body(n) }
            visit(n.pointee.right)
        }
        visit(root)
    }

    /// The red-black invariants, order by start and exact subtree ends; `checkNode` adds the
    /// caller's own per-node checks.
    public func _checkIntervals(_ checkNode: (Node) -> Void = { _ in }) {
        _checkInvariants { n in
            let e = n.pointee.payload
            var m = e.intervalEnd
            if let l = n.pointee.left {
                precondition(l.pointee.payload.intervalStart <= e.intervalStart, "interval tree: out of order")
                m = max(m, l.pointee.payload.subtreeEnd)
            }
            if let r = n.pointee.right {
                precondition(r.pointee.payload.intervalStart >= e.intervalStart, "interval tree: out of order")
                m = max(m, r.pointee.payload.subtreeEnd)
            }
            precondition(e.subtreeEnd == m, "interval tree: subtree end \(e.subtreeEnd), actual \(m)")
            checkNode(n)
        }
    }
}
