/// Michel Lespinasse's speculative page faults (2021): an mm-wide sequence count, bumped by
/// every `mmap_lock` writer, validated under the PTE lock.
public enum SPFMMSeqDesign: MMSeqDesign {
    public static let summary = "speculative faults under RCU, validated under the PTE lock against an mm-wide sequence count bumped by every mmap writer; any change aborts to mmap_lock"

    /// `do_handle_mm_fault()` speculatively, then under `mmap_lock`.
    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultSpeculativeMMSeq(address, kind, validated: true)
    }
}
