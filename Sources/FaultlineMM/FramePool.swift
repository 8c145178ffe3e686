import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A physical frame number.
public typealias FrameNumber = UInt32

/// `struct page`: what the model tracks per frame.
public struct PageMeta: ~Copyable {
    /// `page_ref_count()`: references (mappings, page cache, in-flight users).
    public let refcount: Atomic<Int32>
    /// `page_mapcount()`: page-table entries mapping the frame.
    public let mapcount: Atomic<Int32>
    /// `PageMeta.Flag` bits.
    public let flags: Atomic<UInt32>
    /// `folio->mlock_count` of an anonymous page: its mappings in VM_LOCKED VMAs. While
    /// above zero the page is unevictable, and MADV_FREE does not make it lazy-free (even
    /// through a mapping that is not locked, such as a fork child's).
    public let mlockCount: Atomic<Int32>
    /// `folio->mapping` of an anonymous page: its `AnonVMA` (unretained bits; the VMAs that map
    /// the page keep it alive). Valid only while the page is anonymous and mapped.
    public let mapping: Atomic<UInt>
    /// `folio->index` of an anonymous page: `linear_page_index()` of the address it was made
    /// for, so `vma_address()` finds it in any VMA of the anon_vma's tree.
    public let index: Atomic<UInt64>
    /// `folio->swap`: the swap slot of a page in the swap cache (`Flag.swapCache`).
    public let swapSlot: Atomic<UInt32>
    /// `folio->memcg_data`: whether the page is charged to the pool's memory cgroup, and as
    /// what (`MemCharge`; 0: not charged).
    public let memcgData: Atomic<UInt32>

    public enum Flag {
        public static let anon: UInt32 = 1 << 0
        public static let dirty: UInt32 = 1 << 1
        public static let free: UInt32 = 1 << 2
        public static let pageCache: UInt32 = 1 << 3
        public static let zero: UInt32 = 1 << 4
        /// Free and filled with the poison pattern (pools made with `poison: true`).
        public static let poisoned: UInt32 = 1 << 5
        /// Anonymous and lazy-free (MADV_FREE): reclaim may discard it while it is clean.
        public static let lazyFree: UInt32 = 1 << 6
        /// `PG_reclaim` (the same bit as `PG_readahead`): a dirty file page reclaim unmapped
        /// and left for writeback. Fault-around skips it; a fault that finds it clears it.
        public static let reclaim: UInt32 = 1 << 7
        /// Bits 8–11: the order of the page-cache folio the page belongs to (`folio_order()`;
        /// folios are naturally aligned in the file, so the order finds the head).
        public static let orderShift: UInt32 = 8
        public static let orderMask: UInt32 = 0xF << 8
        /// `PG_swapcache`: in a swap device's cache, its slot in `swapSlot` (one reference).
        public static let swapCache: UInt32 = 1 << 12
        /// `PG_lru`: on one of the LRU lists (`LRUVec`).
        public static let lru: UInt32 = 1 << 13
        /// `PG_active`: on (or bound for) an active list.
        public static let active: UInt32 = 1 << 14
        /// `PG_referenced`: seen referenced once by reclaim (a second look activates it).
        public static let referenced: UInt32 = 1 << 15
        /// `PG_unevictable`: on the unevictable list (mlocked).
        public static let unevictable: UInt32 = 1 << 16
        /// `PG_swapbacked` of a page-cache page: shared memory (anonymous pages are swap-backed
        /// unless lazy-free, read from `.anon` and `.lazyFree`).
        public static let swapBacked: UInt32 = 1 << 17
        /// In a per-thread LRU batch, which holds a reference to it (model bookkeeping, so that
        /// checks for "no one else holds this page" can discount the batch's reference as Linux
        /// does by draining its batch first).
        public static let lruBatch: UInt32 = 1 << 18
        /// A swap-cache page whose read from the device has not finished (`!PG_uptodate`, the
        /// folio locked for the read): whoever finds it in the cache waits for it.
        public static let readPending: UInt32 = 1 << 19
    }

    /// The order of the folio this page-cache page belongs to.
    @inlinable public var folioOrder: Int { Int((flags.load(ordering: .relaxed) & Flag.orderMask) >> Flag.orderShift) }

    init() {
        refcount = Atomic(0)
        mapcount = Atomic(0)
        flags = Atomic(Flag.free)
        mlockCount = Atomic(0)
        mapping = Atomic(0)
        index = Atomic(0)
        swapSlot = Atomic(0)
        memcgData = Atomic(0)
    }
}

/// What a frame is charged to its memory cgroup as (`PageMeta.memcgData`).
public enum MemCharge {
    public static let anon: UInt32 = 1
    public static let file: UInt32 = 2
}

/// Physical memory: one reservation of 4 KiB frames, zeroed on allocation, with per-frame
/// metadata, per-thread caches (the kernel's per-CPU page lists) and a global free stack.
/// Frame 0 is the shared zero page (`ZERO_PAGE(0)`), never freed.
///
/// Frames unmapped by a zap are freed only after an RCU grace period (`freeDeferred`): a thread
/// that translated an address inside an RCU read-side section may still touch the frame,
/// as a CPU may until the TLB shootdown completes.
public final class FramePool: @unchecked Sendable {
    public let capacity: Int
    @usableFromInline let memory: UnsafeMutableRawPointer
    @usableFromInline let meta: UnsafeMutablePointer<PageMeta>
    let rcu: RCU

    let lock = SpinLock()
    /// The free lists, kept per naturally aligned 512-frame block (`pageblock`) so that small
    /// allocations behave as the buddy allocator's do: `__rmqueue_smallest()` takes the
    /// smallest free chunk there is, which lies in the most used part of memory, and breaks a
    /// whole 2 MiB block only when nothing smaller is free. Here each block keeps a bitmap of
    /// its free frames and sits in the bucket of its free count's order (1, 2–3, 4–7, …,
    /// 256–511; 512: whole, the order-9 free area); a small allocation takes the lowest free
    /// frame of a block in the lowest non-empty bucket (a chunk the buddy allocator breaks
    /// hands out its pages in ascending order: `expand()` returns the lowest page and frees
    /// the upper halves), a THP takes a whole block. Without the blocks, small pages recycled
    /// through one stack land in every block and THP allocation fails for good; without the
    /// order, a fault sweep zeroes frames out of address order, which on the 2-vCPU box costs
    /// 2.4× as much per frame as zeroing them in order (descending) and 3–4× (shuffled).
    /// The pool's tail that fills no block is one more, never whole, block.
    /// Per block: 8 words, bit i set when frame i of the block is free.
    let blockBits: UnsafeMutablePointer<UInt64>
    /// Per block: free frames (bits set in `blockBits`).
    let blockFree: UnsafeMutablePointer<UInt16>
    /// Per block: its neighbours in its bucket's list (-1: none).
    let blockNext: UnsafeMutablePointer<Int32>
    let blockPrev: UnsafeMutablePointer<Int32>
    /// Per bucket (order of the free count, 0...9): the first block, or -1.
    let bucketHead: UnsafeMutablePointer<Int32>
    /// Bit k: bucket k is not empty.
    @exclusivity(unchecked) var bucketMask: UInt16 = 0
    /// Free frames on the lists (not in magazines).
    @exclusivity(unchecked) var freeCount = 0
    /// Whole blocks: frames in blocks of 512 (the tail of the pool that does not fill one is
    /// never handed out whole).
    let blocks: Int
    /// Blocks with the tail.
    let blockSlots: Int
    /// Per block: isolated by compaction (`MIGRATE_ISOLATE`): in no bucket, so nothing is
    /// allocated from it; frames freed into it only count.
    let blockIsolated: UnsafeMutablePointer<UInt8>
    /// Per thread (Linux: per CPU), the `per_cpu_pages` list: a count and up to `pcpHigh`
    /// frames, each thread's alone on its own cache lines.
    let magazines: UnsafeMutableRawPointer
    let magazineStride: Int
    let magazineBytes: Int
    /// `pcp->batch` (`zone_batchsize()` for a zone of this many frames: 63 from 1 GiB up,
    /// down to 1 for a few MiB): frames a refill takes off the free lists under the pool's
    /// lock and a full list gives back. The lock is the zone lock every CPU shares; the batch
    /// is how rarely a thread takes it.
    let pcpBatch: Int
    /// `pcp->high` (`zone_highsize()`'s floor, `high_min`: the low watermark split over the
    /// CPUs, at least four batches): a thread's list past this gives back a batch, its
    /// oldest frames (`free_pcppages_bulk()`). Linux 6.7+ also lets `high` float up to
    /// `high_max` and the batches grow (`alloc_factor`, `free_count`) while a CPU keeps
    /// allocating or freeing; the model keeps both at their base.
    let pcpHigh: Int
    /// Frames handed out, counted per thread (`vm_stat`'s per-CPU deltas): one shared atomic
    /// bumped by every allocation was a third of the time of each fault at 2 threads.
    let inUse = PerThreadCounters(width: 1)
    @usableFromInline let inUseSlots: CounterSlots
    /// Frames freed and waiting for a grace period.
    @usableFromInline let deferred = Atomic<Int>(0)
    /// Frames freed and waiting for a grace period (racy). Read with acquire: once it reads 0,
    /// the frees that brought it there are on the free lists (`freeAboveMin`).
    @inlinable public var deferredFrames: Int { deferred.load(ordering: .acquiring) }
    /// Whether the free lists hold more than the reserve (`zone_watermark_ok()` at `min`):
    /// frames another thread freed since this one's allocation failed.
    public var freeAboveMin: Bool { lock.withLock { freeCount > watermarks.min } }
    /// Broken on purpose (tests): a grace period's frees stop counting as deferred before
    /// they are on the free lists, the order that let a fault fail with OOM beside free frames.
    @_spi(Testing) public var _brokenDeferredUncountedFirst = false
    /// Called (tests) inside a grace period's free of deferred frames, at the point where the
    /// frames are free and still count as deferred (with `_brokenDeferredUncountedFirst`: not
    /// yet free, no longer counted).
    @_spi(Testing) public var _deferredFreeHook: (() -> Void)? = nil
    public let poison: Bool
    let poisonCount = Atomic<Int>(0)
    /// Free frames found written to when they were reused.
    public var poisonViolations: Int { poisonCount.load(ordering: .relaxed) }

    public static let zeroFrame: FrameNumber = 0

    /// The LRU lists of the node these frames make up.
    public let lru: LRUVec
    /// `lru` for the per-fault calls: through `lru` each call retained and released the
    /// object, and its reference count is one line every faulting thread writes (at 2
    /// threads the stall on it was a quarter of page_fault1's user time).
    @usableFromInline let lruRef: Unmanaged<LRUVec>
    /// The memory cgroup anonymous and page-cache frames are charged to (`MMSystem.attach`),
    /// or nil: nothing is charged (`cgroup_disable=memory`).
    /// Read on every allocation and free: no dynamic exclusivity check (set once, before use).
    @exclusivity(unchecked) @usableFromInline var memcg: Unmanaged<MemCgroup>? = nil
    @usableFromInline var memcgObject: MemCgroup? = nil
    /// Broken on purpose (tests): frees in batches are not uncharged, so the memcg's usage
    /// drifts above what it holds (what the quiescent check must catch).
    @_spi(Testing) public var _brokenBatchFreeSkipsUncharge = false
    /// Watermarks in frames (`zone->_watermark`), 0 until `setWatermarks`: below `low` the
    /// background reclaimer is woken; allocations that would leave fewer than `min` free go
    /// to direct reclaim first.
    public private(set) var watermarks: (min: Int, low: Int, high: Int) = (0, 0, 0)
    /// `wakeup_kswapd()`, set with the watermarks.
    var wakeKswapd: (() -> Void)? = nil
    /// `try_to_free_pages()`: direct reclaim of about 32 frames; returns how many it freed.
    var directReclaim: (() -> Int)? = nil
    /// Whether reclaim is set up (`setWatermarks`).
    @inlinable public var reclaims: Bool { watermarks.low > 0 }
    /// Allocations that entered direct reclaim (`allocstall`), and that failed after it.
    public let allocStalls = Atomic<Int>(0)
    public let allocFailures = Atomic<Int>(0)

    /// - Parameters:
    ///   - frames: capacity in 4 KiB frames (plus the zero page).
    ///   - prefault: touch the reservation up front, so that a model fault costs what it
    ///     would on a machine whose memory is already backed (not the host's first-touch fault).
    ///   - rcu: the RCU domain whose grace periods let a freed frame be reused.
    ///   - poison: fill freed frames with a pattern and check it on reuse (`page_poisoning`):
    ///     a write through a stale mapping shows up in `poisonViolations`.
    ///   - perCPUZoneFrames: the zone size the per-thread lists are sized for (nil: `frames`).
    public init(frames: Int, prefault: Bool = false, rcu: RCU = .shared, poison: Bool = false, perCPUZoneFrames: Int? = nil) {
        precondition(frames > 0)
        capacity = frames + 1
        self.rcu = rcu
        self.poison = poison
        let bytes = capacity * Int(Linux.pageSize)
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (prefault ? MAP_POPULATE : 0)
        let m = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0)
        precondition(m != MAP_FAILED, "cannot reserve \(bytes) bytes for frames")
        memory = m!
        let metaRaw = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<PageMeta>.stride * capacity, alignment: 64)
        meta = metaRaw.bindMemory(to: PageMeta.self, capacity: capacity)
        for i in 0..<capacity { (meta + i).initialize(to: PageMeta()) }
        lru = LRUVec(meta: meta, capacity: capacity)
        inUseSlots = inUse.slots
        lruRef = Unmanaged.passUnretained(lru)
        blocks = capacity / Self.hugeFrames
        blockSlots = (capacity + Self.hugeFrames - 1) / Self.hugeFrames
        blockBits = .allocate(capacity: blockSlots * 8)
        blockBits.initialize(repeating: 0, count: blockSlots * 8)
        blockFree = .allocate(capacity: blockSlots)
        blockFree.initialize(repeating: 0, count: blockSlots)
        blockNext = .allocate(capacity: blockSlots)
        blockNext.initialize(repeating: -1, count: blockSlots)
        blockPrev = .allocate(capacity: blockSlots)
        blockPrev.initialize(repeating: -1, count: blockSlots)
        bucketHead = .allocate(capacity: 10)
        bucketHead.initialize(repeating: -1, count: 10)
        blockIsolated = .allocate(capacity: blockSlots)
        blockIsolated.initialize(repeating: 0, count: blockSlots)
        let pcp = Self.perCPUPagesSize(frames: perCPUZoneFrames ?? capacity - 1, cpus: sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        pcpBatch = pcp.batch
        pcpHigh = pcp.high
        // Per thread: a count and up to `pcpHigh` frames, on cache lines of their own. Zero
        // pages from mmap, backed only for the thread slots that are used.
        magazineStride = (8 + 4 * pcpHigh + cacheLineStride - 1) / cacheLineStride * cacheLineStride
        magazineBytes = magazineStride * Int(FL_MAX_THREADS)
        let mags = mmap(nil, magazineBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(mags != MAP_FAILED, "cannot reserve \(magazineBytes) bytes for the per-thread lists")
        magazines = mags!
        // The zero page: zeroed by mmap, pinned.
        meta[0].flags.store(PageMeta.Flag.zero, ordering: .relaxed)
        meta[0].refcount.store(1, ordering: .relaxed)
        lru.pool = self
        for f in stride(from: capacity - 1, through: 1, by: -1) { push(FrameNumber(f)) }
    }

    /// Frames free now (racy), counting neither those waiting for a grace period nor the
    /// zero page.
    public var freeFrames: Int { capacity - 1 - framesInUse }

    /// Sets the watermarks (`zoneWatermarks`) and the reclaimers to call.
    func setWatermarks(wake: @escaping () -> Void, direct: @escaping () -> Int) {
        watermarks = Self.zoneWatermarks(frames: capacity - 1)
        wakeKswapd = wake
        directReclaim = direct
    }

    /// The watermarks `__setup_per_zone_wmarks()` computes for a node of `frames` frames
    /// (`min_free_kbytes = sqrt(16 × KiB)` clamped to [128 KiB, 256 MiB]; low and high a
    /// quarter of min above it, or 0.1% of memory (`watermark_scale_factor` 10) if more).
    static func zoneWatermarks(frames: Int) -> (min: Int, low: Int, high: Int) {
        let minKiB = min(max((16 * Double(frames * 4)).squareRoot(), 128), 262_144)
        let minPages = Int(minKiB / 4)
        let gap = max(minPages / 4, frames * 10 / 10_000)
        return (minPages, minPages + gap, minPages + 2 * gap)
    }

    /// The per-thread lists' batch and high, and the frames on the shared free lists (tests).
    @_spi(Testing) public var _perCPUPages: (batch: Int, high: Int, onLists: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (pcpBatch, pcpHigh, freeCount)
    }

    @_spi(Testing) public static func _perCPUPagesSize(frames: Int, cpus: Int) -> (batch: Int, high: Int) {
        perCPUPagesSize(frames: frames, cpus: cpus)
    }

    /// `zone_batchsize()` and `zone_highsize()` (with `percpu_pagelist_high_fraction` 0, its
    /// default) for a zone of `frames` frames on `cpus` CPUs. On the 2-vCPU box the host's
    /// 5.25 GiB Normal zone shows batch 63 and high 6,750 in `/proc/zoneinfo` (its high is
    /// larger than this gives: THP raises `min_free_kbytes`); a 1.6 GiB pool gets 63 and 844.
    static func perCPUPagesSize(frames: Int, cpus: Int) -> (batch: Int, high: Int) {
        var batch = min(frames >> 10, (1 << 20) / Int(Linux.pageSize)) / 4
        batch = max(batch, 1)
        let b = batch + batch / 2
        batch = max(1, (1 << (Int.bitWidth - 1 - b.leadingZeroBitCount)) - 1)
        let high = max(zoneWatermarks(frames: frames).low / max(cpus, 1), batch << 2)
        return (batch, high)
    }

    deinit {
        munmap(memory, capacity * Int(Linux.pageSize))
        UnsafeMutableRawPointer(meta).deallocate()
        blockBits.deallocate()
        blockFree.deallocate()
        blockNext.deallocate()
        blockPrev.deallocate()
        bucketHead.deallocate()
        blockIsolated.deallocate()
        munmap(magazines, magazineBytes)
    }

    /// The frame's memory.
    @inlinable @inline(__always)
    public func pointer(_ f: FrameNumber) -> UnsafeMutableRawPointer {
        memory + Int(f) &* Int(Linux.pageSize)
    }

    @inlinable @inline(__always)
    public func page(_ f: FrameNumber) -> UnsafeMutablePointer<PageMeta> { meta + Int(f) }

    /// Frames handed out and not yet freed.
    public var framesInUse: Int { Int(Int64(bitPattern: inUse.sum(0))) }

    /// Adds `n` (negative: frames freed) to the calling thread's count of frames in use.
    @inline(__always)
    func countInUse(_ n: Int) { inUseSlots.add(0, UInt64(bitPattern: Int64(n))) }

    // MARK: Allocation

    @inline(__always)
    func magazine() -> UnsafeMutableRawPointer { magazines + currentThreadIndex() &* magazineStride }

    /// `alloc_page(GFP_HIGHUSER_MOVABLE | __GFP_ZERO)`: a frame with refcount 1, or nil when
    /// memory is exhausted.
    @inline(__always)
    public func allocate(zeroed: Bool = true, flags: UInt32 = 0) -> FrameNumber? {
        let mag = magazine()
        var n = mag.load(as: Int.self)
        if n == 0 {
            n = refillMagazine(mag)
            if n == 0 {
                n = allocateSlow(mag)
                if n == 0 { return nil }
            }
        }
        n -= 1
        let f = (mag + 8 + 4 * n).load(as: FrameNumber.self)
        mag.storeBytes(of: n, as: Int.self)
        prepare(f, flags: flags)
        if memcg != nil && flags & Self.chargedFlags != 0 && !chargeOrFree(f, flags: flags) { return nil }
        if zeroed { pointer(f).initializeMemory(as: UInt64.self, repeating: 0, count: Int(Linux.pageSize) / 8) }
        countInUse(1)
        return f
    }

    /// `charge` of a frame `allocate` just took; on failure the frame goes back, uncharged.
    /// Out of line: a pool without a memcg pays one test in `allocate`.
    @inline(never)
    func chargeOrFree(_ f: FrameNumber, flags: UInt32) -> Bool {
        if charge(f, count: 1, flags: flags) { return true }
        countInUse(1)
        free(f)
        return false
    }

    /// Frames charged to the memcg: anonymous ones (swap-cache pages included) and page cache.
    static let chargedFlags = PageMeta.Flag.anon | PageMeta.Flag.pageCache

    /// `mem_cgroup_charge()` and `commit_charge()`: charges `count` frames from `first` (just
    /// allocated, one folio) as `flags` says; false when the memcg is over its limit after
    /// reclaim (the caller frees them, uncharged).
    @inline(__always)
    func charge(_ first: FrameNumber, count: Int, flags: UInt32) -> Bool {
        let m = memcg.unsafelyUnwrapped
        guard m._withUnsafeGuaranteedRef({ $0.tryCharge(count, reclaim: directReclaim) }) else { return false }
        let kind = flags & PageMeta.Flag.anon != 0 ? MemCharge.anon : MemCharge.file
        for k in 0..<count { page(first + FrameNumber(k)).pointee.memcgData.store(kind, ordering: .relaxed) }
        m._withUnsafeGuaranteedRef { $0.account(anon: kind == MemCharge.anon ? count : 0, file: kind == MemCharge.file ? count : 0) }
        return true
    }

    /// `mem_cgroup_uncharge()` of one frame about to be freed.
    @inline(__always)
    func uncharge(_ f: FrameNumber) {
        let p = page(f)
        let kind = p.pointee.memcgData.load(ordering: .relaxed)
        guard kind != 0 else { return }
        p.pointee.memcgData.store(0, ordering: .relaxed)
        memcg.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.memoryRef._withUnsafeGuaranteedRef { $0.uncharge(1) }
            $0.account(anon: kind == MemCharge.anon ? -1 : 0, file: kind == MemCharge.file ? -1 : 0)
        }
    }

    /// `mem_cgroup_uncharge_folios()`: uncharges frames about to be freed, `folioBatch` at a
    /// time (`uncharge_batch()`: one uncharge of every level per batch).
    func uncharge(_ dead: [FrameNumber]) {
        guard let m = memcg else { return }
        var i = 0
        while i < dead.count {
            let end = Swift.min(i + MemCgroup.folioBatch, dead.count)
            var anon = 0, file = 0
            for f in dead[i..<end] {
                let p = page(f)
                let kind = p.pointee.memcgData.load(ordering: .relaxed)
                if kind == 0 { continue }
                p.pointee.memcgData.store(0, ordering: .relaxed)
                if kind == MemCharge.anon { anon += 1 } else { file += 1 }
            }
            if anon + file > 0 && !_brokenBatchFreeSkipsUncharge {
                m._withUnsafeGuaranteedRef {
                    $0.memoryRef._withUnsafeGuaranteedRef { $0.uncharge(anon + file) }
                    $0.account(anon: -anon, file: -file)
                }
            }
            i = end
        }
    }

    /// `mem_cgroup_migrate()`: the charge moves from `old` to `new` (a migration's copy).
    func migrateCharge(from old: FrameNumber, to new: FrameNumber) {
        let kind = page(old).pointee.memcgData.exchange(0, ordering: .relaxed)
        page(new).pointee.memcgData.store(kind, ordering: .relaxed)
    }

    /// Whether the calling thread's last allocation failed on its memcg's limit (clears it).
    public func takeChargeFailure() -> Bool {
        guard let m = memcg else { return false }
        return m._withUnsafeGuaranteedRef { $0.takeChargeFailure() }
    }

    /// Charges future anonymous and page-cache frames to `m` (see `MMSystem.attach`).
    func attach(_ m: MemCgroup) {
        precondition(memcg == nil, "one memory cgroup per pool")
        memcgObject = m
        memcg = Unmanaged.passUnretained(m)
    }

    /// A frame just taken from the free lists: one reference, no mapping, `flags`.
    @inline(__always)
    func prepare(_ f: FrameNumber, flags: UInt32) {
        let p = page(f)
        if poison { checkPoison(f) }
        p.pointee.refcount.store(1, ordering: .relaxed)
        p.pointee.mapcount.store(0, ordering: .relaxed)
        p.pointee.flags.store(flags, ordering: .relaxed)
        p.pointee.mlockCount.store(0, ordering: .relaxed)
    }

    /// Forgets the reclaimers (their system is going away); allocation fails at exhaustion again.
    func clearReclaim() {
        watermarks = (0, 0, 0)
        wakeKswapd = nil
        directReclaim = nil
    }

    /// `__alloc_pages_slowpath()`: nothing free above the min watermark — wake kswapd and
    /// reclaim directly, then fail (the caller's OOM) after 16 rounds that free nothing
    /// (`MAX_RECLAIM_RETRIES`). Reclaimed frames come back after a grace period: inside an RCU
    /// read-side section (a lockless or per-VMA fault) the thread cannot wait for one, so it
    /// reclaims once and fails; the fault then waits and retries with its locks dropped
    /// (`AddressSpace.fault`). Without reclaim set up, fail at once.
    @inline(never)
    func allocateSlow(_ mag: UnsafeMutableRawPointer) -> Int {
        if deferred.load(ordering: .relaxed) > 0 { rcu.expedite() }
        guard directReclaim != nil else { return 0 }
        allocStalls.wrappingAdd(1, ordering: .relaxed)
        let n = reclaimAndRefill(mag, mayWait: !rcu.isReadLockHeld)
        if n == 0 && !rcu.isReadLockHeld { allocFailures.wrappingAdd(1, ordering: .relaxed) }
        return n
    }

    func reclaimAndRefill(_ mag: UnsafeMutableRawPointer, mayWait: Bool) -> Int {
        wakeKswapd?()
        var fruitless = 0
        while fruitless < 16 {
            if directReclaim!() == 0 { fruitless += 1 }
            var n = refillMagazine(mag)
            if n > 0 || !mayWait { return n }
            // Frames reclaim freed (or anyone else) come back after a grace period.
            if deferred.load(ordering: .relaxed) > 0 { rcu.barrier() }
            n = refillMagazine(mag)
            if n > 0 { return n }
        }
        return 0
    }

    /// Direct reclaim for a fault that ran out of frames inside an RCU read-side section,
    /// now outside it: true once frames are free again, false after 16 rounds that freed
    /// nothing (the fault's OOM).
    public func reclaimForRetry() -> Bool {
        guard directReclaim != nil else { return false }
        let mag = magazine()
        if mag.load(as: Int.self) > 0 { return true }
        let n = reclaimAndRefill(mag, mayWait: true)
        if n == 0 { allocFailures.wrappingAdd(1, ordering: .relaxed); return false }
        mag.storeBytes(of: n, as: Int.self)
        return true
    }

    @inline(never)
    func refillMagazine(_ mag: UnsafeMutableRawPointer) -> Int {
        lock.lock()
        // Below the low watermark kswapd runs; the last `min` frames are the reserve that only
        // reclaim's own progress refills (the model has no atomic allocations to use it).
        let wake = watermarks.low > 0 && freeCount < watermarks.low + pcpBatch
        let take = min(pcpBatch, max(freeCount - watermarks.min, 0))
        // `rmqueue_bulk()` adds to the list's tail and allocation takes the head: the frames
        // go out in the order they came off the free lists (the magazine pops from its top).
        var slots = UnsafeMutableBufferPointer(start: (mag + 8).assumingMemoryBound(to: FrameNumber.self), count: take)
        precondition(popMany(slots.baseAddress!, take) == take, "free lists hold fewer frames than counted")
        slots.reverse()
        lock.unlock()
        if wake { wakeKswapd?() }
        mag.storeBytes(of: take, as: Int.self)
        return take
    }

    @inline(never)
    func checkPoison(_ f: FrameNumber) {
        guard page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.poisoned != 0 else { return }
        let w = pointer(f).assumingMemoryBound(to: UInt64.self)
        for i in 0..<(Int(Linux.pageSize) / 8) where w[i] != 0x6b6b_6b6b_6b6b_6b6b {
            poisonCount.wrappingAdd(1, ordering: .relaxed)
            return
        }
    }

    /// Marks a frame free (poisoning it when enabled).
    @inline(__always)
    func markFree(_ f: FrameNumber) {
        if poison {
            pointer(f).initializeMemory(as: UInt8.self, repeating: 0x6b, count: Int(Linux.pageSize))
            page(f).pointee.flags.store(PageMeta.Flag.free | PageMeta.Flag.poisoned, ordering: .relaxed)
        } else {
            page(f).pointee.flags.store(PageMeta.Flag.free, ordering: .relaxed)
        }
    }

    /// `free_unref_page()`: returns a frame whose last reference is gone.
    @inline(__always)
    public func free(_ f: FrameNumber) {
        precondition(f != Self.zeroFrame, "freeing the zero page")
        if page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 { lruRef._withUnsafeGuaranteedRef { $0.release(f) } }
        if memcg != nil { uncharge(f) }
        markFree(f)
        countInUse(-1)
        let mag = magazine()
        var n = mag.load(as: Int.self)
        if n >= pcpHigh {
            // `free_pcppages_bulk()` gives back the list's tail, the coldest frames (the
            // magazine's bottom), and keeps the recently freed, cache-hot ones for reuse.
            let slots = (mag + 8).assumingMemoryBound(to: FrameNumber.self)
            let give = pcpBatch
            lock.lock()
            for i in 0..<give { push(slots[i]) }
            lock.unlock()
            for i in give..<n { slots[i - give] = slots[i] }
            n -= give
        }
        (mag + 8 + 4 * n).storeBytes(of: f, as: FrameNumber.self)
        mag.storeBytes(of: n + 1, as: Int.self)
    }

    /// `drain_local_pages()`: gives the calling thread's whole list back to the shared lists.
    public func drainLocal() {
        let mag = magazine()
        let n = mag.load(as: Int.self)
        guard n > 0 else { return }
        let slots = (mag + 8).assumingMemoryBound(to: FrameNumber.self)
        lock.lock()
        for i in 0..<n { push(slots[i]) }
        lock.unlock()
        mag.storeBytes(of: 0, as: Int.self)
    }

    /// `folio_add_lru()` (see `LRUVec.add`), without retaining the LRU.
    @inline(__always)
    public func lruAdd(_ f: FrameNumber) { lruRef._withUnsafeGuaranteedRef { $0.add(f) } }

    /// `put_page()`: drops a reference; frees the frame at zero.
    @inline(__always)
    public func put(_ f: FrameNumber) {
        if f == Self.zeroFrame { return }
        if page(f).pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { free(f) }
    }

    /// `folio_try_get()`: takes a reference unless the last one is already gone (the frame
    /// is being freed: a lockless lookup that raced with its removal must look again).
    @inline(__always)
    public func tryGet(_ f: FrameNumber) -> Bool {
        if f == Self.zeroFrame { return true }
        let p = page(f)
        var c = p.pointee.refcount.load(ordering: .relaxed)
        while c > 0 {
            let r = p.pointee.refcount.compareExchange(expected: c, desired: c + 1, ordering: .acquiring)
            if r.exchanged { return true }
            c = r.original
        }
        return false
    }

    /// References to `f` other than a per-thread LRU batch's: Linux's reuse checks drain the
    /// batch first (`lru_add_drain()` in `wp_can_reuse_anon_folio()`) so that its reference
    /// does not count; the model discounts it instead.
    @inline(__always)
    public func refsBesidesLRUBatch(_ f: FrameNumber) -> Int32 {
        let p = page(f)
        // The count first: the batch clears its flag before it drops its reference, so a flag
        // still set means the count read before it still included that reference.
        let refs = p.pointee.refcount.load(ordering: .acquiring)
        let batched = p.pointee.flags.load(ordering: .acquiring) & PageMeta.Flag.lruBatch != 0
        return refs - (batched ? 1 : 0)
    }

    /// `get_page()`.
    @inline(__always)
    public func get(_ f: FrameNumber) {
        if f == Self.zeroFrame { return }
        page(f).pointee.refcount.wrappingAdd(1, ordering: .relaxed)
    }

    /// Frees frames whose last reference is gone, after an RCU grace period
    /// (`tlb_finish_mmu`): until then a thread that translated to them may still touch them.
    public func freeDeferred(_ dead: [FrameNumber]) {
        guard !dead.isEmpty else { return }
        lru.release(dead)
        // Uncharged now, as `tlb_finish_mmu()` frees them on Linux: the memory is the memcg's
        // no longer, though the frames wait for the grace period before reuse.
        uncharge(dead)
        let box = Shared(dead)
        // Memory waiting for a grace period is memory nobody can use: past an eighth of the
        // pool, hurry the reclaimer instead of waiting for its tick.
        if deferred.wrappingAdd(dead.count, ordering: .relaxed).newValue > capacity / 8 { rcu.expedite() }
        rcu.callRCU { [self] in
            if _brokenDeferredUncountedFirst { deferred.wrappingSubtract(box.value.count, ordering: .releasing); _deferredFreeHook?() }
            for f in box.value { markFree(f) }
            lock.withLock { for f in box.value { push(f) } }
            countInUse(-box.value.count)
            if _brokenDeferredUncountedFirst { return }
            _deferredFreeHook?()
            // Free before they stop counting as deferred: a thread that finds the lists empty
            // and then reads no deferred frames must be able to trust that nothing is on its
            // way back (its fault would fail with OOM; `AddressSpace.faultAfterReclaim`).
            deferred.wrappingSubtract(box.value.count, ordering: .releasing)
        }
    }

    /// Drops a reference to each page; those whose last reference it was are freed after a
    /// grace period (references an LRU batch or reclaim held: the page may have been unmapped
    /// meanwhile, and a lockless walker may still be on its way to it).
    public func putDeferred(_ pages: [FrameNumber]) {
        var dead: [FrameNumber] = []
        for f in pages where f != Self.zeroFrame {
            if page(f).pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { dead.append(f) }
        }
        freeDeferred(dead)
    }

    /// Drops a reference; if it was the last, frees the frame after a grace period.
    public func putDeferred(_ f: FrameNumber) {
        if f == Self.zeroFrame { return }
        if page(f).pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { freeDeferred([f]) }
    }

    /// Whether `f` is on a free list (for invariant checks).
    public func isFree(_ f: FrameNumber) -> Bool { page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.free != 0 }
}
