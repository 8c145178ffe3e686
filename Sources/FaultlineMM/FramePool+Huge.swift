import CFaultline
import FaultlineSync
import Synchronization

extension FramePool {
    /// Frames in a PMD-sized folio (`HPAGE_PMD_NR`).
    public static let hugeFrames = 512

    /// The bucket of a block with `n` (1...512) free frames: the order of `n`, 9 when whole.
    @inline(__always)
    static func bucket(_ n: Int) -> Int { n >= hugeFrames ? 9 : Int.bitWidth - 1 - n.leadingZeroBitCount }

    @inline(__always)
    private func link(_ b: Int, _ k: Int) {
        let h = bucketHead[k]
        blockPrev[b] = -1
        blockNext[b] = h
        if h >= 0 { blockPrev[Int(h)] = Int32(b) }
        bucketHead[k] = Int32(b)
        bucketMask |= 1 << UInt16(k)
    }

    @inline(__always)
    private func unlink(_ b: Int, _ k: Int) {
        let p = blockPrev[b], n = blockNext[b]
        if p >= 0 { blockNext[Int(p)] = n } else { bucketHead[k] = n }
        if n >= 0 { blockPrev[Int(n)] = p }
        if bucketHead[k] < 0 { bucketMask &= ~(1 << UInt16(k)) }
    }

    /// `__free_one_page()` (lock held): the frame is marked free in its block; the block moves
    /// up a bucket when its free count reaches the next order (at 512 it is whole: the merge).
    @inline(__always)
    func push(_ f: FrameNumber) {
        freeCount += 1
        let b = Int(f) >> 9
        let n = Int(blockFree[b])
        blockBits[Int(f) >> 6] |= 1 << UInt64(Int(f) & 63)
        blockFree[b] = UInt16(n + 1)
        if blockIsolated[b] != 0 { return }
        if n == 0 {
            link(b, 0)
        } else if Self.bucket(n) != Self.bucket(n + 1) {
            unlink(b, Self.bucket(n))
            link(b, Self.bucket(n + 1))
        }
    }

    /// `rmqueue_bulk()` over `__rmqueue_smallest()` for order 0 (lock held): up to `n` frames
    /// into `out`, the lowest free frames of a block in the lowest bucket there is (so whole
    /// blocks are broken last; the block stays the lowest, and its bucket's head, as it
    /// empties), taken a bitmap word at a time with one bucket move per block. Returns how many.
    @inline(__always)
    func popMany(_ out: UnsafeMutablePointer<FrameNumber>, _ n: Int) -> Int {
        var got = 0
        while got < n && bucketMask != 0 {
            let k = Int(bucketMask.trailingZeroBitCount)
            let b = Int(bucketHead[k])
            let had = Int(blockFree[b])
            var taken = 0
            var w = b << 3
            while got < n && taken < had {
                var word = blockBits[w]
                while word != 0 && got < n {
                    out[got] = FrameNumber(w << 6 + word.trailingZeroBitCount)
                    word &= word - 1
                    got += 1
                    taken += 1
                }
                blockBits[w] = word
                w += 1
            }
            let left = had - taken
            blockFree[b] = UInt16(left)
            freeCount -= taken
            if left == 0 {
                unlink(b, k)
            } else if Self.bucket(left) != k {
                unlink(b, k)
                link(b, Self.bucket(left))
            }
        }
        return got
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
        let b = Int(bucketHead[9])
        guard b >= 0 else {
            lock.unlock()
            return nil
        }
        unlink(b, 9)
        blockFree[b] = 0
        (blockBits + b << 3).update(repeating: 0, count: 8)
        freeCount -= Self.hugeFrames
        lock.unlock()
        return prepareHuge(FrameNumber(b << 9), zeroed: zeroed, flags: flags)
    }

    /// A block just taken whole: each frame with one reference and `flags`, zeroed if asked,
    /// and charged as one folio of 512 pages; nil (the block freed again) if the charge fails.
    private func prepareHuge(_ head: FrameNumber, zeroed: Bool, flags: UInt32) -> FrameNumber? {
        for k in 0..<Self.hugeFrames { prepare(head + FrameNumber(k), flags: flags) }
        countInUse(Self.hugeFrames)
        if memcg != nil && flags & Self.chargedFlags != 0 && !charge(head, count: Self.hugeFrames, flags: flags) {
            for k in 0..<Self.hugeFrames { freeToBlock(head + FrameNumber(k)) }
            return nil
        }
        if zeroed { pointer(head).initializeMemory(as: UInt64.self, repeating: 0, count: Self.hugeFrames * Int(Linux.pageSize) / 8) }
        return head
    }

    // MARK: Compaction's side of the free lists

    /// `isolate_migratepages` picking its block, then `start_isolate_page_range()`: the block
    /// with the most free frames short of whole — not the zero page's, not the tail, none of
    /// its free frames in a per-thread cache (they cannot be drained) — taken out of its
    /// bucket, or nil. Refused when taking a block would leave free memory below the low
    /// watermark (`compaction_suitable`).
    func isolateBlockForCompaction() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard freeCount - 2 * Self.hugeFrames >= watermarks.low else { return nil }
        // At most 16 candidates looked at under the lock (`compact_control`'s scanner limits).
        var looked = 0
        for k in stride(from: 8, through: 5, by: -1) {
            var b = Int(bucketHead[k])
            while b >= 0 && looked < 16 {
                looked += 1
                let next = Int(blockNext[b])
                if b > 0 && b < blocks {
                    var flaggedFree = 0
                    for i in 0..<Self.hugeFrames where isFree(FrameNumber(b << 9 + i)) { flaggedFree += 1 }
                    if flaggedFree == Int(blockFree[b]) {
                        unlink(b, k)
                        blockIsolated[b] = 1
                        return b
                    }
                }
                b = next
            }
        }
        return nil
    }

    /// The end of compaction's hold on block `b`: taken whole as a THP if all its frames came
    /// back (`compaction_capture`: the block goes to the allocation that compacted, not to
    /// whoever asks next), else back in its bucket.
    func releaseIsolatedBlock(_ b: Int, capture: Bool, zeroed: Bool, flags: UInt32) -> FrameNumber? {
        lock.lock()
        blockIsolated[b] = 0
        let n = Int(blockFree[b])
        if capture && n == Self.hugeFrames {
            blockFree[b] = 0
            (blockBits + b << 3).update(repeating: 0, count: 8)
            freeCount -= Self.hugeFrames
            lock.unlock()
            return prepareHuge(FrameNumber(b << 9), zeroed: zeroed, flags: flags)
        }
        if n > 0 { link(b, Self.bucket(n)) }
        lock.unlock()
        return nil
    }

    /// Frees `f` (no reference left, no translation to it left) straight onto its block's
    /// list, past the per-thread cache: a page migration gives its old frame back this way.
    func freeToBlock(_ f: FrameNumber) {
        if memcg != nil { uncharge(f) }
        markFree(f)
        countInUse(-1)
        lock.withLock { push(f) }
    }

    /// Whole 512-frame blocks free now (racy; for tests and reports).
    public var freeHugeBlocks: Int {
        lock.withLock {
            var n = 0
            var b = bucketHead[9]
            while b >= 0 { n += 1; b = blockNext[Int(b)] }
            return n
        }
    }
}

extension FramePool {
    /// The free lists agree with themselves (threads quiet): each block is in the bucket of its
    /// free count and in no other, the lists link both ways, each block's bitmap marks
    /// frames of its own that are marked free, as many as it counts, and the counts add up. Frames in per-thread
    /// magazines are free but on no list.
    public func _checkInvariants() -> [String] {
        lock.withLock {
            var problems: [String] = []
            var listed = [Int](repeating: -1, count: blockSlots)
            for k in 0..<10 {
                if (bucketHead[k] >= 0) != (bucketMask & (1 << UInt16(k)) != 0) { problems.append("bucket \(k): mask disagrees with its list") }
                var b = Int(bucketHead[k]), prev = -1, steps = 0
                while b >= 0 && steps <= blockSlots {
                    if listed[b] >= 0 { problems.append("block \(b) in buckets \(listed[b]) and \(k)") }
                    listed[b] = k
                    if Int(blockPrev[b]) != prev { problems.append("block \(b): back link \(blockPrev[b]), expected \(prev)") }
                    prev = b; b = Int(blockNext[b]); steps += 1
                }
                if steps > blockSlots { problems.append("bucket \(k): list loops") }
            }
            var total = 0
            for b in 0..<blockSlots {
                let n = Int(blockFree[b])
                total += n
                if blockIsolated[b] != 0 { problems.append("block \(b): still isolated by compaction") }
                let want = n == 0 || blockIsolated[b] != 0 ? -1 : Self.bucket(n)
                if listed[b] != want { problems.append("block \(b): \(n) free but in bucket \(listed[b]), expected \(want)") }
                var bits = 0
                for w in b << 3..<(b + 1) << 3 {
                    bits += blockBits[w].nonzeroBitCount
                    var word = blockBits[w]
                    while word != 0 {
                        let f = w << 6 + word.trailingZeroBitCount
                        word &= word - 1
                        if f == 0 || f >= capacity { problems.append("block \(b): bad free entry \(f)"); break }
                        if !isFree(FrameNumber(f)) { problems.append("block \(b): frame \(f) on its free list is not marked free"); break }
                    }
                }
                if bits != n { problems.append("block \(b): \(bits) frames marked in its bitmap, \(n) counted") }
            }
            if total != freeCount { problems.append("free lists hold \(total) frames, \(freeCount) counted") }
            return Array(problems.prefix(20))
        }
    }
}
