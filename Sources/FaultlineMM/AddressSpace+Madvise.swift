import FaultlineSync

extension Advice {
    /// Advice that changes VMA flags (and so needs the mmap write lock).
    public var changesFlags: Bool {
        switch self {
        case .normal, .random, .sequential, .dontFork, .doFork, .wipeOnFork, .keepOnFork,
             .dontDump, .doDump, .hugePage, .noHugePage:
            true
        default:
            false
        }
    }

    /// `madvise_behavior_valid()` for what the model supports.
    var supported: Bool {
        switch self {
        case .mergeable, .unmergeable: false
        default: true
        }
    }
}

extension AddressSpace {
    /// `madvise()` argument checks; returns the end, or nil for the empty range.
    func madviseArgs(_ start: UInt64, _ lenIn: UInt64, _ advice: Advice?) -> Result<UInt64?, Errno> {
        guard let advice, advice.supported else { return .failure(.EINVAL) }
        if Linux.offsetInPage(start) != 0 { return .failure(.EINVAL) }
        let len = Linux.pageAlign(lenIn)
        if lenIn != 0 && len == 0 { return .failure(.EINVAL) }
        let end = start &+ len
        if end < start { return .failure(.EINVAL) }
        if end == start { return .success(nil) }
        return .success(end)
    }

    /// `madvise_walk_vmas()`: applies `visit` to each mapped part of `[start, end)`; holes
    /// are skipped and reported as ENOMEM at the end.
    func madviseWalk(_ startIn: UInt64, _ end: UInt64,
                     _ visit: (VMARef, UInt64, UInt64) -> Result<UInt64, Errno>) -> Result<Void, Errno> {
        var start = startIn
        var unmappedError = false
        var vma = tree.find(from: start)
        while true {
            guard let v = vma else { return .failure(.ENOMEM) }
            if start < v.vmStart {
                unmappedError = true
                start = v.vmStart
                if start >= end { break }
            }
            let tmp = min(v.vmEnd, end)
            switch visit(v, start, tmp) {
            case .failure(let e): return .failure(e)
            case .success(let resumeAt): start = max(tmp, resumeAt)
            }
            if start >= end { break }
            vma = tree.find(from: start)
        }
        return unmappedError ? .failure(.ENOMEM) : .success(())
    }

    /// The flag-changing advice, writer exclusion held (`madvise_vma_behavior` →
    /// `madvise_update_vma`).
    func doMadviseFlags(_ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        madviseWalk(start, end) { v, s, e in
            if !mayModifySealed(v, advice) { return .failure(.EPERM) }
            var f = v.vmFlags
            switch advice {
            case .normal: f.subtract([.randRead, .seqRead])
            case .sequential: f.remove(.randRead); f.insert(.seqRead)
            case .random: f.remove(.seqRead); f.insert(.randRead)
            case .dontFork: f.insert(.dontCopy)
            case .doFork:
                if f.contains(.io) { return .failure(.EINVAL) }
                f.remove(.dontCopy)
            case .wipeOnFork:
                if !v.isAnonymous || f.contains(.shared) { return .failure(.EINVAL) }
                f.insert(.wipeOnFork)
            case .keepOnFork:
                if f.contains(.droppable) { return .failure(.EINVAL) }
                f.remove(.wipeOnFork)
            case .dontDump: f.insert(.dontDump)
            case .doDump:
                if f.contains(.pfnMap) || f.contains(.io) || f.contains(.droppable) { return .failure(.EINVAL) }
                f.remove(.dontDump)
            case .hugePage:
                f.remove(.noHugePage); f.insert(.hugePage)
                // hugepage_madvise() → khugepaged_enter_vma(): an anonymous VMA that may now
                // hold THPs puts the address space on khugepaged's list.
                if v.isAnonymous && !f.contains(.shared) && config.transparentHugepage != .never { khugepagedEnter() }
            case .noHugePage: f.remove(.hugePage); f.insert(.noHugePage)
            default: return .success(e)
            }
            if f == v.vmFlags { return .success(e) }
            switch modifyFlags(v, s, e, f) {
            case .failure(let err): return .failure(err)
            case .success(let nv): return .success(nv.vmEnd)
            }
        }
    }

    /// The advice that leaves VMAs alone, under the read lock: DONTNEED/FREE zap or drop pages,
    /// COLD/PAGEOUT reclaim, GUARD_INSTALL/GUARD_REMOVE set and clear markers, WILLNEED reads
    /// swapped-out anonymous pages into the swap cache.
    func doMadviseRead(_ start: UInt64, _ end: UInt64, _ advice: Advice) -> Result<Void, Errno> {
        madviseWalk(start, end) { v, s, e in madviseReadVMA(v, s, e, advice) }
    }

    /// One VMA's part `[s, e)` of madvise advice that leaves VMAs alone (`madvise_vma_behavior`):
    /// the end of the part done, or the errno.
    func madviseReadVMA(_ v: VMARef, _ s: UInt64, _ e: UInt64, _ advice: Advice) -> Result<UInt64, Errno> {
        if !mayModifySealed(v, advice) { return .failure(.EPERM) }
        switch advice {
        case .dontNeed, .dontNeedLocked, .free:
            let forbidden: VMFlags = advice == .dontNeedLocked ? [.pfnMap] : [.pfnMap, .locked]
            if !v.vmFlags.isDisjoint(with: forbidden) { return .failure(.EINVAL) }
            if advice == .free {
                if !v.isAnonymous { return .failure(.EINVAL) }
                madviseFree(s, e)
                return .success(e)
            }
            zapRange(s, e, vma: v, dropMarkers: false, reclaimTables: true)
        case .cold, .pageOut:
            if !v.vmFlags.isDisjoint(with: [.locked, .pfnMap, .hugeTLB]) { return .failure(.EINVAL) }
            if advice == .pageOut { madvisePageout(s, e, vma: v) } else { madviseCold(s, e) }
        case .remove:
            // madvise_remove(): a hole punched in the file under the shared mapping.
            if v.vmFlags.contains(.locked) { return .failure(.EINVAL) }
            guard let file = v.vmFile else { return .failure(.EINVAL) }
            if !v.vmFlags.isSuperset(of: [.shared, .mayWrite]) { return .failure(.EACCES) }
            let first = v.vmPgoff &+ ((s &- v.vmStart) >> Linux.pageShift)
            file.punchHole(pages: first..<(first &+ ((e &- s) >> Linux.pageShift)))
        case .guardInstall:
            if !isValidGuardVMA(v, allowLocked: false) { return .failure(.EINVAL) }
            guardInstall(v, s, e)
        case .guardRemove:
            if !isValidGuardVMA(v, allowLocked: true) { return .failure(.EINVAL) }
            guardRemove(s, e)
        case .willNeed:
            // madvise_willneed() -> madvise_swapin() on anonymous memory (a file's readahead
            // is not modelled here).
            if v.isAnonymous, system.swap != nil { madviseSwapin(s, e) }
        default:
            break
        }
        return .success(e)
    }
}
