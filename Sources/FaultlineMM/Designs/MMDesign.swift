import FaultlineSync

/// One mmap-locking design: the hooks where the designs differ, over the shared mechanism of
/// `AddressSpace` (faults, VMAs, page tables, the calls). A design is a caseless enum whose
/// hooks are static; per-address-space state lives in `DesignState`, which the design makes.
///
/// The fault hook is reached through `Design.visit`, one switch whose arms are specialised
/// for each design (no existential call, no retain per fault); the writer-side hooks run once
/// per system call through the address space's `designType` metatype.
///
/// Adding a design: a file in this folder and one line in `Design`'s registry.
public protocol MMDesign {
    /// One line for `--help` and reports.
    static var summary: String { get }
    /// What the lock-free `/proc/pid/maps` walk does under this design.
    static var locklessMapsSummary: String { get }
    /// A deliberately broken control: never offered to users, never in `compare`.
    static var isBrokenControl: Bool { get }
    /// Whether the design's readers take no lock on the VMA tree (then it needs the RCU-safe
    /// maple tree).
    static var readsTreeLocklessly: Bool { get }
    /// Whether VMAs come from a `SLAB_TYPESAFE_BY_RCU` cache (Linux 6.15): a freed VMA is
    /// reused at once instead of after a grace period, and detaching waits for readers.
    static var vmaCacheTypesafeByRCU: Bool { get }
    /// Whether Lespinasse's COW race (`faultline cowrace`) loses the child's write.
    static func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool

    /// Per-address-space state (a range lock, lock statistics).
    static func makeState() -> DesignState

    /// A page fault at `address`: find and pin the VMA, run `faultCore` with the design's
    /// validation, and fall back as the design does.
    static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError>

    /// `mmap_write_lock()` has been taken: what else a writer section starts (a sequence count).
    static func writerBegin(_ mm: AddressSpace)
    /// Before `mmap_write_unlock()` or the downgrade: what the section ends.
    static func writerEnd(_ mm: AddressSpace)
    /// `vma_start_write()`: a writer is about to change `v` (mark it, make its count odd).
    static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef)
    /// The writer section ends: unmark every VMA marked in it (`mm.markedVMAs`).
    static func endVMAWrites(_ mm: AddressSpace)
    /// Whether `v`, freed inside a writer section, must wait for the section's end (its
    /// sequence count is still odd).
    static func freeWaitsForSectionEnd(_ v: VMARef) -> Bool
    /// `dup_mmap()` is about to copy `parents` (per-VMA locks write-lock them all).
    static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef])

    /// A writer call's exclusion over the range `want()` names (nil: the call will fail its
    /// checks): `mmap_lock` for write, or a range lock and the short lock.
    static func beginWriter(_ mm: AddressSpace, _ want: () -> Range<UInt64>?) -> RangeHandle?
    /// Ends what `beginWriter` started.
    static func endWriter(_ mm: AddressSpace, _ held: RangeHandle?)
    /// `mmap(2)` with the design's locking.
    static func mmap(_ mm: AddressSpace, _ addr: UInt64, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                     file: MMFile?, offset: UInt64) -> Result<UInt64, Errno>
    /// `munmap(2)` of the checked range `[addr, end)`.
    static func munmap(_ mm: AddressSpace, _ addr: UInt64, _ end: UInt64) -> Result<Void, Errno>
    /// madvise advice that leaves VMAs alone, over the checked range `[start, end)`.
    static func madviseRead(_ mm: AddressSpace, _ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno>

    /// One step of the lock-free `/proc/pid/maps` walk: the first VMA ending after `from`.
    static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine?
}

/// The shared mechanism, for designs that do not change it: `mmap_lock` around every writer.
extension MMDesign {
    public static var isBrokenControl: Bool { false }
    public static var readsTreeLocklessly: Bool { true }
    public static var vmaCacheTypesafeByRCU: Bool { false }
    public static func losesCOWRace(allowSpeculativeCOW: Bool) -> Bool { false }
    public static func makeState() -> DesignState { DesignState() }

    public static func writerBegin(_ mm: AddressSpace) {}
    public static func writerEnd(_ mm: AddressSpace) {}
    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) {}
    public static func endVMAWrites(_ mm: AddressSpace) {}
    public static func freeWaitsForSectionEnd(_ v: VMARef) -> Bool { false }
    public static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef]) {}

    public static func beginWriter(_ mm: AddressSpace, _ want: () -> Range<UInt64>?) -> RangeHandle? {
        mm.writeLock()
        return nil
    }
    public static func endWriter(_ mm: AddressSpace, _ held: RangeHandle?) { mm.writeUnlock() }
    public static func mmap(_ mm: AddressSpace, _ addr: UInt64, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                            file: MMFile?, offset: UInt64) -> Result<UInt64, Errno> {
        mm.mmapUnderMmapLock(addr, length, prot, flags, file: file, offset: offset)
    }
    public static func munmap(_ mm: AddressSpace, _ addr: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        mm.munmapUnderMmapLock(addr, end)
    }
    public static func madviseRead(_ mm: AddressSpace, _ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        mm.madviseReadUnderMmapLock(start, end, advice)
    }
}
