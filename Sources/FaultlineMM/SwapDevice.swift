import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `struct swap_info_struct` for one in-memory swap device (mm/swapfile.c, mm/swap_state.c):
/// page-sized slots holding what reclaim wrote out, with simulated I/O latency.
///
/// - `swap_map`: per slot, the number of swap PTEs that reference it (`swap_duplicate` at
///   fork, `swap_free` when one is faulted in or zapped); a slot is free at zero unless a
///   frame holds it in the swap cache.
/// - the swap cache (`swapper_spaces`): slot → frame, for a page being written out or read
///   back while PTEs still hold the slot. A cached frame has `PageMeta.Flag.swapCache`, its
///   slot in `swapSlot`, and one reference for the cache.
///
/// Slot 0 is never used (Linux keeps the header there). `lock` serialises allocation, counts
/// and the cache; callers may hold a PTE lock when they take it, never the reverse.
public final class SwapDevice: @unchecked Sendable {
    public let slots: Int
    /// Simulated latency of one page read (`swap_read_folio`), which the faulting thread waits for.
    public let ioLatencyNs: UInt64
    let storage: UnsafeMutableRawPointer
    let lock = SpinLock()
    @exclusivity(unchecked) var swapMap: [Int32]
    @exclusivity(unchecked) var freeSlots: [UInt32]
    @exclusivity(unchecked) var cache: [UInt32: FrameNumber] = [:]
    /// Slots whose page reclaim holds (Linux: the folio locked under writeback): the slot stays
    /// allocated and cached even if its count falls to zero, until reclaim is done with it.
    @exclusivity(unchecked) var underReclaim: Set<UInt32> = []
    let frames: FramePool
    /// Tests: called by `readIn` right after it copied a slot's contents, before it publishes
    /// them (what else may happen to the slot in between).
    @_spi(Testing) public var _afterRead: ((UInt32) -> Void)? = nil
    let outCount = Atomic<Int>(0)
    let inCount = Atomic<Int>(0)

    /// - Parameters:
    ///   - pages: slots of 4 KiB (the device's size).
    ///   - ioLatencyNs: time one page's read takes.
    init(pages: Int, ioLatencyNs: UInt64, frames: FramePool) {
        precondition(pages > 0)
        slots = pages + 1
        self.ioLatencyNs = ioLatencyNs
        self.frames = frames
        let bytes = slots * Int(Linux.pageSize)
        let m = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(m != MAP_FAILED, "cannot reserve \(bytes) bytes for swap")
        storage = m!
        swapMap = Array(repeating: 0, count: slots)
        freeSlots = (1..<UInt32(slots)).reversed()
    }

    deinit { munmap(storage, slots * Int(Linux.pageSize)) }

    /// Pages written out (`pswpout`) and read back (`pswpin`).
    public var pagesOut: Int { outCount.load(ordering: .relaxed) }
    public var pagesIn: Int { inCount.load(ordering: .relaxed) }
    /// Slots in use (referenced by a PTE or held by the swap cache).
    public var slotsInUse: Int { lock.withLock { slots - 1 - freeSlots.count } }

    // MARK: Slots

    /// Reclaim takes `f` (isolation: one reclaimer at a time): a page already in the swap cache
    /// keeps its slot, whose copy on the device is still good unless the page was dirtied
    /// (`fresh` false); any other gets a free slot and enters the swap cache, taking a
    /// reference (`folio_alloc_swap()` + `add_to_swap_cache()`; `fresh` true). Nil when the
    /// device is full or another reclaimer has the page.
    func isolate(_ f: FrameNumber) -> (slot: UInt32, fresh: Bool)? {
        lock.withLock {
            let p = frames.page(f)
            if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.swapCache != 0 {
                let s = p.pointee.swapSlot.load(ordering: .relaxed)
                guard cache[s] == f, !underReclaim.contains(s) else { return nil }
                underReclaim.insert(s)
                return (s, false)
            }
            guard let s = freeSlots.popLast() else { return nil }
            cache[s] = f
            underReclaim.insert(s)
            p.pointee.swapSlot.store(s, ordering: .relaxed)
            p.pointee.flags.bitwiseOr(PageMeta.Flag.swapCache, ordering: .relaxed)
            frames.get(f)
            return (s, true)
        }
    }

    /// `swap_duplicate()`: one more swap PTE references `slot` (fork, try_to_unmap).
    func duplicate(_ slot: UInt32) {
        lock.withLock { swapMap[Int(slot)] += 1 }
    }

    /// `swap_free()` / `free_swap_and_cache()`: one swap PTE less. At zero the slot is free,
    /// and a frame still caching it leaves the swap cache (its reference dropped): nothing can
    /// look the slot up any more — unless reclaim holds the page, which then finishes the job.
    /// (Linux keeps a page faulted in for reading in the swap cache until the device fills or
    /// reclaim finds it clean; the model lets it go at once.)
    func free(_ slot: UInt32) {
        var uncached: FrameNumber? = nil
        lock.withLock {
            swapMap[Int(slot)] -= 1
            precondition(swapMap[Int(slot)] >= 0, "swap slot \(slot) freed more often than referenced")
            if swapMap[Int(slot)] == 0 && !underReclaim.contains(slot) {
                if let f = cache.removeValue(forKey: slot) {
                    uncached = f
                    frames.page(f).pointee.flags.bitwiseAnd(~PageMeta.Flag.swapCache, ordering: .relaxed)
                }
                freeSlots.append(slot)
            }
        }
        if let f = uncached { frames.putDeferred(f) }
    }

    /// The end of reclaim's hold on `f` (cached as `slot`), `__remove_mapping()` for a swap
    /// cache folio: if only the cache and the caller (`refs` references in all) hold it, it
    /// leaves the cache and the caller's references are gone (true: the caller frees it).
    /// Otherwise someone uses it: it stays cached while swap PTEs hold the slot, and leaves the
    /// cache (the cache's reference dropped; the caller still holds its own) if none does.
    func finishReclaim(_ f: FrameNumber, slot: UInt32, refs: Int32) -> Bool {
        let p = frames.page(f)
        return lock.withLock {
            underReclaim.remove(slot)
            // Under the lock a swap-in cannot take a new reference (it looks up under it).
            let frozen = p.pointee.refcount.compareExchange(expected: refs, desired: 0, ordering: .acquiringAndReleasing).exchanged
            if frozen || swapMap[Int(slot)] == 0 {
                cache.removeValue(forKey: slot)
                p.pointee.flags.bitwiseAnd(~PageMeta.Flag.swapCache, ordering: .relaxed)
                if swapMap[Int(slot)] == 0 { freeSlots.append(slot) }
                if !frozen { p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed) }
            }
            return frozen
        }
    }

    /// `swap_cache_get_folio()` + `folio_lock()`: the frame caching `slot`, with a reference,
    /// once its read has finished; or nil.
    func lookup(_ slot: UInt32) -> FrameNumber? {
        let f: FrameNumber? = lock.withLock {
            guard let f = cache[slot] else { return nil }
            frames.get(f)
            return f
        }
        if let f { waitForRead(f) }
        return f
    }

    /// Waits until the read that fills `f` (a reference held) is done.
    func waitForRead(_ f: FrameNumber) {
        let p = frames.page(f)
        while p.pointee.flags.load(ordering: .acquiring) & PageMeta.Flag.readPending != 0 {
            fl_sleep_ns(max(ioLatencyNs / 4, 1_000))
        }
    }

    /// The first word of what `slot` holds (the swap cache's frame if cached, else the
    /// device's copy): for checks with every thread stopped.
    public func word(_ slot: UInt32) -> UInt64 {
        lock.withLock {
            if let f = cache[slot] { return frames.pointer(f).load(as: UInt64.self) }
            return (storage + Int(slot) * Int(Linux.pageSize)).load(as: UInt64.self)
        }
    }

    /// The swap-PTE count of `slot` (tests and checks).
    func count(_ slot: UInt32) -> Int32 { lock.withLock { swapMap[Int(slot)] } }

    // MARK: I/O

    /// `swap_writepage()`: the page's contents go to its slot. Writeback is asynchronous in
    /// Linux (the reclaimer does not wait for it): the write costs the caller no latency.
    func writeOut(_ f: FrameNumber, _ slot: UInt32) {
        (storage + Int(slot) * Int(Linux.pageSize)).copyMemory(from: frames.pointer(f), byteCount: Int(Linux.pageSize))
        outCount.wrappingAdd(1, ordering: .relaxed)
    }

    /// `swap_cache_alloc_folio()` + `swap_read_folio()` (`swapin_readahead` of one page): a
    /// new frame with the slot's contents, in the swap cache (one reference for the cache, one
    /// returned to the caller). Another reader may have cached it first: that frame is
    /// returned instead. Nil when out of frames, or when the slot was freed meanwhile (every
    /// PTE that held it is gone: the caller's PTE changed, and its fault is retried).
    func readIn(_ slot: UInt32) -> FrameNumber? {
        if let f = lookup(slot) { return f }
        guard let f = frames.allocate(zeroed: false, flags: PageMeta.Flag.anon | PageMeta.Flag.readPending) else { return nil }
        frames.page(f).pointee.mapping.store(0, ordering: .relaxed)
        // swapcache_prepare() + add_to_swap_cache() before the read, and only while PTEs hold
        // the slot: reading first and caching after let a read of a slot that was freed and
        // given to another page meanwhile cache the old page's contents under it, which that
        // page's swap-in then mapped (a stress found a page holding another page's words).
        let winner: FrameNumber? = lock.withLock {
            if let other = cache[slot] {
                frames.get(other)
                return other
            }
            guard swapMap[Int(slot)] > 0 else { return nil }
            cache[slot] = f
            let p = frames.page(f)
            p.pointee.swapSlot.store(slot, ordering: .relaxed)
            p.pointee.flags.bitwiseOr(PageMeta.Flag.swapCache, ordering: .relaxed)
            frames.get(f)   // the cache's reference
            return f
        }
        guard winner == f else {
            frames.put(f)
            if let winner { waitForRead(winner) }
            return winner
        }
        if ioLatencyNs > 0 { fl_sleep_ns(ioLatencyNs) }
        // If every PTE that held the slot went meanwhile, the slot left the cache and may
        // already hold another page: what this reads is then garbage no one will map (the
        // caller finds its PTE changed).
        frames.pointer(f).copyMemory(from: storage + Int(slot) * Int(Linux.pageSize), byteCount: Int(Linux.pageSize))
        _afterRead?(slot)
        frames.page(f).pointee.flags.bitwiseAnd(~PageMeta.Flag.readPending, ordering: .releasing)
        inCount.wrappingAdd(1, ordering: .relaxed)
        frames.lruAdd(f)
        return f
    }

    /// Every slot's swap-PTE count and the cache, as the checks compare them.
    func snapshot() -> (counts: [Int32], cache: [UInt32: FrameNumber], free: Int) {
        lock.withLock { (swapMap, cache, freeSlots.count) }
    }
}
