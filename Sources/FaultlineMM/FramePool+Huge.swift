import CFaultline
import FaultlineSync
import Synchronization

extension FramePool {
    /// Frames in a PMD-sized folio (`HPAGE_PMD_NR`).
    public static let hugeFrames = 512

    /// Pushes a free frame on the stack (lock held), counting it in its block.
    @inline(__always)
    func push(_ f: FrameNumber) {
        stackPos[Int(f)] = UInt32(truncatingIfNeeded: freeCount)
        freeStack[freeCount] = f
        freeCount += 1
        let b = Int(f) >> 9
        if b < blocks { blockFree[b] &+= 1 }
    }

    /// Pops the top free frame (lock held, stack not empty).
    @inline(__always)
    func pop() -> FrameNumber {
        freeCount -= 1
        let f = freeStack[freeCount]
        let b = Int(f) >> 9
        if b < blocks { blockFree[b] &-= 1 }
        return f
    }

    /// Takes `f` out of the middle of the stack (lock held): the top frame fills its place.
    @inline(__always)
    private func remove(_ f: FrameNumber) {
        let at = Int(stackPos[Int(f)])
        freeCount -= 1
        let top = freeStack[freeCount]
        freeStack[at] = top
        stackPos[Int(top)] = UInt32(truncatingIfNeeded: at)
        blockFree[Int(f) >> 9] &-= 1
    }

    /// `alloc_pages(GFP_TRANSHUGE, HPAGE_PMD_ORDER)` for a THP fault or collapse: 512 contiguous,
    /// naturally aligned frames, each with one reference, `flags` set and (if `zeroed`) zeroed;
    /// the first frame's number, or nil when no whole block is free or taking one would go
    /// below the low watermark. Linux would then compact memory (`defrag` = madvise: direct
    /// compaction for VM_HUGEPAGE); the model has no compaction or migration, so a fragmented
    /// pool stays fragmented until its frames come back — the fault falls back to small pages
    /// and counts it (`thp_fault_fallback`), as Linux does when compaction fails.
    public func allocateHuge(zeroed: Bool = true, flags: UInt32 = 0) -> FrameNumber? {
        lock.lock()
        guard freeCount - Self.hugeFrames >= watermarks.low else {
            lock.unlock()
            if watermarks.low > 0 { wakeKswapd?() }
            return nil
        }
        var found = -1
        for k in 0..<blocks {
            let b = (blockHint + k) % blocks
            if blockFree[b] == UInt16(Self.hugeFrames) { found = b; break }
        }
        guard found >= 0 else {
            lock.unlock()
            return nil
        }
        blockHint = found
        let head = FrameNumber(found << 9)
        for k in 0..<Self.hugeFrames { remove(head + FrameNumber(k)) }
        lock.unlock()
        for k in 0..<Self.hugeFrames { prepare(head + FrameNumber(k), flags: flags) }
        if zeroed { pointer(head).initializeMemory(as: UInt64.self, repeating: 0, count: Self.hugeFrames * Int(Linux.pageSize) / 8) }
        inUse.wrappingAdd(Self.hugeFrames, ordering: .relaxed)
        return head
    }

    /// Whole 512-frame blocks free now (racy; for tests and reports).
    public var freeHugeBlocks: Int {
        lock.withLock {
            var n = 0
            for b in 0..<blocks where blockFree[b] == UInt16(Self.hugeFrames) { n += 1 }
            return n
        }
    }
}
