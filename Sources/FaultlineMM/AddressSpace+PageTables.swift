import CFaultline
import FaultlineSync
import Synchronization

extension AddressSpace {
    /// Lockless walk to the PTE of `address` (`pte_offset_map`): nil if an upper level is
    /// missing. Callers hold an RCU read-side section (tables are freed after grace periods).
    @inlinable @inline(__always)
    func walkPTE(_ address: UInt64) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        var table = pgd
        var level = 4
        while level > 1 {
            let e = table.entry(ptIndex(address, level: level)).pointee.load(ordering: .acquiring)
            guard e & PTE.present != 0 else { return nil }
            table = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
            level &-= 1
        }
        return table.entry(ptIndex(address, level: 1))
    }

    /// Walk that allocates missing levels (`__pte_alloc` and friends); a new table is
    /// installed with one CAS, so concurrent faults need no mm-wide lock for it.
    @inlinable @inline(__always)
    func allocPTE(_ address: UInt64) -> UnsafeMutablePointer<Atomic<UInt64>> {
        var table = pgd
        var level = 4
        while level > 1 {
            let slot = table.entry(ptIndex(address, level: level))
            var e = slot.pointee.load(ordering: .acquiring)
            if e & PTE.present == 0 { e = installTable(slot) }
            table = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
            level &-= 1
        }
        return table.entry(ptIndex(address, level: 1))
    }

    @usableFromInline @inline(never)
    func installTable(_ slot: UnsafeMutablePointer<Atomic<UInt64>>) -> UInt64 {
        let t = PageTablePage.initialize(tableSlab.allocate())
        let e = t.address | PTE.present | PTE.writable | PTE.user
        let r = slot.pointee.compareExchange(expected: 0, desired: e, ordering: .acquiringAndReleasing)
        if r.exchanged { return e }
        tableSlab.freeNow(t.base)
        return r.original
    }

    /// Whether the PMD entry covering `address` still points at the table holding `pte`
    /// (`pte_offset_map_lock` re-checks `pmd_same`): a table freed between a lockless walk
    /// and taking its lock must not be written.
    @inlinable @inline(__always)
    func tableStillLinked(_ address: UInt64, _ pte: UnsafeMutablePointer<Atomic<UInt64>>) -> Bool {
        guard let table = pmdTable(address) else { return false }
        let pmd = table.entry(ptIndex(address, level: 2)).pointee.load(ordering: .acquiring)
        return pmd & ~UInt64(4095) == PageTablePage(entry: pte).address
    }

    /// `mm_find_pmd()`: the PMD table (level 2) covering `address`, nil if a level above is
    /// missing.
    @inlinable @inline(__always)
    func pmdTable(_ address: UInt64) -> PageTablePage? {
        var table = pgd
        var level = 4
        while level > 2 {
            let e = table.entry(ptIndex(address, level: level)).pointee.load(ordering: .acquiring)
            guard e & PTE.present != 0 else { return nil }
            table = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
            level &-= 1
        }
        return table
    }

    // MARK: Range operations (writer side, or read side after a downgrade)

    /// Calls `body` with each PTE table (and the sub-range of `[start, end)` it covers) that
    /// exists, descending level by level so absent upper levels are skipped whole
    /// (`walk_page_range`). A loop, not a recursion over closures: `body` runs inline in the
    /// caller, so no closure context holds (and retains) the address space, whose header line
    /// every thread's calls read.
    @inline(__always)
    func forEachPTETable(_ start: UInt64, _ end: UInt64, _ body: (PageTablePage, UInt64, UInt64) -> Void) {
        // Four levels map 2^48 bytes: nothing above.
        let limit = min(end, 1 << 48)
        var a = start
        descend: while a < limit {
            var table = pgd
            var level = 4
            while level > 1 {
                let e = table.entry(ptIndex(a, level: level)).pointee.load(ordering: .acquiring)
                if e & PTE.present == 0 {
                    // An absent entry: the whole span it maps is skipped.
                    let span = ptSpan(level: level)
                    a = (a & ~(span &- 1)) &+ span
                    continue descend
                }
                table = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
                level &-= 1
            }
            let hi = (a & ~(Linux.pmdSize &- 1)) &+ Linux.pmdSize
            body(table, a, min(hi, limit))
            a = hi
        }
    }

    /// Calls `body` with each non-empty entry of `[start, end)` in an existing table (its slot,
    /// address and value), each table's PTL held around its entries (`walk_page_range` with a
    /// `pte_entry`). Callers hold an RCU read-side section.
    @inline(__always)
    func forEachPTE(_ start: UInt64, _ end: UInt64,
                    _ body: (UnsafeMutablePointer<Atomic<UInt64>>, UInt64, UInt64) -> Void) {
        forEachPTETable(start, end) { table, s, e in
            table.ptl.pointee.lock()
            var a = s
            while a < e {
                let slot = table.entry(ptIndex(a, level: 1))
                let old = slot.pointee.load(ordering: .acquiring)
                if old != 0 { body(slot, a, old) }
                a &+= Linux.pageSize
            }
            table.ptl.pointee.unlock()
        }
    }

    /// `forEachPTE` for present entries only.
    func forEachPresentPTE(_ start: UInt64, _ end: UInt64,
                           _ body: (UnsafeMutablePointer<Atomic<UInt64>>, UInt64, UInt64) -> Void) {
        forEachPTE(start, end) { slot, a, old in
            if old & PTE.present != 0 { body(slot, a, old) }
        }
    }

    /// `zap_page_range_single()` / `unmap_page_range()`: clears every PTE in `[start, end)`,
    /// dropping the frames' mappings; frames whose last reference goes are freed after a grace
    /// period (`tlb_finish_mmu`). Returns how many present PTEs were cleared.
    /// `reclaimTables`: MADV_DONTNEED's zap, after which Linux (CONFIG_PT_RECLAIM) frees an
    /// empty table whose whole 2 MiB the zap covered (a table shared with a range outside the
    /// zap stays: probed); the model keeps the table and marks it absent in Linux.
    /// `dropMarkers`: unmapping (`unmap_vmas`, ZAP_FLAG_DROP_MARKER) removes guard markers;
    /// every other zap (MADV_DONTNEED, truncation, guard install) keeps them.
    /// `fileOnly`: `zap_details` without `even_cows` (a hole punched in a file): a private
    /// VMA's own copies stay, only the file's pages go.
    @discardableResult
    func zapRange(_ start: UInt64, _ end: UInt64, vma: VMARef?, dropMarkers: Bool, reclaimTables: Bool = false,
                  fileOnly: Bool = false) -> Int {
        var freed: [FrameNumber] = []
        var swapFreed: [UInt32] = []
        var cleared = 0
        var anon = 0, file = 0, shmem = 0
        let shmemVMA = vma?.vmFile?.isShmem ?? false
        let lockedVMA = vma?.vmFlags.contains(.locked) ?? false
        let reclaim = reclaimTables && end - start >= Linux.pmdSize
        forEachPTETable(start, end) { table, s, e in
            table.ptl.pointee.lock()
            // zap_pmd_range(): a huge PMD the range covers whole goes at once (zap_huge_pmd),
            // one it cuts is split first.
            var wholeHuge = false
            if table.isPMDMapped {
                if e &- s == Linux.pmdSize { wholeHuge = !fileOnly } else { splitHugePMDLocked(table) }
            }
            var a = s
            let before = cleared
            while a < e {
                let slot = table.entry(ptIndex(a, level: 1))
                let cur = slot.pointee.load(ordering: .relaxed)
                if !dropMarkers && PTE.isGuard(cur) {
                    a &+= Linux.pageSize
                    continue
                }
                if fileOnly && (PTE.isSwap(cur) || cur & PTE.present != 0
                    && (cur & PTE.special != 0 || frames.page(PTE.frame(cur)).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0)) {
                    a &+= Linux.pageSize
                    continue
                }
                let old = slot.pointee.exchange(0, ordering: .acquiringAndReleasing)
                if PTE.isSwap(old) {
                    // zap_nonpresent_ptes(): free_swap_and_cache().
                    swapFreed.append(PTE.swapSlot(old))
                } else if old & PTE.present != 0 {
                    cleared += 1
                    if old & PTE.special == 0 {
                        let f = PTE.frame(old)
                        let p = frames.page(f)
                        p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                        let isAnon = p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0
                        // zap_present_folio_ptes(): the dirty bit moves to a page-cache folio
                        // only; an anonymous folio's PG_dirty stays as it was (probed: a fork
                        // child's munmap does not stop the parent's MADV_FREE in a new child).
                        if old & PTE.dirty != 0 && !isAnon { p.pointee.flags.bitwiseOr(PageMeta.Flag.dirty, ordering: .relaxed) }
                        if isAnon { anon += 1 } else if shmemVMA { shmem += 1 } else { file += 1 }
                        if isAnon && lockedVMA && p.pointee.mlockCount.wrappingSubtract(1, ordering: .relaxed).newValue == 0 {
                            frames.lru.mlockChanged(f)
                        }
                        if p.pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                            freed.append(f)
                        }
                    }
                }
                a &+= Linux.pageSize
            }
            if wholeHuge {
                // zap_huge_pmd() frees the table it had deposited: none is left in Linux.
                table.pmdMapping.pointee.store(PMDMapping.none, ordering: .relaxed)
                table.absentInLinux.pointee.store(1, ordering: .relaxed)
            } else if reclaim && e &- s == Linux.pmdSize && table.isEmpty {
                table.absentInLinux.pointee.store(1, ordering: .relaxed)
            } else if cleared != before {
                table.absentInLinux.pointee.store(0, ordering: .relaxed)
            }
            table.ptl.pointee.unlock()
        }
        if anon != 0 { stats.slots.add(MMStat.rssAnon.rawValue, UInt64(bitPattern: Int64(-anon))) }
        if file != 0 { stats.slots.add(MMStat.rssFile.rawValue, UInt64(bitPattern: Int64(-file))) }
        if shmem != 0 { stats.slots.add(MMStat.rssShmem.rawValue, UInt64(bitPattern: Int64(-shmem))) }
        // free_pages_and_swap_cache(): lru_add_drain() first, so that pages this thread
        // faulted lately are not held by its LRU batch once their mappings are gone.
        if cleared > 0 { frames.lru.drainLocal() }
        frames.freeDeferred(freed)
        if !swapFreed.isEmpty, let swap = system.swap { for slot in swapFreed { swap.free(slot) } }
        return cleared
    }

    /// `free_pgtables()`: frees page-table pages that map nothing any more — those entirely
    /// inside `[floor, ceiling)` (the space between the neighbouring VMAs; `ceiling == 0`
    /// means the top), limited to `[start, end)`. Freed after a grace period.
    func freePageTables(floor: UInt64, ceiling: UInt64, start: UInt64, end: UInt64,
                        level: Int, table: PageTablePage, freeAll: Bool = false) {
        var retired: [UnsafeMutableRawPointer] = []
        freeTables(floor: floor, ceiling: ceiling == 0 ? UInt64.max : ceiling - 1,
                   start: start, end: end, level: level, table: table, base: 0, retired: &retired)
        // Most unmaps free no table: no call, so no retain of the shared slab.
        if !retired.isEmpty { tableSlab.retire(retired) }
    }

    private func freeTables(floor: UInt64, ceiling: UInt64, start: UInt64, end: UInt64, level: Int,
                            table: PageTablePage, base: UInt64, retired: inout [UnsafeMutableRawPointer]) {
        let span = ptSpan(level: level)
        // Only the entries that [start, end) covers (free_p?d_range's p?d_addr_end steps): a
        // scan of all 512 at every level cost a 1 MiB munmap some 6,700 instructions.
        let from = max(start, base)
        guard end > from else { return }
        let shift = UInt64(span.trailingZeroBitCount)
        let first = (from &- base) >> shift
        guard first < UInt64(PageTablePage.entries) else { return }
        let last = min(UInt64(PageTablePage.entries - 1), (end &- 1 &- base) >> shift)
        for i in Int(first)...Int(last) {
            let lo = base &+ UInt64(i) &* span
            let hi = lo &+ span &- 1
            let slot = table.entry(i)
            let e = slot.pointee.load(ordering: .acquiring)
            guard e & PTE.present != 0 else { continue }
            let child = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
            if level > 2 {
                freeTables(floor: floor, ceiling: ceiling, start: start, end: end, level: level - 1,
                           table: child, base: lo, retired: &retired)
            }
            // The child table covers [lo, hi]; free it only if no VMA can need it.
            if lo >= floor && hi <= ceiling && child.isEmpty {
                slot.pointee.store(0, ordering: .releasing)
                retired.append(child.base)
            }
        }
    }


    /// `change_protection()`: write-protects or (for shared writable mappings) keeps PTEs in
    /// `[start, end)` consistent with `flags`. Raising permissions leaves PTEs to fault.
    func changeProtection(_ start: UInt64, _ end: UInt64, flags: VMFlags) {
        let canWrite = flags.contains(.write)
        let exec = flags.contains(.exec)
        let accessible = !flags.isDisjoint(with: [.read, .write, .exec])
        var reduced = false
        // change_pmd_range(): huge PMDs the range covers whole change whole (change_huge_pmd).
        splitHugePMDs(start, end)
        forEachPresentPTE(start, end) { slot, _, old in
            var new = old
            if !canWrite { new &= ~PTE.writable }
            if exec { new &= ~PTE.noExec } else { new |= PTE.noExec }
            new = new & ~PTE.pkeyExecOnly | PTE.pkeyBits(flags)
            // PROT_NONE: keep the frame but make the entry inaccessible (`pte_protnone`).
            if !accessible { new &= ~PTE.user } else { new |= PTE.user }
            if new != old {
                slot.pointee.store(new, ordering: .releasing)
                if old & ~new & (PTE.writable | PTE.user) != 0 || new & ~old & (PTE.noExec | PTE.pkeyExecOnly) != 0 { reduced = true }
            }
        }
        if reduced { flushTLBRange() }
    }

    /// `flush_tlb_range()` after permissions were taken away: returns once no access that may
    /// have read the old PTEs is still in flight, so no store lands through a PTE that is no
    /// longer writable once the call returns (Linux's guarantee, bought with IPIs there). Each
    /// access through a PTE runs inside a read section of `tlbRCU` (`withByte`), so a grace
    /// period of that domain is the shootdown's acknowledgement. It waits for accesses only,
    /// never for a fault in progress (an IPI is taken mid-fault), but, like a broadcast IPI,
    /// for every thread's, not only this mm's.
    func flushTLBRange() {
        count(.tlbFlushes)
        system.tlbRCU.synchronize()
    }

    /// `copy_page_range()` for fork: copies present PTEs of `[start, end)` into `child`,
    /// write-protecting private anonymous pages in both (copy on write). The parent's PTL is
    /// held per table; the child is not yet visible to anyone.
    func copyPageRange(to child: AddressSpace, _ start: UInt64, _ end: UInt64, shared: Bool) {
        var anon = 0, file = 0
        var protected = false
        forEachPTETable(start, end) { table, s, e in
            table.ptl.pointee.lock()
            // copy_pte_range() allocates the child's table wherever the parent has one, even
            // when no entry in the range is copied.
            if !table.isAbsentInLinux {
                PageTablePage(entry: child.allocPTE(s)).absentInLinux.pointee.store(0, ordering: .relaxed)
            }
            var a = s
            while a < e {
                let slot = table.entry(ptIndex(a, level: 1))
                var old = slot.pointee.load(ordering: .relaxed)
                if old & PTE.present != 0 {
                    if !shared && old & PTE.writable != 0 {
                        old &= ~PTE.writable
                        slot.pointee.store(old, ordering: .releasing)
                        protected = true
                    }
                    if old & PTE.special == 0 {
                        let f = PTE.frame(old)
                        let p = frames.page(f)
                        p.pointee.mapcount.wrappingAdd(1, ordering: .relaxed)
                        p.pointee.refcount.wrappingAdd(1, ordering: .relaxed)
                        if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 { anon += 1 } else { file += 1 }
                    }
                    child.allocPTE(a).pointee.store(old, ordering: .releasing)
                } else if PTE.isGuard(old) {
                    // copy_nonpresent_pte(): guard markers go to the child.
                    child.allocPTE(a).pointee.store(old, ordering: .releasing)
                } else if PTE.isSwap(old) {
                    // copy_nonpresent_pte(): the child's entry holds the slot too.
                    system.swap!.duplicate(PTE.swapSlot(old))
                    child.allocPTE(a).pointee.store(old, ordering: .releasing)
                }
                a &+= Linux.pageSize
            }
            // copy_huge_pmd(): the child gets the huge PMD (write-protected in both, as above).
            let huge = table.pmdMapping.pointee.load(ordering: .relaxed)
            if huge != PMDMapping.none && e &- s == Linux.pmdSize {
                PageTablePage(entry: child.allocPTE(s)).pmdMapping.pointee.store(huge, ordering: .relaxed)
            }
            table.ptl.pointee.unlock()
        }
        if anon != 0 { child.stats.slots.add(MMStat.rssAnon.rawValue, UInt64(anon)) }
        if file != 0 { child.stats.slots.add(MMStat.rssFile.rawValue, UInt64(file)) }
        // A parent store in flight through a PTE just write-protected would land in the frame
        // the child now shares (Lespinasse's fork race, one level down): flush first.
        if protected { flushTLBRange() }
    }

    /// Moves the PTEs of `[old, old + len)` to `[new, new + len)` (`move_page_tables`). Only
    /// tables that exist are visited, each under its PTE lock once; where both sides are
    /// PMD-aligned over a whole 2 MiB and the destination has no table, the PTE table itself
    /// moves (`move_pgt_entry`: one PMD entry, no PTE touched). A lockless fault that walked
    /// to a moved table finds it unlinked when it re-checks under the lock
    /// (`tableStillLinked`), as after a free.
    func movePageTables(from old: UInt64, to new: UInt64, length: UInt64) {
        var work = PageTableMoveWork()
        let pmdSpan = ptSpan(level: 2)
        var moved: [(address: UInt64, pte: UInt64)] = []
        forEachPTETable(old, old &+ length) { table, s, e in
            let d = new &+ (s &- old)
            if e &- s == pmdSpan && s & (pmdSpan &- 1) == 0 && d & (pmdSpan &- 1) == 0 && moveTable(table, from: s, to: d) {
                work.tablesMoved += 1
                return
            }
            // get_old_pmd(): where Linux has a source table, it gives the extent a destination
            // table (pte_alloc() before move_ptes()), even when there is nothing to move.
            let linuxHasSource = !table.isAbsentInLinux
            moved.removeAll(keepingCapacity: true)
            table.ptl.pointee.lock()
            // move_huge_pmd() where both sides are aligned over a whole 2 MiB and the destination
            // has no table in Linux; otherwise the huge PMD is split and its PTEs move.
            var huge = table.pmdMapping.pointee.load(ordering: .relaxed)
            if huge != PMDMapping.none {
                let whole = e &- s == pmdSpan && s & (pmdSpan &- 1) == 0 && d & (pmdSpan &- 1) == 0
                if whole, let dp = walkPTE(d), !PageTablePage(entry: dp).isAbsentInLinux {
                    splitHugePMDLocked(table)
                    huge = PMDMapping.none
                } else if whole {
                    table.pmdMapping.pointee.store(PMDMapping.none, ordering: .relaxed)
                } else {
                    splitHugePMDLocked(table)
                    huge = PMDMapping.none
                }
            }
            var a = s
            while a < e {
                work.entriesVisited += 1
                let x = table.entry(ptIndex(a, level: 1)).pointee.exchange(0, ordering: .acquiringAndReleasing)
                if x != 0 { moved.append((d &+ (a &- s), x)) }   // pages and guard markers
                a &+= Linux.pageSize
            }
            // Linux keeps the emptied source table, unless what moved was a huge PMD.
            if huge != PMDMapping.none {
                table.absentInLinux.pointee.store(1, ordering: .relaxed)
            } else if !moved.isEmpty {
                table.absentInLinux.pointee.store(0, ordering: .relaxed)
            }
            table.ptl.pointee.unlock()
            // Install grouped by destination table (a source table can straddle two).
            var i = 0
            while i < moved.count {
                let dt = PageTablePage(entry: allocPTE(moved[i].address))
                let dtBase = moved[i].address & ~(pmdSpan &- 1)
                dt.ptl.pointee.lock()
                while i < moved.count && moved[i].address & ~(pmdSpan &- 1) == dtBase {
                    dt.entry(ptIndex(moved[i].address, level: 1)).pointee.store(moved[i].pte, ordering: .releasing)
                    work.entriesMoved += 1
                    i += 1
                }
                if huge != PMDMapping.none { dt.pmdMapping.pointee.store(huge, ordering: .relaxed) }
                dt.ptl.pointee.unlock()
            }
            if linuxHasSource {
                var x = d
                while x < d &+ (e &- s) {
                    PageTablePage(entry: allocPTE(x)).absentInLinux.pointee.store(0, ordering: .relaxed)
                    x = (x & ~(pmdSpan &- 1)) &+ pmdSpan
                }
            }
        }
        _pageTableMoveWork = work
    }

    /// `move_normal_pmd()`: relinks the PTE table `table` (mapping `[from, from + 2 MiB)`) at
    /// `to`, under its lock so no fault is mid-update in it. False when the destination
    /// already has a table (the caller moves entries instead, as Linux does).
    private func moveTable(_ table: PageTablePage, from: UInt64, to: UInt64) -> Bool {
        var src = pgd
        for level in stride(from: 4, to: 2, by: -1) {
            let e = src.entry(ptIndex(from, level: level)).pointee.load(ordering: .acquiring)
            src = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
        }
        var dst = pgd
        for level in stride(from: 4, to: 2, by: -1) {
            let slot = dst.entry(ptIndex(to, level: level))
            var e = slot.pointee.load(ordering: .acquiring)
            if e & PTE.present == 0 { e = installTable(slot) }
            dst = PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!)
        }
        let srcSlot = src.entry(ptIndex(from, level: 2))
        let dstSlot = dst.entry(ptIndex(to, level: 2))
        table.ptl.pointee.lock()
        defer { table.ptl.pointee.unlock() }
        let entry = srcSlot.pointee.load(ordering: .acquiring)
        guard dstSlot.pointee.compareExchange(expected: 0, desired: entry, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        srcSlot.pointee.store(0, ordering: .releasing)
        return true
    }

    /// Present PTEs in `[start, end)` (for tests and invariants).
    public func presentPages(_ start: UInt64, _ end: UInt64) -> Int {
        var n = 0
        rcuRead.readLock()
        forEachPTETable(start, end) { table, s, e in
            var a = s
            while a < e {
                if table.entry(ptIndex(a, level: 1)).pointee.load(ordering: .acquiring) & PTE.present != 0 { n += 1 }
                a &+= Linux.pageSize
            }
        }
        rcuRead.readUnlock()
        return n
    }

    /// Whether `kind` at `address` would fault: the MMU's check of the PTE as it stands
    /// (`pte_access_permitted()`), no fault taken. For a recorded fault stream's check.
    public func accessFaults(_ address: UInt64, _ kind: AccessKind) -> Bool {
        !Self.pteAllows(pteValue(address), kind)
    }

    /// The PTE of `address`, 0 when none (for tests and invariant checks).
    public func pteValue(_ address: UInt64) -> UInt64 {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        return walkPTE(address)?.pointee.load(ordering: .acquiring) ?? 0
    }
}

extension AddressSpace {
    /// What maps `address` now, for a report that a word read back wrong: the PTE, its
    /// frame's flags, counts and owner, and for a file or shmem VMA the frame its cache holds
    /// at that index (racy: threads may be running).
    public func describePage(_ address: UInt64) -> String {
        let page = address & Linux.pageMask
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        // One read: the page is live in a racing run, and two reads could describe two PTEs.
        let pte = pteValue(page)
        var out = "PTE " + hex8(pte)
        rcuRead.readLock()
        if let ptep = walkPTE(page) { out += " (table mode \(PageTablePage(entry: ptep).pmdMapping.pointee.load(ordering: .relaxed)))" }
        rcuRead.readUnlock()
        if pte & PTE.present != 0 && pte & PTE.special == 0 {
            let f = PTE.frame(pte)
            let p = frames.page(f)
            out += "; frame \(f): flags " + hex8(UInt64(p.pointee.flags.load(ordering: .relaxed)))
                + " refs \(p.pointee.refcount.load(ordering: .relaxed)) maps \(p.pointee.mapcount.load(ordering: .relaxed))"
                + " index \(p.pointee.index.load(ordering: .relaxed))"
        }
        if let v = tree.lookup(page) {
            out += "; VMA " + hex8(v.vmStart) + "-" + hex8(v.vmEnd)
            if let file = v.vmFile {
                let index = v.vmPgoff &+ ((page &- v.vmStart) >> Linux.pageShift)
                if let c = file.cachedPage(index) {
                    out += "; \(file.isShmem ? "shmem" : "file") cache index \(index): frame \(c), word 0 "
                        + hex8(frames.pointer(c).load(as: UInt64.self))
                } else {
                    out += "; \(file.isShmem ? "shmem" : "file") cache index \(index): empty"
                }
            }
        } else {
            out += "; no VMA"
        }
        return out
    }
}
