import CFaultline
import Synchronization

/// The list-based range lock of Kogan, Dice and Issa ("Scalable Range Locks for Scalable
/// Address Spaces and Beyond", EuroSys 2020), reader/writer variant, with node parking.
///
/// Held ranges form a lock-free singly linked list sorted by start. Acquire walks the list and
/// links its node in with one CAS at the first node it precedes; it waits on any conflicting
/// node it meets. Two validations close the races of concurrent insertion (readers may
/// overlap readers): a new writer walks from the head to itself and backs off (re-inserts) if
/// an overlapping node precedes it; a new reader waits for any overlapping writer after it.
/// Deletion is as in Harris's list: a mark bit in the node's own `next`; walkers unlink marked
/// nodes and free them after an RCU grace period.
///
/// Release is one fetch-add that sets the mark (as in the paper), unless the node is parked.
///
/// Parking (Faultline's addition, verified in `Verification/list_range_lock.pml`): when a
/// thread unlocks the range it also unlocked last time (same lock, range and mode), release
/// parks the node instead — one store to a state word on the node's second cache line — and the
/// thread remembers it; locking that range in that mode again revives it with one CAS and
/// re-runs the validation. A thread that keeps re-locking its own range thus writes nothing
/// another thread reads, and walkers only read lines that do not change. A parked node
/// conflicts with nothing: a request that meets one it conflicts with kills it first (CAS
/// parked → held in a new generation, then marks it deleted), and that CAS decides against a
/// concurrent revive. A thread keeps one parked node; parking another kills the old one. A
/// thread that never re-locks the same range (a fault sweep) never parks and pays what the
/// paper's lock pays.
///
/// Waiting spins, then sleeps on a futex over the low half of the awaited node's state word,
/// outside the RCU read section (callers must not hold one of `RCU.shared` themselves).
public final class ListRangeLock: RangeLock, @unchecked Sendable {
    public struct Handle: @unchecked Sendable {
        @usableFromInline let node: LNode
    }

    /// A list node in its own 128-byte block, laid out by hand. Line 0 is what walkers read
    /// and, while the node lives, never changes but for a neighbour's insertion: [0] `next`
    /// (tagged; bit 0 = deleted), [12] reader flag, [16] start, [24] end; [32] RCU head and
    /// [56] pool link (`NodePool`, touched only once the node is unreachable). Line 1, read
    /// only by conflicting requests: [64] the state word (`NodeState`; the futex addresses its
    /// low half), [72] the count of waiters that may sleep on the futex.
    @usableFromInline
    struct LNode: Equatable, @unchecked Sendable {
        let raw: UnsafeMutableRawPointer

        static let size = 128

        var next: UnsafeMutablePointer<Atomic<UInt>> { raw.assumingMemoryBound(to: Atomic<UInt>.self) }
        var state: UnsafeMutablePointer<Atomic<UInt64>> { (raw + 64).assumingMemoryBound(to: Atomic<UInt64>.self) }
        var stateLowWord: UnsafeMutablePointer<UInt32> { (raw + 64).assumingMemoryBound(to: UInt32.self) }
        var sleepers: UnsafeMutablePointer<Atomic<UInt32>> { (raw + 72).assumingMemoryBound(to: Atomic<UInt32>.self) }
        var isReader: Bool { (raw + 12).load(as: UInt8.self) != 0 }
        var start: UInt64 { (raw + 16).load(as: UInt64.self) }
        var end: UInt64 { (raw + 24).load(as: UInt64.self) }
        var word: UInt { UInt(bitPattern: raw) }

        init(raw: UnsafeMutableRawPointer) { self.raw = raw }

        init?(word: UInt) {
            guard let r = UnsafeMutableRawPointer(bitPattern: word & ~1) else { return nil }
            raw = r
        }

        /// Takes a node from the pool and fills it in. Line 0 only: a pooled node is held
        /// (`NodeState`) with no sleepers, so the line walkers never read stays cold.
        @inline(__always)
        static func make(_ range: Range<UInt64>, reader: Bool) -> LNode {
            let raw = NodePool.shared.allocate()
            let n = LNode(raw: raw)
            n.next.pointee.store(0, ordering: .relaxed)
            (raw + 12).storeBytes(of: reader ? 1 : 0, as: UInt8.self)
            (raw + 16).storeBytes(of: range.lowerBound, as: UInt64.self)
            (raw + 24).storeBytes(of: range.upperBound, as: UInt64.self)
            return n
        }

        /// Back to the pool at once: only for a node nobody else can reach. Held, in a new
        /// generation, so a parking slot that still names it cannot revive it.
        func recycleUnpublished() {
            state.pointee.wrappingAdd(NodeState.generationUnit, ordering: .relaxed)
            let s = state.pointee.load(ordering: .relaxed)
            state.pointee.store(s | NodeState.held, ordering: .relaxed)
            NodePool.shared.free(raw)
        }
    }

    /// The state word: bit 0 held (else parked), bits 1… a generation. Every node that is
    /// not parked is held — in the list, deleted or pooled — so a request that meets it
    /// unmarked waits, and a fresh node needs no write here. The generation changes on every
    /// park, on every kill (parked → held, then marked) and when a deleter must change the
    /// futex word under a sleeper: a revive's CAS, which expects the word the owner parked,
    /// fails after any of them. A marked node is deleted whatever its state says.
    enum NodeState {
        static let free: UInt64 = 0
        static let held: UInt64 = 1
        static let generationUnit: UInt64 = 2
        @inline(__always) static func isHeld(_ s: UInt64) -> Bool { s & held != 0 }
        @inline(__always) static func generation(_ s: UInt64) -> UInt64 { s & ~held }
    }

    let head: UnsafeMutablePointer<Atomic<UInt>>
    let readSide: RCUReadSide
    /// Test hook: requests pass parked nodes they conflict with instead of killing them, so
    /// a parked node can be revived under a conflicting holder. Only for proving that the
    /// stress tests catch broken parking.
    let _brokenParking: Bool
    /// Whether unlock parks nodes (false: every unlock deletes, as in the paper).
    public let parking: Bool
    /// Per-thread counts of the slow paths (`Statistic`), when asked for; nil costs one
    /// untaken branch on those paths only.
    public let statistics: PerThreadCounters?
    let statSlots: CounterSlots?

    /// What `statistics` counts: CASes lost to a concurrent change of the link (insert,
    /// replace or unlink), walks restarted from the head (the link's owner was deleted under
    /// the walker, or a writer's validation backed off), and waits for a conflicting holder.
    public enum Statistic: Int, CaseIterable, Sendable {
        case casFailures, restarts, waits
        public var name: String { "\(self)" }
    }

    @inline(__always)
    func count(_ s: Statistic) { statSlots?.add(s.rawValue) }

    /// Walkers run under `RCU.shared`, whose grace periods recycle the pooled nodes.
    /// `parking: false` gives the algorithm as published: unlock deletes the node.
    /// `statistics` counts the slow paths per thread (`Statistic`).
    public convenience init(parking: Bool = true, statistics: Bool = false) {
        self.init(parking: parking, brokenParking: false, statistics: statistics)
    }

    /// A lock whose requests do not kill the parked nodes they conflict with. Broken on
    /// purpose, for the tests that must catch it.
    @_spi(Testing) public static func _brokenForTesting() -> ListRangeLock { ListRangeLock(parking: true, brokenParking: true, statistics: false) }

    init(parking: Bool, brokenParking: Bool, statistics: Bool) {
        self.parking = parking
        self.statistics = statistics ? PerThreadCounters(width: Statistic.allCases.count) : nil
        statSlots = self.statistics?.slots
        _brokenParking = brokenParking
        readSide = NodePool.shared.rcu.readSide
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        head = raw.bindMemory(to: Atomic<UInt>.self, capacity: 1)
        head.initialize(to: Atomic(0))
    }

    deinit {
        var cur = LNode(word: head.pointee.load(ordering: .acquiring))
        while let n = cur {
            let s = n.state.pointee.load(ordering: .acquiring)
            precondition(Self.isDeleted(n) || !NodeState.isHeld(s), "ListRangeLock destroyed while held")
            cur = LNode(word: n.next.pointee.load(ordering: .relaxed))
            n.recycleUnpublished()   // a parking slot that still names it cannot revive it
        }
        UnsafeMutableRawPointer(head).deallocate()
    }

    /// The identity parking slots record (the head's address lives as long as the lock).
    @inline(__always) var identity: UInt { UInt(bitPattern: head) }

    // MARK: Nodes

    @inline(__always)
    static func isDeleted(_ n: LNode) -> Bool { n.next.pointee.load(ordering: .acquiring) & 1 != 0 }

    /// Tries to unlink deleted `cur` from `prev` (helping). Returns the word after `prev` when
    /// it succeeded, and on failure the word `prev` holds now (insert restarts from it).
    @inline(__always)
    func unlinkMarked(prev: UnsafeMutablePointer<Atomic<UInt>>, cur: LNode) -> (word: UInt, unlinked: Bool) {
        let next = cur.next.pointee.load(ordering: .acquiring) & ~1
        let r = prev.pointee.compareExchange(expected: cur.word, desired: next, ordering: .acquiringAndReleasing)
        if r.exchanged {
            NodePool.shared.retire(cur.raw)
            return (next, true)
        }
        count(.casFailures)
        return (r.original, false)
    }

    /// The validations only walk forward: past a deleted node whether or not it could be
    /// unlinked (its `next` is frozen once marked, and RCU keeps it readable). Retrying the
    /// unlink instead would spin forever when `prev` itself has been deleted meanwhile.
    @inline(__always)
    func skipDeleted(prev: UnsafeMutablePointer<Atomic<UInt>>, cur: LNode) -> UInt {
        let r = unlinkMarked(prev: prev, cur: cur)
        return r.unlinked ? r.word : cur.next.pointee.load(ordering: .acquiring) & ~1
    }

    /// The word after a node `settle` let us pass: it is deleted (or, in the broken variant
    /// only, live and parked, and then `prev` moves onto it).
    @inline(__always)
    func pastSettled(prev: inout UnsafeMutablePointer<Atomic<UInt>>, cur: LNode) -> UInt {
        if Self.isDeleted(cur) { return skipDeleted(prev: prev, cur: cur) }
        prev = cur.next
        return prev.pointee.load(ordering: .acquiring) & ~1
    }

    /// Sets the deleted mark of a node that is not ours to delete (idempotent).
    @inline(__always)
    static func markDeleted(_ n: LNode) {
        n.next.pointee.bitwiseOr(1, ordering: .sequentiallyConsistent)
    }

    /// After marking: a waiter may sleep on the futex over the state word expecting it
    /// unchanged; change it (a new generation, still held) and wake. Dekker with
    /// `waitReleased`: mark, then read the count; it counts, then reads the mark.
    @inline(__always)
    static func wakeAfterMark(_ n: LNode) {
        if n.sleepers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            n.state.pointee.wrappingAdd(NodeState.generationUnit, ordering: .sequentiallyConsistent)
            _ = fl_futex_wake(n.stateLowWord, Int32.max)
        }
    }

    /// What a request does about an unmarked node it conflicts with: true when the node is
    /// now deleted — a parked one is killed here (parked → held in a new generation, which a
    /// revive's CAS cannot match, then marked) — false while it is held. Inside RCU.
    @inline(__always)
    func settle(_ n: LNode) -> Bool {
        var s = n.state.pointee.load(ordering: .acquiring)
        while true {
            if NodeState.isHeld(s) { return Self.isDeleted(n) }
            if _brokenParking { return true }
            if Self.kill(n, parkedWord: s) { return true }
            s = n.state.pointee.load(ordering: .acquiring)
        }
    }

    /// Kills a node parked as `parkedWord`: parked → held in a new generation (a revive's CAS
    /// now fails), then marked deleted. False if the word changed (revived, or killed
    /// already). Inside RCU.
    @inline(__always)
    static func kill(_ n: LNode, parkedWord: UInt64) -> Bool {
        guard n.state.pointee.compareExchange(expected: parkedWord,
                                              desired: parkedWord &+ NodeState.generationUnit | NodeState.held,
                                              ordering: .acquiringAndReleasing).exchanged else { return false }
        markDeleted(n)
        wakeAfterMark(n)
        return true
    }

    // MARK: Waiting and releasing

    /// Waits until `n` is deleted or parked. Caller is inside an RCU section. Spinning stays
    /// inside it; sleeping leaves it, since a grace period (and so all reuse of nodes, frames,
    /// VMAs and page tables) must not wait for a range-lock wait. While asleep the node is
    /// pinned by its sleeper count (`NodePool.batchReady` defers a batch with a sleeper to
    /// another grace period). Returns true when it slept: the section was left, so the
    /// caller's position in the list may be gone and it walks again.
    @inline(__always)
    func waitReleased(_ n: LNode) -> Bool {
        var spins = 0
        while true {
            if Self.isDeleted(n) || !NodeState.isHeld(n.state.pointee.load(ordering: .acquiring)) { return false }
            spins += 1
            if spins < 512 {
                fl_cpu_relax()
                continue
            }
            // Dekker with the releaser: count ourselves, then re-check; it changes the state
            // word (the futex's) before it reads the count. If the node is parked and revived
            // before we sleep, the word is back to what we read: we sleep until its next
            // release, which sees our count and wakes us.
            NodePool.sleepingWaiters.wrappingAdd(1, ordering: .sequentiallyConsistent)
            n.sleepers.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            let s = n.state.pointee.load(ordering: .sequentiallyConsistent)
            let sleep = n.next.pointee.load(ordering: .sequentiallyConsistent) & 1 == 0 && NodeState.isHeld(s)
            if sleep {
                readSide.readUnlock()
                _ = fl_futex_wait(n.stateLowWord, UInt32(truncatingIfNeeded: s), -1)
                readSide.readLock()
            }
            n.sleepers.pointee.wrappingSubtract(1, ordering: .relaxed)
            NodePool.sleepingWaiters.wrappingSubtract(1, ordering: .releasing)
            if sleep { return true }
        }
    }

    /// The owner deletes its node: the paper's one fetch-add on its own `next` (nobody else
    /// marks a held node). Caller is inside an RCU section (the node may be recycled once
    /// that ends).
    @inline(__always)
    func release(_ n: LNode) {
        n.next.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        Self.wakeAfterMark(n)
    }

    /// The owner parks its node: held → free in a new generation; wakes any sleeper.
    /// Returns the parked word, which only a revive by the owner may turn back to held.
    @inline(__always)
    static func parkHeld(_ n: LNode) -> UInt64 {
        let s = n.state.pointee.load(ordering: .relaxed)
        let parked = NodeState.generation(s) &+ NodeState.generationUnit
        // Only the owner leaves held, so a store is the transition.
        n.state.pointee.store(parked, ordering: .sequentiallyConsistent)
        if n.sleepers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            _ = fl_futex_wake(n.stateLowWord, Int32.max)
        }
        return parked
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
                if curWord & 1 != 0 {   // prev's node was deleted under us
                    count(.restarts)
                    continue restart
                }
                let cur = LNode(word: curWord)
                if let c = cur, Self.isDeleted(c) {
                    // If we would go right after it, replace it: one CAS unlinks and inserts.
                    let after = c.next.pointee.load(ordering: .acquiring) & ~1
                    if (LNode(word: after).map { Self.compare($0, lock) } ?? 1) == 1 {
                        lock.next.pointee.store(after, ordering: .relaxed)
                        let r = prev.pointee.compareExchange(expected: curWord, desired: lock.word,
                                                             ordering: .acquiringAndReleasing)
                        if r.exchanged {
                            NodePool.shared.retire(c.raw)
                            return validate(lock, tryOnly: tryOnly)
                        }
                        count(.casFailures)
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
                    // A conflict: a parked node is killed and marked (then unlinked on
                    // the next turn); a held one is waited for.
                    if settle(cur!) {
                        if Self.isDeleted(cur!) { continue }
                        prev = cur!.next   // broken variant only: walks past a live parked node
                        curWord = prev.pointee.load(ordering: .acquiring)
                        continue
                    }
                    if tryOnly { return .busy }
                    count(.waits)
                    if waitReleased(cur!) { continue restart }
                    curWord = prev.pointee.load(ordering: .acquiring)
                } else {
                    lock.next.pointee.store(curWord, ordering: .relaxed)
                    let r = prev.pointee.compareExchange(expected: curWord, desired: lock.word,
                                                         ordering: .acquiringAndReleasing)
                    if r.exchanged { return validate(lock, tryOnly: tryOnly) }
                    count(.casFailures)
                    curWord = r.original
                }
            }
        }
    }

    @inline(__always)
    func validate(_ lock: LNode, tryOnly: Bool) -> InsertResult {
        lock.isReader ? readerValidate(lock, tryOnly: tryOnly) : writerValidate(lock)
    }

    /// `w_validate()`: an overlapping node before us (a reader that started earlier) that is
    /// held → back off; a parked one is killed (else it could be revived behind our back).
    func writerValidate(_ lock: LNode) -> InsertResult {
        var prev = head
        var curWord = prev.pointee.load(ordering: .acquiring) & ~1
        while let cur = LNode(word: curWord) {
            if cur == lock { return .held }
            if Self.isDeleted(cur) {
                curWord = skipDeleted(prev: prev, cur: cur)
                continue
            }
            if cur.end <= lock.start {
                prev = cur.next
                curWord = prev.pointee.load(ordering: .acquiring) & ~1
            } else if settle(cur) {
                curWord = pastSettled(prev: &prev, cur: cur)
            } else {
                release(lock)
                count(.restarts)
                return .retry
            }
        }
        return .held
    }

    /// `r_validate()`: wait for any overlapping held writer linked after us (a parked one is
    /// killed).
    func readerValidate(_ lock: LNode, tryOnly: Bool) -> InsertResult {
        var prev = lock.next
        var curWord = prev.pointee.load(ordering: .acquiring) & ~1
        while let cur = LNode(word: curWord) {
            if cur.start >= lock.end { return .held }   // sorted by start: nothing further overlaps
            if Self.isDeleted(cur) {
                curWord = skipDeleted(prev: prev, cur: cur)
                continue
            }
            if cur.isReader {
                prev = cur.next
                curWord = prev.pointee.load(ordering: .acquiring) & ~1
            } else if settle(cur) {
                curWord = pastSettled(prev: &prev, cur: cur)
            } else {
                if tryOnly {
                    release(lock)
                    return .busy
                }
                count(.waits)
                if waitReleased(cur) {
                    // Slept outside the section: walk again from our own node, which we hold.
                    prev = lock.next
                }
                curWord = prev.pointee.load(ordering: .acquiring) & ~1
            }
        }
        return .held
    }

    // MARK: RangeLock

    public func lock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle {
        precondition(!range.isEmpty, "empty range")
        readSide.readLock()
        defer { readSide.readUnlock() }
        if parking, let n = revive(range, reader: mode == .read, tryOnly: false) { return Handle(node: n) }
        while true {
            let n = LNode.make(range, reader: mode == .read)
            if insert(n, tryOnly: false) == .held { return Handle(node: n) }
            // .retry: the backed-off node is marked; walkers unlink and free it.
        }
    }

    public func tryLock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle? {
        precondition(!range.isEmpty, "empty range")
        readSide.readLock()
        defer { readSide.readUnlock() }
        if parking, let n = revive(range, reader: mode == .read, tryOnly: true) { return Handle(node: n) }
        let n = LNode.make(range, reader: mode == .read)
        switch insert(n, tryOnly: true) {
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

    /// Parks the node if this thread unlocked the same range last time (see `park`), else
    /// deletes it: one fetch-add.
    public func unlock(_ handle: Handle) {
        readSide.readLock()
        if parking { park(handle.node) } else { release(handle.node) }
        readSide.readUnlock()
    }
}
