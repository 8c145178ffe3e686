@_spi(Testing) import FaultlineMM
import CFaultline
import FaultlineSync
import FaultlineTestSupport
import Testing

/// khugepaged: an address space enters its list on MADV_HUGEPAGE (or a THP-eligible fault), and
/// a pass collapses each aligned 2 MiB that passes `hpage_collapse_scan_pmd()`'s limits
/// (`max_ptes_none`, `max_ptes_shared`, a young page) into a THP, under the writer side.
@Suite("khugepaged", .serialized)
struct KhugepagedTests {
    static let base: UInt64 = 0x7000_0000_0000
    static let mib2 = Linux.pmdSize

    /// A 4 MiB private anonymous region with `pages` pages written (small pages: no advice yet),
    /// then MADV_HUGEPAGE; khugepaged on without its thread.
    static func setUp(_ design: Design = .perVMA615, pages: Int = 10, _ tweak: (inout KhugepagedSettings) -> Void = { _ in }) -> AddressSpace {
        let mm = makeSpace(design, frames: 8192)
        var s = KhugepagedSettings()
        tweak(&s)
        mm.system.enableKhugepaged(s, daemon: false)
        _ = mm.mmap(base, 2 * mib2, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<pages { _ = mm.store(base + UInt64(i) * page + 8, UInt8(i & 0x7f) + 1).must() }
        _ = mm.madvise(base, 2 * mib2, .hugePage).must()
        return mm
    }

    static func hugeKB(_ mm: AddressSpace) -> Int {
        mm.smapsText().split(separator: "\n").filter { $0.hasPrefix("AnonHugePages:") }
            .reduce(0) { $0 + Int($1.split(separator: " ")[1])! }
    }

    @Test(arguments: [Design.global, .perVMA615, .spfVMASeq, .range])
    func collapsesWhatFaultsMappedSmall(design: Design) {
        let mm = Self.setUp(design)
        #expect(Self.hugeKB(mm) == 0)
        let scanned = mm.system.khugepagedScanPass()
        #expect(scanned > 0)
        // The first 2 MiB had a page table: one THP. The second had none (nothing faulted).
        #expect(Self.hugeKB(mm) == 2048)
        #expect(mm.system.khugepagedStats.pagesCollapsed == 1)
        #expect(mm.stats.sum(MMStat.thpCollapseAlloc.rawValue) == 1)
        for i in 0..<10 { #expect(mm.load(Self.base + UInt64(i) * page + 8).must() == UInt8(i & 0x7f) + 1) }
        #expect(mm.load(Self.base + 100 * page).must() == 0)
        #expect(mm.system.checkQuiescent([mm]) == [])
        // Nothing left to do: the next pass looks but collapses nothing.
        mm.system.khugepagedScanPass()
        #expect(mm.system.khugepagedStats.pagesCollapsed == 1)
    }

    /// max_ptes_none: 10 pages leave 502 entries none, more than 500 allowed.
    @Test func tooManyEmptyEntries() {
        let mm = Self.setUp { $0.maxPtesNone = 500 }
        mm.system.khugepagedScanPass()
        #expect(Self.hugeKB(mm) == 0)
        #expect(mm.stats.sum(MMStat.khugepagedExceedNone.rawValue) >= 1)
        let full = Self.setUp(pages: 12) { $0.maxPtesNone = 500 }
        full.system.khugepagedScanPass()
        #expect(Self.hugeKB(full) == 2048, "12 pages: exactly 500 none")
    }

    /// A young page is needed: after MADV_COLD (accessed bits and PG_referenced cleared) the
    /// 2 MiB is left; one access makes a page young again.
    @Test func wantsAYoungPage() {
        let mm = Self.setUp()
        _ = mm.madvise(Self.base, Self.mib2, .cold).must()
        mm.system.khugepagedScanPass()
        #expect(Self.hugeKB(mm) == 0)
        #expect(mm.stats.sum(MMStat.khugepagedLackReferenced.rawValue) >= 1)
        _ = mm.load(Self.base + 3 * page).must()
        mm.system.khugepagedScanPass()
        #expect(Self.hugeKB(mm) == 2048)
    }

    /// max_ptes_shared: after fork 300 pages are mapped by both, more than 256 allowed; with a
    /// higher limit the parent's 2 MiB collapses into its own copy and the child keeps the pages.
    @Test func sharedPagesLimit() {
        for limit in [256, 511] {
            let mm = Self.setUp(pages: 300) { $0.maxPtesShared = limit }
            let child = mm.fork()
            mm.system.khugepagedScanPass()
            #expect(Self.hugeKB(mm) == (limit == 256 ? 0 : 2048), "max_ptes_shared \(limit)")
            if limit == 256 { #expect(mm.stats.sum(MMStat.khugepagedExceedShared.rawValue) >= 1) }
            #expect(child.load(Self.base + 299 * page + 8).must() == UInt8(299 & 0x7f) + 1)
            #expect(mm.load(Self.base + 299 * page + 8).must() == UInt8(299 & 0x7f) + 1)
            #expect(mm.system.checkQuiescent([mm, child]) == [])
        }
    }

    /// Only address spaces that entered are scanned: without MADV_HUGEPAGE (madvise mode) none
    /// enters; one that exits leaves the list.
    @Test func entryAndExit() {
        let system = MMSystem(frames: 8192)
        system.enableKhugepaged(KhugepagedSettings(), daemon: false)
        do {
            let mm = AddressSpace(system: system, design: .global)
            _ = mm.mmap(Self.base, 2 * Self.mib2, [.read, .write], [.private, .anonymous, .fixed]).must()
            _ = mm.store(Self.base, 1).must()
            #expect(system.khugepagedScanPass() == 0, "not advised: not on the list")
            _ = mm.madvise(Self.base, 2 * Self.mib2, .hugePage).must()
            #expect(system.khugepagedScanPass() > 0)
        }
        // The address space is gone: the pass finds an empty list.
        #expect(system.khugepagedScanPass() == 0)
    }

    /// The daemon: passes every `scan_sleep_millisecs` collapse without anyone asking.
    @Test func theDaemonCollapsesInTheBackground() {
        let mm = makeSpace(.perVMA615, frames: 8192)
        var s = KhugepagedSettings()
        s.scanSleepMillis = 1
        mm.system.enableKhugepaged(s)
        _ = mm.mmap(Self.base, 2 * Self.mib2, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(Self.base, 1).must()
        _ = mm.madvise(Self.base, 2 * Self.mib2, .hugePage).must()
        var waited = 0
        while mm.system.khugepagedStats.pagesCollapsed == 0 && waited < 5000 { fl_sleep_ns(1_000_000); waited += 1 }
        #expect(mm.system.khugepagedStats.pagesCollapsed == 1)
        #expect(mm.load(Self.base).must() == 1)
        #expect(mm.system.checkQuiescent([mm]) == [])
    }
}
