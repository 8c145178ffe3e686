@_spi(Testing) import FaultlineMM
import CFaultline
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// A store that takes its time between reading the PTE and writing (a slow memcpy through
/// the TLB entry): `withByte`'s body runs after the PTE check, so the body's wait widens
/// the window in which permissions can be taken away under it.
func slowStore(_ mm: AddressSpace, _ address: UInt64, _ value: UInt8, afterCheck: () -> Void = {}) -> Bool {
    mm.withByte(address, .write) { p in
        let t = fl_now_ns()
        while fl_now_ns() &- t < 200_000 { fl_cpu_relax() }
        afterCheck()
        p.storeBytes(of: value, as: UInt8.self)
    }.succeeded
}

/// Risks found by reading the core (issue 13): each test failed before its fix.
@Suite("Core risks")
struct CoreRiskTests {
    /// mremap of a large sparse mapping visits only the page tables that exist: it used to
    /// step through every 4 KiB page of the range, taking the PTE lock twice per page (a
    /// 1 TiB move was 2^28 steps, minutes).
    @Test(arguments: Design.selectable)
    func mremapOfASparseMappingVisitsOnlyItsTables(design: Design) {
        let mm = makeSpace(design)
        let size: UInt64 = 1 << 40
        let a = mm.mmap(0, size, rw, [.private, .anonymous, .noReserve]).must()
        let touched: [UInt64] = [0, 5 * page, size / 2 + 3 * page, size - page]
        for (i, o) in touched.enumerated() { #expect(mm.store(a + o, UInt8(i + 1)).succeeded) }
        // Grow by a page where a neighbour leaves no room: the mapping moves.
        #expect(mm.mmap(a + size, page, [], [.private, .anonymous, .fixedNoReplace]).succeeded)
        let b = mm.mremap(a, size, size + page, [.mayMove]).must()
        #expect(b != a)
        let work = mm._pageTableMoveWork
        #expect(work.entriesMoved + 512 * work.tablesMoved >= touched.count)
        #expect(work.entriesVisited <= 3 * 512, "visited \(work.entriesVisited) PTE slots for 3 tables")
        for (i, o) in touched.enumerated() { #expect(mm.load(b + o) == .success(UInt8(i + 1))) }
        #expect(mm.presentPages(a, a + size) == 0)
        #expect(mm.system.checkQuiescent([mm]).isEmpty)
    }

    /// Where source and destination are 2 MiB-aligned over whole tables, the PTE table moves
    /// (`move_pgt_entry`): no PTE is touched, contents and page-table accounting survive.
    @Test(arguments: Design.selectable)
    func alignedMremapMovesWholeTables(design: Design) {
        let mm = makeSpace(design)
        let huge: UInt64 = 2 << 20
        let region = mm.mmap(0, 8 * huge, rw, [.private, .anonymous]).must()
        let src = (region + huge - 1) & ~(huge - 1)
        #expect(mm.munmap(src + 2 * huge, region + 8 * huge - (src + 2 * huge)).succeeded)
        for i in 0..<2 * 512 where i % 7 == 0 { #expect(mm.store(src + UInt64(i) * page, UInt8(i % 251)).succeeded) }
        let dst = (mm.mmap(0, 4 * huge, [], [.private, .anonymous]).must() + huge - 1) & ~(huge - 1)
        let b = mm.mremap(src, 2 * huge, 2 * huge, [.mayMove, .fixed], newAddress: dst).must()
        #expect(b == dst)
        #expect(mm._pageTableMoveWork.tablesMoved == 2)
        #expect(mm._pageTableMoveWork.entriesVisited == 0)
        for i in 0..<2 * 512 {
            let want: UInt8 = i % 7 == 0 ? UInt8(i % 251) : 0
            #expect(mm.load(dst + UInt64(i) * page) == .success(want))
        }
        #expect(mm.presentPages(src, src + 2 * huge) == 0)
        #expect(mm.munmap(dst, 2 * huge).succeeded)
        #expect(mm.system.checkQuiescent([mm]).isEmpty)
    }

    /// When mprotect(PROT_READ) returns, no store may still land through the old writable
    /// PTE (Linux flushes the TLB before returning). A thread stores continuously with slow
    /// stores; once mprotect has returned, none of them may write.
    @Test(arguments: Design.selectable)
    func noStoreLandsAfterMprotectReturns(design: Design) {
        let mm = makeSpace(design)
        // [0] mprotect returned, [1] stores that wrote after it returned, [2] stores done.
        let w = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 3))
        defer { w.value.deallocate() }
        for _ in 0..<20 {
            for i in 0..<3 { (w.value + i).initialize(to: Atomic(0)) }
            let a = mm.mmap(0, page, rw, [.private, .anonymous]).must()
            #expect(mm.store(a, 1).succeeded)
            let storer = Threads.spawn {
                var v: UInt8 = 2
                while slowStore(mm, a, v, afterCheck: {
                    if w.value[0].load(ordering: .acquiring) != 0 { w.value[1].wrappingAdd(1, ordering: .relaxed) }
                }) { v &+= 1 }
                w.value[2].store(1, ordering: .releasing)
            }
            fl_sleep_ns(1_000_000)
            #expect(mm.mprotect(a, page, [.read]).succeeded)
            w.value[0].store(1, ordering: .releasing)
            Threads.join(storer)
            #expect(w.value[1].load(ordering: .relaxed) == 0, "a store landed after mprotect(PROT_READ) returned")
            #expect(mm.munmap(a, page).succeeded)
            if w.value[1].load(ordering: .relaxed) != 0 { break }
        }
        #expect(mm.designCounters.tlbFlushes >= 1)
    }

    /// After fork returns, the child's copy of a private page never changes: a parent store in
    /// flight through the PTE fork write-protected must land before fork returns (or go
    /// through a COW fault into a page of the parent's own).
    @Test(arguments: Design.selectable)
    func childNeverSeesTheParentsWritesAfterFork(design: Design) {
        let mm = makeSpace(design)
        let stop = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        defer { stop.value.deallocate() }
        for _ in 0..<20 {
            stop.value.initialize(to: Atomic(0))
            let a = mm.mmap(0, page, rw, [.private, .anonymous]).must()
            #expect(mm.store(a, 1).succeeded)
            let storer = Threads.spawn {
                var v: UInt8 = 2
                while stop.value.pointee.load(ordering: .acquiring) == 0 && slowStore(mm, a, v) { v = v == 255 ? 2 : v + 1 }
            }
            fl_sleep_ns(1_000_000)
            let child = mm.fork()
            let seen = child.load(a).must()
            fl_sleep_ns(2_000_000)
            stop.value.pointee.store(1, ordering: .releasing)
            Threads.join(storer)
            let later = child.load(a).must()
            #expect(seen == later, "the child's page changed after fork returned: \(seen) then \(later)")
            _ = child.munmap(a, page)
            #expect(mm.munmap(a, page).succeeded)
            if seen != later { break }
        }
    }

    /// Truncation removes a page from the cache while a file fault that found it there is
    /// about to map it (`filemap_get_entry` then `folio_try_get`): the fault must hold its own
    /// reference, or the frame it maps has been freed (and may already belong to someone else).
    @Test(arguments: Design.selectable)
    func truncationDuringAFileFaultFreesNothingMapped(design: Design) {
        let system = MMSystem(frames: 256)
        let file = system.makeFile(path: "/truncated", size: 4 * page)
        let once = Shared(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1))
        once.value.initialize(to: Atomic(0))
        defer { once.value.deallocate() }
        var cfg = AddressSpace.Configuration()
        // The fault's own lookup is under test: fault-around (whose getPage takes its
        // reference the same way) would map the page before it.
        cfg.faultAroundPages = 1
        cfg.faultHook = { stage, _ in
            guard stage == .pageCacheFound, once.value.pointee.exchange(1, ordering: .relaxed) == 0 else { return }
            // ftruncate(0) then back: page 0 leaves the cache, the cache's reference is dropped.
            _ = file.truncate(to: 0)
            _ = file.truncate(to: 4 * page)
        }
        let mm = AddressSpace(system: system, design: design, configuration: cfg)
        let a = mm.mmap(0, 4 * page, .read, .shared, file: file).must()
        #expect(file.readAhead(0))
        _ = mm.load(a)
        #expect(once.value.pointee.load(ordering: .relaxed) == 1, "the hook ran")
        // Let whatever was freed be reused: a frame still mapped must not be handed out again.
        let other = mm.mmap(0, 64 * page, rw, [.private, .anonymous]).must()
        for i in 0..<64 { _ = mm.store(other + UInt64(i) * page, 0xaa) }
        let problems = system.checkQuiescent([mm])
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(mm.munmap(a, 4 * page).succeeded && mm.munmap(other, 64 * page).succeeded)
        #expect(system.checkQuiescent([mm]).isEmpty)
    }
}
