/// The floor for lookups: parallel sorted arrays and a binary search. Stores shift memory
/// (O(n)); gap searches scan. Like the rbtree, readers need the caller's lock.
public final class SortedRangeArray<Value: MapleValue>: RangeTree, @unchecked Sendable {
    public static var readersNeedNoLock: Bool { false }

    @usableFromInline @exclusivity(unchecked) var firsts: UnsafeMutablePointer<UInt64>
    @usableFromInline @exclusivity(unchecked) var lasts: UnsafeMutablePointer<UInt64>
    @usableFromInline @exclusivity(unchecked) var values: UnsafeMutablePointer<Value>
    @usableFromInline @exclusivity(unchecked) var capacity: Int
    @usableFromInline @exclusivity(unchecked) var _count = 0

    @inlinable public var count: Int { _count }

    public init() {
        capacity = 16
        firsts = .allocate(capacity: capacity)
        lasts = .allocate(capacity: capacity)
        values = .allocate(capacity: capacity)
    }

    deinit {
        firsts.deallocate()
        lasts.deallocate()
        values.deallocate()
    }

    /// Index of the first entry whose last is ≥ index (== count if none).
    @inlinable @inline(__always)
    func lowerBound(_ index: UInt64) -> Int {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if lasts[mid] < index { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    @inlinable @inline(__always)
    func entry(_ i: Int) -> RangeEntry<Value> { RangeEntry(first: firsts[i], last: lasts[i], value: values[i]) }

    @inlinable
    public func lookup(_ index: UInt64) -> RangeEntry<Value>? {
        let i = lowerBound(index)
        return i < count && firsts[i] <= index ? entry(i) : nil
    }

    @inlinable
    public func find(from index: UInt64) -> RangeEntry<Value>? {
        let i = lowerBound(index)
        return i < count ? entry(i) : nil
    }

    @inlinable
    public func next(after index: UInt64) -> RangeEntry<Value>? {
        guard index < UInt64.max else { return nil }
        var i = lowerBound(index + 1)
        if i < count && firsts[i] <= index { i += 1 }
        return i < count ? entry(i) : nil
    }

    @inlinable
    public func prev(before index: UInt64) -> RangeEntry<Value>? {
        guard index > 0 else { return nil }
        let i = lowerBound(index)
        return i > 0 ? entry(i - 1) : nil
    }

    @inlinable
    public func forEach(in window: ClosedRange<UInt64>, _ body: (RangeEntry<Value>) -> Bool) {
        var i = lowerBound(window.lowerBound)
        while i < count && firsts[i] <= window.upperBound {
            if !body(entry(i)) { return }
            i += 1
        }
    }

    @inlinable
    func grow(to needed: Int) {
        guard needed > capacity else { return }
        var c = capacity
        while c < needed { c *= 2 }
        let f = UnsafeMutablePointer<UInt64>.allocate(capacity: c)
        let l = UnsafeMutablePointer<UInt64>.allocate(capacity: c)
        let v = UnsafeMutablePointer<Value>.allocate(capacity: c)
        f.update(from: firsts, count: count)
        l.update(from: lasts, count: count)
        v.update(from: values, count: count)
        firsts.deallocate()
        lasts.deallocate()
        values.deallocate()
        firsts = f
        lasts = l
        values = v
        capacity = c
    }

    /// Replaces entries `[i, j)` with `new`.
    @inlinable
    func replace(_ i: Int, _ j: Int, with new: [RangeEntry<Value>]) {
        let delta = new.count - (j - i)
        grow(to: count + delta)
        let tailCount = count - j
        (firsts + i + new.count).update(from: firsts + j, count: tailCount)
        (lasts + i + new.count).update(from: lasts + j, count: tailCount)
        (values + i + new.count).update(from: values + j, count: tailCount)
        for (k, e) in new.enumerated() {
            firsts[i + k] = e.first
            lasts[i + k] = e.last
            values[i + k] = e.value
        }
        _count += delta
    }

    @inlinable
    public func store(_ range: ClosedRange<UInt64>, _ value: Value?) {
        let s = range.lowerBound
        let e = range.upperBound
        let i = lowerBound(s)
        var j = i
        while j < count && firsts[j] <= e { j += 1 }
        var new: [RangeEntry<Value>] = []
        if i < j && firsts[i] < s { new.append(RangeEntry(first: firsts[i], last: s - 1, value: values[i])) }
        if let value { new.append(RangeEntry(first: s, last: e, value: value)) }
        if i < j && lasts[j - 1] > e { new.append(RangeEntry(first: e + 1, last: lasts[j - 1], value: values[j - 1])) }
        replace(i, j, with: new)
    }

    public func removeAll() { _count = 0 }

    public func bulkLoad(_ entries: [RangeEntry<Value>]) {
        precondition(count == 0, "bulkLoad needs an empty array")
        replace(0, 0, with: entries)
    }

    @inlinable
    public func lowestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? {
        precondition(size > 0)
        var start = window.lowerBound
        var i = lowerBound(start)
        while true {
            if i < count && firsts[i] <= start {
                guard lasts[i] < window.upperBound else { return nil }
                start = lasts[i] + 1
                i += 1
                continue
            }
            let limit = i < count ? min(firsts[i] - 1, window.upperBound) : window.upperBound
            if fits(start, size, limit) { return start }
            guard i < count, lasts[i] < window.upperBound else { return nil }
            start = lasts[i] + 1
            i += 1
        }
    }

    @inlinable
    public func highestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? {
        precondition(size > 0)
        var top = window.upperBound
        var i = lowerBound(top)
        while true {
            if i < count && firsts[i] <= top {
                guard firsts[i] > window.lowerBound else { return nil }
                top = firsts[i] - 1
            }
            let bottom = i > 0 ? max(lasts[i - 1] + 1, window.lowerBound) : window.lowerBound
            if fits(bottom, size, top) { return top - (size - 1) }
            guard i > 0 else { return nil }
            i -= 1
        }
    }
}
