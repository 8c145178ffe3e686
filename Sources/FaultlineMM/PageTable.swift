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
    public static let frameMask: UInt64 = 0x000F_FFFF_FFFF_F000

    @inlinable @inline(__always)
    public static func make(_ frame: FrameNumber, writable w: Bool, exec: Bool, dirty d: Bool = false) -> UInt64 {
        UInt64(frame) << 12 | present | user | accessed | (w ? writable : 0) | (exec ? 0 : noExec) | (d ? dirty : 0)
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

    @inlinable var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    static func initialize(_ raw: UnsafeMutableRawPointer) -> PageTablePage {
        let entries = raw.bindMemory(to: Atomic<UInt64>.self, capacity: entries)
        for i in 0..<Self.entries { (entries + i).initialize(to: Atomic(0)) }
        (raw + 4096).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        return PageTablePage(base: raw)
    }
}

/// Index of `address` at page-table `level` (4 = PGD … 1 = PTE).
@inlinable @inline(__always)
func ptIndex(_ address: UInt64, level: Int) -> Int {
    Int((address >> (12 + 9 * UInt64(level - 1))) & 511)
}

/// Bytes one entry maps at `level`.
@inlinable @inline(__always)
func ptSpan(level: Int) -> UInt64 { 1 << (12 + 9 * UInt64(level - 1)) }
