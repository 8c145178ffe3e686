/// `struct rb_node` with its payload inline. Nodes are allocated by the tree's owner (a lock's
/// free list, a VMA) and linked intrusively; the tree never allocates.
public struct RBNode<Payload> {
    public var parent: UnsafeMutablePointer<RBNode<Payload>>?
    public var left: UnsafeMutablePointer<RBNode<Payload>>?
    public var right: UnsafeMutablePointer<RBNode<Payload>>?
    public var isRed: Bool
    public var payload: Payload

    @inlinable
    public init(payload: Payload) {
        parent = nil
        left = nil
        right = nil
        isRed = false
        self.payload = payload
    }
}

/// The augmentation callbacks of `rb_insert_augmented()` / `rb_erase_augmented()`, reduced to
/// one: recompute a node's summary from its own payload and its children's summaries.
public protocol RBAugmentation {
    associatedtype Payload
    static func recompute(_ node: UnsafeMutablePointer<RBNode<Payload>>)
}

/// No augmentation: a plain ordered tree.
public enum RBNoAugmentation<Payload>: RBAugmentation {
    @inlinable public static func recompute(_ node: UnsafeMutablePointer<RBNode<Payload>>) {}
}

/// `struct rb_root` with augmentation (lib/rbtree.c). Not thread-safe: the owner serialises.
public struct RBTree<Payload, Augment: RBAugmentation> where Augment.Payload == Payload {
    public typealias Node = UnsafeMutablePointer<RBNode<Payload>>

    public var root: Node?
    public var count: Int = 0

    @inlinable
    public init() { root = nil }

    public var isEmpty: Bool { root == nil }

    // MARK: Navigation

    /// `rb_first()`.
    @inlinable
    public var first: Node? {
        guard var n = root else { return nil }
        while let l = n.pointee.left { n = l }
        return n
    }

    /// `rb_last()`.
    @inlinable
    public var last: Node? {
        guard var n = root else { return nil }
        while let r = n.pointee.right { n = r }
        return n
    }

    /// `rb_next()`.
    @inlinable
    public static func next(_ node: Node) -> Node? {
        if var n = node.pointee.right {
            while let l = n.pointee.left { n = l }
            return n
        }
        var n = node
        while let p = n.pointee.parent, p.pointee.right == n { n = p }
        return n.pointee.parent
    }

    /// `rb_prev()`.
    @inlinable
    public static func prev(_ node: Node) -> Node? {
        if var n = node.pointee.left {
            while let r = n.pointee.right { n = r }
            return n
        }
        var n = node
        while let p = n.pointee.parent, p.pointee.left == n { n = p }
        return n.pointee.parent
    }

    // MARK: Insert

    /// Links `node` where `less` orders it (equal keys go right, after existing ones), then
    /// rebalances (`rb_link_node` + `rb_insert_augmented`).
    @inlinable
    public mutating func insert(_ node: Node, less: (borrowing Payload, borrowing Payload) -> Bool) {
        var parent: Node? = nil
        var goLeft = false
        var cur = root
        while let c = cur {
            parent = c
            goLeft = less(node.pointee.payload, c.pointee.payload)
            cur = goLeft ? c.pointee.left : c.pointee.right
        }
        insert(node, parent: parent, left: goLeft)
    }

    /// Links `node` as the `left` (or right) child of `parent` (nil: as root) and rebalances.
    @inlinable
    public mutating func insert(_ node: Node, parent: Node?, left: Bool) {
        node.pointee.parent = parent
        node.pointee.left = nil
        node.pointee.right = nil
        node.pointee.isRed = true
        if let p = parent {
            if left { p.pointee.left = node } else { p.pointee.right = node }
        } else {
            root = node
        }
        count += 1
        propagate(from: node)
        insertFixup(node)
    }

    @inlinable
    mutating func insertFixup(_ inserted: Node) {
        var z = inserted
        while let p = z.pointee.parent, p.pointee.isRed {
            let g = p.pointee.parent!
            if p == g.pointee.left {
                if let u = g.pointee.right, u.pointee.isRed {
                    p.pointee.isRed = false
                    u.pointee.isRed = false
                    g.pointee.isRed = true
                    z = g
                } else {
                    if z == p.pointee.right {
                        z = p
                        rotateLeft(z)
                    }
                    z.pointee.parent!.pointee.isRed = false
                    g.pointee.isRed = true
                    rotateRight(g)
                }
            } else {
                if let u = g.pointee.left, u.pointee.isRed {
                    p.pointee.isRed = false
                    u.pointee.isRed = false
                    g.pointee.isRed = true
                    z = g
                } else {
                    if z == p.pointee.left {
                        z = p
                        rotateRight(z)
                    }
                    z.pointee.parent!.pointee.isRed = false
                    g.pointee.isRed = true
                    rotateLeft(g)
                }
            }
        }
        root!.pointee.isRed = false
    }

    // MARK: Erase

    /// `rb_erase_augmented()`.
    @inlinable
    public mutating func remove(_ z: Node) {
        var x: Node?
        var xParent: Node?
        var removedRed = z.pointee.isRed
        if z.pointee.left == nil {
            x = z.pointee.right
            xParent = z.pointee.parent
            transplant(z, x)
        } else if z.pointee.right == nil {
            x = z.pointee.left
            xParent = z.pointee.parent
            transplant(z, x)
        } else {
            var y = z.pointee.right!
            while let l = y.pointee.left { y = l }
            removedRed = y.pointee.isRed
            x = y.pointee.right
            if y.pointee.parent == z {
                xParent = y
            } else {
                xParent = y.pointee.parent
                transplant(y, x)
                y.pointee.right = z.pointee.right
                y.pointee.right!.pointee.parent = y
            }
            transplant(z, y)
            y.pointee.left = z.pointee.left
            y.pointee.left!.pointee.parent = y
            y.pointee.isRed = z.pointee.isRed
        }
        count -= 1
        if let xp = xParent { propagate(from: xp) }
        if !removedRed { eraseFixup(x, xParent) }
        z.pointee.parent = nil
        z.pointee.left = nil
        z.pointee.right = nil
    }

    @inlinable
    mutating func transplant(_ u: Node, _ v: Node?) {
        if let p = u.pointee.parent {
            if p.pointee.left == u { p.pointee.left = v } else { p.pointee.right = v }
        } else {
            root = v
        }
        v?.pointee.parent = u.pointee.parent
    }

    @inlinable
    mutating func eraseFixup(_ start: Node?, _ startParent: Node?) {
        var x = start
        var parent = startParent
        while x != root && (x == nil || !x!.pointee.isRed) {
            guard let p = parent else { break }
            if x == p.pointee.left {
                var w = p.pointee.right!
                if w.pointee.isRed {
                    w.pointee.isRed = false
                    p.pointee.isRed = true
                    rotateLeft(p)
                    w = p.pointee.right!
                }
                let wlBlack = w.pointee.left.map { !$0.pointee.isRed } ?? true
                let wrBlack = w.pointee.right.map { !$0.pointee.isRed } ?? true
                if wlBlack && wrBlack {
                    w.pointee.isRed = true
                    x = p
                    parent = p.pointee.parent
                } else {
                    if wrBlack {
                        w.pointee.left!.pointee.isRed = false
                        w.pointee.isRed = true
                        rotateRight(w)
                        w = p.pointee.right!
                    }
                    w.pointee.isRed = p.pointee.isRed
                    p.pointee.isRed = false
                    w.pointee.right?.pointee.isRed = false
                    rotateLeft(p)
                    x = root
                    parent = nil
                }
            } else {
                var w = p.pointee.left!
                if w.pointee.isRed {
                    w.pointee.isRed = false
                    p.pointee.isRed = true
                    rotateRight(p)
                    w = p.pointee.left!
                }
                let wlBlack = w.pointee.left.map { !$0.pointee.isRed } ?? true
                let wrBlack = w.pointee.right.map { !$0.pointee.isRed } ?? true
                if wlBlack && wrBlack {
                    w.pointee.isRed = true
                    x = p
                    parent = p.pointee.parent
                } else {
                    if wlBlack {
                        w.pointee.right!.pointee.isRed = false
                        w.pointee.isRed = true
                        rotateLeft(w)
                        w = p.pointee.left!
                    }
                    w.pointee.isRed = p.pointee.isRed
                    p.pointee.isRed = false
                    w.pointee.left?.pointee.isRed = false
                    rotateRight(p)
                    x = root
                    parent = nil
                }
            }
        }
        x?.pointee.isRed = false
    }

    // MARK: Rotations and augmentation

    @inlinable
    mutating func rotateLeft(_ x: Node) {
        let y = x.pointee.right!
        x.pointee.right = y.pointee.left
        y.pointee.left?.pointee.parent = x
        y.pointee.parent = x.pointee.parent
        if let p = x.pointee.parent {
            if p.pointee.left == x { p.pointee.left = y } else { p.pointee.right = y }
        } else {
            root = y
        }
        y.pointee.left = x
        x.pointee.parent = y
        Augment.recompute(x)
        Augment.recompute(y)
    }

    @inlinable
    mutating func rotateRight(_ x: Node) {
        let y = x.pointee.left!
        x.pointee.left = y.pointee.right
        y.pointee.right?.pointee.parent = x
        y.pointee.parent = x.pointee.parent
        if let p = x.pointee.parent {
            if p.pointee.left == x { p.pointee.left = y } else { p.pointee.right = y }
        } else {
            root = y
        }
        y.pointee.right = x
        x.pointee.parent = y
        Augment.recompute(x)
        Augment.recompute(y)
    }

    /// `augment->propagate()`: recompute summaries from `node` up to the root.
    @inlinable
    public func propagate(from node: Node) {
        var n: Node? = node
        while let c = n {
            Augment.recompute(c)
            n = c.pointee.parent
        }
    }

    // MARK: Checking

    /// Verifies red-black and parent-link invariants (and lets the caller check augmentation
    /// and order per node). Returns the black height.
    @discardableResult
    public func _checkInvariants(_ checkNode: (Node) -> Void = { _ in }) -> Int {
        func walk(_ n: Node?, _ parent: Node?) -> (height: Int, count: Int) {
            guard let n else { return (1, 0) }
            precondition(n.pointee.parent == parent, "rbtree: bad parent link")
            if n.pointee.isRed {
                precondition(!(n.pointee.left?.pointee.isRed ?? false) && !(n.pointee.right?.pointee.isRed ?? false),
                             "rbtree: red node with red child")
            }
            let l = walk(n.pointee.left, n)
            let r = walk(n.pointee.right, n)
            precondition(l.height == r.height, "rbtree: unequal black heights")
            checkNode(n)
            return (l.height + (n.pointee.isRed ? 0 : 1), l.count + r.count + 1)
        }
        precondition(!(root?.pointee.isRed ?? false), "rbtree: red root")
        let (h, c) = walk(root, nil)
        precondition(c == count, "rbtree: count \(count) but \(c) nodes linked")
        return h
    }
}
