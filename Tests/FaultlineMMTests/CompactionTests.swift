@_spi(Testing) import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// Compaction for THPs: with free memory scattered over every block, a THP fault in a
/// VM_HUGEPAGE VMA (`defrag` = madvise) migrates the pages of the emptiest block elsewhere and
/// takes it; the pages it moved keep their contents. Pages it cannot move (mapped twice) leave
/// the block, and the fault falls back.
@Suite("Compaction", .serialized)
struct CompactionTests {
    static let small: UInt64 = 0x6000_0000_0000
    static let huge: UInt64 = 0x7000_0000_0000

    /// 4,000 small pages written over a pool of 4,096 frames, then every odd one dropped: half
    /// of each block is free and no block is whole.
    static func fragmented(_ design: Design, _ tweak: (inout AddressSpace.Configuration) -> Void = { _ in }) -> AddressSpace {
        let mm = makeSpace(design, frames: 4096, tweak)
        _ = mm.mmap(small, 4000 * page, [.read, .write], [.private, .anonymous, .fixed]).must()
        for i in 0..<4000 { _ = mm.store(small + UInt64(i) * page + 16, UInt8(i % 251)).must() }
        for i in stride(from: 1, to: 4000, by: 2) { _ = mm.madvise(small + UInt64(i) * page, page, .dontNeed).must() }
        mm.system.rcu.barrier()
        return mm
    }

    static func hugeFault(_ mm: AddressSpace) {
        _ = mm.mmap(huge, Linux.pmdSize, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.madvise(huge, Linux.pmdSize, .hugePage).must()
        _ = mm.store(huge + 5, 9).must()
    }

    @Test(arguments: [Design.global, .perVMA615, .spfVMASeq, .range])
    func aTHPFaultCompacts(design: Design) {
        let mm = Self.fragmented(design)
        #expect(mm.system.frames.freeHugeBlocks == 0)
        Self.hugeFault(mm)
        #expect(mm.thpStats.faultAlloc == 1 && mm.thpStats.faultFallback == 0)
        #expect(mm.system.vmscan[.compactSuccess] == 1)
        #expect(mm.system.vmscan[.pgmigrateSuccess] > 0)
        for i in stride(from: 0, to: 4000, by: 2) {
            #expect(mm.load(Self.small + UInt64(i) * page + 16).must() == UInt8(i % 251), "page \(i) after migration")
        }
        #expect(mm.load(Self.huge + 5).must() == 9)
        #expect(mm.system.checkQuiescent([mm]) == [])
    }

    /// The broken twin: a migration that does not copy leaves the moved pages zeroed (the
    /// destination frame's leftovers), which the content check above sees.
    @Test func aMigrationThatDoesNotCopyIsCaught() {
        let mm = Self.fragmented(.global)
        mm.system._brokenMigrationSkipsCopy = true
        Self.hugeFault(mm)
        #expect(mm.system.vmscan[.pgmigrateSuccess] > 0)
        var wrong = 0
        for i in stride(from: 0, to: 4000, by: 2) where mm.load(Self.small + UInt64(i) * page + 16).must() != UInt8(i % 251) { wrong += 1 }
        #expect(wrong > 0)
    }

    /// `defrag` = never: the fault falls back instead.
    @Test func defragNeverFallsBack() {
        let mm = Self.fragmented(.perVMA615) { $0.thpDefrag = .never }
        Self.hugeFault(mm)
        #expect(mm.thpStats.faultAlloc == 0 && mm.thpStats.faultFallback == 1)
        #expect(mm.system.vmscan[.compactStall] == 0)
    }

    /// After fork every page is mapped twice: nothing moves, nothing is compacted.
    @Test func pagesMappedTwiceStay() {
        let mm = Self.fragmented(.perVMA615)
        let child = mm.fork()
        Self.hugeFault(mm)
        #expect(mm.thpStats.faultFallback == 1)
        #expect(mm.system.vmscan[.compactFail] == 1 && mm.system.vmscan[.pgmigrateFail] > 0)
        #expect(child.load(Self.small + 2 * page + 16).must() == 2)
        #expect(mm.system.checkQuiescent([mm, child]) == [])
    }

    /// MADV_COLLAPSE compacts too.
    @Test func collapseCompacts() {
        let mm = Self.fragmented(.global)
        _ = mm.mmap(Self.huge, Linux.pmdSize, [.read, .write], [.private, .anonymous, .fixed]).must()
        _ = mm.store(Self.huge + 5, 9).must()
        #expect(mm.madvise(Self.huge, Linux.pmdSize, .collapse).error == nil)
        #expect(mm.system.vmscan[.compactSuccess] == 1)
        #expect(mm.load(Self.huge + 5).must() == 9)
        #expect(mm.system.checkQuiescent([mm]) == [])
    }
}
