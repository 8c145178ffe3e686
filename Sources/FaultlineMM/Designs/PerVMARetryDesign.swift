/// Per-VMA locks where a fault that waited for I/O retries under the VMA lock again (not
/// under `mmap_lock`).
public enum PerVMARetryDesign: MMDesign {
    public static let summary = "per-VMA locks; a fault that waited for I/O retries under the VMA lock"
    public static let locklessMapsSummary = PerVMADesign.locklessMapsSummary

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: true)
    }

    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { PerVMADesign.vmaStartWrite(mm, v) }
    public static func endVMAWrites(_ mm: AddressSpace) { PerVMADesign.endVMAWrites(mm) }
    public static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef]) { PerVMADesign.forkBegin(mm, parents) }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? { PerVMADesign.nextMapsLine(mm, from) }
}
