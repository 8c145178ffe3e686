import CFaultline
import FaultlineSync
import Synchronization

/// Lespinasse's validation: the mm-wide sequence count has not moved since the fault began.
/// Checked under the page-table lock, so a writer that bumped the count before zapping or
/// write-protecting this table is seen, and one that bumps it later finds our PTE.
@usableFromInline
struct MMSeqValidator: FaultValidator {
    /// Unmanaged, read with `_withUnsafeGuaranteedRef`: `unowned(unsafe)` still let the
    /// compiler retain the address space per check, a write to a line every thread reads.
    @usableFromInline let mm: Unmanaged<AddressSpace>
    @usableFromInline let start: UInt32

    @inlinable init(mm: AddressSpace, start: UInt32) {
        self.mm = Unmanaged.passUnretained(mm)
        self.start = start
    }

    /// `mmap_seq_read_check()`.
    @inlinable func validate() -> Bool { mm._withUnsafeGuaranteedRef { !$0.mmSeq.readRetry(start) } }
    @inlinable var mayPrepareAnonVMA: Bool { false }
    @inlinable var mayWaitForIO: Bool { false }
    @inlinable var mayHandleCOW: Bool { true }
    @inlinable var mayAllocateTables: Bool { false }
}

/// The test-only control: speculation without validation. The stress test must catch it.
@usableFromInline
struct UnvalidatedSpeculation: FaultValidator {
    @inlinable init() {}
    @inlinable func validate() -> Bool { true }
    @inlinable var mayPrepareAnonVMA: Bool { false }
    @inlinable var mayWaitForIO: Bool { false }
    @inlinable var mayHandleCOW: Bool { true }
    @inlinable var mayAllocateTables: Bool { false }
}

/// Dufour's validation: the faulting VMA's own sequence count has not moved and the VMA is
/// still in the tree. Blind to changes elsewhere in the mm (fork's write-protection of PTEs
/// included), which is why copy on write of a present PTE is refused unless configured.
@usableFromInline
struct VMASeqValidator: FaultValidator {
    @usableFromInline let vma: VMARef
    @usableFromInline let start: UInt32
    @usableFromInline let cow: Bool

    @inlinable init(vma: VMARef, start: UInt32, cow: Bool) {
        self.vma = vma
        self.start = start
        self.cow = cow
    }

    @inlinable func validate() -> Bool {
        !vma.pointee.seq.readRetry(start) && !vma.pointee.detached.load(ordering: .relaxed)
    }
    @inlinable var mayPrepareAnonVMA: Bool { false }
    @inlinable var mayWaitForIO: Bool { false }
    @inlinable var mayHandleCOW: Bool { cow }
    @inlinable var mayAllocateTables: Bool { false }
}

extension AddressSpace {
    /// Lespinasse's speculative fault (2021): read `mm_seq` (odd: a writer is inside, abort),
    /// find and copy the VMA under RCU, re-check the count so the copy is consistent, then run
    /// the shared fault core with validation under the PTL. Anonymous VMAs with an anon_vma and
    /// existing page tables only; anything else, or any change, aborts to `mmap_lock`.
    /// `validated: false` is the broken control (`broken-spf`): no validation at all.
    @inlinable
    func faultSpeculativeMMSeq(_ address: UInt64, _ kind: AccessKind, validated: Bool) -> Result<Void, FaultError> {
        let outcome: FaultOutcome
        rcuRead.readLock()
        attempt: do {
            let seq = mmSeq.rawRead()
            if seq & 1 != 0 { outcome = .abort(.seqChanged); break attempt }
            guard let vma = tree.lookup(address) else { outcome = .abort(.noVMA); break attempt }
            let s = VMASnapshot(vma)
            if mmSeq.readRetry(seq) { outcome = .abort(.seqChanged); break attempt }
            if s.fileBits != 0 { outcome = .abort(.notAnonymous); break attempt }
            if !validated {
                outcome = faultCore(s, address, kind, UnvalidatedSpeculation())
            } else {
                outcome = faultCore(s, address, kind, MMSeqValidator(mm: self, start: seq))
            }
        }
        rcuRead.readUnlock()
        return finishLockless(outcome, address, kind)
    }

    /// Dufour's speculative fault (v11): take a reference on the VMA found under RCU, read its
    /// sequence count (odd: abort), copy it, re-check, and validate against that count only.
    @inlinable
    func faultSpeculativeVMASeq(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        let outcome: FaultOutcome
        rcuRead.readLock()
        attempt: do {
            guard let vma = tree.lookup(address) else { outcome = .abort(.noVMA); break attempt }
            vma.pointee.refcount.wrappingAdd(1, ordering: .relaxed)   // get_vma()
            defer { vma.pointee.refcount.wrappingSubtract(1, ordering: .relaxed) }   // put_vma()
            let seq = vma.pointee.seq.rawRead()
            if seq & 1 != 0 { outcome = .abort(.seqChanged); break attempt }
            let s = VMASnapshot(vma)
            if vma.pointee.seq.readRetry(seq) { outcome = .abort(.seqChanged); break attempt }
            if vma.pointee.detached.load(ordering: .acquiring) { outcome = .abort(.detached); break attempt }
            if address < s.start || address >= s.end { outcome = .abort(.vmaChanged); break attempt }
            if s.fileBits != 0 { outcome = .abort(.notAnonymous); break attempt }
            outcome = faultCore(s, address, kind, VMASeqValidator(vma: vma, start: seq, cow: config.allowSpeculativeCOW))
        }
        rcuRead.readUnlock()
        return finishLockless(outcome, address, kind)
    }

    /// What a lockless attempt's outcome means: done, or counted and handed to `mmap_lock`.
    /// Errors are not trusted (the snapshot may be stale by now): the locked path decides.
    @inlinable @inline(__always)
    func finishLockless(_ outcome: FaultOutcome, _ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        switch outcome {
        case .done:
            count(.speculativeSuccesses)
            return .success(())
        case .abort(let r):
            countAbort(r)
        case .error, .needIO:
            break
        }
        count(.fallbacks)
        return faultUnderMmapLock(address, kind)
    }
}
