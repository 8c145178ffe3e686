import CFaultline
import FaultlineSync
import Synchronization

/// The VMA fields a fault needs, read once (under a lock, or speculatively and validated).
@frozen
public struct VMASnapshot {
    public var vma: VMARef
    public var start: UInt64
    public var end: UInt64
    public var flags: VMFlags
    public var pgoff: UInt64
    public var fileBits: UInt
    public var anonVMA: UInt

    @inlinable
    public init(_ v: VMARef) {
        vma = v
        start = v.vmStart
        end = v.vmEnd
        flags = v.vmFlags
        pgoff = v.vmPgoff
        fileBits = v.fileBits
        anonVMA = v.anonVMA
    }

    @inlinable var file: MMFile? {
        fileBits == 0 ? nil : Unmanaged<MMFile>.fromOpaque(UnsafeRawPointer(bitPattern: fileBits)!).takeUnretainedValue()
    }
}

/// Why a lockless or speculative fault gave up (and went to the locked path).
public enum AbortReason: Error, Sendable, CaseIterable {
    /// The mm sequence count (or the VMA's, or `vm_lock_seq == mm_lock_seq`) says a writer
    /// is or was inside.
    case seqChanged
    /// The VMA no longer covers the address, or changed under the snapshot.
    case vmaChanged
    /// A trylock failed (the VMA lock), or the fault would have to wait for I/O.
    case lockContended
    /// The VMA was removed from the tree.
    case detached
    /// The VMA is file-backed and the design handles anonymous memory only.
    case notAnonymous
    /// The VMA has no anon_vma yet, and preparing one needs `mmap_lock`.
    case noAnonVMA
    /// No VMA at the address (the locked path decides between SIGSEGV and stack growth).
    case noVMA
    /// A page-table level is missing and allocating it needs `mmap_lock`.
    case noPageTable
    /// Copy on write of a present PTE, which the design does not do speculatively.
    case pteChanged

    @usableFromInline var stat: MMStat {
        switch self {
        case .seqChanged: .abortSeqChanged
        case .vmaChanged: .abortVMAChanged
        case .lockContended: .abortLockContended
        case .detached: .abortDetached
        case .notAnonymous: .abortNotAnonymous
        case .noAnonVMA: .abortNoAnonVMA
        case .noVMA: .abortNoVMA
        case .noPageTable: .abortNoPageTable
        case .pteChanged: .abortPTEChanged
        }
    }
}

/// Points in a fault where a test hook (`Configuration.faultHook`) runs.
public enum FaultStage: Sendable {
    /// A copy-on-write fault has copied the old page and not yet taken the page-table lock.
    case cowCopied
    /// Any fault is about to take the page-table lock to validate and install its PTE (where
    /// a stress test widens race windows).
    case beforeInstall
    /// A per-VMA-lock fault found its VMA unmarked and is about to trylock it (the window
    /// `vma_start_read`'s re-check closes).
    case vmaLockChecked
    /// Writer side: a VMA has just been marked (`vma_start_write`, per-VMA locks) and is
    /// about to be changed. The page is the VMA's start.
    case vmaMarked
    /// A file fault has found its page in the page cache (and holds a reference to it) and
    /// has not yet mapped it: truncation may remove the page from the cache here.
    case pageCacheFound
    /// An anonymous fault knows its anon_vma and has not yet allocated its page: under a
    /// range lock, a writer elsewhere in the VMA may merge it away here.
    case anonVMAReady
}

/// How a fault ended in the shared core.
@usableFromInline
enum FaultOutcome {
    case done
    case error(FaultError)
    /// I/O to start with the fault's locks dropped, then retry (`VM_FAULT_RETRY`).
    case needIO(FaultIO)
    case abort(AbortReason)
}

/// What a fault that returned `needIO` does with its locks dropped (`fpin =
/// maybe_unlock_mmap_for_io()` in filemap_fault), before it is retried.
@usableFromInline
struct FaultIO {
    @usableFromInline let file: MMFile?
    @usableFromInline let index: UInt64
    /// nil: the page is not cached — read around it and wait (`do_sync_mmap_readahead`);
    /// else the page was found marked PG_readahead (mark cleared) in a folio of this order —
    /// start reading the next window (`do_async_mmap_readahead`), no wait.
    @usableFromInline let asyncOrder: Int?
    /// A swap-in: read `index` (the slot) of this device into the swap cache.
    @usableFromInline let swap: SwapDevice?

    @usableFromInline
    init(file: MMFile, index: UInt64, asyncOrder: Int?) {
        self.file = file
        self.index = index
        self.asyncOrder = asyncOrder
        swap = nil
    }

    @usableFromInline
    init(swap: SwapDevice, slot: UInt32) {
        file = nil
        index = UInt64(slot)
        asyncOrder = nil
        self.swap = swap
    }

    /// False when out of frames for the faulting page itself.
    @usableFromInline
    func perform() -> Bool {
        if let swap {
            // swapin_readahead(): into the swap cache; the retry maps it (a slot freed
            // meanwhile is no error: the retry finds the PTE changed).
            guard let f = swap.readIn(UInt32(truncatingIfNeeded: index)) else { return swap.count(UInt32(truncatingIfNeeded: index)) == 0 }
            swap.frames.put(f)
            return true
        }
        if let order = asyncOrder {
            file!.asyncReadahead(index, order: order)
            return true
        }
        return file!.readAround(index)
    }
}

/// How `installPTE` ended. Only `installed` changed the page table: callers account for
/// the frames they replaced only then.
@usableFromInline
enum InstallResult: Equatable {
    case installed
    /// The PTE changed since it was read: another fault handled it (the fault is done).
    case raced
    /// The design's validation failed: abort.
    case invalid

    @inlinable var outcome: FaultOutcome {
        switch self {
        case .installed, .raced: .done
        case .invalid: .abort(.seqChanged)
        }
    }
}

/// What a design checks after taking the page-table lock and before installing a PTE: the
/// one place designs differ inside the fault itself.
public protocol FaultValidator {
    /// Called with the PTL held. False: throw the prepared page away and abort.
    func validate() -> Bool
    /// Whether the fault may allocate the VMA's anon_vma (writes `vma->anon_vma`).
    var mayPrepareAnonVMA: Bool { get }
    /// Whether the fault may block on page-cache I/O (false: abort instead).
    var mayWaitForIO: Bool { get }
    /// Whether a fault on a present PTE (copy on write) may run.
    var mayHandleCOW: Bool { get }
    /// Whether missing page-table levels may be allocated (false: abort instead).
    var mayAllocateTables: Bool { get }
    /// Whether the VMA stays the one that covers the address until the fault ends, so that
    /// its live fields may be read. False under a range lock without the short lock: a writer
    /// elsewhere in the VMA may merge it away (`unlink_anon_vmas` clears its anon_vma), and
    /// only the snapshot holds.
    var vmaStable: Bool { get }
}

extension FaultValidator {
    @inlinable public var vmaStable: Bool { true }
}

/// Faults under `mmap_lock` (or a VMA lock) need no validation.
public struct LockedFault: FaultValidator {
    public var mayPrepareAnonVMA: Bool
    public var vmaStable: Bool
    @inlinable public init(mayPrepareAnonVMA: Bool = true, vmaStable: Bool = true) {
        self.mayPrepareAnonVMA = mayPrepareAnonVMA
        self.vmaStable = vmaStable
    }
    @inlinable public func validate() -> Bool { true }
    @inlinable public var mayWaitForIO: Bool { true }
    @inlinable public var mayHandleCOW: Bool { true }
    @inlinable public var mayAllocateTables: Bool { true }
}

extension AddressSpace {
    @inlinable @inline(__always)
    func count(_ s: MMStat, _ n: UInt64 = 1) { stats.slots.add(s.rawValue, n) }

    /// Counts an abort and its reason.
    @inlinable @inline(__always)
    func countAbort(_ r: AbortReason) {
        stats.slots.add(MMStat.aborts.rawValue, 1)
        stats.slots.add(r.stat.rawValue, 1)
    }

    /// `access_error()` for x86: writes need VM_WRITE, instruction fetches VM_EXEC, reads any
    /// access right (x86 cannot express write- or exec-only pages).
    @inlinable @inline(__always)
    static func accessAllowed(_ flags: VMFlags, _ kind: AccessKind) -> Bool {
        switch kind {
        case .write: return flags.contains(.write)
        case .exec: return flags.contains(.exec)
        case .read: return !flags.isDisjoint(with: [.read, .write, .exec])
        }
    }

    /// Whether an existing PTE already allows the access (what the MMU checks).
    @inlinable @inline(__always)
    static func pteAllows(_ e: UInt64, _ kind: AccessKind) -> Bool {
        guard e & PTE.present != 0, e & PTE.user != 0 else { return false }
        switch kind {
        case .read: return e & PTE.pkeyExecOnly == 0
        case .write: return e & (PTE.writable | PTE.pkeyExecOnly) == PTE.writable
        case .exec: return e & PTE.noExec == 0
        }
    }

    /// `handle_mm_fault()` for one page, given a VMA snapshot. Shared by every design: the
    /// validator decides whether what was prepared may be installed.
    @inlinable
    func faultCore<V: FaultValidator>(_ s: VMASnapshot, _ address: UInt64, _ kind: AccessKind, _ v: V) -> FaultOutcome {
        // arch_vma_access_permitted() first: the execute-only key denies data accesses.
        if kind != .exec && s.flags.contains(.pkeyExecOnly) { return .error(.segvPkuErr) }
        guard Self.accessAllowed(s.flags, kind) else { return .error(.segvAccErr) }
        let page = address & Linux.pageMask
        let ptep: UnsafeMutablePointer<Atomic<UInt64>>
        if v.mayAllocateTables {
            ptep = allocPTE(page)
        } else {
            guard let p = walkPTE(page) else { return .abort(.noPageTable) }
            ptep = p
        }
        let orig = ptep.pointee.load(ordering: .acquiring)
        // __handle_mm_fault(): pmd_none and a THP allowed — create_huge_pmd().
        if orig == 0 && thpFaultAllowed(s, page), let r = hugeAnonFault(s, page, ptep, kind, v) { return r }
        // handle_pte_marker(): a guard region.
        if PTE.isGuard(orig) { return .error(.segvMapErr) }
        if PTE.isSwap(orig) { return swapFault(s, page, ptep, orig, kind, v) }
        if orig & PTE.present != 0 {
            if Self.pteAllows(orig, kind) { return .done }
            if kind == .write && orig & PTE.writable == 0 {
                return wpFault(s, page, ptep, orig, v)
            }
            // Permissions were raised since the PTE was made (mprotect): refresh it (one page
            // of a huge PMD: split it first).
            let table = PageTablePage(entry: ptep)
            if table.isPMDMapped { splitHugePMD(table, at: page) }
            return installPTE(ptep, page, orig: orig, new: refreshed(orig, s.flags), v: v, frame: nil).outcome
        }
        if s.fileBits != 0 {
            // The VMA's reference keeps the file: the fault takes none (a retain writes the
            // file's header line, which every thread faulting on the file shares).
            return Unmanaged<MMFile>.fromOpaque(UnsafeRawPointer(bitPattern: s.fileBits)!)
                ._withUnsafeGuaranteedRef { fileFault(s, $0, page, ptep, kind, v) }
        }
        return anonFault(s, page, ptep, kind, v)
    }

    @inlinable @inline(__always)
    func refreshed(_ e: UInt64, _ flags: VMFlags) -> UInt64 {
        var n = e | PTE.user
        if flags.contains(.exec) { n &= ~PTE.noExec } else { n |= PTE.noExec }
        return n & ~PTE.pkeyExecOnly | PTE.pkeyBits(flags)
    }

    /// `anon_vma_prepare()`: the anon_vma the fault's new anonymous pages belong to, made
    /// for the VMA before its first one; 0 when making it needs a lock the fault lacks. Where
    /// the VMA is stable, `vma->anon_vma` as Linux reads it; under a range lock the snapshot's:
    /// the VMA may since have been merged away, and its anon_vma lives on in the survivor.
    @inlinable @inline(__always)
    func ensureAnonVMA<V: FaultValidator>(_ s: VMASnapshot, _ v: V) -> UInt {
        let a = v.vmaStable ? s.vma.anonVMA : s.anonVMA
        if a != 0 { return a }
        guard v.mayPrepareAnonVMA else { return 0 }
        prepareAnonVMA(s.vma)
        return s.vma.anonVMA
    }

    /// The anon_vma a new anonymous page gets when its rmap is set: `vma->anon_vma` read then
    /// where the VMA is stable (a design that let its VMA change under the fault shows here
    /// as a page without one), else the one `ensureAnonVMA` resolved from the snapshot.
    @inlinable @inline(__always)
    func newPageAnonVMA<V: FaultValidator>(_ resolved: UInt, _ s: VMASnapshot, _ v: V) -> UInt {
        v.vmaStable ? s.vma.anonVMA : resolved
    }

    /// `anon_vma_compatible(a, b)`: adjacent, same file, flags equal but for access rights,
    /// contiguous offsets.
    func anonCompatibleNeighbours(_ a: VMARef, _ b: VMARef) -> Bool {
        a.vmEnd == b.vmStart && a.fileBits == b.fileBits
            && (a.vmFlags.rawValue ^ b.vmFlags.rawValue) & ~(VMFlags.accessFlags.rawValue | VMFlags.softDirty.rawValue | VMFlags.sticky.rawValue) == 0
            && b.vmPgoff == a.vmPgoff + ((b.vmStart - a.vmStart) >> Linux.pageShift)
    }

    /// `find_mergeable_anon_vma()`.
    func findMergeableAnonVMA(_ vma: VMARef) -> UInt? {
        if let next = tree.lookup(vma.vmEnd), anonCompatibleNeighbours(vma, next),
           next.anonVMA != 0, next.anonChainLength == 1 {
            return next.anonVMA
        }
        if vma.vmStart > 0, let prev = tree.lookup(vma.vmStart - 1), anonCompatibleNeighbours(prev, vma),
           prev.anonVMA != 0, prev.anonChainLength == 1 {
            return prev.anonVMA
        }
        return nil
    }

    /// `do_anonymous_page()`.
    @inlinable
    func anonFault<V: FaultValidator>(_ s: VMASnapshot, _ page: UInt64, _ ptep: UnsafeMutablePointer<Atomic<UInt64>>,
                                      _ kind: AccessKind, _ v: V) -> FaultOutcome {
        let exec = s.flags.contains(.exec)
        if kind != .write && config.useZeroPage {
            let e = PTE.make(FramePool.zeroFrame, writable: false, exec: exec, pkey: PTE.pkeyBits(s.flags)) | PTE.special
            let r = installPTE(ptep, page, orig: 0, new: e, v: v, frame: nil)
            if r == .installed { count(.zeroPageFaults) }
            return r.outcome
        }
        let anonVMA = ensureAnonVMA(s, v)
        guard anonVMA != 0 else { return .abort(.noAnonVMA) }
        if hasFaultHook { config.faultHook!(.anonVMAReady, page) }
        guard let f = frames.allocate(zeroed: true, flags: PageMeta.Flag.anon) else { return .error(.oom) }
        setAnonRmap(f, newPageAnonVMA(anonVMA, s, v), s, page)
        frames.lruAdd(f)
        let e = PTE.make(f, writable: s.flags.contains(.write), exec: exec, dirty: true, pkey: PTE.pkeyBits(s.flags))
        let r = installPTE(ptep, page, orig: 0, new: e, v: v, frame: f)
        if r == .installed {
            count(.anonFaults)
            count(.rssAnon)
            if s.flags.contains(.locked) { mlockAnon(f, 1) }
        }
        return r.outcome
    }

    /// `do_read_fault()` / `do_cow_fault()` / `do_shared_fault()`.
    @inlinable
    func fileFault<V: FaultValidator>(_ s: VMASnapshot, _ file: MMFile, _ page: UInt64,
                                      _ ptep: UnsafeMutablePointer<Atomic<UInt64>>, _ kind: AccessKind, _ v: V) -> FaultOutcome {
        let index = s.pgoff &+ ((page &- s.start) >> Linux.pageShift)
        let shared = s.flags.contains(.shared)
        // do_cow_fault(): anon_vma_prepare() comes before the page is looked up, so even a
        // write beyond EOF (SIGBUS) leaves a private mapping with an anon_vma.
        var anonVMA: UInt = 0
        if !shared && kind == .write {
            anonVMA = ensureAnonVMA(s, v)
            guard anonVMA != 0 else { return .abort(.noAnonVMA) }
        }
        // do_read_fault(): fault-around comes first, even when the page itself is beyond EOF
        // and the fault ends in SIGBUS; if it mapped the page, the fault is done.
        if kind != .write && config.faultAroundPages > 1 {
            faultAround(s, file, page, ptep, v)
            if ptep.pointee.load(ordering: .acquiring) & PTE.present != 0 {
                // The fault was handled (a fault, as the kernel counts it) by mapping around it.
                count(.faults)
                count(.fileFaults)
                return .done
            }
        }
        if index >= file.sizeInPages { return .error(.bus) }
        // A reference of our own: truncation may drop the cache's at any moment.
        var cached = file.getPage(index)
        if cached == nil {
            // filemap_fault() -> do_sync_mmap_readahead() drops the lock (mmap_lock or the VMA
            // lock) to read around the page, and the fault returns VM_FAULT_RETRY: the retry
            // finds the pages cached and maps them around it (measured on 6.18: the first read
            // fault of a cold file maps 16 pages). So does any read that waits for I/O.
            let readsAround = file.readaheadPages > 1 && !file.isShmem && !s.flags.contains(.randRead)
            if file.ioLatencyNs > 0 || readsAround {
                guard v.mayWaitForIO else { return .abort(.lockContended) }
                return .needIO(FaultIO(file: file, index: index, asyncOrder: nil))
            }
            guard let f = file.readPage(index) else { return .error(.oom) }
            cached = f
        } else if !s.flags.contains(.randRead) {
            // do_async_mmap_readahead() -> page_cache_async_ra(): a fault that finds the folio
            // marked PG_readahead (= PG_reclaim) clears it and reads the next window ahead,
            // unless the VMA is MADV_RANDOM. Linux drops the fault's lock (mmap_lock or the
            // VMA lock) to start that I/O and retries the fault, which then finds the page
            // unmarked; a path that may not drop its lock (a speculative fault) reads inline.
            let meta = frames.page(cached!)
            if meta.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.reclaim != 0 {
                let order = meta.pointee.folioOrder
                if let folio = file.folioRange(index) {
                    for i in folio {
                        if let g = file.cachedPage(i) { frames.page(g).pointee.flags.bitwiseAnd(~PageMeta.Flag.reclaim, ordering: .relaxed) }
                    }
                }
                let start = index & ~((1 << UInt64(order)) - 1)
                if v.mayWaitForIO {
                    frames.put(cached!)
                    return .needIO(FaultIO(file: file, index: start, asyncOrder: order))
                }
                file.asyncReadahead(start, order: order)
            }
        }
        let cf = cached!
        if hasFaultHook { config.faultHook!(.pageCacheFound, page) }
        let exec = s.flags.contains(.exec)
        if !shared && kind == .write {
            guard let nf = frames.allocate(zeroed: false, flags: PageMeta.Flag.anon) else { frames.put(cf); return .error(.oom) }
            setAnonRmap(nf, newPageAnonVMA(anonVMA, s, v), s, page)
            frames.lruAdd(nf)
            frames.pointer(nf).copyMemory(from: frames.pointer(cf), byteCount: Int(Linux.pageSize))
            frames.put(cf)
            let e = PTE.make(nf, writable: true, exec: exec, dirty: true, pkey: PTE.pkeyBits(s.flags))
            let r = installPTE(ptep, page, orig: 0, new: e, v: v, frame: nf, cached: (file, index, cf))
            if r == .installed {
                count(.fileCOWFaults)
                count(.rssAnon)
                if s.flags.contains(.locked) { mlockAnon(nf, 1) }
            }
            return r.outcome
        }
        // The PTE takes over our reference.
        let writable = shared && s.flags.contains(.write)
        if frames.page(cf).pointee.folioOrder > 0,
           let r = finishFaultFolio(s, file, page, index, ptep, cf, writable: writable, exec: exec, dirty: kind == .write, v) {
            if r == .installed { count(kind == .write ? .sharedWriteFaults : .fileFaults) }
            return r.outcome
        }
        let e = PTE.make(cf, writable: writable, exec: exec, dirty: kind == .write, pkey: PTE.pkeyBits(s.flags))
        let r = installPTE(ptep, page, orig: 0, new: e, v: v, frame: cf, cached: (file, index, cf))
        if r == .installed {
            count(kind == .write ? .sharedWriteFaults : .fileFaults)
            count(file.isShmem ? .rssShmem : .rssFile)
        }
        return r.outcome
    }

    /// `finish_fault()` on a large folio (6.18): when the whole folio lies in the VMA and in
    /// this page table and none of its PTEs is set, all its pages are mapped by this one fault
    /// (a write fault maps them all writable and dirty). nil when it does not fit: the caller
    /// maps the page alone. Consumes `cf`'s reference when it returns non-nil.
    @inlinable
    func finishFaultFolio<V: FaultValidator>(_ s: VMASnapshot, _ file: MMFile, _ page: UInt64, _ index: UInt64,
                                             _ ptep: UnsafeMutablePointer<Atomic<UInt64>>, _ cf: FrameNumber,
                                             writable: Bool, exec: Bool, dirty: Bool, _ v: V) -> InstallResult? {
        guard let folio = file.folioRange(index), folio.count > 1 else { return nil }
        let n = folio.count
        let headAddr = page &- (index &- folio.lowerBound) << Linux.pageShift
        let endAddr = headAddr &+ UInt64(n) << Linux.pageShift
        let tableSpan = UInt64(PageTablePage.entries) << Linux.pageShift
        guard headAddr >= s.start, endAddr <= s.end, headAddr / tableSpan == (endAddr &- 1) / tableSpan,
              s.pgoff &+ ((headAddr &- s.start) >> Linux.pageShift) == folio.lowerBound else { return nil }
        let first = ptep - Int(index &- folio.lowerBound)
        // References for the folio's other pages (the PTEs take them), all of this folio.
        return withUnsafeTemporaryAllocation(of: FrameNumber.self, capacity: n) { refs -> InstallResult? in
            var got = 0
            func release() { for k in 0..<got where k != Int(index &- folio.lowerBound) { frames.put(refs[k]) } }
            for k in 0..<n {
                let i = folio.lowerBound &+ UInt64(k)
                if i == index { refs[k] = cf; got += 1; continue }
                guard let f = file.getPage(i) else {
                    release()
                    return nil
                }
                // Part of the folio left the cache and came back as small folios (MADV_PAGEOUT):
                // not one folio any more (the reference just taken goes too: it leaked before
                // the stress paged out file pages).
                guard frames.page(f).pointee.folioOrder == frames.page(cf).pointee.folioOrder else {
                    frames.put(f)
                    release()
                    return nil
                }
                refs[k] = f
                got += 1
            }
            if hasFaultHook { config.faultHook!(.beforeInstall, page) }
            let table = PageTablePage(entry: ptep)
            table.ptl.pointee.lock()
            guard v.validate(), tableStillLinked(page, ptep) else {
                table.ptl.pointee.unlock()
                release()
                frames.put(cf)
                return .invalid
            }
            // pte_range_none(): any PTE already set (or the block gone huge, or a page gone from
            // the cache since its lookup), and the page is mapped alone.
            for k in 0..<n where first[k].load(ordering: .relaxed) != 0 || table.isPMDMapped
                || file.cachedPage(folio.lowerBound &+ UInt64(k)) != refs[k] {
                table.ptl.pointee.unlock()
                release()
                return nil
            }
            for k in 0..<n {
                first[k].store(PTE.make(refs[k], writable: writable, exec: exec, dirty: dirty, pkey: PTE.pkeyBits(s.flags)),
                               ordering: .releasing)
                frames.page(refs[k]).pointee.mapcount.wrappingAdd(1, ordering: .relaxed)
            }
            table.ptl.pointee.unlock()
            count(.faults)
            count(file.isShmem ? .rssShmem : .rssFile, UInt64(n))
            return .installed
        }
    }

    /// `do_fault_around()` + `filemap_map_pages()`: maps the pages of the faulting page's
    /// naturally aligned block of `faultAroundPages` (or as many from the VMA start, where
    /// that cuts the block) that are already in the page cache and below EOF, clamped to the
    /// VMA and to this page table, where no PTE is set yet; one PTL section, validated as a
    /// fault's install is. Not faults: counted as `faultAroundPages`.
    @inlinable
    func faultAround<V: FaultValidator>(_ s: VMASnapshot, _ file: MMFile, _ page: UInt64,
                                        _ ptep: UnsafeMutablePointer<Atomic<UInt64>>, _ v: V) {
        let nr = UInt64(config.faultAroundPages)
        let entries = UInt64(PageTablePage.entries)
        let pteOff = (page >> Linux.pageShift) & (entries - 1)
        let vmaOff = (page &- s.start) >> Linux.pageShift
        let fromPTE = max(pteOff & ~(nr - 1), pteOff - min(pteOff, vmaOff))
        let toPTE = min(fromPTE + nr, entries, pteOff + ((s.end - s.start) >> Linux.pageShift) - vmaOff)
        // File index of the page table's entry 0 (wrapping: only entries in the VMA are used).
        let index0 = s.pgoff &+ vmaOff &- pteOff
        let first = ptep - Int(pteOff)
        let writable = s.flags.contains(.shared) && s.flags.contains(.write)
        let exec = s.flags.contains(.exec)
        let table = PageTablePage(entry: ptep)
        table.ptl.pointee.lock()
        guard v.validate(), tableStillLinked(page, ptep), !table.isPMDMapped else {
            table.ptl.pointee.unlock()
            return
        }
        var mapped: UInt64 = 0
        let fileEnd = file.sizeInPages
        // filemap_map_pages() installs a missing page table only when the first cached folio
        // of the block ends before EOF (or for shmem: `can_map_large`); otherwise, with no
        // table, pte_offset_map_lock() fails and nothing is mapped (probed on 6.18: a read
        // beyond EOF in a fresh 2 MiB region maps none of the block's pages below EOF).
        // The model allocated the table already; `isAbsentInLinux` says whether Linux has one.
        // next_uptodate_folio() skips a folio marked PG_readahead (= PG_reclaim).
        func usable(_ index: UInt64) -> Bool {
            guard let f = file.cachedPage(index) else { return false }
            return frames.page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.reclaim == 0
        }
        // Only a fault beyond EOF (a SIGBUS) leaves the table out: a fault below EOF in a
        // fresh region maps the last page (difftest seed 18908: a fork child's first fault on
        // a shared file mapping).
        if !file.isShmem && index0 &+ pteOff >= fileEnd {
            var i = fromPTE
            while i < toPTE && !usable(index0 &+ i) { i += 1 }
            if i < toPTE && index0 &+ i &+ 1 >= fileEnd && table.isAbsentInLinux {
                table.ptl.pointee.unlock()
                return
            }
        }
        // 6.18 maps a large folio whole when it lies in the VMA and this page table, even
        // where it reaches past the window (measured: a read pass over a file cached in
        // order-0…9 folios takes one fault per 16 pages of the small ones and one per folio
        // of the large ones).
        let vmaFirst = pteOff - min(pteOff, vmaOff)
        let vmaEnd = min(entries, pteOff + ((s.end - s.start) >> Linux.pageShift) - vmaOff)
        var lo = fromPTE, hi = toPTE
        // The window's first and last entries (no array: this is every read fault's path).
        for k in 0..<2 {
            let edge = k == 0 ? fromPTE : toPTE &- 1
            guard edge >= fromPTE && edge < toPTE, let r = file.folioRange(index0 &+ edge), r.count > 1 else { continue }
            let back = (index0 &+ edge) &- r.lowerBound
            guard back <= edge - vmaFirst else { continue }
            let head = edge - back, end = head + UInt64(r.count)
            guard end <= vmaEnd else { continue }
            lo = min(lo, head)
            hi = max(hi, end)
        }
        for i in lo..<hi {
            let slot = first + Int(i)
            if slot.pointee.load(ordering: .relaxed) != 0 { continue }
            let index = index0 &+ i
            if index >= fileEnd { break }
            // The PTE takes the reference getPage took.
            guard let f = file.getPage(index) else { continue }
            if frames.page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.reclaim != 0 {
                frames.put(f)
                continue
            }
            slot.pointee.store(PTE.make(f, writable: writable, exec: exec, pkey: PTE.pkeyBits(s.flags)), ordering: .releasing)
            frames.page(f).pointee.mapcount.wrappingAdd(1, ordering: .relaxed)
            mapped += 1
        }
        table.ptl.pointee.unlock()
        if mapped > 0 {
            count(file.isShmem ? .rssShmem : .rssFile, mapped)
            count(.faultAroundPages, mapped)
        }
    }

    /// `mlock_new_folio()` / `munlock_vma_folio()` for anonymous pages: `delta` mappings in
    /// VM_LOCKED VMAs.
    @usableFromInline @inline(__always)
    func mlockAnon(_ f: FrameNumber, _ delta: Int32) {
        let p = frames.page(f)
        guard p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 else { return }
        let n = p.pointee.mlockCount.wrappingAdd(delta, ordering: .relaxed).newValue
        if (n > 0) != (n - delta > 0) { frames.lru.mlockChanged(f) }
    }

    /// `do_wp_page()`: a write to a present read-only PTE.
    @inlinable
    func wpFault<V: FaultValidator>(_ s: VMASnapshot, _ page: UInt64, _ ptep: UnsafeMutablePointer<Atomic<UInt64>>,
                                    _ orig: UInt64, _ v: V) -> FaultOutcome {
        let exec = s.flags.contains(.exec)
        if s.flags.contains(.shared) {
            // wp_page_shared(): make it writable and dirty.
            return installPTE(ptep, page, orig: orig, new: refreshed(orig | PTE.writable | PTE.dirty, s.flags), v: v, frame: nil).outcome
        }
        guard v.mayHandleCOW else { return .abort(.pteChanged) }
        if PageTablePage(entry: ptep).isPMDMapped, let r = hugeWPFault(s, page, ptep, orig, v) { return r }
        let old = PTE.frame(orig)
        if orig & PTE.special == 0 {
            let p = frames.page(old)
            // wp_can_reuse_anon_folio(): our own anonymous page, mapped once — just write-enable
            // (a page of a THP: only while no page of the folio is mapped elsewhere,
            // `__wp_can_reuse_large_anon_folio`).
            if p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0
                && p.pointee.mapcount.load(ordering: .relaxed) == 1 && frames.refsBesidesLRUBatch(old) == 1
                && !frames.anonFolioMaybeSharedAt(old) {
                let r = installPTE(ptep, page, orig: orig, new: refreshed(orig | PTE.writable | PTE.dirty, s.flags), v: v, frame: nil)
                if r == .installed { moveAnonRmap(old, s, v); count(.reuseFaults) }
                return r.outcome
            }
        }
        let anonVMA = ensureAnonVMA(s, v)
        guard anonVMA != 0 else { return .abort(.noAnonVMA) }
        let isZero = orig & PTE.special != 0
        guard let nf = frames.allocate(zeroed: isZero, flags: PageMeta.Flag.anon) else { return .error(.oom) }
        setAnonRmap(nf, newPageAnonVMA(anonVMA, s, v), s, page)
        frames.lruAdd(nf)
        if !isZero { frames.pointer(nf).copyMemory(from: frames.pointer(old), byteCount: Int(Linux.pageSize)) }
        if hasFaultHook { config.faultHook!(.cowCopied, page) }
        let e = PTE.make(nf, writable: true, exec: exec, dirty: true, pkey: PTE.pkeyBits(s.flags))
        let r = installPTE(ptep, page, orig: orig, new: e, v: v, frame: nf)
        if r == .installed {
            count(.cowFaults)
            if s.flags.contains(.locked) {
                mlockAnon(nf, 1)
                if !isZero { mlockAnon(old, -1) }
            }
            if isZero {
                count(.rssAnon)
            } else {
                let wasAnon = frames.page(old).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0
                if !wasAnon { count(.rssAnon); count(.rssFile, UInt64(bitPattern: -1)) }
                frames.page(old).pointee.mapcount.wrappingSubtract(1, ordering: .relaxed)
                frames.putDeferred(old)
            }
        }
        return r.outcome
    }

    /// `set_pte_at()` under the split PTL after the design's validation and `pte_same()`.
    /// On failure the prepared frame's reference is dropped.
    @inlinable
    func installPTE<V: FaultValidator>(_ ptep: UnsafeMutablePointer<Atomic<UInt64>>, _ page: UInt64, orig: UInt64,
                                       new: UInt64, v: V, frame: FrameNumber?,
                                       cached: (file: MMFile, index: UInt64, frame: FrameNumber)? = nil) -> InstallResult {
        if hasFaultHook { config.faultHook!(.beforeInstall, page) }
        let table = PageTablePage(entry: ptep)
        table.ptl.pointee.lock()
        guard v.validate(), tableStillLinked(page, ptep) else {
            table.ptl.pointee.unlock()
            if let frame { frames.put(frame) }
            return .invalid
        }
        // A block that went huge meanwhile (a THP or the huge zero page: the entry may even
        // hold the same value again, as a zero-page PTE does) is no PTE table for this fault
        // any more: `pte_offset_map_lock()` fails on the changed PMD and the access retries.
        // (The never-splitting broken twin keeps its huge marks for good: its faults install as
        // before, so that the stress catches it instead of retrying forever.)
        // A file fault's page must still be the one its file caches there: truncation, a punched
        // hole or MADV_PAGEOUT may have taken it out since the lookup (Linux's fault holds the
        // folio lock and finds `folio->mapping` gone); truncation's second unmap catches an
        // install made before the removal.
        guard ptep.pointee.load(ordering: .relaxed) == orig, !table.isPMDMapped || system.brokenTHPNeverSplits,
              cached.map({ $0.file.cachedPage($0.index) == $0.frame }) ?? true else {
            // Someone else handled it (or changed it) first: nothing of ours was installed.
            table.ptl.pointee.unlock()
            if let frame { frames.put(frame) }
            return .raced
        }
        ptep.pointee.store(new, ordering: .releasing)
        if let frame, PTE.frame(orig) != frame || orig & PTE.present == 0 {
            frames.page(frame).pointee.mapcount.wrappingAdd(1, ordering: .relaxed)
        }
        table.ptl.pointee.unlock()
        count(.faults)
        return .installed
    }
}
