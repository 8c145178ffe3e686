import CFaultline
import FaultlineSync
import Synchronization

/// The maple tree (Liam Howlett, Matthew Wilcox; Linux 6.1): a B-tree over the whole 64-bit
/// index space, partitioned into ranges that each map to a value or to NULL (a gap). Internal
/// nodes record the largest gap under each child, which makes `get_unmapped_area` a tree walk.
///
/// RCU mode: readers (`lookup`, `find`, `next`, `prev`, `forEach`) take no lock — the caller
/// holds an RCU read-side section of the tree's domain, or the writers' lock. A writer (callers
/// serialise writers) never changes a published node's pivots: a store that keeps a leaf's
/// boundaries writes the one slot in place (`mas_wr_slot_store`); otherwise it builds the
/// lowest replacement nodes it can — one leaf when the ancestors keep their pivots
/// (`mas_wr_node_store`), a new path when a node splits or merges — and publishes them with one
/// release store (of the parent's slot or of the root), then marks each replaced node dead
/// (its parent word points at itself) and hands it to RCU; it is reused only after a grace
/// period. Gap summaries are writer data and are updated in place. A reader that finds the node it just read dead walks
/// again from the root (`mas_dead_node` → `mas_reset`).
///
/// See `MapleNode` for the node layout.
public final class MapleTree<Value: MapleValue>: RangeTree, @unchecked Sendable {
    public static var readersNeedNoLock: Bool { true }

    /// The lock-free read side, as a plain value (no reference counting on hot paths).
    public let reader: MapleReader<Value>
    /// The untyped tree: all writes and gap searches, on machine words.
    @usableFromInline let core: MapleCore

    /// - Parameters:
    ///   - rcu: the domain whose grace periods free replaced nodes; nil when every reader
    ///     holds the writers' lock (non-RCU mode: nodes are reused at once).
    ///   - poisonFreedNodes: overwrite nodes when they come back from a grace period, so that
    ///     a reader that still held one reads `MapleTree.poisonValue` (for stress tests).
    public init(rcu: RCU? = .shared, poisonFreedNodes: Bool = false) {
        core = MapleCore(rcu: rcu, poison: poisonFreedNodes)
        reader = MapleReader(rootSlot: core.rootSlot)
    }

    public var count: Int { core.count }

    /// Tree height (1: the root is a leaf; 0: empty).
    public var depth: Int { core.height }

    /// Nodes currently allocated to the tree or waiting for a grace period.
    public var nodesInUse: Int { core.allocator.inUse }

    /// Nodes built by writes so far: a store that keeps a leaf's boundaries builds none, a store
    /// inside one leaf that neither splits nor under-fills it builds one.
    public var nodesBuilt: Int { core.allocator.allocations }

    /// What a reader reads from a node poisoned after its grace period (see `init`).
    public static var poisonValue: UInt { MapleNodeAllocator.poisonNode.address }

    // MARK: Writers (callers serialise them)

    /// Inlinable so that `Value?` is unwrapped in specialised code: unspecialised, it fetched
    /// `Optional<Value>`'s metadata at run time on every store (about 300 instructions).
    @inlinable
    public func store(_ range: ClosedRange<UInt64>, _ value: Value?) {
        core.store(range.lowerBound, range.upperBound, value?.mapleBits ?? 0)
    }

    @inlinable
    public func erase(_ range: ClosedRange<UInt64>) { core.store(range.lowerBound, range.upperBound, 0) }

    public func removeAll() { core.removeAll() }

    public func bulkLoad(_ entries: [RangeEntry<Value>]) {
        core.bulkLoad(entries.map { MapleEntry(last: $0.last, slot: $0.value.mapleBits, gap: $0.first) })
    }

    public func lowestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? { core.lowestGap(size: size, in: window) }
    public func highestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? { core.highestGap(size: size, in: window) }
    /// Every structural invariant, trapping on a violation (see `MapleCore`); the nodes checked.
    @discardableResult public func _checkInvariants() -> Int { core._checkInvariants() }

    // MARK: Readers (forwarders to `reader`)

    @inlinable public func lookup(_ index: UInt64) -> RangeEntry<Value>? { reader.lookup(index) }
    @inlinable public func find(from index: UInt64) -> RangeEntry<Value>? { reader.find(from: index) }
    @inlinable public func next(after index: UInt64) -> RangeEntry<Value>? { reader.next(after: index) }
    @inlinable public func prev(before index: UInt64) -> RangeEntry<Value>? { reader.prev(before: index) }
    @inlinable public func forEach(in window: ClosedRange<UInt64>, _ body: (RangeEntry<Value>) -> Bool) {
        reader.forEach(in: window, body)
    }
}

/// The untyped maple tree: root, writer state and node memory. Writers are serialised by the
/// caller; readers go through `MapleWalker`.
@usableFromInline
final class MapleCore: @unchecked Sendable {
    let rootSlot: UnsafeMutablePointer<Atomic<UInt>>
    let entryCount: UnsafeMutablePointer<Atomic<Int>>
    /// Levels below and including the root (0 when empty).
    @exclusivity(unchecked) var height = 0
    /// The RCU domain; writes reach it through `rcuRef` (`_withUnsafeGuaranteedRef`), which
    /// takes no reference: a retain writes the domain's header line, shared by every
    /// thread's writes.
    let rcu: RCU?
    let rcuRef: Unmanaged<RCU>?
    let allocator: MapleNodeAllocator
    let walker: MapleWalker
    /// Per-write bookkeeping.
    let opAllocated = MapleNodeList()
    let opRetired = MapleNodeList()
    @exclusivity(unchecked) var opCountDelta = 0

    init(rcu: RCU?, poison: Bool) {
        self.rcu = rcu
        rcuRef = rcu.map { Unmanaged.passUnretained($0) }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        rootSlot = raw.bindMemory(to: Atomic<UInt>.self, capacity: 1)
        rootSlot.initialize(to: Atomic(0))
        let countRaw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        entryCount = countRaw.bindMemory(to: Atomic<Int>.self, capacity: 1)
        entryCount.initialize(to: Atomic(0))
        walker = MapleWalker(rootSlot: rootSlot)
        allocator = MapleNodeAllocator(poison: poison)
    }

    deinit {
        // Nodes still queued on RCU belong to the allocator; wait for them before it goes.
        if let rcu, allocator.inFlight.load(ordering: .acquiring) > 0 { rcu.barrier() }
        allocator.releaseAll()
        UnsafeMutableRawPointer(rootSlot).deallocate()
        UnsafeMutableRawPointer(entryCount).deallocate()
    }

    var count: Int { entryCount.pointee.load(ordering: .relaxed) }
}

/// The nodes one write built or retired: a growable buffer the writer reuses (an `Array` here
/// cost a uniqueness check and a call per append and per reset on every write).
final class MapleNodeList {
    var base: UnsafeMutablePointer<MapleNode>
    var count = 0
    var capacity = 32

    init() { base = .allocate(capacity: 32) }
    deinit { base.deallocate() }

    @inline(__always)
    func append(_ n: MapleNode) {
        if count == capacity { grow() }
        (base + count).initialize(to: n)
        count += 1
    }

    @inline(never)
    func grow() {
        let bigger = UnsafeMutablePointer<MapleNode>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: base, count: count)
        base.deallocate()
        base = bigger
        capacity *= 2
    }

    @inline(__always) func removeAll() { count = 0 }
    @inline(__always) var isEmpty: Bool { count == 0 }
    @inline(__always) var buffer: UnsafeBufferPointer<MapleNode> { UnsafeBufferPointer(start: base, count: count) }
}

/// Where a walk ended: the leaf, its bounds, the slot holding the index, and the leaf's end.
@frozen @usableFromInline
struct MapleLeafPosition {
    @usableFromInline var leaf: MapleNode
    @usableFromInline var lo: UInt64
    @usableFromInline var hi: UInt64
    @usableFromInline var slot: Int
    @usableFromInline var end: Int

    @inlinable
    init(leaf: MapleNode, lo: UInt64, hi: UInt64, slot: Int, end: Int) {
        self.leaf = leaf
        self.lo = lo
        self.hi = hi
        self.slot = slot
        self.end = end
    }

    /// `[first, last]` of slot `i`.
    @inlinable @inline(__always)
    func bounds(_ i: Int) -> (UInt64, UInt64) {
        let first = i > 0 ? leaf.pivot(i &- 1) &+ 1 : lo
        let last = i < end ? leaf.pivot(i) : hi
        return (first, last)
    }
}

/// `mas_walk()` over the untyped tree.
@frozen @usableFromInline
struct MapleWalker: @unchecked Sendable {
    @usableFromInline let rootSlot: UnsafeMutablePointer<Atomic<UInt>>

    @inlinable
    init(rootSlot: UnsafeMutablePointer<Atomic<UInt>>) { self.rootSlot = rootSlot }

    /// Walks to the leaf slot holding `index`; nil for an empty tree. The leaf was live when
    /// reached; callers re-check `isDead()` after reading its slots.
    @inlinable @inline(__always)
    func walk(_ index: UInt64) -> MapleLeafPosition? {
        restart: while true {
            guard var node = MapleNode(address: rootSlot.pointee.load(ordering: .acquiring)) else { return nil }
            var lo: UInt64 = 0
            var hi = UInt64.max
            while true {
                let word = node.parentWord()
                let end = MapleNode.end(word)
                var i = 0
                while i < end {
                    if index <= node.pivot(i) { break }
                    i &+= 1
                }
                if MapleNode.isLeaf(word) {
                    return MapleLeafPosition(leaf: node, lo: lo, hi: hi, slot: i, end: end)
                }
                let child = node.childSlot(i)
                if i > 0 { lo = node.pivot(i &- 1) &+ 1 }
                if i < end { hi = node.pivot(i) }
                if node.isDead() { continue restart }
                guard let next = MapleNode(address: child) else {
                    // A live internal node has a child in every slot up to `end`: an empty one
                    // means the node was reused under this reader (a grace period that did not
                    // wait for it). Say what was seen, for the report.
                    preconditionFailure("maple: empty child slot \(i) of live node 0x\(String(node.address, radix: 16)) (parent word 0x\(String(word, radix: 16)), now 0x\(String(node.parentWord(), radix: 16))) walking to \(index)")
                }
                node = next
            }
        }
    }
}

/// The read side of a `MapleTree`: walks from the root with acquire loads and restarts when
/// it meets a dead node. Safe beside one writer inside an RCU read-side section.
@frozen
public struct MapleReader<Value: MapleValue>: @unchecked Sendable {
    @usableFromInline let walker: MapleWalker

    @usableFromInline
    init(rootSlot: UnsafeMutablePointer<Atomic<UInt>>) { walker = MapleWalker(rootSlot: rootSlot) }

    @inlinable @inline(__always)
    func walk(_ index: UInt64) -> MapleLeafPosition? { walker.walk(index) }

    @inlinable @inline(__always)
    func entryBounds(_ p: MapleLeafPosition, _ i: Int) -> (UInt64, UInt64) { p.bounds(i) }

    /// `mtree_load()`: the entry containing `index`.
    @inlinable
    public func lookup(_ index: UInt64) -> RangeEntry<Value>? {
        while true {
            guard let p = walk(index) else { return nil }
            let v = p.leaf.leafSlot(p.slot)
            let (first, last) = entryBounds(p, p.slot)
            if p.leaf.isDead() { continue }
            return v == 0 ? nil : RangeEntry(first: first, last: last, value: Value(mapleBits: v))
        }
    }

    /// `find_vma()`: the first entry whose last index is at or after `index`.
    @inlinable
    public func find(from index: UInt64) -> RangeEntry<Value>? {
        var pos = index
        while true {
            guard let p = walk(pos) else { return nil }
            var found: RangeEntry<Value>? = nil
            var i = p.slot
            while i <= p.end {
                let v = p.leaf.leafSlot(i)
                if v != 0 {
                    let (first, last) = entryBounds(p, i)
                    found = RangeEntry(first: first, last: last, value: Value(mapleBits: v))
                    break
                }
                i &+= 1
            }
            if p.leaf.isDead() { continue }
            if let found { return found }
            if p.hi == UInt64.max { return nil }
            pos = p.hi &+ 1
        }
    }

    /// The first entry that starts after `index`.
    @inlinable
    public func next(after index: UInt64) -> RangeEntry<Value>? {
        guard index < UInt64.max, let e = find(from: index &+ 1) else { return nil }
        if e.first > index { return e }
        guard e.last < UInt64.max else { return nil }
        return find(from: e.last &+ 1)
    }

    /// The last entry that ends before `index`.
    @inlinable
    public func prev(before index: UInt64) -> RangeEntry<Value>? {
        guard index > 0 else { return nil }
        var pos = index &- 1
        while true {
            guard let p = walk(pos) else { return nil }
            var found: RangeEntry<Value>? = nil
            var i = p.slot
            while i >= 0 {
                let v = p.leaf.leafSlot(i)
                if v != 0 {
                    let (first, last) = entryBounds(p, i)
                    if last < index {
                        found = RangeEntry(first: first, last: last, value: Value(mapleBits: v))
                        break
                    }
                }
                i &-= 1
            }
            if p.leaf.isDead() { continue }
            if let found { return found }
            if p.lo == 0 { return nil }
            pos = p.lo &- 1
        }
    }

    /// Entries intersecting `window`, in order, one leaf at a time (a leaf's entries are read,
    /// the leaf re-checked alive, then handed out). A cursor (`mas_next_node`): the path from
    /// the root is kept, and the next leaf is reached through the nearest ancestor with a slot
    /// to the right instead of a new walk from the root. Pivots of a live node never change,
    /// so the bounds kept on the path stay right while its nodes are alive; a dead one sends
    /// the walk back to the root at the next index.
    @inlinable
    public func forEach(in window: ClosedRange<UInt64>, _ body: (RangeEntry<Value>) -> Bool) {
        var pos = window.lowerBound
        withUnsafeTemporaryAllocation(of: RangeEntry<Value>.self, capacity: MapleNode.leafSlots) { buf in
            withUnsafeTemporaryAllocation(of: MapleCursorLevel.self, capacity: MapleCursorLevel.maxDepth) { pathBuf in
                let path = pathBuf.baseAddress!
                restart: while true {
                    guard var node = MapleNode(address: walker.rootSlot.pointee.load(ordering: .acquiring)) else { return }
                    var depth = 0
                    var lo: UInt64 = 0
                    var hi = UInt64.max
                    var target = pos
                    while true {
                        // Descend to the leaf holding `target`, keeping the path.
                        var word = node.parentWord()
                        while !MapleNode.isLeaf(word) {
                            let end = MapleNode.end(word)
                            var i = 0
                            while i < end && target > node.pivot(i) { i &+= 1 }
                            let child = node.childSlot(i)
                            let clo = i > 0 ? node.pivot(i &- 1) &+ 1 : lo
                            let chi = i < end ? node.pivot(i) : hi
                            if node.isDead() { continue restart }
                            precondition(depth < MapleCursorLevel.maxDepth, "maple: tree deeper than the cursor")
                            path[depth] = MapleCursorLevel(node: node, hi: hi, index: i, end: end)
                            depth &+= 1
                            guard let next = MapleNode(address: child) else { continue restart }
                            node = next
                            lo = clo
                            hi = chi
                            word = node.parentWord()
                        }
                        // The leaf: read from the slot holding `target`.
                        let p = MapleLeafPosition(leaf: node, lo: lo, hi: hi, slot: 0, end: MapleNode.end(word))
                        var i = 0
                        while i < p.end && target > node.pivot(i) { i &+= 1 }
                        var n = 0
                        while i <= p.end {
                            let v = node.leafSlot(i)
                            let (first, last) = p.bounds(i)
                            if first > window.upperBound { break }
                            if v != 0 {
                                buf.initializeElement(at: n, to: RangeEntry(first: first, last: last, value: Value(mapleBits: v)))
                                n &+= 1
                            }
                            i &+= 1
                        }
                        if node.isDead() { continue restart }
                        for k in 0..<n where !body(buf[k]) { return }
                        if hi >= window.upperBound { return }
                        pos = hi &+ 1
                        target = pos
                        // Up to the nearest ancestor with a slot to the right, then down its
                        // leftmost edge (the descent above, from that child).
                        while true {
                            guard depth > 0 else { continue restart }
                            depth &-= 1
                            let up = path[depth]
                            guard up.index < up.end else { continue }
                            let k = up.index &+ 1
                            let child = up.node.childSlot(k)
                            if up.node.isDead() { continue restart }
                            guard let next = MapleNode(address: child) else { continue restart }
                            path[depth].index = k
                            depth &+= 1
                            lo = up.node.pivot(k &- 1) &+ 1
                            hi = k < up.end ? up.node.pivot(k) : up.hi
                            node = next
                            break
                        }
                    }
                }
            }
        }
    }
}

/// One level of `forEach`'s cursor: a node on the path, its upper bound, the slot taken and
/// its end.
@frozen @usableFromInline
struct MapleCursorLevel {
    /// Levels kept: a tree of 24 levels would hold more than 4^22 nodes. 24 × 32 bytes stays
    /// under the 1 KiB that `withUnsafeTemporaryAllocation` keeps on the stack (above it, a
    /// malloc per iteration).
    @usableFromInline static var maxDepth: Int { 24 }
    @usableFromInline var node: MapleNode
    @usableFromInline var hi: UInt64
    @usableFromInline var index: Int
    @usableFromInline var end: Int

    @inlinable
    init(node: MapleNode, hi: UInt64, index: Int, end: Int) {
        self.node = node
        self.hi = hi
        self.index = index
        self.end = end
    }
}

/// Node memory for one tree: 256-byte nodes carved from 64-node slabs, kept on an intrusive
/// free list (word 1 links free nodes). A write's replaced nodes go to RCU in pooled retire
/// records (one callback per write); after the grace period the callback hands back the
/// records, not the nodes: it runs on the reclaimer's CPU, and linking the nodes there moved
/// every node's line away from the writer (store + erase ran up to 2.2× slower). The writer
/// hands the returned nodes out straight from the records' arrays when its free list is empty.
final class MapleNodeAllocator: @unchecked Sendable {
    static let slabNodes = 64
    static let recordNodes = 24
    let poison: Bool
    var slabs: [UnsafeMutableRawPointer] = []
    var freeHead: UInt = 0
    var freeCount = 0
    let returnedLock = SpinLock()
    /// Retire records whose grace period is over, chained by `next` (their nodes unlinked).
    var returnedRecords: UnsafeMutablePointer<RetireRecord>?
    var returnedCount = 0
    /// Records free for the writer (writer-only: the callback hands records back through
    /// `returnedRecords`).
    var recordPool: UnsafeMutablePointer<RetireRecord>?
    /// Returned records whose nodes the writer is handing out (writer-only), and how many
    /// nodes they still hold.
    var drain: UnsafeMutablePointer<RetireRecord>?
    var drainCount = 0
    /// `allocate()` calls (writer-only).
    var allocations = 0
    var records: [UnsafeMutablePointer<RetireRecord>] = []
    let inFlight = Atomic<Int>(0)
    var total = 0

    /// `struct rcu_head` plus up to `recordNodes` nodes (in `nodes`, allocated with the record,
    /// which is pooled); records of one write are chained.
    struct RetireRecord {
        var head: RCUHead
        var next: UnsafeMutablePointer<RetireRecord>?
        var count: Int
        let nodes: UnsafeMutablePointer<UInt>
    }

    /// Calls `body` with each node of the chain of records starting at `first`; returns the
    /// chain's last record and its node count.
    @discardableResult @inline(__always)
    static func forEachNode(in first: UnsafeMutablePointer<RetireRecord>,
                            _ body: (MapleNode) -> Void) -> (last: UnsafeMutablePointer<RetireRecord>, count: Int) {
        var last = first
        var count = 0
        var r: UnsafeMutablePointer<RetireRecord>? = first
        while let rec = r {
            let n = rec.pointee.count
            let nodes = rec.pointee.nodes
            for j in 0..<n { body(MapleNode(address: nodes[j])!) }
            count += n
            last = rec
            r = rec.pointee.next
        }
        return (last, count)
    }

    init(poison: Bool) { self.poison = poison }

    var inUse: Int { total - freeCount - drainCount - returnedLock.withLock { returnedCount } }

    @inline(__always)
    func link(_ n: MapleNode, _ next: UInt) { n.words[1].store(next, ordering: .relaxed) }

    /// A free node: one this writer released (warm), else the next one of a record whose grace
    /// period is over (taken from the record's array, so a node's memory is first touched when
    /// it is built, not when it comes back), else a new slab.
    func allocate() -> MapleNode {
        allocations &+= 1
        if freeHead == 0 {
            if let n = takeFromRecords() { return n }
            grow()
        }
        let n = MapleNode(address: freeHead)!
        freeHead = n.words[1].load(ordering: .relaxed)
        freeCount -= 1
        return n
    }

    @inline(__always)
    func takeFromRecords() -> MapleNode? {
        while true {
            if let r = drain {
                let k = r.pointee.count
                if k > 0 {
                    r.pointee.count = k - 1
                    drainCount -= 1
                    return MapleNode(address: r.pointee.nodes[k - 1])!
                }
                drain = r.pointee.next
                r.pointee.next = recordPool
                recordPool = r
                continue
            }
            let (records, count) = returnedLock.withLock { () -> (UnsafeMutablePointer<RetireRecord>?, Int) in
                let r = (returnedRecords, returnedCount)
                returnedRecords = nil
                returnedCount = 0
                return r
            }
            guard let records else { return nil }
            drain = records
            drainCount += count
        }
    }

    func grow() {
        let slab = UnsafeMutableRawPointer.allocate(byteCount: MapleNode.bytes * Self.slabNodes, alignment: MapleNode.bytes)
        let words = slab.bindMemory(to: Atomic<UInt>.self, capacity: 32 * Self.slabNodes)
        for i in 0..<(32 * Self.slabNodes) { (words + i).initialize(to: Atomic(0)) }
        slabs.append(slab)
        total += Self.slabNodes
        for i in 0..<Self.slabNodes { release(MapleNode(words: words + 32 * i)) }
    }

    /// A node no reader can reach.
    @inline(__always)
    func release(_ n: MapleNode) {
        link(n, freeHead)
        freeHead = n.address
        freeCount += 1
    }

    /// A pooled record (a drained record goes back to the pool; new ones only while the
    /// records in flight and being drained grow).
    func takeRecord() -> UnsafeMutablePointer<RetireRecord> {
        if let r = recordPool {
            recordPool = r.pointee.next
            return r
        }
        let r = UnsafeMutablePointer<RetireRecord>.allocate(capacity: 1)
        r.initialize(to: RetireRecord(head: RCUHead(context: Unmanaged.passUnretained(self).toOpaque(), function: Self.batchDone),
                                      next: nil, count: 0,
                                      nodes: .allocate(capacity: Self.recordNodes)))
        records.append(r)
        return r
    }

    /// Hands a write's dead nodes to RCU (`call_rcu` once per write).
    func retire(_ nodes: UnsafeBufferPointer<MapleNode>, rcu: RCU) {
        var first: UnsafeMutablePointer<RetireRecord>? = nil
        var k = 0
        while k < nodes.count {
            let r = takeRecord()
            let n = min(Self.recordNodes, nodes.count - k)
            r.pointee.head = RCUHead(context: Unmanaged.passUnretained(self).toOpaque(), function: Self.batchDone)
            r.pointee.next = first
            r.pointee.count = n
            for j in 0..<n { r.pointee.nodes[j] = nodes[k + j].address }
            first = r
            k += n
        }
        inFlight.wrappingAdd(1, ordering: .relaxed)
        rcu.callRCU(UnsafeMutableRawPointer(first!).assumingMemoryBound(to: RCUHead.self))
    }

    /// RCU callback: the grace period is over; the nodes (and records) are reusable.
    static let batchDone: @convention(c) (UnsafeMutableRawPointer) -> Void = { raw in
        let first = raw.assumingMemoryBound(to: RetireRecord.self)
        // No retain of the allocator: the callback now runs on the writer threads (RCU hands
        // callbacks back to the thread that queued them), which would all bump its count.
        Unmanaged<MapleNodeAllocator>.fromOpaque(first.pointee.head.context!)._withUnsafeGuaranteedRef { a in
            // Only the poisoning variant (tests) touches the nodes here.
            let (last, count) = forEachNode(in: first) { if a.poison { a.poisonNode($0) } }
            a.returnedLock.lock()
            last.pointee.next = a.returnedRecords
            a.returnedRecords = first
            a.returnedCount += count
            a.returnedLock.unlock()
            a.inFlight.wrappingSubtract(1, ordering: .releasing)
        }
    }

    /// A leaf whose every slot holds its own address: poisoned nodes point readers here, and a
    /// reader that lands here returns that address as a value.
    static let poisonNode: MapleNode = {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: MapleNode.bytes, alignment: MapleNode.bytes)
        let words = raw.bindMemory(to: Atomic<UInt>.self, capacity: 32)
        for i in 0..<32 { (words + i).initialize(to: Atomic(0)) }
        let n = MapleNode(words: words)
        n.setParentWord(MapleNode.leafBit)
        for i in 0..<22 { words[10 + i].store(n.address, ordering: .relaxed) }
        return n
    }()

    func poisonNode(_ n: MapleNode) {
        let target = Self.poisonNode.address
        n.setParentWord(MapleNode.leafBit)
        for i in 1..<10 { n.words[i].store(0, ordering: .relaxed) }
        for i in 10..<32 { n.words[i].store(target, ordering: .relaxed) }
    }

    func releaseAll() {
        for s in slabs { s.deallocate() }
        for r in records {
            r.pointee.nodes.deallocate()
            r.deallocate()
        }
        slabs.removeAll()
        records.removeAll()
        freeHead = 0
        returnedRecords = nil
        drain = nil
    }
}
