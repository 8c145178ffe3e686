import CFaultline
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Plain pthreads for workers: benchmarks need one OS thread per worker, optionally pinned,
/// which Swift concurrency's cooperative pool cannot give.
public enum Threads {
    final class Start: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts a thread running `body`; returns its handle for `join`.
    public static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        let ctx = Unmanaged.passRetained(Start(body)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, ctx)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return t
    }

    public static func join(_ t: pthread_t) {
        pthread_join(t, nil)
    }

    /// Runs `body(i)` for i in 0..<count, each on its own thread (pinned to CPU i mod the
    /// available CPUs when `pin`), and waits for all of them.
    public static func run(_ count: Int, pin: Bool = false, _ body: @escaping @Sendable (Int) -> Void) {
        let cpus = Int(fl_available_cpus())
        let threads = (0..<count).map { i in
            spawn {
                if pin { _ = fl_pin_to_cpu(Int32(i % max(cpus, 1))) }
                body(i)
            }
        }
        for t in threads { join(t) }
    }

    /// CPU time thread `t` has used so far, in ns (`pthread_getcpuclockid`), or nil if the
    /// clock cannot be read (the thread has exited).
    public static func cpuNanoseconds(_ t: pthread_t) -> UInt64? {
        var clock = clockid_t()
        guard pthread_getcpuclockid(t, &clock) == 0 else { return nil }
        var ts = timespec()
        guard clock_gettime(clock, &ts) == 0 else { return nil }
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// CPU time this process has used so far, all threads, in ns.
    public static var processCPUNanoseconds: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// CPUs this process may run on.
    public static var availableCPUs: Int { Int(fl_available_cpus()) }
}

/// A reusable spinning barrier for starting workers together.
public final class SpinBarrier: @unchecked Sendable {
    let parties: Int
    let arrived = Atomic<Int>(0)
    let generation = Atomic<Int>(0)

    public init(parties: Int) { self.parties = parties }

    public func wait() {
        let gen = generation.load(ordering: .acquiring)
        if arrived.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue == parties {
            arrived.store(0, ordering: .relaxed)
            generation.wrappingAdd(1, ordering: .releasing)
            return
        }
        var spins = 0
        while generation.load(ordering: .acquiring) == gen {
            spins += 1
            if spins < 1000 { fl_cpu_relax() } else { fl_yield() }
        }
    }
}

/// A flag workers poll to stop (read-mostly: one line, written once).
public final class StopFlag: @unchecked Sendable {
    let flag = Atomic<Bool>(false)
    public init() {}
    @inlinable public var isSet: Bool { _isSet }
    @usableFromInline var _isSet: Bool { flag.load(ordering: .relaxed) }
    public func set() { flag.store(true, ordering: .relaxed) }
}

/// Shares a non-Sendable value (a pointer, a class the caller synchronises) with closures that
/// run on other threads.
public struct Shared<T>: @unchecked Sendable {
    public let value: T
    public init(_ v: T) { value = v }
}
