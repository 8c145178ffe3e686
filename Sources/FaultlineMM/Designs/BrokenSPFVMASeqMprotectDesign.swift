/// Test-only: `spf-vmaseq` whose mprotect does not bump the sequence count of the VMAs it
/// changes, so a speculative fault validated against that count installs a PTE the new
/// protection forbids. The stress test must catch it.
public enum BrokenSPFVMASeqMprotectDesign: MMDesign {
    public static let summary = "TEST ONLY: spf-vmaseq without the sequence-count bump on mprotect"
    public static let locklessMapsSummary = SPFVMASeqDesign.locklessMapsSummary
    public static var isBrokenControl: Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeVMASeq(address, kind)
    }

    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) {
        if mm.writerCall == .mprotect { return }
        SPFVMASeqDesign.vmaStartWrite(mm, v)
    }
    public static func endVMAWrites(_ mm: AddressSpace) { SPFVMASeqDesign.endVMAWrites(mm) }
    public static func freeWaitsForSectionEnd(_ v: VMARef) -> Bool { SPFVMASeqDesign.freeWaitsForSectionEnd(v) }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? { SPFVMASeqDesign.nextMapsLine(mm, from) }
}
