import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// What memory does, as the differential tester compares it with the host (Linux 6.18 on
/// x86-64 with PKU, ext4, no swap): protection keys on execute-only mappings, fault-around,
/// MADV_FREE and MADV_PAGEOUT, stack growth, and the memory-access vocabulary. Every expected
/// value was probed on the host with the same calls.
@Suite("Memory fidelity", .serialized)
struct MemoryFidelityTests {
    static let designs = Design.selectable
    /// 2 MiB-aligned, so fault-around blocks start where the arithmetic below says.
    static let base: UInt64 = 0x7000_0000_0000

    /// The smaps line `label` of the VMA starting at `start`, in kB.
    static func smapsKB(_ mm: AddressSpace, _ start: UInt64, _ label: String) -> UInt64? {
        var inVMA = false
        for line in mm.smapsText().split(separator: "\n") {
            if let m = MapsLine(parsing: line), line.first?.isHexDigit == true { inVMA = m.start == start; continue }
            if inVMA && line.hasPrefix(label) { return UInt64(line.split(separator: " ").dropFirst().first ?? "") }
        }
        return nil
    }

    /// A file whose every page is in the page cache (as the difftest helper's are).
    static func cachedFile(_ mm: AddressSpace, _ path: String, size: UInt64, contents: [UInt8]? = nil,
                           capacity: UInt64? = nil) -> MMFile {
        let f = mm.system.makeFile(path: path, size: size, contents: contents, capacity: capacity)
        f.readIntoCache()
        return f
    }

    static func present(_ mm: AddressSpace, _ start: UInt64, pages: Int) -> String {
        mm.pagemap(start, start + UInt64(pages) * page).map { $0 & Pagemap.present != 0 ? "P" : "." }.joined()
    }

    // MARK: Protection keys

    /// With PKU, PROT_EXEC alone takes the execute-only key: loads and stores are SEGV_PKUERR
    /// (even through a PTE made while the mapping was readable), MAP_POPULATE skips the VMA,
    /// MADV_POPULATE_* is EINVAL, smaps shows `ProtectionKey: 1`, and any other protection
    /// leaves the key (so the VMAs merge back).
    @Test(arguments: designs)
    func executeOnlyMappingsTakeTheExecuteOnlyKey(design: Design) {
        let mm = makeSpace(design) { $0.executeOnlyPKey = true }
        let x = mm.mmap(Self.base, 4 * page, [.exec], [.private, .anonymous, .fixed, .populate]).must()
        #expect(mm.presentPages(x, x + 4 * page) == 0)
        #expect(mm.load(x) == .failure(.segvPkuErr))
        #expect(mm.store(x + page, 1).error == .segvPkuErr)
        #expect(mm.access(x, .exec).succeeded)
        #expect(mm.madvise(x, 4 * page, .populateRead).error == .EINVAL)
        #expect(mm.madvise(x, 4 * page, .populateWrite).error == .EINVAL)
        #expect(Self.smapsKB(mm, x, "ProtectionKey:") == 1)
        // Readable: the load maps a page; execute-only again: the PTE denies it.
        #expect(mm.mprotect(x, 4 * page, [.read, .exec]).succeeded)
        #expect(Self.smapsKB(mm, x, "ProtectionKey:") == 0)
        #expect(mm.load(x + 2 * page) == .success(0))
        #expect(mm.mprotect(x, 4 * page, [.exec]).succeeded)
        #expect(mm.presentPages(x, x + 4 * page) == 2)          // the fetch's and the load's
        #expect(mm.load(x + 2 * page) == .failure(.segvPkuErr))
        // A written page made execute-only, then write+exec (no key): readable again.
        let y = mm.mmap(Self.base + 64 * page, 2 * page, [.read, .write, .exec], [.private, .anonymous, .fixed]).must()
        #expect(mm.store(y, 9).succeeded)
        #expect(mm.mprotect(y, page, [.exec]).succeeded)
        #expect(mm.load(y) == .failure(.segvPkuErr))
        #expect(mm.store(y, 1).error == .segvPkuErr)
        #expect(mm.mprotect(y, page, [.write, .exec]).succeeded)
        #expect(mm.load(y) == .success(9))
        #expect(mm.mprotect(y, page, [.read, .write, .exec]).succeeded)
        #expect(layout(mm).contains(line(y, y + 2 * page, "rwxp")))
        var problems: [String] = []
        var mappings = FrameMappings()
        mm.checkQuiescent(&problems, &mappings)
        #expect(problems.isEmpty, "\(problems)")
    }

    /// Without protection keys, x86 cannot refuse a read of an executable page.
    @Test func withoutProtectionKeysExecuteOnlyIsReadable() {
        let mm = makeSpace(.global) { $0.executeOnlyPKey = false }
        let x = mm.mmap(Self.base, 2 * page, [.exec], [.private, .anonymous, .fixed, .populate]).must()
        #expect(mm.presentPages(x, x + 2 * page) == 2)
        #expect(mm.load(x) == .success(0))
        #expect(mm.store(x, 1).error == .segvAccErr)
        #expect(!mm.smapsText().contains("ProtectionKey"))
    }

    // MARK: Fault-around

    /// A read fault on a file maps the cached pages of its 16-page, VA-aligned block; a block
    /// cut by the VMA's start is 16 pages from there (do_fault_around()), and EOF ends it. A
    /// write fault or a one-page fault-around maps the faulting page only.
    @Test(arguments: designs)
    func faultAroundMapsTheCachedPagesOfTheAlignedBlock(design: Design) {
        let mm = makeSpace(design)
        let f = Self.cachedFile(mm, "/data/fa", size: 20 * page, contents: [1, 2, 3])
        let v = mm.mmap(Self.base + 3 * page, 30 * page, [.read], [.private, .fixed], file: f).must()
        #expect(mm.load(v + 2 * page) == .success(0))            // VA page 5: block 0–15
        #expect(Self.present(mm, v, pages: 30) == String(repeating: "P", count: 16) + String(repeating: ".", count: 14))
        #expect(mm.load(v + 17 * page) == .success(0))           // VA page 20: block 16–31
        #expect(mm.presentPages(v, v + 30 * page) == 20)        // up to file page 19 (VA 22)
        #expect(mm.load(v + 22 * page) == .failure(.bus))
        #expect(mm.presentPages(v, v + 30 * page) == 20)
        #expect(mm.load(v) == .success(1))

        let sh = mm.mmap(Self.base + 64 * page, 8 * page, rw, [.shared, .fixed], file: f).must()
        #expect(mm.store(sh + page, 7).succeeded)
        #expect(mm.presentPages(sh, sh + 8 * page) == 1)

        let one = makeSpace(design) { $0.faultAroundPages = 1 }
        let g = Self.cachedFile(one, "/data/fb", size: 20 * page)
        let w = one.mmap(Self.base, 16 * page, [.read], [.private, .fixed], file: g).must()
        #expect(one.load(w + 5 * page).succeeded)
        #expect(one.presentPages(w, w + 16 * page) == 1)
    }

    /// Probed on ext4: a fault beyond EOF in a 2 MiB region with no page table yet, whose
    /// block's first cached page is the file's last, maps nothing (filemap_map_pages() leaves
    /// the table uninstalled); with a table, or a block starting earlier, it maps up to EOF
    /// (the last, partial page included).
    @Test(arguments: designs)
    func faultAroundBeyondEOFOfARegularFile(design: Design) {
        let mm = makeSpace(design)
        let f = Self.cachedFile(mm, "/data/eof", size: 3 * page + 1)
        let a = mm.mmap(Self.base, 6 * page, rw, [.private, .fixed], file: f, offset: 3 * page).must()
        #expect(mm.load(a + 2 * page) == .failure(.bus))
        #expect(Self.present(mm, a, pages: 6) == "......")
        // A fault that mapped nothing leaves Linux with no table: the same again.
        #expect(mm.load(a + page) == .failure(.bus))
        #expect(Self.present(mm, a, pages: 6) == "......")
        // The same in a region whose page table exists: the last page is mapped.
        let anon = mm.mmap(Self.base + 64 * page, page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(anon, 1).succeeded)
        let d = mm.mmap(Self.base + 16 * page, 6 * page, rw, [.private, .fixed], file: f, offset: 3 * page).must()
        #expect(mm.load(d + 2 * page) == .failure(.bus))
        #expect(Self.present(mm, d, pages: 6) == "P.....")
        // Emptied by munmap while a neighbour keeps the table: still mapped.
        #expect(mm.munmap(d, 6 * page).succeeded)
        #expect(mm.mmap(d, 6 * page, rw, [.private, .fixed], file: f, offset: 3 * page).must() == d)
        #expect(mm.load(d + 2 * page) == .failure(.bus))
        #expect(Self.present(mm, d, pages: 6) == "P.....")
        let b = mm.mmap(Self.base + (2 << 20), 6 * page, rw, [.private, .fixed], file: f, offset: 2 * page).must()
        #expect(mm.load(b + 3 * page) == .failure(.bus))
        #expect(Self.present(mm, b, pages: 6) == "PP....")
        let c = mm.mmap(Self.base + (4 << 20), 6 * page, rw, [.private, .fixed], file: f).must()
        #expect(mm.load(c + 5 * page) == .failure(.bus))
        #expect(Self.present(mm, c, pages: 6) == "PPPP..")
    }

    /// fork copies a table wherever the parent has one in a VMA it copies (one with an
    /// anon_vma), even with no entry to copy: the child's fault-around then maps.
    @Test(arguments: designs)
    func forkCopiesThePageTableFaultAroundSees(design: Design) {
        let mm = makeSpace(design)
        let f = Self.cachedFile(mm, "/data/fk", size: 3 * page + 1)
        let a = mm.mmap(Self.base, 6 * page, rw, [.private, .fixed], file: f, offset: 3 * page).must()
        #expect(mm.store(a + page, 1).error == .bus)                  // prepares the anon_vma
        // The region's table, from a VMA fork does not copy (shared, no anon_vma).
        let shared = mm.mmap(Self.base + 64 * page, page, rw, [.shared, .anonymous, .fixed]).must()
        #expect(mm.store(shared, 1).succeeded)
        let child = mm.fork()
        #expect(child.load(a + 2 * page) == .failure(.bus))
        #expect(Self.present(child, a, pages: 6) == "P.....")
    }

    // MARK: MADV_FREE and MADV_PAGEOUT (no swap)

    /// MADV_FREE makes exclusive anonymous pages lazy-free (smaps LazyFree) until written
    /// again; MADV_PAGEOUT then discards the clean lazy-free ones (they read back as zero) and
    /// keeps every other anonymous page (nowhere to write it). A clean page shared with a
    /// fork child becomes lazy-free too (only a dirty folio must be exclusive), but
    /// MADV_PAGEOUT leaves a page mapped twice.
    @Test(arguments: designs)
    func madviseFreeThenPageoutDiscardsCleanLazyFreePages(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(Self.base, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        for i in 0..<4 { #expect(mm.store(a + UInt64(i) * page, UInt8(i + 1)).succeeded) }
        #expect(mm.madvise(a, 4 * page, .free).succeeded)
        #expect(Self.smapsKB(mm, a, "LazyFree:") == 16)
        #expect(mm.store(a + page, 42).succeeded)                // written again: kept
        #expect(Self.smapsKB(mm, a, "LazyFree:") == 12)
        #expect(mm.madvise(a, 4 * page, .pageOut).succeeded)
        #expect(Self.present(mm, a, pages: 4) == ".P..")
        #expect(mm.load(a) == .success(0))
        #expect(mm.load(a + page) == .success(42))

        let b = mm.mmap(Self.base + 16 * page, 2 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(b, 5).succeeded)
        #expect(mm.madvise(b, 2 * page, .pageOut).succeeded)
        #expect(mm.load(b) == .success(5))

        let c = mm.mmap(Self.base + 32 * page, page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(c, 6).succeeded)
        let child = mm.fork()
        #expect(mm.madvise(c, page, .free).succeeded)
        #expect(Self.smapsKB(mm, c, "LazyFree:") == 4)
        #expect(mm.madvise(c, page, .pageOut).succeeded)
        #expect(mm.load(c) == .success(6))
        #expect(child.load(c) == .success(6))
    }

    /// MADV_PAGEOUT unmaps page-cache pages mapped once; a clean one leaves the cache (read
    /// again on the next fault), a dirty one stays (writeback is not started) with its data.
    @Test(arguments: designs)
    func pageoutUnmapsFilePagesAndDropsCleanOnes(design: Design) {
        let mm = makeSpace(design)
        let f = Self.cachedFile(mm, "/data/po", size: 2 * page, contents: [8, 9])
        let r = mm.mmap(Self.base, page, [.read], [.private, .fixed], file: f).must()
        #expect(mm.load(r) == .success(8))
        #expect(mm.madvise(r, page, .pageOut).succeeded)
        #expect(Self.present(mm, r, pages: 1) == ".")
        #expect(f.cachedPage(0) == nil)
        #expect(mm.load(r) == .success(8))

        let s = mm.mmap(Self.base + 16 * page, page, rw, [.shared, .fixed], file: f, offset: page).must()
        #expect(mm.store(s, 77).succeeded)
        #expect(mm.madvise(s, page, .pageOut).succeeded)
        #expect(Self.present(mm, s, pages: 1) == ".")
        #expect(f.cachedPage(1) != nil)
        #expect(mm.load(s) == .success(77))
    }

    /// A dirty file page that MADV_PAGEOUT unmapped is marked PG_reclaim (it waits for
    /// writeback): fault-around skips it until a fault on the page itself clears the mark,
    /// which a MADV_RANDOM mapping's fault does not (no readahead, so the flag stays).
    /// Probed on 6.18 with a shared ext4 mapping of 8 single-page folios.
    @Test(arguments: designs)
    func pagedOutDirtyFilePagesAreHiddenFromFaultAround(design: Design) {
        for random in [false, true] {
            let mm = makeSpace(design)
            let f = Self.cachedFile(mm, "/data/reclaim", size: 8 * page)
            let p = mm.mmap(Self.base, 8 * page, rw, [.shared, .fixed], file: f).must()
            if random { #expect(mm.madvise(p, 8 * page, .random).succeeded) }
            #expect(mm.store(p + page, 7).succeeded)
            #expect(mm.madvise(p + page, page, .pageOut).succeeded)
            #expect(Self.present(mm, p, pages: 8) == "........")
            #expect(mm.load(p).succeeded)
            #expect(Self.present(mm, p, pages: 8) == "P.PPPPPP")
            #expect(mm.load(p + page) == .success(7))
            #expect(Self.present(mm, p, pages: 8) == "PPPPPPPP")
            // Still dirty (no writeback ran): paged out and marked again.
            #expect(mm.madvise(p + page, page, .pageOut).succeeded)
            #expect(mm.madvise(p, 8 * page, .dontNeed).succeeded)
            #expect(mm.load(p + 3 * page).succeeded)
            #expect(Self.present(mm, p, pages: 8) == "P.PPPPPP")
            #expect(mm.madvise(p, 8 * page, .dontNeed).succeeded)
            #expect(mm.load(p + page) == .success(7))
            #expect(Self.present(mm, p, pages: 8) == "PPPPPPPP")
            #expect(mm.madvise(p, 8 * page, .dontNeed).succeeded)
            #expect(mm.load(p).succeeded)
            #expect(Self.present(mm, p, pages: 8) == (random ? "P.PPPPPP" : "PPPPPPPP"))
        }
    }

    // MARK: Truncation

    /// ftruncate as probed on 6.18 (ext4, a shared and a private mapping of the file):
    /// growing zeroes what a store put beyond the old EOF; shrinking unmaps every page from
    /// the new last page on in both mappings (private copies too: SIGBUS after), and zeroes
    /// the new last page beyond the new EOF, which stays zero when the file grows again.
    @Test(arguments: designs)
    func truncationUnmapsBeyondEOFAndZeroesTheTail(design: Design) {
        let mm = makeSpace(design)
        let f = Self.cachedFile(mm, "/data/trunc", size: 4 * page + 100,
                                contents: [UInt8](repeating: 1, count: Int(4 * page + 100)), capacity: 8 * page)
        let s = mm.mmap(Self.base, 8 * page, rw, [.shared, .fixed], file: f).must()
        let q = mm.mmap(Self.base + 0x10_0000, 8 * page, rw, [.private, .fixed], file: f).must()
        #expect(f.mappingCount == 2)
        #expect(mm.store(s + 4 * page + 200, 9).succeeded)
        #expect(mm.load(s + 4 * page + 200) == .success(9))
        #expect(mm.ftruncate(f, 8 * page).succeeded)
        #expect(mm.load(s + 4 * page + 200) == .success(0))
        #expect(mm.load(s + 4 * page + 50) == .success(1))
        for i in 0..<8 { #expect(mm.load(s + UInt64(i) * page).succeeded) }
        #expect(mm.store(q + 3 * page, 5).succeeded && mm.store(q + page, 6).succeeded)
        #expect(mm.load(q).succeeded && mm.load(q + 2 * page).succeeded)
        #expect(Self.present(mm, s, pages: 8) == "PPPPPPPP")
        #expect(Self.present(mm, q, pages: 8) == "PPPPPPPP")

        #expect(mm.store(s + 2 * page + 50, 3).succeeded && mm.store(s + 2 * page + 5, 4).succeeded)
        #expect(mm.ftruncate(f, 2 * page + 10).succeeded)
        #expect(Self.present(mm, s, pages: 8) == "PPP.....")
        #expect(Self.present(mm, q, pages: 8) == "PPP.....")
        #expect(mm.load(s + 2 * page + 5) == .success(4))
        #expect(mm.load(s + 2 * page + 50) == .success(0))
        #expect(mm.load(s + 3 * page) == .failure(.bus))
        #expect(mm.load(q + 3 * page) == .failure(.bus))       // the private copy went too
        #expect(mm.load(q + page) == .success(6))               // below the new EOF it stays
        #expect(mm.load(q + 2 * page + 50) == .success(0))

        #expect(mm.ftruncate(f, 6 * page).succeeded)
        #expect(mm.load(s + 2 * page + 50) == .success(0))
        #expect(mm.load(s + 3 * page) == .success(0))
        #expect(mm.load(q + 3 * page) == .success(0))
        #expect(mm.ftruncate(f, 0).succeeded)
        #expect(Self.present(mm, s, pages: 8) == "........")
        #expect(Self.present(mm, q, pages: 8) == "........")

        // The arguments, in do_sys_ftruncate()'s order; past the model's capacity: ENOSPC.
        #expect(mm.ftruncate(nil, UInt64(bitPattern: -1)).error == .EINVAL)
        #expect(mm.ftruncate(nil, 0).error == .EBADF)
        #expect(mm.ftruncate(f, 1 << 50).error == .EFBIG)
        #expect(mm.ftruncate(f, 9 * page).error == .ENOSPC)
        #expect(mm.munmap(s, 8 * page).succeeded && mm.munmap(q, 8 * page).succeeded)
        #expect(f.mappingCount == 0)
    }

    /// MADV_REMOVE punches a hole in the file under a shared writable mapping: the pages leave
    /// every shared mapping and the cache (private copies stay), the range reads as zeros, the
    /// size stays; anonymous private memory is EINVAL, a private file mapping EACCES, a locked
    /// VMA EINVAL; shared anonymous memory (shmem) punches too. Probed on 6.18 (ext4).
    @Test(arguments: designs)
    func madviseRemovePunchesAHole(design: Design) {
        let mm = makeSpace(design)
        let f = Self.cachedFile(mm, "/data/rm", size: 8 * page, contents: [UInt8](repeating: 3, count: Int(8 * page)))
        let a = mm.mmap(Self.base, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.madvise(a, page, .remove).error == .EINVAL)
        let q = mm.mmap(Self.base + 0x10_0000, 8 * page, rw, [.private, .fixed], file: f).must()
        #expect(mm.store(q + page, 9).succeeded)
        #expect(mm.load(q).succeeded)
        #expect(mm.madvise(q, page, .remove).error == .EACCES)
        let s = mm.mmap(Self.base + 0x20_0000, 8 * page, rw, [.shared, .fixed], file: f).must()
        #expect(mm.store(s, 7).succeeded)
        #expect(mm.load(s + 2 * page).succeeded)
        #expect(Self.present(mm, s, pages: 8) == "PPPPPPPP")
        #expect(mm.madvise(s, 3 * page, .remove).succeeded)
        #expect(Self.present(mm, s, pages: 8) == "...PPPPP")
        #expect(Self.present(mm, q, pages: 8) == ".P.PPPPP")
        #expect(mm.load(s) == .success(0))
        #expect(mm.load(s + 2 * page) == .success(0))
        #expect(mm.load(q) == .success(0))
        #expect(mm.load(q + page) == .success(9))
        #expect(f.size == 8 * page)
        let sh = mm.mmap(Self.base + 0x50_0000, 4 * page, rw, [.shared, .anonymous, .fixed]).must()
        #expect(mm.store(sh, 5).succeeded)
        #expect(mm.madvise(sh, page, .remove).succeeded)
        #expect(mm.load(sh) == .success(0))
        let l = mm.mmap(Self.base + 0x60_0000, 4 * page, rw, [.shared, .fixed, .locked], file: f).must()
        #expect(mm.madvise(l, page, .remove).error == .EINVAL)
        #expect(mm.madvise(s + 6 * page, 4 * page, .remove).error == .ENOMEM)
    }

    /// MAP_DROPPABLE (6.11): private anonymous memory that is never reserved, not copied by
    /// fork, not dumped (`nr wf dd dp`); MADV_PAGEOUT discards its pages even dirty;
    /// MADV_KEEPONFORK and MADV_DODUMP are EINVAL; a file, MAP_LOCKED or MAP_GROWSDOWN is
    /// EINVAL; mlock and mlockall's MCL_FUTURE populate it but never lock it. Probed on 6.18.
    @Test(arguments: designs)
    func droppableMemory(design: Design) {
        let mm = makeSpace(design) { $0.capIPCLock = true }
        let dropFlags: MapFlags = [.droppable, .anonymous, .fixed]
        let d = mm.mmap(Self.base, 4 * page, rw, dropFlags).must()
        for i in 0..<4 { #expect(mm.store(d + UInt64(i) * page, 1).succeeded) }
        #expect(mm.madvise(d, 2 * page, .pageOut).succeeded)
        #expect(Self.present(mm, d, pages: 4) == "..PP")
        #expect(mm.load(d) == .success(0))
        #expect(mm.load(d + 2 * page) == .success(1))
        #expect(mm.madvise(d, page, .keepOnFork).error == .EINVAL)
        #expect(mm.madvise(d, page, .doDump).error == .EINVAL)
        #expect(mm.madvise(d, page, .dontDump).succeeded)
        let f = mm.system.makeFile(path: "/data/dp", size: 4 * page)
        #expect(mm.mmap(Self.base + 0x10_0000, 4 * page, .read, [.droppable, .fixed], file: f).error == .EINVAL)
        #expect(mm.mmap(Self.base + 0x10_0000, 4 * page, .read, dropFlags.union(.locked)).error == .EINVAL)
        #expect(mm.mmap(Self.base + 0x10_0000, 4 * page, .read, dropFlags.union(.growsDown)).error == .EINVAL)
        let plain = mm.mmap(d + 4 * page, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(layout(mm) == [line(d, d + 4 * page, "rw-p"), line(plain, plain + 4 * page, "rw-p")])
        #expect(mm.mlock(d, 4 * page).succeeded)
        #expect(Self.present(mm, d, pages: 4) == "PPPP")
        #expect(mm.usage(start: d, end: d + 1).first?.usage.locked == 0)
        #expect(mm.mlockall(2).succeeded)
        let e = mm.mmap(Self.base + 0x20_0000, 4 * page, rw, dropFlags).must()
        #expect(Self.present(mm, e, pages: 4) == "PPPP")
        #expect(mm.smapsText().contains("VmFlags: rd wr mr mw me nr wf dd dp"))
        // The merge is tried with mlockall's VM_LOCKED still in the new VMA's flags (cleared
        // once it exists): under MCL_FUTURE a droppable mapping never merges (difftest seed
        // 33253, then probed).
        #expect(mm.mprotect(e + page, 2 * page, .read).succeeded)
        _ = mm.mmap(e + 2 * page, page, .read, dropFlags).must()
        #expect(layout(mm).contains(line(e + page, e + 2 * page, "r--p")))
        #expect(layout(mm).contains(line(e + 2 * page, e + 3 * page, "r--p")))
        #expect(mm.munlockall().succeeded)
        let child = mm.fork()
        #expect(child.load(d + 2 * page) == .success(0))
    }

    // MARK: Stack growth

    /// A fault below a VM_GROWSDOWN VMA grows it (expand_downwards), unless RLIMIT_STACK is
    /// passed or an accessible VMA below is within the stack guard gap (256 pages).
    @Test(arguments: designs)
    func faultsBelowAGrowsDownVMAGrowIt(design: Design) {
        let mm = makeSpace(design) { $0.stackLimit = 16 * page }
        let g = Self.base + (64 << 20)
        #expect(mm.mmap(g, 4 * page, rw, [.private, .anonymous, .fixed, .growsDown]).must() == g)
        #expect(mm.store(g - 8 * page + 5, 3).succeeded)
        #expect(layout(mm).contains(line(g - 8 * page, g + 4 * page, "rw-p")))
        #expect(mm.load(g - 8 * page + 5) == .success(3))
        #expect(mm.store(g - 20 * page, 1).error == .segvMapErr)   // 24 pages > RLIMIT_STACK
        #expect(layout(mm).contains(line(g - 8 * page, g + 4 * page, "rw-p")))

        let gap = makeSpace(design)
        #expect(gap.mmap(g, 4 * page, rw, [.private, .anonymous, .fixed, .growsDown]).must() == g)
        let below = g - 300 * page
        #expect(gap.mmap(below, page, [.read], [.private, .anonymous, .fixed]).must() == below)
        #expect(gap.load(g - 100 * page).error == .segvMapErr)     // 199 pages from the VMA below
        #expect(gap.load(g - 10 * page).succeeded)                  // 289 pages: allowed
        #expect(gap.mprotect(below, page, .none).succeeded)         // inaccessible: no gap needed
        #expect(gap.load(g - 280 * page).succeeded)
        #expect(layout(gap).contains(line(g - 280 * page, g + 4 * page, "rw-p")))
    }

    // MARK: The access vocabulary

    @Test func accessOutcomesParseTheHelpersAnswersAndPrintLikeStrace() {
        #expect(AccessOutcome(hostLine: "result 65", kind: .load) == .value(65))
        #expect(AccessOutcome(hostLine: "result 0", kind: .store) == .stored)
        #expect(AccessOutcome(hostLine: "signal 11 1", kind: .load) == .signal(.segvMapErr))
        #expect(AccessOutcome(hostLine: "signal 11 2", kind: .store) == .signal(.segvAccErr))
        #expect(AccessOutcome(hostLine: "signal 11 4", kind: .load) == .signal(.segvPkuErr))
        #expect(AccessOutcome(hostLine: "signal 7 2", kind: .load) == .signal(.bus))
        #expect(AccessOutcome(hostLine: "signal 11 9", kind: .load) == nil)
        #expect(AccessOutcome(hostLine: "result x", kind: .load) == nil)
        #expect(AccessOutcome(hostLine: "", kind: .load) == nil)
        let s = MemoryAccess(store: 0x7f00_0000_1000, value: 0x2a)
        #expect(s.hostCommand == "store \(0x7f00_0000_1000) 42")
        #expect(s.text(outcome: .signal(.segvPkuErr)) == "store(0x7f0000001000, 0x2a) = SIGSEGV {si_code=SEGV_PKUERR}")
        #expect(MemoryAccess(load: 0x1000).text(outcome: .value(0xff)) == "load(0x1000) = 0xff")
        let mm = makeSpace(.global)
        let a = mm.mmap(0, page, rw, anonPrivate).must()
        #expect(MemoryAccess(store: a, value: 4).run(on: mm) == .stored)
        #expect(MemoryAccess(load: a).run(on: mm) == .value(4))
        #expect(MemoryAccess(load: a + page).run(on: mm) == .signal(.segvMapErr))
    }
}
