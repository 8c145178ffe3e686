import FaultlineSync

/// What a new or changed range would look like, for the merge checks (`struct vma_merge_struct`).
struct MergeCandidate {
    var flags: VMFlags
    var file: UInt
    var anonName: UInt32
    var anonVMA: UInt
    var uncowed: Bool
    var pgoff: UInt64
    /// The VMA whose anon_vma (and chain) the range brings (mremap's source), if it has one.
    var anonSource: VMARef? = nil
}

extension AddressSpace {
    /// `is_mergeable_vma()`: flags equal apart from soft-dirty and the sticky ones, same file,
    /// same anon name.
    func isMergeable(_ v: VMARef, _ c: MergeCandidate) -> Bool {
        (v.vmFlags.rawValue ^ c.flags.rawValue) & ~(VMFlags.softDirty.rawValue | VMFlags.sticky.rawValue) == 0
            && v.fileBits == c.file && v.anonNameID == c.anonName
    }

    /// `VM_STICKY`: what a merge keeps from every VMA it joins.
    func keepSticky(_ survivor: VMARef, _ flags: VMFlags) {
        let add = flags.intersection(.sticky)
        if !add.isEmpty && !survivor.vmFlags.isSuperset(of: add) {
            vmaStartWrite(survivor)
            survivor.setFlags(survivor.vmFlags.union(add))
        }
    }

    /// `is_mergeable_anon_vma()`: merging a range whose anon_vma is `src` into `tgt`.
    /// One side without an anon_vma takes the other's, unless that one came from a parent by
    /// fork (its chain is not singular); otherwise they must be the same.
    func anonCompatible(target tgt: UInt, targetUncowed: Bool, source src: UInt, sourceUncowed: Bool) -> Bool {
        if tgt == 0 && src != 0 { return !sourceUncowed }
        if tgt != 0 && src == 0 { return !targetUncowed }
        return src == tgt
    }

    @inline(__always)
    func pages(_ v: VMARef) -> UInt64 { (v.vmEnd - v.vmStart) >> Linux.pageShift }

    /// `__split_vma()`: splits `v` at `addr`. With `newBelow` the new VMA takes the part below
    /// `addr`, else the part above; `v` keeps the rest. The caller checks `max_map_count`.
    @discardableResult
    func splitVMA(_ v: VMARef, at addr: UInt64, newBelow: Bool) -> VMARef {
        precondition(addr > v.vmStart && addr < v.vmEnd)
        let n = vmaDup(v)
        let delta = (addr - v.vmStart) >> Linux.pageShift
        vmaStartWrite(v)
        return withIMmapWrite(v.vmFile) {
            if newBelow {
                n.setBounds(v.vmStart, addr)
            } else {
                n.setBounds(addr, v.vmEnd)
                n.setPgoff(v.vmPgoff + delta)
            }
            if !system._brokenSplitSkipsAnonClone { anonVMAClone(n, from: v) }
            if newBelow {
                vmaSetRange(v, start: addr, end: v.vmEnd, pgoff: v.vmPgoff + delta, iMmapHeld: true)
            } else {
                vmaSetRange(v, start: v.vmStart, end: addr, pgoff: v.vmPgoff, iMmapHeld: true)
            }
            vmaLink(n, iMmapHeld: true)
            return n
        }
    }

    /// `split_vma()`: with the map-count check.
    func splitChecked(_ v: VMARef, at addr: UInt64, newBelow: Bool) -> Result<VMARef, Errno> {
        if mapCount >= config.maxMapCount { return .failure(.ENOMEM) }
        return .success(splitVMA(v, at: addr, newBelow: newBelow))
    }

    /// Removes a VMA that a merge absorbed; freed after a grace period. The merge holds the
    /// file's i_mmap lock (`withIMmapWrite`).
    func removeMerged(_ v: VMARef) {
        vmaUnlink(v, iMmapHeld: true)
        vmaFreeDeferred([v])
    }

    /// Gives `target` the anon_vma of `source` if it has none (`dup_anon_vma()`).
    func inheritAnon(_ target: VMARef, from source: VMARef) { dupAnonVMA(target, from: source) }

    /// `dup_anon_vma()` from the range a new-range merge places: its source VMA's anon_vma.
    func inheritAnon(_ target: VMARef, from c: MergeCandidate) {
        guard c.anonVMA != 0 && target.anonVMA == 0 else { return }
        guard let source = c.anonSource, source.anonVMA == c.anonVMA else {
            preconditionFailure("a merge candidate with an anon_vma but not its VMA")
        }
        dupAnonVMA(target, from: source)
    }

    /// `vma_merge_new_range()`: places `[start, end)` by extending a neighbour when one (or
    /// both) can take it. Returns the VMA that now covers the range, or nil. The range has no
    /// VMA of its own (`vmg->middle` is NULL, even for mremap's grow in place and move), so
    /// its anon_vma is never refused for coming from a parent, and prev and next need only
    /// anon_vmas that do not differ (probed: a forked child's grown VMA merges with a next
    /// VMA that has none).
    func mergeNewRange(_ start: UInt64, _ end: UInt64, _ c: MergeCandidate, justExpand: Bool = false) -> VMARef? {
        let pglen = (end - start) >> Linux.pageShift
        var prev: VMARef? = nil
        if start > 0, let p = tree.lookup(start - 1), p.vmEnd == start { prev = p }
        var next: VMARef? = nil
        if !justExpand, let n = tree.lookup(end), n.vmStart == end { next = n }

        let left = prev.map { p in
            isMergeable(p, c) && anonCompatible(target: p.anonVMA, targetUncowed: p.hadUncowedParents,
                                                source: c.anonVMA, sourceUncowed: false)
                && p.vmPgoff + pages(p) == c.pgoff
        } ?? false
        var right = next.map { n in
            isMergeable(n, c) && anonCompatible(target: n.anonVMA, targetUncowed: n.hadUncowedParents,
                                                source: c.anonVMA, sourceUncowed: false)
                && n.vmPgoff == c.pgoff + pglen
        } ?? false
        if left && right, let p = prev, let n = next {
            // are_anon_vmas_compatible(): prev would absorb next too.
            if p.anonVMA != 0 && n.anonVMA != 0 && p.anonVMA != n.anonVMA { right = false }
        }
        if left && right, let p = prev, let n = next {
            let newEnd = n.vmEnd
            inheritAnon(p, from: n)
            keepSticky(p, c.flags.union(n.vmFlags))
            return withIMmapWrite(p.vmFile) {
                removeMerged(n)
                vmaSetRange(p, start: p.vmStart, end: newEnd, pgoff: p.vmPgoff, iMmapHeld: true)
                return p
            }
        }
        if left, let p = prev {
            inheritAnon(p, from: c)
            keepSticky(p, c.flags)
            vmaSetRange(p, start: p.vmStart, end: end, pgoff: p.vmPgoff)
            return p
        }
        if right, let n = next {
            inheritAnon(n, from: c)
            keepSticky(n, c.flags)
            vmaSetRange(n, start: start, end: n.vmEnd, pgoff: c.pgoff)
            return n
        }
        return nil
    }

    /// `vma_modify_flags()`: gives `[start, end)` of `v` the flags `newFlags`, merging with a
    /// neighbour where the rules allow (`vma_merge_existing_range`) and splitting otherwise.
    /// Returns the VMA now covering exactly `[start, end)`.
    func modifyFlags(_ v: VMARef, _ start: UInt64, _ end: UInt64, _ newFlags: VMFlags) -> Result<VMARef, Errno> {
        let leftSide = start == v.vmStart
        let rightSide = end == v.vmEnd
        let pgoff = v.vmPgoff + ((start - v.vmStart) >> Linux.pageShift)
        let c = MergeCandidate(flags: newFlags, file: v.fileBits, anonName: v.anonNameID,
                               anonVMA: v.anonVMA, uncowed: v.hadUncowedParents, pgoff: pgoff)
        var prev: VMARef? = nil
        if leftSide, start > 0, let p = tree.lookup(start - 1), p.vmEnd == start { prev = p }
        var next: VMARef? = nil
        if rightSide, let n = tree.lookup(end), n.vmStart == end { next = n }
        let pglen = (end - start) >> Linux.pageShift
        let mergeLeft = prev.map { p in
            isMergeable(p, c) && p.vmPgoff + pages(p) == pgoff
                && anonCompatible(target: p.anonVMA, targetUncowed: p.hadUncowedParents,
                                  source: c.anonVMA, sourceUncowed: c.uncowed)
        } ?? false
        var mergeRight = next.map { n in
            isMergeable(n, c) && n.vmPgoff == pgoff + pglen
                && anonCompatible(target: n.anonVMA, targetUncowed: n.hadUncowedParents,
                                  source: c.anonVMA, sourceUncowed: c.uncowed)
        } ?? false
        if mergeLeft && mergeRight, let p = prev, let n = next,
           !anonCompatible(target: p.anonVMA, targetUncowed: p.hadUncowedParents,
                           source: n.anonVMA, sourceUncowed: n.hadUncowedParents) {
            mergeRight = false
        }
        if mergeLeft && mergeRight, let p = prev, let n = next {
            let newEnd = n.vmEnd
            inheritAnon(p, from: v)
            inheritAnon(p, from: n)
            keepSticky(p, newFlags.union(n.vmFlags))
            return withIMmapWrite(v.vmFile) {
                removeMerged(v)
                removeMerged(n)
                vmaSetRange(p, start: p.vmStart, end: newEnd, pgoff: p.vmPgoff, iMmapHeld: true)
                return .success(p)
            }
        }
        if mergeLeft, let p = prev {
            inheritAnon(p, from: v)
            keepSticky(p, newFlags)
            return withIMmapWrite(v.vmFile) {
                if rightSide {
                    removeMerged(v)
                } else {
                    vmaSetRange(v, start: end, end: v.vmEnd, pgoff: v.vmPgoff + pglen, iMmapHeld: true)
                }
                vmaSetRange(p, start: p.vmStart, end: end, pgoff: p.vmPgoff, iMmapHeld: true)
                return .success(p)
            }
        }
        if mergeRight, let n = next {
            inheritAnon(n, from: v)
            keepSticky(n, newFlags)
            return withIMmapWrite(v.vmFile) {
                if leftSide {
                    removeMerged(v)
                } else {
                    vmaSetRange(v, start: v.vmStart, end: start, pgoff: v.vmPgoff, iMmapHeld: true)
                }
                vmaSetRange(n, start: start, end: n.vmEnd, pgoff: pgoff, iMmapHeld: true)
                return .success(n)
            }
        }
        // No merge: split off what stays as it was.
        if v.vmStart < start {
            if case .failure(let e) = splitChecked(v, at: start, newBelow: true) { return .failure(e) }
        }
        if v.vmEnd > end {
            if case .failure(let e) = splitChecked(v, at: end, newBelow: false) { return .failure(e) }
        }
        vmaStartWrite(v)
        v.setFlags(newFlags)
        return .success(v)
    }
}
