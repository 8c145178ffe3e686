import FaultlineSync
import FaultlineTrees

extension AddressSpace {
    /// `dup_mmap()`: a child address space sharing this one's frames copy-on-write. VMAs
    /// marked DONTFORK are left out; WIPEONFORK ones come back empty. Shared and never-written
    /// private file mappings are not copied (the child faults them in). Writer exclusion held.
    func doFork(design childDesign: Design? = nil) -> AddressSpace {
        var cfg = config
        cfg.startBrk = startBrkValue
        let child = AddressSpace(system: system, design: childDesign ?? design, configuration: cfg)
        child.startBrkValue = startBrkValue
        child.brkValue = brkValue
        var entries: [RangeEntry<VMARef>] = []
        let parents = allVMAs()
        designType.forkBegin(self, parents)
        for v in parents {
            let f = v.vmFlags
            if f.contains(.dontCopy) { continue }
            let n = child.vmaDup(v)
            n.setFlags(f.subtracting([.locked, .lockOnFault]))
            if f.contains(.wipeOnFork) {
                n.pointee.anonVMABits.store(0, ordering: .relaxed)
            } else {
                child.anonVMAFork(n, parent: v)
            }
            child.vmaMarkAttached(n)
            // dup_mmap(): the copy goes into the file's i_mmap beside the original.
            n.vmFile?.iMmapLink(n, child)
            entries.append(RangeEntry(first: n.vmStart, last: n.vmEnd - 1, value: n))
            // vma_needs_copy(): an anon_vma, or guard regions (VM_MAYBE_GUARD).
            if !f.contains(.wipeOnFork) && (v.anonVMA != 0 || f.contains(.maybeGuard)) {
                copyPageRange(to: child, v.vmStart, v.vmEnd, shared: f.contains(.shared))
            }
        }
        child.tree.bulkLoad(entries)
        child.mapCountWord.store(entries.count, ordering: .relaxed)
        return child
    }
}
