import FaultlineSync

/// Designs built on Lespinasse's fine-grained locking: `mmap_lock` shrinks to a short lock
/// for the VMA tree and a range lock covers each operation's range. A conforming design
/// chooses its range lock (`makeState`) and fault; the rest is shared here.
public protocol RangeLockedDesign: MMDesign {}

extension RangeLockedDesign {
    public static var locklessMapsSummary: String { "takes the short lock per VMA instead of for the whole walk" }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultRanged(address, kind)
    }

    public static func beginWriter(_ mm: AddressSpace, _ want: () -> Range<UInt64>?) -> RangeHandle? {
        mm.rangeWriterBegin(want)
    }
    public static func endWriter(_ mm: AddressSpace, _ held: RangeHandle?) { mm.rangeWriterEnd(held) }
    public static func mmap(_ mm: AddressSpace, _ addr: UInt64, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                            file: MMFile?, offset: UInt64) -> Result<UInt64, Errno> {
        mm.mmapRanged(addr, length, prot, flags, file: file, offset: offset)
    }
    public static func munmap(_ mm: AddressSpace, _ addr: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        mm.munmapRanged(addr, end)
    }
    public static func madviseRead(_ mm: AddressSpace, _ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        mm.madviseReadRanged(start, end, advice)
    }
    /// No lock-free structure to validate against: the short lock is dropped between VMAs.
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.mapsLineUnderMmapLock(from)
    }
}

/// Designs built on per-VMA locks (Linux 6.4): writers mark each VMA they change, fork marks
/// them all, `mmap_write_unlock` unmarks them at once, and maps readers lock VMA by VMA. A
/// conforming design chooses its fault.
public protocol PerVMALockedDesign: MMDesign {}

extension PerVMALockedDesign {
    public static var locklessMapsSummary: String {
        "read-locks each VMA under RCU (lock_next_vma); mmap_lock for that VMA when the lock fails"
    }
    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { mm.vmaLockMark(v) }
    public static func endVMAWrites(_ mm: AddressSpace) { mm.vmaLockUnmarkAll() }
    /// dup_mmap() write-locks every parent VMA: a per-VMA-lock fault must not copy on write
    /// while fork write-protects the PTEs under it.
    public static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef]) {
        for v in parents { mm.vmaStartWrite(v) }
    }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.lockNextVMA(from) ?? mm.mapsLineFallback(from)
    }
}

/// Designs built on an mm-wide sequence count (Lespinasse's SPF): every `mmap_lock` writer
/// makes it odd, then even; maps readers validate against it. A conforming design chooses
/// its fault.
public protocol MMSeqDesign: MMDesign {}

extension MMSeqDesign {
    public static var locklessMapsSummary: String {
        "copies each VMA under RCU, validated by the mm sequence count; mmap_lock for that VMA on a change"
    }
    /// `mmap_seq_write_begin()`: odd while the writer is inside.
    public static func writerBegin(_ mm: AddressSpace) { mm.mmSeq.writeBegin() }
    public static func writerEnd(_ mm: AddressSpace) { mm.mmSeq.writeEnd() }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.mapsLineUnderMMSeq(from) ?? mm.mapsLineFallback(from)
    }
}

/// Designs built on per-VMA sequence counts (Dufour's SPF): each VMA a writer changes has an
/// odd count until the section ends (and may not be freed before), maps readers validate
/// against it. A conforming design chooses its fault.
public protocol VMASeqDesign: MMDesign {}

extension VMASeqDesign {
    public static var locklessMapsSummary: String {
        "copies each VMA under RCU, validated by its sequence count; mmap_lock for that VMA on a change"
    }
    /// `vm_write_begin()`: the VMA's count is odd until the section ends.
    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { mm.vmaSeqWriteBegin(v) }
    public static func endVMAWrites(_ mm: AddressSpace) { mm.vmaSeqWriteEndAll() }
    /// A VMA whose count is odd may not be freed (a grace period may pass) before it ends.
    public static func freeWaitsForSectionEnd(_ v: VMARef) -> Bool { v.pointee.seq.isWriting }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.mapsLineUnderVMASeq(from) ?? mm.mapsLineFallback(from)
    }
}

/// Designs built on Linux 6.15's VMA lock: `vm_refcnt` is the lock, VMAs are reused at once
/// from a SLAB_TYPESAFE_BY_RCU cache, `mm_lock_seq` is a sequence count (6.14: odd while
/// `mmap_lock` is held for write), and MADV_DONTNEED/MADV_FREE and the maps reader run under
/// the VMA lock (6.17). A conforming design chooses its fault.
public protocol RefcountVMALockedDesign: MMDesign {}

extension RefcountVMALockedDesign {
    public static var vmaCacheTypesafeByRCU: Bool { true }
    public static var locklessMapsSummary: String {
        "takes each VMA's reference under RCU and re-checks it (lock_next_vma); mmap_lock for that VMA when that fails"
    }
    /// `mmap_write_lock()` → `mm_lock_seqcount_begin()`.
    public static func writerBegin(_ mm: AddressSpace) { mm.mmLockSeq.wrappingAdd(1, ordering: .releasing) }
    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { mm.vmaRefcntMark(v) }
    /// `vma_end_write_all()` → `mm_lock_seqcount_end()`: every mark ends at once.
    public static func endVMAWrites(_ mm: AddressSpace) { mm.vmaLockUnmarkAll() }
    public static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef]) {
        for v in parents { mm.vmaStartWrite(v) }
    }
    public static func madviseRead(_ mm: AddressSpace, _ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        mm.madviseReadPerVMARefcnt(start, end, advice)
    }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.lockNextVMARefcnt(from) ?? mm.mapsLineFallback(from)
    }
}
