@_spi(Testing) import FaultlineMM
import Testing

/// Readahead in large folios and mapping them whole (6.18), against what the host did: a
/// sequential pass over a fresh 128 MiB shared mapping of an ext4 file with read_ahead_kb 8192
/// took 2772 write faults (0.0846 per page) and, reading instead, 468 (0.0143 per page); the
/// page cache filled with 2048 pages each of orders 0, 2, 4, 6 and 8, then order 9
/// (`filemap:mm_filemap_add_to_page_cache`).
@Suite("Large folios in the page cache")
struct LargeFolioTests {
    static let pages = 32_768

    func pass(write: Bool, design: Design = .global, readahead: Int = 2048) -> (faults: UInt64, orders: [Int: Int]) {
        let system = MMSystem(frames: Self.pages + 4096)
        let mm = AddressSpace(system: system, design: design)
        let file = system.makeFile(path: "/pf3", size: UInt64(Self.pages) * Linux.pageSize)
        file.readaheadPages = readahead
        let len = UInt64(Self.pages) * Linux.pageSize
        let r = mm.mmap(0, len, write ? [.read, .write] : [.read], [.shared], file: file, offset: 0)
        guard case .success(let base) = r else { Issue.record("mmap: \(r)"); return (0, [:]) }
        let before = mm.designCounters.faults
        for p in 0..<UInt64(Self.pages) {
            let a = base + p * Linux.pageSize
            let ok = write ? mm.store(a, 1) : mm.load(a).map { _ in () }
            if case .failure(let e) = ok { Issue.record("page \(p): \(e)"); break }
        }
        let faults = mm.designCounters.faults - before
        var orders: [Int: Int] = [:]
        var i: UInt64 = 0
        while i < UInt64(Self.pages) {
            guard let r = file.folioRange(i) else { i += 1; continue }
            orders[Int(UInt64(r.count).trailingZeroBitCount), default: 0] += r.count
            i = r.upperBound
        }
        return (faults, orders)
    }

    @Test("Readahead ramps the folio order by two per window, as the host's did")
    func orders() {
        let (_, orders) = pass(write: true)
        #expect(orders == [0: 2048, 2: 2048, 4: 2048, 6: 2048, 8: 2048, 9: 22_528])
    }

    @Test("A write pass takes one fault per folio: 2772, as the host", arguments: [Design.global, .perVMA615, .spfVMASeq, .rangeTree])
    func writes(_ d: Design) {
        #expect(pass(write: true, design: d).faults == 2772)
    }

    @Test("A read pass takes one fault per 16 small pages and one per large folio: 468, as the host")
    func reads() {
        #expect(pass(write: false).faults == 468)
    }

    /// filemap_fault() drops the fault's lock for do_async_mmap_readahead() and retries
    /// (`fpin` → VM_FAULT_RETRY): with mmap_lock (global) and with the VMA lock (per-vma-6.15)
    /// nothing of the fault is held while the next window is read, each window costs the
    /// fault that found the mark one retry, and the fault count stays the host's. (A
    /// speculative fault may not drop what it holds and would read inline; spf-vmaseq takes
    /// shared file faults under mmap_lock, so it drops the lock as well.)
    @Test("The async readahead runs with the fault's lock dropped, then the fault retries",
          arguments: [Design.global, .perVMA615, .spfVMASeq])
    func asyncReadaheadDropsTheLock(_ d: Design) {
        let system = MMSystem(frames: Self.pages + 4096)
        let mm = AddressSpace(system: system, design: d)
        let file = system.makeFile(path: "/pf3", size: UInt64(Self.pages) * Linux.pageSize)
        file.readaheadPages = 2048
        var windows = 0
        var heldMmapLock = 0
        // Weakly: the address space holds the file, which holds the hook (a cycle, a leak).
        file.asyncReadaheadHook = { [weak mm] in
            guard let mm else { return }
            windows += 1
            if mm.mmapLock.tryLockWrite() { mm.mmapLock.unlockWrite() } else { heldMmapLock += 1 }
        }
        defer { file.asyncReadaheadHook = nil }
        let len = UInt64(Self.pages) * Linux.pageSize
        let base = mm.mmap(0, len, [.read, .write], [.shared], file: file, offset: 0).must()
        let before = mm.designCounters
        for p in 0..<UInt64(Self.pages) { #expect(mm.store(base + p * Linux.pageSize, 1).succeeded) }
        let c = mm.designCounters - before
        // One window of 2048 read around the first fault, then one async window per 2048.
        #expect(windows == 15 || windows == 16, "\(windows) windows")
        #expect(c.faults == 2772)
        #expect(heldMmapLock == 0)
        #expect(c.retries == UInt64(1 + windows) && c.majorFaults == c.retries)
    }

    @Test("Without readahead every page is its own folio and its own fault")
    func noReadahead() {
        let (faults, orders) = pass(write: true, readahead: 0)
        #expect(faults == UInt64(Self.pages))
        #expect(orders == [0: Self.pages])
    }
}
