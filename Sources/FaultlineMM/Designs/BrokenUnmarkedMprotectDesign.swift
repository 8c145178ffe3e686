/// Test-only: per-VMA locks where mprotect changes VMAs without marking them
/// (`vma_start_write` left out of one writer), so faults keep running under their VMA read
/// locks while the protection changes. The stress test must catch it.
public enum BrokenUnmarkedMprotectDesign: PerVMALockedDesign {
    public static let summary = "TEST ONLY: per-vma whose mprotect does not mark the VMAs it changes"
    public static var isBrokenControl: Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: false)
    }

    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) {
        if mm.writerCall == .mprotect { return }
        mm.vmaLockMark(v)
    }
}
