import CFaultline
import FaultlineSync
import Synchronization

extension AddressSpace {
    /// `vma_start_read()`: read-trylock the VMA's lock unless a writer holding `mmap_lock`
    /// has marked it (`vm_lock_seq == mm_lock_seq`), checked before and after the trylock
    /// (`recheck: false` is a broken control: a writer that marks in between is missed).
    @inlinable @inline(__always)
    func vmaStartRead(_ v: VMARef, recheck: Bool = true) -> AbortReason? {
        if v.pointee.lockSeq.load(ordering: .relaxed) == mmLockSeq.load(ordering: .acquiring) { return .seqChanged }
        if hasFaultHook { config.faultHook!(.vmaLockChecked, v.vmStart) }
        guard v.pointee.lock.tryLockRead() else { return .lockContended }
        if recheck && v.pointee.lockSeq.load(ordering: .relaxed) == mmLockSeq.load(ordering: .acquiring) {
            v.pointee.lock.unlockRead()
            return .seqChanged
        }
        return nil
    }

    /// `vma_end_read()`.
    @inlinable @inline(__always)
    func vmaEndRead(_ v: VMARef) { v.pointee.lock.unlockRead() }

    /// `lock_vma_under_rcu()` (Linux 6.4): find the VMA under RCU and read-lock it; fail if it
    /// was detached meanwhile (the caller looks again: VMA_LOCK_MISS) or no longer covers the
    /// address. An anonymous VMA without an
    /// anon_vma fails too (preparing one needs `mmap_lock` in 6.4). The caller holds RCU.
    @inlinable @inline(__always)
    func lockVMAUnderRCU(_ address: UInt64, recheck: Bool = true) -> Result<VMARef, AbortReason> {
        guard let vma = tree.lookup(address) else { return .failure(.noVMA) }
        if let r = vmaStartRead(vma, recheck: recheck) { return .failure(r) }
        if vma.pointee.detached.load(ordering: .acquiring) {
            vmaEndRead(vma)
            return .failure(.detached)
        }
        if address < vma.vmStart || address >= vma.vmEnd {
            vmaEndRead(vma)
            return .failure(.vmaChanged)
        }
        if vma.isAnonymous && vma.anonVMA == 0 {
            vmaEndRead(vma)
            return .failure(.noAnonVMA)
        }
        return .success(vma)
    }

    /// The per-VMA-lock fault: on any failure to lock, fall back to `mmap_lock`. A fault that
    /// must wait for I/O drops the VMA lock, reads, and retries — under `mmap_lock`
    /// (`per-vma`, as Linux does) or under the VMA lock again (`per-vma-retry`).
    @inlinable
    func faultPerVMA(_ address: UInt64, _ kind: AccessKind, retryUnderVMALock: Bool,
                     recheckAfterTrylock: Bool = true) -> Result<Void, FaultError> {
        while true {
            rcuRead.readLock()
            let vma: VMARef
            switch lockVMAUnderRCU(address, recheck: recheckAfterTrylock) {
            case .failure(.detached):
                // "The area was replaced with another one": look again (VMA_LOCK_MISS).
                rcuRead.readUnlock()
                count(.vmaLockMiss)
                continue
            case .failure(let r):
                rcuRead.readUnlock()
                countAbort(r)
                count(.vmaLockAbort)
                count(.fallbacks)
                return faultUnderMmapLock(address, kind)
            case .success(let v):
                vma = v
            }
            let outcome = faultCore(VMASnapshot(vma), address, kind, LockedFault(mayPrepareAnonVMA: false))
            vmaEndRead(vma)
            rcuRead.readUnlock()
            switch endVMALockedFault(outcome) {
            case .finished(let r):
                return r
            case .retry(let waitedForIO):
                if waitedForIO && retryUnderVMALock { continue }
                count(.fallbacks)
                return faultUnderMmapLock(address, kind)
            }
        }
    }

    /// How a fault that ran under a VMA lock ends, counted as the kernel counts it: finished
    /// (done, or a signal: `VMA_LOCK_SUCCESS` — under the VMA lock the VMA cannot change, so
    /// the error is final), or to be retried (`VMA_LOCK_RETRY`: after the I/O it waited for,
    /// or an abort the VMA lock cannot get past).
    @inlinable @inline(__always)
    func endVMALockedFault(_ outcome: FaultOutcome) -> VMALockedFaultEnd {
        switch outcome {
        case .done:
            count(.speculativeSuccesses)
            count(.vmaLockSuccess)
            return .finished(.success(()))
        case .error(let e):
            count(.vmaLockSuccess)
            return .finished(.failure(e))
        case .needIO(let io):
            count(.retries)
            count(.majorFaults)
            count(.vmaLockRetry)
            guard io.perform() else { return .finished(.failure(.oom)) }
            return .retry(waitedForIO: true)
        case .abort(let r):
            countAbort(r)
            count(.vmaLockRetry)
            return .retry(waitedForIO: false)
        }
    }
}

/// See `AddressSpace.endVMALockedFault`.
@usableFromInline
enum VMALockedFaultEnd {
    case finished(Result<Void, FaultError>)
    case retry(waitedForIO: Bool)
}
