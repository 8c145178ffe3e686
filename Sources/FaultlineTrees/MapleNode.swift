import Synchronization

/// One maple-tree node: 256 bytes, 256-byte aligned, 32 machine words — Linux's size.
///
/// Layout (word index):
/// - word 0, the *parent word*: parent node address (256-aligned; 0 for the root) in the high
///   bits, and in the low byte the node's metadata: bits 0–4 the index of the last used slot
///   (`end`), bit 5 leaf, bit 6 fresh (built by the running write, not yet published). A dead
///   node's parent word holds its own address (`mte_set_node_dead`).
/// - leaf (`maple_range_64`): 15 pivots (words 1–15) and 16 slots (words 16–31);
/// - internal (`maple_arange_64`): 9 pivots (words 1–9), 10 child slots (words 10–19) and 10
///   gaps, the largest empty run in each child's subtree (words 20–29).
///
/// Slot *i* covers `[pivot[i-1] + 1, pivot[i]]`; slot 0 starts at the node's minimum and the
/// last used slot ends at the node's maximum, both implied by the parent — so the node stores
/// ranges, NULL ones (gaps) included, exactly as Linux's does, with the same fan-out (16 in a
/// leaf, 10 with gaps above). Linux keeps `end` and the gap offset in the last slot or pivot
/// when there is room; this layout keeps them in the low bits of the parent word, which
/// Linux spends on the parent's slot number and type, so the budget is the same 256 bytes.
/// Every word is accessed atomically (relaxed for pivots and gaps, acquire/release for slots
/// and the parent word): readers walk nodes a writer may be retiring, and a plain field read
/// under such a race is undefined behaviour (and TSan says so). On x86 these are plain moves.
@frozen
public struct MapleNode: Equatable, @unchecked Sendable {
    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt>>

    public static let bytes = 256
    public static let leafSlots = 16
    public static let internalSlots = 10
    /// Minimum fill of a non-root node (B-tree style), so height stays logarithmic.
    static let leafMin = 6
    static let internalMin = 4

    @usableFromInline static var endMask: UInt { 0x1F }
    @usableFromInline static var leafBit: UInt { 0x20 }
    @usableFromInline static var freshBit: UInt { 0x40 }
    @usableFromInline static var metaMask: UInt { 0xFF }

    @inlinable
    init(words: UnsafeMutablePointer<Atomic<UInt>>) { self.words = words }

    @inlinable
    init?(address: UInt) {
        guard let p = UnsafeMutablePointer<Atomic<UInt>>(bitPattern: address) else { return nil }
        words = p
    }

    @inlinable var address: UInt { UInt(bitPattern: words) }

    @inlinable @inline(__always)
    func parentWord() -> UInt { words[0].load(ordering: .acquiring) }

    /// The parent word for the writer, which alone changes it.
    @inlinable @inline(__always)
    func parentWordRelaxed() -> UInt { words[0].load(ordering: .relaxed) }

    @inlinable @inline(__always)
    static func end(_ word: UInt) -> Int { Int(word & endMask) }

    @inlinable @inline(__always)
    static func isLeaf(_ word: UInt) -> Bool { word & leafBit != 0 }

    /// `ma_dead_node()`.
    @inlinable @inline(__always)
    func isDead() -> Bool { parentWord() & ~Self.metaMask == address }

    @inlinable @inline(__always)
    func pivot(_ i: Int) -> UInt64 { UInt64(words[1 &+ i].load(ordering: .relaxed)) }

    @inlinable @inline(__always)
    func leafSlot(_ i: Int) -> UInt { words[16 &+ i].load(ordering: .acquiring) }

    @inlinable @inline(__always)
    func childSlot(_ i: Int) -> UInt { words[10 &+ i].load(ordering: .acquiring) }

    @inlinable @inline(__always)
    func gap(_ i: Int) -> UInt64 { UInt64(words[20 &+ i].load(ordering: .relaxed)) }

    // Writer-side mutators (fresh nodes, or the writer's own metadata).
    @inline(__always) func setPivot(_ i: Int, _ v: UInt64) { words[1 + i].store(UInt(v), ordering: .relaxed) }
    @inline(__always) func setLeafSlot(_ i: Int, _ v: UInt) { words[16 + i].store(v, ordering: .releasing) }
    @inline(__always) func setChildSlot(_ i: Int, _ v: UInt) { words[10 + i].store(v, ordering: .releasing) }
    @inline(__always) func setGap(_ i: Int, _ v: UInt64) { words[20 + i].store(UInt(v), ordering: .relaxed) }
    @inline(__always) func setParentWord(_ w: UInt) { words[0].store(w, ordering: .releasing) }

    /// Points this node's parent word at `parent` (0 for the root), keeping the metadata.
    @inline(__always)
    func setParent(_ parent: UInt) {
        setParentWord((parentWordRelaxed() & Self.metaMask) | parent)
    }
}

/// Saturating length of `[first, last]`.
@inlinable @inline(__always)
func span(_ first: UInt64, _ last: UInt64) -> UInt64 {
    let d = last &- first
    return d == UInt64.max ? UInt64.max : d &+ 1
}
