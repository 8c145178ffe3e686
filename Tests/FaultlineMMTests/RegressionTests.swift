import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// Disagreements the differential tester found, each one fixed and kept here. The expected
/// layouts are the host kernel's (6.18).
@Suite("Difftest regressions", .serialized)
struct RegressionTests {
    static let designs = Design.selectable

    /// sys_mmap() checks the offset before ksys_mmap_pgoff() looks up the descriptor, and
    /// huge pages fail as on a host with an empty pool (nr_hugepages 0).
    @Test(arguments: designs)
    func mmapArgumentOrderAndHugePages(design: Design) {
        let mm = makeSpace(design)
        let huge = MapFlags.hugeTLB
        #expect(mm.mmap(0, page, [.read], [.private], offset: 17).error == .EINVAL)
        #expect(mm.mmap(0, page, [.read], [.private]).error == .EBADF)
        let f = mm.system.makeFile(path: "/f", size: 4 * page)
        #expect(mm.mmap(0, page, [.read], [.private, huge], file: f).error == .EINVAL, "not hugetlbfs")
        #expect(mm.mmap(0, 2 << 20, rw, [.private, .anonymous, huge]).error == .ENOMEM)
        #expect(mm.mmap(0, 2 << 20, rw, [.sharedValidate, .anonymous, huge]).error == .ENOMEM, "a file to do_mmap")
        #expect(mm.mmap(0, 1 << 16, [.read], [.private, .anonymous, huge, MapFlags(rawValue: 16 << 26)]).error == .EINVAL, "no 64 KiB pages")
        #expect(mm.mmap(0, 1 << 30, [.read], [.private, .anonymous, huge, MapFlags(rawValue: 30 << 26)]).error == .ENOMEM)
        #expect(mm.mmap(0x6000_0000_1000, page, [.read], [.private, .anonymous, huge, .fixed]).error == .EINVAL, "unaligned")
        #expect(mm.mmap(0, 2 << 20, rw, [.shared, .anonymous, huge], offset: page).error == .EINVAL, "offset")
        #expect(mm.mmap(0, 0, rw, [.private, .anonymous, huge]).error == .EINVAL)
        #expect(mm.mapCount == 0)
    }

    /// Seed 5143 (per-vma-6.15), once faults read ahead: a file written moments ago is cached
    /// and dirty; MADV_PAGEOUT of a page mapped once keeps it cached with PG_reclaim rather
    /// than dropping it, so the next fault beside it finds it and reads nothing around it —
    /// the host maps that one page (a clean file would be dropped, read around, and mapped
    /// 16 pages at a time).
    @Test(arguments: designs)
    func pageoutOfAWrittenFileReadsNothingAround(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/f1", size: 64 * page)
        f.readIntoCache(dirty: true)
        let a = mm.mmap(0, 17 * page, [.read], [.private, .noReserve], file: f, offset: 29 * page).must()
        #expect(mm.load(a + 10 * page + 0xc48).succeeded)
        _ = mm.madvise(a, 17 * page, .pageOut)
        #expect(mm.load(a + 11 * page + 0xf23).succeeded)
        #expect(mm.presentPages(a, a + 17 * page) == 1, "the host maps the faulting page alone")
    }

    /// Seed 18908 (range-tree, once whole-page growth and read-ahead came in): a fork child's
    /// first fault on a shared file mapping — below EOF, in a region with no page table yet —
    /// maps the file's last page around it; only a fault beyond EOF leaves the table out.
    @Test(arguments: designs)
    func aForkChildsFaultBelowEOFMapsTheLastPage(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/f2", size: 3 * page + 1)
        f.readIntoCache(dirty: true)
        let a = mm.mmap(0x6000_0020_0000 + 100 * page, 2 * page, [.write], [.shared, .populate], file: f, offset: 2 * page).must()
        _ = mm.madvise(a, 2 * page, .pageOut)
        #expect(mm.load(a + page + 0x6cb).succeeded)
        let child = mm.fork()
        #expect(child.load(a + 0xd7).succeeded)
        #expect(child.presentPages(a, a + 2 * page) == 2, "the host maps both in the child")
    }

    /// Heuristic overcommit: one call may not charge more than RAM + swap (the host's, as the
    /// differential tester checks); MAP_NORESERVE and read-only private memory are not charged,
    /// and a 64 TiB MAP_NORESERVE shared mapping works (the page cache is sparse).
    @Test(arguments: designs)
    func overcommitHeuristic(design: Design) {
        let mm = makeSpace(design)
        let over = (Linux.hostCommitLimitPages + 1) * page
        #expect(mm.mmap(0, over, rw, [.private, .anonymous]).error == .ENOMEM)
        #expect(mm.mmap(0, over, rw, [.shared, .anonymous]).error == .ENOMEM)
        #expect(mm.mmap(0, over, [.read], [.shared, .anonymous]).error == .ENOMEM, "shmem is charged whatever the protection")
        let ro = mm.mmap(0, over, [.read], [.private, .anonymous]).must()
        #expect(mm.mprotect(ro, over, rw).error == .ENOMEM, "becoming writable charges it")
        #expect(mm.munmap(ro, over).succeeded)
        let nr = mm.mmap(0, over, rw, [.private, .anonymous, .noReserve]).must()
        #expect(mm.munmap(nr, over).succeeded)
        let big: UInt64 = 64 << 40
        let sh = mm.mmap(0, big, rw, [.shared, .anonymous, .noReserve]).must()
        #expect(mm.store(sh + big - page, 7).succeeded)
        #expect(mm.load(sh + big - page) == .success(7))
        #expect(mm.munmap(sh, big).succeeded)
        let small = mm.mmap(0, 4 * page, rw, [.private, .anonymous]).must()
        #expect(mm.mremap(small, 4 * page, over + 4 * page, [.mayMove]).error == .ENOMEM, "growth of accounted memory is charged")
        #expect(mm.mremap(small, 4 * page, over, [.mayMove]).succeeded, "only the growth is charged")
        let start = mm.currentBrk
        #expect(mm.brk(start + over) == start, "brk refused")
    }

    /// Lengths that PAGE_ALIGN wraps to 0 (found by fuzz-strace: `-4096` crashed mprotect);
    /// results are the host's.
    @Test(arguments: designs)
    func lengthsThatWrapWhenAligned(design: Design) {
        let mm = makeSpace(design)
        let p = mm.mmap(0, 2 * page, rw, [.private, .anonymous]).must()
        let w = UInt64(bitPattern: -4096)
        #expect(mm.mprotect(p, w, [.read]).error == .ENOMEM)
        #expect(mm.madvise(p, w, .dontNeed).error == .EINVAL)
        #expect(mm.munmap(p, w).error == .EINVAL)
        #expect(mm.mremap(p, page, w, [.mayMove]).error == .EINVAL)
        #expect(mm.mremap(p, w, page, [.mayMove]).error == .EINVAL)
        #expect(mm.mmap(0, w, [.read], [.private, .anonymous]).error == .ENOMEM)
        #expect(mm.mmap(0, w + 1, [.read], [.private, .anonymous]).error == .ENOMEM)
        #expect(layout(mm) == [line(p, p + 2 * page, "rw-p")])
    }

    /// mprotect starting inside a VMA (Linux starts its walk at the VMA's own start).
    @Test(arguments: designs)
    func mprotectFromInsideAVMA(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0x6000_0000_0000, 4 * page, [.write], [.private, .anonymous, .fixed]).must()
        #expect(mm.mprotect(a + page, 16 * page, []).error == .ENOMEM)
        #expect(layout(mm) == [line(a, a + page, "-w-p"), line(a + page, a + 4 * page, "---p")])
    }

    /// After a merge, mprotect goes on from the end of the merged VMA (`vma_iter_end`).
    @Test(arguments: designs)
    func mprotectContinuesPastAMergedVMA(design: Design) {
        let mm = makeSpace(design)
        let base: UInt64 = 0x6000_0000_0000
        let a = mm.mmap(base, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mprotect(a + 4 * page, 4 * page, [.read]).succeeded)
        // [a+2, a+5) → read: merges with [a+4, a+8) and must not then report a hole.
        #expect(mm.mprotect(a + 2 * page, 3 * page, [.read]).succeeded)
        #expect(layout(mm) == [line(a, a + 2 * page, "rw-p"), line(a + 2 * page, a + 8 * page, "r--p")])
    }

    /// mremap growing in place merges with the next VMA (only brk uses `just_expand`).
    @Test(arguments: designs)
    func mremapGrowInPlaceMergesWithNext(design: Design) {
        let mm = makeSpace(design)
        let base: UInt64 = 0x6000_0000_0000
        _ = mm.mmap(base, 23 * page, [.read], [.private, .anonymous, .fixed]).must()
        _ = mm.mremap(base + 10 * page, page, 3 * page, [.mayMove]).must()
        #expect(mm.mremap(base, 10 * page, 11 * page, []).must() == base)
        #expect(layout(mm).first == line(base, base + 23 * page, "r--p"))
    }

    /// MREMAP_DONTUNMAP leaves the source VMA whole.
    @Test(arguments: designs)
    func mremapDontUnmapKeepsTheSourceWhole(design: Design) {
        let mm = makeSpace(design)
        let base: UInt64 = 0x6000_0000_0000
        let f = mm.system.makeFile(path: "/data/f2", size: 3 * page + 1)
        _ = mm.mmap(base, 8 * page, [.read], [.private, .fixed], file: f, offset: 3 * page).must()
        let to = mm.mremap(base + 2 * page, page, page, [.mayMove, .dontUnmap], newAddress: base + 7 * page).must()
        #expect(layout(mm).contains(line(base, base + 8 * page, "r--p", 3 * page, "/data/f2")))
        #expect(layout(mm).contains(line(to, to + page, "r--p", 5 * page, "/data/f2")))
    }

    /// brk after fork: the heap's anon_vma came from the parent ("uncowed parents"), so the
    /// extension is a VMA of its own.
    @Test(arguments: designs)
    func brkAfterForkDoesNotMergeIntoAnInheritedHeap(design: Design) {
        let mm = makeSpace(design)
        let start = mm.startBrk
        _ = mm.brk(start + 2 * page)
        _ = mm.store(start, 1)
        let child = mm.fork()
        _ = child.brk(start + 4 * page)
        let heap = child.mapsLines().filter { $0.path == "[heap]" }.map { ($0.start, $0.end) }
        #expect(heap.count == 2)
        #expect(heap.first! == (start, start + 2 * page))
        // Without the fork the same growth merges.
        _ = mm.brk(start + 4 * page)
        #expect(mm.mapsLines().filter { $0.path == "[heap]" }.count == 1)
    }

    /// Files whose filesystem maps large folios (ext4) are placed congruent to their offset
    /// modulo 2 MiB, searching with a PMD of padding.
    @Test(arguments: designs)
    func filePlacementFollowsTheOffsetModuloPMD(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/big", size: 64 * page + (6 << 20))
        let a = mm.mmap(0, 6 << 20, rw, [.shared], file: f, offset: 0x25000).must()
        #expect(a % Linux.pmdSize == 0x25000)
        // The highest such address that fits below the mmap base.
        let highest = ((Linux.defaultMmapBase - (6 << 20) - 0x25000) & ~(Linux.pmdSize - 1)) + 0x25000
        #expect(a == highest)
    }

    /// anon_vma_prepare reuses a neighbour's anon_vma when only protection differs, so a
    /// later mprotect can merge them.
    @Test(arguments: designs)
    func neighboursDifferingOnlyInProtectionShareAnAnonVMA(design: Design) {
        let mm = makeSpace(design)
        let base: UInt64 = 0x6000_0000_0000
        let f = mm.system.makeFile(path: "/data/f2", size: 3 * page + 1)
        _ = mm.mmap(base, 4 * page, [.write], [.private, .fixed], file: f, offset: page).must()
        _ = mm.mprotect(base + page, page, [.read, .write, .exec])
        #expect(mm.madvise(base, 7 * page, .populateWrite).error == .EFAULT)
        #expect(mm.mprotect(base, 7 * page, [.read, .exec]).error == .ENOMEM)
        #expect(layout(mm) == [line(base, base + 4 * page, "r-xp", page, "/data/f2")])
    }

    /// MAP_GROWSDOWN mappings get no stack guard gap at placement.
    @Test(arguments: designs)
    func growsDownIsPlacedWithoutAGuardGap(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 4 * page, rw, [.private, .anonymous, .growsDown]).must()
        #expect(a == Linux.defaultMmapBase - 4 * page)
    }

    /// do_mprotect_pkey() refuses both grow directions before it looks at the length
    /// (difftest, seed 793 once seeds were mixed).
    @Test(arguments: designs)
    func mprotectBothGrowDirectionsBeforeLength(design: Design) {
        let mm = makeSpace(design)
        #expect(mm.mprotect(0x6000_0000_0000, 0, [.growsDown, .growsUp]).error == .EINVAL)
        #expect(mm.mprotect(0x6000_0000_0000, 0, [.growsDown]).succeeded)
    }

    /// A write fault on a private file mapping prepares the anon_vma before it finds the page
    /// beyond EOF: MAP_POPULATE of a writable private mapping past EOF leaves an anon_vma, and
    /// after fork the child's VMA (two anon_vma chains) merges with no new neighbour
    /// (difftest, seed 92).
    @Test(arguments: designs)
    func cowFaultBeyondEOFPreparesTheAnonVMA(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/f2", size: 3 * page + 1)
        let base: UInt64 = 0x6000_0000_8000
        _ = mm.mmap(base, 8 * page, rw, [.private, .populate, .fixed], file: f, offset: 4 * page).must()
        let child = mm.fork()
        _ = child.mmap(base - 2 * page, 2 * page, rw, [.private, .fixed], file: f, offset: 2 * page).must()
        #expect(layout(child) == [line(base - 2 * page, base, "rw-p", 2 * page, "/data/f2"),
                                  line(base, base + 8 * page, "rw-p", 4 * page, "/data/f2")])
    }

    /// MADV_POPULATE_WRITE marks the pages it finds mapped writable dirty (follow_page_pte
    /// with FOLL_TOUCH|FOLL_WRITE), so they stop being lazy-free; it stops at the first VMA it
    /// may not write, having populated the ones before (difftest, 10,000 × 40 from seed 10000).
    @Test(arguments: designs)
    func populateWriteDirtiesLazyFreePages(design: Design) {
        let mm = makeSpace(design)
        let a: UInt64 = 0x6000_0000_0000
        _ = mm.mmap(a, 24 * page, rw, [.private, .anonymous, .populate, .fixed]).must()
        _ = mm.mmap(a + 24 * page, page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.madvise(a + 13 * page, 11 * page, .free).succeeded)
        #expect(mm.usage(start: a, end: a + 24 * page).first?.1.lazyFree == 11 * page)
        #expect(mm.madvise(a + 14 * page, 14 * page, .populateWrite).error == .EINVAL)
        #expect(mm.usage(start: a, end: a + 24 * page).first?.1.lazyFree == page)
        // A page still lazy-free is discarded by MADV_PAGEOUT; the dirtied ones stay.
        #expect(mm.store(a + 20 * page, 7).succeeded)
        #expect(mm.madvise(a + 13 * page, 11 * page, .pageOut).succeeded)
        #expect(mm.presentPages(a + 13 * page, a + 24 * page) == 10)
        #expect(mm.load(a + 20 * page) == .success(7))
    }

    /// A MAP_FIXED mapping of huge pages fails (offset not a whole huge page, or an empty
    /// pool) after the old mappings in its range were cleared: the range is left empty
    /// (difftest, 10,000 × 40 from seed 10000).
    @Test(arguments: designs)
    func failedFixedHugeTLBMappingLeavesAGap(design: Design) {
        let mm = makeSpace(design)
        let h: UInt64 = 0x6000_0060_0000
        for offset: UInt64 in [page, 0] {
            _ = mm.mmap(h + page, 3 * page, .read, [.private, .anonymous, .populate, .fixed]).must()
            let e = mm.mmap(h, 16025, [.read, .exec], [.private, .anonymous, .fixed, .hugeTLB, MapFlags(rawValue: 21 << 26)],
                            offset: offset).error
            #expect(e == (offset == 0 ? .ENOMEM : .EINVAL))
            #expect(layout(mm).isEmpty)
        }
        // Not aligned for 1 GiB pages: refused before anything is touched.
        _ = mm.mmap(h + page, 3 * page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.mmap(h, 16025, .read, [.private, .anonymous, .fixed, .hugeTLB, MapFlags(rawValue: 30 << 26)]).error == .EINVAL)
        #expect(layout(mm) == [line(h + page, h + 4 * page, "r--p")])
    }

    /// mremap growing a forked child's VMA in place merges it with a next VMA that has no
    /// anon_vma: the grown range has no VMA of its own, so the chain its anon_vma came with
    /// from the parent does not count (difftest, 10,000 × 40 from seed 10000).
    @Test(arguments: designs)
    func mremapGrowInAForkedChildMergesWithNext(design: Design) {
        let mm = makeSpace(design)
        let a: UInt64 = 0x6000_0000_0000
        _ = mm.mmap(a, 512 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.munmap(a + 196 * page, 8 * page).succeeded)
        #expect(mm.store(a + 103 * page, 0x4e).succeeded)
        let child = mm.fork()
        #expect(child.mremap(a + 195 * page, page, 9 * page, .mayMove).must() == a + 195 * page)
        #expect(layout(child) == [line(a, a + 512 * page, "rw-p")])
        #expect(child.load(a + 103 * page) == .success(0x4e))
    }

    /// mremap gives the destination a page table wherever the source had one, even with
    /// nothing in it to move; fault-around there then maps a file's last cached page, which it
    /// does not where Linux has no table (difftest, 10,000 × 40 from seed 10000).
    @Test(arguments: designs)
    func mremapGivesTheDestinationAPageTable(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/f0", size: 5 * page + 100)
        f.readIntoCache()
        let region: UInt64 = 0x6000_0020_0000    // a 2 MiB-aligned region, nothing mapped yet
        let src: UInt64 = 0x6000_0080_0000
        _ = mm.mmap(src, 36 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(src - page + 4000, 1).error == .segvMapErr)   // no table from this
        let g = mm.mmap(region + 100 * page, 2 * page, .read, [.shared, .fixed], file: f, offset: 5 * page).must()
        // Without a table: the load beyond EOF maps nothing (the first cached page is the last).
        #expect(mm.load(g + page).error == .bus)
        #expect(mm.presentPages(g, g + 2 * page) == 0)
        // A source with a table (a page stored), moved into the region: now there is one.
        _ = mm.mmap(src + 36 * page, page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(src + 36 * page, 1).succeeded)
        #expect(mm.mremap(src, 36 * page, 36 * page, [.mayMove, .fixed], newAddress: region).must() == region)
        #expect(mm.load(g + page).error == .bus)
        #expect(mm.presentPages(g, g + 2 * page) == 1)
    }

    /// Truncation reaches the mappings a fork copied: the child's VMAs join the file's
    /// i_mmap (difftest, 10,000 × 40 from seed 10000, once ftruncate was generated).
    @Test(arguments: designs)
    func truncationUnmapsInForkedChildrenToo(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/f0", size: 5 * page + 100)
        f.readIntoCache()
        let a = mm.mmap(0x6000_0000_0000, 8 * page, [.read, .exec], [.shared, .fixed], file: f, offset: page).must()
        #expect(mm.load(a).succeeded)
        let child = mm.fork()
        #expect(f.mappingCount == 2)
        #expect(child.load(a + 7 * page + 0xd98).error == .bus)
        #expect(child.presentPages(a, a + 8 * page) == 5)
        #expect(child.ftruncate(f, 4014).succeeded)
        #expect(child.presentPages(a, a + 8 * page) == 0)
        #expect(mm.presentPages(a, a + 8 * page) == 0)
        #expect(mm.load(a).error == .bus)
    }

    /// Unmapping a dirty PTE of an anonymous page leaves the folio's PG_dirty alone (only
    /// page-cache folios take the bit), so MADV_FREE still makes the page lazy-free where it
    /// is mapped twice (difftest, 10,000 × 40 from seed 10000, once the sequence moved
    /// between parent and child).
    @Test(arguments: designs)
    func unmappingADirtyAnonymousPTELeavesTheFolioClean(design: Design) {
        let mm = makeSpace(design)
        let a: UInt64 = 0x6000_0000_0000
        _ = mm.mmap(a, 2 * page, [.write], [.private, .anonymous, .fixed]).must()
        #expect(mm.store(a + 0x1fc, 0x87).succeeded)
        let first = mm.fork()
        #expect(first.munmap(a, 2 * page).succeeded)
        let second = mm.fork()
        #expect(second.madvise(a, 2 * page, .free).succeeded)
        #expect(second.usage(start: a, end: a + 2 * page).first?.1.lazyFree == page)
    }

    /// A range design keeps the page tables outside the range it holds when it unmaps; Linux
    /// frees those its own floor and ceiling allow, and fault-around's no-table quirk must
    /// see them as absent (difftest, design range, seed 78).
    @Test(arguments: designs)
    func tablesARangeDesignKeepsAreAbsentInLinux(design: Design) {
        let mm = makeSpace(design)
        let f1 = mm.system.makeFile(path: "/data/f1", size: 64 * page)
        let f2 = mm.system.makeFile(path: "/data/f2", size: 2 * page)
        for f in [f1, f2] { f.readIntoCache() }
        let region: UInt64 = 0x6000_0020_0000
        let a = mm.mmap(region + 0x17_1000, 4 * page, rw, [.shared, .fixed], file: f1, offset: 0x25000).must()
        #expect(mm.load(a + 0x157c).succeeded)
        #expect(mm.munmap(region + 0x13_e000, 4 << 20).succeeded)
        let b = mm.mmap(region + 0x1c_5000, 8 * page, rw, [.private, .fixed], file: f2, offset: page).must()
        #expect(mm.load(b + 7 * page + 0xde3).error == .bus)
        #expect(mm.presentPages(b, b + 8 * page) == 0)
    }
}
