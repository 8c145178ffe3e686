import Glibc
@_spi(Testing) import FaultlineMM
import CFaultline
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// Anonymous transparent huge pages: the expectations below are what the host (Linux 6.18,
/// `enabled` = madvise, `use_zero_page` = 1) printed in smaps for the same sequences, run as a
/// C program on this machine (Rss and AnonHugePages in kB over a 4 MiB aligned region).
@Suite("THP", .serialized)
struct THPTests {
    static let base: UInt64 = 0x7000_0000_0000
    static let mib2 = Linux.pmdSize

    static func space(_ design: Design = .perVMA615, frames: Int = 8192) -> AddressSpace {
        makeSpace(design, frames: frames)
    }

    /// A 4 MiB private anonymous region at `base` (2 MiB-aligned), with MADV_HUGEPAGE if asked.
    static func region(_ mm: AddressSpace, huge: Bool = true) {
        _ = mm.mmap(base, 2 * mib2, [.read, .write], [.private, .anonymous, .fixed]).must()
        if huge { _ = mm.madvise(base, 2 * mib2, .hugePage).must() }
    }

    /// smaps `Rss` and `AnonHugePages` (kB) summed over the VMAs that start in `[base, base + 4 MiB)`.
    static func usage(_ mm: AddressSpace, at start: UInt64 = base) -> (rss: Int, ahp: Int) {
        var rss = 0, ahp = 0, inside = false
        for line in mm.smapsText().split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), !line.hasPrefix(" "), let s = UInt64(line[..<dash], radix: 16) {
                inside = s >= start && s < start + 2 * mib2
                continue
            }
            guard inside else { continue }
            let parts = line.split(separator: " ")
            if parts.first == "Rss:" { rss += Int(parts[1])! }
            if parts.first == "AnonHugePages:" { ahp += Int(parts[1])! }
        }
        return (rss, ahp)
    }

    static func check(_ mm: AddressSpace, _ rss: Int, _ ahp: Int, _ what: Comment, at start: UInt64 = base,
                      with others: [AddressSpace] = []) {
        let u = usage(mm, at: start)
        #expect(u.rss == rss && u.ahp == ahp, "\(what): Rss \(u.rss) AnonHugePages \(u.ahp), host \(rss) \(ahp)")
        let problems = mm.system.checkQuiescent([mm] + others)
        #expect(problems == [])
    }

    /// One write fault maps 512 pages on a MADV_HUGEPAGE region (one fault, not 512); without
    /// the advice it maps one page. A partial munmap splits the PMD.
    @Test(arguments: [Design.global, .perVMA, .perVMA615, .spfVMASeq, .range])
    func writeFaultMapsAHugePage(design: Design) {
        let mm = Self.space(design)
        Self.region(mm, huge: false)
        _ = mm.store(Self.base, 1).must()
        Self.check(mm, 4, 0, "no advice")
        _ = mm.munmap(Self.base, 2 * Self.mib2).must()
        Self.region(mm)
        let faults = mm.stats.sum(MMStat.faults.rawValue)
        _ = mm.store(Self.base + 5, 7).must()
        Self.check(mm, 2048, 2048, "MADV_HUGEPAGE, one write")
        for i in 0..<512 { _ = mm.store(Self.base + UInt64(i) * page + 9, UInt8(i & 0xff)).must() }
        #expect(mm.stats.sum(MMStat.faults.rawValue) - faults == 1, "one fault for the 2 MiB")
        #expect(mm.thpStats.faultAlloc == 1)
        _ = mm.munmap(Self.base + page, page).must()
        Self.check(mm, 2044, 0, "munmap of one page")
        #expect(mm.thpStats.splitPMD == 1)
        #expect(mm.load(Self.base + 5).must() == 7 && mm.load(Self.base + 2 * page + 9).must() == 2)
    }

    /// A read fault maps the huge zero page (no Rss); a write then maps a THP in its place
    /// (do_huge_zero_wp_pmd), whose other pages need no fault.
    @Test(arguments: [Design.global, .perVMA615, .spfVMASeq])
    func readMapsTheHugeZeroPage(design: Design) {
        let mm = Self.space(design)
        Self.region(mm)
        #expect(mm.load(Self.base + 100).must() == 0)
        Self.check(mm, 0, 0, "read")
        #expect(mm.thpStats.zeroPageFaults == 1)
        _ = mm.store(Self.base, 1).must()
        Self.check(mm, 2048, 2048, "read then write")
        let faults = mm.stats.sum(MMStat.faults.rawValue)
        _ = mm.store(Self.base + 2 * page, 1).must()
        #expect(mm.stats.sum(MMStat.faults.rawValue) == faults)
        Self.check(mm, 2048, 2048, "write to a second page")
    }

    /// mprotect, MADV_DONTNEED, MADV_FREE and MADV_COLD: a range that cuts the PMD splits it,
    /// one that covers it keeps it (or, for MADV_DONTNEED, frees it whole).
    @Test func partialAndWholeRanges() {
        var mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.mprotect(Self.base, page, [.read]).must()
        Self.check(mm, 2048, 0, "mprotect of one page")
        #expect(mm.load(Self.base).must() == 1)

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.mprotect(Self.base, Self.mib2, [.read]).must()
        Self.check(mm, 2048, 2048, "mprotect of the 2 MiB")
        #expect(mm.store(Self.base, 2).error != nil, "read-only now")
        _ = mm.mprotect(Self.base, Self.mib2, [.read, .write]).must()
        _ = mm.store(Self.base + page, 3).must()
        Self.check(mm, 2048, 2048, "write after mprotect back: the PMD is reused whole")

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base + page, page, .dontNeed).must()
        Self.check(mm, 2044, 0, "MADV_DONTNEED of one page")

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base, Self.mib2, .dontNeed).must()
        Self.check(mm, 0, 0, "MADV_DONTNEED of the 2 MiB")
        _ = mm.store(Self.base, 1).must()
        Self.check(mm, 2048, 2048, "and a THP again at the next fault (no table left)")

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.mlock(Self.base, Self.mib2).must()
        Self.check(mm, 2048, 2048, "mlock")
        _ = mm.munlock(Self.base, Self.mib2).must()
        _ = mm.madvise(Self.base, page, .free).must()
        Self.check(mm, 4, 0, "MADV_FREE of one page (the folio split, its untouched pages to the zero page)")

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base, Self.mib2, .free).must()
        Self.check(mm, 2048, 2048, "MADV_FREE of the 2 MiB")
        _ = mm.madvise(Self.base, Self.mib2, .cold).must()
        Self.check(mm, 2048, 2048, "MADV_COLD of the 2 MiB")
    }

    /// MADV_NOHUGEPAGE keeps an existing huge PMD; the VMA beside it still faults THPs. A VMA
    /// that does not cover the first aligned 2 MiB gets small pages there.
    @Test func adviceBoundaries() {
        var mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base, Self.mib2, .noHugePage).must()
        Self.check(mm, 2048, 2048, "MADV_NOHUGEPAGE after the fault")
        _ = mm.store(Self.base + Self.mib2, 1).must()
        Self.check(mm, 4096, 4096, "the second 2 MiB, still VM_HUGEPAGE")

        mm = Self.space()
        Self.region(mm, huge: false)
        _ = mm.madvise(Self.base + page, 2 * Self.mib2 - page, .hugePage).must()
        _ = mm.store(Self.base + Self.mib2, 1).must()
        _ = mm.store(Self.base + 2 * page, 1).must()
        Self.check(mm, 2052, 2048, "a VMA that does not cover the first 2 MiB")
    }

    /// Fork shares the huge PMD write-protected; a write by either side while both map it
    /// splits that side's PMD and copies one page; after the child is gone, the parent's
    /// write reuses the THP whole.
    @Test(arguments: [Design.global, .perVMA615, .range])
    func forkAndCopyOnWrite(design: Design) {
        let mm = Self.space(design)
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        var child: AddressSpace? = mm.fork()
        Self.check(child!, 2048, 2048, "child", with: [mm])
        _ = child!.store(Self.base, 2).must()
        Self.check(child!, 2048, 0, "child after its write", with: [mm])
        let parentByte = mm.load(Self.base).must(), childByte = child!.load(Self.base).must()
        #expect(parentByte == 1 && childByte == 2)
        child = nil
        Self.check(mm, 2048, 2048, "parent after the child exited")
        let reuse = mm.stats.sum(MMStat.reuseFaults.rawValue)
        _ = mm.store(Self.base + 3 * page, 3).must()
        #expect(mm.stats.sum(MMStat.reuseFaults.rawValue) == reuse + 1)
        Self.check(mm, 2048, 2048, "parent write, THP reused")
        let child2 = mm.fork()
        _ = mm.store(Self.base, 5).must()
        Self.check(mm, 2048, 0, "parent write while a child maps it", with: [child2])
        let byte = child2.load(Self.base).must()
        #expect(byte == 1)
    }

    /// mremap of an aligned 2 MiB moves the huge PMD whole.
    @Test func mremapMovesThePMD() {
        let mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base + 7, 9).must()
        let to = Self.base + 0x1000_0000
        _ = mm.mremap(Self.base, Self.mib2, Self.mib2, [.mayMove, .fixed], newAddress: to).must()
        Self.check(mm, 2048, 2048, "moved", at: to)
        #expect(mm.load(to + 7).must() == 9)
    }

    /// No whole block of 512 free frames: the fault falls back to a small page and counts it.
    @Test func fallbackWhenNoBlockIsFree() {
        let mm = Self.space(frames: 1024)
        // Take every frame of the pool's only whole block by small faults first.
        _ = mm.mmap(Self.base + 0x1000_0000, 900 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<900 { _ = mm.store(Self.base + 0x1000_0000 + UInt64(i) * page, 1).must() }
        #expect(mm.system.frames.freeHugeBlocks == 0)
        Self.region(mm)
        _ = mm.store(Self.base, 1).must()
        Self.check(mm, 4, 0, "fallback")
        #expect(mm.thpStats.faultFallback == 1)
    }

    /// The broken control: huge PMDs that are never split. An mprotect of one page leaves a
    /// "huge PMD" whose entries differ, a one-page munmap one with a hole; the check catches
    /// both, and smaps shows what Linux would not.
    @Test func theCheckCatchesASkippedSplit() {
        for cut in 0..<2 {
            let mm = Self.space()
            mm.system._brokenTHPNeverSplits = true
            Self.region(mm); _ = mm.store(Self.base, 1).must()
            if cut == 0 { _ = mm.mprotect(Self.base, page, [.read]).must() } else { _ = mm.munmap(Self.base + page, page).must() }
            #expect(mm.system.checkQuiescent([mm]).contains { $0.contains("huge PMD") })
        }
    }
}

extension THPTests {
    /// MADV_FREE, MADV_COLD and MADV_PAGEOUT of part of a THP mapped once split the folio, and
    /// its pages of zeros go to the zero page (Rss 8 kB with two pages written); the same on a
    /// THP already PTE-mapped; nothing at all on a THP a fork child shares; MADV_DONTNEED
    /// splits only the PMD. All as the host printed.
    @Test(arguments: [Advice.free, .cold, .pageOut, .dontNeed])
    func partialAdviceSplitsTheFolio(advice: Advice) {
        let splitsFolio = advice != .dontNeed
        var mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must(); _ = mm.store(Self.base + 3 * page, 1).must()
        _ = mm.madvise(Self.base + page, page, advice).must()
        Self.check(mm, splitsFolio ? 8 : 2044, 0, "\(advice) of one page of a THP")
        #expect(mm.load(Self.base).must() == 1 && mm.load(Self.base + 3 * page).must() == 1 && mm.load(Self.base + 5 * page).must() == 0)

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must(); _ = mm.store(Self.base + 3 * page, 1).must()
        _ = mm.munmap(Self.base + Self.mib2 - page, page).must()
        Self.check(mm, 2044, 0, "after munmap of the last page")
        _ = mm.madvise(Self.base + page, page, advice).must()
        Self.check(mm, splitsFolio ? 8 : 2040, 0, "\(advice) of one page of a PTE-mapped THP")

        mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        let child = mm.fork()
        _ = child.madvise(Self.base + page, page, advice).must()
        Self.check(child, splitsFolio ? 2048 : 2044, splitsFolio ? 2048 : 0, "child's \(advice) of one page of a shared THP", with: [mm])
    }
}

extension THPTests {
    /// Regression (found by difftest seed 1 under ASan): a page of a THP unmapped alone waits
    /// for a grace period to be freed, still marked as the folio's; a split of the folio
    /// before then took and dropped a reference to it, and so freed it a second time (the
    /// free list overflowed). The frames in use must match what is mapped.
    @Test func aSplitDoesNotFreeAPageWaitingForAGracePeriod() {
        let system = MMSystem(frames: 4096, rcu: RCU(), poison: true)
        let mm = AddressSpace(system: system, design: .perVMA615)
        Self.region(mm)
        for i in [0, 3, 7] { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        _ = mm.munmap(Self.base + 3 * page, page).must()          // freed after a grace period
        _ = mm.madvise(Self.base + 7 * page, page, .cold).must()   // splits the folio meanwhile
        system.frames.lru.drainAll()
        system.rcu.barrier()
        let rss = mm.rss.anon
        #expect(rss == 2)
        #expect(system.frames.framesInUse == rss, "frames in use \(system.frames.framesInUse), mapped \(rss)")
        #expect(system.checkQuiescent([mm]) == [])
    }
}

extension THPTests {
    /// The pagemap's exclusive bit, as the host printed it. Difftest seed 7000+528: a fork
    /// child's huge PMD reads as shared on every page while the parent maps the PMD's first
    /// page, even where only the child maps the page (pagemap_pmd_range asks of the first
    /// page). Seed 7000+58: a page of a PTE-mapped THP that a child copied on write reads as
    /// exclusive in the parent (its own mapcount). And the huge zero page reads as a file page.
    @Test func pagemapOfHugePages() {
        let mm = Self.space()
        Self.region(mm)
        _ = mm.load(Self.base).must()
        #expect(mm.pagemap(Self.base, Self.base + 2 * page) == [Pagemap.present | Pagemap.file, Pagemap.present | Pagemap.file])
        _ = mm.store(Self.base, 1).must()
        #expect(mm.pagemap(Self.base, Self.base + page) == [Pagemap.present | Pagemap.exclusive])
        let child = mm.fork()
        _ = mm.munmap(Self.base + page, 2 * page).must()   // the parent's PMD splits
        let shared = Pagemap.present
        #expect(child.pagemap(Self.base, Self.base + 4 * page) == [shared, shared, shared, shared])
        _ = child.store(Self.base + 9 * page, 2).must()     // the child's PMD splits, page 9 copied
        #expect(mm.pagemap(Self.base + 8 * page, Self.base + 11 * page) == [shared, Pagemap.present | Pagemap.exclusive, shared])
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }

    /// A write to a page of a THP that only this process maps now, while the child still maps
    /// other pages of the folio, copies the page (`__wp_can_reuse_large_anon_folio`: the folio
    /// may be mapped shared), where a small page mapped once would be reused.
    @Test func aSharedFolioIsNotReusedPageByPage() {
        let mm = Self.space()
        Self.region(mm); _ = mm.store(Self.base, 1).must()
        let child = mm.fork()
        _ = child.munmap(Self.base + 5 * page, page).must()  // page 5 is now mapped once, by the parent
        let before = mm._anonRmap(at: Self.base + 5 * page)!.frame
        _ = mm.store(Self.base + 5 * page, 7).must()
        #expect(mm._anonRmap(at: Self.base + 5 * page)!.frame != before, "copied, not reused")
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }
}

extension THPTests {
    /// MADV_COLLAPSE, each case as the host answered it (Rss and AnonHugePages in kB).
    @Test(arguments: [Design.global, .perVMA615, .spfVMASeq, .range])
    func collapse(design: Design) {
        func fresh(_ huge: Bool = false) -> AddressSpace {
            let mm = Self.space(design)
            Self.region(mm, huge: huge)
            return mm
        }
        var mm = fresh()
        _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base, Self.mib2, .noHugePage).must()
        #expect(mm.madvise(Self.base, Self.mib2, .collapse).error == .EINVAL)
        Self.check(mm, 4, 0, "VM_NOHUGEPAGE")

        mm = fresh()
        _ = mm.load(Self.base).must()
        #expect(mm.madvise(Self.base, Self.mib2, .collapse).error == .EINVAL)
        Self.check(mm, 0, 0, "zero page only")

        mm = fresh()
        _ = mm.store(Self.base, 7).must(); _ = mm.store(Self.base + 9 * page, 9).must()
        _ = mm.mprotect(Self.base, 2 * Self.mib2, [.read]).must()
        #expect(mm.madvise(Self.base, Self.mib2, .collapse).error == nil)
        Self.check(mm, 2048, 2048, "read-only pages, without MADV_HUGEPAGE")
        #expect(mm.load(Self.base).must() == 7 && mm.load(Self.base + 9 * page).must() == 9 && mm.load(Self.base + 5 * page).must() == 0)
        #expect(mm.thpStats.faultAlloc == 0 && mm.stats.sum(MMStat.thpCollapseAlloc.rawValue) == 1)

        mm = fresh()
        _ = mm.store(Self.base, 1).must()
        let child = mm.fork()
        #expect(child.madvise(Self.base, Self.mib2, .collapse).error == nil)
        Self.check(child, 2048, 2048, "a fork child's write-protected pages", with: [mm])
        _ = child.store(Self.base, 2).must()
        #expect(mm.load(Self.base).must() == 1, "the parent keeps its page")
        Self.check(mm, 4, 0, "the parent", with: [child])

        mm = fresh()
        _ = mm.store(Self.base, 1).must(); _ = mm.store(Self.base + Self.mib2, 1).must()
        #expect(mm.madvise(Self.base, 2 * Self.mib2, .collapse).error == nil)
        Self.check(mm, 4096, 4096, "two blocks")

        mm = fresh()
        _ = mm.store(Self.base, 1).must()
        #expect(mm.madvise(Self.base, 2 * Self.mib2, .collapse).error == .EINVAL)
        Self.check(mm, 2048, 2048, "two blocks, the second without a page table")

        mm = fresh()
        _ = mm.store(Self.base + Self.mib2, 1).must()
        #expect(mm.madvise(Self.base, 2 * Self.mib2, .collapse).error == .EINVAL)
        Self.check(mm, 4, 0, "two blocks, the first without a page table: the call stops there")

        mm = fresh()
        _ = mm.load(Self.base).must(); _ = mm.store(Self.base + Self.mib2, 1).must()
        #expect(mm.madvise(Self.base, 2 * Self.mib2, .collapse).error == nil)
        Self.check(mm, 4096, 4096, "a block of zero-page entries only, then a page: both collapse")

        mm = fresh()
        _ = mm.store(Self.base + page, 1).must(); _ = mm.store(Self.base + Self.mib2, 1).must()
        _ = mm.madvise(Self.base + 2 * page, page, .guardInstall).must()
        #expect(mm.madvise(Self.base, 2 * Self.mib2, .collapse).error == .EINVAL)
        Self.check(mm, 8, 0, "a guard marker in the first block: the call stops there")

        mm = fresh()
        _ = mm.store(Self.base, 1).must()
        #expect(mm.madvise(Self.base + page, Self.mib2 - 2 * page, .collapse).error == .EINVAL, "inside one block")
        #expect(mm.madvise(Self.base + Self.mib2 / 2, Self.mib2, .collapse).error == nil, "no whole block: done")
        Self.check(mm, 4, 0, "nothing collapsed")
        #expect(mm.madvise(Self.base, Self.mib2 + page, .collapse).error == nil)
        Self.check(mm, 2048, 2048, "2 MiB + 4 KiB")
        #expect(mm.madvise(Self.base, Self.mib2, .collapse).error == nil, "already huge")

        mm = fresh()
        _ = mm.store(Self.base, 1).must()
        _ = mm.mlock(Self.base, Self.mib2).must()
        #expect(mm.madvise(Self.base, Self.mib2, .collapse).error == nil)
        Self.check(mm, 2048, 2048, "mlocked")

        mm = fresh()
        _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base + 2 * page, page, .guardInstall).must()
        #expect(mm.madvise(Self.base, Self.mib2, .collapse).error == .EINVAL)
        Self.check(mm, 4, 0, "a guard marker")

        mm = fresh()
        _ = mm.store(Self.base, 1).must()
        _ = mm.munmap(Self.base + 3 * Self.mib2 / 2, Self.mib2 / 2).must()
        #expect(mm.madvise(Self.base, 2 * Self.mib2, .collapse).error == .ENOMEM)
        Self.check(mm, 2048, 2048, "a hole in the range, the block before it collapsed")
    }

    /// A THP fault maps 2 MiB: whatever the design, no writer may change a VMA inside those
    /// 2 MiB while the fault is between its snapshot and its install. Here a read fault (the
    /// huge zero page) and, before it installs, an mprotect(PROT_NONE) of one page elsewhere in
    /// the block from another thread. The range designs used to lock the fault's 4 KiB only:
    /// the mprotect split the VMA and the fault then mapped the huge zero page over the
    /// PROT_NONE page. The fault now locks the PMD's 2 MiB, so the writer waits and splits the
    /// huge PMD it finds; other designs exclude it by mmap_lock or the VMA lock.
    @Test(arguments: Design.selectable)
    func aWriterInsideTheBlockWaitsForAHugeFault(design: Design) {
        let base = Self.base, cut = Self.base + 100 * page
        let writer = WriterInFault(at: .beforeInstall, address: base) { mm in _ = mm.mprotect(cut, page, []) }
        let mm = makeSpace(design) { $0.faultHook = writer.hook }
        writer.attach(mm)
        Self.region(mm)
        // The VMA's anon_vma first (a THP in the other block), so that no fault below needs
        // the short lock to prepare one.
        _ = mm.store(base + Self.mib2, 1).must()
        _ = mm.load(base).must()
        #expect(writer.finish(), "the hook ran")
        #expect(mm.load(cut).error == .segvAccErr, "the PROT_NONE page is not readable")
        #expect(mm.system.checkQuiescent([mm]) == [])
    }
}
