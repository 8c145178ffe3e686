import FaultlineMM

/// The address ranges a trace has shown the kernel's view of, for one address space: every
/// range a traced call mapped, unmapped, moved, or saw fail as unmapped. Memory there is
/// known from the trace; only memory outside it can have existed unseen since before the
/// trace's first call (what execve mapped), and only there may a replay infer a mapping.
struct TouchedMemory {
    /// Sorted, disjoint, non-adjacent.
    private(set) var ranges: [Range<UInt64>] = []

    /// Adds `[start, start + length)`, page-aligned outwards.
    mutating func insert(_ start: UInt64, _ length: UInt64) {
        let lo = Linux.pageAlignDown(start)
        let end = start &+ length
        guard length > 0, end > start else { return }
        let hi = Linux.pageAlign(end) == 0 ? Linux.pageAlignDown(end) : Linux.pageAlign(end)
        guard hi > lo else { return }
        var merged = lo..<hi
        var kept: [Range<UInt64>] = []
        kept.reserveCapacity(ranges.count + 1)
        for r in ranges {
            if r.upperBound < merged.lowerBound || r.lowerBound > merged.upperBound {
                kept.append(r)
            } else {
                merged = min(r.lowerBound, merged.lowerBound)..<max(r.upperBound, merged.upperBound)
            }
        }
        let i = kept.firstIndex { $0.lowerBound > merged.lowerBound } ?? kept.count
        kept.insert(merged, at: i)
        ranges = kept
    }

    /// `hole` split into the parts the trace never touched and the parts it did.
    func split(_ hole: Range<UInt64>) -> (untouched: [Range<UInt64>], touched: [Range<UInt64>]) {
        var untouched: [Range<UInt64>] = []
        var touched: [Range<UInt64>] = []
        var cursor = hole.lowerBound
        for r in ranges where r.upperBound > hole.lowerBound && r.lowerBound < hole.upperBound {
            let a = max(r.lowerBound, hole.lowerBound), b = min(r.upperBound, hole.upperBound)
            if a > cursor { untouched.append(cursor..<a) }
            touched.append(a..<b)
            cursor = b
        }
        if cursor < hole.upperBound { untouched.append(cursor..<hole.upperBound) }
        return (untouched, touched)
    }
}
