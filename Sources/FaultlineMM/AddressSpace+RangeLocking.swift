import CFaultline
import FaultlineSync
import Synchronization

/// A held range of the design's range lock (list or tree).
public enum RangeHandle {
    case list(ListRangeLock.Handle)
    case tree(TreeRangeLock.Handle)
}

/// Lespinasse's fine-grained MM locking: `mmap_lock` shrinks to a short lock that guards the
/// VMA tree and VMA fields, and a range lock covers what an operation does to its address range
/// (its PTEs and pages). Lock order: range, then short lock. Faults hold their page table's
/// 2 MiB for read and the short lock only while they look up and copy the VMA; munmap zaps and frees page
/// tables with the short lock dropped; page tables are freed only inside the range held.
extension AddressSpace {
    // MARK: The range lock

    /// `range_read_lock()` / `range_write_lock()`, counting waits in `designState.rangeWaits`.
    @inlinable @inline(__always)
    func rangeLock(_ r: Range<UInt64>, _ mode: RangeLockMode) -> RangeHandle {
        if let h = rangeTryLock(r, mode) { return h }
        return rangeLockSlow(r, mode)
    }

    @usableFromInline @inline(never)
    func rangeLockSlow(_ r: Range<UInt64>, _ mode: RangeLockMode) -> RangeHandle {
        let t0 = fl_now_ns()
        let h: RangeHandle
        if let l = designState.listLock { h = .list(l.lock(r, mode: mode)) } else { h = .tree(designState.treeLock!.lock(r, mode: mode)) }
        designState.rangeWaits.slots.add(0, 1)
        designState.rangeWaits.slots.add(1, fl_now_ns() &- t0)
        return h
    }

    @inlinable @inline(__always)
    func rangeTryLock(_ r: Range<UInt64>, _ mode: RangeLockMode) -> RangeHandle? {
        if let l = designState.listLockRef {
            return l._withUnsafeGuaranteedRef { $0.tryLock(r, mode: mode) }.map { .list($0) }
        }
        return designState.treeLockRef.unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.tryLock(r, mode: mode) }.map { .tree($0) }
    }

    @inlinable @inline(__always)
    func rangeUnlock(_ h: RangeHandle) {
        switch h {
        case .list(let x): designState.listLockRef.unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.unlock(x) }
        case .tree(let x): designState.treeLockRef.unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.unlock(x) }
        }
    }

    /// The whole address space (mremap, fork, and arguments that name no sane range).
    var wholeSpace: Range<UInt64> { 0..<UInt64.max }

    // MARK: Faults

    /// The range-locked fault: read-lock the range of the page table the fault works in (the
    /// PMD's 2 MiB), look up and copy the VMA under the short lock (read), drop it, and run the
    /// fault core. Preparing an anon_vma reads the neighbours, so that fault keeps the short
    /// lock throughout. The span, not the page: a fault may map a THP or the huge zero page
    /// over all of it, and a writer anywhere in it (splitting the VMA, zapping, marking its
    /// emptied table absent) must wait for such a fault — locking the page alone let an
    /// mprotect split the VMA under a huge fault, and a munmap's table bookkeeping let one
    /// install the huge zero page over a small fault's PTE. The PTE lock serialises faults in
    /// the span anyway.
    @inlinable
    func faultRanged(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        let span = address & ~(Linux.pmdSize &- 1)
        var holdShort = false
        while true {
            let h = rangeLock(span..<(span &+ Linux.pmdSize), .read)
            mmapLock.lockRead()
            rcuRead.readLock()
            guard let vma = tree.lookup(address) else {
                rcuRead.readUnlock()
                mmapLock.unlockRead()
                rangeUnlock(h)
                guard expandStack(address) else { return .failure(.segvMapErr) }
                continue
            }
            let s = VMASnapshot(vma)
            if !holdShort { mmapLock.unlockRead() }
            let outcome = faultCore(s, address, kind, LockedFault(mayPrepareAnonVMA: holdShort, vmaStable: holdShort))
            rcuRead.readUnlock()
            if holdShort { mmapLock.unlockRead() }
            rangeUnlock(h)
            switch outcome {
            case .done:
                if !holdShort { count(.speculativeSuccesses) }
                return .success(())
            case .error(let e):
                return .failure(e)
            case .needIO(let io):
                count(.retries)
                count(.majorFaults)
                guard io.perform() else { return .failure(.oom) }
            case .abort(let r):
                countAbort(r)
                count(.fallbacks)
                holdShort = true
            }
        }
    }

    // MARK: Writers

    /// Takes the range lock for write over `want()` (evaluated under the short lock), then the
    /// short lock for write; if the range needed grew meanwhile, starts again with the union.
    /// `want() == nil`: the call will fail its argument checks, only the short lock is taken.
    func rangeWriterBegin(_ want: () -> Range<UInt64>?) -> RangeHandle? {
        mmapLock.lockRead()
        var r = want()
        mmapLock.unlockRead()
        while true {
            let h = r.map { rangeLock($0, .write) }
            writeLock()
            let now = want()
            if let n = now, r == nil || n.lowerBound < r!.lowerBound || n.upperBound > r!.upperBound {
                writeUnlock()
                if let h { rangeUnlock(h) }
                r = r.map { min($0.lowerBound, n.lowerBound)..<max($0.upperBound, n.upperBound) } ?? n
                continue
            }
            tableFreeLimit = r ?? 0..<0
            return h
        }
    }

    /// Ends what `rangeWriterBegin` started.
    func rangeWriterEnd(_ h: RangeHandle?) {
        tableFreeLimit = 0..<UInt64.max
        writeUnlock()
        if let h { rangeUnlock(h) }
    }

    /// `[addr, addr + pageAlign(len))` when that is a non-empty range inside the address space.
    func pageRange(_ addr: UInt64, _ len: UInt64) -> Range<UInt64>? {
        let l = Linux.pageAlign(len)
        guard l != 0, Linux.offsetInPage(addr) == 0, addr <= config.taskSize, l <= config.taskSize - addr else { return nil }
        return addr..<(addr + l)
    }

    /// mmap: the range is known once `get_unmapped_area` has chosen it. The placement runs
    /// under the short lock and claims its range with a trylock; if that would wait, the short
    /// lock is dropped, the range taken blocking, and the call run again (which normally picks
    /// the same place and finds it held).
    func mmapRanged(_ addr: UInt64, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                    file: MMFile?, offset: UInt64) -> Result<UInt64, Errno> {
        var held: (RangeHandle, Range<UInt64>)? = nil
        if flags.contains(.fixed) || flags.contains(.fixedNoReplace), let r = pageRange(addr, length) {
            held = (rangeLock(r, .write), r)
        }
        while true {
            writeLock()
            var want: Range<UInt64>? = nil
            // Unmanaged: the caller holds self; a capture of self retained the address space
            // per call (`unowned(unsafe)` too, at the method calls), a write to a line every
            // thread reads.
            let me = Unmanaged.passUnretained(self)
            let r = doMmap(addr: addr, length: length, prot: prot, flags: flags, file: file, offset: offset) { range in
                me._withUnsafeGuaranteedRef { mm in
                    if let (_, hr) = held, hr.lowerBound <= range.lowerBound, range.upperBound <= hr.upperBound {
                        mm.tableFreeLimit = hr
                        return true
                    }
                    if let h = mm.rangeTryLock(range, .write) {
                        if let (old, _) = held { mm.rangeUnlock(old) }
                        held = (h, range)
                        mm.tableFreeLimit = range
                        return true
                    }
                    want = range
                    return false
                }
            }
            tableFreeLimit = 0..<UInt64.max
            writeUnlock()
            if let w = want {
                if let (old, _) = held { rangeUnlock(old) }
                held = (rangeLock(w, .write), w)
                continue
            }
            guard case .success(let (a, populate)) = r else {
                if let (h, _) = held { rangeUnlock(h) }
                return r.map { $0.0 }
            }
            if let p = populate {
                // Populate under the range (downgraded to read) and the short lock for read.
                if let (h, _) = held { rangeUnlock(h) }
                held = nil
                let rh = rangeLock(p.start..<(p.start + p.length), .read)
                mmapLock.lockRead()
                _ = populateLocked(p.start, p.start + p.length, mode: .mapPopulate)
                mmapLock.unlockRead()
                rangeUnlock(rh)
            }
            if let (h, _) = held { rangeUnlock(h) }
            return .success(a)
        }
    }

    /// munmap: detach under both locks, then zap and free page tables (inside the range only)
    /// with the short lock dropped.
    /// `zapBeyond` > 0 is a broken control: it zaps that much on either side of the range it
    /// holds (PTEs of neighbours whose faults it does not exclude).
    func munmapRanged(_ addr: UInt64, _ end: UInt64, zapBeyond: UInt64 = 0) -> Result<Void, Errno> {
        let h = rangeWriterBegin { addr..<end }
        switch detachRange(addr, end) {
        case .failure(let e):
            rangeWriterEnd(h)
            return .failure(e)
        case .success(let gone):
            let bounds = unmapBounds(gone)
            tableFreeLimit = 0..<UInt64.max
            writeUnlock()
            finishUnmap(gone, bounds)
            if zapBeyond > 0 {
                rcuRead.readLock()
                zapRange(addr >= zapBeyond ? addr - zapBeyond : 0, addr, vma: nil, dropMarkers: true)
                zapRange(end, min(end &+ zapBeyond, config.taskSize), vma: nil, dropMarkers: true)
                rcuRead.readUnlock()
            }
            if let h { rangeUnlock(h) }
            return .success(())
        }
    }

    /// madvise advice that leaves VMAs alone: the range for read and the short lock for read.
    func madviseReadRanged(_ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        let h = rangeLock(start..<end, .read)
        mmapLock.lockRead()
        defer {
            mmapLock.unlockRead()
            rangeUnlock(h)
        }
        switch advice {
        case .populateRead: return populateLocked(start, end, mode: .madviseRead)
        case .populateWrite: return populateLocked(start, end, mode: .madviseWrite)
        default: return doMadviseRead(start, end, advice)
        }
    }
}
