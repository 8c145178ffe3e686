/// Suren Baghdasaryan's per-VMA locks (Linux 6.4): a fault read-locks its VMA under RCU; a
/// fault that must wait for I/O retries under `mmap_lock`, as Linux does.
public enum PerVMADesign: MMDesign {
    public static let summary = "lock_vma_under_rcu: read-trylock the VMA's lock, fail if vm_lock_seq == mm_lock_seq or detached; fall back to mmap_lock; I/O retries under mmap_lock"
    public static let locklessMapsSummary = "read-locks each VMA under RCU (lock_next_vma); mmap_lock for that VMA when the lock fails"

    @inlinable
    public static func fault(_ mm: AddressSpace, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mm.faultPerVMA(address, kind, retryUnderVMALock: false)
    }

    public static func vmaStartWrite(_ mm: AddressSpace, _ v: VMARef) { mm.vmaLockMark(v) }
    public static func endVMAWrites(_ mm: AddressSpace) { mm.vmaLockUnmarkAll() }
    /// dup_mmap() write-locks every parent VMA: a per-VMA-lock fault must not copy on write
    /// while fork write-protects the PTEs under it.
    public static func forkBegin(_ mm: AddressSpace, _ parents: [VMARef]) {
        for v in parents { mm.vmaStartWrite(v) }
    }

    public static func nextMapsLine(_ mm: AddressSpace, _ from: UInt64) -> MapsLine? {
        mm.lockNextVMA(from) ?? mm.mapsLineFallback(from)
    }
}
