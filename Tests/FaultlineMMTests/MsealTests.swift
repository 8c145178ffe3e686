import FaultlineMM
import FaultlineTestSupport
import Testing

/// mseal(2) as Linux 6.18 does it on this machine's kernel (each case probed on the host
/// first; `faultline difftest` generates mseal and compares every call after it).
@Suite("mseal")
struct MsealTests {
    let base: UInt64 = 0x6000_0000_0000

    func sealedSpace(_ design: Design) -> AddressSpace {
        let mm = makeSpace(design)
        _ = mm.mmap(base, 16 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mseal(base + 4 * page, 4 * page).succeeded)
        return mm
    }

    func lines(_ mm: AddressSpace) -> [String] {
        mm.mapsLines(in: base..<(base + 16 * page)).map { "\(($0.start - base) / page)-\(($0.end - base) / page) \($0.perms)" }
    }

    @Test("Arguments: reserved flags, alignment, holes, overflow")
    func arguments() {
        let mm = makeSpace(.global)
        _ = mm.mmap(base, 16 * page, rw, [.private, .anonymous, .fixed]).must()
        #expect(mm.mseal(base, page, 1).error == .EINVAL)
        #expect(mm.mseal(base + 1, page).error == .EINVAL)
        #expect(mm.mseal(base, 0).succeeded)
        #expect(mm.mseal(base + 15 * page, 3 * page).error == .ENOMEM, "a hole after the mapping")
        #expect(mm.mseal(base, UInt64(bitPattern: -4096)).error == .EINVAL)
        #expect(mm.mseal(0x5000_0000_0000, page).error == .ENOMEM)
        #expect(!mm.smapsText().contains(" sl"), "nothing was sealed by the failures")
        #expect(mm.mseal(base + 15 * page, 1).succeeded, "the length is page-aligned up")
        #expect(mm.munmap(base + 15 * page, page).error == .EPERM)
    }

    @Test("Sealed VMAs refuse munmap, mprotect, mremap and MAP_FIXED, as Linux orders it", arguments: Design.selectable)
    func refusals(_ design: Design) {
        let mm = sealedSpace(design)
        #expect(lines(mm) == ["0-4 rw-p", "4-8 rw-p", "8-16 rw-p"])
        // munmap: EPERM, nothing unmapped — but the first VMA's split at the start stays.
        #expect(mm.munmap(base + page, 5 * page).error == .EPERM)
        #expect(lines(mm) == ["0-1 rw-p", "1-4 rw-p", "4-8 rw-p", "8-16 rw-p"])
        // mprotect: the VMAs before the sealed one keep their change.
        #expect(mm.mprotect(base + 2 * page, 4 * page, .read).error == .EPERM)
        #expect(lines(mm) == ["0-1 rw-p", "1-2 rw-p", "2-4 r--p", "4-8 rw-p", "8-16 rw-p"])
        #expect(mm.mprotect(base + 4 * page, 4 * page, rw).error == .EPERM, "even to the same protection")
        #expect(mm.mremap(base + 4 * page, 4 * page, 2 * page).error == .EPERM)
        #expect(mm.mremap(base + 4 * page, 4 * page, 6 * page, .mayMove).error == .EPERM)
        #expect(mm.mremap(base + 10 * page, page, page, [.mayMove, .fixed], newAddress: base + 5 * page).error == .EPERM)
        #expect(mm.mmap(base + 5 * page, page, .read, [.private, .anonymous, .fixed]).error == .EPERM)
        #expect(lines(mm) == ["0-1 rw-p", "1-2 rw-p", "2-4 r--p", "4-8 rw-p", "8-16 rw-p"])
        // Writable sealed memory may still be discarded; flags that change nothing destructive apply.
        #expect(mm.madvise(base + 4 * page, page, .dontNeed).succeeded)
        #expect(mm.madvise(base + 4 * page, 2 * page, .dontFork).succeeded)
        #expect(mm.munmap(base + 9 * page, 3 * page).succeeded)
    }

    @Test("Discarding the pages of sealed read-only anonymous memory is EPERM")
    func readOnlyAnonymous() {
        let mm = makeSpace(.perVMA)
        let c = base + 0x10_0000
        _ = mm.mmap(c, 4 * page, .read, [.private, .anonymous, .fixed]).must()
        #expect(mm.mseal(c, 4 * page).succeeded)
        for advice: Advice in [.dontNeed, .free, .dontFork] {
            #expect(mm.madvise(c, page, advice).error == .EPERM, "\(advice)")
        }
        #expect(mm.madvise(c, page, .willNeed).succeeded)
        #expect(mm.madvise(c - page, 2 * page, .dontNeed).error == .EPERM, "EPERM, not the hole's ENOMEM")
    }

    @Test("Sealing merges like a flag; smaps shows it; fork keeps it; brk cannot shrink over it")
    func flagLike() {
        let mm = sealedSpace(.global)
        #expect(mm.mseal(base + 8 * page, page).succeeded)
        #expect(lines(mm) == ["0-4 rw-p", "4-9 rw-p", "9-16 rw-p"], "the adjacent sealed range merged")
        #expect(mm.smapsText().contains("VmFlags: rd wr mr mw me ac sl"))
        let child = mm.fork()
        #expect(child.munmap(base + 4 * page, page).error == .EPERM)
        let heap = mm.brk(0)
        let grown = mm.brk(heap + 4 * page)
        #expect(mm.mseal(heap, page).succeeded)
        #expect(mm.brk(heap) == grown, "a shrink over a sealed heap is refused")
    }
}
