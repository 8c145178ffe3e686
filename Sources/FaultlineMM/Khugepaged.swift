import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// khugepaged's tunables (`/sys/kernel/mm/transparent_hugepage/khugepaged/`), with Linux's
/// defaults.
public struct KhugepagedSettings: Sendable, Equatable {
    /// `scan_sleep_millisecs`: the daemon's pause between passes.
    public var scanSleepMillis = 10_000
    /// `pages_to_scan`: what one pass looks at (each 2 MiB counts 512, each VMA passed over 1).
    public var pagesToScan = 4096
    /// `max_ptes_none`, `max_ptes_shared`, `max_ptes_swap`.
    public var maxPtesNone = 511
    public var maxPtesShared = 256
    public var maxPtesSwap = 64

    public init() {}

    var control: CollapseControl {
        CollapseControl(isKhugepaged: true, maxPtesNone: maxPtesNone, maxPtesShared: maxPtesShared, maxPtesSwap: maxPtesSwap)
    }
}

/// `khugepaged` (mm/khugepaged.c): address spaces enter its list (`mm_slot`) when one of their
/// VMAs may hold THPs (MADV_HUGEPAGE, a THP-eligible fault); every `scan_sleep_millisecs` a
/// pass looks at `pages_to_scan` pages, resuming where the last stopped, and collapses each
/// aligned 2 MiB that passes `hpage_collapse_scan_pmd()`'s limits into a THP. It scans under
/// the read side (`mmap_read_lock`) and collapses under the writer side of the address space's
/// design (`mmap_write_lock`), as Linux does: under a design whose faults wait on that lock,
/// khugepaged's collapses are theirs to wait for. Not modelled: swapped-out pages are not read
/// back (`max_ptes_swap`: such a 2 MiB is left, counted as `collapseSwapSkipped`), nor file
/// and shmem collapse (`collapse_file`), nor the allocation's direct compaction (`defrag`).
public final class Khugepaged: @unchecked Sendable {
    let lock = SpinLock()
    /// An mm_slot: a weak reference, so that the list keeps no address space alive (Linux's
    /// slot pins the mm_struct, and a pass drops slots whose users are gone).
    struct Slot {
        weak var mm: AddressSpace?
        let id: ObjectIdentifier
    }
    /// The mm_slot list, in the order address spaces entered, and where the scan stands.
    @exclusivity(unchecked) var slots: [Slot] = []
    @exclusivity(unchecked) var cursor = 0
    @exclusivity(unchecked) var cursorAddress: UInt64 = 0
    /// nil: khugepaged is off (`enabled` = never, or never started); nothing enters.
    @exclusivity(unchecked) var settings: KhugepagedSettings? = nil
    let on = Atomic<Bool>(false)
    /// Held while a pass runs (the quiescent check waits for it).
    let running = Mutex<Void>(())
    let paused = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    let word = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: 1)
    @exclusivity(unchecked) var thread: pthread_t? = nil
    /// `/sys/kernel/mm/transparent_hugepage/khugepaged/pages_collapsed`, `full_scans`,
    /// `pages_scanned`.
    public let pagesCollapsed = Atomic<Int>(0)
    public let fullScans = Atomic<Int>(0)
    public let pagesScanned = Atomic<Int>(0)

    init() { word.initialize(to: Atomic(0)) }
    deinit { word.deallocate() }

    /// Whether address spaces enter the list.
    public var isOn: Bool { on.load(ordering: .relaxed) }

    /// `khugepaged_enter_vma()` → `__khugepaged_enter()`: `mm` joins the list once.
    func enter(_ mm: AddressSpace) {
        lock.withLock {
            guard settings != nil, !mm.khugepagedEntered.load(ordering: .relaxed) else { return }
            mm.khugepagedEntered.store(true, ordering: .relaxed)
            slots.append(Slot(mm: mm, id: ObjectIdentifier(mm)))
        }
    }

    /// `khugepaged_exit()`: `mm` (being torn down) leaves the list. A pass holds a strong
    /// reference to the address space it scans, so none is torn down under it.
    func exit(_ mm: AddressSpace) {
        let id = ObjectIdentifier(mm)
        lock.withLock { removeSlot { $0.id == id } }
    }

    /// Drops the first slot `match` picks (lock held), keeping the cursor on the same next one.
    private func removeSlot(_ match: (Slot) -> Bool) {
        guard let i = slots.firstIndex(where: match) else { return }
        slots.remove(at: i)
        if cursor > i { cursor -= 1 } else if cursor == i { cursorAddress = 0 }
        if cursor >= slots.count { cursor = 0 }
    }

    /// `khugepaged_do_scan()`: one pass over up to `pages_to_scan` pages, address space after
    /// address space from where the last pass stopped. Returns the pages it looked at.
    @discardableResult
    func scanPass(_ system: MMSystem) -> Int {
        running.withLock { _ -> Int in
            guard let s = lock.withLock({ settings }) else { return 0 }
            // lru_add_drain_all(): no per-CPU batch holds a reference the count check would see.
            system.frames.lru.drainAll()
            var progress = 0
            var sinceWrap = 0
            // A pass that began mid-round needs a whole round without progress to stop early.
            var idleWrapsToStop = lock.withLock { cursor == 0 && cursorAddress == 0 } ? 1 : 2
            while progress < s.pagesToScan {
                let pick: (AddressSpace?, ObjectIdentifier, UInt64)? = lock.withLock {
                    guard !slots.isEmpty else { return nil }
                    if cursor >= slots.count { cursor = 0 }
                    return (slots[cursor].mm, slots[cursor].id, cursorAddress)
                }
                guard let (picked, id, from) = pick else { break }
                // hpage_collapse_test_exit(): the address space is gone; so is its slot.
                guard let mm = picked else {
                    lock.withLock { removeSlot { $0.id == id } }
                    continue
                }
                let (scanned, resume) = mm.khugepagedScanMM(from: from, budget: s.pagesToScan - progress, s.control, self)
                progress += scanned
                sinceWrap += scanned
                pagesScanned.wrappingAdd(scanned, ordering: .relaxed)
                let wrapped: Bool = lock.withLock {
                    guard cursor < slots.count, slots[cursor].id == id else { return false }
                    if let r = resume { cursorAddress = r; return false }
                    cursorAddress = 0
                    cursor += 1
                    if cursor >= slots.count { cursor = 0; return true }
                    return false
                }
                if wrapped {
                    fullScans.wrappingAdd(1, ordering: .relaxed)
                    // A whole round over address spaces without VMAs: nothing to do.
                    if sinceWrap == 0 {
                        idleWrapsToStop -= 1
                        if idleWrapsToStop == 0 { break }
                    }
                    sinceWrap = 0
                }
            }
            return progress
        }
    }

    func start(_ system: MMSystem) {
        let box = Unmanaged.passUnretained(system)
        thread = Threads.spawn { [self] in self.loop(box) }
    }

    var futex: UnsafeMutablePointer<UInt32> { UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self) }

    /// `khugepaged()`: a pass, then `scan_sleep_millisecs` of sleep, until stopped.
    func loop(_ box: Unmanaged<MMSystem>) {
        _ = fl_unpin_to_process_cpus()
        while !stopping.load(ordering: .acquiring) {
            if !paused.load(ordering: .acquiring) { scanPass(box.takeUnretainedValue()) }
            let ms = lock.withLock { settings?.scanSleepMillis ?? 10_000 }
            _ = fl_futex_wait(futex, 0, Int64(max(ms, 1)) * 1_000_000)
        }
    }

    func stopAndJoin() {
        guard let t = thread else { return }
        thread = nil
        stopping.store(true, ordering: .releasing)
        word.pointee.store(1, ordering: .releasing)
        _ = fl_futex_wake(futex, 1)
        // The system can go away on this very thread (a pass dropped the last reference to an
        // address space, which held the last one to the system): it cannot join itself, so
        // it lets itself go; the loop sees `stopping` as soon as the pass returns.
        if pthread_equal(t, pthread_self()) != 0 { pthread_detach(t) } else { pthread_join(t, nil) }
    }
}

extension MMSystem {
    /// Turns khugepaged on with `settings`: address spaces enter its list from now on, and (if
    /// `daemon`) its thread runs a pass every `scanSleepMillis`. Without the thread, passes run
    /// when `khugepagedScanPass()` is called (tests).
    public func enableKhugepaged(_ settings: KhugepagedSettings = KhugepagedSettings(), daemon: Bool = true) {
        khugepaged.lock.withLock { khugepaged.settings = settings }
        khugepaged.on.store(true, ordering: .releasing)
        if daemon && khugepaged.thread == nil { khugepaged.start(self) }
    }

    /// One khugepaged pass, now, on the caller's thread: the pages it looked at.
    @discardableResult
    public func khugepagedScanPass() -> Int { khugepaged.scanPass(self) }

    /// khugepaged's counters: 2 MiB collapsed, passes over the whole list, pages looked at.
    public var khugepagedStats: (pagesCollapsed: Int, fullScans: Int, pagesScanned: Int) {
        (khugepaged.pagesCollapsed.load(ordering: .relaxed), khugepaged.fullScans.load(ordering: .relaxed),
         khugepaged.pagesScanned.load(ordering: .relaxed))
    }

    /// Stops khugepaged's passes (waiting for one in progress) or lets them go on.
    public func pauseKhugepaged(_ pause: Bool) {
        khugepaged.paused.store(pause, ordering: .releasing)
        if pause { khugepaged.running.withLock { _ in } }
    }
}

extension AddressSpace {
    /// `khugepaged_enter_vma()`: this address space joins khugepaged's list (cheap once in).
    @inline(__always)
    func khugepagedEnter() {
        if system.khugepaged.isOn && !khugepagedEntered.load(ordering: .relaxed) { system.khugepaged.enter(self) }
    }

    /// Whether khugepaged may collapse the aligned 2 MiB at `haddr` of `v`
    /// (`thp_vma_allowable_order(TVA_KHUGEPAGED)` + `hugepage_vma_revalidate()`): an
    /// anonymous private VMA with an anon_vma that may hold a THP there.
    func khugepagedMayCollapse(_ v: VMARef, _ haddr: UInt64) -> Bool {
        v.anonVMA != 0 && v.vmStart <= haddr && haddr &+ Linux.pmdSize <= v.vmEnd && thpFaultAllowed(VMASnapshot(v), haddr)
    }

    /// `khugepaged_scan_mm_slot()`: from `from`, VMA by VMA, each eligible aligned 2 MiB
    /// scanned under the read side and, if it passes, collapsed under the writer side (the
    /// read side dropped first). Returns the pages looked at and where to resume (nil: this
    /// address space is done for this round).
    func khugepagedScanMM(from: UInt64, budget: Int, _ cc: CollapseControl, _ daemon: Khugepaged) -> (Int, UInt64?) {
        var progress = 0
        var addr = from
        while progress < budget {
            // The read side: which 2 MiB to look at next, and whether it passes the scan.
            mmapLock.lockRead()
            rcuRead.readLock()
            var target: UInt64? = nil
            var done = false
            while progress < budget {
                guard let v = tree.find(from: addr) else { done = true; break }
                let h = (max(addr, v.vmStart) &+ Linux.pmdSize &- 1) & ~(Linux.pmdSize - 1)
                guard h &+ Linux.pmdSize <= v.vmEnd, khugepagedMayCollapse(v, h) else {
                    progress += 1
                    addr = v.vmEnd
                    continue
                }
                progress += PageTablePage.entries
                addr = h &+ Linux.pmdSize
                if collapseScan(h, cc) { target = h; break }
            }
            rcuRead.readUnlock()
            mmapLock.unlockRead()
            if let h = target {
                // collapse_huge_page(): mmap_write_lock, the VMA looked up again, the scan
                // repeated under it, then the copy and the huge PMD.
                let r = withWriter(.khugepaged, { h..<(h &+ Linux.pmdSize) }) { () -> CollapseResult in
                    guard let v = tree.lookup(h), khugepagedMayCollapse(v, h) else { return .skipped(.EAGAIN) }
                    return collapseHugePage(v, h, cc)
                }
                if r == .huge {
                    daemon.pagesCollapsed.wrappingAdd(1, ordering: .relaxed)
                    count(.khugepagedCollapsed)
                }
            }
            if done { return (progress, nil) }
        }
        return (progress, addr)
    }

    /// `hpage_collapse_scan_pmd()` under the read side (RCU held): a PTE table there, not
    /// already huge, whose entries pass `cc`'s limits (what `collapseHugePage` checks again
    /// under the writer side).
    func collapseScan(_ haddr: UInt64, _ cc: CollapseControl) -> Bool {
        guard let ptep = walkPTE(haddr) else { return false }
        let table = PageTablePage(entry: ptep)
        guard !table.isPMDMapped, !table.isAbsentInLinux else { return false }
        table.ptl.pointee.lock()
        defer { table.ptl.pointee.unlock() }
        return scanCollapsible(table.entry(0), cc, into: nil, counting: true).0 == nil
    }
}
