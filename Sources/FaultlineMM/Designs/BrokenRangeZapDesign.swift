import FaultlineSync

/// Test-only: the `range` design whose munmap zaps a page beyond each end of the range it
/// holds, clearing PTEs of neighbours it does not exclude. The stress test must catch it.
public enum BrokenRangeZapDesign: RangeLockedDesign {
    public static let summary = "TEST ONLY: range whose munmap zaps outside the range it holds"
    public static var isBrokenControl: Bool { true }
    public static func makeState() -> DesignState { RangeDesign.makeState() }

    public static func munmap(_ mm: AddressSpace, _ addr: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        mm.munmapRanged(addr, end, zapBeyond: Linux.pageSize)
    }
}
