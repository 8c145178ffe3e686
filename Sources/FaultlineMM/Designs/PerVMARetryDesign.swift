/// Per-VMA locks where a fault that waited for I/O retries under the VMA lock again (not
/// under `mmap_lock`).
public enum PerVMARetryDesign: PerVMALockedDesign {
    public static let summary = "per-VMA locks; a fault that waited for I/O retries under the VMA lock"

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: true)
    }
}
