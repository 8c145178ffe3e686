import FaultlineSync
import Synchronization

// MADV_FREE and MADV_PAGEOUT on a machine without swap, as the host (Linux 6.18, no swap
// device) does them; probed with /proc/self/pagemap: a page mapped more than once is left
// alone by both; an anonymous page cannot be paged out unless MADV_FREE made it lazy-free
// and it was not written since (then it is discarded); a page-cache page (file or shmem) is
// unmapped, and dropped from the cache when clean (a dirty file page is marked PG_reclaim,
// which hides it from fault-around until a fault on it clears the mark).

extension AddressSpace {
    /// `madvise_free_pte_range()`: anonymous pages become clean and lazy-free (a dirty folio
    /// only when mapped here alone), so that reclaim may discard them unless written again. Called with the VMA
    /// stable (the madvise walk's lock).
    func madviseFree(_ start: UInt64, _ end: UInt64) {
        // madvise_free_huge_pmd(): a THP the range cuts is split; one it covers stays.
        let skip = prepareLargeFoliosForMadvise(start, end)
        var changed = false
        rcuRead.readLock()
        forEachPresentPTE(start, end) { slot, address, old in
            guard old & PTE.special == 0, !skip.contains(where: { $0.contains(address) }) else { return }
            let p = frames.page(PTE.frame(old))
            let flags = p.pointee.flags.load(ordering: .relaxed)
            guard flags & PageMeta.Flag.anon != 0 else { return }
            // Only a dirty folio must be ours alone to be cleaned (probed: after fork, the
            // child's MADV_FREE makes the shared, clean folio lazy-free too).
            if flags & PageMeta.Flag.dirty != 0 && p.pointee.mapcount.load(ordering: .relaxed) != 1 { return }
            // mkold + mkclean; a write racing through a stale translation is waited for
            // by the flush below and sets the dirty bit again.
            if !slot.pointee.compareExchange(expected: old, desired: old & ~(PTE.dirty | PTE.accessed),
                                             ordering: .acquiringAndReleasing).exchanged { return }
            p.pointee.flags.bitwiseAnd(~PageMeta.Flag.dirty, ordering: .relaxed)
            // folio_mark_lazyfree(): not for an unevictable (mlocked) folio, though its PTE
            // here was cleaned (probed: a fork child's MADV_FREE of its locked parent's page).
            if p.pointee.mlockCount.load(ordering: .relaxed) <= 0 {
                p.pointee.flags.bitwiseOr(PageMeta.Flag.lazyFree, ordering: .relaxed)
                // lru_lazyfree(): to the inactive file list, where reclaim discards it.
                p.pointee.flags.bitwiseAnd(~PageMeta.Flag.referenced, ordering: .relaxed)
                frames.lru.move(PTE.frame(old), active: false)
            }
            changed = true
        }
        rcuRead.readUnlock()
        if changed { flushTLBRange() }
        if let swap = system.swap {
            // madvise_free_pte_range(): a swapped-out page is dropped (reads back as zeros).
            var slots: [UInt32] = []
            rcuRead.readLock()
            forEachPTE(start, end) { slot, _, cur in
                guard PTE.isSwap(cur) else { return }
                slot.pointee.store(0, ordering: .releasing)
                slots.append(PTE.swapSlot(cur))
            }
            rcuRead.readUnlock()
            for slot in slots { swap.free(slot) }
        }
    }

    /// `madvise_cold_or_pageout_pte_range()` for MADV_COLD: each page mapped only here is made
    /// old (its PTE's accessed bit and PG_referenced cleared) and moved to the head of its
    /// inactive list (`folio_deactivate()`), so reclaim takes it before pages still in use.
    func madviseCold(_ start: UInt64, _ end: UInt64) {
        let skip = prepareLargeFoliosForMadvise(start, end)
        var deactivated: [FrameNumber] = []
        rcuRead.readLock()
        forEachPresentPTE(start, end) { slot, address, old in
            guard old & PTE.special == 0, !skip.contains(where: { $0.contains(address) }) else { return }
            let f = PTE.frame(old)
            let p = frames.page(f)
            guard p.pointee.mapcount.load(ordering: .relaxed) == 1 else { return }
            if old & PTE.accessed != 0 {
                _ = slot.pointee.compareExchange(expected: old, desired: old & ~PTE.accessed, ordering: .acquiringAndReleasing)
            }
            p.pointee.flags.bitwiseAnd(~PageMeta.Flag.referenced, ordering: .relaxed)
            if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.unevictable == 0 { deactivated.append(f) }
        }
        for f in deactivated { frames.lru.move(f, active: false) }
        rcuRead.readUnlock()
        count(.deactivated, UInt64(deactivated.count))
    }

    /// `madvise_cold_or_pageout_pte_range()` + `reclaim_pages()` without swap: pages mapped
    /// only here are reclaimed — a lazy-free anonymous page still clean is discarded, other
    /// anonymous pages stay (nowhere to write them), page-cache pages are unmapped and, when
    /// clean, leave the cache (dirty ones wait for writeback, which MADV_PAGEOUT does not
    /// start). Linux also requires the caller to own the file or be able to write it
    /// (`can_do_file_pageout`); the model has no file ownership and always may.
    func madvisePageout(_ start: UInt64, _ end: UInt64, vma: VMARef) {
        let file = vma.vmFile
        let droppable = vma.vmFlags.contains(.droppable)
        var freed: [FrameNumber] = []
        var dropFromCache: [(UInt64, FrameNumber)] = []
        var anon: Int64 = 0, filePages: Int64 = 0
        var toSwap: [FrameNumber] = []
        defer {
            if !toSwap.isEmpty {
                let (n, kept) = system.reclaimAnon(toSwap)
                count(.pagedOut, UInt64(n))
                frames.lru.putback(kept.map { ($0, nil) })
            }
        }
        let skip = prepareLargeFoliosForMadvise(start, end)
        // reclaim_pages() takes pages off the LRU: this thread's batch goes there first.
        if system.swap != nil { frames.lru.drainLocal() }
        rcuRead.readLock()
        forEachPresentPTE(start, end) { slot, address, old in
            guard old & PTE.special == 0, !skip.contains(where: { $0.contains(address) }) else { return }
            let f = PTE.frame(old)
            let p = frames.page(f)
            let flags = p.pointee.flags.load(ordering: .relaxed)
            guard p.pointee.mapcount.load(ordering: .relaxed) == 1 else { return }
            let isAnon = flags & PageMeta.Flag.anon != 0
            let dirty = old & PTE.dirty != 0 || flags & PageMeta.Flag.dirty != 0
            // A droppable VMA's folios are never swap-backed: discarded, dirty or not.
            if isAnon && !droppable && (flags & PageMeta.Flag.lazyFree == 0 || dirty) {
                // With a swap device, reclaim swaps it out (after the walk: isolated, with a
                // reference of ours, as reclaim_pages() gets them).
                if system.swap != nil && p.pointee.mlockCount.load(ordering: .relaxed) <= 0 && frames.lru.isolate(f) {
                    toSwap.append(f)
                }
                return
            }
            if !isAnon && file == nil { return }
            // try_to_unmap_one(): the PTE goes, its dirty bit moves to the page.
            guard slot.pointee.compareExchange(expected: old, desired: 0, ordering: .acquiringAndReleasing).exchanged else { return }
            PageTablePage(entry: slot).absentInLinux.pointee.store(0, ordering: .relaxed)
            p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
            if old & PTE.dirty != 0 { p.pointee.flags.bitwiseOr(PageMeta.Flag.dirty, ordering: .relaxed) }
            if isAnon { anon += 1 } else { filePages += 1 }
            if !isAnon && !dirty {
                dropFromCache.append((vma.vmPgoff &+ ((address &- vma.vmStart) >> Linux.pageShift), f))
            } else if !isAnon && file?.isShmem == false {
                // shrink_folio_list(): only kswapd writes file pages back; a dirty one is
                // marked PG_reclaim ("reclaim when written back") and stays cached. shmem
                // goes to shmem_writeout(), which fails without swap and leaves no mark.
                p.pointee.flags.bitwiseOr(PageMeta.Flag.reclaim, ordering: .relaxed)
            }
            if p.pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                freed.append(f)
            }
        }
        rcuRead.readUnlock()
        guard anon + filePages > 0 else { return }
        if anon != 0 { count(.rssAnon, UInt64(bitPattern: -anon)) }
        if filePages != 0 { count(file?.isShmem == true ? .rssShmem : .rssFile, UInt64(bitPattern: -filePages)) }
        count(.pagedOut, UInt64(anon + filePages))
        // No access through the old PTEs after this; then the clean pages leave the cache
        // (__remove_mapping), and the last reference frees them.
        flushTLBRange()
        frames.freeDeferred(freed)
        if let file, !dropFromCache.isEmpty {
            system._pageoutBeforeDrop?()
            for (index, f) in dropFromCache { file.removeIfUnused(index, ifHolding: f) }
        }
    }
}
