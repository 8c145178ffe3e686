/// Laurent Dufour's speculative page faults (v11, 2018): per-VMA sequence counts and VMA
/// reference counts.
public enum SPFVMASeqDesign: MMDesign {
    public static let summary = "speculative faults validated against the faulting VMA's own sequence count (and holding a VMA reference); COW faults on present PTEs go to mmap_lock"
    public static let locklessMapsSummary = "copies each VMA under RCU, validated by its sequence count; mmap_lock for that VMA on a change"
    /// Its count never moves when fork write-protects PTEs: with speculative COW allowed the
    /// child's write is lost.
    public static func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool { allowSpeculativeCOW }

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeVMASeq(address, kind)
    }

    /// `vm_write_begin()`: the VMA's count is odd until the section ends.
    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { mm.vmaSeqWriteBegin(v) }
    public static func endVMAWrites(_ mm: AddressSpace) { mm.vmaSeqWriteEndAll() }
    /// A VMA whose count is odd may not be freed (a grace period may pass) before it ends.
    public static func freeWaitsForSectionEnd(_ v: VMARef) -> Bool { v.pointee.seq.isWriting }

    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.mapsLineUnderVMASeq(from) ?? mm.mapsLineFallback(from)
    }
}
