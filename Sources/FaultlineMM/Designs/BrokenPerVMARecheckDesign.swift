/// Test-only: per-VMA locks whose `vma_start_read` skips the re-check after the trylock, so a
/// writer that marks the VMA between the first check and the trylock is missed. The stress
/// test must catch it.
public enum BrokenPerVMARecheckDesign: PerVMALockedDesign {
    public static let summary = "TEST ONLY: per-vma without vma_start_read's re-check after the trylock"
    public static var isBrokenControl: Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: false, recheckAfterTrylock: false)
    }
}
