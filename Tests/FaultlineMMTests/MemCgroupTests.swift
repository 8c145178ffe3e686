@_spi(Testing) import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// Memory cgroups: pages are charged when a fault allocates them and uncharged when they are
/// freed, a thread's stock covering all but one charge in `chargeBatch`; every ancestor
/// counts the pages too; a limit reclaims and then fails the fault; the quiescent check
/// holds usage to the pages charged plus the stocks.
@Suite("Memory cgroups", .serialized)
struct MemCgroupTests {
    static let base: UInt64 = 0x7000_0000_0000

    static func system(frames: Int = 4096, limit: Int? = nil, reclaim: Bool = false, swapPages: Int = 0) -> (MMSystem, MemCgroup) {
        let s = MMSystem(frames: frames, poison: true)
        if swapPages > 0 { s.swapOn(pages: swapPages) }
        if reclaim { s.enableReclaim() }
        let m = MemCgroup.chain("/process_api/cell")
        if let limit { m.setLimit(pages: limit) }
        s.attach(memcg: m)
        return (s, m)
    }

    /// The first fault misses the stock and charges a batch of 64 at all three levels, keeping
    /// 63; the next 63 take from the stock; the 65th charges another batch. munmap uncharges
    /// what was mapped and leaves the stock, which a drain gives back.
    @Test(arguments: [Design.global, .perVMA615])
    func faultsChargeABatchAndTakeTheRestFromTheStock(design: Design) {
        let (s, m) = Self.system()
        let mm = AddressSpace(system: s, design: design)
        let levels = m.hierarchy
        #expect(levels.map(\.path) == ["/process_api/cell", "/process_api", "/"])
        _ = mm.mmap(Self.base, 100 * page, rw, anonPrivate.union(.fixed)).must()
        _ = mm.store(Self.base, 1).must()
        #expect(levels.map(\.memory.usage) == [64, 64, 64])
        #expect(m.stocked == 63)
        for i in 1..<64 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        #expect(m.memory.usage == 64 && m.stocked == 0)
        _ = mm.store(Self.base + 64 * page, 1).must()
        #expect(m.memory.usage == 128 && m.stocked == 63)
        #expect(m.stat == MemCgroup.Stat(anon: 65, file: 0, pgpgin: 65, pgpgout: 0))
        #expect(s.checkQuiescent([mm]) == [])
        _ = mm.munmap(Self.base, 100 * page).must()
        #expect(m.memory.usage == 63, "the stock stays charged")
        #expect(m.stat == MemCgroup.Stat(anon: 0, file: 0, pgpgin: 65, pgpgout: 65))
        m.drainAllStock()
        #expect(levels.map(\.memory.usage) == [0, 0, 0])
        #expect(m.memory.watermark == 128)
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// Page-cache pages are charged as file pages, a private write's copy as anonymous.
    @Test func pageCacheAndCopiesAreChargedAsWhatTheyAre() {
        let (s, m) = Self.system()
        let mm = AddressSpace(system: s, design: .perVMA615)
        let file = s.makeFile(path: "/f", size: 4 * page, contents: [UInt8](repeating: 7, count: Int(4 * page)))
        let a = mm.mmap(0, 4 * page, rw, [.private], file: file).must()
        for i in 0..<4 { #expect(mm.load(a + UInt64(i) * page).must() == 7) }
        _ = mm.store(a, 9).must()
        let st = m.stat
        #expect(st.file >= 4 && st.anon == 1)
        #expect(s.checkQuiescent([mm]) == [])
        _ = mm.munmap(a, 4 * page).must()
        #expect(m.stat.anon == 0, "the copy is freed; the cache stays charged")
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// Over its limit with nothing to reclaim, a fault fails with `.oom` (Linux: VM_FAULT_OOM and
    /// the memcg OOM killer); frees make room again. A limit below a batch charges one page at
    /// a time.
    @Test(arguments: [Design.global, .perVMA615, .range])
    func aFaultOverTheLimitFails(design: Design) {
        let (s, m) = Self.system(limit: 50)
        let mm = AddressSpace(system: s, design: design)
        _ = mm.mmap(Self.base, 60 * page, rw, anonPrivate.union(.fixed)).must()
        for i in 0..<50 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        #expect(m.memory.usage == 50 && m.stocked == 0)
        #expect(mm.store(Self.base + 50 * page, 1).error == .oom)
        #expect(m.ooms == 1 && m.memory.failcnt > 0)
        #expect(m.memory.usage == 50)
        #expect(s.checkQuiescent([mm]) == [])
        _ = mm.madvise(Self.base, 10 * page, .dontNeed).must()
        for i in 50..<60 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        #expect(m.memory.usage == 50)
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// With reclaim and swap, a limit of 64 pages holds 200 pages' worth of writes: the charge
    /// reclaims (swapping out), the contents come back, usage never passes the limit.
    @Test func reclaimMakesRoomUnderTheLimit() {
        let (s, m) = Self.system(limit: 64, reclaim: true, swapPages: 512)
        let mm = AddressSpace(system: s, design: .perVMA615)
        let n = 200
        _ = mm.mmap(Self.base, UInt64(n) * page, rw, anonPrivate.union(.fixed)).must()
        for i in 0..<n { _ = mm.store(Self.base + UInt64(i) * page + 8, UInt8(i % 251)).must() }
        for i in 0..<n { #expect(mm.load(Self.base + UInt64(i) * page + 8).must() == UInt8(i % 251)) }
        #expect(m.memory.watermark <= 64)
        #expect(s.vmscan[.pgstealDirect] >= UInt64(n - 64), "the charges reclaimed what did not fit")
        #expect(m.ooms == 0)
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// A charge that fails inside a call the call does not report (MADV_WILLNEED's swap-in
    /// readahead: Linux ignores its failures) is forgotten at the return to user space: left
    /// marked, the thread's next fault that ran out of frames (not of memcg) took the mark for
    /// its own and failed with `.oom` instead of waiting for frees.
    @Test func aCallsChargeFailureIsForgottenAtTheReturnToUser() {
        let (s, m) = Self.system(swapPages: 512)
        let mm = AddressSpace(system: s, design: .perVMA615)
        _ = mm.mmap(Self.base, 32 * page, rw, anonPrivate.union(.fixed)).must()
        for i in 0..<32 { _ = mm.store(Self.base + UInt64(i) * page, UInt8(i)).must() }
        _ = mm.madvise(Self.base, 32 * page, .pageOut).must()
        m.drainAllStock()
        m.setLimit(pages: m.memory.usage)
        let failed = m.memory.failcnt
        _ = mm.madvise(Self.base, 32 * page, .willNeed).must()
        #expect(m.memory.failcnt > failed, "the swap-in readahead's charges did not fail: the test proves nothing")
        #expect(!s.frames.takeChargeFailure(), "the call's charge failure outlived the call")
        m.setLimit(pages: PageCounter.unlimited)
        for i in 0..<32 { #expect(mm.load(Self.base + UInt64(i) * page).must() == UInt8(i)) }
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// Two threads fault and unmap regions of their own; the accounting adds up at rest.
    @Test(arguments: [Design.global, .perVMA615, .spfVMASeq])
    func concurrentFaultsAndUnmapsAddUp(design: Design) {
        let (s, m) = Self.system(frames: 8192)
        let mm = AddressSpace(system: s, design: design)
        Threads.run(2) { t in
            let b = Self.base + UInt64(t) * 0x1000_0000
            for round in 0..<20 {
                _ = mm.mmap(b, 97 * page, rw, anonPrivate.union(.fixed)).must()
                for i in 0..<97 { _ = mm.store(b + UInt64(i) * page, UInt8(round)).must() }
                _ = mm.munmap(b, UInt64(round % 3 == 0 ? 97 : 50) * page).must()
            }
        }
        #expect(s.checkQuiescent([mm]) == [])
        #expect(m.stat.anon == 2 * 47)
    }

    /// A THP is charged as one folio of 512 pages; compaction's migrations move each page's
    /// charge to its copy (`mem_cgroup_migrate()`), so nothing is charged twice or lost.
    @Test func compactionMovesChargesWithThePages() {
        let (s, m) = Self.system(frames: 4096)
        let mm = AddressSpace(system: s, design: .perVMA615)
        let small: UInt64 = 0x6000_0000_0000
        _ = mm.mmap(small, 4000 * page, rw, anonPrivate.union(.fixed)).must()
        for i in 0..<4000 { _ = mm.store(small + UInt64(i) * page + 16, UInt8(i % 251)).must() }
        for i in stride(from: 1, to: 4000, by: 2) { _ = mm.madvise(small + UInt64(i) * page, page, .dontNeed).must() }
        s.rcu.barrier()
        _ = mm.mmap(Self.base, Linux.pmdSize, rw, anonPrivate.union(.fixed)).must()
        _ = mm.madvise(Self.base, Linux.pmdSize, .hugePage).must()
        _ = mm.store(Self.base + 5, 9).must()
        #expect(mm.thpStats.faultAlloc == 1 && s.vmscan[.pgmigrateSuccess] > 0)
        #expect(m.stat.anon == 2000 + 512)
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// A THP whose 512 pages the memcg refuses: the fault falls back to a small page
    /// (`thp_fault_fallback_charge`), and MADV_COLLAPSE fails with EBUSY
    /// (`SCAN_CGROUP_CHARGE_FAIL`); with the limit lifted both make THPs.
    @Test func aTHPTheMemcgRefusesFallsBack() {
        let (s, m) = Self.system(frames: 4096, limit: 300)
        let mm = AddressSpace(system: s, design: .perVMA615)
        _ = mm.mmap(Self.base, 2 * Linux.pmdSize, rw, anonPrivate.union(.fixed)).must()
        _ = mm.madvise(Self.base, 2 * Linux.pmdSize, .hugePage).must()
        _ = mm.store(Self.base, 1).must()
        #expect(mm.thpStats.faultAlloc == 0 && mm.thpStats.faultFallback == 1 && mm.thpStats.faultFallbackCharge == 1)
        #expect(m.stat.anon == 1 && m.memory.usage <= 300)
        for i in 1..<8 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        #expect(mm.madvise(Self.base, Linux.pmdSize, .collapse).error == .EBUSY)
        #expect(s.checkQuiescent([mm]) == [])
        m.setLimit(pages: PageCounter.unlimited)
        _ = mm.store(Self.base + Linux.pmdSize, 1).must()
        #expect(mm.thpStats.faultAlloc == 1 && mm.thpStats.faultFallbackCharge == 1)
        #expect(mm.madvise(Self.base, Linux.pmdSize, .collapse).error == nil)
        #expect(m.stat.anon == 1024)
        #expect(s.checkQuiescent([mm]) == [])
    }

    /// The broken control: batch frees that skip the uncharge leave usage above what is
    /// charged, and the check says so.
    @Test func aFreeThatIsNotUnchargedIsCaught() {
        let (s, _) = Self.system()
        s.frames._brokenBatchFreeSkipsUncharge = true
        let mm = AddressSpace(system: s, design: .perVMA615)
        _ = mm.mmap(Self.base, 8 * page, rw, anonPrivate.union(.fixed)).must()
        for i in 0..<8 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }
        _ = mm.munmap(Self.base, 8 * page).must()
        let problems = s.checkQuiescent([mm])
        #expect(problems.contains { $0.contains("memcg /process_api/cell: usage 64 pages, but 0 frames charged and 56 in stocks") })
    }
}
