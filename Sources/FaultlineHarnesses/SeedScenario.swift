import CFaultline
import FaultlineMM
import FaultlineSync
import Synchronization

/// The seed scenario of the 2021 thread on two threads: one thread faults in its own region
/// (write one byte per page, `MADV_DONTNEED` the region, again) while the other maps and unmaps
/// memory elsewhere. The ranges never meet, so a design that serialises nothing unnecessary lets
/// the faulter run as fast as alone. Measured: the faulter's throughput beside the churner as a
/// fraction of its throughput alone, and the faulter's abort rate.
public enum SeedScenario {
    public struct Options: Sendable {
        public var designs: [Design] = Design.selectable
        /// The VMA index for the designs that allow it (`global`); the others use the maple tree.
        public var tree: VMATreeKind = .maple
        /// Seconds per trial (one solo and one contended trial per design per round).
        public var seconds: Double = 1
        public var rounds: Int = 5
        /// The faulter's region, in pages.
        public var regionPages: Int = 4096
        /// Pages the churner maps and unmaps each time.
        public var churnPages: Int = 256
        public var pin = true
        public init() {}

        func configuration(for d: Design) -> AddressSpace.Configuration {
            var c = AddressSpace.Configuration()
            if d.allowsTree(tree) { c.tree = tree }
            return c
        }
    }

    /// One trial's numbers.
    public struct Trial: Sendable, Codable {
        public var faultsPerSecond: Double
        public var churnOpsPerSecond: Double
        /// Writes that failed (out of frames: must be 0 for the numbers to mean anything).
        public var failedWrites: UInt64
        public var counters: DesignCounters
    }

    /// The churner alone on a fresh address space for `o.seconds`: its mmap+munmap pairs per
    /// second (the denominator of its own fraction).
    public static func churnAlone(_ design: Design, _ o: Options) -> Double {
        let system = MMSystem(frames: o.churnPages + 4096)
        let mm = AddressSpace(system: system, design: design, configuration: o.configuration(for: design))
        let clen = UInt64(o.churnPages) * Linux.pageSize
        let t0 = fl_now_ns()
        let end = t0 + UInt64(o.seconds * 1e9)
        var n: UInt64 = 0
        while fl_now_ns() < end {
            for _ in 0..<16 {
                if case .success(let a) = mm.mmap(0, clen, [.read, .write], [.private, .anonymous]) {
                    _ = mm.munmap(a, clen)
                    n &+= 1
                }
            }
        }
        return Double(n) / (Double(fl_now_ns() - t0) / 1e9)
    }

    /// What runs beside the faulter.
    public enum Neighbour: Sendable {
        /// Nothing.
        case none
        /// A thread that only computes: what sharing the machine costs by itself (caches,
        /// memory bandwidth, the hypervisor), the ceiling for any design.
        case cpu
        /// The churner: mmap and munmap elsewhere.
        case mm
    }

    public struct Row: Sendable, Codable {
        public var design: String
        public var solo: [Trial]
        public var besideCPU: [Trial]
        public var contended: [Trial]
        /// Contended ÷ solo faulter throughput, per round.
        public var fractions: [Double]
        /// Beside a computing thread ÷ solo, per round (the machine's ceiling).
        public var cpuFractions: [Double]
        public var medianCPUFraction: Double { median(cpuFractions) }
        /// The churner's mmap+munmap pairs per second alone, per round.
        public var churnAlone: [Double] = []
        /// The churner's rate beside the faulter ÷ alone, per round.
        public var churnFractions: [Double] = []
        public var medianChurnFraction: Double { median(churnFractions) }

        public var medianFraction: Double { median(fractions) }
        /// Aborts per fault handled in the contended trials (all rounds).
        public var abortRate: Double {
            let a = contended.reduce(0) { $0 + $1.counters.aborts }
            let f = contended.reduce(0) { $0 + $1.counters.faults }
            return f == 0 ? 0 : Double(a) / Double(f)
        }
        public var medianSolo: Double { median(solo.map(\.faultsPerSecond)) }
        public var medianContended: Double { median(contended.map(\.faultsPerSecond)) }
        public var medianChurn: Double { median(contended.map(\.churnOpsPerSecond)) }
    }

    /// Runs every design, interleaved round by round (the machine's noise hits all alike).
    /// `progress(done, total, label)` before each design's round.
    public static func run(_ o: Options, progress: (Int, Int, String) -> Void = { _, _, _ in }) -> [Row] {
        var rows = o.designs.map { Row(design: $0.rawValue, solo: [], besideCPU: [], contended: [], fractions: [], cpuFractions: []) }
        for round in 0..<o.rounds {
            for (i, d) in o.designs.enumerated() {
                progress(round * o.designs.count + i, o.rounds * o.designs.count, "round \(round + 1)/\(o.rounds): \(d.rawValue)")
                let solo = trial(d, o, beside: .none)
                let cpu = trial(d, o, beside: .cpu)
                let cont = trial(d, o, beside: .mm)
                let alone = churnAlone(d, o)
                rows[i].churnAlone.append(alone)
                rows[i].churnFractions.append(alone > 0 ? cont.churnOpsPerSecond / alone : 0)
                rows[i].solo.append(solo)
                rows[i].besideCPU.append(cpu)
                rows[i].contended.append(cont)
                rows[i].fractions.append(solo.faultsPerSecond > 0 ? cont.faultsPerSecond / solo.faultsPerSecond : 0)
                rows[i].cpuFractions.append(solo.faultsPerSecond > 0 ? cpu.faultsPerSecond / solo.faultsPerSecond : 0)
            }
        }
        return rows
    }

    static let faulterBase: UInt64 = 0x1000_0000_0000

    /// One trial on a fresh address space: the faulter alone, or beside the churner.
    public static func trial(_ design: Design, _ o: Options, beside: Neighbour) -> Trial {
        // Frames unmapped wait a grace period before reuse: room for a few passes in flight.
        let system = MMSystem(frames: 16 * o.regionPages + o.churnPages + 4096, prefault: true)
        let mm = AddressSpace(system: system, design: design, configuration: o.configuration(for: design))
        let len = UInt64(o.regionPages) * Linux.pageSize
        guard case .success = mm.mmap(faulterBase, len, [.read, .write], [.private, .anonymous, .fixed]) else {
            fatalError("seed scenario: cannot map the faulter's region")
        }
        let stop = Atomic<Bool>(false)
        let started = Atomic<Int>(0)
        let faults = Atomic<UInt64>(0)
        let failures = Atomic<UInt64>(0)
        let churnOps = Atomic<UInt64>(0)
        let parties = beside == .none ? 1 : 2
        let box = Shared(mm)
        let c0 = mm.designCounters
        let elapsedNs = Atomic<UInt64>(0)
        Threads.run(parties, pin: o.pin && Threads.availableCPUs >= parties) { t in
            let mm = box.value
            started.wrappingAdd(1, ordering: .acquiringAndReleasing)
            while started.load(ordering: .acquiring) < parties { fl_cpu_relax() }
            if t == 0 {
                let pages = o.regionPages
                let t0 = fl_now_ns()
                let end = t0 + UInt64(o.seconds * 1e9)
                var n: UInt64 = 0
                var failed: UInt64 = 0
                outer: while true {
                    var a = faulterBase
                    for _ in 0..<pages {
                        if case .failure = mm.store(a, 1) { failed &+= 1 }
                        a &+= Linux.pageSize
                    }
                    n &+= UInt64(pages)
                    _ = mm.madvise(faulterBase, len, .dontNeed)
                    if fl_now_ns() >= end { break outer }
                }
                elapsedNs.store(fl_now_ns() - t0, ordering: .relaxed)
                faults.store(n &- failed, ordering: .relaxed)
                failures.store(failed, ordering: .relaxed)
                stop.store(true, ordering: .releasing)
            } else if beside == .cpu {
                var x: UInt64 = 88_172_645_463_325_252
                var n: UInt64 = 0
                while !stop.load(ordering: .acquiring) {
                    for _ in 0..<256 { x ^= x << 13; x ^= x >> 7; x ^= x << 17 }
                    n &+= 1
                }
                fl_blackhole_u64(x)
                churnOps.store(n, ordering: .relaxed)
            } else {
                let clen = UInt64(o.churnPages) * Linux.pageSize
                var n: UInt64 = 0
                while !stop.load(ordering: .acquiring) {
                    if case .success(let a) = mm.mmap(0, clen, [.read, .write], [.private, .anonymous]) {
                        _ = mm.munmap(a, clen)
                        n &+= 1
                    }
                }
                churnOps.store(n, ordering: .relaxed)
            }
        }
        let secs = Double(elapsedNs.load(ordering: .relaxed)) / 1e9
        return Trial(faultsPerSecond: Double(faults.load(ordering: .relaxed)) / secs,
                     churnOpsPerSecond: Double(churnOps.load(ordering: .relaxed)) / secs,
                     failedWrites: failures.load(ordering: .relaxed),
                     counters: mm.designCounters - c0)
    }
}

func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return 0 }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
