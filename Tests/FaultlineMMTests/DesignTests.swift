import CFaultline
import FaultlineMM
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// What each design adds over the shared mechanism: its fault path is taken, counted, and
/// agrees with the others; both maps readers agree at rest.
@Suite("Designs", .serialized)
struct DesignTests {
    static let designs = Design.selectable

    @Test(arguments: designs)
    func locklessMapsAgreesWithLockedAtRest(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/f", size: 16 * page)
        let a = mm.mmap(0, 8 * page, rw, anonPrivate).must()
        _ = mm.mmap(0, 4 * page, [.read], [.private], file: f, offset: 2 * page).must()
        _ = mm.mmap(0, 2 * page, rw, anonShared).must()
        #expect(mm.mprotect(a + 2 * page, page, [.read]).succeeded)
        #expect(mm.munmap(a + 5 * page, page).succeeded)
        _ = mm.brk(mm.currentBrk + 3 * page)
        let locked = mm.mapsLines(reader: .locked)
        #expect(locked.count >= 6)
        #expect(mm.mapsLines(reader: .lockless) == locked)
        // A window cuts the same lines.
        let w = (a + page)..<(a + 4 * page)
        #expect(mm.mapsLines(in: w, reader: .lockless) == mm.mapsLines(in: w, reader: .locked))
        #expect(mm.designCounters.mapsFallbacks == 0 || ![.global, .range, .rangeTree].contains(design))
    }

    @Test(arguments: designs)
    func faultsTakeTheDesignsPath(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 64 * page, rw, anonPrivate).must()
        // The first fault prepares the anon_vma and the page tables under mmap_lock in the
        // speculative designs; the rest can go lockless.
        for i in 0..<64 { #expect(mm.store(a + UInt64(i) * page, UInt8(i)).succeeded) }
        for i in 0..<64 { #expect(mm.load(a + UInt64(i) * page) == .success(UInt8(i))) }
        let c = mm.designCounters
        #expect(c.faults == 64)
        switch design {
        case .global:
            #expect(c.locklessSuccesses == 0 && c.aborts == 0)
        case .spfMMSeq, .spfVMASeq, .brokenSPF:
            #expect(c.locklessSuccesses == 63)
            #expect(c.aborts == 1 && c.fallbacks == 1)
            // Speculation never allocates page tables: the first fault found none.
            #expect(c.abortReasons["no-page-table"] == 1)
        case .perVMA, .perVMARetry:
            #expect(c.locklessSuccesses == 63)
            #expect(c.abortReasons["no-anon-vma"] == 1)
            // 6.4: an anonymous VMA without an anon_vma is not locked (VMA_LOCK_ABORT).
            #expect(c.vmaLockSuccess == 63 && c.vmaLockAbort == 1 && c.vmaLockRetry == 0)
        case .perVMA615:
            // 6.7+: vmf_anon_prepare() prepares it under the VMA lock, with mmap_lock
            // read-trylocked: every fault succeeds under the VMA lock.
            #expect(c.locklessSuccesses == 64 && c.aborts == 0)
            #expect(c.vmaLockSuccess == 64 && c.vmaLockAbort == 0 && c.vmaLockRetry == 0)
        case .range, .rangeTree:
            // The first fault needs the short lock throughout (it prepares the anon_vma).
            #expect(c.locklessSuccesses == 63)
            #expect(c.abortReasons["no-anon-vma"] == 1)
        default:
            Issue.record("no expectation for \(design.rawValue)")
        }
    }

    @Test(arguments: designs)
    func fileFaultsAreLocklessOnlyWhereTheDesignAllows(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/g", size: 8 * page)
        // No readahead: each fault reads and maps its own page (with it, the first fault reads
        // all eight and its retry maps them around it: see LargeFolioTests).
        f.readaheadPages = 0
        let a = mm.mmap(0, 8 * page, [.read], [.private], file: f).must()
        for i in 0..<8 { #expect(mm.load(a + UInt64(i) * page).succeeded) }
        let c = mm.designCounters
        switch design {
        case .spfMMSeq, .spfVMASeq, .brokenSPF:
            // Anonymous memory only.
            #expect(c.abortReasons["not-anonymous"]! >= 1 && c.locklessSuccesses == 0)
        case .perVMA, .perVMARetry, .perVMA615, .range, .rangeTree:
            #expect(c.locklessSuccesses >= 7)
        case .global:
            #expect(c.locklessSuccesses == 0)
        default:
            Issue.record("no expectation for \(design.rawValue)")
        }
    }

    @Test(arguments: [Design.perVMA, .perVMARetry, .perVMA615, .global])
    func ioFaultsRetryWhereTheDesignSays(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/data/slow", size: 4 * page, ioLatencyNs: 100_000)
        let a = mm.mmap(0, 4 * page, [.read], [.shared], file: f).must()
        #expect(mm.load(a).succeeded)
        let c = mm.designCounters
        #expect(c.retries == 1 && c.majorFaults == 1)
        if design == .perVMA || design == .perVMA615 {
            // VM_FAULT_RETRY under the VMA lock is retried under mmap_lock.
            #expect(c.fallbacks == 1 && c.locklessSuccesses == 0)
            #expect(c.vmaLockRetry == 1 && c.vmaLockSuccess == 0)
        } else if design == .perVMARetry {
            #expect(c.fallbacks == 0 && c.locklessSuccesses == 1)
            #expect(c.vmaLockRetry == 1 && c.vmaLockSuccess == 1)
        }
    }

    @Test(arguments: designs)
    func writersMarkWhatLocklessFaultsMustNotUse(design: Design) {
        let mm = makeSpace(design)
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        #expect(mm.store(a, 1).succeeded)
        #expect(mm.munmap(a, 4 * page).succeeded)
        // Nothing survives the unmap, whichever path the fault takes next.
        #expect(mm.store(a, 1).error == .segvMapErr)
        #expect(mm.presentPages(a, a + 4 * page) == 0)
        #expect(mm.system.checkQuiescent([mm]).isEmpty)
    }

    /// Two copy-on-write faults on one page; the first is held after its copy while the second
    /// completes. The first then finds the PTE changed: it must drop only its own copy and not
    /// the reference of the page it copied (a bug the stress test found).
    @Test(arguments: designs)
    func aCowFaultThatLosesTheRaceKeepsTheAccountsStraight(design: Design) {
        let armed = CowHold()
        var cfg = AddressSpace.Configuration()
        cfg.faultHook = { stage, _ in
            guard stage == .cowCopied, armed.armed.exchange(false, ordering: .acquiringAndReleasing) else { return }
            armed.held.store(true, ordering: .releasing)
            while !armed.release.load(ordering: .acquiring) { fl_sleep_ns(100_000) }
        }
        let system = MMSystem(frames: 1024, poison: true)
        let p = AddressSpace(system: system, design: design, configuration: cfg)
        let a = p.mmap(0, 2 * page, rw, anonPrivate).must()
        _ = p.store(a, 7)
        _ = p.store(a + page, 7)
        let child = p.fork()
        armed.armed.store(true, ordering: .releasing)
        let box = SharedSpace(p)
        let t = Threads.spawn { _ = box.mm.store(a + 1, 1) }
        while !armed.held.load(ordering: .acquiring) { fl_sleep_ns(100_000) }
        #expect(p.store(a + 2, 2).succeeded)
        armed.release.store(true, ordering: .releasing)
        Threads.join(t)
        #expect(p.load(a + 1) == .success(1) && p.load(a + 2) == .success(2))
        #expect(child.load(a + 1) == .success(0) && child.load(a) == .success(7))
        #expect(system.checkQuiescent([p, child]) == [])
    }
}

final class CowHold: @unchecked Sendable {
    let armed = Atomic<Bool>(false)
    let held = Atomic<Bool>(false)
    let release = Atomic<Bool>(false)
}

final class SharedSpace: @unchecked Sendable {
    let mm: AddressSpace
    init(_ mm: AddressSpace) { self.mm = mm }
}
