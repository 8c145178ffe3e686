import CFaultline
import FaultlineSync
import Synchronization

/// x86-64 page-table entry bits (the subset the model uses).
public enum PTE {
    public static let present: UInt64 = 1 << 0
    public static let writable: UInt64 = 1 << 1
    public static let user: UInt64 = 1 << 2
    public static let accessed: UInt64 = 1 << 5
    public static let dirty: UInt64 = 1 << 6
    /// `_PAGE_SPECIAL`: the zero page (no reference counting).
    public static let special: UInt64 = 1 << 9
    public static let noExec: UInt64 = 1 << 63
    /// Protection-key bit 0 (`_PAGE_PKEY_BIT0`, bit 59): the entry carries the execute-only
    /// key, whose PKRU bits deny data access (the model's only key).
    public static let pkeyExecOnly: UInt64 = 1 << 59
    /// `PTE_MARKER_GUARD`: a non-present entry that MADV_GUARD_INSTALL leaves (6.13); an
    /// access faults with SIGSEGV, zapping keeps it, only unmapping drops it.
    public static let guardMarker: UInt64 = 1 << 10

    @inlinable @inline(__always)
    public static func isGuard(_ e: UInt64) -> Bool { e == guardMarker }
    /// A swap entry (`swp_entry_t` in a non-present PTE): this tag, the slot from bit 12.
    public static let swapTag: UInt64 = 1 << 11
    @inlinable @inline(__always)
    public static func isSwap(_ e: UInt64) -> Bool { e & (present | swapTag) == swapTag }
    @inlinable @inline(__always)
    public static func swapEntry(_ slot: UInt32) -> UInt64 { UInt64(slot) << 12 | swapTag }
    @inlinable @inline(__always)
    public static func swapSlot(_ e: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: e >> 12) }

    /// The protection-key bits a VMA's flags give its entries (`arch_vm_get_page_prot`).
    @inlinable @inline(__always)
    public static func pkeyBits(_ flags: VMFlags) -> UInt64 {
        flags.contains(.pkeyExecOnly) ? pkeyExecOnly : 0
    }
    public static let frameMask: UInt64 = 0x000F_FFFF_FFFF_F000

    @inlinable @inline(__always)
    public static func make(_ frame: FrameNumber, writable w: Bool, exec: Bool, dirty d: Bool = false, pkey: UInt64 = 0) -> UInt64 {
        UInt64(frame) << 12 | present | user | accessed | (w ? writable : 0) | (exec ? 0 : noExec) | (d ? dirty : 0) | pkey
    }

    @inlinable @inline(__always)
    public static func frame(_ e: UInt64) -> FrameNumber { FrameNumber(truncatingIfNeeded: (e & frameMask) >> 12) }

    @inlinable @inline(__always)
    public static func isPresent(_ e: UInt64) -> Bool { e & present != 0 }

    @inlinable @inline(__always)
    public static func isWritable(_ e: UInt64) -> Bool { e & writable != 0 }
}

/// A page-table page: 512 atomic entries in the first 4 KiB, and after them a header holding
/// the split page-table lock (`ptlock_ptr(page)`). Tables are freed only after an RCU grace
/// period (`tlb_remove_table` → `tlb_remove_table_rcu`), so lockless walkers that started
/// under RCU never read a freed table.
@frozen
public struct PageTablePage: Equatable {
    @usableFromInline let base: UnsafeMutableRawPointer

    public static let bytes = 8192

    /// Whether every entry is zero.
    @usableFromInline var isEmpty: Bool {
        for i in 0..<Self.entries where entry(i).pointee.load(ordering: .relaxed) != 0 { return false }
        return true
    }
    public static let entries = 512

    @inlinable init(base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable @inline(__always)
    init(entry: UnsafeMutablePointer<Atomic<UInt64>>) {
        base = UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: entry) & ~UInt(4095))!
    }

    @inlinable @inline(__always)
    public func entry(_ i: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (base + i &* 8).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// The split PTE lock of this table.
    @inlinable @inline(__always)
    public var ptl: UnsafeMutablePointer<SpinLock> { (base + 4096).assumingMemoryBound(to: SpinLock.self) }

    /// 1 while Linux would have no table here although the model has one: the model
    /// allocates a table on every fault, Linux only when it maps something, and Linux frees
    /// one that a 2 MiB MADV_DONTNEED emptied (CONFIG_PT_RECLAIM). Meaningful only while the
    /// table is empty; written under the PTL. Fault-around reads it (see `faultAround`).
    @usableFromInline var absentInLinux: UnsafeMutablePointer<Atomic<UInt8>> {
        (base + 4096 + 64).assumingMemoryBound(to: Atomic<UInt8>.self)
    }

    /// Whether Linux would have no page table here (`pmd_none`).
    @usableFromInline var isAbsentInLinux: Bool {
        absentInLinux.pointee.load(ordering: .relaxed) != 0 && isEmpty
    }

    /// What Linux has at this table's PMD entry instead of a PTE table (`PMDMapping`):
    /// the model keeps the 512 PTEs (its MMU walks to PTEs), Linux has one huge PMD. Written
    /// under the PTL; read under it, or racily by statistics.
    @inlinable @inline(__always)
    var pmdMapping: UnsafeMutablePointer<Atomic<UInt8>> {
        (base + 4096 + 65).assumingMemoryBound(to: Atomic<UInt8>.self)
    }

    /// Whether Linux maps this table's 2 MiB with one huge PMD (a THP or the huge zero page).
    @inlinable @inline(__always)
    var isPMDMapped: Bool { pmdMapping.pointee.load(ordering: .relaxed) != PMDMapping.none }

    @inlinable var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    static func initialize(_ raw: UnsafeMutableRawPointer) -> PageTablePage {
        let entries = raw.bindMemory(to: Atomic<UInt64>.self, capacity: entries)
        for i in 0..<Self.entries { (entries + i).initialize(to: Atomic(0)) }
        (raw + 4096).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        (raw + 4096 + 64).bindMemory(to: Atomic<UInt8>.self, capacity: 1).initialize(to: Atomic(1))
        (raw + 4096 + 65).bindMemory(to: Atomic<UInt8>.self, capacity: 1).initialize(to: Atomic(PMDMapping.none))
        return PageTablePage(base: raw)
    }
}

/// What a PMD entry holds where the model keeps a PTE table (`PageTablePage.pmdMapping`).
public enum PMDMapping {
    /// A PTE table, as in Linux.
    public static let none: UInt8 = 0
    /// `pmd_trans_huge()`: one anonymous THP (an order-9 folio of 512 contiguous frames,
    /// naturally aligned), its PTEs all present, in order, with the same permissions.
    public static let thp: UInt8 = 1
    /// `is_huge_zero_pmd()`: the huge zero page (the model's PTEs map the zero frame).
    public static let hugeZero: UInt8 = 2
}

/// Index of `address` at page-table `level` (4 = PGD … 1 = PTE).
@inlinable @inline(__always)
func ptIndex(_ address: UInt64, level: Int) -> Int {
    Int((address >> (12 + 9 * UInt64(level - 1))) & 511)
}

/// Bytes one entry maps at `level`.
@inlinable @inline(__always)
func ptSpan(level: Int) -> UInt64 { 1 << (12 + 9 * UInt64(level - 1)) }
