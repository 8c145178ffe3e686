/// Test-only: `spf-mmseq` with the validation removed. The stress test must catch it.
public enum BrokenSPFDesign: MMDesign {
    public static let summary = "TEST ONLY: spf-mmseq without validation"
    public static let locklessMapsSummary = SPFMMSeqDesign.locklessMapsSummary
    public static var isBrokenControl: Bool { true }
    public static func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeMMSeq(address, kind, validated: false)
    }

    public static func writerBegin(_ mm: AddressSpace) { SPFMMSeqDesign.writerBegin(mm) }
    public static func writerEnd(_ mm: AddressSpace) { SPFMMSeqDesign.writerEnd(mm) }
    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? { SPFMMSeqDesign.nextMapsLine(mm, from) }
}
