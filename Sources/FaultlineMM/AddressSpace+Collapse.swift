import CFaultline
import FaultlineSync
import Synchronization

/// How one 2 MiB fared in a collapse (`enum scan_result`, reduced to what the caller does).
enum CollapseResult: Equatable {
    /// SCAN_SUCCEED or SCAN_PMD_MAPPED: a huge PMD is there now.
    case huge
    /// A result `madvise_collapse` records and moves on from (SCAN_PMD_NULL,
    /// SCAN_PTE_NON_PRESENT, SCAN_PAGE_NULL, SCAN_PAGE_COUNT …), with its errno.
    case skipped(Errno)
    /// Any other result: the call stops with this errno (SCAN_ALLOC_HUGE_PAGE_FAIL: ENOMEM).
    case failed(Errno)
}

/// Who collapses (`struct collapse_control`): MADV_COLLAPSE ignores the sysfs limits;
/// khugepaged applies them and wants young pages.
struct CollapseControl {
    var isKhugepaged = false
    var maxPtesNone = 511
    var maxPtesShared = 256
    var maxPtesSwap = 64

    static let madvise = CollapseControl()
}

extension AddressSpace {
    /// `madvise(MADV_COLLAPSE)` (`madvise_collapse`): every 2 MiB-aligned block of each VMA's
    /// part of the range becomes one THP mapped by a huge PMD, whatever the sysfs settings and
    /// however few pages it has: present pages are copied, the rest are zero
    /// (`max_ptes_none` and `max_ptes_shared` do not apply), even none at all where a page
    /// table is. A block without a page table, or with a guard marker, stops the call with
    /// EINVAL; the call fails unless every block ended huge. Linux scans under `mmap_lock` for read and collapses under it for write;
    /// the model holds the writer side for the whole call (`withWriter`). Not modelled:
    /// swapped-out pages are not read back first (the block is skipped with EAGAIN, counted as
    /// `collapseSwapSkipped`), and file or shmem VMAs (page-cache collapse) are EINVAL,
    /// counted as `collapseFileRefused`.
    func doMadviseCollapse(_ start: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        // lru_add_drain_all(): no LRU batch holds a reference that would fail the count check.
        frames.lru.drainAll()
        return madviseWalk(start, end) { v, s, e in
            if v.vmFile != nil {
                count(.collapseFileRefused)
                return .failure(.EINVAL)
            }
            // thp_vma_allowable_order(TVA_FORCED_COLLAPSE): the sysfs mode does not matter,
            // VM_NOHUGEPAGE does; the VMA must hold an aligned 2 MiB and, outside a fault, have
            // an anon_vma (probed: an untouched 4 MiB VMA is EINVAL, one with a page is not).
            let snap = VMASnapshot(v)
            guard v.anonVMA != 0, v.vmEnd - v.vmStart >= Linux.pmdSize, thpSuitable(snap, v.vmEnd - Linux.pmdSize) else {
                return .failure(.EINVAL)
            }
            let hstart = (s &+ Linux.pmdSize &- 1) & ~(Linux.pmdSize - 1)
            let hend = e & ~(Linux.pmdSize - 1)
            // The kernel compares `thps` with (hend - hstart) >> HPAGE_PMD_SHIFT, unsigned: a
            // range inside one block is EINVAL, one that ends where it starts is done.
            if hstart > hend { return .failure(.EINVAL) }
            var lastFail = Errno.EINVAL
            var thps: UInt64 = 0
            var a = hstart
            while a < hend {
                switch collapseHugePage(v, a) {
                case .huge: thps += 1
                case .skipped(let err): lastFail = err
                case .failed(let err): return .failure(err)
                }
                a &+= Linux.pmdSize
            }
            return thps == (hend &- hstart) >> 21 ? .success(e) : .failure(lastFail)
        }
    }

    /// `hpage_collapse_scan_pmd()` + `collapse_huge_page()` for MADV_COLLAPSE at `haddr`,
    /// writer side held: a new THP gets a copy of every page mapped in the 2 MiB (zeros
    /// elsewhere), the PTEs are cleared and flushed first (`pmdp_collapse_flush`), then the huge
    /// PMD goes in; the old pages lose these mappings (a fork child's stay with it).
    /// For khugepaged (`cc.isKhugepaged`) the scan also applies `hpage_collapse_scan_pmd()`'s
    /// limits: at most `max_ptes_none` none or zero entries, `max_ptes_shared` pages mapped
    /// elsewhere too, and at least one young page (its PTE's accessed bit or PG_referenced).
    func collapseHugePage(_ v: VMARef, _ haddr: UInt64, _ cc: CollapseControl = .madvise) -> CollapseResult {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        // find_pmd_or_thp_or_none(): no PMD table is SCAN_PMD_NULL (the call goes on), an empty
        // PMD entry SCAN_PMD_NONE (it stops; probed: an empty block before a block with a page
        // leaves both as they were).
        guard let ptep = walkPTE(haddr) else { return pmdTable(haddr) != nil ? .failed(.EINVAL) : .skipped(.EINVAL) }
        let table = PageTablePage(entry: ptep)
        if table.isPMDMapped { return .huge }
        if table.isAbsentInLinux { return .failed(.EINVAL) }
        vmaStartWrite(v)
        let n = PageTablePage.entries
        let first = table.entry(0)
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: n) { old -> CollapseResult in
            table.ptl.pointee.lock()
            let (stop, _) = scanCollapsible(first, cc, into: old.baseAddress, counting: !cc.isKhugepaged)
            table.ptl.pointee.unlock()
            if let stop { return stop }
            // A table of none or zero-page entries only is collapsed too: a THP of zeros
            // (probed: such a block before a block with a page, both collapse).
            // MADV_COLLAPSE and khugepaged (`khugepaged/defrag` = 1) compact for their THP.
            guard let head = allocateTHP(compact: true) else {
                // SCAN_CGROUP_CHARGE_FAIL (the memcg refused 512 pages) or SCAN_ALLOC_HUGE_PAGE_FAIL.
                return .failed(frames.takeChargeFailure() ? .EBUSY : .ENOMEM)
            }
            // __collapse_huge_page_isolate(): the scan again, with the THP in hand — what
            // happened meanwhile (reclaim unmapped a page, the compaction for this THP migrated
            // one of these very pages) is judged as Linux judges it after its allocation.
            table.ptl.pointee.lock()
            let (changed, pagesNow) = scanCollapsible(first, cc, into: old.baseAddress, counting: false)
            if let changed {
                table.ptl.pointee.unlock()
                for j in 0..<n { frames.put(head + FrameNumber(j)) }
                return changed
            }
            let pages = pagesNow
            // pmdp_collapse_flush(): no access reaches the old pages from here on.
            for k in 0..<n { old[k] = first[k].exchange(0, ordering: .acquiringAndReleasing) }
            table.ptl.pointee.unlock()
            flushTLBRange()
            // __collapse_huge_page_copy(): the pages' contents, zeros for the rest.
            var dead: [FrameNumber] = []
            let locked = v.vmFlags.contains(.locked)
            for k in 0..<n where old[k] & PTE.present != 0 && old[k] & PTE.special == 0 {
                let f = PTE.frame(old[k])
                frames.pointer(head + FrameNumber(k)).copyMemory(from: frames.pointer(f), byteCount: Int(Linux.pageSize))
                let p = frames.page(f)
                p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                if locked { mlockAnon(f, -1) }
                if p.pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { dead.append(f) }
            }
            let s = VMASnapshot(v)
            let exec = s.flags.contains(.exec), writable = s.flags.contains(.write), pkey = PTE.pkeyBits(s.flags)
            for k in 0..<n {
                let f = head + FrameNumber(k)
                setAnonRmap(f, s.anonVMA, s, haddr &+ UInt64(k) << Linux.pageShift)
                frames.lruAdd(f)
            }
            table.ptl.pointee.lock()
            for k in 0..<n {
                let f = head + FrameNumber(k)
                var e = PTE.make(f, writable: writable, exec: exec, dirty: true, pkey: pkey)
                if s.flags.isDisjoint(with: [.read, .write, .exec]) { e &= ~PTE.user }
                first[k].store(e, ordering: .releasing)
                frames.page(f).pointee.mapcount.wrappingAdd(1, ordering: .relaxed)
            }
            table.pmdMapping.pointee.store(PMDMapping.thp, ordering: .relaxed)
            table.absentInLinux.pointee.store(0, ordering: .relaxed)
            table.ptl.pointee.unlock()
            if locked { for k in 0..<n { mlockAnon(head + FrameNumber(k), 1) } }
            count(.rssAnon, UInt64(n - pages))
            count(.thpCollapseAlloc)
            frames.freeDeferred(dead)
            return .huge
        }
    }

    /// The scan of one PTE table for a collapse (its lock held): each entry is none, the zero
    /// page, or an anonymous page no one else holds a reference to (SCAN_PAGE_COUNT); a swap
    /// entry is left (not modelled: `collapseSwapSkipped`), a marker stops the call; for
    /// khugepaged, `cc`'s limits and a young page. The entries go to `old` if given. Returns the
    /// result that stops the collapse (nil: go on) and the pages found.
    func scanCollapsible(_ first: UnsafeMutablePointer<Atomic<UInt64>>, _ cc: CollapseControl,
                         into old: UnsafeMutablePointer<UInt64>?, counting: Bool) -> (CollapseResult?, Int) {
        var pages = 0, noneOrZero = 0, shared = 0, referenced = 0
        for k in 0..<PageTablePage.entries {
            let e = first[k].load(ordering: .relaxed)
            old?[k] = e
            if e == 0 || e & PTE.present != 0 && e & PTE.special != 0 {   // none or zero
                noneOrZero += 1
                if cc.isKhugepaged && noneOrZero > cc.maxPtesNone {
                    if counting { count(.khugepagedExceedNone) }
                    return (.skipped(.EAGAIN), pages)   // SCAN_EXCEED_NONE_PTE
                }
                continue
            }
            if PTE.isSwap(e) {
                if counting { count(.collapseSwapSkipped) }
                return (.skipped(.EAGAIN), pages)
            }
            guard e & PTE.present != 0 else { return (.failed(.EINVAL), pages) }   // a guard marker: the call stops (probed)
            let f = PTE.frame(e)
            let p = frames.page(f)
            let flags = p.pointee.flags.load(ordering: .relaxed)
            guard flags & PageMeta.Flag.anon != 0 else { return (.failed(.EINVAL), pages) }   // SCAN_PAGE_ANON
            // is_refcount_suitable(): one reference per mapping (and the swap cache's).
            let cacheRef: Int32 = flags & PageMeta.Flag.swapCache != 0 ? 1 : 0
            let mapcount = p.pointee.mapcount.load(ordering: .relaxed)
            if cc.isKhugepaged && mapcount > 1 {
                shared += 1
                if shared > cc.maxPtesShared {
                    if counting { count(.khugepagedExceedShared) }
                    return (.skipped(.EAGAIN), pages)   // SCAN_EXCEED_SHARED_PTE
                }
            }
            if frames.refsBesidesLRUBatch(f) != mapcount + cacheRef { return (.skipped(.EAGAIN), pages) }   // SCAN_PAGE_COUNT
            if e & PTE.accessed != 0 || flags & PageMeta.Flag.referenced != 0 { referenced += 1 }
            pages += 1
        }
        if cc.isKhugepaged && referenced == 0 {
            if counting { count(.khugepagedLackReferenced) }
            return (.skipped(.EAGAIN), pages)   // SCAN_LACK_REFERENCED_PAGE
        }
        return (nil, pages)
    }
}
