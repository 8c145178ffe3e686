import FaultlineSync

extension AddressSpace {
    /// `do_mprotect_pkey()`, writer exclusion held. Like Linux, VMAs before a hole keep their
    /// new protection when the call then fails with ENOMEM.
    func doMprotect(_ startIn: UInt64, _ lenIn: UInt64, _ protIn: Prot) -> Result<Void, Errno> {
        var start = startIn
        // do_mprotect_pkey(): both grow directions is EINVAL before anything else, even for
        // an empty range.
        if protIn.isSuperset(of: [.growsDown, .growsUp]) { return .failure(.EINVAL) }
        if Linux.offsetInPage(start) != 0 { return .failure(.EINVAL) }
        if lenIn == 0 { return .success(()) }
        let len = Linux.pageAlign(lenIn)
        var end = start &+ len
        if end <= start { return .failure(.ENOMEM) }
        let known: UInt32 = Prot.read.rawValue | Prot.write.rawValue | Prot.exec.rawValue | 0x8
            | Prot.growsDown.rawValue | Prot.growsUp.rawValue
        if protIn.rawValue & ~known != 0 { return .failure(.EINVAL) }
        let grows = protIn.intersection([.growsDown, .growsUp])
        if grows == [.growsDown, .growsUp] { return .failure(.EINVAL) }
        let prot = protIn.subtracting([.growsDown, .growsUp])

        guard var vma = tree.find(from: start) else { return .failure(.ENOMEM) }
        if grows.contains(.growsDown) {
            if vma.vmStart >= end { return .failure(.ENOMEM) }
            start = vma.vmStart
            if !vma.vmFlags.contains(.growsDown) { return .failure(.EINVAL) }
        } else if vma.vmStart > start {
            return .failure(.ENOMEM)
        } else if grows.contains(.growsUp) {
            end = vma.vmEnd
            return .failure(.EINVAL)
        }

        var tmp = vma.vmStart
        var nstart = start
        while true {
            if vma.vmStart != tmp { return .failure(.ENOMEM) }
            var newFlags = VMFlags.from(prot: prot).union(vma.vmFlags.subtracting([.read, .write, .exec, .pkeyExecOnly]))
            // arch_override_mprotect_pkey(): PROT_EXEC alone takes the execute-only key, any
            // other protection leaves it (the model hands out no other key).
            if config.executeOnlyPKey && prot == .exec { newFlags.insert(.pkeyExecOnly) }
            // `newflags >> 4` moves VM_MAY* onto VM_*: asking for more than allowed.
            if newFlags.rawValue & ~(newFlags.rawValue >> 4) & VMFlags.accessFlags.rawValue != 0 {
                return .failure(.EACCES)
            }
            tmp = min(vma.vmEnd, end)
            // mprotect_fixup(): a sealed VMA refuses, even an unchanged protection; the VMAs
            // before it keep their change.
            if vma.vmFlags.contains(.sealed) { return .failure(.EPERM) }
            var current = vma
            let old = vma.vmFlags
            if newFlags != old {
                if newFlags.contains(.write) {
                    if old.isDisjoint(with: [.account, .write, .hugeTLB, .shared, .noReserve]) {
                        if !vmEnoughMemory((tmp - nstart) >> Linux.pageShift) { return .failure(.ENOMEM) }
                        newFlags.insert(.account)
                    }
                } else if old.contains(.account) && vma.isAnonymous && vma.anonVMA == 0 {
                    newFlags.remove(.account)
                }
                switch modifyFlags(vma, nstart, tmp, newFlags) {
                case .failure(let e): return .failure(e)
                case .success(let v):
                    changeProtection(nstart, tmp, flags: newFlags)
                    current = v
                    // A private VM_LOCKED VMA becoming writable breaks COW now
                    // (populate_vma_page_range(); errors ignored).
                    if old.intersection([.write, .shared, .locked]) == .locked && newFlags.contains(.write) {
                        _ = populateLocked(nstart, tmp, mode: .mapPopulate)
                    }
                }
            }
            // Go on from the end of the VMA now covering the range (a merge may have taken it
            // past `end`), as `vma_iter_end()` does.
            tmp = current.vmEnd
            nstart = tmp
            guard let next = tree.find(from: tmp), next.vmStart < end else { break }
            vma = next
        }
        if tmp < end { return .failure(.ENOMEM) }
        return .success(())
    }
}
