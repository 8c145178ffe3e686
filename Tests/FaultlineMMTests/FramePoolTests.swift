@_spi(Testing) import FaultlineMM
import FaultlineSync
import Testing

/// The frame pool's free lists as the buddy allocator keeps them for orders 0 and 9: small
/// pages come from partly used blocks before a whole block is broken, and a block whose frames
/// all come back is whole again (what keeps THP allocation possible after churn).
@Suite("Frame pool")
struct FramePoolTests {
    /// Takes `n` small frames (nil: all there are).
    static func take(_ pool: FramePool, _ n: Int? = nil) -> [FrameNumber] {
        var got: [FrameNumber] = []
        while n == nil || got.count < n! {
            guard let f = pool.allocate(zeroed: false) else { break }
            got.append(f)
        }
        return got
    }

    /// Frees frames straight onto the lists (past the per-thread magazine) and waits for them.
    static func give(_ pool: FramePool, _ frames: [FrameNumber]) {
        pool.freeDeferred(frames)
        RCU.shared.barrier()
    }

    @Test func smallPagesComeFromPartlyUsedBlocksFirst() {
        let pool = FramePool(frames: 16 * 512)
        let all = Self.take(pool)
        #expect(pool.freeHugeBlocks == 0 && all.count == 16 * 512)
        // Block 1 comes back last, so its frames would be the first a plain stack hands out.
        let block0 = all.filter { $0 >> 9 == 0 }, block1 = all.filter { $0 >> 9 == 1 }
        Self.give(pool, block0)
        Self.give(pool, block1)
        #expect(pool.freeHugeBlocks == 1)
        let again = Self.take(pool, 300)
        #expect(again.allSatisfy { $0 >> 9 == 0 }, "small pages broke the whole block")
        #expect(pool.freeHugeBlocks == 1)
        #expect(pool._checkInvariants() == [])
    }

    /// A block the allocator breaks hands out its frames in ascending order (`expand()`
    /// returns the lowest page; `rmqueue_bulk()` fills the per-CPU list in that order and
    /// allocation takes its head), whatever order they came back in; the per-thread cache
    /// hands the most recently freed frame out first (`free_unref_page()` adds to the head)
    /// and gives its oldest back to the lists when full (`free_pcppages_bulk()` takes the
    /// tail). Out of order, a fault sweep zeroed each frame at 2.4× the cost.
    @Test func aBrokenBlockHandsOutItsFramesInAscendingOrder() {
        // With the zero page, 4 whole blocks: no tail block (a lone frame would go first).
        let pool = FramePool(frames: 4 * 512 - 1)
        let first = Self.take(pool, 600)
        #expect(first == (1...600).map { FrameNumber($0) })
        // Back in descending order, straight onto the lists: the block is whole again.
        Self.give(pool, first.reversed())
        let again = Self.take(pool, 600)
        #expect(again == first)
        // Through the per-thread cache: the last frames freed are the first reused.
        for f in again.suffix(10) { pool.free(f) }
        let hot = Self.take(pool, 3)
        #expect(hot == [600, 599, 598].map { FrameNumber($0) })
        // A full cache gives back its oldest eight and keeps the rest in order.
        let more = Self.take(pool, 20)
        for f in more { pool.free(f) }
        let reuse = Self.take(pool, 7)
        #expect(reuse == more.suffix(7).reversed(), "\(more) then \(reuse)")
        #expect(pool._checkInvariants() == [])
    }

    @Test func blocksMergeWhateverOrderFramesComeBackIn() {
        let pool = FramePool(frames: 16 * 512)
        var rng = SplitMix64(seed: 3)
        for round in 0..<4 {
            var all = Self.take(pool)
            // Back in a random order, a few at a time.
            for i in stride(from: all.count - 1, to: 0, by: -1) { all.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            for chunk in stride(from: 0, to: all.count, by: 97) { Self.give(pool, Array(all[chunk..<min(chunk + 97, all.count)])) }
            // Block 0 holds the zero page; the others are whole again.
            #expect(pool.freeHugeBlocks == 15, "round \(round)")
            #expect(pool._checkInvariants() == [], "round \(round)")
            guard let h = pool.allocateHuge(zeroed: false) else { Issue.record("no whole block"); return }
            #expect(h % 512 == 0 && h != 0)
            Self.give(pool, (0..<512).map { h + FrameNumber($0) })
        }
    }

    /// Churn of small pages over a pool with room to spare leaves the free blocks whole.
    @Test func churnLeavesBlocksWhole() {
        let pool = FramePool(frames: 32 * 512)
        var rng = SplitMix64(seed: 9)
        var held: [FrameNumber] = []
        for _ in 0..<20_000 {
            if held.count < 4000 && (held.isEmpty || rng.next() % 2 == 0) {
                if let f = pool.allocate(zeroed: false) { held.append(f) }
            } else {
                let i = Int(rng.next() % UInt64(held.count))
                held.swapAt(i, held.count - 1)
                pool.free(held.removeLast())
            }
        }
        // At most 4000 frames (8 blocks) in use, and 15 in a magazine: at least 20 of the 31
        // blocks past the zero page's are whole.
        #expect(pool.freeHugeBlocks >= 20, "\(pool.freeHugeBlocks) whole blocks")
        #expect(pool._checkInvariants() == [])
    }
}
