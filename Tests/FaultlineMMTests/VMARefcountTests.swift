import CFaultline
import FaultlineMM
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// A closure slot a fault hook can read once the address spaces exist.
final class HookAction: @unchecked Sendable {
    var action: (() -> Void)?
    let fired = Atomic<Bool>(false)
    /// Runs the action once, the first time there is one.
    func fire() {
        if let a = action, !fired.exchange(true, ordering: .relaxed) { a() }
    }
}

/// Linux 6.15's VMA lock (`per-vma-6.15`): the reference count, VMAs reused at once from a
/// SLAB_TYPESAFE_BY_RCU cache, and the re-checks a reader needs because of it. Each reader
/// race is forced deterministically: the fault hook runs between the look-up and the
/// reference (`vma_start_read`'s window) and changes the address space there.
@Suite("The 6.15 VMA lock", .serialized)
struct VMARefcountTests {
    /// One system, one or two address spaces of `design`, a hook at `.vmaLockChecked`.
    func spaces(_ design: Design, count n: Int, _ hook: HookAction) -> [AddressSpace] {
        let system = MMSystem(frames: 4096)
        var cfg = AddressSpace.Configuration()
        cfg.faultHook = { stage, _ in if stage == .vmaLockChecked { hook.fire() } }
        return (0..<n).map { _ in AddressSpace(system: system, design: design, configuration: cfg) }
    }

    @Test func aFreedVMAIsReusedAtOnce() {
        let mm = makeSpace(.perVMA615)
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        let v = mm.allVMAs().first { $0.vmStart == a }!
        #expect(mm.munmap(a, 4 * page).succeeded)
        let b = mm.mmap(0x6000_0000_0000, page, [.read], [.private, .anonymous, .fixed]).must()
        let w = mm.allVMAs().first { $0.vmStart == b }!
        // The same object, with no grace period in between.
        #expect(v == w)
        #expect(mm.designCounters.vmasReused == 1)
        #expect(w.pointee.vmRefcnt.load(ordering: .relaxed) == 1)
        var problems: [String] = []
        var mappings = FrameMappings()
        mm.checkQuiescent(&problems, &mappings)
        #expect(problems.isEmpty, "\(problems)")
    }

    /// The VMA cache's per-CPU sheaves (Linux 6.18): a freed VMA waits in the freeing thread's
    /// sheaf, so that thread reuses it and another thread gets a different object; the live
    /// count adds up across threads, whichever thread frees.
    @Test func aFreedVMAWaitsInTheFreeingThreadsSheaf() {
        let mm = makeSpace(.perVMA615)
        let base = mm.system.liveVMAs
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        let v = mm.allVMAs().first { $0.vmStart == a }!
        #expect(mm.system.liveVMAs == base + 1)
        // Freed on another thread: into that thread's sheaf.
        let t = Threads.spawn { _ = mm.munmap(a, 4 * page) }
        Threads.join(t)
        #expect(mm.system.liveVMAs == base)
        let b = mm.mmap(0x6000_0000_0000, page, [.read], [.private, .anonymous, .fixed]).must()
        let w = mm.allVMAs().first { $0.vmStart == b }!
        #expect(v != w, "a VMA another thread freed came from this thread's sheaf")
        #expect(mm.designCounters.vmasReused == 0)
        // Freed here and allocated here: the same object, reused at once.
        #expect(mm.munmap(b, page).succeeded)
        let c = mm.mmap(0x6000_0000_0000, page, [.read], [.private, .anonymous, .fixed]).must()
        let x = mm.allVMAs().first { $0.vmStart == c }!
        #expect(x == w)
        #expect(mm.designCounters.vmasReused == 1)
        #expect(mm.system.liveVMAs == base + 1)
        var problems: [String] = []
        var mappings = FrameMappings()
        mm.checkQuiescent(&problems, &mappings)
        #expect(problems.isEmpty, "\(problems)")
    }

    @Test func faultsAreCountedAsTheKernelCountsThem() {
        let mm = makeSpace(.perVMA615)
        let a = mm.mmap(0, 16 * page, rw, anonPrivate).must()
        for i in 0..<16 { #expect(mm.store(a + UInt64(i) * page, 1).succeeded) }
        // A write to a read-only VMA is an access error, handled under the VMA lock.
        let r = mm.mmap(0, page, [.read], anonPrivate).must()
        #expect(mm.store(r, 1).faultError == .segvAccErr)
        // No VMA at all: the look-up fails (VMA_LOCK_ABORT), mmap_lock decides.
        #expect(mm.load(0x1000_0000).faultError == .segvMapErr)
        let c = mm.designCounters
        // The first fault prepares the anon_vma under the VMA lock with mmap_lock read-trylocked
        // (vmf_anon_prepare): no retry.
        #expect(c.vmaLockSuccess == 17)
        #expect(c.vmaLockAbort == 1 && c.abortReasons["no-vma"] == 1)
        #expect(c.vmaLockRetry == 0 && c.vmaLockMiss == 0)
    }

    @Test func aVMADetachedAfterTheLookUpIsLookedUpAgain() {
        let hook = HookAction()
        // The action holds the address spaces whose hook holds it: break the cycle at the end.
        defer { hook.action = nil }
        let mm = spaces(.perVMA615, count: 1, hook)[0]
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        hook.action = { _ = mm.munmap(a, 4 * page) }
        #expect(mm.store(a, 1).faultError == .segvMapErr)
        let c = mm.designCounters
        // vm_refcnt was 0: VMA_LOCK_MISS, and the second look-up finds nothing (ABORT).
        #expect(c.vmaLockMiss == 1)
        #expect(c.vmaLockAbort == 1)
    }

    @Test(arguments: [Design.perVMA615, .brokenPerVMA615Recheck])
    func aVMAReusedElsewhereInTheSameSpaceIsRechecked(design: Design) {
        let hook = HookAction()
        // The action holds the address spaces whose hook holds it: break the cycle at the end.
        defer { hook.action = nil }
        let mm = spaces(design, count: 1, hook)[0]
        let a = mm.mmap(0x6000_0000_0000, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.store(a + page, 1).succeeded)   // the anon_vma exists
        let b: UInt64 = 0x6100_0000_0000
        hook.action = {
            // Between the look-up and the reference: the VMA goes and its object comes back
            // as a new mapping elsewhere, attached and unlocked again.
            _ = mm.munmap(a, 4 * page)
            _ = mm.mmap(b, 4 * page, rw, [.private, .anonymous, .fixed])
        }
        let r = mm.store(a, 1)
        #expect(mm.designCounters.vmasReused == 1)
        var problems: [String] = []
        var mappings = FrameMappings()
        mm.checkQuiescent(&problems, &mappings)
        if design == .perVMA615 {
            // The range re-check fails: VMA_LOCK_ABORT, and mmap_lock finds nothing there.
            #expect(r.faultError == .segvMapErr)
            #expect(mm.designCounters.abortReasons["vma-changed"] == 1)
            #expect(problems.isEmpty, "\(problems)")
        } else {
            // Without it the fault runs through the reused VMA and maps a page where there
            // is no VMA at all.
            #expect(r.succeeded)
            #expect(problems.contains { $0.contains("present PTE outside every VMA") }, "\(problems)")
        }
    }

    @Test(arguments: [Design.perVMA615, .brokenPerVMA615Recheck])
    func aVMAReusedByAnotherSpaceIsRechecked(design: Design) {
        let hook = HookAction()
        // The action holds the address spaces whose hook holds it: break the cycle at the end.
        defer { hook.action = nil }
        let s = spaces(design, count: 2, hook)
        let a = s[0].mmap(0x6000_0000_0000, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(s[0].store(a + page, 1).succeeded)
        hook.action = {
            // The VMA goes from the first space and the other space's next mmap reuses it,
            // at the same address.
            _ = s[0].munmap(a, 4 * page)
            _ = s[1].mmap(a, 4 * page, rw, [.private, .anonymous, .fixed])
        }
        let r = s[0].store(a, 1)
        #expect(s[1].designCounters.vmasReused == 1)
        var problems: [String] = []
        var mappings = FrameMappings()
        s[0].checkQuiescent(&problems, &mappings)
        if design == .perVMA615 {
            #expect(r.faultError == .segvMapErr)
            #expect(s[0].designCounters.abortReasons["vma-changed"] == 1)
            #expect(problems.isEmpty, "\(problems)")
        } else {
            #expect(r.succeeded)
            #expect(problems.contains { $0.contains("present PTE outside every VMA") }, "\(problems)")
        }
    }

    @Test func aWriterWaitsForTheReadersReference() {
        // A fault that holds the VMA's reference stops at .beforeInstall until released; an
        // mprotect of that VMA must not finish before it.
        let gate = Gate()
        var cfg = AddressSpace.Configuration()
        cfg.faultHook = { stage, _ in
            if stage == .beforeInstall && gate.armed.load(ordering: .relaxed) && !gate.opened.exchange(true, ordering: .relaxed) {
                gate.entered.store(true, ordering: .releasing)
                while !gate.release.load(ordering: .acquiring) { fl_sleep_ns(100_000) }
            }
        }
        let mm = AddressSpace(system: MMSystem(frames: 4096), design: .perVMA615, configuration: cfg)
        let a = mm.mmap(0, 4 * page, rw, anonPrivate).must()
        // The anon_vma first: preparing it takes mmap_lock, which the writer would wait on.
        #expect(mm.store(a + page, 2).succeeded)
        gate.armed.store(true, ordering: .relaxed)
        let stored = Atomic<Bool>(false)
        let fault = Threads.spawn { if case .success = mm.store(a, 1) { stored.store(true, ordering: .releasing) } }
        while !gate.entered.load(ordering: .acquiring) { fl_sleep_ns(100_000) }
        let done = Atomic<Bool>(false)
        let writer = Threads.spawn {
            _ = mm.mprotect(a, 4 * page, [.read])
            done.store(true, ordering: .releasing)
        }
        fl_sleep_ns(50_000_000)
        let early = done.load(ordering: .acquiring)
        #expect(!early, "mprotect finished while a fault held the VMA")
        gate.release.store(true, ordering: .releasing)
        Threads.join(fault)
        Threads.join(writer)
        let finished = done.load(ordering: .acquiring)
        #expect(finished)
        let c = mm.designCounters
        // The writer waited on the VMA's reference. The store's retry after its fault may land
        // while mprotect holds the VMA write-locked: it aborts (seq-changed), falls back and
        // waits on mmap_lock, as on Linux; only such a fallback may contend mmap_lock.
        #expect(c.vmaLockContended >= 1, "\(c)")
        #expect(c.mmapLockContended <= c.fallbacks, "\(c)")
        // The retry may come after the mprotect (SEGV_ACCERR, as on Linux); if it went
        // through, the byte is there.
        let wrote = stored.load(ordering: .acquiring)
        #expect(mm.load(a) == .success(wrote ? 1 : 0))
    }
}

/// A fault parked inside its VMA lock until the test lets it go.
final class Gate: @unchecked Sendable {
    let armed = Atomic<Bool>(false)
    let opened = Atomic<Bool>(false)
    let entered = Atomic<Bool>(false)
    let release = Atomic<Bool>(false)
}

extension Result where Failure == FaultError {
    /// The fault's signal, or nil when the access succeeded.
    var faultError: FaultError? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
