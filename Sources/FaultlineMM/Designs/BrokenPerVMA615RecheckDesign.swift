/// Test-only: the 6.15 VMA lock without the re-checks after the reference is taken (`vm_mm`
/// and the range), as if a VMA could not be reused while a reader holds its pointer. A fault
/// that meets a reused VMA then faults through the wrong one. The stress test must catch it.
public enum BrokenPerVMA615RecheckDesign: RefcountVMALockedDesign {
    public static let summary = "TEST ONLY: per-vma-6.15 without the vm_mm and range re-checks after vma_start_read"
    public static var isBrokenControl: Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMARefcnt(address, kind, recheck: false)
    }
}
