import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// Linux semantics every design must keep. Expected values were checked against the host
/// kernel (6.18) with the same calls.
@Suite("Semantics", .serialized)
struct SemanticTests {
    static let designs = Design.selectable

    // MARK: Placement and merging

    @Test(arguments: designs)
    func mappingsGoTopDownAndAdjacentCompatibleOnesMerge(design: Design) {
        let mm = makeSpace(design)
        let top = Linux.defaultMmapBase
        let a = mm.mmap(0, 2 * page, rw, anonPrivate).must()
        let b = mm.mmap(0, 3 * page, rw, anonPrivate).must()
        #expect(a == top - 2 * page)
        #expect(b == a - 3 * page)
        #expect(layout(mm) == [line(b, top, "rw-p")])
        // Different protection: no merge.
        let c = mm.mmap(0, page, [.read], anonPrivate).must()
        #expect(layout(mm) == [line(c, b, "r--p"), line(b, top, "rw-p")])
        // mprotect makes it compatible: it merges back.
        #expect(mm.mprotect(c, page, rw).succeeded)
        #expect(layout(mm) == [line(c, top, "rw-p")])
    }

    @Test(arguments: designs)
    func largeAnonymousMappingsArePMDAligned(design: Design) {
        let mm = makeSpace(design)
        _ = mm.mmap(0, page, rw, anonPrivate).must()
        let big = mm.mmap(0, 4 << 20, rw, anonPrivate).must()
        #expect(big % Linux.pmdSize == 0)
        let odd = mm.mmap(0, 3 << 20, rw, anonPrivate).must()
        #expect(odd == big - (3 << 20))
    }

    @Test(arguments: designs)
    func hintIsHonouredWhenFreeAndFixedReplaces(design: Design) {
        let mm = makeSpace(design)
        let hint: UInt64 = 0x7000_0000_0000
        #expect(mm.mmap(hint, 4 * page, rw, anonPrivate).must() == hint)
        // Occupied hint: falls back to the top-down search.
        #expect(mm.mmap(hint, page, rw, anonPrivate).must() != hint)
        // MAP_FIXED replaces; MAP_FIXED_NOREPLACE refuses.
        #expect(mm.mmap(hint + page, page, [.read], [.private, .anonymous, .fixed]).must() == hint + page)
        #expect(mm.mmap(hint, page, rw, [.private, .anonymous, .fixedNoReplace]).error == .EEXIST)
        #expect(layout(mm).contains(line(hint + page, hint + 2 * page, "r--p")))
    }

    // MARK: Errors

    @Test(arguments: designs)
    func invalidArgumentsGiveLinuxErrnos(design: Design) {
        let mm = makeSpace(design)
        #expect(mm.mmap(0, 0, rw, anonPrivate).error == .EINVAL)
        #expect(mm.mmap(0x7000_0000_0001, page, rw, [.private, .anonymous, .fixed]).error == .EINVAL)
        #expect(mm.mmap(0, page, rw, [.anonymous]).error == .EINVAL)
        #expect(mm.mmap(0, page, rw, [.sharedValidate, .anonymous]).error == .EINVAL)
        #expect(mm.mmap(0, page, rw, [.private]).error == .EBADF)
        #expect(mm.mmap(0, UInt64.max - 10, rw, anonPrivate).error == .ENOMEM)
        #expect(mm.munmap(0x1001, page).error == .EINVAL)
        #expect(mm.munmap(0x1000, 0).error == .EINVAL)
        #expect(mm.mprotect(0x1001, page, rw).error == .EINVAL)
        #expect(mm.mprotect(0x1000, 0, rw).succeeded)
        #expect(mm.mprotect(0x1000, page, Prot(rawValue: 0x40)).error == .EINVAL)
        #expect(mm.madvise(0x1001, page, .dontNeed).error == .EINVAL)
        #expect(mm.madvise(0x1000, page, 99).error == .EINVAL)
        #expect(mm.mremap(0x1000, page, 0, []).error == .EINVAL)
        #expect(mm.mremap(0x1000, page, page, [.fixed], newAddress: 0x2000).error == .EINVAL)
        #expect(mm.mremap(0x1000, page, page, MremapFlags(rawValue: 8)).error == .EINVAL)
    }

    @Test(arguments: designs)
    func mprotectOverAHoleChangesWhatPrecedesItThenFails(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        #expect(mm.munmap(a + 2 * page, page).succeeded)
        #expect(mm.mprotect(a, 4 * page, [.read]).error == .ENOMEM)
        #expect(layout(mm) == [line(a, a + 2 * page, "r--p"), line(a + 3 * page, a + 4 * page, "rw-p")])
        // madvise skips holes but reports them.
        #expect(mm.madvise(a, 4 * page, .dontFork).error == .ENOMEM)
        // Nothing mapped at all.
        #expect(mm.mprotect(0x10_0000, page, rw).error == .ENOMEM)
    }

    @Test(arguments: designs)
    func mremapRules(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        #expect(mm.store(a, 7).succeeded)
        // A range crossing the VMA's end is EFAULT; nothing mapped is EFAULT.
        #expect(mm.mremap(a + 2 * page, 4 * page, 5 * page, [.mayMove]).error == .EFAULT)
        #expect(mm.mremap(0x10_0000, page, 2 * page, [.mayMove]).error == .EFAULT)
        // Shrink in place.
        #expect(mm.mremap(a, 4 * page, 2 * page, []).must() == a)
        #expect(layout(mm) == [line(a, a + 2 * page, "rw-p")])
        // Grow without room and without MAYMOVE: ENOMEM; with MAYMOVE: moved, contents too.
        _ = mm.mmap(a + 2 * page, page, [.read], [.private, .anonymous, .fixed]).must()
        #expect(mm.mremap(a, 2 * page, 8 * page, []).error == .ENOMEM)
        let moved = mm.mremap(a, 2 * page, 8 * page, [.mayMove]).must()
        #expect(moved != a)
        #expect(mm.load(moved) == .success(7))
        #expect(mm.load(a) == .failure(.segvMapErr))
        // Private mappings cannot be "duplicated" with old_len 0.
        #expect(mm.mremap(moved, 0, page, [.mayMove]).error == .EINVAL)
    }

    @Test(arguments: designs)
    func maxMapCountLimitsMmapAndSplits(design: Design) {
        let mm = makeSpace(design) { $0.maxMapCount = 10 }
        var made = 0
        while case .success = mm.mmap(0, page, made % 2 == 0 ? rw : [.read], anonPrivate) { made += 1 }
        // Like Linux: the check is `map_count > max` before adding, so max + 1 VMAs exist.
        #expect(mm.mapCount == 11)
        let v = mm.mapsLines()[3]
        #expect(mm.munmap(v.start, page).succeeded)
        #expect(mm.mapCount == 10)
        let three = mm.mmap(0, 3 * page, [.exec], anonPrivate).must()
        #expect(mm.mapCount == 11)
        // Splitting in the middle needs a VMA more: refused at the limit.
        #expect(mm.munmap(three + page, page).error == .ENOMEM)
        #expect(mm.mprotect(three + page, page, [.read]).error == .ENOMEM)
        // Trimming an end does not split: allowed.
        #expect(mm.munmap(three, page).succeeded)
    }

    // MARK: Faults, COW, files

    @Test(arguments: designs)
    func readFaultMapsTheZeroPageAndWriteCopies(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 2 * page, rw, anonPrivate).must()
        #expect(mm.load(a) == .success(0))
        #expect(mm.pteValue(a) & PTE.special != 0)
        #expect(mm.rss.anon == 0)
        #expect(mm.store(a, 1).succeeded)
        #expect(mm.pteValue(a) & PTE.special == 0)
        #expect(mm.rss.anon == 1)
        // Permissions are enforced.
        let r = mm.mmap(0, page, [.read], anonPrivate).must()
        #expect(mm.store(r, 1).error == .segvAccErr)
        let none = mm.mmap(0, page, [], anonPrivate).must()
        #expect(mm.load(none) == .failure(.segvAccErr))
        #expect(mm.load(0x1000) == .failure(.segvMapErr))
    }

    @Test(arguments: designs)
    func forkSharesCopyOnWriteAndHonoursDontforkWipeonfork(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, page, rw, anonPrivate).must()
        let d = mm.mmap(0, page, rw, anonPrivate).must()
        let w = mm.mmap(0, page, [.read], anonPrivate).must()   // different prot: no merges
        _ = mm.mprotect(w, page, rw)
        _ = mm.store(a, 1)
        _ = mm.store(d, 2)
        _ = mm.store(w, 3)
        #expect(mm.madvise(d, page, .dontFork).succeeded)
        #expect(mm.madvise(w, page, .wipeOnFork).succeeded)
        let child = mm.fork()
        #expect(child.load(a) == .success(1))
        #expect(child.load(d) == .failure(.segvMapErr))
        #expect(child.load(w) == .success(0))
        #expect(mm.load(w) == .success(3))
        _ = child.store(a, 9)
        #expect(mm.load(a) == .success(1))
        _ = mm.store(a, 5)
        #expect(child.load(a) == .success(9))
        // WIPEONFORK only on private anonymous memory.
        let s = mm.mmap(0, page, rw, anonShared).must()
        #expect(mm.madvise(s, page, .wipeOnFork).error == .EINVAL)
    }

    @Test(arguments: designs)
    func sharedMemoryIsSharedAcrossForkAndNamedDevZero(design: Design) {
        let mm = makeSpace(design)
        let s = mm.mmap(0, 2 * page, rw, anonShared).must()
        #expect(mm.mapsLines().first { $0.start == s }?.path == "/dev/zero (deleted)")
        let child = mm.fork()
        _ = child.store(s + 5, 42)
        #expect(mm.load(s + 5) == .success(42))
        // Each shared anonymous mapping is its own object: neighbours never merge.
        let t = mm.mmap(0, page, rw, anonShared).must()
        #expect(t == s - page)
        #expect(mm.mapsLines().filter { $0.path == "/dev/zero (deleted)" }.count == 2)
    }

    @Test(arguments: designs)
    func filesShareThroughSharedMappingsCopyOnPrivateWritesAndBusPastEOF(design: Design) {
        let mm = makeSpace(design)
        let contents = (0..<(2 * Int(page) + 100)).map { UInt8(truncatingIfNeeded: $0 * 3) }
        let f = mm.system.makeFile(path: "/data/f", size: UInt64(contents.count), contents: contents)
        let sh = mm.mmap(0, 4 * page, rw, [.shared], file: f).must()
        let pv = mm.mmap(0, 4 * page, rw, [.private], file: f).must()
        #expect(mm.load(pv + 7) == .success(contents[7]))
        _ = mm.store(sh + 7, 200)
        #expect(mm.load(pv + 7) == .success(200))   // not yet copied: reads the page cache
        _ = mm.store(pv + page + 1, 99)                // private write copies the page
        #expect(mm.load(sh + page + 1) == .success(contents[Int(page) + 1]))
        _ = mm.store(sh + 7, 201)
        #expect(mm.load(pv + 7) == .success(201))
        // Page 2 holds the last 100 bytes; page 3 is beyond EOF.
        #expect(mm.load(sh + 2 * page + 50) == .success(contents[2 * Int(page) + 50]))
        #expect(mm.load(sh + 3 * page) == .failure(.bus))
        #expect(mm.madvise(sh, 4 * page, .populateRead).error == .EFAULT)
        let line = mm.mapsLines().first { $0.start == sh }!
        #expect(line.path == "/data/f" && line.perms == "rw-s")
        #expect(mm.mmap(0, page, rw, [.shared], file: f, offset: 17).error == .EINVAL)
    }

    @Test(arguments: designs)
    func madviseDontneedDropsPrivatePagesAndRefaultsFromFile(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 2 * page, rw, anonPrivate).must()
        _ = mm.store(a, 5)
        #expect(mm.madvise(a, 2 * page, .dontNeed).succeeded)
        #expect(mm.load(a) == .success(0))
        let f = mm.system.makeFile(path: "/data/g", size: page, contents: [11])
        let p = mm.mmap(0, page, rw, [.private], file: f).must()
        _ = mm.store(p, 12)
        #expect(mm.madvise(p, page, .dontNeed).succeeded)
        #expect(mm.load(p) == .success(11))
        #expect(mm.madvise(p, page, .free).error == .EINVAL)
    }

    @Test(arguments: designs)
    func populateFaultsInAndChecksAccess(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 8 * page, rw, [.private, .anonymous, .populate]).must()
        #expect(mm.presentPages(a, a + 8 * page) == 8)
        #expect(mm.rss.anon == 8)
        let r = mm.mmap(0, 2 * page, [.read], anonPrivate).must()
        #expect(mm.madvise(r, 2 * page, .populateWrite).error == .EINVAL)
        #expect(mm.madvise(r, 2 * page, .populateRead).succeeded)
        #expect(mm.presentPages(r, r + 2 * page) == 2)
        #expect(mm.madvise(0x10_0000, page, .populateRead).error == .ENOMEM)
    }

    @Test(arguments: designs)
    func brkGrowsShrinksAndRefuses(design: Design) {
        let mm = makeSpace(design)
        let start = mm.startBrk
        #expect(mm.brk(0) == start)
        #expect(mm.brk(start + 3 * page + 5) == start + 3 * page + 5)
        #expect(mm.mapsLines().first { $0.path == "[heap]" }.map { ($0.start, $0.end) }! == (start, start + 4 * page))
        #expect(mm.store(start + 10, 1).succeeded)
        #expect(mm.brk(start + page) == start + page)
        #expect(mm.load(start + 2 * page) == .failure(.segvMapErr))
        #expect(mm.brk(start - page) == start + page)   // below start_brk: refused
        // A mapping in the way stops growth (one page of gap is required).
        _ = mm.mmap(start + 4 * page, page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.brk(start + 4 * page) == start + page)
        #expect(mm.brk(start + 3 * page) == start + 3 * page)
    }

    @Test(arguments: designs)
    func outOfFramesIsAFaultErrorNotACrash(design: Design) {
        let mm = makeSpace(design, frames: 16)
        let a = mm.mmap(0, 64 * page, rw, anonPrivate).must()
        var written = 0
        var oom = false
        for i in 0..<64 {
            switch mm.store(a + UInt64(i) * page, 1) {
            case .success: written += 1
            case .failure(let e): oom = e == .oom
            }
            if oom { break }
        }
        #expect(oom)
        #expect(written <= 16)
        // MAP_POPULATE ignores the failure; MADV_POPULATE_WRITE reports ENOMEM.
        #expect(mm.mmap(0, 64 * page, rw, [.private, .anonymous, .populate]).succeeded)
        let b = mm.mmap(0, 64 * page, rw, anonPrivate).must()
        #expect(mm.madvise(b, 64 * page, .populateWrite).error == .ENOMEM)
        // Unmapping gives frames back (after a grace period).
        #expect(mm.munmap(a, 64 * page).succeeded)
        mm.system.rcu.barrier()
        let c = mm.mmap(0, page, rw, anonPrivate).must()
        #expect(mm.store(c, 1).succeeded)
    }

    @Test(arguments: designs)
    func smapsCountsResidentAnonymousAndSharedPages(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 5 * page, rw, anonPrivate).must()
        _ = mm.store(a, 1)
        _ = mm.load(a + page)   // zero page: not resident
        _ = mm.store(a + 2 * page, 1)
        let child = mm.fork()
        _ = child
        let text = mm.smapsText()
        let expected = """
        Size:                 20 kB
        KernelPageSize:        4 kB
        MMUPageSize:           4 kB
        Rss:                   8 kB
        Pss:                   4 kB
        Pss_Dirty:             4 kB
        Shared_Clean:          0 kB
        Shared_Dirty:          8 kB
        Private_Clean:         0 kB
        Private_Dirty:         0 kB
        Referenced:            8 kB
        Anonymous:             8 kB
        """
        #expect(text.contains(expected))
        #expect(text.contains("VmFlags: rd wr mr mw me ac \n"))
    }
}
