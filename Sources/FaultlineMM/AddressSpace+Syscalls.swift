import CFaultline
import FaultlineSync
import Synchronization

/// The system-call interface: each call takes the design's locks around the shared
/// mechanism. Results are the value or a Linux errno, as the kernel would return them.
extension AddressSpace {
    // MARK: Writer sections

    /// `mmap_write_lock()`, and whatever else the design's writer section starts.
    @inline(__always)
    func writeLock() {
        mmapLock.lockWrite()
        designType.writerBegin(self)
    }

    /// `mmap_write_unlock()`: also ends per-VMA write marks (`vma_end_write_all`).
    @inline(__always)
    func writeUnlock() {
        endVMAWrites()
        designType.writerEnd(self)
        mmapLock.unlockWrite()
    }

    /// `mmap_write_downgrade()`.
    @inline(__always)
    func writeDowngrade() {
        endVMAWrites()
        designType.writerEnd(self)
        mmapLock.downgradeWrite()
    }

    /// A writer section of `call` over the range `want()` names (nil: the call will fail its
    /// checks), as the design excludes writers (`MMDesign.beginWriter`).
    @inline(__always)
    func withWriter<R>(_ call: WriterCall, _ want: () -> Range<UInt64>?, _ body: () -> R) -> R {
        let h = designType.beginWriter(self, want)
        writerCall = call
        defer {
            writerCall = nil
            designType.endWriter(self, h)
        }
        return body()
    }

    // MARK: System calls

    /// What the return to user space does for the model: the caller holds none of our locks
    /// now, so the thread runs its ready RCU callbacks and pays for a backlog here
    /// (`RCU.throttle`); a memcg charge failure the call did not report is forgotten (the
    /// mark is for the fault that failed, and a later fault must not take it for its own);
    /// and the call's crossing into the kernel and back (`KernelEntry`).
    @inline(__always)
    func returnToUser() {
        rcuRef._withUnsafeGuaranteedRef { $0.throttle() }
        _ = frames.takeChargeFailure()
        config.kernelEntry.enter()
    }

    /// `mmap(2)`.
    public func mmap(_ addr: UInt64 = 0, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                     file: MMFile? = nil, offset: UInt64 = 0) -> Result<UInt64, Errno> {
        defer { returnToUser() }
        return designType.mmap(self, addr, length, prot, flags, file: file, offset: offset)
    }

    /// mmap under `mmap_lock` (for write; MAP_POPULATE after it, for read).
    func mmapUnderMmapLock(_ addr: UInt64, _ length: UInt64, _ prot: Prot, _ flags: MapFlags,
                           file: MMFile?, offset: UInt64) -> Result<UInt64, Errno> {
        writeLock()
        let r = doMmap(addr: addr, length: length, prot: prot, flags: flags, file: file, offset: offset)
        writeUnlock()
        guard case .success(let (a, populate)) = r else { return r.map { $0.0 } }
        if let p = populate {
            // mm_populate(): after the write lock, under the read lock; errors are ignored.
            mmapLock.lockRead()
            _ = populateLocked(p.start, p.start + p.length, mode: .mapPopulate)
            mmapLock.unlockRead()
        }
        return .success(a)
    }

    /// `munmap(2)`: detach under the write lock, downgrade, zap under the read lock.
    public func munmap(_ addr: UInt64, _ length: UInt64) -> Result<Void, Errno> {
        defer { returnToUser() }
        let end: UInt64
        switch munmapArgs(addr, length) {
        case .failure(let e): return .failure(e)
        case .success(let x): end = x
        }
        return designType.munmap(self, addr, end)
    }

    /// munmap under `mmap_lock`: detach under it for write, downgrade, zap under it for read.
    func munmapUnderMmapLock(_ addr: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        writeLock()
        switch detachRange(addr, end) {
        case .failure(let e):
            writeUnlock()
            return .failure(e)
        case .success(let gone):
            writeDowngrade()
            finishUnmap(gone, addr, end)
            mmapLock.unlockRead()
            return .success(())
        }
    }

    /// `mprotect(2)`.
    public func mprotect(_ addr: UInt64, _ length: UInt64, _ prot: Prot) -> Result<Void, Errno> {
        defer { returnToUser() }
        return withWriter(.mprotect, { mprotectRange(addr, length, prot) }) { doMprotect(addr, length, prot) }
    }

    /// `mremap(2)`.
    public func mremap(_ addr: UInt64, _ oldLength: UInt64, _ newLength: UInt64, _ flags: MremapFlags = [],
                       newAddress: UInt64 = 0) -> Result<UInt64, Errno> {
        defer { returnToUser() }
        // Range designs: source, destination and what it replaces — the whole space.
        let r = withWriter(.mremap, { wholeSpace }) { doMremap(addr, oldLength, newLength, flags, newAddress) }
        // A VM_LOCKED VMA that grew has its new part populated (mm_populate, errors ignored).
        let oldLen = Linux.pageAlign(oldLength), newLen = Linux.pageAlign(newLength)
        if case .success(let a) = r, newLen > oldLen {
            mmapLock.lockRead()
            let locked = tree.lookup(a)?.vmFlags.contains(.locked) ?? false
            mmapLock.unlockRead()
            if locked { _ = populateAfterWriter(a + oldLen, a + newLen, mode: .mapPopulate) }
        }
        return r
    }

    /// `madvise(2)`; an advice number the kernel does not know is EINVAL.
    public func madvise(_ addr: UInt64, _ length: UInt64, _ adviceNumber: Int32) -> Result<Void, Errno> {
        madvise(addr, length, Advice(rawValue: adviceNumber))
    }

    public func madvise(_ addr: UInt64, _ length: UInt64, _ advice: Advice?) -> Result<Void, Errno> {
        defer { returnToUser() }
        let end: UInt64
        switch madviseArgs(addr, length, advice) {
        case .failure(let e): return .failure(e)
        case .success(nil): return .success(())
        case .success(let x?): end = x
        }
        let advice = advice!
        if advice.changesFlags {
            return withWriter(.madvise, { addr..<end }) { doMadviseFlags(addr, end, advice) }
        }
        // collapse_huge_page() swaps the PMD under mmap_lock for write.
        if advice == .collapse {
            return withWriter(.madvise, { addr..<end }) { doMadviseCollapse(addr, end) }
        }
        return designType.madviseRead(self, addr, end, advice)
    }

    /// madvise advice that leaves VMAs alone, under `mmap_lock` for read.
    func madviseReadUnderMmapLock(_ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        switch advice {
        case .populateRead: return populateLocked(start, end, mode: .madviseRead)
        case .populateWrite: return populateLocked(start, end, mode: .madviseWrite)
        default: return doMadviseRead(start, end, advice)
        }
    }

    /// `brk(2)`: the new break, or the current one when the request is refused.
    public func brk(_ addr: UInt64) -> UInt64 {
        defer { returnToUser() }
        // What to populate is decided inside the writer section: the break and mm->def_flags
        // may change as soon as it ends.
        var grown: Range<UInt64>? = nil
        let r = withWriter(.brk, { brkRange(addr) }) { () -> UInt64 in
            let old = Linux.pageAlign(brkValue)
            let r = doBrk(addr)
            // mlockall(MCL_FUTURE): the heap's growth is populated (mm_populate, errors ignored).
            if defFlags.contains(.locked) && Linux.pageAlign(r) > old && r == addr { grown = old..<Linux.pageAlign(r) }
            return r
        }
        if let g = grown { _ = populateAfterWriter(g.lowerBound, g.upperBound, mode: .mapPopulate) }
        return r
    }

    /// `fork(2)`: the child's address space.
    public func fork() -> AddressSpace {
        defer { returnToUser() }
        return withWriter(.fork, { wholeSpace }) { doFork() }
    }

    /// The range mprotect changes (PROT_GROWSDOWN reaches down to the VMA's start).
    func mprotectRange(_ addr: UInt64, _ length: UInt64, _ prot: Prot) -> Range<UInt64>? {
        guard let r = pageRange(addr, length) else { return nil }
        if prot.contains(.growsDown), let v = tree.find(from: addr), v.vmStart < r.upperBound {
            return min(v.vmStart, r.lowerBound)..<r.upperBound
        }
        return r
    }

    /// The range brk changes: between the old and the new break, page-aligned (nil when only
    /// the value moves, or the call will be refused).
    func brkRange(_ addr: UInt64) -> Range<UInt64>? {
        if addr < startBrkValue { return nil }
        let n = Linux.pageAlign(addr)
        let o = Linux.pageAlign(brkValue)
        if n == o { return nil }
        return min(n, o)..<max(n, o)
    }

    // MARK: Memory access (the MMU)

    /// One load, store or instruction fetch: satisfied by the page tables when they allow
    /// it (a TLB hit, no lock), otherwise through the design's fault path.
    @inlinable
    public func access(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        if address >= config.taskSize { return .failure(.segvMapErr) }
        rcuRead.readLock()
        if let p = walkPTE(address) {
            let e = p.pointee.load(ordering: .acquiring)
            if Self.pteAllows(e, kind) {
                // The walker sets the accessed bit (reclaim clears it to age the page); lost to
                // a racing change of the PTE, it is set by the next access.
                if e & PTE.accessed == 0 { _ = p.pointee.compareExchange(expected: e, desired: e | PTE.accessed, ordering: .relaxed) }
                rcuRead.readUnlock()
                return .success(())
            }
        }
        rcuRead.readUnlock()
        return fault(address, kind)
    }

    /// Runs `body` on the byte at `address` once the page tables allow `kind`, inside an RCU
    /// read-side section (the frame cannot be reused until it ends) and a TLB read section
    /// (a shootdown waits for it: `flushTLBRange`). `body` must not call back into the
    /// address space.
    @inlinable
    public func withByte<R>(_ address: UInt64, _ kind: AccessKind, _ body: (UnsafeMutableRawPointer) -> R) -> Result<R, FaultError> {
        if address >= config.taskSize { return .failure(.segvMapErr) }
        while true {
            rcuRead.readLock()
            if let p = walkPTE(address) {
                // The TLB section covers the PTE read to the byte's use, not the walk: the
                // shorter it is, the less a shootdown waits for a preempted accessor.
                tlbRead.readLock()
                let e = p.pointee.load(ordering: .acquiring)
                if Self.pteAllows(e, kind) {
                    // The MMU sets the dirty bit atomically against the PTE it walked: an
                    // unconditional OR could resurrect a just-zapped entry as non-present junk.
                    // Likewise the accessed bit, which reclaim clears to age the page.
                    let want = e | PTE.accessed | (kind == .write ? PTE.dirty : 0)
                    if want != e && !p.pointee.compareExchange(expected: e, desired: want, ordering: .relaxed).exchanged {
                        tlbRead.readUnlock()
                        rcuRead.readUnlock()
                        continue
                    }
                    let r = body(frames.pointer(PTE.frame(e)) + Int(address & (Linux.pageSize - 1)))
                    tlbRead.readUnlock()
                    rcuRead.readUnlock()
                    return .success(r)
                }
                tlbRead.readUnlock()
            }
            rcuRead.readUnlock()
            if case .failure(let f) = fault(address, kind) { return .failure(f) }
        }
    }

    /// Stores one byte.
    @inlinable
    public func store(_ address: UInt64, _ byte: UInt8) -> Result<Void, FaultError> {
        withByte(address, .write) { $0.storeBytes(of: byte, as: UInt8.self) }
    }

    /// Loads one byte.
    @inlinable
    public func load(_ address: UInt64) -> Result<UInt8, FaultError> {
        withByte(address, .read) { $0.load(as: UInt8.self) }
    }

    /// The design's fault path. Out of frames while frees wait for a grace period, the fault
    /// waits for them with every lock dropped (as reclaim would) and tries again.
    @inlinable
    public func fault(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        // The exception's entry and exit (`asm_exc_page_fault`), once per fault taken.
        config.kernelEntry.enterFault()
        // A user address above TASK_SIZE has no VMA (and no page range a lock could cover).
        guard address < config.taskSize else { return .failure(.segvMapErr) }
        let r = faultOnce(address, kind)
        if case .failure(.oom) = r { return faultAfterReclaim(address, kind) }
        return r
    }

    /// A fault that ran out of memory: over its memcg's limit, the charge has reclaimed what
    /// it could (`try_charge_memcg()`) and the fault fails; out of frames, it waits for frees
    /// or reclaims and tries again.
    @usableFromInline @inline(never)
    func faultAfterReclaim(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        if frames.takeChargeFailure() { return .failure(.oom) }
        // Deferred frames first: a grace period's frees are on the free lists before they stop
        // counting, so frames freed since the allocation failed show up in one or the other.
        guard frames.deferredFrames > 0 || frames.reclaims || frames.freeAboveMin else { return .failure(.oom) }
        while true {
            if frames.reclaims {
                guard frames.reclaimForRetry() else { return .failure(.oom) }
            } else {
                rcu.barrier()
            }
            let r = faultOnce(address, kind)
            guard case .failure(.oom) = r, !frames.takeChargeFailure(),
                  frames.deferredFrames > 0 || frames.reclaims || frames.freeAboveMin else { return r }
        }
    }

    /// The design's fault hook, through the registry's switch (specialised per design).
    @inlinable
    func faultOnce(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        design.visit(FaultVisitor(address: address, kind: kind), self)
    }

    /// The classic fault: `mmap_lock` for read around the whole fault; a page-cache miss with
    /// I/O to wait for drops the lock, reads, and retries from the VMA lookup.
    @inlinable
    func faultUnderMmapLock(_ address: UInt64, _ kind: AccessKind) -> Result<Void, FaultError> {
        mmapLock.lockRead()
        while true {
            guard let vma = tree.lookup(address) else {
                mmapLock.unlockRead()
                guard expandStack(address) else { return .failure(.segvMapErr) }
                mmapLock.lockRead()
                continue
            }
            switch faultCore(VMASnapshot(vma), address, kind, LockedFault()) {
            case .done:
                mmapLock.unlockRead()
                return .success(())
            case .error(let e):
                mmapLock.unlockRead()
                return .failure(e)
            case .needIO(let io):
                mmapLock.unlockRead()
                count(.retries)
                count(.majorFaults)
                guard io.perform() else { return .failure(.oom) }
                mmapLock.lockRead()
            case .abort:
                continue
            }
        }
    }

    // MARK: Populate

    enum PopulateMode { case mapPopulate, mlock, madviseRead, madviseWrite }

    /// `follow_page_pte()` with FOLL_TOUCH|FOLL_WRITE: a page populate found mapped writable
    /// but clean is marked dirty (the PTE stays clean), so a lazy-free page is no longer
    /// lazy-free (probed: MADV_POPULATE_WRITE after MADV_FREE leaves LazyFree 0).
    func touchForWrite(_ address: UInt64) {
        let e = pteValue(address)
        guard e & PTE.present != 0, e & (PTE.special | PTE.dirty) == 0 else { return }
        frames.page(PTE.frame(e)).pointee.flags.bitwiseOr(PageMeta.Flag.dirty, ordering: .relaxed)
    }

    /// `mm_populate()` / `madvise_populate()`: faults in every page of `[start, end)`, with the
    /// read lock held by the caller. MAP_POPULATE writes to private writable mappings (breaking
    /// COW) and reads elsewhere, skipping inaccessible VMAs; MADV_POPULATE_* needs the access
    /// right (EINVAL), every page mapped (ENOMEM), and reports SIGBUS as EFAULT.
    func populateLocked(_ start: UInt64, _ end: UInt64, mode: PopulateMode) -> Result<Void, Errno> {
        var a = start
        nextVMA: while a < end {
            guard let vma = tree.lookup(a) else {
                if mode == .mapPopulate {
                    guard let next = tree.find(from: a), next.vmStart < end else { return .success(()) }
                    a = next.vmStart
                    continue
                }
                return .failure(.ENOMEM)
            }
            let f = vma.vmFlags
            let kind: AccessKind
            switch mode {
            case .mapPopulate, .mlock:
                // populate_vma_page_range(): VM_LOCKONFAULT is left to fault.
                if f.contains(.lockOnFault) || !f.isDisjoint(with: [.io, .pfnMap]) {
                    a = vma.vmEnd
                    continue
                }
                // mlock's __mm_populate() does not ignore GUP's refusal (EFAULT).
                if mode == .mlock && (f.isDisjoint(with: [.read, .write, .exec]) || f.contains(.pkeyExecOnly)) {
                    return .failure(.EFAULT)
                }
                // check_vma_flags(): the execute-only key refuses GUP (EFAULT), which
                // __mm_populate() ignores, going on at the next VMA. (MADV_POPULATE_* is
                // EINVAL below: such a VMA has neither VM_READ nor VM_WRITE.)
                if f.isDisjoint(with: [.read, .write, .exec]) || !f.isDisjoint(with: [.io, .pfnMap, .pkeyExecOnly]) {
                    a = vma.vmEnd
                    continue
                }
                kind = f.intersection([.write, .shared]) == .write ? .write : .read
            case .madviseRead:
                if !f.contains(.read) || !f.isDisjoint(with: [.io, .pfnMap]) { return .failure(.EINVAL) }
                kind = .read
            case .madviseWrite:
                if !f.contains(.write) || !f.isDisjoint(with: [.io, .pfnMap]) { return .failure(.EINVAL) }
                kind = .write
            }
            let stop = min(end, vma.vmEnd)
            while a < stop {
                let e = pteValue(a)
                if !Self.pteAllows(e, kind) {
                    var done = false
                    while !done {
                        switch faultCore(VMASnapshot(vma), a, kind, LockedFault()) {
                        case .done: done = true
                        case .abort: continue
                        case .needIO(let io):
                            // Populate may wait with the lock held (GUP without FOLL_UNLOCKABLE).
                            // Out of frames the page never comes: the fault's OOM.
                            if !io.perform() {
                                if mode == .mapPopulate { a = stop; continue nextVMA }
                                return .failure(.ENOMEM)
                            }
                        case .error(let err):
                            // mm_populate() ignores errors: on at the next VMA.
                            if mode == .mapPopulate { a = stop; continue nextVMA }
                            return .failure(err == .oom ? .ENOMEM : .EFAULT)
                        }
                    }
                }
                if kind == .write { touchForWrite(a) }
                a += Linux.pageSize
            }
        }
        return .success(())
    }
}

/// `MMDesign.fault` for `Design.visit` (the address space comes as the borrowed argument: a
/// stored reference would be retained when loaded).
@usableFromInline
struct FaultVisitor: DesignVisitor {
    @usableFromInline let address: UInt64
    @usableFromInline let kind: AccessKind

    @inlinable @inline(__always)
    init(address: UInt64, kind: AccessKind) {
        self.address = address
        self.kind = kind
    }

    @inlinable @inline(__always)
    func visit<D: MMDesign>(_ design: D.Type, _ mm: AddressSpace?) -> Result<Void, FaultError> {
        D.fault(mm.unsafelyUnwrapped, address, kind)
    }
}
