import FaultlineSync

/// A mapping the writer section created that the caller should fault in afterwards
/// (`MAP_POPULATE`: `mm_populate()` runs after the write lock is dropped).
public struct PopulateRequest: Sendable {
    public var start: UInt64
    public var length: UInt64
}

extension AddressSpace {
    // MARK: get_unmapped_area

    /// `vm_start_gap()`: a VM_GROWSDOWN VMA keeps a guard gap below it.
    func vmStartGap(_ v: VMARef) -> UInt64 {
        guard v.vmFlags.contains(.growsDown) else { return v.vmStart }
        return v.vmStart > Linux.stackGuardGap ? v.vmStart - Linux.stackGuardGap : 0
    }

    /// `unmapped_area_topdown()`: the highest `length` bytes free below `highLimit`, not
    /// inside a stack guard gap; `startGap` extra bytes are kept free below (stack mappings).
    func unmappedAreaTopdown(length: UInt64, lowLimit: UInt64, highLimit: UInt64, startGap: UInt64 = 0) -> UInt64? {
        let need = length + startGap
        var high = highLimit
        while high > lowLimit, high - lowLimit >= need {
            guard let a = tree.highestGap(size: need, in: lowLimit...(high - 1)) else { return nil }
            let gap = a + need - length
            let gapEnd = a + need - 1
            // The VMA above must not have its guard gap over us.
            if let next = tree.find(from: gapEnd + 1), next.vmFlags.contains(.growsDown), vmStartGap(next) <= gapEnd {
                high = vmStartGap(next)
                continue
            }
            return gap
        }
        return nil
    }

    /// `unmapped_area()`: bottom-up (the fallback when top-down fails).
    func unmappedAreaBottomUp(length: UInt64, lowLimit: UInt64, highLimit: UInt64) -> UInt64? {
        guard highLimit > lowLimit else { return nil }
        return tree.lowestGap(size: length, in: lowLimit...(highLimit - 1))
    }

    /// x86's `arch_get_unmapped_area_topdown()`.
    func archGetUnmappedAreaTopdown(hint: UInt64, length: UInt64, flags: MapFlags) -> Result<UInt64, Errno> {
        if length > config.taskSize { return .failure(.ENOMEM) }
        if flags.contains(.fixed) { return .success(hint) }
        if hint != 0 {
            let a = hint & Linux.pageMask
            // mmap_address_hint_valid(), then the range must be free (up to the next VMA's gap).
            if config.taskSize - length >= a {
                let v = tree.find(from: a)
                if v == nil || a + length <= vmStartGap(v!) { return .success(a) }
            }
        }
        // stack_guard_placement() reserves room only for shadow stacks (not modelled), so a
        // grows-down mapping gets no start gap here.
        if let a = unmappedAreaTopdown(length: length, lowLimit: Linux.pageSize, highLimit: config.mmapBase) {
            return .success(a)
        }
        // Bottom-up fallback (`TASK_UNMAPPED_BASE` is a third of the space).
        if let a = unmappedAreaBottomUp(length: length, lowLimit: Linux.pageAlign(config.taskSize / 3), highLimit: config.taskSize) {
            return .success(a)
        }
        return .failure(.ENOMEM)
    }

    /// `__thp_get_unmapped_area()`: search with a PMD of padding (a hint must fit the padded
    /// length too), then move up to the PMD boundary congruent with the file offset (top-down:
    /// the highest one). nil: use the normal search.
    func thpGetUnmappedArea(hint: UInt64 = 0, length: UInt64, offset: UInt64, flags: MapFlags) -> UInt64? {
        let size = Linux.pmdSize
        let offAlign = (offset + size - 1) & ~(size - 1)
        let offEnd = offset + length
        if offEnd <= offAlign || offEnd - offAlign < size { return nil }
        let padded = length + size
        if padded < length { return nil }
        guard case .success(let ret) = archGetUnmappedAreaTopdown(hint: hint, length: padded, flags: flags) else { return nil }
        if ret == hint { return hint }
        let offSub = (offset &- ret) & (size - 1)
        if offSub == 0 { return ret + size }
        return ret + offSub
    }

    /// `__get_unmapped_area()`.
    func getUnmappedArea(file: MMFile?, hint: UInt64, length: UInt64, pgoff: UInt64, flags: MapFlags) -> Result<UInt64, Errno> {
        if length > config.taskSize { return .failure(.ENOMEM) }
        var result: Result<UInt64, Errno>
        if let file, file.placement == .thpAligned {
            // The file's own get_unmapped_area (thp_get_unmapped_area).
            if let a = thpGetUnmappedArea(hint: hint, length: length, offset: pgoff << Linux.pageShift, flags: flags) {
                result = .success(a)
            } else {
                result = archGetUnmappedAreaTopdown(hint: hint, length: length, flags: flags)
            }
        } else if file == nil && !flags.contains(.shared) && hint == 0 && !flags.contains(.fixed)
            && config.thpAlignAnonymous && length % Linux.pmdSize == 0,
           let a = thpGetUnmappedArea(length: length, offset: 0, flags: flags) {
            result = .success(a)
        } else {
            result = archGetUnmappedAreaTopdown(hint: hint, length: length, flags: flags)
        }
        guard case .success(let addr) = result else { return result }
        if addr > config.taskSize - length { return .failure(.ENOMEM) }
        if Linux.offsetInPage(addr) != 0 { return .failure(.EINVAL) }
        return .success(addr)
    }

    // MARK: mmap

    /// `do_mmap()` + `mmap_region()`, writer exclusion held. Returns the address and, for
    /// `MAP_POPULATE`, the range to populate once the lock allows.
    /// `claim` is shown the range chosen before anything changes; false abandons the call
    /// (range designs: the range lock for it would have to wait).
    func doMmap(addr inAddr: UInt64, length inLen: UInt64, prot: Prot, flags inFlags: MapFlags,
                file: MMFile?, offset: UInt64,
                claim: (Range<UInt64>) -> Bool = { _ in true }) -> Result<(UInt64, PopulateRequest?), Errno> {
        // sys_mmap() checks the offset before ksys_mmap_pgoff() looks at the descriptor.
        if Linux.offsetInPage(offset) != 0 { return .failure(.EINVAL) }
        if file == nil && !inFlags.contains(.anonymous) { return .failure(.EBADF) }
        var hugeTLB = false
        var hugePageSize: UInt64 = 0
        if inFlags.contains(.hugeTLB) {
            // ksys_mmap_pgoff(): only hugetlbfs files (none here) or anonymous memory of a
            // huge page size the machine has (2 MiB, 1 GiB on x86-64).
            if file != nil || !inFlags.contains(.anonymous) { return .failure(.EINVAL) }
            let sizeLog = (inFlags.rawValue >> 26) & 0x3f
            if sizeLog != 0 && sizeLog != 21 && sizeLog != 30 { return .failure(.EINVAL) }
            hugeTLB = true
            hugePageSize = sizeLog == 30 ? 1 << 30 : 2 << 20
        }
        var pgoff = offset >> Linux.pageShift
        if inLen == 0 { return .failure(.EINVAL) }
        var flags = inFlags
        if flags.contains(.fixedNoReplace) { flags.insert(.fixed) }
        var addr = inAddr
        if !flags.contains(.fixed) {
            // round_hint_to_min()
            addr &= Linux.pageMask
            if addr != 0 && addr < config.mmapMinAddr { addr = Linux.pageAlign(config.mmapMinAddr) }
        }
        // Huge pages: the length rounds up to whole huge pages, and a fixed address must be
        // aligned to one (hugetlb_get_unmapped_area()).
        let len = hugeTLB ? (inLen &+ hugePageSize - 1) & ~(hugePageSize - 1) : Linux.pageAlign(inLen)
        if len == 0 { return .failure(.ENOMEM) }
        if hugeTLB && flags.contains(.fixed) && addr & (hugePageSize - 1) != 0 { return .failure(.EINVAL) }
        if pgoff &+ (len >> Linux.pageShift) < pgoff { return .failure(.EOVERFLOW) }
        if mapCount > config.maxMapCount { return .failure(.ENOMEM) }

        var vmFlags = VMFlags.from(prot: prot).union([.mayRead, .mayWrite, .mayExec]).union(defFlags)
        if flags.contains(.growsDown) { vmFlags.insert(.growsDown) }
        if flags.contains(.locked) { vmFlags.insert(.locked) }
        if flags.contains(.stack) { vmFlags.insert(.noHugePage) }
        // do_mmap(): PROT_EXEC alone takes the execute-only key.
        if config.executeOnlyPKey && prot == .exec { vmFlags.insert(.pkeyExecOnly) }

        switch getUnmappedArea(file: file, hint: addr, length: len, pgoff: pgoff, flags: flags) {
        case .failure(let e): return .failure(e)
        case .success(let a): addr = a
        }
        if !claim(addr..<(addr + len)) { return .failure(.EAGAIN) }
        if inFlags.contains(.fixedNoReplace), findIntersection(addr, addr + len) != nil { return .failure(.EEXIST) }
        if flags.contains(.locked) && !canDoMlock { return .failure(.EPERM) }
        if !mlockFutureOK(vmFlags, len) { return .failure(.EAGAIN) }

        // Anonymous huge pages are a hugetlbfs file to do_mmap(): they take the file branch.
        if file != nil || hugeTLB {
            switch flags.type {
            case MapFlags.shared.rawValue, MapFlags.sharedValidate.rawValue:
                if flags.type == MapFlags.shared.rawValue { flags = flags.intersection(MapFlags.legacyMask) }
                if !flags.subtracting(MapFlags.legacyMask).isEmpty { return .failure(.EOPNOTSUPP) }
                vmFlags.formUnion([.shared, .mayShare])
                fallthrough
            case MapFlags.private.rawValue:
                if vmFlags.contains(.growsDown) { return .failure(.EINVAL) }
            default:
                return .failure(.EINVAL)
            }
        } else {
            switch flags.type {
            case MapFlags.shared.rawValue:
                if vmFlags.contains(.growsDown) { return .failure(.EINVAL) }
                pgoff = 0
                vmFlags.formUnion([.shared, .mayShare])
            case MapFlags.droppable.rawValue:
                // Neither locked nor a stack; huge pages took the file branch (EINVAL there).
                if flags.contains(.locked) || vmFlags.contains(.growsDown) { return .failure(.EINVAL) }
                // Never reserved, not copied by fork, not dumped.
                vmFlags.formUnion([.droppable, .noReserve, .wipeOnFork, .dontDump])
                pgoff = addr >> Linux.pageShift
            case MapFlags.private.rawValue:
                pgoff = addr >> Linux.pageShift
            default:
                return .failure(.EINVAL)
            }
        }
        if flags.contains(.noReserve) && config.honourNoReserve { vmFlags.insert(.noReserve) }
        if hugeTLB {
            // hugetlbfs_file_mmap(): the offset must be a whole number of huge pages; then
            // hugetlb_reserve_pages(): the huge page pool is empty (nr_hugepages 0, the
            // host's default), so a reserving mapping fails, after every other check. Both
            // come after __mmap_region() cleared what a MAP_FIXED range held, so the old
            // mappings are gone either way (vms_abort_munmap_vmas() leaves the gap; probed on
            // 6.18 with 2 MiB pages). MAP_NORESERVE mappings of huge pages are not modelled:
            // they fail the same way.
            if flags.contains(.fixed), findIntersection(addr, addr + len) != nil {
                switch detachRange(addr, addr + len) {
                case .failure(let e): return .failure(e)
                case .success(let gone): finishUnmap(gone, addr, addr + len)
                }
            }
            if (pgoff << Linux.pageShift) & (hugePageSize - 1) != 0 { return .failure(.EINVAL) }
            return .failure(.ENOMEM)
        }

        // __mmap_prepare(): private writable memory is charged, less what it replaces;
        // shmem_zero_setup() charges anonymous shared memory unless MAP_NORESERVE.
        if accountable(vmFlags) || (file == nil && vmFlags.contains(.shared) && !vmFlags.contains(.noReserve)) {
            var charged = len >> Linux.pageShift
            // Only a fixed mapping can replace accounted memory (a chosen range is free).
            if accountable(vmFlags) && flags.contains(.fixed) {
                tree.forEach(addr, addr + len) { v in
                    if v.vmFlags.contains(.account) {
                        charged -= (min(v.vmEnd, addr + len) - max(v.vmStart, addr)) >> Linux.pageShift
                    }
                    return true
                }
            }
            if !vmEnoughMemory(charged) { return .failure(.ENOMEM) }
        }
        // mmap_region(): a droppable VMA is never locked (mlockall's def_flags included), though
        // the populate that VM_LOCKED asked for still runs (probed). VM_LOCKED is cleared only
        // once the VMA exists (__mmap_complete): the merge is tried with it, so a droppable
        // mapping under MCL_FUTURE never merges with a neighbour (probed: difftest seed 33253).
        switch mmapRegion(file: file, addr: addr, len: len, flags: vmFlags, pgoff: pgoff,
                          neverLocked: vmFlags.contains(.droppable)) {
        case .failure(let e): return .failure(e)
        case .success:
            let populate = vmFlags.contains(.locked) || (flags.contains(.populate) && !flags.contains(.nonBlock))
            return .success((addr, populate ? PopulateRequest(start: addr, length: len) : nil))
        }
    }

    /// `accountable_mapping()`: private writable memory is charged (VM_ACCOUNT).
    func accountable(_ f: VMFlags) -> Bool {
        f.intersection([.noReserve, .shared, .write]) == .write
    }

    /// `mmap_region()`: unmaps what the range overlapped, then extends a neighbour or adds a VMA.
    func mmapRegion(file: MMFile?, addr: UInt64, len: UInt64, flags inFlags: VMFlags, pgoff: UInt64,
                    neverLocked: Bool = false) -> Result<Void, Errno> {
        let end = addr + len
        if findIntersection(addr, end) != nil {
            switch detachRange(addr, end) {
            case .failure(let e): return .failure(e)
            case .success(let gone): finishUnmap(gone, addr, end)
            }
        }
        var flags = inFlags
        if accountable(flags) { flags.insert(.account) }
        let fileBits = file.map { UInt(bitPattern: Unmanaged.passUnretained($0).toOpaque()) } ?? 0
        let c = MergeCandidate(flags: flags, file: fileBits, anonName: 0, anonVMA: 0, uncowed: false, pgoff: pgoff)
        if mergeNewRange(addr, end, c) != nil { return .success(()) }
        var f = file
        var p = pgoff
        if file == nil && flags.contains(.shared) {
            f = MMFile.shmem(size: len, frames: frames)   // shmem_zero_setup()
            p = 0
        }
        if neverLocked { flags.subtract([.locked, .lockOnFault]) }
        let v = vmaAlloc(start: addr, end: end, flags: flags, pgoff: p, file: f)
        vmaLink(v)
        return .success(())
    }

    // MARK: munmap

    /// `vms_gather_munmap_vmas()`: splits at the edges and detaches every VMA inside
    /// `[start, end)`. Fails with ENOMEM before changing anything if a split in the middle of
    /// a VMA would pass `max_map_count`.
    func detachRange(_ start: UInt64, _ end: UInt64) -> Result<[VMARef], Errno> {
        guard let first = tree.find(from: start), first.vmStart < end else { return .success([]) }
        // vms_gather_munmap_vmas(): a sealed VMA is EPERM — checked for the first before it is
        // split, for the others as they are reached (the first's split stays, as in Linux).
        if first.vmFlags.contains(.sealed) { return .failure(.EPERM) }
        if start > first.vmStart {
            if end < first.vmEnd && mapCount >= config.maxMapCount { return .failure(.ENOMEM) }
            splitVMA(first, at: start, newBelow: true)
        }
        var gone: [VMARef] = []
        tree.forEach(start, end) { gone.append($0); return true }
        if gone.contains(where: { $0.vmFlags.contains(.sealed) }) { return .failure(.EPERM) }
        if let last = gone.last, last.vmEnd > end { splitVMA(last, at: end, newBelow: false) }
        for v in gone { vmaUnlink(v) }
        return .success(gone)
    }

    /// `free_pgtables()`'s floor and ceiling: the model's (clamped) and Linux's.
    struct UnmapBounds {
        var floor: UInt64
        var ceiling: UInt64
        var linuxFloor: UInt64
        var linuxCeiling: UInt64
    }

    /// Where `free_pgtables()` may free tables once `gone` is unmapped: between the
    /// neighbouring VMAs (`ceiling` 0 is the top), clamped to `tableFreeLimit` (range designs
    /// hold only part of the space), and Linux's own bounds. Computed while the tree cannot
    /// change.
    func unmapBounds(_ gone: [VMARef]) -> UnmapBounds {
        guard let first = gone.first, let last = gone.last else { return UnmapBounds(floor: 0, ceiling: 0, linuxFloor: 0, linuxCeiling: 0) }
        let linuxFloor = tree.prev(before: first.vmStart).map { $0.vmEnd } ?? 0
        let linuxCeiling = tree.find(from: last.vmEnd).map { $0.vmStart } ?? 0
        var b = UnmapBounds(floor: linuxFloor, ceiling: linuxCeiling, linuxFloor: linuxFloor, linuxCeiling: linuxCeiling)
        let limit = tableFreeLimit
        if limit.isEmpty { (b.floor, b.ceiling) = (1, 1); return b }   // nothing held: free nothing
        b.floor = max(b.floor, limit.lowerBound)
        if limit.upperBound != UInt64.max && (b.ceiling == 0 || b.ceiling > limit.upperBound) { b.ceiling = limit.upperBound }
        return b
    }

    /// The rest of munmap once the VMAs are detached (`vms_complete_munmap_vmas`): zap their
    /// pages, free page tables nothing maps any more, free the VMAs after a grace period.
    /// Callable under the read lock (the `global` design downgrades first).
    func finishUnmap(_ gone: [VMARef], _ start: UInt64, _ end: UInt64) {
        finishUnmap(gone, unmapBounds(gone))
    }

    func finishUnmap(_ gone: [VMARef], _ bounds: UnmapBounds) {
        guard let first = gone.first, let last = gone.last else { return }
        for v in gone { zapRange(v.vmStart, v.vmEnd, vma: v, dropMarkers: true) }
        // free_pgtables(): the VMAs leave the reverse map before their tables go, so an rmap
        // walk (holding the anon_vma lock) never reads a table being freed.
        for v in gone { Self.unlinkAnonVMAs(v) }
        if bounds.ceiling == 0 || bounds.ceiling > bounds.floor {
            freePageTables(floor: bounds.floor, ceiling: bounds.ceiling, start: first.vmStart, end: last.vmEnd,
                           level: 4, table: pgd)
        }
        if bounds.floor != bounds.linuxFloor || bounds.ceiling != bounds.linuxCeiling {
            // A range design kept tables outside the range it holds; Linux freed those its own
            // bounds allow: they are absent in Linux now (what fault-around's quirk sees).
            let pmd = Linux.pmdSize
            let ceiling = bounds.linuxCeiling == 0 ? UInt64.max : bounds.linuxCeiling
            rcuRead.readLock()
            forEachPTETable(first.vmStart, last.vmEnd) { table, s, _ in
                let lo = s & ~(pmd - 1)
                if lo >= bounds.linuxFloor && lo &+ pmd <= ceiling && table.isEmpty {
                    table.absentInLinux.pointee.store(1, ordering: .relaxed)
                }
            }
            rcuRead.readUnlock()
        }
        vmaFreeDeferred(gone)
    }

    /// `do_vmi_munmap()` argument checks.
    func munmapArgs(_ start: UInt64, _ len: UInt64) -> Result<UInt64, Errno> {
        if Linux.offsetInPage(start) != 0 || start > config.taskSize || len > config.taskSize - start {
            return .failure(.EINVAL)
        }
        let end = start + Linux.pageAlign(len)
        if end == start { return .failure(.EINVAL) }
        return .success(end)
    }
}
