/// Test-only: `spf-mmseq` with the validation removed. The stress test must catch it.
public enum BrokenSPFDesign: MMSeqDesign {
    public static let summary = "TEST ONLY: spf-mmseq without validation"
    public static var isBrokenControl: Bool { true }
    public static func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool { true }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeMMSeq(address, kind, validated: false)
    }
}
