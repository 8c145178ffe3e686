import Synchronization

extension ListRangeLock {
    /// Re-takes the node this thread parked, if it is for this lock, range and mode and nobody
    /// killed it: one CAS (the parked word → held) on its state word, then the validation a
    /// fresh insert runs. Nil sends the caller down the insert path. Inside RCU.
    @inline(__always)
    func revive(_ range: Range<UInt64>, reader: Bool, tryOnly: Bool) -> LNode? {
        let m = NodePool.shared.magazine()
        guard let raw = m.pointee.parked,
              m.pointee.parkedKey == NodePool.RangeKey(lock: identity, start: range.lowerBound,
                                                       end: range.upperBound, reader: reader) else { return nil }
        m.pointee.parked = nil
        let n = LNode(raw: raw)
        let word = m.pointee.parkedWord
        // The generation in `word` makes this fail if the node died and was handed out again.
        guard n.state.pointee.compareExchange(expected: word, desired: word | NodeState.held,
                                              ordering: .acquiringAndReleasing).exchanged else { return nil }
        // A failed validation has deleted the node; the caller inserts a fresh one.
        return validate(n, tryOnly: tryOnly) == .held ? n : nil
    }

    /// Unlock with parking: if this thread's previous unlock was of the same lock, range and
    /// mode, park `n` (held → free) and record it in the thread's slot, killing the node the
    /// slot held before if that is still parked; otherwise delete `n` as the paper does. A
    /// sweep over ever new ranges therefore never parks. Inside RCU.
    @inline(__always)
    func park(_ n: LNode) {
        let m = NodePool.shared.magazine()
        let key = NodePool.RangeKey(lock: identity, start: n.start, end: n.end, reader: n.isReader)
        let again = m.pointee.lastKey == key
        m.pointee.lastKey = key
        guard again else {
            release(n)
            return
        }
        // Still ours only if still parked in the generation we parked it in.
        if let old = m.pointee.parked { _ = Self.kill(LNode(raw: old), parkedWord: m.pointee.parkedWord) }
        m.pointee.parked = n.raw
        m.pointee.parkedWord = Self.parkHeld(n)
        m.pointee.parkedKey = key
    }
}
