import FaultlineSync

/// Lespinasse's fine-grained locking: `mmap_lock` shrinks to a short lock for the VMA tree and
/// a range lock (the Kogan–Dice–Issa list lock) covers each operation's range.
public enum RangeDesign: MMDesign {
    public static let summary = "short lock for the VMA tree + list range lock for the operation's range; faults read-lock their page"
    public static let locklessMapsSummary = "takes the short lock per VMA instead of for the whole walk"
    public static func makeState() -> DesignState { DesignState(listLock: ListRangeLock()) }

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
