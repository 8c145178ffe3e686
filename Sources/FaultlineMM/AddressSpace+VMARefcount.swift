import CFaultline
import FaultlineSync
import Synchronization

// Linux 6.15's VMA lock: the rw-semaphore is gone; `vm_refcnt` is the lock. Readers raise it
// (never from 0, which means detached, and never past VMA_REF_LIMIT, which means a writer is
// there); a writer adds VMA_LOCK_OFFSET and waits until only it and the tree's reference are
// left, sets `vm_lock_seq`, and takes the offset away again. VMAs come from a
// SLAB_TYPESAFE_BY_RCU cache, so a pointer found under RCU may by now be another VMA — even
// another address space's: after taking its reference a reader re-checks `vm_mm` and the
// range. 6.17 also runs MADV_DONTNEED/MADV_FREE and the maps reader under this lock.

/// Why `vmaStartReadRefcnt` did not lock.
@usableFromInline
enum RefcntReadFailure {
    /// `vm_refcnt` was 0: detached (or freed) after the lookup; look again (`VMA_LOCK_MISS`).
    case detached
    /// Write-locked, a writer waiting, or another address space's VMA now.
    case failed(AbortReason)
}

extension AddressSpace {
    @usableFromInline var mmBits: UInt { UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque()) }

    /// `vma_start_read()` (6.15+): fail if write-locked, raise `vm_refcnt` unless it is 0
    /// (detached: `-EAGAIN`) or at the limit (a writer), then re-check what reuse may have
    /// changed: `vm_mm` (`recheck: false` is a broken control) and the write mark.
    @inlinable @inline(__always)
    func vmaStartReadRefcnt(_ v: VMARef, recheck: Bool) -> RefcntReadFailure? {
        if v.pointee.lockSeq.load(ordering: .relaxed) == mmLockSeq.load(ordering: .acquiring) { return .failed(.seqChanged) }
        if hasFaultHook { config.faultHook!(.vmaLockChecked, address0(v)) }
        // __refcount_inc_not_zero_limited_acquire()
        var old = v.pointee.vmRefcnt.load(ordering: .relaxed)
        while true {
            if old == 0 { return .detached }
            if old >= VMA.refLimit { return .failed(.lockContended) }
            let r = v.pointee.vmRefcnt.compareExchange(expected: old, desired: old + 1, ordering: .acquiring)
            if r.exchanged { break }
            old = r.original
        }
        if recheck && v.pointee.vmMM.load(ordering: .relaxed) != mmBits {
            vmaEndReadRefcnt(v)
            return .failed(.vmaChanged)
        }
        // The mark may have been set between the first check and the increment (a writer
        // that found no reader to wait for).
        if v.pointee.lockSeq.load(ordering: .relaxed) == mmLockSeq.load(ordering: .acquiring) {
            vmaEndReadRefcnt(v)
            return .failed(.seqChanged)
        }
        vmaLockSlots.add(RWSemStat.readAcquired.rawValue)
        return nil
    }

    /// The page a fault hook is told about (the VMA may be anything by now: a plain read).
    @inlinable @inline(__always)
    func address0(_ v: VMARef) -> UInt64 { v.pointee.start.load(ordering: .relaxed) }

    /// `vma_end_read()` → `vma_refcount_put()`: the reader that leaves the VMA to a waiting
    /// writer alone (`is_vma_writer_only()`) wakes it (`rcuwait_wake_up()`).
    @inlinable @inline(__always)
    func vmaEndReadRefcnt(_ v: VMARef) {
        let left = v.pointee.vmRefcnt.wrappingSubtract(1, ordering: .releasing).newValue
        if left == VMA.lockOffset + 1 || left == VMA.lockOffset { wakeVMAWriter(v) }
    }

    @usableFromInline
    func wakeVMAWriter(_ v: VMARef) {
        v.pointee.writerWake.wrappingAdd(1, ordering: .releasing)
        _ = fl_futex_wake(v.writerWakeWord, 1)
    }

    /// `lock_vma_under_rcu()` (6.15+): look up, lock; a VMA detached meanwhile is looked up
    /// again (`VMA_LOCK_MISS`); every other failure is `VMA_LOCK_ABORT`. After locking, the
    /// VMA must still cover the address (`recheck: false` skips this and the `vm_mm` check:
    /// the broken control). The caller holds RCU.
    @inlinable @inline(__always)
    func lockVMAUnderRCURefcnt(_ address: UInt64, recheck: Bool) -> Result<VMARef, AbortReason> {
        while true {
            guard let v = tree.lookup(address) else { return abortVMALock(.noVMA) }
            switch vmaStartReadRefcnt(v, recheck: recheck) {
            case .detached?:
                count(.vmaLockMiss)
                continue
            case .failed(let r)?:
                return abortVMALock(r)
            case nil:
                if recheck && (address < v.vmStart || address >= v.vmEnd) {
                    vmaEndReadRefcnt(v)
                    return abortVMALock(.vmaChanged)
                }
                return .success(v)
            }
        }
    }

    /// `lock_vma_under_rcu()`'s `inval:` — counted `VMA_LOCK_ABORT` there, for every caller.
    @inlinable @inline(__always)
    func abortVMALock(_ r: AbortReason) -> Result<VMARef, AbortReason> {
        countAbort(r)
        count(.vmaLockAbort)
        return .failure(r)
    }

    /// `__vma_enter_locked()`: add `VMA_LOCK_OFFSET` unless detached, then wait until only the
    /// writer (and, unless detaching, the tree) holds the VMA. Readers hold it for one fault.
    func vmaEnterLocked(_ v: VMARef, detaching: Bool) -> Bool {
        var old = v.pointee.vmRefcnt.load(ordering: .relaxed)
        while true {   // refcount_add_not_zero()
            if old == 0 { return false }
            let r = v.pointee.vmRefcnt.compareExchange(expected: old, desired: old + VMA.lockOffset, ordering: .acquiring)
            if r.exchanged { break }
            old = r.original
        }
        let target = VMA.lockOffset + (detaching ? 0 : 1)
        let stats = vmaLockSlots
        stats.add(RWSemStat.writeAcquired.rawValue)
        if v.pointee.vmRefcnt.load(ordering: .acquiring) == target { return true }
        // rcuwait_wait_event(): sleep until the last reader out wakes the writer (a short spin
        // first: a reader holds the VMA for one fault). The wake count is read before the
        // check, so a wake between the check and the sleep is not lost.
        let t0 = fl_now_ns()
        var spins = 0
        let word = v.writerWakeWord
        while true {
            let wakes = v.pointee.writerWake.load(ordering: .acquiring)
            if v.pointee.vmRefcnt.load(ordering: .acquiring) == target { break }
            if spins < 128 {
                spins += 1
                fl_cpu_relax()
                continue
            }
            _ = fl_futex_wait(word, wakes, -1)
        }
        stats.add(RWSemStat.writeContended.rawValue)
        stats.add(RWSemStat.writeWaitNs.rawValue, fl_now_ns() - t0)
        return true
    }

    /// `__vma_start_write()` (6.15+): wait out the readers, set `vm_lock_seq`, let go of the
    /// count. A detached VMA (being built) is only marked.
    func vmaRefcntMark(_ v: VMARef) {
        let seq = mmLockSeq.load(ordering: .relaxed)
        if v.pointee.lockSeq.load(ordering: .relaxed) == seq { return }
        let locked = vmaEnterLocked(v, detaching: false)
        v.pointee.lockSeq.store(seq, ordering: .relaxed)
        if locked { v.pointee.vmRefcnt.wrappingSubtract(VMA.lockOffset, ordering: .releasing) }
        markedVMAs.append(v)
        if hasFaultHook { config.faultHook!(.vmaMarked, v.vmStart) }
    }

    /// `vma_mark_detached()` (6.15+): drop the tree's reference; readers that got in meanwhile
    /// (they will find the mark and leave) are waited out, ending at 0.
    func vmaRefcntDetach(_ v: VMARef) {
        if v.pointee.vmRefcnt.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { return }
        if vmaEnterLocked(v, detaching: true) {
            let left = v.pointee.vmRefcnt.wrappingSubtract(VMA.lockOffset, ordering: .acquiringAndReleasing).newValue
            precondition(left == 0, "vma_mark_detached: vm_refcnt \(left) after the readers left")
        }
    }

    /// The 6.15+ per-VMA-lock fault, counted as the kernel counts it: `VMA_LOCK_SUCCESS` when
    /// handled under the VMA lock (an access error too), `VMA_LOCK_RETRY` when
    /// `handle_mm_fault` asked to retry (I/O; an anon_vma to prepare without `mmap_lock` to
    /// hand), `VMA_LOCK_ABORT` when no VMA could be locked, `VMA_LOCK_MISS` per look-up
    /// repeated because the VMA was detached. Retries and aborts continue under `mmap_lock`.
    @inlinable
    func faultPerVMARefcnt(_ address: UInt64, _ kind: AccessKind, recheck: Bool = true) -> Result<Void, FaultError> {
        rcuRead.readLock()
        let vma: VMARef
        switch lockVMAUnderRCURefcnt(address, recheck: recheck) {
        case .failure:
            rcuRead.readUnlock()
            count(.fallbacks)
            return faultUnderMmapLock(address, kind)
        case .success(let v):
            vma = v
        }
        var snap = VMASnapshot(vma)
        if !recheck && (address < snap.start || address >= snap.end) {
            // The broken control goes on with a VMA that does not cover the address, as a
            // kernel without the re-check would: its range is taken to reach the page (the
            // offsets wrap as the kernel's would), so the fault maps it with this VMA's rights.
            let p = address & ~(Linux.pageSize - 1)
            if p < snap.start {
                snap.pgoff = snap.pgoff &- ((snap.start - p) >> Linux.pageShift)
                snap.start = p
            } else {
                snap.end = p + Linux.pageSize
            }
        }
        var outcome = faultCore(snap, address, kind, LockedFault(mayPrepareAnonVMA: false))
        if case .abort(.noAnonVMA) = outcome, mmapLock.tryLockRead() {
            // vmf_anon_prepare(): with mmap_lock for read as well, the anon_vma is prepared
            // under the VMA lock.
            outcome = faultCore(snap, address, kind, LockedFault(mayPrepareAnonVMA: true))
            mmapLock.unlockRead()
        }
        vmaEndReadRefcnt(vma)
        rcuRead.readUnlock()
        switch endVMALockedFault(outcome) {
        case .finished(let r):
            return r
        case .retry:
            count(.fallbacks)
            return faultUnderMmapLock(address, kind)
        }
    }

    /// `lock_next_vma()` (6.16+) under the 6.15 lock: the first VMA ending after `from`,
    /// locked by reference, re-checked (this address space, still ending after `from`, no
    /// VMA in a gap before it); nil: take `mmap_lock` for this line.
    func lockNextVMARefcnt(_ from: UInt64) -> MapsLine? {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        while true {
            guard let v = tree.find(from: from) else { return nil }
            switch vmaStartReadRefcnt(v, recheck: true) {
            case .detached?: continue
            case .failed?: return nil
            case nil:
                defer { vmaEndReadRefcnt(v) }
                if from >= v.vmEnd { return nil }
                if from < v.vmStart && tree.find(from: from) != v { return nil }
                return mapsLine(v)
            }
        }
    }

    /// `madvise_lock()` (6.17+): MADV_DONTNEED, MADV_DONTNEED_LOCKED and MADV_FREE over a
    /// range inside one VMA run under that VMA's lock; anything else, or a VMA that cannot be
    /// locked, under `mmap_lock` for read.
    func madviseReadPerVMARefcnt(_ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        guard advice == .dontNeed || advice == .dontNeedLocked || advice == .free else {
            return madviseReadUnderMmapLock(start, end, advice)
        }
        rcuRead.readLock()
        let locked = lockVMAUnderRCURefcnt(start, recheck: true)
        // The reference pins the VMA; RCU is not held across the work (it may wait for
        // grace periods).
        rcuRead.readUnlock()
        guard case .success(let v) = locked else { return madviseReadUnderMmapLock(start, end, advice) }
        if end > v.vmEnd {
            vmaEndReadRefcnt(v)
            return madviseReadUnderMmapLock(start, end, advice)
        }
        let r = madviseReadVMA(v, start, end, advice)
        vmaEndReadRefcnt(v)
        return r.map { _ in () }
    }
}
