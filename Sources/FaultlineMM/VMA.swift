import FaultlineSync
import FaultlineTrees
import Synchronization

/// `struct vm_area_struct`. Lives in RCU-freed slab memory and is reached through raw
/// pointers (`VMARef`), never through a class reference: lockless fault paths read it.
/// Every field a lockless reader may read is a relaxed atomic.
public struct VMA: ~Copyable {
    public let start: Atomic<UInt64>
    public let end: Atomic<UInt64>
    /// `vm_flags` (`VMFlags` bits).
    public let flags: Atomic<UInt64>
    /// `vm_pgoff`: file page of `start`; for anonymous memory, `start >> PAGE_SHIFT` at creation.
    public let pgoff: Atomic<UInt64>
    /// `vm_file`: an `Unmanaged<MMFile>` the VMA holds a reference to, or 0.
    let fileBits: Atomic<UInt>
    /// `anon_vma` (an unretained `AnonVMA`), or 0 until the first anonymous page.
    let anonVMABits: Atomic<UInt>
    /// `anon_vma_chain`: its first entry (an `AVCNode`), or 0. Changed by the writer that
    /// holds the VMA (and `page_table_lock` for `anon_vma_prepare`).
    let anonChainHeadBits: Atomic<UInt>
    /// The chain's length: 1 for an anon_vma of its own, more after fork. Read by
    /// `find_mergeable_anon_vma` on neighbours (`list_is_singular`).
    let anonChain: Atomic<UInt32>
    /// `anon_name` (interned), 0 for none.
    let anonName: Atomic<UInt32>
    /// `vma->vm_lock` (Linux 6.4 per-VMA lock).
    public let lock: RWSemaphore
    /// `vm_lock_seq`: equals the mm's `mm_lock_seq` while a writer holding mmap_lock has it.
    public let lockSeq: Atomic<UInt64>
    /// `detached`: removed from the tree (a per-VMA-lock fault must not use it).
    public let detached: Atomic<Bool>
    /// Laurent Dufour's `vm_sequence`: odd while a writer changes the VMA.
    public let seq: SeqCount
    /// Dufour's `vm_ref_count`: speculative faults hold a reference for their duration
    /// (`get_vma`/`put_vma`). Memory is freed after an RCU grace period here, so the count is
    /// kept for the cache-line traffic it costs and checked (1 at rest) by the stress test.
    public let refcount: Atomic<Int>
    /// `vm_refcnt` (Linux 6.15's VMA lock): 0 detached, 1 attached, one more per reader, and
    /// `VMA_LOCK_OFFSET` more while a writer waits for the readers to leave.
    public let vmRefcnt: Atomic<UInt32>
    /// `vm_mm`: the owning address space (an opaque `AddressSpace` pointer). A VMA from a
    /// `SLAB_TYPESAFE_BY_RCU` cache may be reused by another address space while a reader
    /// still holds its pointer: 6.15 readers re-check it.
    public let vmMM: Atomic<UInt>
    /// The futex word a writer waiting for this VMA's readers sleeps on, bumped by the reader
    /// that leaves it the writer's alone (`mm->vma_writer_wait` and `rcuwait_wake_up()`; kept
    /// in the VMA, whose memory outlives any address space a reused VMA passed through).
    public let writerWake: Atomic<UInt32>

    init(start: UInt64, end: UInt64, flags: VMFlags, pgoff: UInt64, file: UInt, mm: UInt, lockSlots: CounterSlots?) {
        self.start = Atomic(start)
        self.end = Atomic(end)
        self.flags = Atomic(flags.rawValue)
        self.pgoff = Atomic(pgoff)
        fileBits = Atomic(file)
        anonVMABits = Atomic(0)
        anonChainHeadBits = Atomic(0)
        anonChain = Atomic(0)
        anonName = Atomic(0)
        lock = RWSemaphore(slots: lockSlots, spinLimit: 256)
        // vma_lock_init(): -1, never equal to mm_lock_seq, so a new VMA starts unlocked.
        lockSeq = Atomic(UInt64.max)
        detached = Atomic(true)
        seq = SeqCount()
        refcount = Atomic(1)
        vmRefcnt = Atomic(0)
        vmMM = Atomic(mm)
        writerWake = Atomic(0)
    }

    /// `VMA_LOCK_OFFSET`: what a writer adds to `vm_refcnt`; readers fail while it is there.
    public static let lockOffset: UInt32 = 0x4000_0000
    /// `VMA_REF_LIMIT`: readers may raise `vm_refcnt` below this only.
    public static let refLimit: UInt32 = lockOffset - 1

    /// `vm_area_alloc()` of an object reused from the `SLAB_TYPESAFE_BY_RCU` cache: readers
    /// that still hold its old pointer may read any field and try to raise `vm_refcnt`, so
    /// every field is stored atomically and `vm_refcnt` stays 0 (detached) until attached.
    func reinitialize(start: UInt64, end: UInt64, flags: VMFlags, pgoff: UInt64, file: UInt, mm: UInt) {
        self.start.store(start, ordering: .relaxed)
        self.end.store(end, ordering: .relaxed)
        self.flags.store(flags.rawValue, ordering: .relaxed)
        self.pgoff.store(pgoff, ordering: .relaxed)
        fileBits.store(file, ordering: .relaxed)
        anonVMABits.store(0, ordering: .relaxed)
        anonChainHeadBits.store(0, ordering: .relaxed)
        anonChain.store(0, ordering: .relaxed)
        anonName.store(0, ordering: .relaxed)
        lockSeq.store(UInt64.max, ordering: .relaxed)
        detached.store(true, ordering: .relaxed)
        refcount.store(1, ordering: .relaxed)
        vmMM.store(mm, ordering: .releasing)
    }
}

/// A VMA as the address space passes it around.
public typealias VMARef = UnsafeMutablePointer<VMA>

extension UnsafeMutablePointer where Pointee == VMA {
    @inlinable public var vmStart: UInt64 { pointee.start.load(ordering: .relaxed) }
    @inlinable public var vmEnd: UInt64 { pointee.end.load(ordering: .relaxed) }
    @inlinable public var vmFlags: VMFlags { VMFlags(rawValue: pointee.flags.load(ordering: .relaxed)) }
    @inlinable public var vmPgoff: UInt64 { pointee.pgoff.load(ordering: .relaxed) }

    /// `vm_file`, without reference counting.
    public var vmFile: MMFile? {
        let b = pointee.fileBits.load(ordering: .relaxed)
        return b == 0 ? nil : Unmanaged<MMFile>.fromOpaque(UnsafeRawPointer(bitPattern: b)!).takeUnretainedValue()
    }

    /// `writerWake`'s own 32-bit word, for futex calls (an atomic's storage is at a stable
    /// address: borrowing it gives that address).
    @usableFromInline var writerWakeWord: UnsafeMutablePointer<UInt32> {
        withUnsafePointer(to: pointee.writerWake) { UnsafeMutableRawPointer(mutating: $0).assumingMemoryBound(to: UInt32.self) }
    }

    @usableFromInline var fileBits: UInt { pointee.fileBits.load(ordering: .relaxed) }
    @usableFromInline var anonVMA: UInt { pointee.anonVMABits.load(ordering: .relaxed) }
    var anonChainLength: UInt32 { pointee.anonChain.load(ordering: .relaxed) }
    var anonNameID: UInt32 { pointee.anonName.load(ordering: .relaxed) }

    /// `vma_is_anonymous()`.
    @inlinable public var isAnonymous: Bool { fileBits == 0 }

    /// `vma_had_uncowed_parents()`: its anon_vma chain reaches a parent's (after fork).
    var hadUncowedParents: Bool { anonVMA != 0 && anonChainLength > 1 }

    func setBounds(_ s: UInt64, _ e: UInt64) {
        pointee.start.store(s, ordering: .relaxed)
        pointee.end.store(e, ordering: .relaxed)
    }

    func setFlags(_ f: VMFlags) { pointee.flags.store(f.rawValue, ordering: .relaxed) }
    func setPgoff(_ p: UInt64) { pointee.pgoff.store(p, ordering: .relaxed) }
}

/// Interned `anon_name` strings (`[anon:NAME]` in maps), and the names of special mappings
/// mirrored from another process (an id with `specialMapping` set, shown as it is).
final class AnonNames: @unchecked Sendable {
    static let shared = AnonNames()
    static let specialMapping: UInt32 = 1 << 31
    let lock = SpinLock()
    var names: [String] = [""]
    var ids: [String: UInt32] = [:]

    func id(_ name: String) -> UInt32 {
        lock.withLock {
            if let i = ids[name] { return i }
            names.append(name)
            ids[name] = UInt32(names.count - 1)
            return UInt32(names.count - 1)
        }
    }

    func name(_ id: UInt32) -> String { lock.withLock { names[Int(id)] } }
}
