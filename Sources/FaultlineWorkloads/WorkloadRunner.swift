import CFaultline
import FaultlineMM
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One measured cell: a design (or `host`) × a workload × a thread count × a repetition.
public struct CellResult: Sendable, Codable {
    public var design: String
    public var workload: String
    public var threads: Int
    public var rep: Int
    /// Seconds measured (after the warm-up).
    public var seconds: Double
    /// Operations in the measured window (`Workload.unit`), all workers together.
    public var ops: UInt64
    public var opsPerSecond: Double
    /// Latency of sampled operations, merged over the workers.
    public var latencyNs: LatencySummary
    /// (percentile, ns) points of the latency distribution.
    public var latencyCurve: [[Double]]
    /// The design's counters over the measured window (nil on the host).
    public var counters: DesignCounters?
    /// maps-reader: full reads of maps the reader thread completed in the window.
    public var mapsReads: UInt64?
    /// Host: page faults the kernel took in the window (`ru_minflt` + `ru_majflt`), to set
    /// against the operations (a shared file write fault may map a whole large folio).
    public var hostFaults: UInt64?
    /// The merged histogram (kept in memory to merge repetitions; not serialised).
    public var histogram = LatencyHistogram()
    /// Workloads whose workers each do one kind of operation (`Workload.role`): the latency of
    /// the fault workers' operations and of the call workers' apart, and their histograms.
    public var faultLatencyNs: LatencySummary? = nil
    public var callLatencyNs: LatencySummary? = nil
    public var faultHistogram: LatencyHistogram? = nil
    public var callHistogram: LatencyHistogram? = nil
    /// Timed trace replay: calls the model refused (threads replay without order between them).
    public var replayErrors: UInt64? = nil
    /// reclaim: pages reclaim freed over the whole cell (warm-up included), and how many of
    /// them direct reclaim freed (the rest kswapd).
    public var reclaimedPages: UInt64? = nil
    public var directReclaimedPages: UInt64? = nil
    /// Seconds the cell ran in all (warm-up and measured window), for `reclaimedPages`.
    public var cellSeconds: Double? = nil
    /// Timed trace replay: measured passes over the trace.
    public var replayPasses: Int? = nil
    /// Timed replay of a recorded trace: the recorded faults among `ops`, and the rates of
    /// faults and of calls apart (`opsPerSecond` is both together).
    public var replayFaults: UInt64? = nil
    public var faultsPerSecond: Double? = nil
    public var callsPerSecond: Double? = nil
    /// Model: the mappings of this process the cell's address space started with
    /// (`ProcessLayout`; 0 under `--layout empty`).
    public var layoutMappings: Int? = nil
    /// Model: what a fault or call paid to enter the kernel (`KernelEntry.effective`: none,
    /// syscall, exception — `exception` asked for where it cannot run records `syscall`).
    public var kernelEntry: String? = nil
    /// Model: the memory cgroup its pages were charged to (`MemcgMode`), or why none.
    public var memcg: String? = nil
    /// The CPU time the cell's threads used in the measured window over the window's length
    /// times the CPUs they could use (their number, at most this machine's CPUs): 1 when they
    /// kept those CPUs busy throughout, less when they waited for a CPU or blocked.
    public var workerCPUShare: Double? = nil
    /// CPU seconds the rest of this process used during the measured window.
    public var otherCPUSeconds: Double? = nil
    /// ns for one cache line to go from CPU 0 to CPU 1 and back (`fl_cpu_round_trip_ns`), the
    /// larger of before and after the cell, nil on one CPU: what every shared line two
    /// workers take turns at costs. On a virtual machine it moves with where the hypervisor
    /// puts the virtual CPUs (here 60–90 ns, or about 350 ns for minutes at a time).
    public var cpuRoundTripNs: Double? = nil

    public init(design: String, workload: String, threads: Int, rep: Int, seconds: Double, ops: UInt64,
                opsPerSecond: Double, latencyNs: LatencySummary, latencyCurve: [[Double]], counters: DesignCounters?,
                mapsReads: UInt64?) {
        self.design = design
        self.workload = workload
        self.threads = threads
        self.rep = rep
        self.seconds = seconds
        self.ops = ops
        self.opsPerSecond = opsPerSecond
        self.latencyNs = latencyNs
        self.latencyCurve = latencyCurve
        self.counters = counters
        self.mapsReads = mapsReads
    }

    enum CodingKeys: String, CodingKey {
        case design, workload, threads, rep, seconds, ops, opsPerSecond, latencyNs, latencyCurve, counters, mapsReads, hostFaults
        case replayErrors, replayPasses, replayFaults, faultsPerSecond, callsPerSecond
        case faultLatencyNs, callLatencyNs, layoutMappings, kernelEntry, memcg, workerCPUShare, otherCPUSeconds
        case cpuRoundTripNs
    }
}

/// State shared by the workers of one cell.
final class RunState: @unchecked Sendable {
    let measuring = Atomic<Bool>(false)
    let stop = Atomic<Bool>(false)
    let started = Atomic<Int>(0)
    /// Set once every thread has started and the cell's `ready` step has run.
    let go = Atomic<Bool>(false)
    let ops = PerThreadCounters(width: 2)
    let hists: UnsafeMutablePointer<LatencyHistogram>
    let count: Int

    init(workers: Int) {
        count = workers
        hists = .allocate(capacity: workers)
        hists.initialize(repeating: LatencyHistogram(), count: workers)
    }

    deinit {
        hists.deinitialize(count: count)
        hists.deallocate()
    }
}

/// Runs cells: the model under a design, or the host kernel.
public enum WorkloadRunner {
    /// Frames a model run of `o` needs at `threads` threads: the workload's regions and page
    /// cache, times four for frames that wait for a grace period before reuse.
    public static func framesNeeded(_ o: WorkloadOptions, workloads: [Workload], threads: Int) -> Int {
        let m = workloads.map(\.sizeMultiple).max() ?? 1
        return Int(Double(o.pages) * m * 4) * (threads + 1) + 16_384
    }

    /// A frame pool for `framesNeeded`, backed up front so that faults measure the model, not
    /// the host's first touch. Reused by every cell of a run (each cell ends with a barrier).
    public static func makeSystem(frames: Int) -> MMSystem { MMSystem(frames: frames, prefault: true) }

    /// The system for runs of `o` over `workloads` at up to `threads` threads: `framesNeeded`
    /// frames, and a swap device where a workload swaps (every faulter's 1 MiB region fits
    /// on it; each page read takes `o.ioLatencyNs`).
    public static func makeSystem(_ o: WorkloadOptions, workloads: [Workload], threads: Int) -> MMSystem {
        let system = makeSystem(frames: framesNeeded(o, workloads: workloads, threads: threads))
        if let m = o.memcg.make().memcg { system.attach(memcg: m) }
        if workloads.contains(.swapChurn) { system.swapOn(pages: 512 * (threads + 1), ioLatencyNs: o.ioLatencyNs) }
        // thp runs with khugepaged behind it, at Linux's defaults, as on the host.
        if workloads.contains(.thp) { system.enableKhugepaged() }
        return system
    }

    /// reclaim's own system: `memoryPages` frames with reclaim on, and a swap device twice that
    /// size whose reads take `ioLatencyNs`.
    public static func makeReclaimSystem(_ o: WorkloadOptions) -> MMSystem {
        let system = MMSystem(frames: o.memoryPages, prefault: true)
        if let m = o.memcg.make().memcg { system.attach(memcg: m) }
        system.swapOn(pages: 2 * o.memoryPages, ioLatencyNs: o.ioLatencyNs)
        system.enableReclaim()
        return system
    }

    /// One cell on the model.
    public static func runModel(design: Design, options o: WorkloadOptions, system shared: MMSystem, rep: Int = 0) -> CellResult {
        // reclaim runs under its memory limit, on a system of its own per cell.
        let system = o.workload.underMemoryLimit ? makeReclaimSystem(o) : shared
        // The cell's address space and files are released when this returns, before the
        // barrier that hands their frames back for the next cell.
        func cell() -> CellResult {
            var cfg = AddressSpace.Configuration()
            if design.allowsTree(o.tree) { cfg.tree = o.tree }
            cfg.kernelEntry = o.kernelEntry
            // This process's mappings, as the host cells find them: where the search starts
            // now, the mappings themselves once the cell's threads have started (below).
            let early = o.layout == .host ? ProcessLayout.current() : nil
            early?.configure(&cfg)
            let mm = AddressSpace(system: system, design: design, configuration: cfg)
            var mirrored = 0
            let files = (0..<o.threads).map { t in
                // launch-under-pressure's libraries are sized by the memory limit.
                let size = o.workload == .launchUnderPressure ? max(o.bytes, UInt64(o.memoryPages) * 2 * Linux.pageSize) : o.bytes
                let f = system.makeFile(path: "/workload/t\(t)", size: size,
                                        ioLatencyNs: o.workload == .appLaunch || o.workload == .launchUnderPressure ? o.ioLatencyNs : 0)
                // The host's files live in /tmp: the model's read ahead as its device does.
                f.readaheadPages = Linux.hostReadaheadPages(for: "/tmp")
                return f
            }
            let target = ModelTarget(mm: mm, files: files, reader: o.mapsReader ?? design.naturalMapsReader,
                                     slowReaderNs: o.slowReaderNs)
            warmFiles(target, o)
            // Mirrored once the cell's threads exist: their stacks and their malloc arenas
            // (glibc reserves 64 MiB, aligned, per arena) are in this process's layout when
            // the host cell's threads make their first mmap, and they keep the host's regions
            // apart — without them the seed-mix mapper's regions landed against the
            // faulter's and merged with it.
            let ready = { if o.layout == .host { mirrored = ProcessLayout.current()?.mirror(into: mm) ?? 0 } }
            var r = run(target, o, name: design.rawValue, rep: rep, ready: ready) { mm.designCounters }
            if r.counters == nil { r.counters = DesignCounters() }
            r.layoutMappings = mirrored
            r.kernelEntry = o.kernelEntry.effective.rawValue
            r.memcg = system.memcg.map { "\($0.path) (\($0.hierarchy.count) levels)" } ?? "none"
            return r
        }
        var result = cell()
        system.rcu.barrier()
        if o.workload.underMemoryLimit {
            let kswapd = UInt64(system.vmscan[.pgstealKswapd]), direct = UInt64(system.vmscan[.pgstealDirect])
            result.reclaimedPages = kswapd + direct
            result.directReclaimedPages = direct
            result.cellSeconds = o.warmup + o.seconds
        }
        return result
    }

    /// One cell on the host kernel (will-it-scale workloads and seed-mix).
    public static func runHost(options o: WorkloadOptions, rep: Int = 0) -> CellResult {
        precondition(o.workload.runsOnHost, "\(o.workload.rawValue) does not run on the host")
        var fds: [Int32] = []
        for _ in 0..<o.threads {
            var template = Array("/tmp/faultline-workload-XXXXXX".utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            precondition(fd >= 0, "cannot create a temporary file")
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            precondition(ftruncate(fd, off_t(o.bytes)) == 0, "cannot size the temporary file")
            fds.append(fd)
        }
        defer { for fd in fds { close(fd) } }
        let target = HostTarget(fds: fds, slowReaderNs: o.slowReaderNs)
        warmFiles(target, o)
        var r = run(target, o, name: "host", rep: rep, faults: { Self.processFaults() }) { nil }
        if r.hostFaults == nil { r.hostFaults = 0 }
        return r
    }

    /// Under `FileCacheMode.warm`, one pass of page_fault2/3 over each thread's file before
    /// the cell (map, write every page, unmap), so that the cell starts with the page cache a
    /// long run has after its first pass — its folios as big as the fault path's readahead
    /// made them, on the host and in the model alike (a read() would make other folios).
    /// Other workloads' files are not touched (app-launch drops its cache on purpose).
    static func warmFiles<T: MemoryTarget>(_ target: T, _ o: WorkloadOptions) {
        guard o.fileCache == .warm, o.workload == .pageFault2 || o.workload == .pageFault3 else { return }
        for i in 0..<o.threads {
            guard let a = target.mapFile(i, o.bytes, shared: o.workload == .pageFault3, readOnly: false) else { continue }
            var p = a
            for _ in 0..<o.pages {
                target.write(p)
                p &+= Linux.pageSize
            }
            target.unmap(a, o.bytes)
        }
    }

    /// ns per round trip of a cache line between CPUs 0 and 1, where the first two workers are
    /// pinned (20,000 hand-offs: 1–7 ms), or nil with one CPU or if it cannot be measured.
    static func cpuRoundTrip(cpus: Int) -> Double? {
        guard cpus >= 2 else { return nil }
        let ns = fl_cpu_round_trip_ns(0, 1, 20_000)
        return ns > 0 ? ns : nil
    }

    /// The harness: one pinned thread per worker (plus the reader of maps-reader), warm-up,
    /// then the measured window; operations counted per thread, latencies sampled per thread
    /// and merged.
    ///
    /// Every thread starts (its stack mapped, its first allocations made) before `ready` runs
    /// and before any of them maps anything, on the host as in the model.
    static func run<T: MemoryTarget & SendableMetatype>(_ target: T, _ o: WorkloadOptions, name: String, rep: Int,
                                     ready: () -> Void = {},
                                     faults: () -> UInt64? = { nil },
                                     counters: () -> DesignCounters?) -> CellResult {
        let n = o.threads
        let withReader = o.workload == .mapsReader
        let parties = n + (withReader ? 1 : 0)
        let state = RunState(workers: parties)
        let box = Shared(target)
        let cpus = Threads.availableCPUs
        let roundTripBefore = cpuRoundTrip(cpus: cpus)
        let threads = (0..<parties).map { i in
            Threads.spawn {
                if o.pin && i < n && cpus >= n { _ = fl_pin_to_cpu(Int32(i % cpus)) }
                let w = WorkerLoop(target: box.value, state: state, index: i, threads: n, options: o)
                state.started.wrappingAdd(1, ordering: .acquiringAndReleasing)
                while !state.go.load(ordering: .acquiring) { fl_sleep_ns(50_000) }
                if i == n { w.mapsReaderLoop() } else { w.run() }
            }
        }
        while state.started.load(ordering: .acquiring) < parties { fl_sleep_ns(100_000) }
        ready()
        // The host's block is this process's: left mapped, every later cell's layout (the
        // host's and the mirrored model's) carried 500 more VMAs per maps-reader cell.
        let many = withReader || o.workload == .mapsBaseline ? populateManyVMAs(target) : nil
        state.go.store(true, ordering: .releasing)
        fl_sleep_ns(UInt64(o.warmup * 1e9))
        let c0 = counters()
        let f0 = faults()
        let ops0 = state.ops.sum(0)
        let reads0 = state.ops.sum(1)
        func workersCPU() -> UInt64 { threads.reduce(0) { $0 &+ (Threads.cpuNanoseconds($1) ?? 0) } }
        let cpu0 = (workers: workersCPU(), process: Threads.processCPUNanoseconds)
        let t0 = fl_now_ns()
        state.measuring.store(true, ordering: .releasing)
        fl_sleep_ns(UInt64(o.seconds * 1e9))
        state.measuring.store(false, ordering: .releasing)
        let t1 = fl_now_ns()
        let cpu1 = (workers: workersCPU(), process: Threads.processCPUNanoseconds)
        let ops1 = state.ops.sum(0)
        let reads1 = state.ops.sum(1)
        let c1 = counters()
        let f1 = faults()
        state.stop.store(true, ordering: .releasing)
        for t in threads { Threads.join(t) }
        let roundTripAfter = cpuRoundTrip(cpus: cpus)
        if let many { target.unmap(many.start, many.length) }
        var h = LatencyHistogram()
        for i in 0..<n { h.merge(state.hists[i]) }
        var byRole: [WorkerRole: LatencyHistogram] = [:]
        for i in 0..<n {
            guard let role = o.workload.role(ofWorker: i) else { continue }
            byRole[role, default: LatencyHistogram()].merge(state.hists[i])
        }
        let secs = Double(t1 - t0) / 1e9
        let ops = ops1 &- ops0
        var r = CellResult(design: name, workload: o.workload.rawValue, threads: n, rep: rep, seconds: secs, ops: ops,
                           opsPerSecond: Double(ops) / secs, latencyNs: h.summary, latencyCurve: h.curve,
                           counters: nil, mapsReads: withReader ? reads1 &- reads0 : nil)
        r.histogram = h
        // Whether the workers had their CPUs: the share of the window they ran, and the CPU
        // time the rest of this process took meanwhile (the main thread sleeps; what is left
        // is background work, such as the model's RCU reclaimer finishing an earlier cell).
        let workerNs = Double(cpu1.workers &- cpu0.workers)
        r.workerCPUShare = workerNs / (Double(t1 - t0) * Double(max(min(parties, cpus), 1)))
        r.otherCPUSeconds = max(0, Double(cpu1.process &- cpu0.process) - workerNs) / 1e9
        if let b = roundTripBefore, let a = roundTripAfter { r.cpuRoundTripNs = max(a, b) }
        if let f = byRole[.faults], let c = byRole[.calls] {
            r.faultHistogram = f
            r.callHistogram = c
            r.faultLatencyNs = f.summary
            r.callLatencyNs = c.summary
        }
        if let c0, let c1 { r.counters = c1 - c0 }
        if let f0, let f1 { r.hostFaults = f1 &- f0 }
        return r
    }

    /// Page faults of this process so far.
    static func processFaults() -> UInt64 {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return UInt64(u.ru_minflt) &+ UInt64(u.ru_majflt)
    }

    /// maps-reader: about 500 VMAs (a block of pages with alternating protection), so that a
    /// read of maps takes a while. Returns the block, for the cell to unmap when it ends.
    static func populateManyVMAs<T: MemoryTarget>(_ target: T) -> (start: UInt64, length: UInt64)? {
        let pages: UInt64 = 500
        guard let a = target.mapAnon(pages * Linux.pageSize, at: nil) else { return nil }
        var p: UInt64 = 0
        while p < pages {
            target.protect(a + p * Linux.pageSize, Linux.pageSize, writable: false)
            p += 2
        }
        return (a, pages * Linux.pageSize)
    }
}
