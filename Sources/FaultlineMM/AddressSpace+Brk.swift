import FaultlineSync

extension AddressSpace {
    /// `brk()`, writer exclusion held. Returns the new break, or the old one when refused.
    func doBrk(_ brk: UInt64) -> UInt64 {
        let origBrk = brkValue
        let minBrk = startBrkValue
        if brk < minBrk { return origBrk }
        let newBrk = Linux.pageAlign(brk)
        let oldBrk = Linux.pageAlign(brkValue)
        if oldBrk == newBrk {
            brkValue = brk
            return brk
        }
        if brk <= brkValue {
            // Shrinking is always allowed, unless a non-brk mapping is in the way.
            guard let v = tree.find(from: newBrk), v.vmStart < oldBrk else { return origBrk }
            brkValue = brk
            switch detachRange(newBrk, oldBrk) {
            case .failure:
                brkValue = origBrk
                return origBrk
            case .success(let gone):
                finishUnmap(gone, newBrk, oldBrk)
                _ = v
                return brk
            }
        }
        // Growing past the top of the address space (the aligned break wraps): the memory
        // check refuses it in Linux (do_brk_flags), and the break stays.
        if newBrk < oldBrk || newBrk > config.taskSize { return origBrk }
        // Growing: the page after the new break, and the stack guard gap, must be free.
        if let next = tree.find(from: oldBrk), newBrk + Linux.pageSize > vmStartGap(next) { return origBrk }
        // do_brk_flags(): extend the brk VMA if it ends here, else add one.
        let flags: VMFlags = VMFlags.dataDefault.union(.account).union(defFlags)
        if !mlockFutureOK(flags, newBrk - oldBrk) { return origBrk }
        if mapCount > config.maxMapCount { return origBrk }
        if !vmEnoughMemory((newBrk - oldBrk) >> Linux.pageShift) { return origBrk }
        let c = MergeCandidate(flags: flags, file: 0, anonName: 0, anonVMA: 0, uncowed: false, pgoff: oldBrk >> Linux.pageShift)
        var expanded = false
        if let prev = tree.lookup(oldBrk - 1), prev.vmEnd == oldBrk, prev.vmStart >= startBrkValue {
            expanded = mergeNewRange(oldBrk, newBrk, c, justExpand: true) != nil
        }
        if !expanded {
            vmaLink(vmaAlloc(start: oldBrk, end: newBrk, flags: flags, pgoff: oldBrk >> Linux.pageShift, file: nil))
        }
        brkValue = brk
        return brk
    }
}

extension AddressSpace {
    /// Sets `mm->start_brk` and `mm->brk`, as `load_elf_binary()` does after
    /// `arch_randomize_brk()`. Only while the heap is empty; false otherwise.
    public func setBrkStart(_ addr: UInt64) -> Bool {
        withWriter(.brk, { wholeSpace }) {
            guard brkValue == startBrkValue, Linux.offsetInPage(addr) == 0, addr < config.taskSize else { return false }
            if let v = tree.find(from: startBrkValue), v.vmStart < Linux.pageAlign(startBrkValue) + Linux.pageSize,
               v.vmStart == startBrkValue { return false }
            startBrkValue = addr
            brkValue = addr
            return true
        }
    }
}
