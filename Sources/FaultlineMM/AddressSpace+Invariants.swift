import FaultlineSync
import Synchronization

/// Frame use seen by walking page tables: mapping PTEs per frame.
public struct FrameMappings {
    public var count: [FrameNumber: Int32] = [:]
    /// Per anon_vma (its bits): VMAs whose `anon_vma` it is, and chain entries linking to it.
    var activeVMAs: [UInt: Int] = [:]
    var chainEntries: [UInt: Int] = [:]
    /// Swap PTEs per swap slot.
    var swapEntries: [UInt32: Int32] = [:]
    public init() {}
}

extension AddressSpace {
    /// Calls `body(address, pte)` for every present PTE in `range`, inside an RCU read-side
    /// section (usable while other threads run; what it sees is racy but never freed memory).
    public func forEachPresentPTE(in range: Range<UInt64>, _ body: (UInt64, UInt64) -> Void) {
        rcuRead.readLock()
        forEachPTETable(range.lowerBound, min(range.upperBound, config.taskSize)) { table, s, e in
            var a = s
            while a < e {
                let pte = table.entry(ptIndex(a, level: 1)).pointee.load(ordering: .acquiring)
                if pte & PTE.present != 0 { body(a, pte) }
                a &+= Linux.pageSize
            }
        }
        rcuRead.readUnlock()
    }

    /// Why `pte` at `address` is not allowed by VMA flags `f`, or nil. A writable PTE needs
    /// VM_WRITE, a user-accessible one some access right, an executable one VM_EXEC.
    public static func pteViolation(_ pte: UInt64, flags f: VMFlags) -> String? {
        if pte & PTE.writable != 0 && !f.contains(.write) { return "writable PTE in a VMA without VM_WRITE" }
        if pte & PTE.user != 0 && f.isDisjoint(with: [.read, .write, .exec]) { return "accessible PTE in a PROT_NONE VMA" }
        if pte & PTE.noExec == 0 && !f.contains(.exec) { return "executable PTE in a VMA without VM_EXEC" }
        if pte & PTE.user != 0 && (pte & PTE.pkeyExecOnly != 0) != f.contains(.pkeyExecOnly) {
            return "PTE protection key differs from its VMA's"
        }
        return nil
    }

    /// Checks, with no other thread using this address space: the VMA tree (sorted, disjoint,
    /// aligned, counted), each VMA's locks and counts at rest, every present PTE inside a VMA
    /// that allows it and mapping a frame that is not free. Adds what it finds to `problems`
    /// and the PTEs per frame to `mappings`.
    public func checkQuiescent(_ problems: inout [String], _ mappings: inout FrameMappings) {
        let tag = "[\(design.rawValue)]"
        if mmapLock.isLocked { problems.append("\(tag) mmap_lock held at rest") }
        if mmSeq.isWriting { problems.append("\(tag) mm sequence count odd at rest") }
        let nodes = tree.kind == .maple ? tree.maple!._checkInvariants() : tree.rb!._checkInvariants()
        system.treeNodesChecked.wrappingAdd(nodes, ordering: .relaxed)
        let all = allVMAs()
        if all.count != mapCount { problems.append("\(tag) map_count \(mapCount) but \(all.count) VMAs in the tree") }
        var prevEnd: UInt64 = 0
        let lockSeq = mmLockSeq.load(ordering: .relaxed)
        for v in all {
            let s = v.vmStart, e = v.vmEnd
            let where_ = "\(tag) VMA \(hex8(s))-\(hex8(e))"
            if s == 0x6b6b_6b6b_6b6b_6b6b || e == 0x6b6b_6b6b_6b6b_6b6b { problems.append("\(where_): poisoned (freed) VMA in the tree") }
            if s >= e || Linux.offsetInPage(s) != 0 || Linux.offsetInPage(e) != 0 { problems.append("\(where_): bad bounds") }
            if s < prevEnd { problems.append("\(where_): overlaps the previous VMA") }
            prevEnd = e
            if tree.lookup(s) != v || tree.lookup(e - 1) != v { problems.append("\(where_): tree does not map its range to it") }
            if v.pointee.detached.load(ordering: .relaxed) { problems.append("\(where_): in the tree but marked detached") }
            if let file = v.vmFile, let p = file.iMmapProblem(v, self) { problems.append("\(where_): \(p)") }
            if v.pointee.lock.isLocked { problems.append("\(where_): VMA lock held at rest") }
            if v.pointee.seq.isWriting { problems.append("\(where_): VMA sequence count odd at rest") }
            // Only per-VMA locks mark (`mm_lock_seq` never moves otherwise, and a VMA starts
            // unmarked), so this holds for every design.
            if v.pointee.lockSeq.load(ordering: .relaxed) == lockSeq {
                problems.append("\(where_): still write-locked (vm_lock_seq == mm_lock_seq)")
            }
            let rc = v.pointee.refcount.load(ordering: .relaxed)
            if rc != 1 { problems.append("\(where_): reference count \(rc) at rest") }
            // vm_refcnt: the tree's reference only (a reader or a writer left one behind).
            let vrc = v.pointee.vmRefcnt.load(ordering: .relaxed)
            if vrc != 1 { problems.append("\(where_): vm_refcnt \(hex8(UInt64(vrc))) at rest") }
            if v.pointee.vmMM.load(ordering: .relaxed) != mmBits { problems.append("\(where_): vm_mm is another address space") }
            if let p = anonChainProblem(v, &mappings) { problems.append("\(where_): \(p)") }
        }
        for p in hugePMDProblems() { problems.append("\(tag) " + p) }
        // Every present PTE: inside a VMA that allows it, mapping a live frame.
        var reported = 0
        forEachPresentPTE(in: 0..<config.taskSize) { a, pte in
            func report(_ s: String) {
                reported += 1
                if reported <= 20 { problems.append("\(tag) PTE at \(hex8(a)): " + s) }
            }
            guard let v = tree.lookup(a) else { report("present PTE outside every VMA"); return }
            if let why = Self.pteViolation(pte, flags: v.vmFlags) { report(why) }
            if pte & PTE.special != 0 { return }
            let f = PTE.frame(pte)
            if f == FramePool.zeroFrame || Int(f) >= frames.capacity { report("maps frame \(f)"); return }
            if frames.isFree(f) { report("maps frame \(f), which is free") }
            if let why = anonRmapProblem(f, v, a) { report(why) }
            if let why = pageCacheProblem(f, v, a) { report(why) }
            mappings.count[f, default: 0] += 1
        }
        // Every other non-empty entry: a guard marker inside a VMA (unmapping drops them).
        rcuRead.readLock()
        forEachPTETable(0, config.taskSize) { table, s, e in
            var a = s
            while a < e {
                let pte = table.entry(ptIndex(a, level: 1)).pointee.load(ordering: .acquiring)
                if PTE.isSwap(pte) {
                    let slot = PTE.swapSlot(pte)
                    mappings.swapEntries[slot, default: 0] += 1
                    let why = system.swap == nil ? "swap entry without a swap device"
                        : Int(slot) >= system.swap!.slots || slot == 0 ? "swap entry for slot \(slot), not on the device"
                        : tree.lookup(a) == nil ? "swap entry outside every VMA" : nil
                    if let why {
                        reported += 1
                        if reported <= 20 { problems.append("\(tag) PTE at \(hex8(a)): " + why) }
                    }
                } else if pte != 0 && pte & PTE.present == 0 {
                    let why = !PTE.isGuard(pte) ? "unknown non-present entry \(hex8(pte))"
                        : tree.lookup(a) == nil ? "guard marker outside every VMA" : nil
                    if let why {
                        reported += 1
                        if reported <= 20 { problems.append("\(tag) PTE at \(hex8(a)): " + why) }
                    }
                }
                a &+= Linux.pageSize
            }
        }
        rcuRead.readUnlock()
        if reported > 20 { problems.append("\(tag) … \(reported - 20) more PTE problems") }
    }

    /// Page-table pages reachable from this address space's PGD (the PGD included).
    public var reachablePageTables: Int {
        var n = 1
        func walk(_ t: PageTablePage, _ level: Int) {
            guard level > 1 else { return }
            for i in 0..<PageTablePage.entries {
                let e = t.entry(i).pointee.load(ordering: .acquiring)
                if e & PTE.present != 0 {
                    n += 1
                    walk(PageTablePage(base: UnsafeMutableRawPointer(bitPattern: UInt(e & ~UInt64(4095)))!), level - 1)
                }
            }
        }
        walk(pgd, 4)
        return n
    }
}

extension MMSystem {
    /// Checks frames against what the page tables of `spaces` (every address space on this
    /// system) map, once RCU callbacks have run: each frame in use has as many mapping PTEs as
    /// its mapcount, and one reference per mapping plus one if it is in a page cache; none is
    /// free and mapped; nothing was written after being freed; page tables are all reachable.
    public func checkQuiescent(_ spaces: [AddressSpace]) -> [String] {
        pauseKswapd(true)
        pauseKhugepaged(true)
        defer { pauseKswapd(false); pauseKhugepaged(false) }
        // Every thread is stopped: their LRU batches can go to the lists.
        frames.lru.drainAll()
        rcu.drain()
        var problems: [String] = []
        var mappings = FrameMappings()
        for mm in spaces { mm.checkQuiescent(&problems, &mappings) }
        var inUse = 0
        var reported = 0
        var charged = 0, uncharged = 0, freeCharged = 0
        for f in 1..<frames.capacity {
            let fn = FrameNumber(f)
            let p = frames.page(fn)
            let flags = p.pointee.flags.load(ordering: .relaxed)
            if flags & PageMeta.Flag.free != 0 {
                if p.pointee.memcgData.load(ordering: .relaxed) != 0 {
                    freeCharged += 1
                    if freeCharged <= 5 { problems.append("frame \(f): free but still charged to a memcg") }
                }
                continue
            }
            inUse += 1
            if p.pointee.memcgData.load(ordering: .relaxed) != 0 {
                charged += 1
            } else if memcg != nil && flags & (PageMeta.Flag.anon | PageMeta.Flag.pageCache) != 0 {
                uncharged += 1
                if uncharged <= 5 { problems.append("frame \(f): anonymous or page cache (flags \(hex8(UInt64(flags)))) but charged to no memcg") }
            }
            let maps = mappings.count[fn] ?? 0
            let mc = p.pointee.mapcount.load(ordering: .relaxed)
            let rc = p.pointee.refcount.load(ordering: .relaxed)
            let want = maps + (flags & PageMeta.Flag.pageCache != 0 ? 1 : 0) + (flags & PageMeta.Flag.swapCache != 0 ? 1 : 0)
            if mc != maps || rc != want {
                reported += 1
                if reported <= 20 {
                    problems.append("frame \(f): \(maps) mapping PTEs but mapcount \(mc), refcount \(rc) (expected \(want)), flags \(hex8(UInt64(flags)))")
                }
            }
        }
        if reported > 20 { problems.append("… \(reported - 20) more frame problems") }
        if freeCharged > 5 { problems.append("… \(freeCharged - 5) more free frames still charged") }
        if uncharged > 5 { problems.append("… \(uncharged - 5) more frames charged to no memcg") }
        if let m = memcg {
            // `memory.usage_in_bytes` is what the pages charged and the stocks hold.
            let usage = m.memory.usage, stocked = m.stocked
            if usage != charged + stocked {
                problems.append("memcg \(m.path): usage \(usage) pages, but \(charged) frames charged and \(stocked) in stocks")
            }
            let st = m.stat
            if st.anon + st.file != charged || st.pgpgin - st.pgpgout != charged {
                problems.append("memcg \(m.path): statistics anon \(st.anon) + file \(st.file), pgpgin \(st.pgpgin) - pgpgout \(st.pgpgout), for \(charged) frames charged")
            }
            var child = m
            while let up = child.parent {
                if up.memory.usage < child.memory.usage { problems.append("memcg \(up.path): usage \(up.memory.usage) below its child's \(child.memory.usage)") }
                child = up
            }
        }
        problems += rmapProblems(mappings)
        problems += swapProblems(mappings)
        problems += lruProblems()
        problems += frames._checkInvariants()
        if inUse != frames.framesInUse { problems.append("frames in use: \(frames.framesInUse) counted, \(inUse) found") }
        let tables = spaces.reduce(0) { $0 + $1.reachablePageTables }
        if tables != livePageTables { problems.append("page tables: \(livePageTables) live, \(tables) reachable (leaked or freed while linked)") }
        let liveVMAsFound = spaces.reduce(0) { $0 + $1.mapCount }
        if liveVMAsFound != liveVMAs { problems.append("VMAs: \(liveVMAs) live, \(liveVMAsFound) in trees") }
        let p = poisonViolations
        if p.frames + p.vmas + p.tables > 0 {
            problems.append("written after free: \(p.frames) frames, \(p.vmas) VMAs, \(p.tables) page tables")
        }
        return problems
    }
}

extension AddressSpace {
    /// What is wrong with `v`'s anon_vma chain, if anything: every entry is `v`'s, over the
    /// pages `v` maps, in its anon_vma's tree; all share one root; the VMA's own anon_vma is
    /// among them; the length is counted right. Counts the links into `mappings`.
    func anonChainProblem(_ v: VMARef, _ mappings: inout FrameMappings) -> String? {
        let chain = v.anonChainEntries
        if v.anonVMA != 0 { mappings.activeVMAs[v.anonVMA, default: 0] += 1 }
        if chain.count != Int(v.anonChainLength) { return "anon_vma chain of \(chain.count) counted as \(v.anonChainLength)" }
        if v.anonVMA != 0 && chain.isEmpty { return "anon_vma but no chain" }
        let pages = VMAIntervalTree.pages(of: v)
        var root: AnonVMA? = nil
        var ownFound = v.anonVMA == 0
        for avc in chain {
            let e = avc.pointee.payload
            let a = e.anonVMA.takeUnretainedValue()
            mappings.chainEntries[a.bits, default: 0] += 1
            if e.vma != v { return "anon_vma chain entry of another VMA" }
            if e.first != pages.first || e.end != pages.end {
                return "anon_vma chain entry over pages \(e.first)..<\(e.end), the VMA maps \(pages.first)..<\(pages.end)"
            }
            if root == nil { root = a.root } else if a.root !== root { return "anon_vma chain across two hierarchies" }
            if a.bits == v.anonVMA { ownFound = true }
            var inTree = false
            a.tree.forEachOverlap(e.first, e.end) { if $0 == avc { inTree = true } }
            if !inTree { return "anon_vma chain entry not in its anon_vma's tree" }
        }
        if !ownFound { return "its anon_vma is not in its chain" }
        return nil
    }

    /// What is wrong with page-cache page `f` mapped at `address` in file or shmem VMA `v`: it
    /// must be the page its file caches at the VMA's index of the address (a page that left the
    /// cache while mapped is one whose writes the next fault after a zap cannot find).
    func pageCacheProblem(_ f: FrameNumber, _ v: VMARef, _ address: UInt64) -> String? {
        guard let file = v.vmFile else { return nil }
        let flags = frames.page(f).pointee.flags.load(ordering: .relaxed)
        guard flags & PageMeta.Flag.anon == 0 else { return nil }
        let index = v.vmPgoff &+ ((address &- v.vmStart) >> Linux.pageShift)
        if flags & PageMeta.Flag.pageCache == 0 { return "file page \(f) (index \(index)) is mapped but in no page cache" }
        let cached = file.cachedPage(index)
        if cached != f { return "file page \(f) is mapped at index \(index), where the cache holds \(cached.map { String($0) } ?? "nothing")" }
        return nil
    }

    /// What is wrong with the reverse map of anonymous page `f` mapped at `address` in `v`: its
    /// index must be the VMA's linear index of the address, its anon_vma in the VMA's chain.
    func anonRmapProblem(_ f: FrameNumber, _ v: VMARef, _ address: UInt64) -> String? {
        let p = frames.page(f)
        guard p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 else { return nil }
        let index = p.pointee.index.load(ordering: .relaxed)
        let want = v.vmPgoff &+ ((address &- v.vmStart) >> Linux.pageShift)
        if index != want { return "anonymous page \(f) has index \(index), the VMA's linear index is \(want)" }
        let m = p.pointee.mapping.load(ordering: .relaxed)
        if m == 0 { return "anonymous page \(f) has no anon_vma" }
        if !v.anonChainEntries.contains(where: { $0.pointee.payload.anonVMA.toOpaque() == UnsafeMutableRawPointer(bitPattern: m) }) {
            return "anonymous page \(f)'s anon_vma is not in the chain of the VMA mapping it"
        }
        return nil
    }
}

extension MMSystem {
    /// The reverse map against the page tables: `rmap_walk_anon` finds every PTE of every
    /// mapped anonymous page; each anon_vma counts the VMAs using it, its tree holds exactly the
    /// chain entries linking to it, `num_children` counts its live children (a root itself);
    /// no anon_vma is leaked.
    func rmapProblems(_ mappings: FrameMappings) -> [String] {
        var problems: [String] = []
        // Only anon_vmas some chain links to are dereferenced: a broken design may leave a
        // page whose anon_vma was freed, which is a problem to report, not to walk.
        var all: [UInt: AnonVMA] = [:]
        for bits in mappings.chainEntries.keys {
            let a = AnonVMA.from(bits)
            all[bits] = a
            all[a.root.bits] = a.root
        }
        var reported = 0
        for (f, n) in mappings.count where frames.page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 {
            let m = frames.page(f).pointee.mapping.load(ordering: .relaxed)
            let found = all[m] == nil ? 0 : rmapMappings(f).count
            if found != Int(n) {
                reported += 1
                if reported <= 20 {
                    problems.append("rmap: anonymous page \(f) mapped by \(n) PTEs, the reverse map finds \(found)"
                                    + (all[m] == nil ? " (its anon_vma is in no chain)" : ""))
                }
            }
        }
        if reported > 20 { problems.append("rmap: … \(reported - 20) more pages") }
        var children: [UInt: Int] = [:]
        for (_, a) in all where a.tree.root != nil { children[a.parent.bits, default: 0] += 1 }
        for (bits, a) in all {
            let tag = "anon_vma \(a.id)"
            if a.tree.count != (mappings.chainEntries[bits] ?? 0) {
                problems.append("\(tag): \(a.tree.count) entries in its tree, \(mappings.chainEntries[bits] ?? 0) chains link to it")
            }
            if a.numActiveVMAs != (mappings.activeVMAs[bits] ?? 0) {
                problems.append("\(tag): num_active_vmas \(a.numActiveVMAs), \(mappings.activeVMAs[bits] ?? 0) VMAs use it")
            }
            if a.numChildren != (children[bits] ?? 0) {
                problems.append("\(tag): num_children \(a.numChildren), \(children[bits] ?? 0) live children")
            }
            a.tree._checkIntervals()
        }
        for bits in mappings.activeVMAs.keys where all[bits] == nil { problems.append("a VMA's anon_vma is in no chain") }
        if all.count != liveAnonVMACount { problems.append("anon_vmas: \(liveAnonVMACount) live, \(all.count) reachable (leaked)") }
        return problems
    }
}

extension MMSystem {
    /// The swap device against the page tables: each slot's count is the number of swap PTEs
    /// holding it, a slot in use is referenced or cached, a cached frame is live, anonymous,
    /// marked and knows its slot; no swap PTE without a device.
    func swapProblems(_ mappings: FrameMappings) -> [String] {
        guard let swap else {
            return mappings.swapEntries.isEmpty ? [] : ["swap: \(mappings.swapEntries.count) slots in PTEs and no swap device"]
        }
        var problems: [String] = []
        let (counts, cache, free) = swap.snapshot()
        var used = 0
        for slot in 1..<swap.slots {
            let want = mappings.swapEntries[UInt32(slot)] ?? 0
            if counts[slot] != want && problems.count < 20 {
                problems.append("swap slot \(slot): count \(counts[slot]), \(want) swap PTEs")
            }
            if counts[slot] > 0 || cache[UInt32(slot)] != nil { used += 1 }
        }
        if swap.slots - 1 - free != used { problems.append("swap: \(swap.slots - 1 - free) slots allocated, \(used) referenced or cached") }
        for (slot, f) in cache {
            let p = frames.page(f)
            let flags = p.pointee.flags.load(ordering: .relaxed)
            if flags & PageMeta.Flag.free != 0 { problems.append("swap cache: slot \(slot) holds free frame \(f)") }
            if flags & (PageMeta.Flag.swapCache | PageMeta.Flag.anon) != PageMeta.Flag.swapCache | PageMeta.Flag.anon {
                problems.append("swap cache: frame \(f) of slot \(slot) not marked anonymous and in the swap cache")
            }
            if p.pointee.swapSlot.load(ordering: .relaxed) != slot { problems.append("swap cache: frame \(f) names slot \(p.pointee.swapSlot.load(ordering: .relaxed)), cached as \(slot)") }
        }
        return problems
    }
}
