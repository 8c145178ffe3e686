import FaultlineMM

/// The workloads, named as in will-it-scale where they come from there.
public enum Workload: String, CaseIterable, Sendable, Codable {
    case pageFault1 = "page_fault1"
    case pageFault2 = "page_fault2"
    case pageFault3 = "page_fault3"
    case mmap1
    case mmap2
    case seedMix = "seed-mix"
    case mapsReader = "maps-reader"
    case mapsBaseline = "maps-baseline"
    case appLaunch = "app-launch"
    case mallocChurn = "malloc-churn"
    case metis
    case swapChurn = "swap-churn"
    case reclaim
    case launchUnderPressure = "launch-under-pressure"
    case thp

    /// What `faultline compare` runs unless told otherwise.
    public static let defaults: [Workload] = [.pageFault1, .pageFault2, .pageFault3, .mmap1, .seedMix, .mapsReader]

    public var summary: String {
        switch self {
        case .pageFault1: "loop: mmap a private anonymous region (--size per thread), write one byte per page, munmap"
        case .pageFault2: "page_fault1 on a private mapping of a file of that size (copy-on-write faults)"
        case .pageFault3: "page_fault1 on a shared mapping of that file"
        case .mmap1: "loop: mmap + munmap a private anonymous region, untouched"
        case .mmap2: "loop: mmap + munmap a shared mapping of a file, untouched"
        case .seedMix: "threads round-robin: one faults its own region and re-faults after MADV_DONTNEED, one maps new memory, one mprotects/unmaps/remaps its own block — never overlapping"
        case .mapsReader: "workers fault (even) and mmap/munmap (odd) beside an extra thread reading /proc/pid/maps of ~500 VMAs continuously (--slow-reader pauses inside the read: the model every 32 lines, holding what its reader holds; the host between read() calls of 4 KiB, holding nothing)"
        case .mapsBaseline: "maps-reader's workers and VMAs with no reader: the baseline its latencies are read against"
        case .appLaunch: "Android-style launch: 3 of 4 threads map a library file and fault its pages in (simulated I/O on a page-cache miss, cache dropped after each pass), 1 of 4 maps and unmaps memory"
        case .mallocChurn: "jemalloc-style arenas: write a random page of a 4 MiB chunk, purge 64 KiB with MADV_DONTNEED every 16 writes, replace the chunk every 256"
        case .metis: "map-reduce workers: map a 1–16 MiB buffer, write every page, read every page, unmap"
        case .reclaim: "3 of 4 threads write random pages of their share of a working set 1.5× the memory limit (--memory, default 32 MiB): kswapd and direct reclaim swap the cold pages out, faults read them back (--io-latency each); 1 of 4 maps and unmaps 1 MiB; model only (the host here has no swap device)"
        case .launchUnderPressure: "app-launch under a memory limit (--memory, default 32 MiB; kswapd, direct reclaim and a swap device twice the limit): 3 of 4 threads map their library file, read their share of 1.25× the limit from it (a page-cache miss is a read of --io-latency) and write their share of a quarter of the limit in fresh heap, each pass; reclaim, not a cache drop, takes the pages back; 1 of 4 maps and unmaps 1 MiB; model only"
        case .thp: "page_fault1 on memory given MADV_HUGEPAGE: map --size (placed 2 MiB-aligned), advise, write one byte per page, unmap — a fault maps a whole THP (zeroing 2 MiB) where a block of 512 frames is free, so one write in 512 faults; the host too (its transparent_hugepage is madvise)"
        case .swapChurn: "3 of 4 threads write their own 1 MiB region, page it out to the swap device with MADV_PAGEOUT and write it again (swap-in faults, each a read of --io-latency with the lock dropped where the design can), 1 of 4 maps and unmaps 1 MiB; model only (the host here has no swap device)"
        }
    }

    /// What one operation is.
    public var unit: String {
        switch self {
        case .pageFault1, .pageFault2, .pageFault3, .metis: "page faults"
        case .thp: "pages written"
        case .mmap1, .mmap2: "mmap+munmap pairs"
        case .seedMix, .mapsReader, .mapsBaseline, .appLaunch, .mallocChurn, .swapChurn, .reclaim, .launchUnderPressure: "operations (faults and calls)"
        }
    }

    /// Whether the host kernel runs it too (the `host` column).
    public var runsOnHost: Bool {
        switch self {
        case .pageFault1, .pageFault2, .pageFault3, .mmap1, .mmap2, .seedMix, .mapsReader, .mapsBaseline, .thp: true
        default: false
        }
    }

    /// Whether the workload runs on a system of its own under `memoryPages` with reclaim on.
    public var underMemoryLimit: Bool { self == .reclaim || self == .launchUnderPressure }

    /// Per-thread frames the model needs, in units of `--size` (regions in flight, page cache,
    /// copies), before the allowance for frames waiting for a grace period.
    var sizeMultiple: Double {
        switch self {
        case .pageFault1, .seedMix, .mapsReader, .mapsBaseline: 1
        // A region in flight and its frames waiting for a grace period, in whole blocks.
        case .thp: 2
        case .swapChurn, .reclaim, .launchUnderPressure: 0.05
        case .pageFault2: 2
        case .pageFault3, .appLaunch: 1
        case .mmap1, .mmap2: 0.05
        case .mallocChurn: 0.1
        case .metis: 0.25
        }
    }
}

/// What a worker's timed operations are, where a workload gives its workers one kind each.
public enum WorkerRole: Sendable {
    case faults
    case calls
}

extension Workload {
    /// The kind of operation worker `i` times, or nil where its operations are of both kinds
    /// or the workload has one kind only (then the overall latency says it all).
    public func role(ofWorker i: Int) -> WorkerRole? {
        switch self {
        case .seedMix: i % 3 == 0 ? .faults : .calls
        case .mapsReader, .mapsBaseline: i % 2 == 0 ? .faults : .calls
        case .swapChurn, .reclaim, .launchUnderPressure: i % 4 == 1 ? .calls : .faults
        default: nil
        }
    }
}

/// What a model cell's address space starts with.
public enum LayoutMode: String, Sendable, CaseIterable {
    /// The mappings of the process running the cells, mirrored (placement and merging as the host's).
    case host
    /// Nothing: every mapping the workload makes is alone in the address space.
    case empty
}

/// Whether a cell's per-thread files are in the page cache when it starts.
public enum FileCacheMode: String, Sendable, CaseIterable {
    /// One pass of the workload over them before the cell (as a long will-it-scale run has
    /// them after its first pass):
    /// on the 2-vCPU box the first pass over a fresh, sparse 128 MiB ext4 file takes 356 ms
    /// (10.9 µs a fault, populating the cache) and each later pass 63–70 ms, so a 0.5 s cell
    /// that starts cold measures mostly its first pass.
    case warm
    /// Not read: the first pass populates the cache inside the cell.
    case cold
}

/// Which memory cgroup a model cell's pages are charged to (`MemCgroup`).
public enum MemcgMode: String, Sendable, CaseIterable {
    /// A chain as deep as this process's memory cgroup on the host (`/proc/self/cgroup`), no
    /// level limited: a charge's stock miss and a batch of frees write every level's counter,
    /// as the host's do. Nothing is charged where this process sits in the root cgroup or
    /// memory has no controller (Linux charges no page to the root).
    case host
    /// Nothing is charged (`cgroup_disable=memory`).
    case none

    /// The memcg a model system runs in under this mode, with what to say about it.
    public func make() -> (memcg: MemCgroup?, description: String) {
        guard self == .host else { return (nil, "none (--memcg none)") }
        guard let p = MemCgroup.hostPlacement() else { return (nil, "none (this process has no memory cgroup)") }
        guard p.depth > 1 else { return (nil, "none (this process is in the root memory cgroup, which Linux does not charge)") }
        return (MemCgroup.chain(p.path), p.description)
    }
}

/// One cell's settings.
public struct WorkloadOptions: Sendable {
    public var workload: Workload = .pageFault1
    public var threads = 1
    public var seconds = 1.0
    public var warmup = 0.2
    /// Bytes per thread (will-it-scale: 128 MiB).
    public var size: UInt64 = 128 << 20
    /// maps-reader: ns the reader pauses every 32 lines inside the read (0: none).
    public var slowReaderNs: UInt64 = 0
    /// maps-reader: how the model reads maps (nil: the design's natural form).
    public var mapsReader: MapsReader? = nil
    /// The VMA index (`rbtree` only under `global`).
    public var tree: VMATreeKind = .maple
    /// app-launch: simulated I/O latency of a page-cache miss.
    public var ioLatencyNs: UInt64 = 50_000
    /// reclaim, launch-under-pressure: the memory limit in 4 KiB frames (the workload's own system, reclaim on).
    public var memoryPages = 32 * 256
    /// One operation in `sampleEvery` (a power of two) is timed for the latency histogram.
    public var sampleEvery: UInt64 = 8
    public var pin = true
    public var seed: UInt64 = 1
    /// What the model's address space holds when a cell starts: this process's mappings
    /// (`ProcessLayout`), as the host cells find them, or nothing.
    public var layout: LayoutMode = .host
    /// What a model fault or call costs to enter the kernel (`KernelEntry`): the host's real
    /// crossing by default, so that the model's per-CPU work weighs against what the threads
    /// share as the host's does.
    public var kernelEntry: KernelEntry = .exception
    /// Which memcg the model's pages are charged to: one like this process's by default.
    public var memcg: MemcgMode = .host
    /// Whether page_fault2/3's per-thread files start in the page cache (host and model alike).
    public var fileCache: FileCacheMode = .warm
    public init() {}

    /// The size rounded to whole pages, at least 16 pages.
    public var pages: Int { max(16, Int(Linux.pageAlign(size) / Linux.pageSize)) }
    public var bytes: UInt64 { UInt64(pages) * Linux.pageSize }
}

extension Design {
    /// The maps reader a design would use in practice: lock-free where it has a structure to
    /// validate against, `mmap_lock` for `global`.
    public var naturalMapsReader: MapsReader { self == .global ? .locked : .lockless }
}
