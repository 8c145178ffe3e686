import CFaultline
import FaultlineMM
import FaultlineSync

/// What the owner put in a slot.
enum SlotKind: CaseIterable {
    case anonPrivate, anonShared, filePrivate, fileShared
    var isShared: Bool { self == .anonShared || self == .fileShared }
}

/// The owner's knowledge of one slot. `expected[i]` is the word at offset 0 of page i, or
/// `unknown` where the owner cannot know it (file pages it has not written privately).
struct SlotState {
    var mapped = false
    var kind = SlotKind.anonPrivate
    var prot: Prot = [.read, .write]
    var file = 0
    var expected: [UInt64]
    static let unknown = UInt64.max

    init(pages: Int) { expected = Array(repeating: 0, count: pages) }
}

/// One stress thread: see `DesignStress`.
final class StressWorker: @unchecked Sendable {
    unowned let stress: DesignStress
    let index: Int
    var rng: SplitMix64
    var slots: [SlotState]
    /// When each slot was last unmapped (in iterations): it stays unmapped a while, so that a
    /// PTE a broken design installs late has time to be seen.
    var unmappedAt: [Int]
    var iteration = 0
    /// The slot this thread works on most just now; the others fault into it the most.
    var hot = 0
    var slotOps = 0
    var generation: UInt64 = 0
    /// Kernel-placed anonymous mappings: (address, pages, expected words).
    var placed: [(UInt64, Int, [UInt64])] = []
    let mm: AddressSpace
    let layout: StressLayout
    let pages = StressLayout.pagesPerSlot

    init(stress: DesignStress, index: Int, seed: UInt64) {
        self.stress = stress
        self.index = index
        rng = SplitMix64(seed: seed)
        mm = stress.mm
        layout = stress.layout
        slots = Array(repeating: SlotState(pages: StressLayout.pagesPerSlot), count: StressLayout.slotsPerThread)
        unmappedAt = Array(repeating: -Self.cooling, count: StressLayout.slotsPerThread)
    }

    static let cooling = 2000

    func count(_ op: StressOp) { stress.opCounts.slots.add(op.index) }

    func violation(_ s: String) { stress.violation("thread \(index): " + s) }

    /// An access that failed: a violation, except running out of memory under `--memory`,
    /// which is counted and reported apart (Linux would OOM-kill; the model also cannot swap
    /// shared memory out, so it runs out sooner than Linux would).
    func accessFailed(_ e: FaultError, _ s: @autoclosure () -> String) {
        if e == .oom && stress.options.memoryPages > 0 {
            stress.oomFailures.wrappingAdd(1, ordering: .relaxed)
        } else {
            violation(s())
        }
    }

    func run() {
        while stress.parkIfAsked() {
            iteration += 1
            let r = rng.below(1000)
            switch r {
            case 0..<400: faultOwn()
            case 400..<650: faultOther()
            case 650..<750: faultShared()
            case 750..<880: slotOp()
            case 880..<960: sharedOp()
            case 960..<985: kernelPlacedOp()
            default: mapsRead()
            }
        }
    }

    // MARK: Addresses and values

    func page(_ k: Int, _ p: Int) -> UInt64 { layout.slot(index, k) + UInt64(p) * Linux.pageSize }

    func signature(_ k: Int, _ p: Int) -> UInt64 {
        generation &+= 1
        return UInt64(index + 1) << 56 | (generation & 0xFF_FFFF_FFFF) << 12 | UInt64(k) << 6 | UInt64(p)
    }

    static func flags(_ prot: Prot) -> VMFlags {
        var f: VMFlags = []
        if prot.contains(.read) { f.insert(.read) }
        if prot.contains(.write) { f.insert(.write) }
        if prot.contains(.exec) { f.insert(.exec) }
        return f
    }

    func perms(_ s: SlotState) -> String {
        (s.prot.contains(.read) ? "r" : "-") + (s.prot.contains(.write) ? "w" : "-") + "-" + (s.kind.isShared ? "s" : "p")
    }

    func load(_ a: UInt64) -> Result<UInt64, FaultError> { mm.withByte(a, .read) { $0.load(as: UInt64.self) } }

    func store(_ a: UInt64, _ v: UInt64) -> Result<Void, FaultError> { mm.withByte(a, .write) { $0.storeBytes(of: v, as: UInt64.self) } }

    // MARK: Faults

    /// Touch a page of a slot of our own: the result must match what we know.
    func faultOwn() {
        count(.faultOwn)
        let k = rng.below(slots.count)
        let p = rng.below(pages)
        let a = page(k, p)
        let s = slots[k]
        if !s.mapped {
            if case .success = load(a) { violation("read of unmapped own slot \(k) at \(hex(a)) succeeded") }
            return
        }
        if s.prot.contains(.write) && rng.chance(60) {
            let v = signature(k, p)
            switch store(a, v) {
            case .success:
                if s.kind != .fileShared { slots[k].expected[p] = v }
            case .failure(let e):
                accessFailed(e, "write to own \(perms(s)) slot \(k) at \(hex(a)) failed: \(e)")
            }
        } else if s.prot.contains(.read) {
            switch load(a) {
            case .success(let v):
                let want = s.expected[p]
                if want != SlotState.unknown && v != want {
                    violation("own slot \(k) (\(s.kind)) page \(p) at \(hex(a)) holds \(hex(v)), expected \(hex(want)) (now: \(mm.describePage(a)))")
                }
            case .failure(let e):
                accessFailed(e, "read of own \(perms(s)) slot \(k) at \(hex(a)) failed: \(e)")
            }
        } else {
            if case .success = load(a) { violation("read of own PROT_NONE slot \(k) at \(hex(a)) succeeded") }
        }
    }

    /// Touch a page of another thread's slot, at offsets ≥ 8 (the owner's word stays its own).
    func faultOther() {
        count(.faultOther)
        guard stress.options.threads > 1 else { return faultOwn() }
        var t = rng.below(stress.options.threads - 1)
        if t >= index { t += 1 }
        let k = rng.chance(80) ? stress.hotSlots[t].load(ordering: .relaxed) : rng.below(StressLayout.slotsPerThread)
        let a = layout.slot(t, k) + UInt64(rng.below(pages)) * Linux.pageSize + 8 + UInt64(index % 500) * 8
        if rng.chance(60) { _ = store(a, UInt64(index)) } else { _ = load(a) }
    }

    func faultShared() {
        count(.faultShared)
        let sh = layout.sharedArea
        let a = sh.lowerBound + UInt64(rng.below(Int(StressLayout.sharedPages))) * Linux.pageSize + 8 + UInt64(index % 500) * 8
        if rng.chance(60) { _ = store(a, UInt64(index)) } else { _ = load(a) }
    }

    // MARK: Own slots

    func slotOp() {
        slotOps += 1
        if slotOps % 256 == 0 {
            hot = rng.below(slots.count)
            stress.hotSlots[index].store(hot, ordering: .relaxed)
        }
        let isHot = rng.chance(50)
        let k = isHot ? hot : rng.below(slots.count)
        if !slots[k].mapped {
            if iteration - unmappedAt[k] < Self.cooling { return checkNoPTEs(k, "while unmapped") }
            mapSlot(k)
            return
        }
        // Whatever a late fault may have left must be gone before we change the slot again.
        checkPTEs(k, "before the next change")
        // The hot slot mostly changes protection (it stays mapped, so the others keep faulting
        // into a VMA that keeps changing); the rest get every operation.
        switch (isHot, rng.below(100)) {
        case (true, 0..<55), (false, 22..<44): protectSlot(k)
        case (true, 55..<65), (false, 0..<22): unmapSlot(k)
        case (true, 65..<75), (false, 44..<58): dontneedSlot(k)
        case (true, 75..<80), (false, 58..<72): moveSlot(k)
        case (true, 80..<85), (false, 72..<80): pageoutSlot(k)
        default: verifySlot(k)
        }
    }

    /// No present PTE may remain in an unmapped slot.
    func checkNoPTEs(_ k: Int, _ why: String) {
        let base = layout.slot(index, k)
        let n = mm.presentPages(base, base + StressLayout.slotBytes)
        if n != 0 { violation("\(n) present PTEs in own slot \(k) at \(hex(base)) \(why)") }
    }

    /// Every PTE in a mapped slot must be allowed by its protection and map a live frame.
    func checkPTEs(_ k: Int, _ why: String) {
        let s = slots[k]
        let base = layout.slot(index, k)
        let f = Self.flags(s.prot)
        var bad: String?
        mm.forEachPresentPTE(in: base..<(base + StressLayout.slotBytes)) { a, pte in
            guard bad == nil else { return }
            if let why = AddressSpace.pteViolation(pte, flags: f) {
                bad = "\(why) at \(hex(a))"
            } else if pte & PTE.special == 0, mm.system.frames.isFree(PTE.frame(pte)) {
                bad = "PTE at \(hex(a)) maps free frame \(PTE.frame(pte))"
            }
        }
        if let bad { violation("own \(perms(s)) slot \(k) \(why): " + bad) }
    }

    func mapSlot(_ k: Int) {
        count(.mmapSlot)
        checkNoPTEs(k, "while unmapped")
        var s = SlotState(pages: pages)
        s.kind = SlotKind.allCases[rng.below(4)]
        s.prot = rng.chance(70) ? [.read, .write] : (rng.chance(50) ? .read : .none)
        s.file = rng.below(2)
        let base = layout.slot(index, k)
        let r: Result<UInt64, Errno>
        switch s.kind {
        case .anonPrivate:
            r = mm.mmap(base, StressLayout.slotBytes, s.prot, [.private, .anonymous, .fixed])
        case .anonShared:
            r = mm.mmap(base, StressLayout.slotBytes, s.prot, [.shared, .anonymous, .fixed])
        case .filePrivate, .fileShared:
            // Each slot maps its own part of the file: only its owner writes those pages' word 0.
            let off = UInt64(index * StressLayout.slotsPerThread + k) * StressLayout.slotBytes
            r = mm.mmap(base, StressLayout.slotBytes, s.prot, [s.kind == .fileShared ? .shared : .private, .fixed],
                        file: stress.files[s.file], offset: off)
            for i in 0..<pages { s.expected[i] = SlotState.unknown }
        }
        guard case .success(let a) = r, a == base else {
            violation("mmap of own slot \(k) at \(hex(base)) gave \(r)")
            return
        }
        s.mapped = true
        slots[k] = s
    }

    func unmapSlot(_ k: Int) {
        count(.munmapSlot)
        let base = layout.slot(index, k)
        if case .failure(let e) = mm.munmap(base, StressLayout.slotBytes) {
            violation("munmap of own slot \(k) failed: \(e)")
            return
        }
        slots[k].mapped = false
        unmappedAt[k] = iteration
        checkNoPTEs(k, "after munmap returned")
    }

    func protectSlot(_ k: Int) {
        count(.mprotectSlot)
        let choices: [Prot] = [[.read, .write], .read, .none]
        let prot = choices[rng.below(3)]
        let base = layout.slot(index, k)
        if case .failure(let e) = mm.mprotect(base, StressLayout.slotBytes, prot) {
            violation("mprotect of own slot \(k) failed: \(e)")
            return
        }
        slots[k].prot = prot
        checkPTEs(k, "after mprotect returned")
    }

    func dontneedSlot(_ k: Int) {
        count(.dontneedSlot)
        let base = layout.slot(index, k)
        if case .failure(let e) = mm.madvise(base, StressLayout.slotBytes, .dontNeed) {
            violation("madvise(DONTNEED) of own slot \(k) failed: \(e)")
            return
        }
        switch slots[k].kind {
        case .anonPrivate: for i in 0..<pages { slots[k].expected[i] = 0 }
        case .filePrivate: for i in 0..<pages { slots[k].expected[i] = SlotState.unknown }
        case .anonShared, .fileShared: break   // the data lives on in the shmem/page cache
        }
    }

    /// MADV_PAGEOUT: anonymous pages go to swap (with a device), clean file pages leave the
    /// cache; whatever we wrote must read back (checked by the next verification).
    func pageoutSlot(_ k: Int) {
        count(.pageoutSlot)
        let base = layout.slot(index, k)
        if case .failure(let e) = mm.madvise(base, StressLayout.slotBytes, .pageOut) {
            violation("madvise(PAGEOUT) of own slot \(k) failed: \(e)")
        }
    }

    func moveSlot(_ k: Int) {
        let free = (0..<slots.count).filter { !slots[$0].mapped }
        guard !free.isEmpty else { return verifySlot(k) }
        count(.mremapSlot)
        let d = free[rng.below(free.count)]
        let src = layout.slot(index, k)
        let dst = layout.slot(index, d)
        checkNoPTEs(d, "before mremap into it")
        let r = mm.mremap(src, StressLayout.slotBytes, StressLayout.slotBytes, [.mayMove, .fixed], newAddress: dst)
        guard case .success(let a) = r, a == dst else {
            violation("mremap of own slot \(k) to slot \(d) gave \(r)")
            return
        }
        slots[d] = slots[k]
        slots[k].mapped = false
        unmappedAt[k] = iteration
        checkNoPTEs(k, "after mremap moved it away")
    }

    /// Reads every page's word 0 and compares it with what we wrote.
    func verifySlot(_ k: Int) {
        count(.verifySlot)
        let s = slots[k]
        guard s.mapped, s.prot.contains(.read) else { return checkPTEs(k, "at verification") }
        for p in 0..<pages where s.expected[p] != SlotState.unknown {
            switch load(page(k, p)) {
            case .success(let v):
                if v != s.expected[p] {
                    violation("own slot \(k) (\(s.kind)) page \(p) holds \(hex(v)), expected \(hex(s.expected[p])) (lost write; now: \(mm.describePage(page(k, p))))")
                }
            case .failure(let e):
                accessFailed(e, "read of own slot \(k) page \(p) failed: \(e)")
            }
        }
        checkPTEs(k, "at verification")
    }

    /// With every thread parked: the owner's words as the page tables map them now.
    func checkOwnSlotsQuiescent() {
        for (k, s) in slots.enumerated() {
            if !s.mapped {
                checkNoPTEs(k, "at quiesce")
                continue
            }
            checkPTEs(k, "at quiesce")
            for p in 0..<pages where s.expected[p] != SlotState.unknown {
                let pte = mm.pteValue(page(k, p))
                if PTE.isSwap(pte), let swap = mm.system.swap {
                    // Swapped out: the words are in the swap cache or on the device.
                    let v = swap.word(PTE.swapSlot(pte))
                    if v != s.expected[p] {
                        violation("own slot \(k) (\(s.kind)) page \(p) swapped out holding \(hex(v)), expected \(hex(s.expected[p])) at quiesce")
                    }
                    continue
                }
                if pte & PTE.present == 0 {
                    if s.kind == .anonPrivate && s.expected[p] != 0 {
                        violation("own slot \(k) page \(p): written \(hex(s.expected[p])) but no PTE at quiesce (lost page)")
                    }
                    continue
                }
                let v = pte & PTE.special != 0 ? 0 : mm.system.frames.pointer(PTE.frame(pte)).load(as: UInt64.self)
                if v != s.expected[p] {
                    violation("own slot \(k) (\(s.kind)) page \(p) maps a frame holding \(hex(v)), expected \(hex(s.expected[p])) at quiesce")
                }
            }
        }
    }

    // MARK: The shared area: every operation, overlapping, results not predictable

    func sharedOp() {
        count(.sharedOp)
        let sh = layout.sharedArea
        let npages = Int(StressLayout.sharedPages)
        let len = UInt64(1 + rng.below(16)) * Linux.pageSize
        let a = sh.lowerBound + UInt64(rng.below(npages - 16)) * Linux.pageSize
        let prots: [Prot] = [[.read, .write], .read, .none]
        // One shared operation in `hugePageOneIn` is the huge-page one; the others are as
        // they were before huge pages (five calls, stores).
        let huge = stress.options.hugePages && rng.below(max(stress.options.hugePageOneIn, 1)) == 0
        switch huge ? 5 : rng.below(6) {
        case 0:
            if rng.chance(70) {
                _ = mm.mmap(a, len, prots[rng.below(3)], [rng.chance(80) ? .private : .shared, .anonymous, .fixed])
            } else {
                _ = mm.mmap(a, len, prots[rng.below(3)], [rng.chance(50) ? .private : .shared, .fixed],
                            file: stress.files[rng.below(2)], offset: UInt64(rng.below(64)) * Linux.pageSize)
            }
        case 1: _ = mm.munmap(a, len)
        case 2: _ = mm.mprotect(a, len, prots[rng.below(3)])
        case 3: _ = mm.madvise(a, len, rng.chance(50) ? .dontNeed : .pageOut)
        case 4:
            let to = sh.lowerBound + UInt64(rng.below(npages - 16)) * Linux.pageSize
            _ = mm.mremap(a, len, len, [.mayMove, .fixed], newAddress: to)
        case 5 where huge:
            // The area's aligned 2 MiB: mapped afresh (its page table goes) with MADV_HUGEPAGE,
            // so the next fault there maps a THP, which the other operations, all of a few
            // pages, then split; or collapsed; or only the advice changed.
            let pmd = Linux.pmdSize
            let h = (sh.lowerBound + pmd - 1) & ~(pmd - 1)
            guard h + pmd <= sh.upperBound else { break }
            if rng.chance(50) {
                let collapse = rng.chance(30)
                _ = mm.mmap(h, pmd, [.read, .write], [.private, .anonymous, .fixed])
                if !collapse { _ = mm.madvise(h, pmd, .hugePage) }
                _ = store(h + UInt64(rng.below(512)) * Linux.pageSize + 8 + UInt64(index % 500) * 8, 1)
                if collapse { _ = mm.madvise(h, pmd, .collapse) }
                // And at once a call on part of it, which splits it (while the others fault).
                if rng.chance(50) {
                    let a = h + UInt64(1 + rng.below(500)) * Linux.pageSize
                    let len = UInt64(1 + rng.below(8)) * Linux.pageSize
                    switch rng.below(5) {
                    case 0: _ = mm.mprotect(a, len, .read)
                    case 1: _ = mm.madvise(a, len, .dontNeed)
                    case 2: _ = mm.madvise(a, len, .cold)
                    case 3: _ = mm.madvise(a, len, .free)
                    default: _ = mm.munmap(a, len)
                    }
                    // Whatever the others did meanwhile, under the table's lock the PMD is
                    // PTEs or a consistent huge PMD (the broken twin leaves a marked one cut).
                    if let p = mm.checkHugePMD(at: h) { violation("shared area, after a cut of part of its 2 MiB: \(p)") }
                }
            } else if rng.chance(40) {
                // MADV_COLLAPSE: a THP of whatever the 2 MiB holds, beside the others' faults.
                _ = mm.madvise(h, pmd, .collapse)
            } else {
                _ = mm.madvise(h, pmd, rng.chance(75) ? .hugePage : .noHugePage)
            }
        default:
            for i in 0..<Int(len / Linux.pageSize) { _ = store(a + UInt64(i) * Linux.pageSize + 8 + UInt64(index % 500) * 8, 1) }
        }
    }

    // MARK: Kernel-placed mappings (get_unmapped_area, claim paths)

    func kernelPlacedOp() {
        count(.kernelPlaced)
        if placed.count < 4 && (placed.isEmpty || rng.chance(50)) {
            let n = 1 + rng.below(16)
            switch mm.mmap(0, UInt64(n) * Linux.pageSize, [.read, .write], [.private, .anonymous]) {
            case .success(let a): placed.append((a, n, Array(repeating: 0, count: n)))
            case .failure(let e): violation("kernel-placed mmap of \(n) pages failed: \(e)")
            }
            return
        }
        let i = rng.below(placed.count)
        var (a, n, expected) = placed[i]
        switch rng.below(4) {
        case 0:
            // Write a word, then check them all.
            let p = rng.below(n)
            let v = UInt64(index + 1) << 56 | UInt64(rng.below(1 << 20)) << 8 | UInt64(p) | 1
            switch store(a + UInt64(p) * Linux.pageSize, v) {
            case .success: expected[p] = v
            case .failure(let e): accessFailed(e, "write to kernel-placed mapping failed: \(e)")   // the old word stays
            }
            for q in 0..<n {
                if case .success(let got) = load(a + UInt64(q) * Linux.pageSize), got != expected[q] {
                    violation("kernel-placed mapping at \(hex(a)) page \(q) holds \(hex(got)), expected \(hex(expected[q]))")
                }
            }
            placed[i] = (a, n, expected)
        case 1:
            // Grow, moving if needed: the words move with it.
            let m = n + 1 + rng.below(8)
            switch mm.mremap(a, UInt64(n) * Linux.pageSize, UInt64(m) * Linux.pageSize, .mayMove) {
            case .success(let b):
                a = b
                for q in 0..<n {
                    if case .success(let got) = load(a + UInt64(q) * Linux.pageSize), got != expected[q] {
                        violation("after mremap to \(hex(a)) page \(q) holds \(hex(got)), expected \(hex(expected[q]))")
                    }
                }
                expected += Array(repeating: 0, count: m - n)
                placed[i] = (a, m, expected)
            case .failure(let e):
                violation("mremap grow of a kernel-placed mapping failed: \(e)")
            }
        default:
            if case .failure(let e) = mm.munmap(a, UInt64(n) * Linux.pageSize) { violation("munmap of a kernel-placed mapping failed: \(e)") }
            placed.remove(at: i)
        }
    }

    // MARK: Maps readers

    /// Reads maps of our own area: it must show exactly our mapped slots with their
    /// permissions (nobody else changes them), and be sorted and disjoint.
    func mapsRead() {
        count(.mapsRead)
        let reader = stress.options.mapsReader ?? (rng.chance(50) ? .locked : .lockless)
        if rng.chance(10) {
            let all = mm.mapsLines(reader: reader)
            for (x, y) in zip(all, all.dropFirst()) where x.end > y.start || x.start >= x.end {
                violation("\(reader) maps lines out of order: \(x) then \(y)")
                return
            }
        }
        let area = layout.area(index)
        let lines = mm.mapsLines(in: area, reader: reader)
        for (x, y) in zip(lines, lines.dropFirst()) where x.end > y.start {
            violation("\(reader) maps lines overlap: \(x) then \(y)")
            return
        }
        for (k, s) in slots.enumerated() {
            let lo = layout.slot(index, k)
            let hi = lo + StressLayout.slotBytes
            let meeting = lines.filter { $0.start < hi && $0.end > lo }
            if !s.mapped {
                if let l = meeting.first { violation("\(reader) maps shows \(l) over unmapped own slot \(k)") }
                continue
            }
            var covered = lo
            for l in meeting where l.start <= covered {
                covered = max(covered, l.end)
                if l.perms != perms(s) { violation("\(reader) maps shows \(l.perms) for own slot \(k), which is \(perms(s))") }
            }
            if covered < hi { violation("\(reader) maps shows a gap at \(hex(covered)) in mapped own slot \(k) (\(hex(lo))-\(hex(hi)))") }
        }
        procmapQueryOwnSlot()
    }

    /// PROCMAP_QUERY, through the design's lock-free walk, for a page of one of our slots
    /// while the others change theirs: a mapped slot answers with a VMA covering the page and
    /// the slot's permissions; an unmapped one with ENOENT, or (covering or next) a VMA that
    /// starts beyond the slot.
    func procmapQueryOwnSlot() {
        let k = rng.below(slots.count)
        let s = slots[k]
        let lo = layout.slot(index, k)
        let a = lo + UInt64(rng.below(StressLayout.pagesPerSlot)) * Linux.pageSize
        let next = rng.chance(50)
        let r = mm.procmapQuery(ProcmapQuery(address: a, flags: next ? ProcmapQuery.coveringOrNext : 0))
        switch (s.mapped, r) {
        case (true, .success(let v)):
            let want: UInt64 = (s.prot.contains(.read) ? 1 : 0) | (s.prot.contains(.write) ? 2 : 0) | (s.kind.isShared ? 8 : 0)
            if v.start > a || v.end <= a || v.flags != want {
                violation("PROCMAP_QUERY at \(hex(a)) of mapped own slot \(k) answered \(hex(v.start))-\(hex(v.end)) flags \(v.flags), want \(want)")
            }
        case (true, .failure(let e)):
            violation("PROCMAP_QUERY at \(hex(a)) of mapped own slot \(k) failed: \(e)")
        case (false, .success(let v)):
            if !next || v.start < lo + StressLayout.slotBytes {
                violation("PROCMAP_QUERY at \(hex(a)) of unmapped own slot \(k) answered \(hex(v.start))-\(hex(v.end))")
            }
        case (false, .failure(let e)):
            // ENOENT: nothing here, or (covering or next) nothing mapped above.
            if e != .ENOENT { violation("PROCMAP_QUERY at \(hex(a)) of unmapped own slot \(k) failed: \(e)") }
        }
    }
}

func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
