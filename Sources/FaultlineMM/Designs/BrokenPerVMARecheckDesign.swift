/// Test-only: per-VMA locks whose `vma_start_read` skips the re-check after the trylock, so a
/// writer that marks the VMA between the first check and the trylock is missed. The stress
/// test must catch it.
public enum BrokenPerVMARecheckDesign: MMDesign {
    public static let summary = "TEST ONLY: per-vma without vma_start_read's re-check after the trylock"
    public static let locklessMapsSummary = PerVMADesign.locklessMapsSummary
    public static var isBrokenControl: Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: false, recheckAfterTrylock: false)
    }

    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { PerVMADesign.vmaStartWrite(mm, v) }
    public static func endVMAWrites(_ mm: AddressSpace) { PerVMADesign.endVMAWrites(mm) }
    public static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef]) { PerVMADesign.forkBegin(mm, parents) }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? { PerVMADesign.nextMapsLine(mm, from) }
}
