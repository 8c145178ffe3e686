import Glibc
@_spi(Testing) import FaultlineMM
import CFaultline
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// The anonymous reverse map (anon_vma, anon_vma_chain, rmap_walk_anon): from any anonymous
/// page, every PTE that maps it, in every address space of the fork hierarchy, through splits,
/// merges, mremap, munmap and copy-on-write. `MMSystem.checkQuiescent` compares the walk with
/// the page tables for every mapped page and checks each anon_vma's counts.
@Suite("Reverse map: anon_vma", .serialized)
struct RmapTests {
    static let base: UInt64 = 0x7000_0000_0000

    /// A parent's page before fork is found in parent and child; the child's copy after a
    /// write belongs to the child's own anon_vma and is found once; the parent's page again
    /// once.
    @Test(arguments: [Design.global, .perVMA615, .range])
    func forkAndCopyOnWrite(design: Design) {
        let mm = makeSpace(design)
        _ = mm.mmap(Self.base, 8 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<8 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        let before = mm._anonRmap(at: Self.base)!
        #expect(before.chain == 1 && before.pageAnonVMA == before.vmaAnonVMA)
        let child = mm.fork()
        let c = child._anonRmap(at: Self.base)!
        #expect(c.chain == 2, "the child's VMA chains to its own anon_vma and the parent's")
        #expect(c.frame == before.frame && c.pageAnonVMA == before.vmaAnonVMA && c.vmaAnonVMA != before.vmaAnonVMA)
        let places = mm.system.rmapMappings(before.frame!)
        #expect(places.count == 2 && Set(places.map { ObjectIdentifier($0.mm) }) == [ObjectIdentifier(mm), ObjectIdentifier(child)])
        _ = child.store(Self.base, 2).must()
        let copied = child._anonRmap(at: Self.base)!
        #expect(copied.frame != before.frame && copied.pageAnonVMA == c.vmaAnonVMA)
        #expect(mm.system.rmapMappings(copied.frame!).count == 1)
        #expect(mm.system.rmapMappings(before.frame!).count == 1)
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }

    /// Random splits, merges, moves, unmaps, writes and forks over a hierarchy of address
    /// spaces: after each round the walk finds exactly the PTEs of every anonymous page.
    @Test(arguments: [Design.global, .perVMA, .perVMA615, .range, .spfVMASeq])
    func theWalkFollowsEveryChange(design: Design) {
        var spaces = [makeSpace(design, frames: 16384)]
        let system = spaces[0].system
        var rng = SplitMix64(seed: 11)
        let regions = 6
        for k in 0..<regions {
            _ = spaces[0].mmap(Self.base + UInt64(k) * 0x40_0000, 32 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        }
        for round in 0..<60 {
            let mm = spaces[Int(rng.next() % UInt64(spaces.count))]
            let a = Self.base + (rng.next() % UInt64(regions)) * 0x40_0000 + (rng.next() % 28) * page
            let n = 1 + rng.next() % 8
            switch rng.next() % 8 {
            case 0: _ = mm.mprotect(a, n * page, [.read])
            case 1: _ = mm.mprotect(a, n * page, [.read, .write])
            case 2: _ = mm.munmap(a, n * page)
            case 3: _ = mm.madvise(a, n * page, .dontNeed)
            case 4:
                // Move somewhere in the same region's upper half (may merge with what is there).
                let to = (a & ~UInt64(0x3f_ffff)) + 0x20_0000 + (rng.next() % 16) * page
                _ = mm.mremap(a, n * page, n * page, [.mayMove, .fixed], newAddress: to)
            case 5 where spaces.count < 5:
                spaces.append(mm.fork())
            case 6 where spaces.count > 1:
                // An exit: the address space goes, its chains with it.
                spaces.remove(at: Int(rng.next() % UInt64(spaces.count)))
            default:
                for i in 0..<n { _ = mm.store(a + i * page, UInt8(truncatingIfNeeded: round)) }
            }
            let problems = system.checkQuiescent(spaces)
            #expect(problems == [], "round \(round)")
            if !problems.isEmpty { break }
        }
    }

    /// A process that forks and exits, generation after generation, reuses anon_vmas: the
    /// chain stops growing at three and the anon_vmas alive stay few (`anon_vma_clone`'s
    /// reuse of an anon_vma no VMA uses that has at most one child).
    @Test func forkingForeverDoesNotGrowTheHierarchy() {
        var mm = makeSpace(.perVMA615)
        let system = mm.system
        _ = mm.mmap(Self.base, 4 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(Self.base, 1).must()
        var chains: [Int] = []
        for _ in 0..<12 {
            let child = mm.fork()
            _ = child.store(Self.base + page, 2).must()
            mm = child   // the parent exits
            chains.append(mm._anonRmap(at: Self.base)!.chain)
            #expect(system.checkQuiescent([mm]) == [])
        }
        #expect(chains.prefix(2) == [2, 3] && chains.dropFirst(2).allSatisfy { $0 == 3 }, "chains \(chains)")
        #expect(system.liveAnonVMACount <= 4, "\(system.liveAnonVMACount) anon_vmas alive")
    }

    /// A merge beside a fault: P (no anon_vma) | M (read-only) | X (rw, with an anon_vma, into
    /// the next 2 MiB block), a fault on a new page of X in that next block, and while it runs
    /// an mprotect of M to rw merges all three into P (`vma_merge`'s both-sides case: X is
    /// removed, its anon_vma goes to P). Range designs let that writer in (it locks M's range,
    /// the fault its own block); the fault must still give its page X's anon_vma, which the
    /// merged VMA has — the live `X.anon_vma` it read was already cleared by
    /// `unlink_anon_vmas`, leaving a page the reverse map cannot find (the stress found it in
    /// the shared area: "anonymous page … has no anon_vma"). Other designs keep the writer out
    /// until the fault ends.
    @Test(arguments: Design.selectable)
    func aMergeThatRemovesTheFaultingVMAKeepsItsPageInTheReverseMap(design: Design) {
        let base = Self.base
        let writer = WriterInFault(at: .anonVMAReady, address: base + Linux.pmdSize + page) { mm in
            _ = mm.mprotect(base + page, page, [.read, .write])
        }
        let mm = makeSpace(design) { $0.faultHook = writer.hook }
        writer.attach(mm)
        _ = mm.mmap(base, page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.mmap(base + page, page, [.read], [.private, .anonymous, .fixed]).must()
        _ = mm.mmap(base + 2 * page, Linux.pmdSize, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(base + 2 * page, 1).must()
        _ = mm.store(base + Linux.pmdSize + page, 2).must()
        #expect(writer.finish(), "the hook ran")
        #expect(layout(mm) == [line(base, base + Linux.pmdSize + 2 * page, "rw-p")], "\(layout(mm))")
        let problems = mm.system.checkQuiescent([mm])
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(mm.load(base + Linux.pmdSize + page) == .success(2))
    }
}

/// The broken control: a split that does not clone the anon_vma chain into its new VMA
/// leaves pages the reverse map cannot find, and the check says so.
@Suite("Broken controls: reverse map", .serialized)
struct BrokenControlRmap {
    @Test func aSplitWithoutTheChainIsCaught() {
        let mm = makeSpace(.global)
        let base: UInt64 = 0x7000_0000_0000
        _ = mm.mmap(base, 8 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<8 { _ = mm.store(base + UInt64(i) * page, 1).must() }
        mm.system._brokenSplitSkipsAnonClone = true
        _ = mm.mprotect(base + 4 * page, 4 * page, [.read]).must()
        mm.system._brokenSplitSkipsAnonClone = false
        let problems = mm.system.checkQuiescent([mm])
        #expect(problems.contains { $0.contains("reverse map finds 0") }, "\(problems)")
    }

    /// A mapped page whose anon_vma was freed (what a fault into a detached VMA leaves): as in
    /// Linux, whose anon_vma cache is `SLAB_TYPESAFE_BY_RCU`, reclaim's walk finds a stale
    /// anon_vma — freed (no reference to take) or reused by another VMA (whose PTEs do not map
    /// the page) — leaves the page where it is, and the check reports it. Freed into malloc,
    /// the walk read whatever took the memory (the stress crashed in `AnonVMA.lockRead`).
    @Test func aPageWhoseAnonVMAIsFreedIsReportedNotFollowed() {
        let mm = makeSpace(.global)
        let base: UInt64 = 0x7000_0000_0000
        let other = base + 0x10_0000
        _ = mm.mmap(base, page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.mmap(other, page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(base, 7).must()
        _ = mm.store(other, 1).must()
        mm._brokenPointPage(at: base, toAnonVMAOf: other)
        _ = mm.munmap(other, page).must()
        mm.system.rcu.barrier()
        #expect(!mm._reclaimAnon(at: base), "a freed anon_vma's walk unmapped the page")
        // The freed anon_vma is the next one handed out: a walk through it finds a VMA that
        // does not map the page.
        let third = base + 0x20_0000
        _ = mm.mmap(third, page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(third, 1).must()
        #expect(!mm._reclaimAnon(at: base), "a reused anon_vma's walk unmapped the page")
        #expect(mm.load(base).must() == 7)
        let problems = mm.system.checkQuiescent([mm])
        #expect(problems.contains { $0.contains("reverse map finds 0") }, "\(problems)")
    }
}
