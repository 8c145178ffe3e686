import FaultlineSync

/// Test-only: the `range` design whose munmap zaps a page beyond each end of the range it
/// holds, clearing PTEs of neighbours it does not exclude. The stress test must catch it.
public enum BrokenRangeZapDesign: MMDesign {
    public static let summary = "TEST ONLY: range whose munmap zaps outside the range it holds"
    public static let locklessMapsSummary = RangeDesign.locklessMapsSummary
    public static var isBrokenControl: Bool { true }
    public static func makeState() -> DesignState { RangeDesign.makeState() }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultRanged(address, kind)
    }

    public static func beginWriter(_ mm: AddressSpace, _ want: () -> Range<UInt64>?) -> RangeHandle? {
        RangeDesign.beginWriter(mm, want)
    }
    public static func endWriter(_ mm: AddressSpace, _ held: RangeHandle?) { RangeDesign.endWriter(mm, held) }
    public static func mmap(_ mm: AddressSpace, _ addr: UInt64, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                            file: MMFile?, offset: UInt64) -> Result<UInt64, Errno> {
        RangeDesign.mmap(mm, addr, length, prot, flags, file: file, offset: offset)
    }
    public static func munmap(_ mm: AddressSpace, _ addr: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        mm.munmapRanged(addr, end, zapBeyond: Linux.pageSize)
    }
    public static func madviseRead(_ mm: AddressSpace, _ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        RangeDesign.madviseRead(mm, start, end, advice)
    }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? { RangeDesign.nextMapsLine(mm, from) }
}
