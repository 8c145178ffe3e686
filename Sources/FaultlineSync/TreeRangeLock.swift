import CFaultline
import Synchronization

/// The interval-tree range lock of Jan Kara (2013) as reworked by Davidlohr Bueso (2017,
/// `include/linux/range_lock.h`): every request is a node in an interval tree under one
/// spinlock; on arrival it counts the conflicting requests already in the tree
/// (`blocking_ranges`) and sleeps until each of them has left. Requests therefore acquire in
/// FIFO order among overlapping ranges (a reader queues behind an earlier overlapping writer),
/// and every lock and unlock takes the one spinlock.
public final class TreeRangeLock: RangeLock, @unchecked Sendable {
    public struct Handle: @unchecked Sendable {
        @usableFromInline let node: UnsafeMutablePointer<RBNode<Entry>>
    }

    /// A request: `[start, end)`, its mode, the subtree's largest end (the interval-tree
    /// augmentation), arrival order, how many earlier conflicting requests remain, and its
    /// futex word.
    public struct Entry: RBIntervalPayload {
        var start: UInt64
        var end: UInt64
        public var subtreeEnd: UInt64
        var seq: UInt64
        var blocking: Int
        var isWriter: Bool
        let flag: UnsafeMutablePointer<Atomic<UInt32>>

        public var intervalStart: UInt64 { start }
        public var intervalEnd: UInt64 { end }
    }

    let spin = SpinLock()
    @exclusivity(unchecked) var tree = RBTree<Entry, RBIntervalAugmentation<Entry>>()
    @exclusivity(unchecked) var freeNodes: [UnsafeMutablePointer<RBNode<Entry>>] = []
    @exclusivity(unchecked) var nextSeq: UInt64 = 0
    let nodeBytes = MemoryLayout<RBNode<Entry>>.stride

    public init() {
        freeNodes.reserveCapacity(64)
    }

    deinit {
        precondition(tree.isEmpty, "TreeRangeLock destroyed while held")
        for n in freeNodes { UnsafeMutableRawPointer(n).deallocate() }
    }

    /// Spinlock held.
    func allocNode() -> UnsafeMutablePointer<RBNode<Entry>> {
        if let n = freeNodes.popLast() { return n }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: nodeBytes + 8, alignment: 16)
        let flag = (raw + nodeBytes).bindMemory(to: Atomic<UInt32>.self, capacity: 1)
        flag.initialize(to: Atomic(0))
        let node = raw.bindMemory(to: RBNode<Entry>.self, capacity: 1)
        node.initialize(to: RBNode(payload: Entry(start: 0, end: 0, subtreeEnd: 0, seq: 0, blocking: 0,
                                                  isWriter: false, flag: flag)))
        return node
    }

    /// Calls `body` on every node whose range overlaps `[start, end)` (interval-tree search).
    @inline(__always)
    func forEachOverlap(_ start: UInt64, _ end: UInt64, _ body: (UnsafeMutablePointer<RBNode<Entry>>) -> Void) {
        tree.forEachOverlap(start, end, body)
    }

    @inline(__always)
    func insert(_ node: UnsafeMutablePointer<RBNode<Entry>>) { tree.insertInterval(node) }

    /// `range_lock()` / `range_read_lock()`.
    public func lock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle {
        precondition(!range.isEmpty, "empty range")
        let writer = mode == .write
        spin.lock()
        let node = allocNode()
        var blocking = 0
        forEachOverlap(range.lowerBound, range.upperBound) { other in
            if writer || other.pointee.payload.isWriter { blocking += 1 }
        }
        node.pointee.payload.start = range.lowerBound
        node.pointee.payload.end = range.upperBound
        node.pointee.payload.subtreeEnd = range.upperBound
        node.pointee.payload.isWriter = writer
        node.pointee.payload.blocking = blocking
        node.pointee.payload.seq = nextSeq
        nextSeq &+= 1
        let flag = node.pointee.payload.flag
        flag.pointee.store(blocking == 0 ? 1 : 0, ordering: .relaxed)
        insert(node)
        spin.unlock()
        if blocking > 0 { _ = waitWhileZero(flag, spins: 256) }
        return Handle(node: node)
    }

    /// `range_trylock()`.
    public func tryLock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle? {
        precondition(!range.isEmpty, "empty range")
        let writer = mode == .write
        spin.lock()
        var conflict = false
        forEachOverlap(range.lowerBound, range.upperBound) { other in
            if writer || other.pointee.payload.isWriter { conflict = true }
        }
        if conflict {
            spin.unlock()
            return nil
        }
        let node = allocNode()
        node.pointee.payload.start = range.lowerBound
        node.pointee.payload.end = range.upperBound
        node.pointee.payload.subtreeEnd = range.upperBound
        node.pointee.payload.isWriter = writer
        node.pointee.payload.blocking = 0
        node.pointee.payload.seq = nextSeq
        nextSeq &+= 1
        node.pointee.payload.flag.pointee.store(1, ordering: .relaxed)
        insert(node)
        spin.unlock()
        return Handle(node: node)
    }

    /// `range_unlock()`: leaves the tree and wakes later requests it was the last obstacle of.
    public func unlock(_ handle: Handle) {
        let node = handle.node
        spin.lock()
        tree.remove(node)
        let start = node.pointee.payload.start
        let end = node.pointee.payload.end
        let writer = node.pointee.payload.isWriter
        let seq = node.pointee.payload.seq
        let pending = tree.count
        withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt32>.self, capacity: max(pending, 1)) { wake in
            var n = 0
            forEachOverlap(start, end) { other in
                // Only requests that arrived after us counted us.
                guard other.pointee.payload.seq > seq, writer || other.pointee.payload.isWriter else { return }
                other.pointee.payload.blocking -= 1
                if other.pointee.payload.blocking == 0 {
                    other.pointee.payload.flag.pointee.store(1, ordering: .releasing)
                    wake[n] = futexAddress(other.pointee.payload.flag)
                    n += 1
                }
            }
            freeNodes.append(node)
            spin.unlock()
            for i in 0..<n { _ = fl_futex_wake(wake[i], 1) }
        }
    }

    /// Requests in the tree (holders and waiters).
    public var requestCount: Int { spin.withLock { tree.count } }
}
