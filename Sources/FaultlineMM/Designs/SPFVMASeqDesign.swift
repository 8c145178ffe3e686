/// Laurent Dufour's speculative page faults (v11, 2018): per-VMA sequence counts and VMA
/// reference counts.
public enum SPFVMASeqDesign: VMASeqDesign {
    public static let summary = "speculative faults validated against the faulting VMA's own sequence count (and holding a VMA reference); COW faults on present PTEs go to mmap_lock"
    /// Its count never moves when fork write-protects PTEs: with speculative COW allowed the
    /// child's write is lost.
    public static func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool { allowSpeculativeCOW }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeVMASeq(address, kind)
    }
}
