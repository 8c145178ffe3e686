import CFaultline
import Synchronization

/// `seqcount_t`: a sequence count for data read optimistically and written by one writer at a
/// time (writers are serialised by the caller, as in the kernel).
///
/// Rule for the payload: everything read between `readBegin()` and `readRetry(_:)` must be a
/// relaxed atomic (or immutable while published). A plain field read under a seqcount is a data
/// race in the Swift/C++ memory model even when the retry discards the value, and TSan says so.
///
/// Ordering follows Boehm's seqlock: writer `store(s+1, relaxed); fence(release)` … payload
/// relaxed stores … `store(s+2, release)`; reader `load(acquire)` … payload relaxed loads …
/// `fence(acquire); load(relaxed)`.
public struct SeqCount: ~Copyable, @unchecked Sendable {
    @usableFromInline let sequence: Atomic<UInt32>

    public init() { sequence = Atomic(0) }

    /// `write_seqcount_begin()`.
    @inlinable @inline(__always)
    public func writeBegin() {
        let s = sequence.load(ordering: .relaxed)
        sequence.store(s &+ 1, ordering: .relaxed)
        atomicMemoryFence(ordering: .releasing)
    }

    /// `write_seqcount_end()`.
    @inlinable @inline(__always)
    public func writeEnd() {
        let s = sequence.load(ordering: .relaxed)
        sequence.store(s &+ 1, ordering: .releasing)
    }

    /// `raw_write_seqcount_barrier()`-style bump: invalidates every reader in flight without
    /// leaving the count odd (for writers that publish by other means).
    @inlinable
    public func invalidate() {
        writeBegin()
        writeEnd()
    }

    /// `read_seqcount_begin()`: waits while a write is in progress.
    @inlinable @inline(__always)
    public func readBegin() -> UInt32 {
        var s = sequence.load(ordering: .acquiring)
        while _slowPath(s & 1 != 0) {
            fl_cpu_relax()
            s = sequence.load(ordering: .acquiring)
        }
        return s
    }

    /// `raw_read_seqcount()`: the count as it is, odd included. Speculative readers that
    /// prefer to abort rather than wait check `s & 1` themselves (as SPF does with `mm_seq`).
    @inlinable @inline(__always)
    public func rawRead() -> UInt32 { sequence.load(ordering: .acquiring) }

    /// `read_seqcount_retry()`: true when the data read since `start` may be torn.
    @inlinable @inline(__always)
    public func readRetry(_ start: UInt32) -> Bool {
        atomicMemoryFence(ordering: .acquiring)
        return sequence.load(ordering: .relaxed) != start
    }

    /// Whether a write is in progress now (racy).
    @inlinable
    public var isWriting: Bool { sequence.load(ordering: .relaxed) & 1 != 0 }
}
