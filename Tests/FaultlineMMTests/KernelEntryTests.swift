import CFaultline
#if canImport(Glibc)
import Glibc
#endif
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
        #expect(crossings(.exception, design: design) == 14)
        #expect(crossings(.none, design: design) == 0)
    }

    /// Under `.exception` a fault's crossing is a real page-fault exception of the host's (the
    /// vsyscall page's emulation), counted by the kernel's own page-fault event; under
    /// `.syscall` it is not. Where perf events are refused, or the vsyscall page is not
    /// execute-only, the test says so and checks what it can.
    @Test func aFaultsCrossingIsAPageFaultException() {
        let fd = fl_page_fault_events_open()
        guard fd >= 0 else {
            Issue.record("perf_event_open refused (\(-fd)): the exception crossing is not checked here")
            return
        }
        defer { close(fd) }
        func faults(_ entry: KernelEntry) -> Int64 {
            entry.enterFault()   // warm: the first call may fault in the code around it
            let before = fl_counter_read(fd)
            for _ in 0..<100 { entry.enterFault() }
            return fl_counter_read(fd) - before
        }
        let bySyscall = faults(.syscall)
        #expect(bySyscall < 5, "a system call's crossing raised \(bySyscall) page faults")
        if KernelEntry.exceptionAvailable {
            let byException = faults(.exception)
            #expect(byException >= 100 && byException < 105, "100 exception crossings raised \(byException) page faults")
            #expect(KernelEntry.exception.effective == .exception)
        } else {
            // Falls back to a system call, which raises none, and says so.
            #expect(faults(.exception) < 5)
            #expect(KernelEntry.exception.effective == .syscall)
        }
    }
}
