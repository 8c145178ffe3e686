/// Michel Lespinasse's speculative page faults (2021): an mm-wide sequence count, bumped by
/// every `mmap_lock` writer, validated under the PTE lock.
public enum SPFMMSeqDesign: MMDesign {
    public static let summary = "speculative faults under RCU, validated under the PTE lock against an mm-wide sequence count bumped by every mmap writer; any change aborts to mmap_lock"
    public static let locklessMapsSummary = "copies each VMA under RCU, validated by the mm sequence count; mmap_lock for that VMA on a change"

    /// `do_handle_mm_fault()` speculatively, then under `mmap_lock`.
    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeMMSeq(address, kind, validated: true)
    }

    /// `mmap_seq_write_begin()`: odd while the writer is inside.
    public static func writerBegin(_ mm: AddressSpace) { mm.mmSeq.writeBegin() }
    public static func writerEnd(_ mm: AddressSpace) { mm.mmSeq.writeEnd() }

    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.mapsLineUnderMMSeq(from) ?? mm.mapsLineFallback(from)
    }
}
