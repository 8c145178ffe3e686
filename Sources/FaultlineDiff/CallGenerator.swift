import FaultlineMM
import FaultlineSync

/// Random calls aimed at the interesting places: VMA boundaries, just inside and outside
/// them, holes, the window's top (where the kernel puts mappings), with occasional invalid
/// arguments of every kind.
struct CallGenerator {
    var rng: SplitMix64
    let window: Range<UInt64>
    let heapStart: UInt64
    /// The first heap page the helper never touched: accesses to the heap go at or above it.
    let heapCompare: UInt64
    /// The files' sizes now (ftruncate changes them), kept by the caller.
    var fileSizes: [UInt64]
    let filePaths: [String]
    var forks = 0
    let page = Linux.pageSize
    /// Addresses stored to lately: loads go back to them (after fork, madvise, mremap…).
    var stored: [UInt64] = []
    var thpReaimed = 0
    var collapseReaimed = 0
    var eofTailReaimed = 0
    var punchReaimed = 0
    /// PROCMAP_QUERY draws come from their own stream: a query changes nothing, so adding
    /// them leaves every seed's calls, loads and stores as they were.
    var queryRNG: SplitMix64

    init(seed: UInt64, window: Range<UInt64>, heap: UInt64, heapCompare: UInt64, files: [(path: String, size: UInt64)]) {
        // The seed is mixed before it becomes the state: SplitMix64 steps its state by the
        // golden-ratio constant, so seeding with `seed * γ + c` made sequence n + 1 replay
        // sequence n's stream shifted by one draw (consecutive seeds explored nearly the same
        // calls).
        var mixer = SplitMix64(seed: seed ^ 0x1234_5678)
        rng = SplitMix64(seed: mixer.next())
        queryRNG = SplitMix64(seed: mixer.next() ^ 0x5052_4f43_4d41_5051)   // "PROCMAPQ"
        self.window = window
        heapStart = heap
        self.heapCompare = heapCompare
        fileSizes = files.map(\.size)
        filePaths = files.map(\.path)
    }

    mutating func rand() -> UInt64 { rng.next() }

    mutating func below(_ n: UInt64) -> UInt64 { rand() % max(n, 1) }
    mutating func chance(_ percent: UInt64) -> Bool { below(100) < percent }

    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(below(UInt64(xs.count)))] }

    /// An address in the window: near a VMA edge, inside one, or near the top.
    mutating func address(_ mm: AddressSpace) -> UInt64 {
        let vmas = mm.mapsLines(in: window)
        var a: UInt64
        let r = below(100)
        if !vmas.isEmpty && r < 50 {
            let v = pick(vmas)
            let edge = chance(50) ? v.start : v.end
            let delta = Int64(below(5)) - 2
            a = UInt64(Int64(edge) + delta * Int64(page))
        } else if !vmas.isEmpty && r < 70 {
            let v = pick(vmas)
            a = v.start + below((v.end - v.start) / page) * page
        } else {
            a = window.upperBound - (1 + below(300)) * page
        }
        if !window.contains(a) { a = window.upperBound - page }
        if chance(4) { a += 1 + below(page - 1) }
        return a
    }

    mutating func length() -> UInt64 {
        let r = below(100)
        var l: UInt64
        if r < 55 { l = (1 + below(8)) * page }
        else if r < 80 { l = (9 + below(56)) * page }
        else if r < 88 { l = pick([512, 1024, 1536]) * page }
        else if r < 92 { l = 0 }
        else { l = (1 + below(6)) * page + 1 + below(page - 1) }
        return l
    }

    mutating func prot() -> Prot {
        if chance(3) { return Prot(rawValue: pick([0x10, 0x0100_0001, 0x0300_0000])) }
        return Prot(rawValue: pick([0, 1, 3, 5, 7, 2, 4, 3, 1, 3]))
    }

    mutating func next(_ mm: AddressSpace) -> MemoryCall {
        let r = below(100)
        if r < 30 {
            // Now and then private anonymous memory of 2–6 MiB (placed 2 MiB-aligned), where
            // MADV_HUGEPAGE can give huge pages.
            if chance(12) {
                return .mmap(addr: 0, length: pick([512, 1024, 1536]) * page, prot: [.read, .write],
                             flags: [.private, .anonymous], fd: .none, offset: 0)
            }
            if chance(12) { return madvise(mm, advice: 14) }
            return mmap(mm)
        }
        if r < 43 { return .munmap(addr: address(mm), length: length()) }
        if r < 57 { return .mprotect(addr: address(mm), length: length(), prot: prot()) }
        if r < 70 { return mremap(mm) }
        if r < 85 { return madvise(mm) }
        if r < 87 { return mseal(mm) }
        if r < 89 { return ftruncate() }
        if r < 92 { return mlock(mm) }
        if r < 97 || forks >= 3 {
            let cur = mm.brk(0)
            let deltas: [Int64] = [-3, -1, 0, 1, 2, 5, 17]
            var target = UInt64(Int64(cur) + pick(deltas) * Int64(page))
            if chance(10) { target = 0 }
            if chance(8) { target = heapStart - page }
            if chance(5) { target = cur + (80 << 20) }
            if chance(10) { target += 1 + below(page - 1) }
            return .brk(addr: target)
        }
        forks += 1
        return .fork
    }

    mutating func mmap(_ mm: AddressSpace) -> MemoryCall {
        if chance(1) {
            // More memory than RAM + swap, charged: heuristic overcommit refuses it (private
            // writable, or anonymous shared without MAP_NORESERVE).
            let len = (Linux.hostCommitLimitPages + 1 + below(64)) * page
            let type: MapFlags = chance(50) ? .private : .shared
            return .mmap(addr: 0, length: len, prot: [.read, .write], flags: [type, .anonymous], fd: .none, offset: 0)
        }
        var flags: UInt32
        let t = below(100)
        if t < 55 { flags = MapFlags.private.rawValue }
        else if t < 92 { flags = MapFlags.shared.rawValue }
        else if t < 96 { flags = MapFlags.sharedValidate.rawValue }
        else { flags = pick([0, 0x0f, MapFlags.droppable.rawValue, MapFlags.droppable.rawValue, MapFlags.droppable.rawValue]) }
        var fd = -1
        var offset: UInt64 = 0
        if chance(70) {
            flags |= MapFlags.anonymous.rawValue
            if chance(5) { offset = page }
        } else {
            fd = chance(3) ? 5 : Int(below(UInt64(fileSizes.count)))
            if fd < fileSizes.count {
                let pages = (fileSizes[fd] + page - 1) / page
                offset = below(pages + 1) * page
                if chance(4) { offset += 17 }
            } else if chance(30) {
                offset = 17   // sys_mmap checks the offset before the descriptor
            }
        }
        var addr: UInt64 = 0
        let a = below(100)
        if a < 25 { flags |= MapFlags.fixed.rawValue; addr = address(mm) }
        else if a < 33 { flags |= MapFlags.fixedNoReplace.rawValue; addr = address(mm) }
        else if a < 50 { addr = address(mm) }
        if chance(12) { flags |= MapFlags.populate.rawValue }
        if chance(10) { flags |= MapFlags.noReserve.rawValue }
        // Huge pages: the pool is empty on the host and in the model (MAP_NORESERVE ones, which
        // the host would map, are not modelled).
        else if chance(3) { flags |= MapFlags.hugeTLB.rawValue | pick([0, 21 << 26, 30 << 26, 16 << 26] as [UInt32]) }
        if chance(3) { flags |= MapFlags.stack.rawValue }
        if chance(2) { flags |= MapFlags.growsDown.rawValue }
        var len = length()
        if fd >= 0 && fd < fileSizes.count && chance(70) { len = min(len, 8 * page) }
        // Descriptors as the helper holds them: file i is 3 + i; 3 + 5 is not open.
        let descriptor = fd < 0 ? FileDescriptor.none : FileDescriptor(Int32(3 + fd), path: fd < filePaths.count ? filePaths[fd] : nil)
        return .mmap(addr: addr, length: len, prot: Prot(rawValue: prot().rawValue & 7), flags: MapFlags(rawValue: flags),
                     fd: descriptor, offset: offset)
    }

    mutating func mremap(_ mm: AddressSpace) -> MemoryCall {
        let vmas = mm.mapsLines(in: window)
        var addr = address(mm)
        var oldLen = length()
        if let v = vmas.isEmpty ? nil : pick(vmas), chance(70) {
            addr = v.start + (chance(60) ? 0 : below((v.end - v.start) / page) * page)
            oldLen = chance(60) ? v.end - addr : (1 + below(4)) * page
        }
        var newLen = chance(15) ? oldLen : (1 + below(12)) * page
        if chance(8) { newLen = 512 * page }
        let flags = pick([0, 1, 1, 1, 3, 3, 5, 5, 7, 2, 4, 8] as [UInt32])
        if flags & 4 != 0 && chance(70) { newLen = oldLen }
        let newAddr = flags & 6 != 0 ? address(mm) : 0
        return .mremap(addr: addr, oldLength: oldLen, newLength: newLen, flags: MremapFlags(rawValue: flags), newAddr: newAddr)
    }

    /// Truncation of one of the files: shrinking by whole pages or within the last page, or
    /// growing within the last page, with the argument errors mixed in (a negative length, a
    /// descriptor that is not open, a length beyond ext4's largest file). Never growing by
    /// pages: with read-around modelled most such sequences agree, but the pages past the old
    /// EOF come back differently after a grow and a shrink (seeds 24155, 24564 and 24774 under
    /// per-vma-6.15: the host leaves some out of a fault-around that the model maps, or maps
    /// pages MADV_WILLNEED read that the model does not) — not understood yet.
    mutating func ftruncate() -> MemoryCall {
        if chance(8) { return .ftruncate(fd: FileDescriptor(Int32(3 + 5)), length: below(8) * page) }
        let i = Int(below(UInt64(fileSizes.count)))
        let fd = FileDescriptor(Int32(3 + i), path: filePaths[i])
        let pages = Linux.pageAlign(fileSizes[i]) / page
        var l: UInt64
        switch below(100) {
        case 0..<60: l = min(below(pages + 1) * page + (chance(50) ? below(page) : 0), pages * page)
        case 60..<90: l = pages == 0 ? 0 : (pages - 1) * page + 1 + below(page)
        case 90..<95: l = UInt64(bitPattern: -Int64(1 + below(page)))
        default: l = 1 << 50
        }
        return .ftruncate(fd: fd, length: l)
    }

    /// mlock, mlock2, munlock aimed at VMAs (unaligned starts and holes mixed in); now and
    /// then mlockall (MCL_FUTURE locks and populates every later mapping) or munlockall.
    mutating func mlock(_ mm: AddressSpace) -> MemoryCall {
        let aimed = aimedRange(mm, percent: 70, shortPages: 8, maxPages: 64)
        var addr = aimed.0
        let len = aimed.1
        if chance(5) { addr += 1 + below(page - 1) }
        switch below(100) {
        case 0..<40: return .mlock(addr: addr, length: len)
        case 40..<60: return .mlock2(addr: addr, length: len, flags: chance(90) ? 1 : pick([0, 2, 3]))
        case 60..<90: return .munlock(addr: addr, length: len)
        // Never MCL_CURRENT: it would lock the helper's own mappings (its executable, libc,
        // stack), which the model mirrors by permissions only, and whether they then merge
        // with the heap depends on flags and anon_vmas the mirror cannot know.
        case 90..<96: return .mlockall(flags: pick([2, 6, 2, 6, 0, 4, 8]))
        default: return .munlockall
        }
    }

    /// A range anywhere `address` and `length` draw, or `percent`% of the time aimed at a VMA:
    /// from its start or a page inside it, to its end or 1…`shortPages` pages (at most
    /// `maxPages` when aimed).
    mutating func aimedRange(_ mm: AddressSpace, percent: UInt64, shortPages: UInt64,
                             maxPages: UInt64 = UInt64.max / 4096) -> (UInt64, UInt64) {
        var addr = address(mm)
        var len = length()
        let vmas = mm.mapsLines(in: window)
        if let v = vmas.isEmpty ? nil : pick(vmas), chance(percent) {
            addr = v.start + (chance(50) ? 0 : below((v.end - v.start) / page) * page)
            len = min(chance(50) ? v.end - addr : (1 + below(shortPages)) * page, maxPages * page)
        }
        return (addr, len)
    }

    /// What the model's copies of the files can hold (their page-cache tables).
    static let fileCapacityPages: UInt64 = 96

    /// Sealing is rare (it makes later calls on that memory EPERM), aimed at VMAs, with the
    /// argument errors mixed in.
    mutating func mseal(_ mm: AddressSpace) -> MemoryCall {
        let (addr, len) = aimedRange(mm, percent: 60, shortPages: 3)
        return .mseal(addr: addr, length: len, flags: chance(5) ? 1 : 0)
    }

    mutating func madvise(_ mm: AddressSpace, advice chosen: Int32? = nil) -> MemoryCall {
        var advice: Int32 = chosen ?? pick([0, 1, 2, 3, 4, 4, 8, 9, 9, 10, 11, 14, 15, 16, 17, 18, 18, 19, 20, 21, 22, 22, 23, 23, 24, 5, 7, 99,
                                   102, 102, 103, 25, 25])
        var addr = address(mm)
        var len = length()
        // MADV_HUGEPAGE, MADV_NOHUGEPAGE and MADV_COLLAPSE mostly over a whole VMA of the window (random ranges
        // seldom hold an aligned 2 MiB of one VMA, so huge pages were never tried).
        if advice == 14 || advice == 15 || advice == 25, chance(70) {
            let big = mm.mapsLines(in: window).filter { $0.end - $0.start >= Linux.pmdSize }
            let anon = big.filter { $0.path.isEmpty && $0.perms.hasSuffix("p") }
            let vmas = anon.isEmpty ? big : anon
            if !vmas.isEmpty {
                let v = pick(vmas)
                addr = v.start
                len = v.end - v.start
            }
        }
        // The host's khugepaged collapses a 2 MiB mapped by a PTE table in a VM_HUGEPAGE VMA
        // at a time no sequence controls (it is woken when a VMA first becomes eligible), and
        // the model has no khugepaged yet: advice that would leave such memory is drawn again,
        // and counted — MADV_POPULATE_* faulting small pages there, MADV_HUGEPAGE over small
        // pages, and advice that splits a huge PMD without unmapping it all.
        let lo = addr & ~(page - 1), hi = min(Linux.pageAlign(addr &+ len), window.upperBound)
        if hi > lo {
            let splits: Set<Int32> = [4, 8, 9, 20, 21, 102]
            if (advice == 22 || advice == 23) && mm.khugepagedCouldCollapse(lo, hi, withPages: false)
                || advice == 14 && wouldBecomeTHPEligible(mm, addr, len)
                || splits.contains(advice) && mm.cutsHugePMD(lo, hi) {
                thpReaimed += 1
                advice = pick([0, 1, 2, 3, 10, 11, 16, 17])
            }
        }
        // MADV_COLLAPSE of file or shmem memory collapses the page cache, which the model does
        // not (it refuses, EINVAL, and counts it).
        if advice == 25, touchesFileVMA(mm, addr, len) {
            collapseReaimed += 1
            advice = pick([0, 1, 2, 3, 10, 11, 16, 17])
        }
        // MADV_REMOVE over a shared mapping of a regular file: with readahead modelled most
        // such sequences agree (2000 × 40 twice), but a punched last page near EOF comes back
        // differently (seed 15005 under per-vma-6.15: the host leaves it out of a later
        // fault-around, the model maps it) — not understood yet. Shared anonymous memory
        // (shmem) has no readahead: kept.
        if advice == 9, touchesSharedFileMapping(mm, addr, len) {
            punchReaimed += 1
            advice = pick([4, 8, 20, 21])
        }
        return .madvise(addr: addr, length: len, advice: advice)
    }

    func touchesFileVMA(_ mm: AddressSpace, _ addr: UInt64, _ len: UInt64) -> Bool {
        let lo = addr & ~(page - 1)
        let hi = min(Linux.pageAlign(addr &+ len), window.upperBound)
        guard hi > lo else { return false }
        return mm.mapsLines(in: lo..<hi).contains { !$0.path.isEmpty && $0.path != "[heap]" && $0.path != "[stack]" }
    }

    func touchesSharedFileMapping(_ mm: AddressSpace, _ addr: UInt64, _ len: UInt64) -> Bool {
        let lo = addr & ~(page - 1)
        let hi = min(Linux.pageAlign(addr &+ len), window.upperBound)
        guard hi > lo else { return false }
        return mm.mapsLines(in: lo..<hi).contains { $0.perms.hasSuffix("s") && filePaths.contains($0.path) }
    }

    /// MADV_HUGEPAGE over private anonymous memory holding an aligned 2 MiB that a PTE table
    /// maps in Linux: khugepaged is woken for the VMA and may collapse it at once.
    func wouldBecomeTHPEligible(_ mm: AddressSpace, _ addr: UInt64, _ len: UInt64) -> Bool {
        let lo = addr & ~(page - 1)
        let hi = min(Linux.pageAlign(addr &+ len), window.upperBound)
        guard hi > lo else { return false }
        let pmd = Linux.pmdSize
        return mm.mapsLines(in: lo..<hi).contains { m in
            guard m.perms.hasSuffix("p"), m.path.isEmpty || m.path == "[heap]" else { return false }
            var s = (max(m.start, lo) + pmd - 1) & ~(pmd - 1)
            while s + pmd <= min(m.end, hi) {
                if mm.hasLinuxPTETable(s) { return true }
                s += pmd
            }
            return false
        }
    }

    /// Now and then, after a fork, the sequence moves to the parent or back to the child, so
    /// that both write to what they share (each must see its own).
    /// Whether a PROCMAP_QUERY goes before the next step (`percent` of steps), from the
    /// query stream.
    mutating func wantsQuery(percent: UInt64) -> Bool { queryRNG.next() % 100 < percent }

    /// A PROCMAP_QUERY aimed at the edges: at or around a VMA's start and end, inside one, in
    /// a hole, beyond the top of the address space; every combination of flags, now and then
    /// an unknown one; no name buffer, a roomy one, or one too small; now and then a struct
    /// size the kernel refuses (too small, over a page) or accepts (larger, zero-filled).
    mutating func procmapQuery(_ mm: AddressSpace) -> ProcmapQuery {
        func q(_ n: UInt64) -> UInt64 { queryRNG.next() % max(n, 1) }
        let vmas = mm.mapsLines(in: window) + mm.mapsLines(in: heapStart..<(heapCompare + (64 << 20)))
        var a: UInt64
        switch q(10) {
        case 0...5 where !vmas.isEmpty:
            let v = vmas[Int(q(UInt64(vmas.count)))]
            switch q(5) {
            case 0: a = v.start
            case 1: a = v.end - 1
            case 2: a = v.end
            case 3: a = v.start &- 1
            default: a = v.start + q((v.end - v.start) / page) * page + q(page)
            }
        case 6, 7:
            a = window.lowerBound + q((window.upperBound - window.lowerBound) / page) * page + q(page)
        case 8:
            a = [0, Linux.taskSize - 1, Linux.taskSize, UInt64.max - page + 1][Int(q(4))]
        default:
            a = window.upperBound - (1 + q(64)) * page
        }
        var flags = q(64)
        if q(20) == 0 { flags |= 1 << (6 + q(58)) }
        let names: [UInt32] = [0, 0, 256, 256, 4096, 1 + UInt32(q(12))]
        let sizes: [UInt64] = [ProcmapQuery.structSize, 16, 8192, 200]
        let size = q(12) == 0 ? sizes[Int(1 + q(3))] : ProcmapQuery.structSize
        return ProcmapQuery(address: a, flags: flags, size: size, nameBufferSize: names[Int(q(UInt64(names.count)))])
    }

    mutating func processSwitch(hasParent: Bool, hasChild: Bool) -> ProcessSwitch? {
        guard hasParent || hasChild, chance(6) else { return nil }
        if hasParent && hasChild { return chance(50) ? .parent : .child }
        return hasParent ? .parent : .child
    }

    /// Whether `a` is past EOF in the last page of a shared mapping of one of the files (a
    /// store there reaches the page cache, and writeback zeroes it at a time of its choosing).
    func beyondEOFInSharedFilePage(_ mm: AddressSpace, _ a: UInt64) -> Bool {
        guard let m = mm.mapsLines(in: a..<(a + 1)).first, m.perms.hasSuffix("s"),
              let i = filePaths.firstIndex(of: m.path) else { return false }
        let offset = m.offset + (a - m.start)
        return offset >= fileSizes[i] && offset < Linux.pageAlign(fileSizes[i])
    }

    /// A load or store: mostly inside a mapping of the window or the heap's new pages (a page
    /// at random, or the first or last page), sometimes just outside one or in a hole, or
    /// back at a byte stored to before; never where Linux would fault a huge page.
    mutating func access(_ mm: AddressSpace) -> MemoryAccess {
        var a: UInt64
        while true {
            let vmas = mm.mapsLines(in: window) + mm.mapsLines(in: heapCompare..<(heapCompare + (64 << 20))).map {
                var m = $0
                m.start = max(m.start, heapCompare)
                return m
            }.filter { $0.start < $0.end }
            let r = below(100)
            if !stored.isEmpty && r < 25 {
                a = pick(stored)
            } else if !vmas.isEmpty && r < 85 {
                let v = pick(vmas)
                let pages = (v.end - v.start) / page
                switch below(4) {
                case 0: a = v.start
                case 1: a = v.end - page
                default: a = v.start + below(pages) * page
                }
                a += below(page)
            } else {
                a = address(mm) & ~(page - 1) + below(page)
            }
            // Where the host's khugepaged could collapse the page's 2 MiB after this access
            // (see `khugepagedCouldCollapse`); a fault where Linux has no page table maps a
            // THP (or the huge zero page), as the model does.
            if mm.khugepagedCouldCollapse(a, a + 1, withPages: false) { thpReaimed += 1; continue }
            break
        }
        if chance(50) {
            if beyondEOFInSharedFilePage(mm, a) {
                eofTailReaimed += 1
                return MemoryAccess(load: a)
            }
            stored.append(a)
            if stored.count > 16 { stored.removeFirst() }
            return MemoryAccess(store: a, value: UInt8(truncatingIfNeeded: 1 + below(255)))
        }
        return MemoryAccess(load: a)
    }
}
