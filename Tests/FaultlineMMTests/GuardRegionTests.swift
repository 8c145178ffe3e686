import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// MADV_GUARD_INSTALL / MADV_GUARD_REMOVE as Linux 6.18 does them on this machine's kernel:
/// every expectation was probed on the host with the same calls first (`faultline difftest`
/// generates both advices and compares pagemap's guard bit after every step).
@Suite("Guard regions", .serialized)
struct GuardRegionTests {
    static let designs = Design.selectable
    static let base: UInt64 = 0x7000_0000_0000

    /// Per page: `P` present, `G` a guard marker, `.` neither.
    static func picture(_ mm: AddressSpace, _ start: UInt64, pages: Int) -> String {
        mm.pagemap(start, start + UInt64(pages) * page).map {
            $0 & Pagemap.present != 0 ? "P" : $0 & Pagemap.guardRegion != 0 ? "G" : "."
        }.joined()
    }

    /// Installing zaps the pages and leaves markers (pagemap: PM_SWAP|PM_GUARD_REGION); an
    /// access is SEGV_MAPERR; DONTNEED, FREE and mprotect keep them; populating stops at the
    /// first with EFAULT; mremap moves them; removing one lets the page fault in again.
    @Test(arguments: designs)
    func markersSurviveZapsAndMoveWithMremap(design: Design) {
        let mm = makeSpace(design)
        let p = mm.mmap(Self.base, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        for i in 0..<8 { #expect(mm.store(p + UInt64(i) * page, UInt8(i + 1)).succeeded) }
        #expect(mm.madvise(p + 2 * page, 2 * page, .guardInstall).succeeded)
        #expect(Self.picture(mm, p, pages: 8) == "PPGGPPPP")
        #expect(mm.pagemap(p + 2 * page, p + 3 * page) == [Pagemap.swapped | Pagemap.guardRegion])
        #expect(layout(mm) == [line(p, p + 8 * page, "rw-p")])
        #expect(mm.load(p + 2 * page).error == .segvMapErr)
        #expect(mm.store(p + 3 * page, 1).error == .segvMapErr)
        #expect(mm.load(p + page) == .success(2))
        #expect(mm.madvise(p, 8 * page, .dontNeed).succeeded)
        #expect(Self.picture(mm, p, pages: 8) == "..GG....")
        #expect(mm.madvise(p, 8 * page, .populateRead).error == .EFAULT)
        #expect(Self.picture(mm, p, pages: 8) == "PPGG....")
        #expect(mm.madvise(p, 8 * page, .populateWrite).error == .EFAULT)
        #expect(mm.madvise(p, 8 * page, .free).succeeded)
        #expect(mm.mprotect(p, 8 * page, .read).succeeded)
        #expect(Self.picture(mm, p, pages: 8) == "PPGG....")
        #expect(mm.mprotect(p, 8 * page, rw).succeeded)
        let q = mm.mremap(p, 8 * page, 8 * page, [.mayMove, .fixed], newAddress: Self.base + 0x10_0000).must()
        #expect(Self.picture(mm, q, pages: 8) == "PPGG....")
        #expect(mm.madvise(q + 3 * page, page, .guardRemove).succeeded)
        #expect(Self.picture(mm, q, pages: 8) == "PPG.....")
        #expect(mm.load(q + 3 * page) == .success(0))
        #expect(mm.load(q + 2 * page).error == .segvMapErr)
        #expect(mm.madvise(q + 3 * page, page, .guardRemove).succeeded)   // nothing to remove
        #expect(mm.madvise(q, page, .guardRemove).succeeded)
        // Shrinking in place keeps the markers below the new end; unmapping drops them.
        #expect(mm.mremap(q, 8 * page, 4 * page).must() == q)
        #expect(Self.picture(mm, q, pages: 8) == "PPGP....")
        #expect(mm.munmap(q + 2 * page, page).succeeded)
        #expect(mm.mmap(q + 2 * page, page, rw, [.private, .anonymous, .fixed]).succeeded)
        #expect(Self.picture(mm, q, pages: 4) == "PP.P")
        // MAP_FIXED over markers replaces them.
        #expect(mm.madvise(q, 4 * page, .guardInstall).succeeded)
        #expect(mm.mmap(q, 4 * page, rw, [.private, .anonymous, .fixed, .populate]).succeeded)
        #expect(Self.picture(mm, q, pages: 4) == "PPPP")
        let problems = mm.system.checkQuiescent([mm])
        #expect(problems.isEmpty, "\(problems)")
    }

    /// Installing sets the sticky VM_MAYBE_GUARD, so fork copies the VMA's page tables —
    /// markers, and pages even of a shared file VMA, even once the markers are removed; the
    /// flag does not stop a merge and the merged VMA keeps it; an anonymous VMA gets its
    /// anon_vma (the child's copy then merges with no new neighbour).
    @Test(arguments: designs)
    func forkCopiesThePageTablesOfGuardedVMAs(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/g", size: 8 * page, contents: [UInt8](repeating: 3, count: Int(8 * page)))
        let a = mm.mmap(Self.base, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.madvise(a + page, page, .guardInstall).succeeded)
        let w = mm.mmap(Self.base + 0x10_0000, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(w, 1).succeeded)
        #expect(mm.madvise(w + page, page, .guardInstall).succeeded)
        let s = mm.mmap(Self.base + 0x20_0000, 8 * page, .read, [.shared, .fixed], file: f).must()
        #expect(mm.madvise(s + page, page, .guardInstall).succeeded)
        let q = mm.mmap(Self.base + 0x30_0000, 8 * page, .read, [.private, .fixed], file: f).must()
        #expect(mm.madvise(q + page, page, .guardInstall).succeeded)
        f.readIntoCache()
        let r = mm.mmap(Self.base + 0x40_0000, 4 * page, .read, [.shared, .fixed], file: f).must()
        #expect(mm.madvise(r + page, page, .guardInstall).succeeded)
        #expect(mm.madvise(r + page, page, .guardRemove).succeeded)
        // A new neighbour merges; the VMA keeps VM_MAYBE_GUARD (smaps `gu`).
        #expect(mm.mmap(r + 4 * page, 4 * page, .read, [.shared, .fixed], file: f, offset: 4 * page).succeeded)
        #expect(layout(mm).contains(line(r, r + 8 * page, "r--s", 0, "/data/g")))
        #expect(mm.smapsText().contains("VmFlags: rd sh mr mw me ms gu"))
        #expect(mm.load(r + 4 * page) == .success(3))
        let plain = mm.mmap(Self.base + 0x50_0000, 4 * page, .read, [.shared, .fixed], file: f).must()
        #expect(mm.load(plain) == .success(3))
        let child = mm.fork()
        #expect(Self.picture(child, a, pages: 8) == ".G......")
        #expect(Self.picture(child, w, pages: 8) == "PG......")
        #expect(Self.picture(child, s, pages: 8) == ".G......")
        #expect(Self.picture(child, q, pages: 8) == ".G......")
        #expect(Self.picture(child, r, pages: 8) == "PPPPPPPP")
        #expect(Self.picture(child, plain, pages: 4) == "....")
        #expect(child.system.checkQuiescent([mm, child]).isEmpty)
        // The anonymous VMA had an anon_vma: in the child it has a parent's chain, and a new
        // neighbour does not merge with it.
        #expect(child.mmap(a + 8 * page, page, rw, [.private, .anonymous, .fixed]).succeeded)
        #expect(layout(child).contains(line(a, a + 8 * page, "rw-p")))
    }

    /// File mappings (6.15): fault-around skips a marker; installing over pages beyond EOF
    /// is allowed and zaps what was mapped; truncation keeps markers.
    @Test(arguments: designs)
    func fileMappingsTakeMarkersToo(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/gf", size: 4 * page, contents: [UInt8](repeating: 3, count: Int(4 * page)))
        f.readIntoCache()
        let m = mm.mmap(Self.base, 8 * page, .read, [.shared, .fixed], file: f).must()
        #expect(mm.madvise(m + page, page, .guardInstall).succeeded)
        #expect(Self.picture(mm, m, pages: 8) == ".G......")
        #expect(mm.load(m) == .success(3))
        #expect(mm.load(m + page).error == .segvMapErr)
        #expect(mm.load(m + 2 * page) == .success(3))
        #expect(Self.picture(mm, m, pages: 8) == "PGPP....")
        #expect(mm.ftruncate(f, page).succeeded)
        #expect(Self.picture(mm, m, pages: 8) == "PG......")
        #expect(mm.madvise(m, 8 * page, .guardInstall).succeeded)
        #expect(Self.picture(mm, m, pages: 8) == "GGGGGGGG")
        let sh = mm.mmap(Self.base + 0x10_0000, 8 * page, rw, [.shared, .anonymous, .fixed]).must()
        #expect(mm.madvise(sh + page, page, .guardInstall).succeeded)
        #expect(mm.madvise(sh, 8 * page, .populateWrite).error == .EFAULT)
        #expect(Self.picture(mm, sh, pages: 8) == "PG......")
    }

    /// The arguments and the VMAs that refuse: locked (installing only), sealed read-only
    /// private anonymous (installing only: EPERM), holes (ENOMEM after the rest is done).
    @Test(arguments: designs)
    func refusals(design: Design) {
        let mm = makeSpace(design)
        let p = mm.mmap(Self.base, 8 * page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.mseal(p, 8 * page, 0).succeeded)
        #expect(mm.madvise(p, page, .guardInstall).error == .EPERM)
        #expect(mm.madvise(p, page, .guardRemove).succeeded)
        let w = mm.mmap(Self.base + 0x10_0000, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mseal(w, 8 * page, 0).succeeded)
        #expect(mm.madvise(w, page, .guardInstall).succeeded)
        let l = mm.mmap(Self.base + 0x20_0000, 8 * page, rw, [.private, .anonymous, .fixed, .locked]).must()
        #expect(mm.madvise(l, page, .guardInstall).error == .EINVAL)
        #expect(mm.madvise(l, 8 * page, .guardRemove).succeeded)
        #expect(mm.madvise(l, 0, .guardInstall).succeeded)
        #expect(mm.madvise(l + 1, page, .guardInstall).error == .EINVAL)
        let n = mm.mmap(Self.base + 0x30_0000, 8 * page, .none, [.private, .anonymous, .fixed]).must()
        #expect(mm.madvise(n, page, .guardInstall).succeeded)
        let h = mm.mmap(Self.base + 0x40_0000, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.munmap(h + page, page).succeeded)
        #expect(mm.madvise(h, 8 * page, .guardInstall).error == .ENOMEM)
        #expect(Self.picture(mm, h, pages: 8) == "G.GGGGGG")
        #expect(mm.madvise(h, 8 * page, .guardRemove).error == .ENOMEM)
        #expect(Self.picture(mm, h, pages: 8) == "........")
        #expect(mm.madvise(Self.base + 0x50_0000, page, .guardInstall).error == .ENOMEM)
    }

    /// Installing over several VMAs prepares each anonymous one's anon_vma in turn; the
    /// sticky flag set on the first does not stop the next from reusing its anon_vma, so
    /// both merge once mprotect makes them alike (difftest, seed 269).
    @Test(arguments: designs)
    func installingOverNeighboursKeepsTheirAnonVMAsMergeable(design: Design) {
        let mm = makeSpace(design)
        let b: UInt64 = 0x6000_0000_0000
        _ = mm.mmap(b + 12 * page, 3 * page, .exec, [.private, .anonymous, .fixed]).must()
        _ = mm.mmap(b + 7 * page, 5 * page, .write, [.private, .anonymous, .fixed]).must()
        _ = mm.mmap(b, 7 * page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.mprotect(b + 9 * page, 6 * page, rw).succeeded)
        #expect(mm.madvise(b, 15 * page, .guardInstall).succeeded)
        #expect(mm.mprotect(b + 3 * page, 7 * page, .exec).succeeded)
        #expect(layout(mm) == [line(b, b + 3 * page, "r--p"), line(b + 3 * page, b + 7 * page, "--xp"),
                               line(b + 7 * page, b + 10 * page, "--xp"), line(b + 10 * page, b + 15 * page, "rw-p")])
    }
}
