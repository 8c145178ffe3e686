@_spi(Testing) import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// The LRU lists and reclaim under a memory limit: pages join the lists through per-thread
/// batches and leave them when freed; aging through the reverse map's accessed bits decides
/// what reclaim takes; kswapd and direct reclaim keep allocations going past the limit —
/// dropping clean file pages, writing dirty ones back, swapping anonymous ones when there is a
/// device — and the contents survive. `checkQuiescent` checks the lists after each step.
@Suite("Reclaim", .serialized)
struct ReclaimTests {
    static let base: UInt64 = 0x7000_0000_0000

    /// A system of `frames` 4 KiB frames with reclaim on, and optionally a swap device.
    static func system(frames: Int, swapPages: Int = 0) -> MMSystem {
        let s = MMSystem(frames: frames, poison: true)
        if swapPages > 0 { s.swapOn(pages: swapPages) }
        s.enableReclaim()
        return s
    }

    static func contents(pages: Int) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: pages * Int(page))
        for i in 0..<pages { c[i * Int(page) + 100] = UInt8(i % 251); c[i * Int(page) + 4000] = UInt8((i / 251) % 256) }
        return c
    }

    /// New anonymous pages go to the inactive anon list (since Linux 5.9), page-cache pages to
    /// the inactive file list, a lazy-free page to the file list, a locked page to the
    /// unevictable one; freed pages leave; the lists stay consistent.
    @Test func pagesJoinAndLeaveTheLists() {
        let s = MMSystem(frames: 1024, poison: true)
        let mm = AddressSpace(system: s, design: .perVMA615)
        _ = mm.mmap(Self.base, 8 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<8 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        #expect(s._lruList(mm, Self.base) == .inactiveAnon)
        let file = s.makeFile(path: "/f", size: 4 * page, contents: Self.contents(pages: 4))
        let fa = mm.mmap(0, 4 * page, [.read], [.shared], file: file).must()
        #expect(mm.load(fa + 100).must() == 0)
        #expect(s._lruList(mm, fa) == .inactiveFile)
        _ = mm.madvise(Self.base, page, .free).must()
        #expect(s._lruList(mm, Self.base) == .inactiveFile, "lazy-free pages are reclaimed like clean file pages")
        _ = mm.mlock(Self.base + page, page).must()
        #expect(s._lruList(mm, Self.base + page) == .unevictable)
        _ = mm.munlock(Self.base + page, page).must()
        #expect(s._lruList(mm, Self.base + page) == .inactiveAnon)
        #expect(s.checkQuiescent([mm]) == [])
        _ = mm.munmap(Self.base, 8 * page).must()
        _ = mm.munmap(fa, 4 * page).must()
        #expect(s.checkQuiescent([mm]) == [])
        let sizes = s.frames.lru.listSizes
        #expect(sizes[.inactiveAnon] == 0 && sizes[.activeAnon] == 0 && sizes[.unevictable] == 0)
        #expect(sizes[.inactiveFile] == 4, "the file's pages stay cached, unmapped")
    }

    /// Aging: every mapped page is young after its fault, so the first look keeps a file page
    /// (marked PG_referenced); a page not touched again is reclaimed at the second look, one
    /// touched again is activated. MADV_COLD makes pages old at once: reclaim takes them first.
    @Test func referencedPagesStayAndColdOnesGo() {
        let s = Self.system(frames: 1024)
        let mm = AddressSpace(system: s, design: .global)
        let file = s.makeFile(path: "/f", size: 64 * page, contents: Self.contents(pages: 64))
        file.readaheadPages = 0
        let fa = mm.mmap(0, 64 * page, [.read], [.shared], file: file).must()
        for i in 0..<64 { _ = mm.load(fa + UInt64(i) * page).must() }
        #expect(s._shrinkList(.inactiveFile, 64) == 0, "every page was referenced once: kept for a second look")
        for i in 0..<16 { _ = mm.load(fa + UInt64(i) * page).must() }
        let freed = s._shrinkList(.inactiveFile, 64)
        #expect(freed == 48, "the 48 pages not touched again go")
        #expect(mm.presentPages(fa, fa + 16 * page) == 16)
        #expect(mm.presentPages(fa + 16 * page, fa + 64 * page) == 0)
        #expect(s._lruList(mm, fa) == .activeFile)
        #expect(s.vmscan[.pgactivate] >= 16)
        #expect(s.checkQuiescent([mm]) == [])
        // What was dropped reads back from the file.
        for i in 0..<64 { #expect(mm.load(fa + UInt64(i) * page + 100).must() == UInt8(i % 251)) }

        // MADV_COLD: with a swap device, the cold half of an anonymous region goes first.
        let s2 = Self.system(frames: 1024, swapPages: 256)
        let mm2 = AddressSpace(system: s2, design: .perVMA615)
        _ = mm2.mmap(Self.base, 32 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<32 { _ = mm2.store(Self.base + UInt64(i) * page, UInt8(i + 1)).must() }
        _ = mm2.madvise(Self.base, 16 * page, .cold).must()
        #expect(mm2.stats.sum(MMStat.deactivated.rawValue) == 16)
        _ = s2._shrinkList(.inactiveAnon, 32)
        #expect(mm2.pagemap(Self.base, Self.base + 16 * page).allSatisfy { $0 == Pagemap.swapped })
        #expect(mm2.presentPages(Self.base + 16 * page, Self.base + 32 * page) == 16, "the young half was activated")
        #expect(s2._lruList(mm2, Self.base + 16 * page) == .activeAnon)
        #expect(s2.checkQuiescent([mm2]) == [])
        for i in 0..<32 { #expect(mm2.load(Self.base + UInt64(i) * page).must() == UInt8(i + 1)) }
        #expect(s2.checkQuiescent([mm2]) == [])
    }

    /// Locked pages are not reclaimed (they wait on the unevictable list); the others are,
    /// once aging has found them unreferenced; munlock makes the locked ones evictable again.
    @Test func lockedPagesStay() {
        let s = Self.system(frames: 1024, swapPages: 256)
        let mm = AddressSpace(system: s, design: .perVMA615)
        _ = mm.mmap(Self.base, 16 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<16 { _ = mm.store(Self.base + UInt64(i) * page, UInt8(i + 1)).must() }
        _ = mm.mlock(Self.base, 8 * page).must()
        for _ in 0..<3 { _ = s._shrinkNode(64) }
        #expect(mm.presentPages(Self.base, Self.base + 8 * page) == 8)
        #expect(mm.pagemap(Self.base + 8 * page, Self.base + 16 * page).allSatisfy { $0 == Pagemap.swapped })
        #expect(s.frames.lru.listSizes[.unevictable] == 8)
        #expect(s.checkQuiescent([mm]) == [])
        _ = mm.munlock(Self.base, 8 * page).must()
        #expect(s.frames.lru.listSizes[.unevictable] == 0)
        for _ in 0..<3 { _ = s._shrinkNode(64) }
        #expect(mm.pagemap(Self.base, Self.base + 8 * page).allSatisfy { $0 == Pagemap.swapped })
        for i in 0..<16 { #expect(mm.load(Self.base + UInt64(i) * page).must() == UInt8(i + 1)) }
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// A file twice the memory read through a mapping, under every design: kswapd and direct
    /// reclaim drop clean pages (unmapping them first) and every byte reads right; no OOM.
    @Test(arguments: [Design.global, .perVMA, .perVMA615, .spfVMASeq, .range])
    func aFileLargerThanMemoryReadsThrough(design: Design) {
        let s = Self.system(frames: 2048)
        let mm = AddressSpace(system: s, design: design)
        let pages = 4096
        let file = s.makeFile(path: "/big", size: UInt64(pages) * page, contents: Self.contents(pages: pages))
        let fa = mm.mmap(0, UInt64(pages) * page, [.read], [.private], file: file).must()
        for round in 0..<2 {
            for i in 0..<pages {
                let a = fa + UInt64(i) * page
                #expect(mm.load(a + 100).must() == UInt8(i % 251), "round \(round) page \(i)")
            }
        }
        #expect(s.vmscan[.pgstealKswapd] + s.vmscan[.pgstealDirect] >= pages)
        #expect(s.frames.allocFailures.load(ordering: .relaxed) == 0)
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// Writes through a shared mapping of a file larger than memory: kswapd writes dirty pages
    /// back before dropping them (direct reclaim only marks them), and every page reads back
    /// what was written.
    @Test(arguments: [Design.global, .perVMA615])
    func dirtyFilePagesAreWrittenBack(design: Design) {
        let s = Self.system(frames: 2048)
        let mm = AddressSpace(system: s, design: design)
        let pages = 4096
        let file = s.makeFile(path: "/out", size: UInt64(pages) * page)
        let fa = mm.mmap(0, UInt64(pages) * page, [.read, .write], [.shared], file: file).must()
        for i in 0..<pages { _ = mm.store(fa + UInt64(i) * page + 7, UInt8(i % 253)).must() }
        #expect(s.vmscan[.nrWritten] > 0 && file.pagesWrittenBack == s.vmscan[.nrWritten])
        for i in 0..<pages { #expect(mm.load(fa + UInt64(i) * page + 7).must() == UInt8(i % 253), "page \(i)") }
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// Anonymous memory 1.5× the limit with a swap device: reclaim swaps the cold part out and
    /// every page reads back; without a device, anonymous memory cannot be reclaimed and the
    /// fault beyond the limit fails (after file pages, which can, were dropped).
    @Test(arguments: [Design.global, .perVMA, .perVMA615, .spfMMSeq, .rangeTree])
    func anonymousMemoryBeyondTheLimitSwaps(design: Design) {
        let s = Self.system(frames: 2048, swapPages: 4096)
        let mm = AddressSpace(system: s, design: design)
        let pages = 3072
        _ = mm.mmap(Self.base, UInt64(pages) * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<pages { _ = mm.store(Self.base + UInt64(i) * page + 9, UInt8(i % 249)).must() }
        #expect(s.swap!.pagesOut > 0)
        for i in 0..<pages { #expect(mm.load(Self.base + UInt64(i) * page + 9).must() == UInt8(i % 249), "page \(i)") }
        #expect(s.checkQuiescent([mm]) == [])
    }

    @Test func anonymousMemoryWithoutSwapRunsOut() {
        let s = Self.system(frames: 1024)
        let mm = AddressSpace(system: s, design: .perVMA615)
        let file = s.makeFile(path: "/f", size: 256 * page, contents: Self.contents(pages: 256))
        let fa = mm.mmap(0, 256 * page, [.read], [.private], file: file).must()
        for i in 0..<256 { _ = mm.load(fa + UInt64(i) * page).must() }
        _ = mm.mmap(Self.base, 2048 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        var failedAt: Int? = nil
        for i in 0..<2048 {
            if case .failure(let e) = mm.store(Self.base + UInt64(i) * page, 1) {
                #expect(e == .oom)
                failedAt = i
                break
            }
        }
        #expect(failedAt != nil)
        #expect(mm.presentPages(fa, fa + 256 * page) < 256, "the file's clean pages were reclaimed first")
        #expect(s.swap == nil && s.frames.allocFailures.load(ordering: .relaxed) > 0)
        #expect(s.checkQuiescent([mm]) == [])
    }
}

/// The broken control (skipped under the sanitizers, as the others): file reclaim that leaves
/// the PTEs in place frees pages still mapped, and the quiescent check says so.
@Suite("BrokenControlReclaim", .serialized)
struct BrokenControlReclaim {
    @Test func brokenFileReclaimIsCaught() {
        let s = ReclaimTests.system(frames: 1024)
        s._brokenFileReclaimKeepsPTEs = true
        let mm = AddressSpace(system: s, design: .global)
        let file = s.makeFile(path: "/f", size: 32 * page, contents: ReclaimTests.contents(pages: 32))
        file.readaheadPages = 0
        let fa = mm.mmap(0, 32 * page, [.read], [.shared], file: file).must()
        for i in 0..<32 { _ = mm.load(fa + UInt64(i) * page).must() }
        _ = s._shrinkNode(32)
        _ = s._shrinkNode(32)
        #expect(s.checkQuiescent([mm]) != [])
    }
}
