/// Suren Baghdasaryan's per-VMA locks (Linux 6.4): a fault read-locks its VMA under RCU; a
/// fault that must wait for I/O retries under `mmap_lock`, as Linux does.
public enum PerVMADesign: PerVMALockedDesign {
    public static let summary = "lock_vma_under_rcu: read-trylock the VMA's lock, fail if vm_lock_seq == mm_lock_seq or detached; fall back to mmap_lock; I/O retries under mmap_lock"

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: false)
    }
}
