/// Test-only: `spf-vmaseq` whose mprotect does not bump the sequence count of the VMAs it
/// changes, so a speculative fault validated against that count installs a PTE the new
/// protection forbids. The stress test must catch it.
public enum BrokenSPFVMASeqMprotectDesign: VMASeqDesign {
    public static let summary = "TEST ONLY: spf-vmaseq without the sequence-count bump on mprotect"
    public static var isBrokenControl: Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeVMASeq(address, kind)
    }

    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) {
        if mm.writerCall == .mprotect { return }
        mm.vmaSeqWriteBegin(v)
    }
}
