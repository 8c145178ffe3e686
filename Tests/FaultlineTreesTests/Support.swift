import FaultlineSync
import FaultlineTrees

/// Test values: any non-zero word.
struct V: MapleValue, Hashable, CustomStringConvertible {
    var id: UInt
    init(_ id: UInt) { self.id = id }
    init(mapleBits: UInt) { id = mapleBits }
    var mapleBits: UInt { id }
    var description: String { "v\(id)" }
}

/// The obviously-correct model: a sorted array of disjoint entries.
struct RangeModel {
    var entries: [RangeEntry<V>] = []

    mutating func store(_ r: ClosedRange<UInt64>, _ v: V?) {
        var out: [RangeEntry<V>] = []
        for e in entries {
            if e.last < r.lowerBound || e.first > r.upperBound {
                out.append(e)
                continue
            }
            if e.first < r.lowerBound { out.append(RangeEntry(first: e.first, last: r.lowerBound - 1, value: e.value)) }
            if e.last > r.upperBound { out.append(RangeEntry(first: r.upperBound + 1, last: e.last, value: e.value)) }
        }
        if let v { out.append(RangeEntry(first: r.lowerBound, last: r.upperBound, value: v)) }
        entries = out.sorted { $0.first < $1.first }
    }

    func lookup(_ a: UInt64) -> RangeEntry<V>? { entries.first { $0.first <= a && a <= $0.last } }
    func find(from a: UInt64) -> RangeEntry<V>? { entries.first { $0.last >= a } }
    func next(after a: UInt64) -> RangeEntry<V>? { entries.first { $0.first > a } }
    func prev(before a: UInt64) -> RangeEntry<V>? { entries.last { $0.last < a } }

    /// Free runs, clipped to `window`.
    func holes(in window: ClosedRange<UInt64>) -> [ClosedRange<UInt64>] {
        var out: [ClosedRange<UInt64>] = []
        var start: UInt64? = window.lowerBound
        for e in entries where e.last >= window.lowerBound {
            if e.first > window.upperBound { break }
            if let s = start, e.first > s { out.append(s...(e.first - 1)) }
            start = e.last == UInt64.max ? nil : max(e.last + 1, window.lowerBound)
            if let s = start, s > window.upperBound { start = nil }
        }
        if let s = start, s <= window.upperBound { out.append(s...window.upperBound) }
        return out
    }

    func lowestGap(size: UInt64, in w: ClosedRange<UInt64>) -> UInt64? {
        holes(in: w).first { $0.upperBound - $0.lowerBound >= size - 1 }.map(\.lowerBound)
    }

    func highestGap(size: UInt64, in w: ClosedRange<UInt64>) -> UInt64? {
        holes(in: w).last { $0.upperBound - $0.lowerBound >= size - 1 }.map { $0.upperBound - (size - 1) }
    }
}

/// One operation of a random sequence.
struct TreeOp: CustomStringConvertible, Sendable {
    var erase: Bool
    var first: UInt64
    var length: UInt64
    var value: UInt

    var range: ClosedRange<UInt64> {
        let end = first &+ (length - 1)
        return first...(end < first ? UInt64.max : end)
    }

    var description: String { erase ? "erase(\(range))" : "store(\(range), v\(value))" }

    /// Maps generated numbers onto a small low window and a window at the top of the space.
    static func make(kind: Int, offset: UInt64, length: UInt64, value: UInt) -> TreeOp {
        let high = kind % 4 == 3
        let first = high ? UInt64.max - 700 + offset : offset
        return TreeOp(erase: kind % 3 == 0, first: first, length: length, value: value)
    }
}

/// Applies `ops` to `tree` and the model, comparing everything after each step.
func checkAgainstModel<T: RangeTree>(_ tree: T, _ ops: [TreeOp], check: (T) -> Void) -> String? where T.Value == V {
    var model = RangeModel()
    for (n, op) in ops.enumerated() {
        tree.store(op.range, op.erase ? nil : V(op.value))
        model.store(op.range, op.erase ? nil : V(op.value))
        check(tree)
        if let d = compare(tree, model) { return "after op \(n) \(op): \(d)" }
    }
    return nil
}

func compare<T: RangeTree>(_ tree: T, _ model: RangeModel) -> String? where T.Value == V {
    let all = tree.entries()
    if all != model.entries { return "entries \(all.map { "\($0.range)=\($0.value)" }) vs model \(model.entries.map { "\($0.range)=\($0.value)" })" }
    if tree.count != model.entries.count { return "count \(tree.count) vs \(model.entries.count)" }
    var probes: [UInt64] = [0, 1, UInt64.max, UInt64.max - 1]
    for e in model.entries { probes += [e.first, e.last, e.first &- 1, e.last &+ 1] }
    for p in probes {
        if tree.lookup(p) != model.lookup(p) { return "lookup(\(p))" }
        if tree.find(from: p) != model.find(from: p) { return "find(from: \(p))" }
        if tree.next(after: p) != model.next(after: p) { return "next(after: \(p))" }
        if tree.prev(before: p) != model.prev(before: p) { return "prev(before: \(p)): \(String(describing: tree.prev(before: p))) vs \(String(describing: model.prev(before: p)))" }
    }
    let windows: [ClosedRange<UInt64>] = [0...UInt64.max, 0...300, 50...650, (UInt64.max - 700)...UInt64.max, (UInt64.max - 500)...(UInt64.max - 100)]
    for w in windows {
        for size: UInt64 in [1, 2, 5, 17, 64, 400] {
            if tree.lowestGap(size: size, in: w) != model.lowestGap(size: size, in: w) {
                return "lowestGap(\(size), \(w)): \(String(describing: tree.lowestGap(size: size, in: w))) vs \(String(describing: model.lowestGap(size: size, in: w)))"
            }
            if tree.highestGap(size: size, in: w) != model.highestGap(size: size, in: w) {
                return "highestGap(\(size), \(w)): \(String(describing: tree.highestGap(size: size, in: w))) vs \(String(describing: model.highestGap(size: size, in: w)))"
            }
        }
        let inWindow = tree.entries(in: w)
        let expected = model.entries.filter { $0.last >= w.lowerBound && $0.first <= w.upperBound }
        if inWindow != expected { return "forEach(in: \(w))" }
    }
    return nil
}
