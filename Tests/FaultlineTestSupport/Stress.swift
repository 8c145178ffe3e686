import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Counts holders per unit of a resource and records every moment two holders coexist that
/// the reader/writer rules forbid.
public final class ExclusionChecker: @unchecked Sendable {
    public let units: Int
    let readers: UnsafeMutablePointer<Atomic<Int>>
    let writers: UnsafeMutablePointer<Atomic<Int>>
    let violations = Atomic<Int>(0)
    let entries = Atomic<Int>(0)

    public init(units: Int) {
        self.units = units
        readers = .allocate(capacity: units)
        writers = .allocate(capacity: units)
        for i in 0..<units {
            (readers + i).initialize(to: Atomic(0))
            (writers + i).initialize(to: Atomic(0))
        }
    }

    deinit {
        readers.deallocate()
        writers.deallocate()
    }

    public func enter(_ range: Range<Int>, write: Bool) {
        entries.wrappingAdd(1, ordering: .relaxed)
        for u in range {
            if write {
                let w = writers[u].wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
                if w != 1 || readers[u].load(ordering: .sequentiallyConsistent) != 0 {
                    violations.wrappingAdd(1, ordering: .relaxed)
                }
            } else {
                readers[u].wrappingAdd(1, ordering: .sequentiallyConsistent)
                if writers[u].load(ordering: .sequentiallyConsistent) != 0 {
                    violations.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
    }

    public func exit(_ range: Range<Int>, write: Bool) {
        for u in range {
            if write {
                writers[u].wrappingSubtract(1, ordering: .sequentiallyConsistent)
            } else {
                readers[u].wrappingSubtract(1, ordering: .sequentiallyConsistent)
            }
        }
    }

    public var violationCount: Int { violations.load(ordering: .relaxed) }
    public var entryCount: Int { entries.load(ordering: .relaxed) }
}

/// Busy work inside a critical section, to widen race windows.
@inline(never)
public func dwell(_ n: Int) {
    var i = 0
    while i < n { fl_cpu_relax(); i += 1 }
}

public typealias SplitMix = SplitMix64

/// Runs `threads` workers for about `seconds`, each calling `body(threadIndex, &rng)` until
/// the time is up.
public func stress(threads: Int, seconds: Double, seed: UInt64 = 1, _ body: @escaping @Sendable (Int, inout SplitMix) -> Void) {
    let stop = StopFlag()
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    Threads.run(threads + 1) { i in
        if i == threads {
            while monotonicNanoseconds() < deadline { fl_sleep_ns(5_000_000) }
            stop.set()
            return
        }
        var rng = SplitMix(seed: seed &* 7919 &+ UInt64(i))
        while !stop.isSet { body(i, &rng) }
    }
}

/// Runs `threads` workers that each call `body` `iterations` times; returns false if they
/// have not all finished within `timeout` seconds (a hang: a lost wake-up or a deadlock).
/// Stuck workers are left behind; the test fails instead of hanging.
public func finishes(threads: Int, iterations: Int, timeout: Double, _ body: @escaping @Sendable (Int, Int) -> Void) -> Bool {
    let doneBox = DoneBox()
    for t in 0..<threads {
        let th = Threads.spawn {
            for k in 0..<iterations { body(t, k) }
            doneBox.count.wrappingAdd(1, ordering: .releasing)
        }
        pthread_detach(th)
    }
    let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
    while monotonicNanoseconds() < deadline {
        if doneBox.count.load(ordering: .acquiring) == threads { return true }
        fl_sleep_ns(2_000_000)
    }
    return doneBox.count.load(ordering: .acquiring) == threads
}

/// A counter worker closures share.
public final class DoneBox: Sendable {
    public let count = Atomic<Int>(0)
    public init() {}
}
