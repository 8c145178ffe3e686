import CFaultline
import FaultlineSync
import Synchronization

/// `/sys/kernel/mm/transparent_hugepage/enabled`.
public enum THPMode: String, Sendable, CaseIterable {
    /// Every eligible anonymous VMA gets huge pages at fault time.
    case always
    /// Only VMAs with MADV_HUGEPAGE (`VM_HUGEPAGE`).
    case madvise
    /// None at fault time (MADV_COLLAPSE still collapses).
    case never
}

/// `/sys/kernel/mm/transparent_hugepage/defrag` as far as the model goes: whether a THP
/// fault that finds no whole free block compacts memory for one (`defer` and
/// `defer+madvise` wake kcompactd, which the model does not have: they are `never` here).
public enum THPDefrag: String, Sendable, CaseIterable {
    /// Every THP fault compacts.
    case always
    /// Faults in VM_HUGEPAGE VMAs compact (Linux's default).
    case madvise
    /// No fault compacts (khugepaged and MADV_COLLAPSE still do).
    case never
}

// Anonymous transparent huge pages mapped by one PMD (`mm/huge_memory.c`). The model keeps the
// 512 PTEs under a PMD-mapped THP, because its MMU and every walker read PTEs; the table's
// header says that Linux has one huge PMD there instead (`PageTablePage.pmdMapping`). The
// table stands for the page table Linux deposits with every huge PMD
// (`pgtable_trans_huge_deposit`), which `VmPTE` counts too, and which becomes the PTE table
// when the PMD is split. Everything that would make the 512 entries differ (a partial zap,
// mprotect, mremap or madvise, a VMA boundary inside the 2 MiB, a copy on write of a shared
// THP, reclaim unmapping one page) splits the PMD first (`__split_huge_pmd`), after which the
// pages are mapped one by one. Linux keeps such a folio large until its deferred split; the
// model's frames are separate pages from then on (its pages were always separate for the LRU:
// one LRU entry per page, not per folio).

extension AddressSpace {
    /// `thp_vma_allowable_order(vma, TVA_PAGEFAULT, PMD_ORDER)` and
    /// `thp_vma_suitable_order()`: a huge page may be faulted at `page` in this VMA.
    @inlinable @inline(__always)
    func thpFaultAllowed(_ s: VMASnapshot, _ page: UInt64) -> Bool {
        switch config.transparentHugepage {
        case .never: return false
        case .madvise: if !s.flags.contains(.hugePage) { return false }
        case .always: break
        }
        return thpSuitable(s, page)
    }

    /// A zeroed anonymous THP (`vma_alloc_folio` of order 9): a whole free block, or, if
    /// `compact`, one compaction makes (`__alloc_pages_direct_compact`); nil if neither.
    func allocateTHP(compact: Bool) -> FrameNumber? {
        let flags = PageMeta.Flag.anon | 9 << PageMeta.Flag.orderShift
        if let head = frames.allocateHuge(zeroed: true, flags: flags) { return head }
        return compact ? system.compactForHugePage(zeroed: true, flags: flags) : nil
    }

    /// `vma_thp_gfp_mask()`: whether a THP fault in this VMA may compact (`defrag`).
    func faultCompacts(_ s: VMASnapshot) -> Bool {
        switch config.thpDefrag {
        case .always: true
        case .madvise: s.flags.contains(.hugePage)
        case .never: false
        }
    }

    /// The VMA part of the check: anonymous, private, not VM_NOHUGEPAGE or VM_SPECIAL, the
    /// aligned 2 MiB around `page` inside it (no `vm_pgoff` check for anonymous VMAs).
    @usableFromInline
    func thpSuitable(_ s: VMASnapshot, _ page: UInt64) -> Bool {
        guard s.fileBits == 0, !s.flags.contains(.shared), !s.flags.contains(.noHugePage),
              s.flags.isDisjoint(with: [.io, .mixedMap, .dontExpand, .hugeTLB]) else { return false }
        let haddr = page & ~(Linux.pmdSize - 1)
        return haddr >= s.start && haddr &+ Linux.pmdSize <= s.end
    }

    /// `do_huge_pmd_anonymous_page()`: a fault on an eligible VMA where Linux has no page table
    /// (`pmd_none`) maps a whole zeroed THP, or the huge zero page for a read fault
    /// (`use_zero_page`). nil: fall back to a small page (a PTE table is there in Linux, or no
    /// block of 512 frames was free — `thp_fault_fallback`).
    @usableFromInline @inline(never)
    func hugeAnonFault<V: FaultValidator>(_ s: VMASnapshot, _ page: UInt64, _ ptep: UnsafeMutablePointer<Atomic<UInt64>>,
                                          _ kind: AccessKind, _ v: V) -> FaultOutcome? {
        khugepagedEnter()
        let table = PageTablePage(entry: ptep)
        guard table.isAbsentInLinux else { return nil }
        let anonVMA = ensureAnonVMA(s, v)
        guard anonVMA != 0 else { return .abort(.noAnonVMA) }
        let first = table.entry(0)
        let exec = s.flags.contains(.exec)
        let pkey = PTE.pkeyBits(s.flags)
        if kind != .write && config.thpUseZeroPage {
            let e = PTE.make(FramePool.zeroFrame, writable: false, exec: exec, pkey: pkey) | PTE.special
            if hasFaultHook { config.faultHook!(.beforeInstall, page) }
            table.ptl.pointee.lock()
            guard v.validate(), tableStillLinked(page, ptep) else {
                table.ptl.pointee.unlock()
                return InstallResult.invalid.outcome
            }
            // pmd_none() again under the lock: another fault got here first.
            guard table.isEmpty else {
                table.ptl.pointee.unlock()
                return .done
            }
            for k in 0..<PageTablePage.entries { first[k].store(e, ordering: .releasing) }
            table.pmdMapping.pointee.store(PMDMapping.hugeZero, ordering: .relaxed)
            table.absentInLinux.pointee.store(0, ordering: .relaxed)
            table.ptl.pointee.unlock()
            count(.faults)
            count(.thpZeroPageFaults)
            return .done
        }
        guard let head = allocateTHP(compact: faultCompacts(s)) else {
            count(.thpFaultFallback)
            if frames.takeChargeFailure() { count(.thpFaultFallbackCharge) }
            return nil
        }
        let r = installHuge(s, anonVMA, page, table, head: head, expect: nil, exec: exec, v)
        if r == .installed {
            count(.anonFaults)
            count(.thpFaultAlloc)
        }
        return r.outcome
    }

    /// Maps the new THP at `head` over the table's 2 MiB under its lock: over an empty table
    /// (`expect` nil), or over the huge zero page whose PTE at `page` is `expect`
    /// (`do_huge_zero_wp_pmd`). The frames' references go to the PTEs, or are dropped.
    @usableFromInline
    func installHuge<V: FaultValidator>(_ s: VMASnapshot, _ anonVMA: UInt, _ page: UInt64, _ table: PageTablePage, head: FrameNumber,
                                        expect: UInt64?, exec: Bool, _ v: V) -> InstallResult {
        let haddr = page & ~(Linux.pmdSize - 1)
        let n = PageTablePage.entries
        for k in 0..<n {
            setAnonRmap(head + FrameNumber(k), newPageAnonVMA(anonVMA, s, v), s, haddr &+ UInt64(k) << Linux.pageShift)
            frames.lruAdd(head + FrameNumber(k))
        }
        func release() { for k in 0..<n { frames.put(head + FrameNumber(k)) } }
        if hasFaultHook { config.faultHook!(.beforeInstall, page) }
        let ptep = table.entry(ptIndex(page, level: 1))
        table.ptl.pointee.lock()
        guard v.validate(), tableStillLinked(page, ptep) else {
            table.ptl.pointee.unlock()
            release()
            return .invalid
        }
        let still = expect == nil ? table.isEmpty
            : table.pmdMapping.pointee.load(ordering: .relaxed) == PMDMapping.hugeZero && ptep.pointee.load(ordering: .relaxed) == expect
        guard still else {
            table.ptl.pointee.unlock()
            release()
            return .raced
        }
        let first = table.entry(0)
        let pkey = PTE.pkeyBits(s.flags)
        let writable = s.flags.contains(.write)
        for k in 0..<n {
            let f = head + FrameNumber(k)
            first[k].store(PTE.make(f, writable: writable, exec: exec, dirty: true, pkey: pkey), ordering: .releasing)
            frames.page(f).pointee.mapcount.wrappingAdd(1, ordering: .relaxed)
        }
        table.pmdMapping.pointee.store(PMDMapping.thp, ordering: .relaxed)
        table.absentInLinux.pointee.store(0, ordering: .relaxed)
        table.ptl.pointee.unlock()
        count(.faults)
        count(.rssAnon, UInt64(n))
        if s.flags.contains(.locked) { for k in 0..<n { mlockAnon(head + FrameNumber(k), 1) } }
        return .installed
    }

    /// `do_huge_pmd_wp_page()`: a write to a read-only PMD-mapped page. The huge zero page is
    /// replaced by a new THP (`do_huge_zero_wp_pmd`, 6.18); a THP mapped only here (every page
    /// mapped once, no other reference) is made writable whole; anything else splits the PMD
    /// and the write copies one page (`VM_FAULT_FALLBACK`): nil.
    @usableFromInline @inline(never)
    func hugeWPFault<V: FaultValidator>(_ s: VMASnapshot, _ page: UInt64, _ ptep: UnsafeMutablePointer<Atomic<UInt64>>,
                                        _ orig: UInt64, _ v: V) -> FaultOutcome? {
        let table = PageTablePage(entry: ptep)
        let mode = table.pmdMapping.pointee.load(ordering: .relaxed)
        if mode == PMDMapping.hugeZero {
            let anonVMA = ensureAnonVMA(s, v)
            guard anonVMA != 0 else { return .abort(.noAnonVMA) }
            if let head = allocateTHP(compact: faultCompacts(s)) {
                let r = installHuge(s, anonVMA, page, table, head: head, expect: orig, exec: s.flags.contains(.exec), v)
                if r == .installed {
                    count(.cowFaults)
                    count(.thpFaultAlloc)
                }
                return r.outcome
            }
            count(.thpFaultFallback)
            if frames.takeChargeFailure() { count(.thpFaultFallbackCharge) }
            splitHugePMD(table, at: page)
            return nil
        }
        table.ptl.pointee.lock()
        guard v.validate(), tableStillLinked(page, ptep) else {
            table.ptl.pointee.unlock()
            return InstallResult.invalid.outcome
        }
        guard ptep.pointee.load(ordering: .relaxed) == orig, table.pmdMapping.pointee.load(ordering: .relaxed) == PMDMapping.thp else {
            table.ptl.pointee.unlock()
            return .done
        }
        let first = table.entry(0)
        var exclusive = true
        for k in 0..<PageTablePage.entries {
            let f = PTE.frame(first[k].load(ordering: .relaxed))
            let p = frames.page(f)
            if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon == 0
                || p.pointee.mapcount.load(ordering: .relaxed) != 1 || frames.refsBesidesLRUBatch(f) != 1 {
                exclusive = false
                break
            }
        }
        if exclusive {
            for k in 0..<PageTablePage.entries {
                let e = first[k].load(ordering: .relaxed)
                first[k].store(refreshed(e | PTE.writable | PTE.dirty, s.flags), ordering: .releasing)
                moveAnonRmap(PTE.frame(e), s, v)
            }
            table.ptl.pointee.unlock()
            count(.faults)
            count(.reuseFaults)
            return .done
        }
        splitHugePMDLocked(table)
        table.ptl.pointee.unlock()
        return nil
    }

    /// `__split_huge_pmd_locked()`: from now on Linux maps these 2 MiB with the PTE table it
    /// had deposited (the PTL held).
    @usableFromInline @inline(__always)
    func splitHugePMDLocked(_ table: PageTablePage) {
        guard table.pmdMapping.pointee.load(ordering: .relaxed) != PMDMapping.none, !system._brokenTHPNeverSplits else { return }
        table.pmdMapping.pointee.store(PMDMapping.none, ordering: .relaxed)
        count(.thpSplitPMD)
    }

    /// `split_huge_pmd()`: takes the table's lock and splits it if it is PMD-mapped.
    @usableFromInline
    func splitHugePMD(_ table: PageTablePage, at address: UInt64) {
        table.ptl.pointee.lock()
        if tableStillLinked(address, table.entry(ptIndex(address, level: 1))) { splitHugePMDLocked(table) }
        table.ptl.pointee.unlock()
    }

    /// `split_huge_pmd_if_needed()` at each end of `[start, end)` that is not 2 MiB-aligned
    /// (`vma_adjust_trans_huge()` for a VMA boundary; a partial range for zap_pmd_range,
    /// change_pmd_range, madvise_free_huge_pmd, madvise_cold_or_pageout_pte_range): a huge PMD
    /// that the range or a boundary cuts becomes PTEs; ones the range covers whole stay.
    func splitHugePMDs(_ start: UInt64, _ end: UInt64) {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        for a in [start, end] where a & (Linux.pmdSize - 1) != 0 {
            guard let ptep = walkPTE(a) else { continue }
            let table = PageTablePage(entry: ptep)
            if table.isPMDMapped { splitHugePMD(table, at: a) }
        }
    }

    /// Problems with the huge PMDs (quiescent): each maps 512 present entries with the same
    /// bits but accessed and dirty, of one naturally aligned block of anonymous frames in
    /// order (a THP) or of the zero page, inside one VMA allowed to hold it.
    func hugePMDProblems() -> [String] {
        var problems: [String] = []
        rcuRead.readLock()
        forEachPTETable(0, config.taskSize) { table, s, e in
            let mode = table.pmdMapping.pointee.load(ordering: .relaxed)
            guard mode != PMDMapping.none else { return }
            let haddr = s & ~(Linux.pmdSize - 1)
            func report(_ why: String) {
                if problems.count < 20 { problems.append("huge PMD at \(hex8(haddr)): " + why) }
            }
            guard let v = tree.lookup(haddr), v.vmEnd >= haddr &+ Linux.pmdSize else {
                report("not inside one VMA")
                return
            }
            // MADV_NOHUGEPAGE later keeps the PMD: only what a huge PMD needs is checked.
            if v.fileBits != 0 || v.vmFlags.contains(.shared) || v.vmStart > haddr { report("in a VMA that cannot hold a huge page") }
            if let why = hugePMDEntryProblem(table, mode) { report(why) }
        }
        rcuRead.readUnlock()
        return problems
    }

    /// What is wrong with the entries of a PMD-mapped table, if anything (quiescent, or its
    /// lock held): 512 present entries with the same bits but accessed and dirty, mapping one
    /// naturally aligned block of anonymous frames in order, or the zero page.
    func hugePMDEntryProblem(_ table: PageTablePage, _ mode: UInt8) -> String? {
        let first = table.entry(0)
        let e0 = first[0].load(ordering: .relaxed)
        let head = PTE.frame(e0)
        let ignore = PTE.accessed | PTE.dirty | PTE.frameMask
        for k in 0..<PageTablePage.entries {
            let e = first[k].load(ordering: .relaxed)
            guard e & PTE.present != 0 else { return "entry \(k) not present" }
            guard e & ~ignore == e0 & ~ignore else { return "entry \(k) has bits \(hex8(e)), entry 0 \(hex8(e0))" }
            if mode == PMDMapping.hugeZero {
                guard e & PTE.special != 0, PTE.frame(e) == FramePool.zeroFrame else { return "huge zero PMD entry \(k) maps frame \(PTE.frame(e))" }
            } else {
                guard head & FrameNumber(FramePool.hugeFrames - 1) == 0, PTE.frame(e) == head + FrameNumber(k) else {
                    return "entry \(k) maps frame \(PTE.frame(e)), not \(head + FrameNumber(k)) of an aligned block"
                }
                guard frames.page(PTE.frame(e)).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 else {
                    return "entry \(k) maps a page that is not anonymous"
                }
            }
        }
        return nil
    }

    /// The huge PMD mapping `address`, if there is one, checked now under its table's lock
    /// (threads may be running): what is wrong with its entries, or nil. A split or zap of
    /// part of a huge PMD happens under that lock, so a caller that has just cut one sees
    /// either PTEs or a whole huge PMD, never a PMD that kept its mark while its entries changed.
    public func checkHugePMD(at address: UInt64) -> String? {
        let haddr = address & ~(Linux.pmdSize - 1)
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        guard let ptep = walkPTE(haddr) else { return nil }
        let table = PageTablePage(entry: ptep)
        table.ptl.pointee.lock()
        defer { table.ptl.pointee.unlock() }
        guard tableStillLinked(haddr, ptep) else { return nil }
        let mode = table.pmdMapping.pointee.load(ordering: .relaxed)
        guard mode != PMDMapping.none else { return nil }
        return hugePMDEntryProblem(table, mode).map { "huge PMD at \(hex8(haddr)): " + $0 }
    }

    /// THP faults and splits so far (`/proc/vmstat` thp_fault_alloc, thp_fault_fallback,
    /// thp_split_pmd, thp_fault_fallback_charge) and the huge PMDs mapping THPs now.
    public var thpStats: (faultAlloc: Int, faultFallback: Int, splitPMD: Int, zeroPageFaults: Int, faultFallbackCharge: Int) {
        (Int(stats.sum(MMStat.thpFaultAlloc.rawValue)), Int(stats.sum(MMStat.thpFaultFallback.rawValue)),
         Int(stats.sum(MMStat.thpSplitPMD.rawValue)), Int(stats.sum(MMStat.thpZeroPageFaults.rawValue)),
         Int(stats.sum(MMStat.thpFaultFallbackCharge.rawValue)))
    }
}

extension AddressSpace {
    /// Whether khugepaged could collapse something in `[start, end)` now, or after a fault
    /// there (`withPages: false`): an aligned 2 MiB that a VMA khugepaged may scan covers whole
    /// (`hugepage_vma_revalidate`), mapped by a PTE table in Linux (not a huge PMD, not
    /// `pmd_none`) with at least one anonymous page (`withPages`; `max_ptes_none` is 511). The
    /// differential tester keeps its sequences away from such memory: the host's khugepaged
    /// collapses it at a time no sequence controls, and the model has no khugepaged yet.
    public func khugepagedCouldCollapse(_ start: UInt64, _ end: UInt64, withPages: Bool) -> Bool {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        var found = false
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        let lo = start & ~(Linux.pmdSize - 1)
        var haddr = lo
        while haddr < end && !found {
            defer { haddr &+= Linux.pmdSize }
            guard let v = tree.lookup(haddr), v.vmEnd >= haddr &+ Linux.pmdSize,
                  thpFaultAllowed(VMASnapshot(v), haddr), let ptep = walkPTE(haddr) else { continue }
            let table = PageTablePage(entry: ptep)
            guard !table.isPMDMapped, !table.isAbsentInLinux else { continue }
            if !withPages { found = true; break }
            for k in 0..<PageTablePage.entries {
                let e = table.entry(k).pointee.load(ordering: .relaxed)
                if e & PTE.present != 0 && e & PTE.special == 0
                    && frames.page(PTE.frame(e)).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 {
                    found = true
                    break
                }
            }
        }
        return found
    }

    /// Whether `[start, end)` cuts a huge PMD mapping a THP (a call on the range would split
    /// it, leaving a PTE table of pages in the VMA).
    public func cutsHugePMD(_ start: UInt64, _ end: UInt64) -> Bool {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        for a in [start, end] where a & (Linux.pmdSize - 1) != 0 {
            if let ptep = walkPTE(a), PageTablePage(entry: ptep).pmdMapping.pointee.load(ordering: .relaxed) == PMDMapping.thp { return true }
        }
        return false
    }
}

extension AddressSpace {
    /// Whether Linux maps the 2 MiB at `address` with a PTE table (not `pmd_none`, not a huge
    /// PMD).
    public func hasLinuxPTETable(_ address: UInt64) -> Bool {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        guard let ptep = walkPTE(address) else { return false }
        let table = PageTablePage(entry: ptep)
        return !table.isPMDMapped && !table.isAbsentInLinux
    }
}

// MARK: Splitting the folio

extension FramePool {
    /// The first frame of the anonymous THP `f` belongs to (its naturally aligned block), nil
    /// for a small page. A THP's pages carry order 9 until the folio is split; a frame of the
    /// block that was freed and reused is a small page (order 0), so the order-9 pages of a
    /// block are the folio's.
    @inlinable
    public func anonFolioHead(_ f: FrameNumber) -> FrameNumber? {
        let fl = page(f).pointee.flags.load(ordering: .relaxed)
        guard fl & PageMeta.Flag.anon != 0, (fl & PageMeta.Flag.orderMask) >> PageMeta.Flag.orderShift == 9 else { return nil }
        return f & ~FrameNumber(Self.hugeFrames - 1)
    }

    /// The pages still in the anonymous THP that starts at `head` (not those whose last
    /// reference is gone and that wait for a grace period to be freed: they keep their flags
    /// until then).
    func anonFolioPages(_ head: FrameNumber) -> [FrameNumber] {
        (0..<FrameNumber(Self.hugeFrames)).map { head + $0 }.filter {
            anonFolioHead($0) == head && page($0).pointee.refcount.load(ordering: .relaxed) > 0
        }
    }

    /// Whether `f` is a page of an anonymous THP that may be mapped shared (false for a small
    /// page: the caller looks at its own mapcount).
    @usableFromInline
    func anonFolioMaybeSharedAt(_ f: FrameNumber) -> Bool {
        guard let head = anonFolioHead(f) else { return false }
        return anonFolioMaybeShared(head)
    }

    /// `folio_maybe_mapped_shared()` (CONFIG_MM_ID): the folio is mapped by more than one
    /// address space. The model tracks mappings per page, not per mm: a page of the folio
    /// mapped more than once stands for it (two processes mapping disjoint pages of one
    /// folio, which Linux calls shared, read as exclusive here).
    func anonFolioMaybeShared(_ head: FrameNumber) -> Bool {
        anonFolioPages(head).contains { page($0).pointee.mapcount.load(ordering: .relaxed) > 1 }
    }

    /// `!memchr_inv(page, 0, PAGE_SIZE)`.
    func isZeroFilled(_ f: FrameNumber) -> Bool {
        let w = pointer(f).assumingMemoryBound(to: UInt64.self)
        for i in 0..<(Int(Linux.pageSize) / 8) where w[i] != 0 { return false }
        return true
    }
}

extension MMSystem {
    /// `split_folio()` of an anonymous THP (6.18): every huge PMD mapping it is split, its pages
    /// become small folios, and each page that holds only zeros is mapped to the shared zero
    /// page instead and freed (`remap_page(…, RMP_USE_SHARED_ZEROPAGE)`,
    /// `try_to_map_unused_to_zeropage`: not in a VM_LOCKED VMA, not mlocked). Probed: after
    /// MADV_COLD of one page of a THP with two pages written, Rss is 8 kB.
    func splitAnonFolio(_ head: FrameNumber) {
        let pages = frames.anonFolioPages(head)
        guard !pages.isEmpty else { return }
        // Linux checks a page's zeros while its PTEs are migration entries, so no write can
        // land between the check and the remap. The model write-protects the candidates'
        // PTEs first and waits for the writes in flight (as `flushTLBRange` does), then checks
        // and remaps, or gives the PTE back as it was.
        var held: [FrameNumber] = []
        var candidates: [(mm: AddressSpace, vma: VMARef, address: UInt64, f: FrameNumber, old: UInt64)] = []
        for f in pages {
            let p = frames.page(f)
            p.pointee.flags.bitwiseAnd(~PageMeta.Flag.orderMask, ordering: .relaxed)
            let zero = p.pointee.mlockCount.load(ordering: .relaxed) <= 0 && p.pointee.mapcount.load(ordering: .relaxed) > 0
                && frames.isZeroFilled(f)
            // Ours until the end: the last mapping may go.
            guard frames.tryGet(f) else { continue }
            held.append(f)
            rmapWalkAnon(f) { mm, vma, address in
                mm.withPTEMapping(f, at: address) { ptep, old, table in
                    mm.splitHugePMDLocked(table)
                    guard zero, !vma.vmFlags.contains(.locked) else { return }
                    ptep.pointee.store(old & ~PTE.writable, ordering: .releasing)
                    candidates.append((mm, vma, address, f, old))
                }
            }
        }
        guard !candidates.isEmpty else {
            frames.putDeferred(held)
            return
        }
        tlbRCU.synchronize()
        let ad = PTE.accessed | PTE.dirty
        for c in candidates {
            let p = frames.page(c.f)
            let zero = frames.isZeroFilled(c.f)
            c.mm.withPTEMapping(c.f, at: c.address) { ptep, cur, _ in
                // Changed meanwhile (a write fault took the page back): left as it is now.
                guard cur & ~ad == (c.old & ~PTE.writable) & ~ad else { return }
                guard zero else {
                    ptep.pointee.store(cur | (c.old & PTE.writable), ordering: .releasing)
                    return
                }
                // pfn_pte(zero_pfn, vma->vm_page_prot): read-only, as the VMA allows otherwise.
                let flags = c.vma.vmFlags
                var e = PTE.make(FramePool.zeroFrame, writable: false, exec: flags.contains(.exec), pkey: PTE.pkeyBits(flags)) | PTE.special
                if flags.isDisjoint(with: [.read, .write, .exec]) { e &= ~PTE.user }
                ptep.pointee.store(e, ordering: .releasing)
                p.pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                p.pointee.refcount.wrappingSubtract(1, ordering: .relaxed)
                c.mm.count(.rssAnon, UInt64(bitPattern: -1))
                c.mm.count(.thpZeroRemapped)
            }
        }
        // No access through the remapped pages' old PTEs after this.
        tlbRCU.synchronize()
        frames.putDeferred(held)
    }
}

extension AddressSpace {
    /// Before MADV_FREE, MADV_COLD or MADV_PAGEOUT of `[start, end)`: an anonymous THP that
    /// the range covers only in part is split (`split_folio` in madvise_free_pte_range /
    /// madvise_cold_or_pageout_pte_range, and the PMD paths) when it is mapped once; one
    /// mapped more than once is left alone, PMD and all — its part of the range is returned,
    /// for the caller to skip. Probed on 6.18 (see `THPTests`).
    func prepareLargeFoliosForMadvise(_ start: UInt64, _ end: UInt64) -> [Range<UInt64>] {
        var skip: [Range<UInt64>] = []
        frames.lru.drainLocal()
        for edge in [start, end &- Linux.pageSize] {
            rcuRead.readLock()
            let pte = walkPTE(edge)?.pointee.load(ordering: .acquiring) ?? 0
            rcuRead.readUnlock()
            guard pte & PTE.present != 0, pte & PTE.special == 0, let head = frames.anonFolioHead(PTE.frame(pte)) else { continue }
            let fs = edge &- UInt64(PTE.frame(pte) &- head) << Linux.pageShift
            let fe = fs &+ Linux.pmdSize
            if fs >= start && fe <= end { continue }
            if frames.anonFolioMaybeShared(head) {
                skip.append(max(fs, start)..<min(fe, end))
                continue
            }
            system.splitAnonFolio(head)
        }
        return skip
    }
}
