/// Stock Linux before 6.4: one rw-semaphore (`mmap_lock`) per address space.
public enum GlobalDesign: MMDesign {
    public static let summary = "mmap_lock rwsem: faults/madvise read, mmap/munmap/mprotect/mremap/brk write; munmap downgrades before zapping; I/O faults drop the lock and retry"
    public static let locklessMapsSummary = "no lock-free structure: takes mmap_lock for read per VMA instead of for the whole walk"
    /// Readers hold `mmap_lock`, so any tree will do (`--tree rbtree`).
    public static var readsTreeLocklessly: Bool { false }

    /// `do_user_addr_fault()` under `mmap_read_lock()`.
    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultUnderMmapLock(address, kind)
    }

    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.mapsLineUnderMmapLock(from)
    }
}
