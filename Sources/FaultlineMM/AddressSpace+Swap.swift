import CFaultline
import FaultlineSync
import Synchronization

// Swap (mm/memory.c do_swap_page, mm/rmap.c try_to_unmap, mm/vmscan.c shrink_folio_list):
// an anonymous page reclaim takes is written to a slot of the swap device and every PTE that
// mapped it — found through the reverse map, in every address space of the fork hierarchy —
// becomes a swap entry; a fault on one reads the page back (a major fault, with the fault's
// lock dropped for the I/O where the design can drop it) and maps it.

extension AddressSpace {
    /// `do_swap_page()`: a fault on a swap entry. The page comes from the swap cache, or is
    /// read from the device — with the lock dropped and the fault retried when the read takes
    /// time (`VM_FAULT_RETRY` after `swapin_readahead`), inline where the path may not drop
    /// its lock. Mapped writable at once when no one else holds it (the entry was this PTE's
    /// alone: `exclusive`); a write to a page still shared is copied as any COW.
    @usableFromInline @inline(never)
    func swapFault<V: FaultValidator>(_ s: VMASnapshot, _ page: UInt64, _ ptep: UnsafeMutablePointer<Atomic<UInt64>>,
                                      _ orig: UInt64, _ kind: AccessKind, _ v: V) -> FaultOutcome {
        guard let swap = system.swap else { preconditionFailure("a swap entry without a swap device") }
        // A VMA with swap entries has its anon_vma (a no-op here).
        let anonVMA = ensureAnonVMA(s, v)
        guard anonVMA != 0 else { return .abort(.noAnonVMA) }
        let slot = PTE.swapSlot(orig)
        var cached = swap.lookup(slot)
        if cached == nil {
            if swap.ioLatencyNs > 0 {
                guard v.mayWaitForIO else { return .abort(.lockContended) }
                return .needIO(FaultIO(swap: swap, slot: slot))
            }
            cached = swap.readIn(slot)
            if cached == nil {
                // Out of frames, or the entry went (zapped) while we read: look again.
                return ptep.pointee.load(ordering: .acquiring) == orig ? .error(.oom) : .done
            }
        }
        let f = cached!
        let p = frames.page(f)
        let table = PageTablePage(entry: ptep)
        table.ptl.pointee.lock()
        guard v.validate(), tableStillLinked(page, ptep) else {
            table.ptl.pointee.unlock()
            frames.put(f)
            return .abort(.pteChanged)
        }
        guard ptep.pointee.load(ordering: .relaxed) == orig, !table.isPMDMapped || system.brokenTHPNeverSplits else {
            table.ptl.pointee.unlock()
            frames.put(f)
            return .done
        }
        // swap_free(): this PTE no longer holds the slot (at zero the page leaves the cache).
        swap.free(slot)
        // Exclusive: our reference is the only one left (no other PTE, no cache).
        let exclusive = frames.refsBesidesLRUBatch(f) == 1
        if p.pointee.mapping.load(ordering: .relaxed) == 0 {
            // folio_add_new_anon_rmap(): a shared page belongs to the hierarchy's root, which
            // every VMA that may map it chains to.
            let own = newPageAnonVMA(anonVMA, s, v)
            let a = exclusive || own == 0 ? own : AnonVMA.from(own).root.bits
            p.pointee.mapping.store(a, ordering: .relaxed)
            p.pointee.index.store(s.pgoff &+ ((page &- s.start) >> Linux.pageShift), ordering: .relaxed)
        }
        let writable = exclusive && s.flags.contains(.write)
        let e = PTE.make(f, writable: writable, exec: s.flags.contains(.exec), dirty: writable && kind == .write,
                         pkey: PTE.pkeyBits(s.flags))
        ptep.pointee.store(e, ordering: .releasing)
        p.pointee.mapcount.wrappingAdd(1, ordering: .relaxed)   // the PTE takes our reference
        if s.flags.contains(.locked) { mlockAnon(f, 1) }
        table.ptl.pointee.unlock()
        count(.faults)
        count(.swapInFaults)
        count(.rssAnon)
        if kind == .write && !writable && s.flags.contains(.write) {
            // do_wp_page() in the same fault: the page is still someone else's too.
            return wpFault(s, page, ptep, e, v)
        }
        return .done
    }
}

extension AddressSpace {
    /// `madvise_swapin()` (`swapin_walk_pmd_entry` + `read_swap_cache_async`): every swapped-out
    /// page of `[start, end)` is read into the swap cache, not mapped; the faults that come
    /// later find it there (minor faults).
    func madviseSwapin(_ start: UInt64, _ end: UInt64) {
        guard let swap = system.swap else { return }
        var slots: [UInt32] = []
        rcuRead.readLock()
        forEachPTE(start, end) { _, _, pte in
            if PTE.isSwap(pte) { slots.append(PTE.swapSlot(pte)) }
        }
        rcuRead.readUnlock()
        // A slot freed meanwhile reads nothing (readIn checks its count under the lock).
        for slot in slots { if let f = swap.readIn(slot) { frames.put(f) } }
    }
}

extension MMSystem {
    /// `try_to_unmap()` for an anonymous page in the swap cache: every PTE the reverse map
    /// finds mapping `f` becomes a swap entry for `slot` (the slot counts each), under that
    /// page table's lock; then one TLB flush. Returns the mappings left (one a concurrent
    /// fork or fault added where the walk had passed): reclaim gives up on such a page.
    func tryToUnmap(_ f: FrameNumber, slot: UInt32) -> Int32 {
        let swap = swap!
        let p = frames.page(f)
        var unmapped = false
        var found = 0
        rmapWalkAnon(f) { mm, vma, address in
            mm.withPTEMapping(f, at: address) { ptep, old, table in
                found += 1
                if _brokenTryToUnmapSkipsMappings && found > 1 {
                    // The broken control: counted as unmapped, the PTE left in place.
                    p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                    p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed)
                    return
                }
                // TTU_SPLIT_HUGE_PMD: a THP leaves its PMD before its pages go one by one.
                mm.splitHugePMDLocked(table)
                swap.duplicate(slot)
                ptep.pointee.store(PTE.swapEntry(slot), ordering: .releasing)
                if old & PTE.dirty != 0 { p.pointee.flags.bitwiseOr(PageMeta.Flag.dirty, ordering: .relaxed) }
                if vma.vmFlags.contains(.locked) && p.pointee.mlockCount.wrappingSubtract(1, ordering: .relaxed).newValue == 0 {
                    frames.lru.mlockChanged(f)
                }
                p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed)   // the caller still holds one
                mm.count(.rssAnon, UInt64(bitPattern: -1))
                unmapped = true
            }
        }
        // No access through an old PTE after this (flush_tlb_range of each mm, at once).
        if unmapped { tlbRCU.synchronize() }
        return p.pointee.mapcount.load(ordering: .relaxed)
    }

    /// `shrink_folio_list()` for anonymous pages, with the swap device: each page (the caller
    /// holds a reference to each, as isolation does) goes to the swap cache with a new slot
    /// (or keeps the one it has there), is unmapped everywhere, written out (unless its copy on
    /// the device is still good), and leaves the cache and memory unless someone took it
    /// meanwhile. A page still mapped or taken stays in the swap cache, as in Linux.
    /// Returns the pages freed. Callers hold no page-table lock.
    func reclaimAnon(_ pages: [FrameNumber]) -> (freed: Int, kept: [FrameNumber]) {
        guard let swap else { return (0, pages) }
        var freed: [FrameNumber] = []
        var kept: [FrameNumber] = []
        for f in pages {
            let p = frames.page(f)
            // shrink_folio_list(): a THP is split before its pages go one by one; a page of
            // zeros leaves with the split (mapped to the zero page), only our reference left.
            if let head = frames.anonFolioHead(f) {
                splitAnonFolio(head)
                if p.pointee.mapcount.load(ordering: .relaxed) == 0,
                   p.pointee.refcount.compareExchange(expected: 1, desired: 0, ordering: .acquiringAndReleasing).exchanged {
                    freed.append(f)
                    continue
                }
            }
            // Unevictable (mlocked), the device full, or another reclaimer has it.
            guard p.pointee.mlockCount.load(ordering: .relaxed) <= 0, let (slot, fresh) = swap.isolate(f) else {
                kept.append(f)
                continue
            }
            if tryToUnmap(f, slot: slot) != 0 {
                // Still mapped somewhere: it stays, in the swap cache while swap PTEs hold it.
                _ = swap.finishReclaim(f, slot: slot, refs: 0)
                kept.append(f)
                continue
            }
            // pageout(): a page read back and not written since is on the device already.
            if fresh || p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.dirty != 0 { swap.writeOut(f, slot) }
            p.pointee.flags.bitwiseAnd(~(PageMeta.Flag.dirty | PageMeta.Flag.lazyFree), ordering: .relaxed)
            // Our reference and the cache's: if they are all, the page goes.
            if swap.finishReclaim(f, slot: slot, refs: 2) {
                freed.append(f)
            } else {
                kept.append(f)
            }
        }
        // A lockless walker may have read a PTE to the page before it was unmapped.
        frames.freeDeferred(freed)
        return (freed.count, kept)
    }
}

extension AddressSpace {
    /// Reclaims the anonymous page mapped at `address` as kswapd would (tests): through the
    /// reverse map, wherever it is mapped. True if it was swapped out and freed.
    @_spi(Testing) public func _reclaimAnon(at address: UInt64) -> Bool {
        rcuRead.readLock()
        var frame: FrameNumber? = nil
        if let slot = walkPTE(address & Linux.pageMask) {
            let table = PageTablePage(entry: slot)
            table.ptl.pointee.lock()
            let pte = slot.pointee.load(ordering: .relaxed)
            if pte & PTE.present != 0 && pte & PTE.special == 0
                && frames.page(PTE.frame(pte)).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 {
                frame = PTE.frame(pte)
            }
            table.ptl.pointee.unlock()
        }
        rcuRead.readUnlock()
        guard let frame else { return false }
        frames.lru.drainAll()
        guard frames.lru.isolate(frame) else { return false }
        let (n, kept) = system.reclaimAnon([frame])
        for f in kept { frames.lru.putback(f) }
        return n == 1
    }
}
