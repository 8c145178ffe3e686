import FaultlineMM
import FaultlineTestSupport
import Testing

/// PROCMAP_QUERY (the ioctl on /proc/pid/maps, Linux 6.11), as probed on the host (6.18):
/// covering or next, the permission and file-backed filters, the name buffer, the struct
/// sizes refused — under every design, whose lock-free maps walk answers it.
@Suite("PROCMAP_QUERY")
struct ProcmapQueryTests {
    static let designs = Design.selectable
    let base: UInt64 = 0x5000_0000_0000

    /// The probe's layout: rw anonymous with a read-only page in it, a shared anonymous
    /// mapping, a private file mapping at offset one page.
    func layout(_ design: Design) -> AddressSpace {
        let mm = makeSpace(design)
        let fixed: MapFlags = [.private, .anonymous, .fixed]
        _ = mm.mmap(base, 8 * page, rw, fixed).must()
        #expect(mm.mprotect(base + 2 * page, page, [.read]).succeeded)
        _ = mm.mmap(base + 0x10_0000, 2 * page, [.read], [.shared, .anonymous, .fixed]).must()
        let f = mm.system.makeFile(path: "/tmp/probe/pqdata", size: 5 * page)
        _ = mm.mmap(base + 0x20_0000, 3 * page, [.read, .exec], [.private, .fixed], file: f, offset: page).must()
        return mm
    }

    func query(_ mm: AddressSpace, _ a: UInt64, _ flags: UInt64, name: UInt32 = 0, size: UInt64 = ProcmapQuery.structSize) -> Result<ProcmapVMA, Errno> {
        mm.procmapQuery(ProcmapQuery(address: a, flags: flags, size: size, nameBufferSize: name))
    }

    @Test(arguments: designs)
    func coveringNextAndFilters(design: Design) {
        let mm = layout(design)
        // Inside: the covering VMA, rw; no name for anonymous memory even with a buffer.
        let v = query(mm, base + page, 0, name: 100).must()
        #expect(v.start == base && v.end == base + 2 * page && v.flags == 0x3 && v.nameSize == 0 && v.pageSize == 4096)
        #expect(query(mm, base + 2 * page, 0).must().flags == 0x1)
        // A hole: ENOENT, unless the next VMA will do (the shared one, "file-backed": it has
        // /dev/zero's inode).
        #expect(query(mm, base + 9 * page, 0) == .failure(.ENOENT))
        let next = query(mm, base + 9 * page, ProcmapQuery.coveringOrNext).must()
        #expect(next.start == base + 0x10_0000 && next.flags == 0x9)
        // Filters: a read-only VMA is skipped for the next writable one, or ENOENT.
        #expect(query(mm, base + 2 * page, ProcmapQuery.coveringOrNext | ProcmapQuery.writable).must().start == base + 3 * page)
        #expect(query(mm, base + 2 * page, ProcmapQuery.writable) == .failure(.ENOENT))
        let file = query(mm, base, ProcmapQuery.coveringOrNext | ProcmapQuery.executable, name: 100).must()
        #expect(file.start == base + 0x20_0000 && file.flags == 0x5 && file.offset == page)
        #expect(file.name == "/tmp/probe/pqdata" && file.nameSize == 18)
        #expect(query(mm, base, ProcmapQuery.coveringOrNext | ProcmapQuery.fileBacked, name: 100).must().name == "/dev/zero (deleted)")
        // Past the last VMA, and past the address space.
        #expect(query(mm, Linux.taskSize - 1, ProcmapQuery.coveringOrNext) == .failure(.ENOENT))
        #expect(query(mm, UInt64.max - page + 1, ProcmapQuery.coveringOrNext) == .failure(.ENOENT))
    }

    @Test(arguments: designs)
    func argumentErrors(design: Design) {
        let mm = layout(design)
        #expect(query(mm, base, 0x40) == .failure(.EINVAL))                       // unknown flag
        #expect(query(mm, base, 0, size: 16) == .failure(.EINVAL))                // shorter than query_addr
        #expect(query(mm, base, 0, size: 8192) == .failure(.E2BIG))               // over a page
        #expect(query(mm, base, 0, size: 200).must().end == base + 2 * page)      // larger, zero-filled: fine
        #expect(query(mm, base + 0x20_0000, 0, name: 5) == .failure(.ENAMETOOLONG))
        // Up to query_addr only: accepted, nothing written back.
        #expect(query(mm, base, 0, size: 24).must() == ProcmapVMA(start: 0, end: 0, flags: 0, pageSize: 0, offset: 0, nameSize: 0, name: ""))
    }

    @Test(arguments: designs)
    func aVMAThatOnlyTouchesStartBrkIsNotTheHeap(design: Design) {
        // vma_is_initial_heap() overlaps [start_brk, brk) strictly: with an empty heap, the
        // VMA ending at start_brk is nameless (the host said so through PROCMAP_QUERY).
        let mm = makeSpace(design)
        let below = mm.startBrk - 4 * page
        _ = mm.mmap(below, 4 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mapsLines().first { $0.start == below }?.path == "")
        #expect(query(mm, below, 0, name: 64).must().nameSize == 0)
        _ = mm.brk(mm.startBrk + page)
        let sb = mm.startBrk
        #expect(mm.mapsLines().first { $0.start <= sb && $0.end > sb }?.path == "[heap]")
    }
}
