import FaultlineSync
import Synchronization

// Guard regions (MADV_GUARD_INSTALL / MADV_GUARD_REMOVE, 6.13 anonymous, 6.15 file-backed):
// markers in the page tables of one VMA, no split. Probed on 6.18 (each kept as a test in
// GuardRegionTests): an access is SIGSEGV/SEGV_MAPERR; MADV_POPULATE_* is EFAULT at the
// first marker (the pages before it populated); MADV_DONTNEED, MADV_FREE, mprotect and
// truncation keep the markers, munmap and MAP_FIXED drop them, mremap moves them; installing
// sets the sticky VM_MAYBE_GUARD (smaps `gu`) on the whole VMA, so fork copies its page tables
// (markers and pages, even after the markers were removed), and prepares an anonymous VMA's
// anon_vma; pagemap shows PM_SWAP|PM_GUARD_REGION; a sealed read-only private anonymous VMA
// refuses installing (EPERM), not removing.

extension AddressSpace {
    /// `is_valid_guard_vma()`: not VM_SPECIAL or hugetlb; not VM_LOCKED for installing (it
    /// would zap locked pages).
    func isValidGuardVMA(_ v: VMARef, allowLocked: Bool) -> Bool {
        var disallowed: VMFlags = [.io, .pfnMap, .hugeTLB]
        if !allowLocked { disallowed.insert(.locked) }
        return v.vmFlags.isDisjoint(with: disallowed)
    }

    /// `madvise_guard_install()` on `[start, end)` of `v`: the pages there are zapped and every
    /// empty entry gets a marker (tables allocated as needed); a page faulted in between is
    /// zapped on the next round.
    func guardInstall(_ v: VMARef, _ start: UInt64, _ end: UInt64) {
        // anon_vma_prepare() for anonymous memory; VM_MAYBE_GUARD (set atomically, no split)
        // makes fork copy the VMA's page tables.
        if v.isAnonymous && v.anonVMA == 0 { prepareAnonVMA(v) }
        v.pointee.flags.bitwiseOr(VMFlags.maybeGuard.rawValue, ordering: .relaxed)
        while true {
            zapRange(start, end, vma: v, dropMarkers: false)
            var raced = false
            rcuRead.readLock()
            var a = start
            while a < end {
                let slot = allocPTE(a)
                let table = PageTablePage(entry: slot)
                table.ptl.pointee.lock()
                let cur = slot.pointee.load(ordering: .relaxed)
                if cur == 0 {
                    slot.pointee.store(PTE.guardMarker, ordering: .releasing)
                } else if !PTE.isGuard(cur) {
                    raced = true
                }
                table.absentInLinux.pointee.store(0, ordering: .relaxed)
                table.ptl.pointee.unlock()
                a &+= Linux.pageSize
            }
            rcuRead.readUnlock()
            if !raced { return }
        }
    }

    /// `madvise_guard_remove()`: the markers of `[start, end)` go (tables are not allocated).
    func guardRemove(_ start: UInt64, _ end: UInt64) {
        rcuRead.readLock()
        forEachPTE(start, end) { slot, _, cur in
            if PTE.isGuard(cur) { slot.pointee.store(0, ordering: .releasing) }
        }
        rcuRead.readUnlock()
    }
}
