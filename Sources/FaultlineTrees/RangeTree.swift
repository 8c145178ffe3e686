import FaultlineSync

/// A value a range tree can hold without reference counting: one non-zero machine word
/// (zero is the empty slot, Linux's NULL entry). Pointers to VMAs are the intended values.
public protocol MapleValue: BitwiseCopyable, Equatable {
    var mapleBits: UInt { get }
    init(mapleBits: UInt)
}

extension UnsafeMutableRawPointer: MapleValue {
    @inlinable public var mapleBits: UInt { UInt(bitPattern: self) }
    @inlinable public init(mapleBits: UInt) { self = UnsafeMutableRawPointer(bitPattern: mapleBits)! }
}

extension UnsafeMutablePointer: MapleValue where Pointee: ~Copyable {
    @inlinable public var mapleBits: UInt { UInt(bitPattern: self) }
    @inlinable public init(mapleBits: UInt) { self = UnsafeMutablePointer(bitPattern: mapleBits)! }
}

/// One stored range, inclusive at both ends as in the kernel (`[index, last]`; a VMA
/// `[vm_start, vm_end)` is stored as `vm_start...vm_end - 1`).
@frozen
public struct RangeEntry<Value: MapleValue>: Equatable {
    public var first: UInt64
    public var last: UInt64
    public var value: Value

    @inlinable
    public init(first: UInt64, last: UInt64, value: Value) {
        self.first = first
        self.last = last
        self.value = value
    }

    @inlinable public var range: ClosedRange<UInt64> { first...last }
}

/// What the address space needs from its VMA tree; the maple tree, the pre-6.1 gap rbtree and
/// a sorted array all provide it, so they are interchangeable.
///
/// Writers are serialised by the caller. Whether readers may run beside a writer depends on
/// the tree: `MapleTree` readers may, inside an RCU read-side section; the others need the
/// caller's lock (that is the difference the lab measures).
public protocol RangeTree: AnyObject {
    associatedtype Value: MapleValue

    /// Whether lookups may run concurrently with a writer under RCU alone.
    static var readersNeedNoLock: Bool { get }

    /// `mas_store()`: maps every index in `range` to `value`, trimming or splitting whatever
    /// overlapped. A nil value erases.
    func store(_ range: ClosedRange<UInt64>, _ value: Value?)
    /// `mas_erase()` over a range: the same as storing nil.
    func erase(_ range: ClosedRange<UInt64>)
    /// The entry containing `index` (`mtree_load`).
    func lookup(_ index: UInt64) -> RangeEntry<Value>?
    /// The first entry ending at or after `index` (`find_vma`).
    func find(from index: UInt64) -> RangeEntry<Value>?
    /// The first entry starting after `index`.
    func next(after index: UInt64) -> RangeEntry<Value>?
    /// The last entry ending before `index`.
    func prev(before index: UInt64) -> RangeEntry<Value>?
    /// Calls `body` on every entry intersecting `window`, in order, until it returns false.
    func forEach(in window: ClosedRange<UInt64>, _ body: (RangeEntry<Value>) -> Bool)
    /// `mas_empty_area()`: the lowest start of a free run of `size` indices inside `window`.
    func lowestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64?
    /// `mas_empty_area_rev()`: the highest start of a free run of `size` indices in `window`.
    func highestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64?
    /// Entries stored.
    var count: Int { get }
    /// Loads sorted, non-overlapping entries into an empty tree (fork-style duplication).
    func bulkLoad(_ entries: [RangeEntry<Value>])
    /// Removes everything.
    func removeAll()
}

extension RangeTree {
    @inlinable
    public func erase(_ range: ClosedRange<UInt64>) { store(range, nil) }

    /// All entries, in order.
    public func entries(in window: ClosedRange<UInt64> = 0...UInt64.max) -> [RangeEntry<Value>] {
        var out: [RangeEntry<Value>] = []
        forEach(in: window) { out.append($0); return true }
        return out
    }
}

/// `size` indices starting at `a` fit below `limit` (inclusive), without overflow.
@inlinable @inline(__always)
func fits(_ a: UInt64, _ size: UInt64, _ limit: UInt64) -> Bool {
    a <= limit && limit - a >= size - 1
}
