import FaultlineMM
import FaultlineTestSupport
import Testing

/// `KernelEntry`: with `.syscall`, every fault taken and every memory call crosses into the
/// host kernel exactly once (the host's exception or system call), a present page's access
/// none (a TLB hit); with `.none`, nothing does.
@Suite("Kernel entry")
struct KernelEntryTests {
    static let base: UInt64 = 0x7000_0000_0000

    func crossings(_ entry: KernelEntry, design: Design) -> UInt {
        let mm = makeSpace(design) { $0.kernelEntry = entry }
        let before = KernelEntry.enteredOnThisThread
        _ = mm.mmap(Self.base, 8 * page, [.read, .write], [.private, .anonymous, .fixed]).must()   // 1 call
        for i in 0..<8 { _ = mm.store(Self.base + UInt64(i) * page, 1).must() }                   // 8 faults
        for i in 0..<8 { _ = mm.load(Self.base + UInt64(i) * page).must() }                       // present: none
        _ = mm.mprotect(Self.base, 8 * page, [.read]).must()                                      // 1 call
        #expect(mm.store(Self.base, 2).error != nil)                                              // 1 fault (SIGSEGV)
        _ = mm.madvise(Self.base, 8 * page, .dontNeed).must()                                     // 1 call
        _ = mm.munmap(Self.base, 8 * page).must()                                                 // 1 call
        #expect(mm.load(Self.base).error != nil)                                                  // 1 fault (no VMA)
        return KernelEntry.enteredOnThisThread - before
    }

    @Test(arguments: [Design.global, .perVMA615, .range])
    func everyFaultAndCallCrossesOnce(design: Design) {
        #expect(crossings(.syscall, design: design) == 14)
        #expect(crossings(.none, design: design) == 0)
    }
}
