@_spi(Testing) import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing
import Synchronization

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

    /// The per-thread lists are sized as Linux sizes its per-CPU ones for a zone of that many
    /// pages (`zone_batchsize`, `zone_highsize`): the host's 5.25 GiB zone gets batch 63
    /// (`/proc/zoneinfo`), a few MiB batch 1; high is the low watermark over the CPUs.
    @Test func perCPUListsAreSizedAsLinuxSizesThem() {
        #expect(FramePool._perCPUPagesSize(frames: 1_376_256, cpus: 2).batch == 63)
        #expect(FramePool._perCPUPagesSize(frames: 409_600, cpus: 2) == (63, 844))
        #expect(FramePool._perCPUPagesSize(frames: 409_600, cpus: 16) == (63, 252), "at least four batches")
        #expect(FramePool._perCPUPagesSize(frames: 65_536, cpus: 2) == (15, 320))
        #expect(FramePool._perCPUPagesSize(frames: 8192, cpus: 2) == (1, 113))
    }

    /// A thread takes the shared lists' lock once per batch: its first allocation takes a
    /// whole batch off them, the next ones none; frees stay on the thread's list until it
    /// passes high, which then gives back one batch.
    @Test func aThreadRefillsAndDrainsABatchAtATime() {
        let pool = FramePool(frames: 65_536)
        let (batch, high, start) = pool._perCPUPages
        #expect(batch > 1)
        var held = [pool.allocate(zeroed: false)!]
        #expect(pool._perCPUPages.onLists == start - batch)
        for _ in 1..<batch { held.append(pool.allocate(zeroed: false)!) }
        #expect(pool._perCPUPages.onLists == start - batch, "a batch serves a batch of allocations")
        while held.count < high + batch { held.append(pool.allocate(zeroed: false)!) }
        for f in held { pool.free(f) }
        // Every frame is free again: those not on the shared lists are on the thread's.
        let onThread = start - pool._perCPUPages.onLists
        #expect(onThread <= high && onThread > high - batch, "\(onThread) on the thread's list, high \(high)")
        #expect(pool._checkInvariants() == [])
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
        // At most 4000 frames (8 blocks) in use, and a few hundred on the thread's list: at least 20 of the 31
        // blocks past the zero page's are whole.
        #expect(pool.freeHugeBlocks >= 20, "\(pool.freeHugeBlocks) whole blocks")
        #expect(pool._checkInvariants() == [])
    }

    /// A grace period's frees are on the free lists before they stop counting as deferred: a
    /// fault on another thread in between finds the frames (before, it found the lists empty
    /// and nothing deferred, and failed with OOM beside free memory: the seed scenario's
    /// faulter, about one trial in eight of CI's smoke run). `broken` frees in the old order
    /// and the fault must fail.
    @Test(arguments: [false, true])
    func aFaultBesideAGracePeriodsFreesFindsTheFrames(broken: Bool) {
        let mm = makeSpace(.global, frames: 256)
        let pool = mm.system.frames
        let a = mm.mmap(0, 512 * page, rw, [.private, .anonymous]).must()
        var touched: UInt64 = 0
        while touched < 512, case .success = mm.store(a + touched * page, 1) { touched += 1 }
        #expect(touched < 512, "the pool ran out")
        #expect(pool.deferredFrames == 0 && !pool.freeAboveMin)
        let next = a + touched * page
        let result = Mutex<Result<Void, FaultError>?>(nil)
        let once = Atomic<Bool>(false)
        pool._brokenDeferredUncountedFirst = broken
        pool._deferredFreeHook = { [mm] in
            guard !once.exchange(true, ordering: .relaxed) else { return }
            let t = Threads.spawn { [mm] in
                let r = mm.store(next, 1)
                result.withLock { $0 = r }
            }
            Threads.join(t)
        }
        _ = mm.madvise(a, 8 * page, .dontNeed)
        mm.system.rcu.barrier()
        let r = result.withLock { $0 }
        if broken {
            #expect(r?.error == .oom, "the broken order is caught")
        } else {
            #expect(r?.succeeded == true)
        }
        pool._deferredFreeHook = nil
    }
}
