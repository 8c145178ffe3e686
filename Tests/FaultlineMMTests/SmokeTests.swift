import FaultlineMM
import FaultlineSync
import Testing

let page = Linux.pageSize

func space(_ frames: Int = 4096) -> AddressSpace {
    AddressSpace(system: MMSystem(frames: frames))
}

@Suite("Address space smoke")
struct SmokeTests {
    @Test func mmapWriteReadMunmap() throws {
        let mm = space()
        let a = try mm.mmap(0, 3 * page, [.read, .write], [.private, .anonymous]).get()
        #expect(a == Linux.defaultMmapBase - 3 * page)
        #expect(mm.load(a) == .success(0))
        #expect(mm.store(a + 5, 42).succeeded)
        #expect(mm.load(a + 5) == .success(42))
        #expect(mm.presentPages(a, a + 3 * page) == 1)
        let lines = mm.mapsLines()
        #expect(lines.count == 1)
        #expect(lines[0].description == String(a, radix: 16) + "-" + String(a + 3 * page, radix: 16) + " rw-p 00000000 00:00 0 ")
        #expect(mm.munmap(a + page, page).succeeded)
        #expect(mm.mapsLines().count == 2)
        #expect(mm.load(a + page) == .failure(.segvMapErr))
        #expect(mm.load(a + 5) == .success(42))
    }

    @Test func forkCopiesOnWrite() throws {
        let mm = space()
        let a = try mm.mmap(0, page, [.read, .write], [.private, .anonymous]).get()
        _ = mm.store(a, 7)
        let child = mm.fork()
        #expect(child.load(a) == .success(7))
        _ = child.store(a, 9)
        #expect(child.load(a) == .success(9))
        #expect(mm.load(a) == .success(7))
    }
}
