import FaultlineSync

extension AddressSpace {
    /// The state of one `mremap()` (`struct vma_remap_struct`).
    struct Remap {
        var addr: UInt64
        var oldLen: UInt64
        var newLen: UInt64
        var flags: MremapFlags
        var newAddr: UInt64
        var vma: VMARef?

        var impliesNewAddr: Bool { flags.contains(.fixed) || flags.contains(.dontUnmap) }
        enum Kind { case same, shrink, expand }
        var kind: Kind { newLen == oldLen ? .same : (newLen < oldLen ? .shrink : .expand) }
        var delta: UInt64 { newLen > oldLen ? newLen - oldLen : oldLen - newLen }
    }

    /// `do_mremap()`, writer exclusion held.
    func doMremap(_ addr: UInt64, _ oldLenIn: UInt64, _ newLenIn: UInt64, _ flags: MremapFlags, _ newAddrIn: UInt64) -> Result<UInt64, Errno> {
        var r = Remap(addr: addr, oldLen: Linux.pageAlign(oldLenIn), newLen: Linux.pageAlign(newLenIn),
                      flags: flags, newAddr: newAddrIn, vma: nil)
        // check_mremap_params()
        let known = MremapFlags.fixed.rawValue | MremapFlags.mayMove.rawValue | MremapFlags.dontUnmap.rawValue
        if flags.rawValue & ~known != 0 { return .failure(.EINVAL) }
        if Linux.offsetInPage(addr) != 0 { return .failure(.EINVAL) }
        if r.newLen == 0 || r.newLen > config.taskSize { return .failure(.EINVAL) }
        if r.impliesNewAddr {
            if r.newAddr > config.taskSize - r.newLen { return .failure(.EINVAL) }
            if Linux.offsetInPage(r.newAddr) != 0 { return .failure(.EINVAL) }
            if !flags.contains(.mayMove) { return .failure(.EINVAL) }
            if flags.contains(.dontUnmap) && r.oldLen != r.newLen { return .failure(.EINVAL) }
            if r.addr &+ r.oldLen > r.newAddr && r.newAddr &+ r.newLen > r.addr { return .failure(.EINVAL) }
        }
        // check_map_count_against_split_early(): room for the worst case of all the splits.
        if mapCount + 4 > config.maxMapCount { return .failure(.ENOMEM) }
        if flags.contains(.fixed) && r.oldLen == r.newLen { return remapMove(&r) }
        r.vma = tree.lookup(addr)
        if case .failure(let e) = checkPrepVMA(&r) { return .failure(e) }
        return r.impliesNewAddr ? mremapTo(&r) : mremapAt(&r)
    }

    /// `check_prep_vma()`.
    func checkPrepVMA(_ r: inout Remap) -> Result<Void, Errno> {
        guard let vma = r.vma else { return .failure(.EFAULT) }
        // A sealed VMA is not moved, shrunk or grown.
        if vma.vmFlags.contains(.sealed) { return .failure(.EPERM) }
        if !r.impliesNewAddr { r.newAddr = r.addr }
        guard r.kind == .expand || r.impliesNewAddr else { return .success(()) }
        var oldLen = r.oldLen
        let f = vma.vmFlags
        if oldLen == 0 && f.isDisjoint(with: [.shared, .mayShare]) { return .failure(.EINVAL) }
        if r.flags.contains(.dontUnmap) && !f.isDisjoint(with: [.dontExpand, .pfnMap]) { return .failure(.EINVAL) }
        if r.kind == .shrink { oldLen = r.newLen }
        if oldLen > vma.vmEnd - r.addr { return .failure(.EFAULT) }
        if r.newLen == oldLen { return .success(()) }
        let pgoff = vma.vmPgoff + ((r.addr - vma.vmStart) >> Linux.pageShift)
        if pgoff &+ (r.newLen >> Linux.pageShift) < pgoff { return .failure(.EINVAL) }
        if !f.isDisjoint(with: [.dontExpand, .pfnMap]) { return .failure(.EFAULT) }
        if !mlockFutureOK(f, r.newLen - oldLen) { return .failure(.EAGAIN) }
        return .success(())
    }

    /// `mremap_at()`: resize without a required new address.
    func mremapAt(_ r: inout Remap) -> Result<UInt64, Errno> {
        switch r.kind {
        case .same:
            return .success(r.addr)
        case .shrink:
            return munmapChecked(r.addr + r.newLen, r.oldLen - r.newLen).map { r.addr }
        case .expand:
            let vma = r.vma!
            // Grow in place when [addr, addr + old_len) ends the VMA and the space after is free.
            if vma.vmEnd - r.addr == r.oldLen && expandable(vma, r.delta) {
                if !charge(r) { return .failure(.ENOMEM) }
                let c = MergeCandidate(flags: vma.vmFlags, file: vma.fileBits, anonName: vma.anonNameID,
                                       anonVMA: vma.anonVMA, uncowed: vma.hadUncowedParents,
                                       pgoff: vma.vmPgoff + pages(vma), anonSource: vma)
                guard mergeNewRange(vma.vmEnd, vma.vmEnd + r.delta, c) != nil else {
                    return .failure(.ENOMEM)
                }
                return .success(r.addr)
            }
            if !r.flags.contains(.mayMove) { return .failure(.ENOMEM) }
            switch newAddress(&r) {
            case .failure(let e): return .failure(e)
            case .success: return moveVMA(&r)
            }
        }
    }

    /// `mremap_to()`: a move to an explicit (FIXED) or required (DONTUNMAP) new address.
    func mremapTo(_ r: inout Remap) -> Result<UInt64, Errno> {
        if r.flags.contains(.fixed) {
            if case .failure(let e) = munmapChecked(r.newAddr, r.newLen) { return .failure(e) }
            guard let v = tree.lookup(r.addr) else { return .failure(.EFAULT) }
            r.vma = v
        }
        if r.kind == .shrink {
            if case .failure(let e) = munmapChecked(r.addr + r.newLen, r.oldLen - r.newLen) { return .failure(e) }
            guard let v = tree.lookup(r.addr) else { return .failure(.EFAULT) }
            r.vma = v
            r.oldLen = r.newLen
        }
        switch newAddress(&r) {
        case .failure(let e): return .failure(e)
        case .success: return moveVMA(&r)
        }
    }

    /// `remap_move()`: MREMAP_FIXED with equal lengths moves every VMA in the range, keeping
    /// the gaps between them.
    func remapMove(_ r: inout Remap) -> Result<UInt64, Errno> {
        let start = r.addr
        let end = r.addr + r.oldLen
        var target = r.newAddr
        var result: Result<UInt64, Errno> = .failure(.EFAULT)
        var seen = false
        var lastEnd: UInt64 = 0
        var pos = start
        while pos < end, let vma = tree.find(from: pos), vma.vmStart < end {
            if !seen && start < vma.vmStart { return .failure(.EFAULT) }
            let a = max(vma.vmStart, start)
            let len = min(end, vma.vmEnd) - a
            let offset = seen ? vma.vmStart - lastEnd : 0
            lastEnd = vma.vmEnd
            pos = vma.vmEnd
            var sub = Remap(addr: a, oldLen: len, newLen: len, flags: r.flags, newAddr: target + offset, vma: vma)
            if case .failure(let e) = checkPrepVMA(&sub) { return .failure(e) }
            switch mremapTo(&sub) {
            case .failure(let e): return .failure(e)
            case .success(let moved):
                if !seen { result = .success(moved) }
                seen = true
                target = moved + len
            }
        }
        return result
    }

    /// munmap of `[start, end)` as `do_vmi_munmap()` does it (splits and all).
    func munmapRange(_ start: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        guard end > start else { return .success(()) }
        switch detachRange(start, end) {
        case .failure(let e): return .failure(e)
        case .success(let gone):
            finishUnmap(gone, start, end)
            return .success(())
        }
    }

    /// `do_munmap()` with its argument checks.
    func munmapChecked(_ start: UInt64, _ len: UInt64) -> Result<Void, Errno> {
        switch munmapArgs(start, len) {
        case .failure(let e): return .failure(e)
        case .success(let end): return munmapRange(start, end)
        }
    }

    /// `vrm_charge()`: an accounted VMA charges the growth, or with MREMAP_DONTUNMAP the
    /// whole new length.
    func charge(_ r: Remap) -> Bool {
        guard let v = r.vma, v.vmFlags.contains(.account) else { return true }
        let pages = r.flags.contains(.dontUnmap) ? r.newLen >> Linux.pageShift
            : (r.newLen > r.oldLen ? (r.newLen - r.oldLen) >> Linux.pageShift : 0)
        return vmEnoughMemory(pages)
    }

    /// `vma_expandable()`.
    func expandable(_ v: VMARef, _ delta: UInt64) -> Bool {
        let end = v.vmEnd &+ delta
        if end < v.vmEnd { return false }
        if findIntersection(v.vmEnd, end) != nil { return false }
        if end - v.vmStart > config.taskSize || v.vmStart > config.taskSize - (end - v.vmStart) { return false }
        return true
    }

    /// `vrm_set_new_addr()`: where the moved mapping goes.
    func newAddress(_ r: inout Remap) -> Result<Void, Errno> {
        let v = r.vma!
        let pgoff = v.vmPgoff + ((r.addr - v.vmStart) >> Linux.pageShift)
        var mf: MapFlags = []
        if r.flags.contains(.fixed) { mf.insert(.fixed) }
        if v.vmFlags.contains(.mayShare) { mf.insert(.shared) }
        let hint = r.impliesNewAddr ? r.newAddr : 0
        switch getUnmappedArea(file: v.vmFile, hint: hint, length: r.newLen, pgoff: pgoff, flags: mf) {
        case .failure(let e): return .failure(e)
        case .success(let a):
            r.newAddr = a
            return .success(())
        }
    }

    /// `move_vma()`: copies the VMA to its new place (merging where it can), moves the page
    /// tables, then unmaps the source — or, with MREMAP_DONTUNMAP, leaves it in place, empty.
    func moveVMA(_ r: inout Remap) -> Result<UInt64, Errno> {
        if mapCount + 2 > config.maxMapCount { return .failure(.ENOMEM) }
        if !charge(r) { return .failure(.ENOMEM) }
        var vma = r.vma!
        vmaStartWrite(vma)
        // copy_vma(): an anonymous VMA never faulted takes the pgoff of its new place.
        var pgoff = vma.vmPgoff + ((r.addr - vma.vmStart) >> Linux.pageShift)
        if vma.isAnonymous && vma.anonVMA == 0 { pgoff = r.newAddr >> Linux.pageShift }
        let c = MergeCandidate(flags: vma.vmFlags, file: vma.fileBits, anonName: vma.anonNameID,
                               anonVMA: vma.anonVMA, uncowed: vma.hadUncowedParents, pgoff: pgoff, anonSource: vma)
        let vmaStart = vma.vmStart
        let newVMA: VMARef
        if let merged = mergeNewRange(r.newAddr, r.newAddr + r.newLen, c) {
            newVMA = merged
            // The source may have been merged into the new VMA.
            if vmaStart >= merged.vmStart && vmaStart < merged.vmEnd { vma = merged }
        } else {
            let n = vmaDup(vma)
            n.setBounds(r.newAddr, r.newAddr + r.newLen)
            n.setPgoff(pgoff)
            anonVMAClone(n, from: vma)
            vmaLink(n)
            newVMA = n
        }
        // take_rmap_locks(): an rmap walk must not find the page at neither place mid-move.
        let rmapLock = vma.anonChainHead?.pointee.payload.anonVMA.takeUnretainedValue()
        rmapLock?.lockWrite()
        movePageTables(from: r.addr, to: r.newAddr, length: min(r.oldLen, r.newLen))
        rmapLock?.unlockWrite()
        if r.flags.contains(.dontUnmap) {
            // dontunmap_complete(): the source stays, no longer locked; moved whole, it loses
            // its anon_vma.
            vmaStartWrite(vma)
            vma.setFlags(vma.vmFlags.subtracting([.locked, .lockOnFault]))
            if newVMA != vma && r.addr == vma.vmStart && r.addr + r.oldLen == vma.vmEnd {
                Self.unlinkAnonVMAs(vma)
            }
        } else {
            // unmap_source_vma(): an ENOMEM here (no room to split) is swallowed.
            _ = munmapRange(r.addr, r.addr + r.oldLen)
        }
        return .success(r.newAddr)
    }
}
