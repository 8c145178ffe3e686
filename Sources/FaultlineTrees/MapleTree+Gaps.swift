extension MapleCore {
    /// `mas_empty_area()`: the lowest `a` in `window` with `[a, a + size - 1]` free and inside
    /// the window. Descends only into children whose recorded gap is large enough; a child that
    /// fails once the window clips it is backtracked out of. Writer side (gaps are writer data).
    func lowestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? {
        precondition(size > 0)
        guard let root = MapleNode(address: rootSlot.pointee.load(ordering: .relaxed)) else {
            return fits(window.lowerBound, size, window.upperBound) ? window.lowerBound : nil
        }
        return lowest(root, lo: 0, hi: UInt64.max, size: size, window: window)
    }

    /// `mas_empty_area_rev()`: the highest such `a`.
    func highestGap(size: UInt64, in window: ClosedRange<UInt64>) -> UInt64? {
        precondition(size > 0)
        guard let root = MapleNode(address: rootSlot.pointee.load(ordering: .relaxed)) else {
            return fits(window.lowerBound, size, window.upperBound) ? window.upperBound - (size - 1) : nil
        }
        return highest(root, lo: 0, hi: UInt64.max, size: size, window: window)
    }

    func lowest(_ n: MapleNode, lo: UInt64, hi: UInt64, size: UInt64, window: ClosedRange<UInt64>) -> UInt64? {
        let w = n.parentWordRelaxed()
        let end = MapleNode.end(w)
        let leaf = MapleNode.isLeaf(w)
        var first = lo
        for i in 0...end {
            let last = i < end ? n.pivot(i) : hi
            defer { first = last &+ 1 }
            if last < window.lowerBound { continue }
            if first > window.upperBound { return nil }
            if leaf {
                guard n.leafSlot(i) == 0 else { continue }
                let a = max(first, window.lowerBound)
                if fits(a, size, min(last, window.upperBound)) { return a }
            } else if n.gap(i) >= size,
                      let r = lowest(MapleNode(address: n.childSlot(i))!, lo: first, hi: last, size: size, window: window) {
                return r
            }
            if last == UInt64.max { break }
        }
        return nil
    }

    func highest(_ n: MapleNode, lo: UInt64, hi: UInt64, size: UInt64, window: ClosedRange<UInt64>) -> UInt64? {
        let w = n.parentWordRelaxed()
        let end = MapleNode.end(w)
        let leaf = MapleNode.isLeaf(w)
        var i = end
        while i >= 0 {
            let first = i > 0 ? n.pivot(i - 1) + 1 : lo
            let last = i < end ? n.pivot(i) : hi
            i -= 1
            if first > window.upperBound { continue }
            if last < window.lowerBound { return nil }
            if leaf {
                guard n.leafSlot(i + 1) == 0 else { continue }
                let top = min(last, window.upperBound)
                let bottom = max(first, window.lowerBound)
                if fits(bottom, size, top) { return top - (size - 1) }
            } else if n.gap(i + 1) >= size,
                      let r = highest(MapleNode(address: n.childSlot(i + 1))!, lo: first, hi: last, size: size, window: window) {
                return r
            }
        }
        return nil
    }
}
