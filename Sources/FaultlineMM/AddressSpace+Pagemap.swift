import Synchronization

/// `/proc/pid/pagemap` bits (Documentation/admin-guide/mm/pagemap.rst).
public enum Pagemap {
    /// Bit 63: the page is present.
    public static let present: UInt64 = 1 << 63
    /// Bit 62: the page is swapped.
    public static let swapped: UInt64 = 1 << 62
    /// Bit 61: a file page or shared anonymous (shmem) page.
    public static let file: UInt64 = 1 << 61
    /// Bit 58: a guard region marker (6.15).
    public static let guardRegion: UInt64 = 1 << 58
    /// Bit 57: write-protected by userfaultfd.
    public static let uffdWP: UInt64 = 1 << 57
    /// Bit 56: the page is mapped exactly once.
    public static let exclusive: UInt64 = 1 << 56
    /// The bits the model gives (the PFN, bits 0–54, reads as zero, as it does for a reader
    /// without CAP_SYS_ADMIN; soft-dirty, bit 55, is not modelled).
    public static let modelled: UInt64 = present | swapped | file | guardRegion | uffdWP | exclusive
}

extension AddressSpace {
    /// `pagemap_read()` / `pte_to_pagemap_entry()`: one entry per page of `[start, end)`
    /// (page-aligned), with the bits of `Pagemap.modelled`. The zero page is present but
    /// neither file nor exclusive (it is no normal page); a page is exclusive when mapped once.
    /// The huge zero page reads as a file page (`pagemap_pmd_range` takes `pmd_page()`, which
    /// is not anonymous; probed on 6.18).
    public func pagemap(_ start: UInt64, _ end: UInt64) -> [UInt64] {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        var out = [UInt64](repeating: 0, count: Int((end - start) >> Linux.pageShift))
        rcuRead.readLock()
        forEachPTETable(start, end) { table, s, e in
            let mapping = table.pmdMapping.pointee.load(ordering: .relaxed)
            let hugeZero = mapping == PMDMapping.hugeZero
            // pagemap_pmd_range() asks whether the PMD's first page is mapped exclusively and
            // gives every entry that answer (probed: a page only a fork child's huge PMD still
            // maps reads as shared while the parent maps the first page).
            let pmdExclusive = mapping == PMDMapping.thp
                ? frames.page(PTE.frame(table.entry(0).pointee.load(ordering: .acquiring))).pointee.mapcount.load(ordering: .relaxed) == 1
                : nil
            var a = s
            while a < e {
                let pte = table.entry(ptIndex(a, level: 1)).pointee.load(ordering: .acquiring)
                if pte & PTE.present != 0 {
                    var v = Pagemap.present
                    if hugeZero {
                        v |= Pagemap.file
                    } else if pte & PTE.special == 0 {
                        let p = frames.page(PTE.frame(pte))
                        if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon == 0 { v |= Pagemap.file }
                        if pmdExclusive ?? (p.pointee.mapcount.load(ordering: .relaxed) == 1) { v |= Pagemap.exclusive }
                    }
                    out[Int((a - start) >> Linux.pageShift)] = v
                } else if PTE.isSwap(pte) {
                    // PM_SWAP (the type and offset bits are not compared).
                    out[Int((a - start) >> Linux.pageShift)] = Pagemap.swapped
                } else if PTE.isGuard(pte) {
                    // A marker is a swap-type entry: PM_SWAP with PM_GUARD_REGION.
                    out[Int((a - start) >> Linux.pageShift)] = Pagemap.swapped | Pagemap.guardRegion
                }
                a &+= Linux.pageSize
            }
        }
        rcuRead.readUnlock()
        return out
    }
}
