import CFaultline
import Synchronization

/// The list-based range lock of Kogan, Dice and Issa ("Scalable Range Locks for Scalable
/// Address Spaces and Beyond", EuroSys 2020), reader/writer variant.
///
/// Held ranges form a lock-free singly linked list sorted by start. Acquire walks the list and
/// links its node in with one CAS at the first node it precedes; it waits on any conflicting
/// node it meets. Release is one fetch-add that sets the mark bit in the node's own `next`
/// (logical deletion); later walkers unlink marked nodes and free them after an RCU grace
/// period. Readers may overlap readers, so two validations close the races of concurrent
/// insertion: a new writer walks from the head to itself and backs off (re-inserts) if an
/// overlapping node precedes it; a new reader waits for any overlapping writer after it.
///
/// Waiting spins, then sleeps on a futex over the low half of the awaited node's `next`.
public final class ListRangeLock: RangeLock, @unchecked Sendable {
    public struct Handle: @unchecked Sendable {
        @usableFromInline let node: LNode
    }

    /// A list node in its own 64-byte block, laid out by hand so that the futex can address
    /// the low half of `next`: [0] `next` (tagged; bit 0 = released), [8] `sleepers`,
    /// [12] reader flag, [16] start, [24] end; [32] RCU head and [56] pool link (`NodePool`).
    @usableFromInline
    struct LNode: Equatable, @unchecked Sendable {
        let raw: UnsafeMutableRawPointer

        static let size = 64

        var next: UnsafeMutablePointer<Atomic<UInt>> { raw.assumingMemoryBound(to: Atomic<UInt>.self) }
        var nextLowWord: UnsafeMutablePointer<UInt32> { raw.assumingMemoryBound(to: UInt32.self) }
        var sleepers: UnsafeMutablePointer<Atomic<UInt32>> { (raw + 8).assumingMemoryBound(to: Atomic<UInt32>.self) }
        var isReader: Bool { (raw + 12).load(as: UInt8.self) != 0 }
        var start: UInt64 { (raw + 16).load(as: UInt64.self) }
        var end: UInt64 { (raw + 24).load(as: UInt64.self) }
        var word: UInt { UInt(bitPattern: raw) }

        init(raw: UnsafeMutableRawPointer) { self.raw = raw }

        init?(word: UInt) {
            guard let r = UnsafeMutableRawPointer(bitPattern: word & ~1) else { return nil }
            raw = r
        }

        /// Takes a node from the pool and fills it in. Offsets 0..<32 are what walkers read;
        /// the RCU head and pool link after them are private to the pool.
        @inline(__always)
        static func make(_ range: Range<UInt64>, reader: Bool) -> LNode {
            let raw = NodePool.shared.allocate()
            raw.assumingMemoryBound(to: Atomic<UInt>.self).pointee.store(0, ordering: .relaxed)
            (raw + 8).assumingMemoryBound(to: Atomic<UInt32>.self).pointee.store(0, ordering: .relaxed)
            (raw + 12).storeBytes(of: reader ? 1 : 0, as: UInt8.self)
            (raw + 16).storeBytes(of: range.lowerBound, as: UInt64.self)
            (raw + 24).storeBytes(of: range.upperBound, as: UInt64.self)
            return LNode(raw: raw)
        }

        /// Back to the pool at once: only for a node nobody else can reach.
        func recycleUnpublished() { NodePool.shared.free(raw) }
    }

    let head: UnsafeMutablePointer<Atomic<UInt>>
    let readSide: RCUReadSide

    /// Walkers run under `RCU.shared`, whose grace periods recycle the pooled nodes.
    public init() {
        readSide = NodePool.shared.rcu.readSide
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        head = raw.bindMemory(to: Atomic<UInt>.self, capacity: 1)
        head.initialize(to: Atomic(0))
    }

    deinit {
        var cur = LNode(word: head.pointee.load(ordering: .acquiring))
        while let n = cur {
            precondition(n.next.pointee.load(ordering: .relaxed) & 1 == 1, "ListRangeLock destroyed while held")
            cur = LNode(word: n.next.pointee.load(ordering: .relaxed))
            n.recycleUnpublished()
        }
        UnsafeMutableRawPointer(head).deallocate()
    }

    // MARK: Nodes

    @inline(__always)
    static func isReleased(_ n: LNode) -> Bool { n.next.pointee.load(ordering: .acquiring) & 1 != 0 }

    /// Tries to unlink released `cur` from `prev` (helping). Returns the word after `prev` when
    /// it succeeded, and on failure the word `prev` holds now (insert restarts from it).
    @inline(__always)
    func unlinkMarked(prev: UnsafeMutablePointer<Atomic<UInt>>, cur: LNode) -> (word: UInt, unlinked: Bool) {
        let next = cur.next.pointee.load(ordering: .acquiring) & ~1
        let r = prev.pointee.compareExchange(expected: cur.word, desired: next, ordering: .acquiringAndReleasing)
        if r.exchanged {
            NodePool.shared.retire(cur.raw)
            return (next, true)
        }
        return (r.original, false)
    }

    /// The validations only walk forward: past a released node whether or not it could be
    /// unlinked (its `next` is frozen once marked, and RCU keeps it readable). Retrying the
    /// unlink instead would spin forever when `prev` itself has been released meanwhile.
    @inline(__always)
    func skipReleased(prev: UnsafeMutablePointer<Atomic<UInt>>, cur: LNode) -> UInt {
        let r = unlinkMarked(prev: prev, cur: cur)
        return r.unlinked ? r.word : cur.next.pointee.load(ordering: .acquiring) & ~1
    }

    // MARK: Waiting and releasing

    /// Waits until `n` is released (its `next` is marked). Caller is inside an RCU section.
    @inline(__always)
    func waitReleased(_ n: LNode) {
        var spins = 0
        while true {
            let w = n.next.pointee.load(ordering: .acquiring)
            if w & 1 != 0 { return }
            spins += 1
            if spins < 512 {
                fl_cpu_relax()
                continue
            }
            n.sleepers.pointee.store(1, ordering: .sequentiallyConsistent)
            let w2 = n.next.pointee.load(ordering: .sequentiallyConsistent)
            if w2 & 1 != 0 { return }
            _ = fl_futex_wait(n.nextLowWord, UInt32(truncatingIfNeeded: w2), -1)
        }
    }

    /// Marks `n` released: one fetch-add on its own `next`, then a wake if anybody sleeps.
    @inline(__always)
    func release(_ n: LNode) {
        readSide.readLock()
        n.next.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if n.sleepers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            _ = fl_futex_wake(n.nextLowWord, Int32.max)
        }
        readSide.readUnlock()
    }

    // MARK: Acquire

    /// Where `new` goes relative to `cur`: -1 after it, 1 before it, 0 conflict (`compareRW`).
    @inline(__always)
    static func compare(_ cur: LNode, _ new: LNode) -> Int {
        let bothReaders = cur.isReader && new.isReader
        if new.start >= cur.end { return -1 }
        if bothReaders && new.start >= cur.start { return -1 }
        if cur.start >= new.end { return 1 }
        if bothReaders && cur.start >= new.start { return 1 }
        return 0
    }

    enum InsertResult { case held, retry, busy }

    /// `InsertNodeRW()`: one attempt; caller is inside an RCU section.
    func insert(_ lock: LNode, tryOnly: Bool) -> InsertResult {
        restart: while true {
            var prev = head
            var curWord = prev.pointee.load(ordering: .acquiring)
            while true {
                if curWord & 1 != 0 { continue restart }   // prev's node was released under us
                let cur = LNode(word: curWord)
                if let c = cur, Self.isReleased(c) {
                    // If we would go right after it, replace it: one CAS unlinks and inserts.
                    let after = c.next.pointee.load(ordering: .acquiring) & ~1
                    if (LNode(word: after).map { Self.compare($0, lock) } ?? 1) == 1 {
                        lock.next.pointee.store(after, ordering: .relaxed)
                        let r = prev.pointee.compareExchange(expected: curWord, desired: lock.word,
                                                             ordering: .acquiringAndReleasing)
                        if r.exchanged {
                            NodePool.shared.retire(c.raw)
                            return lock.isReader ? readerValidate(lock, tryOnly: tryOnly) : writerValidate(lock)
                        }
                        curWord = r.original
                        continue
                    }
                    curWord = unlinkMarked(prev: prev, cur: c).word
                    continue
                }
                let order = cur.map { Self.compare($0, lock) } ?? 1
                if order == -1 {
                    prev = cur!.next
                    curWord = prev.pointee.load(ordering: .acquiring)
                } else if order == 0 {
                    if tryOnly { return .busy }
                    waitReleased(cur!)
                    curWord = prev.pointee.load(ordering: .acquiring)
                } else {
                    lock.next.pointee.store(curWord, ordering: .relaxed)
                    let r = prev.pointee.compareExchange(expected: curWord, desired: lock.word,
                                                         ordering: .acquiringAndReleasing)
                    if r.exchanged {
                        return lock.isReader ? readerValidate(lock, tryOnly: tryOnly) : writerValidate(lock)
                    }
                    curWord = r.original
                }
            }
        }
    }

    /// `w_validate()`: an overlapping node before us (a reader that started earlier) → back off.
    func writerValidate(_ lock: LNode) -> InsertResult {
        var prev = head
        var curWord = prev.pointee.load(ordering: .acquiring) & ~1
        while let cur = LNode(word: curWord) {
            if cur == lock { return .held }
            if Self.isReleased(cur) {
                curWord = skipReleased(prev: prev, cur: cur)
                continue
            }
            if cur.end <= lock.start {
                prev = cur.next
                curWord = prev.pointee.load(ordering: .acquiring) & ~1
            } else {
                release(lock)
                return .retry
            }
        }
        return .held
    }

    /// `r_validate()`: wait for any overlapping writer linked after us.
    func readerValidate(_ lock: LNode, tryOnly: Bool) -> InsertResult {
        var prev = lock.next
        var curWord = prev.pointee.load(ordering: .acquiring) & ~1
        while let cur = LNode(word: curWord) {
            if cur.start >= lock.end { return .held }   // sorted by start: nothing further overlaps
            if Self.isReleased(cur) {
                curWord = skipReleased(prev: prev, cur: cur)
                continue
            }
            if cur.isReader {
                prev = cur.next
                curWord = prev.pointee.load(ordering: .acquiring) & ~1
            } else {
                if tryOnly {
                    release(lock)
                    return .busy
                }
                waitReleased(cur)
                curWord = prev.pointee.load(ordering: .acquiring) & ~1
            }
        }
        return .held
    }

    // MARK: RangeLock

    public func lock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle {
        precondition(!range.isEmpty, "empty range")
        while true {
            let n = LNode.make(range, reader: mode == .read)
            readSide.readLock()
            let r = insert(n, tryOnly: false)
            readSide.readUnlock()
            if r == .held { return Handle(node: n) }
            // .retry: the backed-off node is marked and will be unlinked and freed by walkers.
        }
    }

    public func tryLock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle? {
        precondition(!range.isEmpty, "empty range")
        let n = LNode.make(range, reader: mode == .read)
        readSide.readLock()
        let r = insert(n, tryOnly: true)
        readSide.readUnlock()
        switch r {
        case .held:
            return Handle(node: n)
        case .busy where n.next.pointee.load(ordering: .relaxed) & 1 == 0:
            // Never linked (a linked node that fails is released instead): nobody saw it.
            n.recycleUnpublished()
            return nil
        case .busy, .retry:
            return nil
        }
    }

    public func unlock(_ handle: Handle) { release(handle.node) }
}
