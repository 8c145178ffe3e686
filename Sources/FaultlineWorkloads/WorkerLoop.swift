import CFaultline
import FaultlineMM
import FaultlineSync
import Synchronization

/// One worker's loop for each workload. `op` counts an operation and, for one in
/// `sampleEvery` while the window is open, times it.
final class WorkerLoop<T: MemoryTarget> {
    let target: T
    let state: RunState
    let index: Int
    let threads: Int
    let o: WorkloadOptions
    let hist: UnsafeMutablePointer<LatencyHistogram>
    let mask: UInt64
    var n: UInt64 = 0
    var rng: SplitMix64
    let page = Linux.pageSize

    init(target: T, state: RunState, index: Int, threads: Int, options: WorkloadOptions) {
        self.target = target
        self.state = state
        self.index = index
        self.threads = threads
        o = options
        hist = state.hists + index
        mask = max(options.sampleEvery, 1) - 1
        rng = SplitMix64(seed: options.seed &* 0x9E37_79B9 &+ UInt64(index))
    }

    var stopped: Bool { state.stop.load(ordering: .relaxed) }

    @inline(__always)
    func op(_ body: () -> Void) {
        n &+= 1
        if n & mask == 0 && state.measuring.load(ordering: .relaxed) {
            let t0 = fl_now_ns()
            body()
            hist.pointee.record(fl_now_ns() &- t0)
        } else {
            body()
        }
        state.ops.slots.add(0)
    }

    func run() {
        switch o.workload {
        case .pageFault1: pageFault { target.mapAnon($0, at: nil) }
        case .thp:
            pageFault { len in
                guard let a = target.mapAnon(len, at: nil) else { return nil }
                _ = target.perform(.madvise(addr: a, length: len, advice: Advice.hugePage.rawValue))
                return a
            }
        case .pageFault2: pageFault { target.mapFile(index, $0, shared: false, readOnly: false) }
        case .pageFault3: pageFault { target.mapFile(index, $0, shared: true, readOnly: false) }
        case .mmap1: mapUnmap { target.mapAnon($0, at: nil) }
        case .mmap2: mapUnmap { target.mapFile(index, $0, shared: true, readOnly: false) }
        case .seedMix:
            switch index % 3 {
            case 0: faultAndDrop(o.bytes)
            case 1: mapNew()
            default: protectAndRemap()
            }
        case .mapsReader, .mapsBaseline:
            if index % 2 == 0 { faultAndDrop(o.bytes / 4) } else { mapUnmap(1 << 20) { target.mapAnon($0, at: nil) } }
        case .appLaunch:
            if index % 4 == 3 { mapUnmap(1 << 20) { target.mapAnon($0, at: nil) } } else { launch() }
        case .mallocChurn: mallocChurn()
        case .metis: metis()
        case .launchUnderPressure:
            if index % 4 == 1 { mapUnmap(1 << 20) { target.mapAnon($0, at: nil) } } else { launchUnderPressure() }
        case .reclaim:
            if index % 4 == 1 { mapUnmap(1 << 20) { target.mapAnon($0, at: nil) } } else { workingSet() }
        case .swapChurn:
            // The faulters page their 1 MiB out instead of dropping it: each write a swap-in.
            if index % 4 == 1 { mapUnmap(1 << 20) { target.mapAnon($0, at: nil) } } else { faultAndDrop(1 << 20, pageOut: true) }
        }
    }

    /// page_fault1/2/3: map `--size`, write one byte per page (an op each), unmap.
    func pageFault(_ map: (UInt64) -> UInt64?) {
        let len = o.bytes
        let pages = o.pages
        while !stopped {
            guard let a = map(len) else { return }
            var p = a
            for _ in 0..<pages {
                op { target.write(p) }
                p &+= page
            }
            target.unmap(a, len)
        }
    }

    /// mmap1/2: map and unmap, untouched (an op per pair).
    func mapUnmap(_ len: UInt64? = nil, _ map: (UInt64) -> UInt64?) {
        let l = len ?? o.bytes
        while !stopped {
            op {
                if let a = map(l) { target.unmap(a, l) }
            }
        }
    }

    /// The faulter: its own region, written page by page (an op each), dropped with
    /// MADV_DONTNEED (or paged out with MADV_PAGEOUT: swap-churn; not an op), again.
    func faultAndDrop(_ len: UInt64, pageOut: Bool = false) {
        let l = max(Linux.pageAlign(len), 16 * page)
        guard let a = target.mapAnon(l, at: nil) else { return }
        let pages = Int(l / page)
        while !stopped {
            var p = a
            for _ in 0..<pages {
                op { target.write(p) }
                p &+= page
            }
            if pageOut { target.pageout(a, l) } else { target.dontneed(a, l) }
        }
        target.unmap(a, l)
    }

    /// reclaim's faulter: its share of a working set 1.5× the memory limit, written one
    /// random page at a time (an op each): a third of the set cannot be resident, so about a
    /// third of the writes find their page swapped out and fault it back. (Written in order,
    /// the thread whose pages happened to stay resident would keep them, referenced on every
    /// pass, and run on hits while the others thrash.)
    func workingSet() {
        let faulters = max((0..<threads).filter { $0 % 4 != 1 }.count, 1)
        let pages = UInt64(max(o.memoryPages * 3 / 2 / faulters, 16))
        let l = pages * page
        guard let a = target.mapAnon(l, at: nil) else { return }
        while !stopped {
            let p = a &+ (rng.next() % pages) &* page
            op { target.write(p) }
        }
        target.unmap(a, l)
    }

    /// The mapper: maps new 1 MiB regions, keeping the last 8 (an op per mmap or munmap).
    func mapNew() {
        let l: UInt64 = 1 << 20
        var ring: [UInt64] = []
        while !stopped {
            op { if let a = target.mapAnon(l, at: nil) { ring.append(a) } }
            if ring.count > 8 {
                let old = ring.removeFirst()
                op { target.unmap(old, l) }
            }
        }
        for a in ring { target.unmap(a, l) }
    }

    /// The unmapper: its own 8 MiB block; write-protects and re-enables 1 MiB pieces, and
    /// every fourth time unmaps one and maps it again in place (an op per call).
    func protectAndRemap() {
        let piece: UInt64 = 1 << 20
        let count = 8
        guard let base = target.mapAnon(UInt64(count) * piece, at: nil) else { return }
        var i = 0
        while !stopped {
            let a = base + UInt64(i % count) * piece
            if i % 4 == 3 {
                op { target.unmap(a, piece) }
                op { _ = target.mapAnon(piece, at: a) }
            } else {
                op { target.protect(a, piece, writable: false) }
                op { target.protect(a, piece, writable: true) }
            }
            i += 1
        }
        target.unmap(base, UInt64(count) * piece)
    }

    /// app-launch: map this thread's library file, fault in every page (reads with I/O on a
    /// miss), unmap, drop its cache.
    func launch() {
        let len = max(o.bytes / 8, 16 * page)
        let pages = Int(len / page)
        while !stopped {
            guard let a = target.mapFile(index, len, shared: false, readOnly: true) else { return }
            var p = a
            for _ in 0..<pages {
                op { target.read(p) }
                p &+= page
                if stopped { break }
            }
            target.unmap(a, len)
            target.dropCache(index)
        }
    }

    /// launch-under-pressure's launcher: map the library, read its share of 1.25× the memory
    /// limit and write its share of a quarter of the limit in heap (an op per page), unmap
    /// both: every pass needs 1.5× the memory, and what it finds cached or resident is what
    /// reclaim left.
    func launchUnderPressure() {
        let launchers = UInt64(max((0..<threads).filter { $0 % 4 != 1 }.count, 1))
        let lib = max(UInt64(o.memoryPages) * 5 / 4 / launchers, 16) * page
        let heap = max(UInt64(o.memoryPages) / 4 / launchers, 16) * page
        while !stopped {
            guard let a = target.mapFile(index, lib, shared: false, readOnly: true) else { return }
            var p = a
            while p < a &+ lib && !stopped {
                op { target.read(p) }
                p &+= page
            }
            if let h = target.mapAnon(heap, at: nil) {
                var q = h
                while q < h &+ heap && !stopped {
                    op { target.write(q) }
                    q &+= page
                }
                target.unmap(h, heap)
            }
            target.unmap(a, lib)
        }
    }

    /// malloc-churn: a 4 MiB arena chunk; random page writes, 64 KiB purges, replacement.
    func mallocChurn() {
        let chunk: UInt64 = 4 << 20
        let pages = Int(chunk / page)
        guard var a = target.mapAnon(chunk, at: nil) else { return }
        var k = 0
        while !stopped {
            let p = a + UInt64(rng.below(pages)) * page
            op { target.write(p) }
            k += 1
            if k % 16 == 0 {
                let run = a + UInt64(rng.below(pages - 16)) * page
                op { target.dontneed(run, 16 * page) }
            }
            if k % 256 == 0 {
                target.unmap(a, chunk)
                guard let b = target.mapAnon(chunk, at: nil) else { return }
                a = b
            }
        }
        target.unmap(a, chunk)
    }

    /// metis: a 1–16 MiB buffer, every page written (an op each) then read, unmapped.
    func metis() {
        while !stopped {
            let len = UInt64(1 + rng.below(16)) << 20
            guard let a = target.mapAnon(len, at: nil) else { return }
            let pages = Int(len / page)
            var p = a
            for _ in 0..<pages {
                op { target.write(p) }
                p &+= page
            }
            p = a
            for _ in 0..<pages {
                target.read(p)
                p &+= page
            }
            target.unmap(a, len)
        }
    }

    /// The maps reader (an extra thread): whole reads of maps, counted apart from the
    /// workers' operations.
    func mapsReaderLoop() {
        while !stopped {
            _ = target.readMaps()
            state.ops.slots.add(1)
        }
    }
}
