/// Per-VMA locks as Linux 6.15–6.18 has them: the lock is the VMA's reference count
/// (`vm_refcnt`), VMAs are reused at once (SLAB_TYPESAFE_BY_RCU) so a reader re-checks
/// `vm_mm` and the range after taking its reference; a fault that must wait for I/O retries
/// under `mmap_lock`; MADV_DONTNEED/MADV_FREE and the maps reader run under the VMA lock.
public enum PerVMA615Design: RefcountVMALockedDesign {
    public static let summary = "lock_vma_under_rcu (6.15): raise vm_refcnt unless detached or a writer is in, re-check vm_mm, vm_lock_seq and the range (VMAs are reused at once); fall back to mmap_lock; I/O retries under mmap_lock"

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMARefcnt(address, kind)
    }
}
