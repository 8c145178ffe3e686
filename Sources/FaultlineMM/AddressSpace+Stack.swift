import FaultlineSync

extension AddressSpace {
    /// `lock_mm_and_find_vma()` → `expand_stack_locked()` → `expand_downwards()`: a fault in
    /// no VMA, below a VM_GROWSDOWN one, grows that VMA down to the faulting page under writer
    /// exclusion (Linux upgrades to `mmap_lock` for write). True when a VMA now covers
    /// `address` (grown here, or by a racing fault); false means SIGSEGV (SEGV_MAPERR).
    @usableFromInline @inline(never)
    func expandStack(_ address: UInt64) -> Bool {
        withWriter(.expandStack, { wholeSpace }) {
            if tree.lookup(address) != nil { return true }
            guard let vma = tree.find(from: address), vma.vmFlags.contains(.growsDown) else { return false }
            let start = address & Linux.pageMask
            if start < config.mmapMinAddr { return false }
            // The stack guard gap: the VMA below must stay stack_guard_gap away, unless it
            // grows down too or cannot be accessed.
            if let prev = tree.prev(before: start), !prev.vmFlags.contains(.growsDown),
               !prev.vmFlags.isDisjoint(with: [.read, .write, .exec]), start - prev.vmEnd < Linux.stackGuardGap {
                return false
            }
            // anon_vma_prepare() comes before the limits are checked: a refused growth
            // leaves the VMA with an anon_vma.
            if vma.anonVMA == 0 {
                vmaStartWrite(vma)
                prepareAnonVMA(vma)
            }
            let grow = (vma.vmStart - start) >> Linux.pageShift
            guard grow <= vma.vmPgoff else { return false }
            // acct_stack_growth(): RLIMIT_STACK, then the overcommit check (the last test).
            if vma.vmEnd - start > config.stackLimit { return false }
            if vma.vmFlags.contains(.account) && !vmEnoughMemory(grow) { return false }
            vmaSetRange(vma, start: start, end: vma.vmEnd, pgoff: vma.vmPgoff - grow)
            return true
        }
    }
}
