import FaultlineSync
import Synchronization

// The anonymous reverse map (mm/rmap.c): a VMA's anon_vma and its chain through splits,
// merges, mremap and fork, and the pages' `mapping`/`index`, kept so that `rmap_walk_anon`
// finds every PTE that maps an anonymous page in any address space of the fork hierarchy.

extension AddressSpace {
    // MARK: Chain entries

    /// `anon_vma_chain_link()`: `vma` joins `anonVMA`'s tree (over the pages it maps) and the
    /// head of its own chain. The hierarchy's lock is held for write.
    func anonVMAChainLink(_ vma: VMARef, _ anonVMA: AnonVMA) {
        let pages = VMAIntervalTree.pages(of: vma)
        let node = AVCNode.allocate(capacity: 1)
        node.initialize(to: RBNode(payload: AnonVMAChain(vma: vma, anonVMA: .passUnretained(anonVMA), nextInVMA: vma.anonChainHead,
                                                         first: pages.first, end: pages.end, subtreeEnd: pages.end)))
        anonVMA.tree.insertInterval(node)
        vma.pointee.anonChainHeadBits.store(UInt(bitPattern: node), ordering: .relaxed)
        vma.pointee.anonChain.wrappingAdd(1, ordering: .relaxed)
    }

    /// `__anon_vma_prepare()`: reuses a neighbour's anon_vma when the two VMAs could merge but
    /// for their protection (`find_mergeable_anon_vma`, next first), so that mprotect can merge
    /// them again later; otherwise a new root. Called with the VMA stable (mmap_lock held at
    /// least for read, or the design's equivalent); two faults preparing the same VMA meet
    /// under `page_table_lock`, and the loser lets its new anon_vma go.
    @usableFromInline @inline(never)
    func prepareAnonVMA(_ vma: VMARef) {
        var allocated: AnonVMA? = nil
        let anonVMA: AnonVMA
        if let reuse = findMergeableAnonVMA(vma) {
            anonVMA = AnonVMA.from(reuse)
        } else {
            anonVMA = AnonVMA.alloc(system)
            anonVMA.numChildren += 1   // a root's link to itself
            allocated = anonVMA
        }
        anonVMA.lockWrite()
        pageTableLock.lock()
        if vma.anonVMA == 0 {
            anonVMAChainLink(vma, anonVMA)
            anonVMA.numActiveVMAs += 1
            vma.pointee.anonVMABits.store(anonVMA.bits, ordering: .releasing)
            allocated = nil
        }
        pageTableLock.unlock()
        anonVMA.unlockWrite()
        allocated?.put()
    }

    /// `anon_vma_clone()`: `dst` chains to every anon_vma `src` chains to, in the same order.
    /// A VMA without an anon_vma of its own (fork's copy) reuses one of them that no VMA uses
    /// and that has at most one child, so that a process forking forever does not grow the
    /// hierarchy without end (the root never: it links to itself).
    func anonVMAClone(_ dst: VMARef, from src: VMARef) {
        let chain = src.anonChainEntries
        guard let last = chain.last else { return }
        let lock = last.pointee.payload.anonVMA.takeUnretainedValue()
        lock.lockWrite()
        for avc in chain.reversed() {
            let a = avc.pointee.payload.anonVMA.takeUnretainedValue()
            anonVMAChainLink(dst, a)
            if dst.anonVMA == 0 && src.anonVMA != 0 && a.numChildren < 2 && a.numActiveVMAs == 0 {
                dst.pointee.anonVMABits.store(a.bits, ordering: .relaxed)
            }
        }
        if dst.anonVMA != 0 { AnonVMA.from(dst.anonVMA).numActiveVMAs += 1 }
        lock.unlockWrite()
    }

    /// `anon_vma_fork()`: the child's copy `vma` of the parent's `pvma` chains to the parent's
    /// anon_vmas (their pages are shared copy-on-write) and gets one of its own (for the pages
    /// it will copy), a child of the parent's — unless the clone reused one.
    func anonVMAFork(_ vma: VMARef, parent pvma: VMARef) {
        guard pvma.anonVMA != 0 else { return }
        vma.pointee.anonVMABits.store(0, ordering: .relaxed)
        anonVMAClone(vma, from: pvma)
        if vma.anonVMA != 0 { return }
        let a = AnonVMA.alloc(system)
        a.numActiveVMAs += 1
        let parent = AnonVMA.from(pvma.anonVMA)
        a.makeChild(of: parent)
        a.lockWrite()
        vma.pointee.anonVMABits.store(a.bits, ordering: .relaxed)
        anonVMAChainLink(vma, a)
        parent.numChildren += 1
        a.unlockWrite()
    }

    /// `dup_anon_vma()`: a merge's surviving `target` without an anon_vma takes `source`'s,
    /// and its chain (the pages it absorbs may be any of them).
    func dupAnonVMA(_ target: VMARef, from source: VMARef) {
        guard target.anonVMA == 0, source.anonVMA != 0 else { return }
        vmaStartWrite(target)
        target.pointee.anonVMABits.store(source.anonVMA, ordering: .relaxed)
        anonVMAClone(target, from: source)
    }

    /// `unlink_anon_vmas()`: `vma` leaves every tree it is in; an anon_vma whose tree empties
    /// no longer counts as its parent's child and loses the tree's reference (freed unless a
    /// child still holds it as root). Called once the VMA's pages are gone (free_pgtables,
    /// or a merge that moved them to the survivor).
    static func unlinkAnonVMAs(_ vma: VMARef) {
        let chain = vma.anonChainEntries
        guard let first = chain.first else {
            vma.pointee.anonVMABits.store(0, ordering: .relaxed)
            return
        }
        let lock = first.pointee.payload.anonVMA.takeUnretainedValue()
        lock.lockWrite()
        var emptied: [AnonVMA] = []
        for avc in chain {
            let a = avc.pointee.payload.anonVMA.takeUnretainedValue()
            a.tree.remove(avc)
            if a.tree.root == nil {
                a.parent.numChildren -= 1
                emptied.append(a)
            }
            avc.deinitialize(count: 1)
            avc.deallocate()
        }
        if vma.anonVMA != 0 { AnonVMA.from(vma.anonVMA).numActiveVMAs -= 1 }
        vma.pointee.anonVMABits.store(0, ordering: .relaxed)
        vma.pointee.anonChainHeadBits.store(0, ordering: .relaxed)
        vma.pointee.anonChain.store(0, ordering: .relaxed)
        lock.unlockWrite()
        for a in emptied { a.put() }
    }

    /// `anon_vma_interval_tree_pre_update_vma()` + `_post_update_vma()`: the VMA's range or
    /// pgoff changed; its entries move to their new place in every tree.
    func anonVMAUpdateRange(_ vma: VMARef) {
        let chain = vma.anonChainEntries
        guard let first = chain.first else { return }
        let lock = first.pointee.payload.anonVMA.takeUnretainedValue()
        let pages = VMAIntervalTree.pages(of: vma)
        lock.lockWrite()
        for avc in chain {
            let a = avc.pointee.payload.anonVMA.takeUnretainedValue()
            a.tree.remove(avc)
            avc.pointee.payload.first = pages.first
            avc.pointee.payload.end = pages.end
            avc.pointee.payload.subtreeEnd = pages.end
            a.tree.insertInterval(avc)
        }
        lock.unlockWrite()
    }

    // MARK: Pages

    /// `__folio_set_anon()` (from `folio_add_new_anon_rmap`): a new anonymous page belongs to
    /// `anonVMA` (the VMA's, from `ensureAnonVMA`), at the VMA's linear index of `address`.
    @inlinable @inline(__always)
    func setAnonRmap(_ f: FrameNumber, _ anonVMA: UInt, _ s: VMASnapshot, _ address: UInt64) {
        let p = frames.page(f)
        p.pointee.mapping.store(anonVMA, ordering: .relaxed)
        p.pointee.index.store(s.pgoff &+ ((address &- s.start) >> Linux.pageShift), ordering: .relaxed)
    }

    /// `folio_move_anon_rmap()`: a write fault reusing a page mapped only here moves it to the
    /// VMA's own anon_vma, so later walks need not search the ancestors' trees (under a range
    /// lock the snapshot's: the VMA may have been merged away since); none, the page stays.
    @inlinable @inline(__always)
    func moveAnonRmap<V: FaultValidator>(_ f: FrameNumber, _ s: VMASnapshot, _ v: V) {
        let a = v.vmaStable ? s.vma.anonVMA : s.anonVMA
        if a != 0 { frames.page(f).pointee.mapping.store(a, ordering: .relaxed) }
    }
}

extension MMSystem {
    /// `rmap_walk_anon()`: calls `body(mm, vma, address)` for every VMA whose chain reaches
    /// anonymous page `f`'s anon_vma and whose range covers the page's index, with the
    /// hierarchy's lock held for read. Each is a place the page may be mapped (the caller
    /// checks the PTE, as `page_vma_mapped_walk` does). The page must stay mapped meanwhile.
    public func rmapWalkAnon(_ f: FrameNumber, _ body: (AddressSpace, VMARef, UInt64) -> Void) {
        guard let a = folioLockAnonVMARead(f) else { return }
        let index = frames.page(f).pointee.index.load(ordering: .relaxed)
        a.tree.forEachOverlap(index, index &+ 1) { avc in
            let v = avc.pointee.payload.vma
            let mm = Unmanaged<AddressSpace>.fromOpaque(UnsafeRawPointer(bitPattern: v.pointee.vmMM.load(ordering: .relaxed))!)
                .takeUnretainedValue()
            body(mm, v, v.vmStart &+ ((index &- v.vmPgoff) << Linux.pageShift))
        }
        a.unlockRead()
        a.put()
    }

    /// `folio_lock_anon_vma_read()`: the anon_vma of a mapped anonymous page, with a
    /// reference and its root's lock held for read; nil if the page is not anonymous or no
    /// longer mapped. The page's mapping is read under RCU (anon_vmas are freed after a grace
    /// period) and trusted only while the page is still mapped after the reference is taken:
    /// an unmapped page's anon_vma may be on its way out.
    func folioLockAnonVMARead(_ f: FrameNumber) -> AnonVMA? {
        let p = frames.page(f)
        guard p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.anon != 0 else { return nil }
        rcu.readLock()
        let bits = p.pointee.mapping.load(ordering: .acquiring)
        guard bits != 0, p.pointee.mapcount.load(ordering: .acquiring) > 0 else { rcu.readUnlock(); return nil }
        let a = AnonVMA.from(bits)
        guard a.tryGet() else { rcu.readUnlock(); return nil }
        rcu.readUnlock()
        if p.pointee.mapcount.load(ordering: .acquiring) <= 0 || p.pointee.mapping.load(ordering: .acquiring) != bits {
            a.put()
            return nil
        }
        a.lockRead()
        return a
    }

    /// The PTEs mapping `f` that `rmap_walk_anon` reaches (`page_vma_mapped_walk` at each).
    public func rmapMappings(_ f: FrameNumber) -> [(mm: AddressSpace, address: UInt64)] {
        var out: [(AddressSpace, UInt64)] = []
        rmapWalkAnon(f) { mm, _, address in
            mm.rcuRead.readLock()
            if let slot = mm.walkPTE(address) {
                let pte = slot.pointee.load(ordering: .acquiring)
                if pte & PTE.present != 0 && pte & PTE.special == 0 && PTE.frame(pte) == f { out.append((mm, address)) }
            }
            mm.rcuRead.readUnlock()
        }
        return out
    }

    /// anon_vmas allocated and not yet freed.
    public var liveAnonVMACount: Int { anonVMACache.live.load(ordering: .relaxed) }
}

extension AddressSpace {
    /// `page_vma_mapped_walk()` at one address: `body` runs with the PTE at `address` locked,
    /// if it still maps `f` (present, not special, its table still linked) — the one check
    /// every reverse-map user (try_to_unmap, folio_referenced, reclaim) makes before it acts.
    func withPTEMapping(_ f: FrameNumber, at address: UInt64,
                        _ body: (UnsafeMutablePointer<Atomic<UInt64>>, UInt64, PageTablePage) -> Void) {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        guard let ptep = walkPTE(address) else { return }
        let table = PageTablePage(entry: ptep)
        table.ptl.pointee.lock()
        defer { table.ptl.pointee.unlock() }
        let old = ptep.pointee.load(ordering: .relaxed)
        guard old & PTE.present != 0, old & PTE.special == 0, PTE.frame(old) == f, tableStillLinked(address, ptep) else { return }
        body(ptep, old, table)
    }

    /// Points the page mapped at `address` to the anon_vma of the VMA at `other` (tests): the
    /// state a fault into a VMA already detached leaves (`broken-per-vma-6.15-recheck`) — a
    /// mapped page whose anon_vma its VMAs no longer hold.
    @_spi(Testing) public func _brokenPointPage(at address: UInt64, toAnonVMAOf other: UInt64) {
        guard let v = tree.lookup(other), v.anonVMA != 0, let f = _anonRmap(at: address)?.frame else { return }
        frames.page(f).pointee.mapping.store(v.anonVMA, ordering: .releasing)
    }

    /// What the reverse map knows at `address` (tests): the frame mapped there, the length of
    /// its VMA's anon_vma chain, and the ids of the VMA's anon_vma and of the page's.
    @_spi(Testing) public func _anonRmap(at address: UInt64) -> (frame: FrameNumber?, chain: Int, vmaAnonVMA: UInt64?, pageAnonVMA: UInt64?)? {
        guard let v = tree.lookup(address) else { return nil }
        var frame: FrameNumber? = nil
        rcuRead.readLock()
        if let slot = walkPTE(address) {
            let pte = slot.pointee.load(ordering: .acquiring)
            if pte & PTE.present != 0 && pte & PTE.special == 0 { frame = PTE.frame(pte) }
        }
        rcuRead.readUnlock()
        let pageAnon = frame.flatMap { f -> UInt64? in
            let m = frames.page(f).pointee.mapping.load(ordering: .relaxed)
            return m == 0 ? nil : AnonVMA.from(m).id
        }
        return (frame, v.anonChainEntries.count, v.anonVMA == 0 ? nil : AnonVMA.from(v.anonVMA).id, pageAnon)
    }
}
