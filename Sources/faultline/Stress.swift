import ArgumentParser
import FaultlineBench
import FaultlineHarnesses
import FaultlineMM
import Foundation

extension Design: ExpressibleByArgument {}
extension MapsReader: ExpressibleByArgument {}
extension VMATreeKind: ExpressibleByArgument {}

struct Stress: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stress",
        abstract: "Race mmap/munmap/mprotect/mremap/madvise, faults and maps reads under one design and check its invariants.",
        discussion: """
        Every thread owns slots that only it maps, unmaps, protects and moves, writes a \
        signature into their pages and checks, after each of its own calls returns, what must \
        then be true whatever the other threads do: no PTE left after munmap or mremap, no \
        writable PTE after mprotect(PROT_READ), its words intact, maps showing exactly its \
        mapped slots (and pages it swapped out read back). Every thread also faults into the others' slots and churns a shared area. \
        Every epoch all threads park and the global invariants are checked: each present PTE \
        inside a VMA that allows it, frame reference and map counts equal to the PTEs mapping \
        them, nothing free and mapped, the reverse map finding every PTE of every anonymous \
        page (each anon_vma's tree and counts checked), nothing written after it was freed \
        (freed frames, VMAs and page tables are poisoned). Exit status 1 with a report on any violation. \
        Designs: \(Design.selectable.map(\.rawValue).joined(separator: ", ")). Broken controls, \
        which must fail: \(Design.allCases.filter(\.isBrokenControl).map(\.rawValue).joined(separator: ", ")).
        """
    )

    @Option(help: "Design.")
    var design: Design = .global

    @Option(help: "VMA index: maple, or rbtree (global only).")
    var tree: VMATreeKind = .maple

    @Option(help: "Seconds to run.")
    var seconds: Double = 10

    @Option(help: "Threads.")
    var threads: Int = 4

    @Option(help: "Seed.")
    var seed: UInt64 = 1

    @Option(help: "Maps reader: locked or lockless (default: both, alternating).")
    var maps: MapsReader?

    @Option(help: "Seconds between quiescent checks.")
    var epoch: Double = 0.5

    @Option(name: .customLong("swap-mib"), help: "Swap device size in MiB (0: none). MADV_PAGEOUT swaps anonymous pages out; faults read them back.")
    var swapMiB: Int = 16

    @Option(help: "Memory in MiB with reclaim on (kswapd, direct reclaim, the LRU aged through the reverse map); 0: enough for the layout, no reclaim.")
    var memory: Int = 0

    @Flag(name: .customLong("no-huge-pages"), help: "Leave transparent huge pages out (by default the shared area gets MADV_HUGEPAGE and MADV_COLLAPSE now and then).")
    var noHugePages = false

    @Option(name: .customLong("khugepaged-ms"), help: "khugepaged's pause between passes in ms (scan_sleep_millisecs; 0: off). Its passes collapse the shared area's 2 MiB under the writer side.")
    var khugepagedMs: Int = 10

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if seconds <= 0 || threads < 1 || threads > 512 || epoch <= 0 {
            throw ValidationError("--seconds and --epoch must be positive, --threads in 1...512")
        }
        if khugepagedMs < 0 || khugepagedMs > 60_000 { throw ValidationError("--khugepaged-ms must be in 0...60000") }
        if swapMiB < 0 || swapMiB > 4096 { throw ValidationError("--swap-mib must be in 0...4096") }
        if memory < 0 || memory > 65536 || (memory > 0 && memory < 4) { throw ValidationError("--memory must be 0 or in 4...65536 (MiB)") }
        if !design.allowsTree(tree) { throw ValidationError("\(design.rawValue) needs the maple tree (its readers take no lock)") }
    }

    func run() throws {
        var o = StressOptions()
        o.design = design
        o.tree = tree
        o.seconds = seconds
        o.threads = threads
        o.seed = seed
        o.mapsReader = maps
        o.epoch = epoch
        o.swapPages = swapMiB * 256
        o.memoryPages = memory * 256
        o.hugePages = !noHugePages
        o.khugepagedMillis = khugepagedMs
        var progress: Progress? = nil
        let report = DesignStress(options: o).run { done, total, label in
            // Off a terminal, a line every 10 s.
            if progress == nil { progress = Progress(total: total, minInterval: 10) }
            progress!.step(min(done - 1, total - 1), label)
        }
        progress?.finish()
        if json {
            struct Out: Codable {
                var design: String, seconds: Double, threads: Int, epochs: Int, passed: Bool
                var operations: [String: UInt64], counters: DesignCounters, violations: [String], firstViolationAfter: Double?
                var treeNodesChecked: Int, swapOuts: Int, swapIns: Int, reclaimed: Int, directReclaims: Int, oomFailures: Int
                var thpFaults: Int, thpSplits: Int, thpCollapses: Int, thpFallbacks: Int, khugepagedCollapses: Int, compactStalls: Int, compactSuccesses: Int, pagesMigrated: Int
            }
            print(try encodeJSON(Out(design: design.rawValue, seconds: seconds, threads: threads, epochs: report.epochs,
                                     passed: report.passed, operations: report.operations, counters: report.counters,
                                     violations: report.violations, firstViolationAfter: report.firstViolationAfter,
                                     treeNodesChecked: report.treeNodesChecked,
                                     swapOuts: report.swapOuts, swapIns: report.swapIns,
                                     reclaimed: report.reclaimed, directReclaims: report.directReclaims,
                                     oomFailures: report.oomFailures, thpFaults: report.thpFaults, thpSplits: report.thpSplits, thpCollapses: report.thpCollapses, thpFallbacks: report.thpFallbacks, khugepagedCollapses: report.khugepagedCollapses, compactStalls: report.compactStalls, compactSuccesses: report.compactSuccesses, pagesMigrated: report.pagesMigrated)))
        } else {
            print(render(report))
        }
        if !report.passed { throw ExitCode(1) }
    }

    func render(_ r: StressReport) -> String {
        var out = "stress \(r.design.rawValue): \(r.threads) threads, \(r.epochs) quiescent checks "
            + "(\(r.treeNodesChecked) VMA-tree nodes checked)\n"
        let ops = r.operations.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        out += "operations: \(ops)\n"
        let c = r.counters
        out += "faults \(c.faults), lockless \(c.locklessSuccesses), aborts \(c.aborts), fallbacks \(c.fallbacks), retries \(c.retries)\n"
        let reasons = c.abortReasons.filter { $0.value > 0 }.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }
        if !reasons.isEmpty { out += "aborts by reason: " + reasons.joined(separator: ", ") + "\n" }
        out += "waits: mmap_lock \(c.mmapLockContended) (\(fmt(Double(c.mmapLockWaitNs) / 1e6, 1)) ms), "
            + "VMA locks \(c.vmaLockContended) (\(fmt(Double(c.vmaLockWaitNs) / 1e6, 1)) ms), "
            + "range lock \(c.rangeLockContended) (\(fmt(Double(c.rangeLockWaitNs) / 1e6, 1)) ms)\n"
        out += "maps: \(c.mapsVMAs) lines, \(c.mapsFallbacks) lock-free steps fell back to mmap_lock\n"
        if r.swapOuts + r.swapIns > 0 { out += "swap: \(r.swapOuts) pages written out, \(r.swapIns) read back\n" }
        if r.thpFaults + r.thpSplits + r.thpCollapses + r.thpFallbacks + r.khugepagedCollapses > 0 {
            out += "huge pages: \(r.thpFaults) THPs faulted, \(r.thpFallbacks) faults fell back to small pages (no whole free block), \(r.thpSplits) huge PMDs split, \(r.thpCollapses) collapsed (MADV_COLLAPSE and khugepaged), \(r.khugepagedCollapses) of them by khugepaged; at the end \(r.freeFramesAtEnd) frames free, \(r.wholeBlocksAtEnd) of them in whole 2 MiB blocks; compaction: \(r.compactStalls) attempts, \(r.compactSuccesses) blocks made whole, \(r.pagesMigrated) pages migrated\n"
        }
        if r.reclaimed > 0 { out += "reclaim: \(r.reclaimed) pages freed, \(r.directReclaims) direct reclaims\n" }
        if r.oomFailures > 0 {
            out += "out of memory: \(r.oomFailures) accesses failed under the limit (not violations: Linux would OOM-kill, and the model does not swap shared memory out)\n"
        }
        if let events = c.vmaLockEventsLine { out += events + "\n" }
        if r.passed {
            out += "PASSED: 0 violations"
        } else {
            out += "FAILED: \(r.violations.count) violations"
            if let t = r.firstViolationAfter { out += ", first found after \(fmt(t, 2)) s" }
            out += "\n" + r.violations.prefix(30).map { "  " + $0 }.joined(separator: "\n")
        }
        return out
    }
}
