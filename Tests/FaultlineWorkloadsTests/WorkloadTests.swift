import FaultlineMM
import FaultlineReplay
import FaultlineReport
import FaultlineTestSupport
import FaultlineWorkloads
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

func smallOptions(_ w: Workload, threads: Int = 2) -> WorkloadOptions {
    var o = WorkloadOptions()
    o.workload = w
    o.threads = threads
    o.size = 1 << 20
    o.seconds = 0.1
    o.warmup = 0.02
    o.pin = false
    o.ioLatencyNs = 2_000
    o.memoryPages = 512
    // The workloads' own mechanics, apart from the test process's mappings (thousands under
    // ASan: a locked maps reader over them held the call worker off for the whole window).
    o.layout = .empty
    // Huge pages need aligned 2 MiB blocks in the region.
    if w == .thp { o.size = 4 << 20 }
    return o
}

@Suite("Workloads", .serialized)
struct WorkloadTests {
    @Test
    func histogramPercentilesAreWithinTheirBuckets() {
        var h = LatencyHistogram()
        for v in 1...10_000 { h.record(UInt64(v)) }
        #expect(h.total == 10_000 && h.maxValue == 10_000)
        for (q, want) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = Double(h.percentile(q))
            #expect(abs(got - want) / want < 0.02, "p\(q): \(got)")
        }
        #expect(h.percentile(1) == 10_000)
        var g = LatencyHistogram()
        g.record(1_000_000_000)
        h.merge(g)
        #expect(h.maxValue == 1_000_000_000 && h.total == 10_001)
    }

    /// Each workload does what it says on the model: operations counted, faults where it
    /// faults, none where it only maps, and everything given back at the end.
    @Test(arguments: Workload.allCases)
    func workloadsDoWhatTheyClaim(workload: Workload) {
        var o = smallOptions(workload)
        if workload.underMemoryLimit {
            // Reclaim stalls (a grace period per round) can fill a short window: time every
            // operation, over longer.
            o.sampleEvery = 1
            o.seconds = 0.3
        }
        let system = WorkloadRunner.makeSystem(o, workloads: [workload], threads: 2)
        for d in [Design.global, .perVMA] {
            let r = WorkloadRunner.runModel(design: d, options: o, system: system)
            let c = r.counters!
            #expect(r.ops > 0 && r.opsPerSecond > 0, "\(workload.rawValue) \(d.rawValue)")
            #expect(r.latencyNs.samples > 0)
            switch workload {
            case .pageFault3:
                // A shared file mapping: readahead fills the page cache in large folios and a
                // write fault maps its folio whole (on the host 0.085 faults per page with an
                // 8 MiB readahead window), so at most one fault per operation.
                let slack = UInt64(o.pages * o.threads)
                #expect(c.faults > 0 && c.faults <= r.ops + slack, "\(c.faults) faults, \(r.ops) ops")
            case .pageFault1, .pageFault2, .metis:
                // One write to a fresh page per operation: a fault each (the window cuts at most
                // one region per thread; metis's regions are up to 16 MiB, not --size).
                let region = workload == .metis ? (16 << 20) / Int(Linux.pageSize) : o.pages
                let slack = UInt64(region * o.threads)
                #expect(c.faults + slack >= r.ops && c.faults <= r.ops + slack, "\(c.faults) faults, \(r.ops) ops")
            case .mmap1, .mmap2:
                #expect(c.faults == 0)
            case .mapsReader:
                #expect((r.mapsReads ?? 0) > 0 && c.mapsVMAs > 0)
            case .mapsBaseline:
                // The same workers and VMAs, no reader.
                #expect(r.mapsReads == nil && c.mapsVMAs == 0 && c.faults > 0)
            case .appLaunch:
                #expect(c.majorFaults > 0 && c.retries > 0)
            case .swapChurn:
                // Every write after a pageout reads the page back: a major fault, retried
                // after the I/O with the lock dropped.
                #expect(c.majorFaults > 0 && c.retries > 0 && system.swap!.pagesOut > 0 && system.swap!.pagesIn > 0)
            case .reclaim:
                // A working set 1.5× the 2 MiB limit: writes find pages reclaim swapped out.
                #expect(c.majorFaults > 0 && c.faults > 0)
                #expect((r.reclaimedPages ?? 0) > 0 && r.directReclaimedPages! <= r.reclaimedPages!)
            case .launchUnderPressure:
                // One launcher (the other thread maps): 2.5 MiB of library and 512 KiB of heap
                // a pass in 2 MiB; reads that miss the cache wait for I/O.
                #expect(c.majorFaults > 0 && (r.reclaimedPages ?? 0) > 0)
            case .seedMix, .mallocChurn:
                #expect(c.faults > 0)
            case .thp:
                // A THP per 512 writes where a block of frames was free, a small page where
                // none was: one fault per write at most, and THPs mapped.
                #expect(c.thpFaults > 0 && c.faults <= r.ops + UInt64(o.pages * o.threads), "\(c.thpFaults) THPs, \(c.faults) faults, \(r.ops) ops")
                #expect(c.faults < r.ops / 4, "most writes hit a THP: \(c.faults) faults for \(r.ops) writes")
            }
            if d == .perVMA && [.pageFault1, .seedMix, .metis].contains(workload) { #expect(c.locklessSuccesses > 0) }
            // Workers with one kind of operation each: faults and calls timed apart, and the
            // two together are every sample.
            if workload.role(ofWorker: 0) != nil {
                let f = r.faultLatencyNs!, k = r.callLatencyNs!
                #expect(f.samples > 0 && k.samples > 0 && f.samples + k.samples == r.latencyNs.samples)
            } else {
                #expect(r.faultLatencyNs == nil && r.callLatencyNs == nil)
            }
        }
        // Final state: every frame, VMA and page table came back (once the exited workers' LRU
        // batches are drained, `lru_add_drain_all()`, and a grace period has passed).
        system.frames.lru.drainAll()
        system.rcu.barrier()
        #expect(system.frames.framesInUse == 0)
        #expect(system.liveVMAs == 0 && system.livePageTables == 0)
    }

    @Test(arguments: [Workload.pageFault1, .mmap1, .seedMix, .mapsReader, .mapsBaseline, .thp])
    func theHostRunsTheSameLoop(workload: Workload) {
        var o = smallOptions(workload)
        // The host's slow reader pauses between reads of a page of maps.
        if workload == .mapsReader { o.slowReaderNs = 50_000 }
        let r = WorkloadRunner.runHost(options: o)
        #expect(r.design == "host" && r.ops > 0 && r.counters == nil)
        #expect(((r.mapsReads ?? 0) > 0) == (workload == .mapsReader))
        #expect((r.faultLatencyNs != nil) == (workload.role(ofWorker: 0) != nil))
        if workload == .pageFault1 {
            // Anonymous memory: one kernel fault per page written.
            let f = Double(r.hostFaults!) / Double(r.ops)
            #expect(f > 0.8 && f < 1.2, "\(f) kernel faults per write")
        }
        if workload == .thp && Linux.hostTHPMode != .never {
            // A THP per 2 MiB where the host found one: far fewer faults than writes.
            let f = Double(r.hostFaults!) / Double(r.ops)
            #expect(f < 0.5, "\(f) kernel faults per write")
        }
    }
}

/// compare's default thread counts: a point per doubling up to the CPUs, and the CPUs.
@Test func compareThreadsDoubleUpToTheCPUs() {
    #expect(CompareOptions.threadLadder(cpus: 1) == [1])
    #expect(CompareOptions.threadLadder(cpus: 2) == [1, 2])
    #expect(CompareOptions.threadLadder(cpus: 6) == [1, 2, 4, 6])
    #expect(CompareOptions.threadLadder(cpus: 16) == [1, 2, 4, 8, 16])
    #expect(CompareOptions.threadLadder(cpus: 0) == [1])
}

@Suite("Report", .serialized)
struct ReportTests {
    static let comparison: Comparison = {
        var o = CompareOptions()
        o.columns = ["host", "global", "per-vma"]
        o.workloads = [.pageFault1, .mmap1, .mapsReader]
        o.threads = [1, 2]
        o.repetitions = 2
        o.base = smallOptions(.pageFault1)
        o.base.seconds = 0.05
        return Comparison.run(o)
    }()

    @Test
    func rowsAggregateTheRepetitions() {
        let c = Self.comparison
        // 2 reps × 3 workloads × 3 columns × 2 thread counts.
        #expect(c.cells.count == 2 * 18)
        #expect(c.rows.count == 18)
        let g = c.rows.first { $0.design == "global" && $0.workload == "page_fault1" && $0.threads == 2 }!
        #expect(g.ratioToGlobal == 1)
        #expect(g.minOpsPerSecond <= g.opsPerSecond && g.opsPerSecond <= g.maxOpsPerSecond)
        #expect(c.rows.first { $0.design == "host" && $0.workload == "mmap1" }!.hostFaultsPerOp != nil)
        #expect(c.textTable().contains("page_fault1, 2 threads"))
        // maps-reader's fault and call workers are timed apart, host and model alike.
        for d in ["host", "global", "per-vma"] {
            let r = c.rows.first { $0.design == d && $0.workload == "maps-reader" && $0.threads == 2 }!
            #expect(r.faultLatencyNs != nil && r.callLatencyNs != nil && r.mapsReadsPerSecond != nil, "\(d)")
            #expect(c.textTable().contains(r.roleLatencyNote))
        }
    }

    @Test
    func jsonHasOneObjectPerCellWithTheDocumentedKeys() throws {
        let c = Self.comparison
        let obj = try JSONSerialization.jsonObject(with: try c.json()) as! [String: Any]
        let machine = obj["machine"] as! [String: Any]
        #expect(machine["date"] != nil && machine["cpu"] != nil && machine["kernel"] != nil)
        let cells = obj["cells"] as! [[String: Any]]
        #expect(cells.count == c.cells.count)
        for cell in cells {
            for k in ["design", "workload", "threads", "opsPerSecond", "latencyNs"] { #expect(cell[k] != nil, "\(k)") }
            let lat = cell["latencyNs"] as! [String: Any]
            for k in ["p50", "p99", "p999", "max"] { #expect(lat[k] != nil) }
            if cell["design"] as! String != "host" {
                let counters = cell["counters"] as! [String: Any]
                for k in ["faults", "speculativeSuccesses", "aborts", "fallbacks", "retries"] { #expect(counters[k] != nil, "\(k)") }
            }
        }
        // And it reads back.
        let back = try JSONDecoder().decode(Comparison.self, from: try c.json())
        #expect(back.rows.count == c.rows.count)
    }

    @Test
    func csvHasAHeaderAndALinePerCell() {
        let lines = Self.comparison.csv().split(separator: "\n")
        #expect(lines.first.map(String.init) == Comparison.csvHeader)
        #expect(lines.count == Self.comparison.cells.count + 1)
        let width = Comparison.csvHeader.split(separator: ",").count
        for l in lines { #expect(l.split(separator: ",", omittingEmptySubsequences: false).count == width) }
    }

    /// The report parses as XML, and every chart is an SVG with a title, axis text and one mark
    /// per data point.
    @Test
    func htmlIsWellFormedWithLabelledCharts() {
        let html = Self.comparison.html()
        let counter = ElementCounter()
        let parser = XMLParser(data: Data(html.utf8))
        parser.delegate = counter
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        // Throughput (3 workloads), scaling (3), latency (3), fault breakdown (page_fault1, maps-reader).
        #expect(counter.counts["svg"] == 11)
        #expect(counter.counts["title"]! >= 12)
        #expect(counter.counts["rect"]! > 20 && counter.counts["polyline"]! > 5)
        #expect(counter.texts.contains("page faults per second"))
        #expect(counter.texts.contains("threads") && counter.texts.contains("latency (ns)"))
        #expect(counter.counts["tr"] == Self.comparison.rows.count + 1)
    }
}

final class ElementCounter: NSObject, XMLParserDelegate {
    var counts: [String: Int] = [:]
    var texts: Set<String> = []
    var text = ""
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        counts[name, default: 0] += 1
        text = ""
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        texts.insert(text)
        text = ""
    }
}

@Suite("Report with a replayed trace")
struct ReplayReportTests {
    @Test
    func aTraceIsAWorkloadAtItsOwnThreadCount() throws {
        let path = traceDirectory.appendingPathComponent("calls-errors.strace").path
        let w = try ReplayWorkload(path: path, text: try String(contentsOfFile: path, encoding: .utf8), name: "replay:calls")
        #expect(w.summary.mismatches.isEmpty)
        var o = CompareOptions()
        o.columns = ["host", "global", "per-vma"]
        o.workloads = [.pageFault1]
        o.replays = [w]
        o.threads = [1, 2]
        o.repetitions = 2
        o.base = smallOptions(.pageFault1)
        o.base.seconds = 0.05
        let c = Comparison.run(o)
        // page_fault1: 3 columns × 2 thread counts; the trace: 2 designs (not host) at its 4 threads.
        #expect(c.cells.count == 2 * (6 + 2))
        let rows = c.rows.filter { $0.workload == "replay:calls" }
        #expect(rows.map(\.design) == ["global", "per-vma"])
        #expect(rows.allSatisfy { $0.threads == 4 && $0.opsPerSecond > 0 })
        #expect(c.textTable().contains("replay:calls, 4 threads (calls and faults/s"))
        let counter = ElementCounter()
        let parser = XMLParser(data: Data(c.html().utf8))
        parser.delegate = counter
        #expect(parser.parse())
        #expect(counter.texts.contains("calls and faults per second"))
        #expect(counter.texts.contains("replay:calls (4 threads)"))
        // The trace's own section: its check as it loaded, its rates by design.
        #expect(counter.texts.contains("Recorded programs"))
        #expect(counter.texts.contains("252 calls, 0 mismatches; 0 faults, 100.0% matched, 0.0% extra"))
        #expect(c.replayChecks?["replay:calls"]?.calls == 252)
        // page_fault1: throughput, scaling, latency, faults; the trace: throughput, latency, and
        // faults (its MAP_POPULATE and MADV_POPULATE_WRITE fault pages in).
        #expect(counter.counts["svg"] == 7)

        // The results page and the headline are generated from the results file alone, and say
        // when, where and by what command the numbers were made.
        var recorded = c
        recorded.command = "faultline compare --threads 1,2"
        let back = try JSONDecoder().decode(Comparison.self, from: try recorded.json())
        let page = back.markdown(source: "r/results.json")
        #expect(page == recorded.markdown(source: "r/results.json"))
        #expect(page.contains("- Command: `faultline compare --threads 1,2`"))
        #expect(page.contains("Linux \(c.machine.kernel)") && page.contains(c.machine.cpu))
        #expect(page.contains("## replay:calls, 4 threads (calls and faults/s)") && page.contains("## page_fault1, 2 threads (page faults/s)"))
        let perVMA = try #require(back.rows.first { $0.design == "per-vma" && $0.workload == "page_fault1" && $0.threads == 2 })
        #expect(page.contains("| per-vma | \(si(perVMA.opsPerSecond)) | "))
        let headline = try #require(back.headlineMarkdown(source: "r/results.json"))
        #expect(headline.contains("| design | page_fault1, 1 thread | page_fault1, 2 threads |"))
        #expect(headline.contains("| host kernel | "))
        // A results file from before commands were recorded still reads, and says so.
        var old = try JSONSerialization.jsonObject(with: try c.json()) as! [String: Any]
        old.removeValue(forKey: "command")
        let legacy = try JSONDecoder().decode(Comparison.self, from: try JSONSerialization.data(withJSONObject: old))
        #expect(legacy.markdown(source: "x").contains("Command: not recorded"))
    }
}

@Suite("Timed replay")
struct TimedReplayTests {
    @Test("Each traced thread replays on its own thread under every design", arguments: Design.selectable)
    func timed(_ d: Design) throws {
        let (_, r) = try replay(try loadTrace("calls-errors.strace"))
        let script = try #require(r.script)
        #expect(script.tasks.count == 4, "main and three workers")
        let cell = r.timed(script, design: d, seconds: 0.05, workload: "replay:calls")
        #expect(cell.threads == 4)
        #expect((cell.replayPasses ?? 0) >= 1)
        #expect(cell.ops == UInt64(script.operations) * UInt64(cell.replayPasses ?? 0))
        #expect(cell.opsPerSecond > 0)
    }

    /// Thread 11 is created after the main thread maps a region, faults in it, and the main
    /// thread unmaps it once thread 11 has touched it; thread 11 then maps a region the kernel
    /// handed out where the first one was.
    static let ordered = """
    10 1.000000000 mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
    10 1.000000100 clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0, stack=0x7f00, stack_size=0x1000}, 88) = 11
    11 1.000000200 --- page_fault_user {address=0x7f0000000000, ip=0x401000, error_code=0x6} ---
    11 1.000000300 --- page_fault_user {address=0x7f0000001000, ip=0x401000, error_code=0x6} ---
    10 1.000000400 munmap(0x7f0000000000, 65536) = 0
    11 1.000000500 mmap(NULL, 65536, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
    11 1.000000600 --- page_fault_user {address=0x7f0000002000, ip=0x401000, error_code=0x4} ---
    11 1.000000700 exit(0) = ?
    10 1.000000800 exit_group(0) = ?
    """

    @Test("Threads replay in the order the trace proves: clone, then mapping before use, use before unmapping", arguments: Design.selectable)
    func traceOrder(_ d: Design) throws {
        let (s, r) = try replay(Self.ordered)
        #expect(s.mismatches.isEmpty)
        let script = try #require(r.script)
        #expect(script.tasks.count == 2)
        // 11's first fault waits for nothing more than the clone gate; 10's munmap waits for
        // 11's faults; 11's mmap waits for 10's munmap.
        #expect(script.tasks[0].contains { !$0.after.isEmpty } && script.tasks[1].contains { !$0.after.isEmpty })
        let cell = r.timed(script, design: d, seconds: 0.05, workload: "replay:ordered")
        #expect((cell.replayPasses ?? 0) >= 1)
        #expect(cell.replayErrors == 0, "every pass kept the trace's order")
        #expect(cell.replayFaults == 3 * UInt64(cell.replayPasses ?? 0))
    }

    @Test("Without the order, the same trace fails in passes (the twin that shows the order matters)")
    func withoutOrder() throws {
        let (_, r) = try replay(Self.ordered)
        var script = try #require(r.script)
        for t in script.tasks.indices {
            for k in script.tasks[t].indices { script.tasks[t][k].after = [] }
        }
        // Thread 11 (no longer waiting) maps over the range before 10 unmaps it, or faults
        // after: some pass fails. Many short passes make it near certain.
        var refused: UInt64 = 0
        for _ in 0..<20 where refused == 0 {
            refused += r.timed(script, design: .global, seconds: 0.02, workload: "replay:unordered").replayErrors ?? 0
        }
        #expect(refused > 0)
    }
}

@Suite("Range owners: the timed replay's cross-thread order")
struct RangeOwnersOrderTests {
    @Test("A step waits for the last change of what it reads, a change waits for the reads since")
    func order() throws {
        let (_, r) = try replay(TimedReplayTests.ordered)
        let script = try #require(r.script)
        let main = script.tasks[0], worker = script.tasks[1]
        // main: mmap, spawn, munmap, exit; the munmap (step 3) waits for the worker's second fault.
        let munmap = try #require(main.firstIndex { if case .call(.munmap) = $0.operation { true } else { false } })
        #expect(main[munmap].after.map(\.task) == [1])
        #expect(main[munmap].after.first?.count == 2)
        // worker: fault, fault, mmap (waits for the munmap: 3 steps of main), fault.
        let mmap = try #require(worker.firstIndex { if case .call(.mmap) = $0.operation { true } else { false } })
        #expect(worker[mmap].after.map(\.task) == [0] && worker[mmap].after.first?.count == munmap + 1)
        // The worker's first fault follows the main thread's mmap (step 1).
        #expect(worker[0].after.first.map { $0.task == 0 && $0.count == 1 } == true)
    }
}
