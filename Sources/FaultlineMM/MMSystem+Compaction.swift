import FaultlineSync
import Synchronization

// Compaction (mm/compaction.c, mm/migrate.c) for one THP: where no whole 2 MiB block is free,
// an allocation that may compact (a fault in a VM_HUGEPAGE VMA under `defrag` = madvise,
// khugepaged, MADV_COLLAPSE) isolates the block with the most free frames, migrates the pages
// still in it elsewhere, and takes the block. The model migrates what it can move safely and
// counts the rest as failures: anonymous pages mapped once, not mlocked, not in the swap cache,
// not part of a large folio. Page-cache pages, pages mapped more than once and pages someone
// holds a reference to stay — a block holding one is not compacted (Linux would migrate the
// first two too).

extension MMSystem {
    /// `try_to_compact_pages()` for order 9 with capture: a whole block, its frames prepared
    /// as `allocateHuge` prepares them, or nil (`compact_fail`).
    func compactForHugePage(zeroed: Bool, flags: UInt32) -> FrameNumber? {
        // compaction_deferred(): after failures, only one attempt in 2^shift (up to 64) runs.
        let shift = compactDeferShift.load(ordering: .relaxed)
        if shift > 0 && compactConsidered.wrappingAdd(1, ordering: .relaxed).newValue < 1 << shift {
            vmscan.add(.compactDeferred)
            return nil
        }
        vmscan.add(.compactStall)
        // lru_add_drain_all(): a page in a per-thread batch cannot be isolated.
        frames.lru.drainAll()
        // drain_local_pages(): this thread's own list goes back, so its frames count in their
        // blocks (other threads' lists stay: the model drains no one else's).
        frames.drainLocal()
        for _ in 0..<4 {
            guard let b = frames.isolateBlockForCompaction() else { break }
            var moved = true
            for k in 0..<FramePool.hugeFrames {
                let f = FrameNumber(b << 9 + k)
                if frames.isFree(f) { continue }
                vmscan.add(.compactMigrateScanned)
                if migrateAnonPage(f, avoiding: b) {
                    vmscan.add(.pgmigrateSuccess)
                } else {
                    vmscan.add(.pgmigrateFail)
                    moved = false
                    break
                }
            }
            if let head = frames.releaseIsolatedBlock(b, capture: moved, zeroed: zeroed, flags: flags) {
                vmscan.add(.compactSuccess)
                // compaction_defer_reset()
                compactDeferShift.store(0, ordering: .relaxed)
                compactConsidered.store(0, ordering: .relaxed)
                return head
            }
        }
        vmscan.add(.compactFail)
        // defer_compaction()
        compactConsidered.store(0, ordering: .relaxed)
        if shift < 6 { compactDeferShift.store(shift + 1, ordering: .relaxed) }
        return nil
    }

    /// `migrate_folio()` for an anonymous page mapped once: its PTE is write-protected and the
    /// writes in flight waited for (Linux replaces it by a migration entry), the contents copied
    /// to a frame outside block `avoiding`, then — if the PTE, the mapcount and the references
    /// are still what they were — the PTE points at the copy (its write bit as before) and the
    /// old frame, once no translation to it is left, goes straight back to its block.
    func migrateAnonPage(_ f: FrameNumber, avoiding b: Int) -> Bool {
        let p = frames.page(f)
        let flags = p.pointee.flags.load(ordering: .acquiring)
        let unmovable = PageMeta.Flag.swapCache | PageMeta.Flag.unevictable | PageMeta.Flag.pageCache | PageMeta.Flag.zero
            | PageMeta.Flag.orderMask | PageMeta.Flag.readPending
        guard flags & PageMeta.Flag.anon != 0, flags & unmovable == 0,
              p.pointee.mlockCount.load(ordering: .relaxed) == 0, p.pointee.mapcount.load(ordering: .relaxed) == 1,
              frames.lru.isolate(f) else { return false }
        // From here the isolation holds a reference.
        guard let nf = frames.allocate(zeroed: false, flags: 0) else {
            frames.lru.putback(f)
            return false
        }
        guard Int(nf) >> 9 != b else {
            frames.put(nf)
            frames.lru.putback(f)
            return false
        }
        // The one mapping, write-protected.
        var site: (mm: AddressSpace, address: UInt64, orig: UInt64, wp: UInt64)? = nil
        var mappings = 0
        rmapWalkAnon(f) { mm, _, address in
            mm.withPTEMapping(f, at: address) { ptep, old, table in
                mappings += 1
                guard mappings == 1, !table.isPMDMapped else { return }
                let wp = old & ~PTE.writable
                if wp != old && !ptep.pointee.compareExchange(expected: old, desired: wp, ordering: .acquiringAndReleasing).exchanged {
                    mappings += 1   // changed under us: give up
                    return
                }
                site = (mm, address, old, wp)
            }
        }
        // On failure the PTE stays write-protected: always safe (a write fault reuses an
        // exclusive page), where giving the write bit back could hand it to a page a fork
        // has just shared.
        guard mappings == 1, let s = site else {
            frames.put(nf)
            frames.lru.putback(f)
            return false
        }
        // No write through a writable translation of the old PTE after this.
        tlbRCU.synchronize()
        if !_brokenMigrationSkipsCopy { frames.pointer(nf).copyMemory(from: frames.pointer(f), byteCount: Int(Linux.pageSize)) }
        let np = frames.page(nf)
        let keep = PageMeta.Flag.anon | PageMeta.Flag.dirty | PageMeta.Flag.lazyFree | PageMeta.Flag.referenced | PageMeta.Flag.active
        np.pointee.flags.store(flags & keep, ordering: .relaxed)
        np.pointee.mapping.store(p.pointee.mapping.load(ordering: .relaxed), ordering: .relaxed)
        np.pointee.index.store(p.pointee.index.load(ordering: .relaxed), ordering: .relaxed)
        var switched = false
        s.mm.withPTEMapping(f, at: s.address) { ptep, cur, _ in
            // Only the accessed bit may have changed (a read); the isolation's reference and
            // the mapping's are the only ones.
            guard cur & ~PTE.accessed == s.wp & ~PTE.accessed, p.pointee.mapcount.load(ordering: .relaxed) == 1,
                  frames.refsBesidesLRUBatch(f) == 2 else { return }
            np.pointee.mapcount.store(1, ordering: .relaxed)   // the PTE takes the new frame's reference
            // Before the PTE: from then on a zap may free the new frame.
            frames.migrateCharge(from: f, to: nf)
            ptep.pointee.store((cur & ~PTE.frameMask) | UInt64(nf) << 12 | (s.orig & PTE.writable), ordering: .releasing)
            p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
            p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed)
            switched = true
        }
        guard switched else {
            np.pointee.mapping.store(0, ordering: .relaxed)
            frames.put(nf)
            frames.lru.putback(f)
            return false
        }
        frames.lruAdd(nf)
        // No translation to the old frame after this; the isolation's reference was its last.
        tlbRCU.synchronize()
        if p.pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            p.pointee.mapping.store(0, ordering: .relaxed)
            frames.freeToBlock(f)
        }
        return true
    }
}
