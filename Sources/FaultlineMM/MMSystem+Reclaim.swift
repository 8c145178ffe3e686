import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Page reclaim (mm/vmscan.c) over the LRU lists, the classic way the host runs it: kswapd is
// woken when free memory falls below the low watermark and reclaims until it is above the
// high one; an allocation that finds nothing above the min watermark reclaims directly.
// Each pass ages the active lists (`shrink_active_list`: referenced bits cleared through the
// reverse map, pages moved to the inactive list) and reclaims from the inactive tails
// (`shrink_folio_list`: a page referenced again is activated or kept, an unreferenced one is
// unmapped everywhere — anonymous pages to swap, clean file pages dropped, dirty ones written
// back by kswapd first). Without a swap device only file (and lazy-free) pages are reclaimed,
// as on the host.

/// Reclaim's counters, named after `/proc/vmstat`'s.
public final class VMScanStats: @unchecked Sendable {
    public enum Counter: Int, CaseIterable, Sendable {
        /// Pages scanned and reclaimed by kswapd and by direct reclaim.
        case pgscanKswapd, pgscanDirect, pgstealKswapd, pgstealDirect
        /// Active pages scanned (`pgrefill`), activated, deactivated.
        case pgrefill, pgactivate, pgdeactivate
        /// Lazy-free pages discarded (`pglazyfreed`), file pages written back (`nr_written`),
        /// pages moved to the unevictable list (`unevictable_pgs_culled`).
        case pglazyfreed, nrWritten, unevictableCulled
        /// kswapd wake-ups that found work (`pageoutrun`), direct reclaim calls.
        case pageoutrun, directReclaims
        /// Dirty file pages direct reclaim left to kswapd's writeback (`nr_dirty` it skipped),
        /// and the times it then waited for that writeback (`reclaim_throttle`).
        case directDirtySkipped, directThrottled
        /// Pages reclaim could not model and left alone: shared memory with a swap device
        /// (Linux swaps it out through `shmem_writeout`).
        case shmemNotReclaimed
        /// Compaction for THPs (`compact_stall`, `compact_success`, `compact_fail`,
        /// `compact_migrate_scanned`) and the page migrations it did (`pgmigrate_success`,
        /// `pgmigrate_fail`).
        case compactStall, compactSuccess, compactFail, compactMigrateScanned, pgmigrateSuccess, pgmigrateFail
        /// Compaction skipped after earlier failures (`compaction_deferred`; Linux counts no
        /// stall for these).
        case compactDeferred
    }
    let values = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: Counter.allCases.count)
    init() { for i in 0..<Counter.allCases.count { (values + i).initialize(to: Atomic(0)) } }
    deinit { values.deallocate() }
    func add(_ c: Counter, _ n: Int = 1) { if n != 0 { values[c.rawValue].wrappingAdd(n, ordering: .relaxed) } }
    public subscript(_ c: Counter) -> Int { values[c.rawValue].load(ordering: .relaxed) }
}

/// The background reclaimer (`kswapd`): a thread woken below the low watermark that
/// reclaims until free memory is above the high one, or until a pass frees nothing.
final class Kswapd: @unchecked Sendable {
    let word = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: 1)
    let stopping = Atomic<Bool>(false)
    let started = Mutex<pthread_t?>(nil)
    /// Held while a balancing pass runs (quiescent checks wait for it).
    let running = Mutex<Void>(())
    let paused = Atomic<Bool>(false)

    init() { word.initialize(to: Atomic(0)) }
    deinit { word.deallocate() }

    var futex: UnsafeMutablePointer<UInt32> { UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self) }

    /// `wakeup_kswapd()`: cheap when it is already awake.
    func wake(_ system: MMSystem) {
        if word.pointee.load(ordering: .relaxed) != 0 { return }
        word.pointee.store(1, ordering: .releasing)
        let t = started.withLock { t -> pthread_t? in
            if t == nil {
                let box = Unmanaged.passUnretained(system)
                t = Threads.spawn { [self] in self.loop(box) }
            }
            return t
        }
        _ = t
        _ = fl_futex_wake(futex, 1)
    }

    func loop(_ box: Unmanaged<MMSystem>) {
        _ = fl_unpin_to_process_cpus()
        while !stopping.load(ordering: .acquiring) {
            if word.pointee.load(ordering: .acquiring) == 0 {
                _ = fl_futex_wait(futex, 0, 100_000_000)
                continue
            }
            if !paused.load(ordering: .acquiring) {
                running.withLock { _ in box.takeUnretainedValue().balancePgdat() }
            }
            word.pointee.store(0, ordering: .releasing)
        }
    }

    func stopAndJoin() {
        let t = started.withLock { t -> pthread_t? in let r = t; t = nil; return r }
        guard let t else { return }
        stopping.store(true, ordering: .releasing)
        word.pointee.store(1, ordering: .releasing)
        _ = fl_futex_wake(futex, 1)
        // Reclaim can drop the last reference to the system on this very thread.
        if pthread_equal(t, pthread_self()) != 0 { pthread_detach(t) } else { pthread_join(t, nil) }
    }
}

extension MMSystem {
    /// Turns reclaim on for this system's memory (`--memory`): watermarks from its size, kswapd
    /// woken below the low one, direct reclaim when an allocation finds nothing above min.
    /// Call before address spaces use the system.
    public func enableReclaim() {
        let sys = Unmanaged.passUnretained(self)
        frames.setWatermarks(
            wake: { sys.takeUnretainedValue().kswapd.wake(sys.takeUnretainedValue()) },
            direct: { sys.takeUnretainedValue().tryToFreePages() })
    }

    /// Pauses kswapd (waiting for a pass in progress) or lets it run again: quiescent checks
    /// need every page where it is.
    public func pauseKswapd(_ pause: Bool) {
        kswapd.paused.store(pause, ordering: .releasing)
        if pause { kswapd.running.withLock { _ in } }
    }

    /// `SWAP_CLUSTER_MAX`.
    static let swapClusterMax = 32

    /// `try_to_free_pages()`: one direct reclaim of `SWAP_CLUSTER_MAX` pages. Returns pages freed.
    func tryToFreePages() -> Int {
        vmscan.add(.directReclaims)
        let skipped = vmscan[.directDirtySkipped]
        let n = shrinkNode(Self.swapClusterMax, kswapd: false)
        if n == 0 && vmscan[.directDirtySkipped] > skipped {
            // reclaim_throttle(VMSCAN_THROTTLE_WRITEBACK): what is left is dirty and only the
            // writeback kswapd starts can free it — wait for its pass (Linux: up to HZ/10)
            // rather than count a fruitless round toward OOM.
            vmscan.add(.directThrottled)
            kswapdWake()
            let deadline = fl_now_ns() &+ 100_000_000
            while kswapd.word.pointee.load(ordering: .acquiring) != 0 && fl_now_ns() < deadline { fl_sleep_ns(50_000) }
            // Still a round that freed nothing itself: 16 of them end in OOM.
            return 0
        }
        return n
    }

    /// `balance_pgdat()`: reclaims until free memory is above the high watermark, or a pass at
    /// every priority frees nothing.
    func balancePgdat() {
        vmscan.add(.pageoutrun)
        frames.lru.drainLocal()
        while frames.freeFrames < frames.watermarks.high {
            if shrinkNode(Self.swapClusterMax, kswapd: true) == 0 { break }
            // What was freed comes back after a grace period: wait for it, as kswapd's own
            // progress is measured in free pages.
            if frames.deferredFrames > 0 { rcu.barrier() }
        }
    }

    /// Whether anonymous pages can be reclaimed (`can_reclaim_anon_pages()`): only to a swap
    /// device with free slots.
    var canReclaimAnon: Bool {
        guard let swap else { return false }
        return swap.slotsInUse < swap.slots - 1
    }

    /// `shrink_node()` → `shrink_lruvec()`: scans at decreasing priority (from 12: a 4096th of
    /// each list) until `target` pages are freed. The split between anonymous and file lists
    /// is `get_scan_count()`'s SCAN_FRACT at swappiness 60 with equal costs (anon 60 : file
    /// 140, weighted by list size); without reclaimable anon, file only (SCAN_FILE).
    func shrinkNode(_ target: Int, kswapd: Bool) -> Int {
        var reclaimed = 0
        let anonOK = canReclaimAnon
        for priority in stride(from: 12, through: 0, by: -1) {
            let sizes = frames.lru.listSizes
            let anonSize = sizes[.inactiveAnon]! + sizes[.activeAnon]!
            let fileSize = sizes[.inactiveFile]! + sizes[.activeFile]!
            var scanAnon = anonOK ? max(anonSize >> priority, anonSize > 0 ? 1 : 0) : 0
            var scanFile = max(fileSize >> priority, fileSize > 0 ? 1 : 0)
            if anonOK && fileSize > 0 && anonSize > 0 {
                scanAnon = max(scanAnon * 60 / 200, 1)
                scanFile = max(scanFile * 140 / 200, 1)
            }
            while (scanAnon > 0 || scanFile > 0) && reclaimed < target {
                if scanFile > 0 {
                    let n = min(scanFile, Self.swapClusterMax)
                    scanFile -= n
                    reclaimed += shrinkList(anon: false, n, kswapd: kswapd)
                }
                if scanAnon > 0 {
                    let n = min(scanAnon, Self.swapClusterMax)
                    scanAnon -= n
                    reclaimed += shrinkList(anon: true, n, kswapd: kswapd)
                }
            }
            if reclaimed >= target { break }
        }
        return reclaimed
    }

    /// `shrink_list()`: the active list is aged first while the inactive one is the smaller
    /// (`inactive_is_low()`, ratio 1 below 1 GiB), then the inactive tail is reclaimed.
    func shrinkList(anon: Bool, _ n: Int, kswapd: Bool) -> Int {
        let (inactive, active): (LRUList, LRUList) = anon ? (.inactiveAnon, .activeAnon) : (.inactiveFile, .activeFile)
        let sizes = frames.lru.listSizes
        if sizes[inactive]! < sizes[active]! { shrinkActiveList(active, n) }
        return shrinkInactiveList(inactive, n, kswapd: kswapd)
    }

    /// `shrink_active_list()`: pages from the active tail lose their referenced bits; those
    /// that were referenced and are executable file pages stay active, the rest go to the
    /// head of the inactive list.
    func shrinkActiveList(_ list: LRUList, _ n: Int) {
        let (pages, scanned) = frames.lru.isolateTail(list, n)
        vmscan.add(.pgrefill, scanned)
        var back: [(FrameNumber, LRUList?)] = []
        var deactivated = 0
        for f in pages {
            let r = folioReferenced(f)
            if r.mlocked {
                back.append(cull(f))
                continue
            }
            if r.references > 0 && r.exec && !list.isAnon {
                back.append((f, list))
                continue
            }
            frames.page(f).pointee.flags.bitwiseAnd(~PageMeta.Flag.active, ordering: .relaxed)
            deactivated += 1
            back.append((f, nil))
        }
        vmscan.add(.pgdeactivate, deactivated)
        frames.lru.putback(back)
    }

    /// `shrink_inactive_list()` + `shrink_folio_list()`: pages from the inactive tail are
    /// activated, kept, or reclaimed. Returns the pages freed.
    func shrinkInactiveList(_ list: LRUList, _ n: Int, kswapd: Bool) -> Int {
        let (pages, scanned) = frames.lru.isolateTail(list, n)
        vmscan.add(kswapd ? .pgscanKswapd : .pgscanDirect, scanned)
        var back: [(FrameNumber, LRUList?)] = []
        var toSwap: [FrameNumber] = []
        var freed: [FrameNumber] = []
        var activated = 0
        for f in pages {
            let p = frames.page(f)
            let flags = p.pointee.flags.load(ordering: .relaxed)
            let isAnon = flags & PageMeta.Flag.anon != 0
            if isAnon && p.pointee.mlockCount.load(ordering: .relaxed) > 0 {
                vmscan.add(.unevictableCulled)
                back.append((f, nil))   // listFor: unevictable while the count holds
                continue
            }
            // folio_check_references().
            let r = folioReferenced(f)
            let referencedFolio = p.pointee.flags.bitwiseAnd(~PageMeta.Flag.referenced, ordering: .relaxed).oldValue
                & PageMeta.Flag.referenced != 0
            if r.mlocked {
                back.append(cull(f))
                continue
            }
            let swapBacked = isAnon ? flags & PageMeta.Flag.lazyFree == 0 : flags & PageMeta.Flag.swapBacked != 0
            if r.references > 0 {
                // Anonymous pages and pages referenced twice (or executable) are activated; a
                // file page referenced once is kept, marked, for a second look.
                if swapBacked || referencedFolio || r.references > 1 || r.exec {
                    p.pointee.flags.bitwiseOr(PageMeta.Flag.active, ordering: .relaxed)
                    activated += 1
                    back.append((f, nil))
                } else {
                    p.pointee.flags.bitwiseOr(PageMeta.Flag.referenced, ordering: .relaxed)
                    back.append((f, nil))
                }
                continue
            }
            if isAnon && !swapBacked {
                // A lazy-free page: discarded if still clean, else swap-backed again.
                if discardLazyFree(f) {
                    vmscan.add(.pglazyfreed)
                    freed.append(f)
                } else {
                    back.append((f, nil))
                }
                continue
            }
            if isAnon {
                toSwap.append(f)
                continue
            }
            if flags & PageMeta.Flag.swapBacked != 0 {
                // Shared memory goes to swap through shmem_writeout(): not modelled.
                vmscan.add(.shmemNotReclaimed)
                p.pointee.flags.bitwiseOr(PageMeta.Flag.active, ordering: .relaxed)
                back.append((f, nil))
                continue
            }
            switch reclaimFilePage(f, kswapd: kswapd) {
            case .freed: freed.append(f)
            case .gone: break
            case .keep: back.append((f, nil))
            }
        }
        vmscan.add(.pgactivate, activated)
        var swapped = 0
        if !toSwap.isEmpty {
            let (n, kept) = reclaimAnon(toSwap)
            swapped = n
            vmscan.add(kswapd ? .pgstealKswapd : .pgstealDirect, n)
            for f in kept {
                // Still mapped or taken meanwhile: back, and looked at again later.
                back.append((f, nil))
            }
        }
        vmscan.add(kswapd ? .pgstealKswapd : .pgstealDirect, freed.count)
        frames.freeDeferred(freed)
        frames.lru.putback(back)
        return freed.count + swapped
    }

    /// A page found in a VM_LOCKED mapping: an anonymous page (whose locked mappings the model
    /// counts, so munlock brings it back) goes to the unevictable list; a page-cache page,
    /// whose locks the model does not count, back to the active list, so that it is looked at
    /// again after a munlock (Linux's `mlock_vma_folio` culls it and `munlock_folio` returns it).
    func cull(_ f: FrameNumber) -> (FrameNumber, LRUList?) {
        let p = frames.page(f)
        if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 && p.pointee.mlockCount.load(ordering: .relaxed) > 0 {
            // The putback's list choice reads the count again under the LRU lock.
            vmscan.add(.unevictableCulled)
            return (f, nil)
        }
        frames.page(f).pointee.flags.bitwiseOr(PageMeta.Flag.active, ordering: .relaxed)
        return (f, nil)
    }

    /// `folio_referenced()`: through the reverse map, every PTE mapping `f` has its accessed
    /// bit tested and cleared (`ptep_clear_flush_young`, which on x86 flushes nothing).
    /// Returns how many were set, whether a mapping is executable or locked.
    func folioReferenced(_ f: FrameNumber) -> (references: Int, exec: Bool, mlocked: Bool) {
        var refs = 0, exec = false, locked = false
        let p = frames.page(f)
        guard p.pointee.mapcount.load(ordering: .relaxed) > 0 else { return (0, false, false) }
        rmapWalk(f) { mm, vma, address in
            let flags = vma.vmFlags
            if flags.contains(.locked) { locked = true; return }
            mm.withPTEMapping(f, at: address) { ptep, old, table in
                if old & PTE.accessed != 0 {
                    // The MMU may set dirty meanwhile: clear young against the value it has.
                    var cur = old
                    while cur & PTE.accessed != 0 {
                        let r = ptep.pointee.compareExchange(expected: cur, desired: cur & ~PTE.accessed, ordering: .acquiringAndReleasing)
                        if r.exchanged { refs += 1; break }
                        cur = r.original
                        if cur & PTE.present == 0 || PTE.frame(cur) != f { break }
                    }
                }
                if flags.contains(.exec) { exec = true }
            }
        }
        return (refs, exec, locked)
    }

    /// `rmap_walk()`: every (address space, VMA, address) that may map `f` — the anon_vma
    /// tree of an anonymous page, the file's i_mmap of a page-cache page (under its lock for
    /// read; the caller holds the LRU's file lock, so the file is alive).
    func rmapWalk(_ f: FrameNumber, _ body: (AddressSpace, VMARef, UInt64) -> Void) {
        let p = frames.page(f)
        let flags = p.pointee.flags.load(ordering: .relaxed)
        if flags & PageMeta.Flag.anon != 0 {
            rmapWalkAnon(f, body)
            return
        }
        guard flags & PageMeta.Flag.pageCache != 0 else { return }
        frames.lru.fileLock.lockRead()
        defer { frames.lru.fileLock.unlockRead() }
        let bits = p.pointee.mapping.load(ordering: .relaxed)
        guard bits != 0 else { return }
        let file = Unmanaged<MMFile>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
        let index = p.pointee.index.load(ordering: .relaxed)
        file.iMmapLock.lockRead()
        defer { file.iMmapLock.unlockRead() }
        file.iMmap.forEachOverlap(index, index &+ 1) { v, mm in
            body(mm, v, v.vmStart &+ ((index &- v.vmPgoff) << Linux.pageShift))
        }
    }

    enum FileReclaim { case freed, gone, keep }

    /// `shrink_folio_list()` for an unreferenced page-cache page (isolated, a reference held):
    /// unmapped everywhere (`try_to_unmap`: each PTE's dirty bit moves to the page); a dirty
    /// page is written back by kswapd (at once: the model's writeback completes when issued)
    /// and kept with PG_reclaim by direct reclaim, which does not write; a clean one leaves the
    /// cache if no one else holds it (`__remove_mapping`: the reference count frozen at the
    /// cache's and ours). `.freed`: the caller frees it after a grace period.
    func reclaimFilePage(_ f: FrameNumber, kswapd: Bool) -> FileReclaim {
        let p = frames.page(f)
        frames.lru.fileLock.lockRead()
        defer { frames.lru.fileLock.unlockRead() }
        let bits = p.pointee.mapping.load(ordering: .relaxed)
        guard bits != 0, p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.pageCache != 0 else { return .keep }
        let file = Unmanaged<MMFile>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
        let index = p.pointee.index.load(ordering: .relaxed)
        if p.pointee.mapcount.load(ordering: .relaxed) > 0 {
            var unmapped = false
            var locked = false
            file.iMmapLock.lockRead()
            file.iMmap.forEachOverlap(index, index &+ 1) { v, mm in
                if v.vmFlags.contains(.locked) { locked = true; return }
                let address = v.vmStart &+ ((index &- v.vmPgoff) << Linux.pageShift)
                mm.withPTEMapping(f, at: address) { ptep, old, table in
                    if !_brokenFileReclaimKeepsPTEs {
                        ptep.pointee.store(0, ordering: .releasing)
                        table.absentInLinux.pointee.store(0, ordering: .relaxed)
                    }
                    if old & PTE.dirty != 0 { p.pointee.flags.bitwiseOr(PageMeta.Flag.dirty, ordering: .relaxed) }
                    p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                    p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed)   // we still hold one
                    mm.count(file.isShmem ? .rssShmem : .rssFile, UInt64(bitPattern: -1))
                    mm.count(.pagedOut)
                    unmapped = true
                }
            }
            file.iMmapLock.unlockRead()
            // No access through an old PTE after this.
            if unmapped { tlbRCU.synchronize() }
            if locked { return .keep }
            if p.pointee.mapcount.load(ordering: .relaxed) > 0 { return .keep }
        }
        if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.dirty != 0 {
            guard kswapd else {
                // Direct reclaim leaves dirty pages to the flusher (here kswapd), marked.
                p.pointee.flags.bitwiseOr(PageMeta.Flag.reclaim, ordering: .relaxed)
                vmscan.add(.directDirtySkipped)
                kswapdWake()
                return .keep
            }
            guard file.writeBack(index, f) else { return .keep }
            vmscan.add(.nrWritten)
        }
        // __remove_mapping(): only the cache's reference and ours.
        guard p.pointee.refcount.compareExchange(expected: 2, desired: 0, ordering: .acquiringAndReleasing).exchanged else { return .keep }
        guard let t = file.chunk(Int(index >> UInt64(MMFile.chunkShift))),
              t[Int(index & UInt64(MMFile.chunkPages - 1))].compareExchange(expected: UInt32(f) + 1, desired: 0, ordering: .acquiringAndReleasing).exchanged else {
            // Truncation took it out of the cache first and drops the cache's reference.
            p.pointee.refcount.wrappingAdd(2, ordering: .relaxed)
            frames.putDeferred([f])
            return .gone
        }
        p.pointee.flags.bitwiseAnd(~(PageMeta.Flag.pageCache | PageMeta.Flag.reclaim), ordering: .relaxed)
        p.pointee.mapping.store(0, ordering: .relaxed)
        return .freed
    }

    /// A lazy-free anonymous page, isolated: unmapped everywhere and discarded if no PTE made
    /// it dirty (`try_to_unmap_one` for `!folio_test_swapbacked`); a dirty one becomes
    /// swap-backed again (`folio_set_swapbacked`) and stays. True: the caller frees it.
    func discardLazyFree(_ f: FrameNumber) -> Bool {
        let p = frames.page(f)
        // A THP is split first (a page of zeros goes with the split).
        if let head = frames.anonFolioHead(f) { splitAnonFolio(head) }
        var redirtied = false
        var unmapped = false
        rmapWalkAnon(f) { mm, vma, address in
            if redirtied { return }
            mm.withPTEMapping(f, at: address) { ptep, old, table in
                if old & PTE.dirty != 0 || p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.dirty != 0 {
                    redirtied = true
                    return
                }
                mm.splitHugePMDLocked(table)
                guard ptep.pointee.compareExchange(expected: old, desired: 0, ordering: .acquiringAndReleasing).exchanged else {
                    redirtied = true   // written meanwhile
                    return
                }
                p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed)
                mm.count(.rssAnon, UInt64(bitPattern: -1))
                mm.count(.pagedOut)
                unmapped = true
            }
        }
        if unmapped { tlbRCU.synchronize() }
        if redirtied || p.pointee.mapcount.load(ordering: .relaxed) > 0 {
            p.pointee.flags.bitwiseAnd(~PageMeta.Flag.lazyFree, ordering: .relaxed)
            p.pointee.flags.bitwiseOr(PageMeta.Flag.active, ordering: .relaxed)
            return false
        }
        // Only ours left (a swap-cache page is never lazy-free).
        return p.pointee.refcount.compareExchange(expected: 1, desired: 0, ordering: .acquiringAndReleasing).exchanged
    }

    func kswapdWake() { if frames.reclaims { kswapd.wake(self) } }

    /// What is wrong with the LRU, with every thread stopped and the batches drained: the
    /// lists' own consistency, and every page in use that is anonymous or cached is on one.
    func lruProblems() -> [String] {
        var out = frames.lru.problems()
        var reported = 0
        for i in 1..<frames.capacity {
            let f = FrameNumber(i)
            let flags = frames.page(f).pointee.flags.load(ordering: .relaxed)
            guard flags & PageMeta.Flag.free == 0, flags & (PageMeta.Flag.anon | PageMeta.Flag.pageCache) != 0 else { continue }
            if flags & PageMeta.Flag.lru == 0 {
                reported += 1
                if reported <= 10 { out.append("frame \(i) (flags \(hex8(UInt64(flags)))) in use but on no LRU list") }
                continue
            }
            let want = frames.lru.listFor(f)
            if let on = frames.lru.listOf(f), on != want && !(on == .unevictable || want == .unevictable) && on.isAnon != want.isAnon {
                reported += 1
                if reported <= 10 { out.append("frame \(i) on \(on), belongs on \(want)") }
            }
        }
        if reported > 10 { out.append("… \(reported - 10) more LRU problems") }
        return out
    }
}

extension MMSystem {
    /// One reclaim pass for at most `target` pages, as kswapd (`kswapd: true`) or direct
    /// reclaim would run it, after every LRU batch is drained (tests). Returns pages freed.
    @_spi(Testing) public func _shrinkNode(_ target: Int, kswapd: Bool = true) -> Int {
        frames.lru.drainAll()
        let n = shrinkNode(target, kswapd: kswapd)
        rcu.barrier()
        return n
    }

    /// The list `address`'s page is on in `mm`, after the batches are drained (tests).
    @_spi(Testing) public func _lruList(_ mm: AddressSpace, _ address: UInt64) -> LRUList? {
        frames.lru.drainAll()
        let pte = mm.pteValue(address & Linux.pageMask)
        guard pte & PTE.present != 0, pte & PTE.special == 0 else { return nil }
        return frames.lru.listOf(PTE.frame(pte))
    }
}

extension MMSystem {
    /// One `shrink_active_list()` or `shrink_inactive_list()` of up to `n` pages from `list`'s
    /// tail, as kswapd would run it, batches drained first (tests). Returns pages freed.
    @_spi(Testing) public func _shrinkList(_ list: LRUList, _ n: Int) -> Int {
        frames.lru.drainAll()
        var freed = 0
        if list.isActive { shrinkActiveList(list, n) } else { freed = shrinkInactiveList(list, n, kswapd: true) }
        rcu.barrier()
        return freed
    }
}
