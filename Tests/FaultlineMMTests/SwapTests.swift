@_spi(Testing) import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// Swap: reclaim writes an anonymous page to the device and turns every PTE mapping it (found
/// through the reverse map) into a swap entry; a fault reads it back. What fork, munmap,
/// MADV_DONTNEED, MADV_FREE and mremap do to swap entries; smaps `Swap:` and pagemap
/// `PM_SWAP`; the slot counts checked against the PTEs (`checkQuiescent`).
@Suite("Swap", .serialized)
struct SwapTests {
    static let base: UInt64 = 0x7000_0000_0000

    static func space(_ design: Design, swapPages: Int = 64, latencyNs: UInt64 = 0) -> AddressSpace {
        let system = MMSystem(frames: 1024, poison: true)
        system.swapOn(pages: swapPages, ioLatencyNs: latencyNs)
        return AddressSpace(system: system, design: design)
    }

    static func fill(_ mm: AddressSpace, _ pages: Int, _ value: (Int) -> UInt8) {
        for i in 0..<pages { _ = mm.store(base + UInt64(i) * page + 100, value(i)).must() }
    }

    static func smapsField(_ mm: AddressSpace, _ field: String) -> Int {
        let t = mm.smapsText()
        let line = t.split(separator: "\n").first { $0.hasPrefix(field) }!
        return Int(line.split(separator: " ").dropFirst().first!)!
    }

    /// MADV_PAGEOUT swaps every page out (pagemap PM_SWAP, smaps Swap 64 kB and Rss 0); reads
    /// and writes bring each back with its contents, under every design's fault path, the
    /// reads with the lock dropped for the device's latency where the design can drop it.
    @Test(arguments: [Design.global, .perVMA, .perVMA615, .spfVMASeq, .range])
    func pageoutAndBack(design: Design) {
        let mm = Self.space(design, latencyNs: 20_000)
        _ = mm.mmap(Self.base, 16 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        Self.fill(mm, 16) { UInt8($0 + 1) }
        _ = mm.madvise(Self.base, 16 * page, .pageOut).must()
        #expect(mm.pagemap(Self.base, Self.base + 16 * page).allSatisfy { $0 == Pagemap.swapped })
        #expect(Self.smapsField(mm, "Swap:") == 64 && Self.smapsField(mm, "Rss:") == 0)
        #expect(mm.system.swap!.pagesOut == 16 && mm.system.swap!.slotsInUse == 16)
        #expect(mm.system.checkQuiescent([mm]) == [])
        let majorBefore = mm.stats.sum(MMStat.majorFaults.rawValue)
        for i in 0..<16 {
            let a = Self.base + UInt64(i) * page + 100
            if i % 2 == 0 { #expect(mm.load(a).must() == UInt8(i + 1)) } else { _ = mm.store(a, 0xee).must() }
        }
        #expect(mm.stats.sum(MMStat.swapInFaults.rawValue) == 16)
        #expect(mm.stats.sum(MMStat.majorFaults.rawValue) - majorBefore == 16, "each read from the device is a major fault")
        #expect(mm.system.swap!.slotsInUse == 0 && Self.smapsField(mm, "Swap:") == 0 && Self.smapsField(mm, "Rss:") == 64)
        for i in stride(from: 1, to: 16, by: 2) { #expect(mm.load(Self.base + UInt64(i) * page + 100).must() == 0xee) }
        #expect(mm.system.checkQuiescent([mm]) == [])
    }

    /// A page shared by parent and child after fork is reclaimed through the reverse map: both
    /// PTEs become the slot's (count 2), each side reads it back; the child's write copies.
    @Test(arguments: [Design.global, .perVMA615, .range])
    func aSharedPageIsUnmappedEverywhere(design: Design) {
        let mm = Self.space(design)
        _ = mm.mmap(Self.base, 4 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        Self.fill(mm, 4) { UInt8(10 + $0) }
        let child = mm.fork()
        #expect(mm._reclaimAnon(at: Self.base))
        #expect(mm.pagemap(Self.base, Self.base + page)[0] == Pagemap.swapped)
        #expect(child.pagemap(Self.base, Self.base + page)[0] == Pagemap.swapped)
        #expect(Self.smapsField(child, "SwapPss:") == 2, "one 4 kB entry shared by two: 2 kB each")
        #expect(mm.system.checkQuiescent([mm, child]) == [])
        #expect(child.load(Self.base + 100).must() == 10)
        _ = child.store(Self.base + 100, 99).must()
        #expect(mm.load(Self.base + 100).must() == 10)
        #expect(child.load(Self.base + 100).must() == 99)
        #expect(mm.system.swap!.slotsInUse == 0)
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }

    /// A page faulted back by one side of a fork while the other still holds its entry stays in
    /// the swap cache; paging it out again reuses its slot, and writes nothing (the device's
    /// copy is still good).
    @Test(arguments: [Design.global, .perVMA615])
    func aCachedPageIsReclaimedUnderItsSlot(design: Design) {
        let mm = Self.space(design)
        _ = mm.mmap(Self.base, 4 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        Self.fill(mm, 4) { UInt8(70 + $0) }
        let child = mm.fork()
        #expect(mm._reclaimAnon(at: Self.base))
        let swap = mm.system.swap!
        #expect(mm.load(Self.base + 100).must() == 70)   // back in the parent, the child's entry holds the slot
        #expect(swap.slotsInUse == 1 && swap.pagesOut == 1)
        _ = mm.madvise(Self.base, page, .pageOut).must()
        #expect(mm.pagemap(Self.base, Self.base + page)[0] == Pagemap.swapped)
        #expect(swap.slotsInUse == 1 && swap.pagesOut == 1, "the same slot, nothing written")
        #expect(mm.system.checkQuiescent([mm, child]) == [])
        #expect(mm.load(Self.base + 100).must() == 70)
        #expect(child.load(Self.base + 100).must() == 70)
        #expect(swap.slotsInUse == 0)
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }

    /// fork duplicates swap entries; munmap, MADV_DONTNEED and MADV_FREE drop them (MADV_FREE's
    /// page reads back as zero); mremap moves them; a full device leaves the rest resident.
    @Test func whatCallsDoToSwapEntries() {
        let mm = Self.space(.perVMA615, swapPages: 12)
        _ = mm.mmap(Self.base, 16 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        Self.fill(mm, 16) { UInt8(30 + $0) }
        _ = mm.madvise(Self.base, 16 * page, .pageOut).must()
        let map = mm.pagemap(Self.base, Self.base + 16 * page)
        #expect(map.filter { $0 == Pagemap.swapped }.count == 12, "a 12-slot device takes 12 pages")
        #expect(map.filter { $0 & Pagemap.present != 0 }.count == 4)
        let child = mm.fork()
        #expect(mm.system.checkQuiescent([mm, child]) == [])
        _ = mm.munmap(Self.base, 2 * page).must()
        _ = mm.madvise(Self.base + 2 * page, 2 * page, .dontNeed).must()
        _ = mm.madvise(Self.base + 4 * page, 2 * page, .free).must()
        #expect(mm.load(Self.base + 4 * page + 100).must() == 0)
        #expect(child.load(Self.base + 4 * page + 100).must() == 34, "the child's entry is its own")
        _ = mm.mremap(Self.base + 6 * page, 4 * page, 4 * page, [.mayMove, .fixed], newAddress: Self.base + 0x100_0000).must()
        #expect(mm.pagemap(Self.base + 0x100_0000, Self.base + 0x100_0000 + 4 * page).allSatisfy { $0 == Pagemap.swapped })
        #expect(mm.system.checkQuiescent([mm, child]) == [])
        #expect(mm.load(Self.base + 0x100_0000 + 100).must() == 36)
        #expect(child.load(Self.base + 100).must() == 30)
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }
}

extension SwapTests {
    /// MADV_WILLNEED reads swapped-out pages into the swap cache without mapping them: the
    /// faults after it are minor. mlock brings swapped-out pages back (populate faults).
    @Test(arguments: [Design.global, .perVMA615])
    func willneedAndMlockSwapIn(design: Design) {
        let mm = Self.space(design, latencyNs: 20_000)
        _ = mm.mmap(Self.base, 8 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        Self.fill(mm, 8) { UInt8(50 + $0) }
        _ = mm.madvise(Self.base, 8 * page, .pageOut).must()
        _ = mm.madvise(Self.base, 4 * page, .willNeed).must()
        #expect(mm.system.swap!.pagesIn == 4)
        #expect(mm.pagemap(Self.base, Self.base + 4 * page).allSatisfy { $0 == Pagemap.swapped }, "read in, not mapped")
        let major = mm.stats.sum(MMStat.majorFaults.rawValue)
        for i in 0..<4 { #expect(mm.load(Self.base + UInt64(i) * page + 100).must() == UInt8(50 + i)) }
        #expect(mm.stats.sum(MMStat.majorFaults.rawValue) == major, "found in the swap cache: minor faults")
        _ = mm.mlock(Self.base + 4 * page, 4 * page).must()
        #expect(mm.pagemap(Self.base + 4 * page, Self.base + 8 * page).allSatisfy { $0 & Pagemap.present != 0 })
        #expect(mm.load(Self.base + 7 * page + 100).must() == 57)
        #expect(mm.system.swap!.slotsInUse == 0)
        #expect(mm.system.checkQuiescent([mm]) == [])
    }
}

/// The broken control: a try_to_unmap that unmaps one mapping and calls the page unmapped lets
/// reclaim free a page the child still maps, and the check says so.
@Suite("Broken controls: swap", .serialized)
struct BrokenControlSwap {
    @Test func tryToUnmapSkippingAMappingIsCaught() {
        let mm = SwapTests.space(.global)
        let base = SwapTests.base
        _ = mm.mmap(base, 4 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        SwapTests.fill(mm, 4) { UInt8($0) }
        let child = mm.fork()
        mm.system._brokenTryToUnmapSkipsMappings = true
        _ = mm._reclaimAnon(at: base)
        mm.system._brokenTryToUnmapSkipsMappings = false
        let problems = mm.system.checkQuiescent([mm, child])
        #expect(problems.contains { $0.contains("which is free") }, "\(problems)")
    }
}

/// Found by the stress once it paged out file pages: a fault mapping a large folio took a
/// reference to each of its pages and, finding one that had left the cache and come back
/// as a small folio, gave up without dropping that page's reference.
@Suite("Pageout regressions", .serialized)
struct PageoutRegressionTests {
    @Test(arguments: [Design.global, .perVMA615])
    func aFolioPartlyPagedOutLeaksNoReference(design: Design) {
        let mm = makeSpace(design)
        let f = mm.system.makeFile(path: "/folio", size: 16 * page)
        #expect(f.cacheFolio(0, pages: 16))
        let base: UInt64 = 0x7000_0000_0000
        _ = mm.mmap(base, 16 * page, [.read, .write], [.shared, .fixed], file: f).must()
        _ = mm.load(base).must()   // maps the whole folio
        _ = mm.madvise(base + 4 * page, 4 * page, .pageOut).must()
        for i in 4..<8 { _ = mm.load(base + UInt64(i) * page).must() }   // back as small folios
        _ = mm.madvise(base, 16 * page, .dontNeed).must()
        _ = mm.store(base, 1).must()   // a write fault maps a folio whole: this one is not any more
        #expect(mm.system.checkQuiescent([mm]) == [])
    }

    /// MADV_PAGEOUT unmaps a clean shmem (or file) page and then drops it from the cache; a
    /// write fault between the two maps it again and writes. The drop must then leave it
    /// (`__remove_mapping` freezes the reference count and fails): dropped anyway, the PTE
    /// mapped a page outside the cache, and after a zap the next fault read a new, zeroed page
    /// (the stress's `own slot … (anonShared) … holds 0x0 (lost write)`, every design).
    @Test(arguments: [Design.global, .perVMA615, .range])
    func aPageFaultedInDuringPageoutStaysInTheCache(design: Design) {
        let mm = makeSpace(design)
        let base: UInt64 = 0x7000_0000_0000
        _ = mm.mmap(base, 2 * page, [.read, .write], [.shared, .anonymous, .fixed]).must()
        _ = mm.load(base).must()   // a clean shmem page, mapped
        mm.system._pageoutBeforeDrop = { [unowned mm] in
            mm.system._pageoutBeforeDrop = nil
            _ = mm.withByte(base, .write) { $0.storeBytes(of: 0x5555, as: UInt64.self) }
        }
        _ = mm.madvise(base, 2 * page, .pageOut).must()
        #expect(mm.system._pageoutBeforeDrop == nil, "the hook ran")
        // What the quiescent check sees of a page dropped while mapped.
        #expect(mm.system.checkQuiescent([mm]) == [])
        _ = mm.madvise(base, 2 * page, .dontNeed).must()
        #expect(mm.withByte(base, .read) { $0.load(as: UInt64.self) } == .success(0x5555))
        #expect(mm.system.checkQuiescent([mm]) == [])
    }
}

extension SwapTests {
    /// The stress found a page holding another page's words: a swap-in read a slot's contents,
    /// then the slot was freed (its last PTE zapped) and given to another page, and the read
    /// then cached what it had read under the slot, which the other page's swap-in mapped.
    /// Linux caches the folio (`swapcache_prepare()`) before it reads; so does the model: here
    /// the slot goes and comes back between the read and its end, and the other page reads
    /// back its own contents.
    @Test(arguments: [Design.global, .perVMA615])
    func aSlotReusedDuringASwapInReadKeepsItsNewContents(design: Design) {
        let mm = Self.space(design, latencyNs: 1_000)
        let x = Self.base, y = Self.base + 64 * page
        _ = mm.mmap(x, page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.mmap(y, page, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(x + 8, UInt8(0x11)).must()
        _ = mm.store(y + 8, UInt8(0x22)).must()
        #expect(mm._reclaimAnon(at: x))
        let swap = mm.system.swap!
        var fired = false
        swap._afterRead = { _ in
            guard !fired else { return }
            fired = true
            // The fault's lock is dropped for the read: x's last swap PTE goes, and y's page
            // is written to the slot it freed.
            _ = mm.munmap(x, page).must()
            #expect(mm._reclaimAnon(at: y))
        }
        // The fault on x reads its slot; x is gone when it retries.
        #expect(mm.load(x + 8).error == .segvMapErr)
        swap._afterRead = nil
        #expect(fired)
        #expect(mm.load(y + 8).must() == 0x22, "y's swap-in mapped what x's read left")
        #expect(mm.system.checkQuiescent([mm]) == [])
    }
}
