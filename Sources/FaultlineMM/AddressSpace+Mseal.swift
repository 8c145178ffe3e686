import FaultlineSync

extension AddressSpace {
    /// `mseal(2)` (`do_mseal`): seals every VMA of `[addr, addr + length)` — they may no longer
    /// be unmapped, moved, resized, replaced by MAP_FIXED or reprotected, and their read-only
    /// anonymous pages may not be discarded. `flags` is reserved (EINVAL unless 0); the range
    /// must be mapped throughout (ENOMEM, nothing sealed). Sealing splits and merges VMAs
    /// like any flag.
    public func mseal(_ addr: UInt64, _ length: UInt64, _ flags: UInt64 = 0) -> Result<Void, Errno> {
        defer { returnToUser() }
        if flags != 0 { return .failure(.EINVAL) }
        if Linux.offsetInPage(addr) != 0 { return .failure(.EINVAL) }
        let len = Linux.pageAlign(length)
        if length != 0 && len == 0 { return .failure(.EINVAL) }
        let end = addr &+ len
        if end < addr { return .failure(.EINVAL) }
        if end == addr { return .success(()) }
        return withWriter(.mseal, { addr..<end }) { doMseal(addr, end) }
    }

    func doMseal(_ start: UInt64, _ end: UInt64) -> Result<Void, Errno> {
        // range_contains_unmapped(): any hole and nothing is sealed.
        var cursor = start
        tree.forEach(start, end) { v in
            if v.vmStart > cursor { return false }
            cursor = v.vmEnd
            return true
        }
        if cursor < end { return .failure(.ENOMEM) }
        // mseal_apply(): each VMA as its own flags change (split at the edges, merged with
        // sealed neighbours of the same kind).
        var pos = start
        while pos < end, let v = tree.find(from: pos), v.vmStart < end {
            let e = min(v.vmEnd, end)
            if v.vmFlags.contains(.sealed) {
                pos = e
                continue
            }
            switch modifyFlags(v, max(v.vmStart, pos), e, v.vmFlags.union(.sealed)) {
            case .failure(let err): return .failure(err)
            case .success(let nv): pos = max(e, min(nv.vmEnd, end))
            }
        }
        return .success(())
    }

    /// `can_madvise_modify()`: a discarding advice may not drop the pages of a sealed,
    /// read-only, private anonymous VMA (it would be a memset(0) of sealed memory).
    func mayModifySealed(_ v: VMARef, _ advice: Advice) -> Bool {
        guard v.vmFlags.contains(.sealed) else { return true }
        switch advice {
        case .free, .dontNeed, .dontNeedLocked, .remove, .dontFork, .wipeOnFork, .guardInstall: break
        default: return true
        }
        let roAnon = v.isAnonymous && !v.vmFlags.contains(.shared) && !v.vmFlags.contains(.write)
        return !roAnon
    }
}
