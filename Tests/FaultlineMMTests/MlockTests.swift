import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// mlock, mlock2, munlock, mlockall and munlockall as Linux 6.18 does them on this machine's
/// kernel (each expectation probed on the host with the same calls first; `faultline
/// difftest` generates them and compares maps, pagemap and smaps `Locked:` after each).
@Suite("mlock", .serialized)
struct MlockTests {
    static let designs = Design.selectable
    static let base: UInt64 = 0x7000_0000_0000

    static func present(_ mm: AddressSpace, _ start: UInt64, pages: Int) -> String {
        mm.pagemap(start, start + UInt64(pages) * page).map {
            $0 & Pagemap.present == 0 ? "." : $0 & Pagemap.exclusive != 0 ? "P" : "p"
        }.joined()
    }

    static func lockedKB(_ mm: AddressSpace, _ start: UInt64) -> UInt64? {
        mm.usage(start: start, end: start + 1).first.map { $0.usage.locked >> 10 }
    }

    static func vmFlags(_ mm: AddressSpace, _ start: UInt64) -> String? {
        var inVMA = false
        for l in mm.smapsText().split(separator: "\n") {
            if let m = MapsLine(parsing: l), l.first?.isHexDigit == true { inVMA = m.start == start; continue }
            if inVMA && l.hasPrefix("VmFlags: ") { return String(l.dropFirst(9)).trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    /// The start is rounded down and the length up; the flags go on VMA by VMA up to a hole
    /// (ENOMEM, the VMAs before it changed, nothing populated); MLOCK_ONFAULT locks without
    /// populating; munlock splits and merges back.
    @Test(arguments: designs)
    func lockFlagsSplitMergeAndStopAtHoles(design: Design) {
        let mm = makeSpace(design) { $0.capIPCLock = true }
        let p = mm.mmap(Self.base, 8 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(p + page + 100, page).succeeded)
        #expect(Self.present(mm, p, pages: 8) == ".PP.....")
        #expect(mm.mlock2(p + 4 * page, 2 * page, 1).succeeded)
        #expect(mm.mlock2(p, page, 2).error == .EINVAL)
        #expect(Self.present(mm, p, pages: 8) == ".PP.....")
        #expect(layout(mm) == [line(p, p + page, "rw-p"), line(p + page, p + 3 * page, "rw-p"), line(p + 3 * page, p + 4 * page, "rw-p"),
                               line(p + 4 * page, p + 6 * page, "rw-p"), line(p + 6 * page, p + 8 * page, "rw-p")])
        #expect(Self.vmFlags(mm, p + page) == "rd wr mr mw me lo ac")
        #expect(Self.vmFlags(mm, p + 4 * page) == "rd wr mr mw me lo lf ac")
        #expect(Self.lockedKB(mm, p + page) == 8)
        #expect(mm.munlock(p + page, page).succeeded)
        #expect(layout(mm).first == line(p, p + 2 * page, "rw-p"))
        #expect(Self.lockedKB(mm, p + 2 * page) == 4)
        #expect(mm.mlock(p, 0).succeeded)
        #expect(mm.munmap(p + 6 * page, page).succeeded)
        #expect(mm.mlock(p, 8 * page).error == .ENOMEM)
        #expect(layout(mm) == [line(p, p + 6 * page, "rw-p"), line(p + 7 * page, p + 8 * page, "rw-p")])
        #expect(Self.vmFlags(mm, p) == "rd wr mr mw me lo ac")
        #expect(Self.present(mm, p, pages: 8) == ".PP.....")
        #expect(Self.lockedKB(mm, p) == 8)
        #expect(mm.munlock(p, 8 * page).error == .ENOMEM)
        #expect(Self.lockedKB(mm, p) == 0)
        #expect(mm.mlock(p + 6 * page, page).error == .ENOMEM)    // starts in the hole: nothing changes
    }

    /// Populating after the flags are set: a VMA GUP refuses (PROT_NONE, the execute-only
    /// key) or a page that cannot fault in (past EOF) is ENOMEM with VM_LOCKED kept;
    /// write-only private memory is populated with write faults.
    @Test(arguments: designs)
    func populateFailuresAreENOMEMWithTheFlagsKept(design: Design) {
        let mm = makeSpace(design) {
            $0.capIPCLock = true
            $0.executeOnlyPKey = true
        }
        let n = mm.mmap(Self.base, 4 * page, .none, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(n, 4 * page).error == .ENOMEM)
        #expect(Self.vmFlags(mm, n) == "mr mw me lo")
        #expect(Self.present(mm, n, pages: 4) == "....")
        let x = mm.mmap(Self.base + 0x10_0000, 4 * page, .exec, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(x, 4 * page).error == .ENOMEM)
        #expect(Self.present(mm, x, pages: 4) == "....")
        let w = mm.mmap(Self.base + 0x20_0000, 4 * page, .write, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(w, 4 * page).succeeded)
        #expect(Self.present(mm, w, pages: 4) == "PPPP")
        #expect(Self.lockedKB(mm, w) == 16)
        let f = mm.system.makeFile(path: "/data/ml", size: page + 100)
        f.readIntoCache()
        let s = mm.mmap(Self.base + 0x30_0000, 4 * page, .read, [.shared, .fixed], file: f).must()
        #expect(mm.mlock(s, 4 * page).error == .ENOMEM)
        #expect(Self.present(mm, s, pages: 4) == "PP..")
        #expect(Self.lockedKB(mm, s) == 8)
        #expect(Self.vmFlags(mm, s) == "rd sh mr mw me ms lo")
        #expect(mm.mlockall(0).error == .EINVAL)
        #expect(mm.mlockall(4).error == .EINVAL)
        #expect(mm.mlockall(8).error == .EINVAL)
        #expect(mm.munlockall().succeeded)
        #expect(Self.lockedKB(mm, w) == 0)
    }

    /// A sealed VMA may be locked; a locked private VMA made writable is populated with
    /// write faults (COW broken at mprotect); mlockall(MCL_FUTURE) populates every later
    /// mapping and heap growth, with MCL_ONFAULT none (not even MAP_POPULATE); munlockall
    /// ends it; a fork child does not inherit it.
    @Test(arguments: designs)
    func sealedMprotectAndFutureLocking(design: Design) {
        let mm = makeSpace(design) { $0.capIPCLock = true }
        let s = mm.mmap(Self.base, 4 * page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.mseal(s, 4 * page, 0).succeeded)
        #expect(mm.mlock(s, 4 * page).succeeded)
        #expect(Self.present(mm, s, pages: 4) == "pppp")          // the zero page
        #expect(mm.munlock(s, 4 * page).succeeded)
        let p = mm.mmap(Self.base + 0x10_0000, 4 * page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(p, 4 * page).succeeded)
        #expect(mm.mprotect(p, 2 * page, rw).succeeded)
        #expect(Self.present(mm, p, pages: 4) == "PPpp")
        #expect(mm.mlockall(2).succeeded)
        let m = mm.mmap(Self.base + 0x30_0000, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(Self.present(mm, m, pages: 4) == "PPPP")
        #expect(mm.mmap(Self.base + 0x40_0000, 4 * page, .none, [.private, .anonymous, .fixed]).succeeded)
        let child = mm.fork()
        let c = child.mmap(Self.base + 0x48_0000, 2 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(Self.present(child, c, pages: 2) == "..")
        #expect(mm.mlockall(6).succeeded)
        let o = mm.mmap(Self.base + 0x50_0000, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(Self.present(mm, o, pages: 4) == "....")
        #expect(Self.vmFlags(mm, o) == "rd wr mr mw me lo lf ac")
        let q = mm.mmap(Self.base + 0x60_0000, 4 * page, rw, [.private, .anonymous, .fixed, .populate]).must()
        #expect(Self.present(mm, q, pages: 4) == "....")
        #expect(mm.munlockall().succeeded)
        let u = mm.mmap(Self.base + 0x70_0000, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(Self.present(mm, u, pages: 4) == "....")
        #expect(mm.system.checkQuiescent([mm, child]).isEmpty)
    }

    /// Without CAP_IPC_LOCK, RLIMIT_MEMLOCK bounds what is locked (pages locked already in
    /// the range count once): mlock is ENOMEM past it, MAP_LOCKED and a locked VMA's growth
    /// EAGAIN, mlockall(MCL_CURRENT) ENOMEM when the whole address space is larger; a limit
    /// of 0 is EPERM.
    @Test(arguments: designs)
    func memlockLimit(design: Design) {
        let mm = makeSpace(design) {
            $0.capIPCLock = false
            $0.memlockLimit = 8 * page
        }
        let p = mm.mmap(Self.base, 16 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(p, 6 * page).succeeded)
        #expect(mm.mlock(p, 8 * page).succeeded)           // 6 of the 8 are locked already
        #expect(mm.mlock(p, 9 * page).error == .ENOMEM)
        #expect(mm.mmap(Self.base + 0x10_0000, page, rw, [.private, .anonymous, .locked]).error == .EAGAIN)
        #expect(mm.mremap(p, 8 * page, 9 * page).error == .EAGAIN)
        #expect(mm.mlockall(1).error == .ENOMEM)
        #expect(mm.mlockall(2).succeeded)                  // MCL_FUTURE alone is not checked
        #expect(mm.mmap(Self.base + 0x20_0000, page, rw, [.private, .anonymous]).error == .EAGAIN)
        #expect(mm.munlockall().succeeded)
        let none = makeSpace(design) {
            $0.capIPCLock = false
            $0.memlockLimit = 0
        }
        #expect(none.mlock(Self.base, page).error == .EPERM)
        #expect(none.mlockall(1).error == .EPERM)
        #expect(none.mmap(0, page, rw, [.private, .anonymous, .locked]).error == .EPERM)
    }

    /// A page mlocked in the parent is unevictable: a fork child's MADV_FREE cleans its own
    /// PTE but does not make the page lazy-free, until the parent's copy-on-write (or munlock)
    /// leaves the old page unlocked (difftest, 10,000 × 40 from seed 20000).
    @Test(arguments: designs)
    func mlockedPagesAreNotLazyFree(design: Design) {
        let mm = makeSpace(design) { $0.capIPCLock = true }
        let a = mm.mmap(Self.base, 50 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mlock(a + 6 * page, 2 * page).succeeded)
        let child = mm.fork()
        #expect(child.madvise(a + 7 * page, 3 * page, .free).succeeded)
        #expect(child.usage(start: a + 6 * page, end: a + 6 * page + 1).first?.usage.lazyFree == 0)
        #expect(mm.munlock(a + 6 * page, 2 * page).succeeded)
        #expect(child.madvise(a + 6 * page, 2 * page, .free).succeeded)
        #expect(child.usage(start: a + 6 * page, end: a + 6 * page + 1).first?.usage.lazyFree == 2 * page)
        // Copy-on-write in the locked parent moves the lock to the new page.
        let other = mm.mmap(Self.base + 0x10_0000, 2 * page, rw, [.private, .anonymous, .fixed, .locked]).must()
        let child2 = mm.fork()
        #expect(child2.madvise(other, 2 * page, .free).succeeded)
        #expect(child2.usage(start: other, end: other + 1).first?.usage.lazyFree == 0)
        #expect(mm.store(other, 1).succeeded)
        #expect(child2.madvise(other, 2 * page, .free).succeeded)
        #expect(child2.usage(start: other, end: other + 1).first?.usage.lazyFree == page)
    }
}
