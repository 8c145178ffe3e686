import CFaultline
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// `struct rcu_head`: embed one in an object to free it after a grace period without an
/// allocation. `function` receives the head's address; `context` lets it find its object
/// without layout assumptions.
public struct RCUHead {
    public var next: UnsafeMutablePointer<RCUHead>?
    public var function: @convention(c) (UnsafeMutableRawPointer) -> Void
    public var context: UnsafeMutableRawPointer?

    public init(context: UnsafeMutableRawPointer?, function: @convention(c) (UnsafeMutableRawPointer) -> Void) {
        self.next = nil
        self.context = context
        self.function = function
    }
}

/// State of the callback thread (the kernel's `rcuc`/`rcuog` kthreads, in one).
final class ReclaimerState: @unchecked Sendable {
    let wakeWord: UnsafeMutablePointer<Atomic<UInt32>>
    let started = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    let startLock = Mutex<pthread_t?>(nil)

    init() {
        wakeWord = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: 1)
        wakeWord.initialize(to: Atomic(0))
    }

    deinit { wakeWord.deallocate() }

    func kick() {
        wakeWord.pointee.store(1, ordering: .releasing)
        _ = fl_futex_wake(futexAddress(wakeWord), 1)
    }

    func stopAndJoin() {
        let thread = startLock.withLock { t -> pthread_t? in
            let r = t
            t = nil
            return r
        }
        guard let thread else { return }
        stopping.store(true, ordering: .releasing)
        kick()
        pthread_join(thread, nil)
    }
}

extension RCU {
    /// `call_rcu()`: runs `function(head)` on the reclaimer thread after a grace period.
    public func callRCU(_ head: UnsafeMutablePointer<RCUHead>) {
        let t = currentThreadIndex()
        let s = slot(t)
        var old = s.pointee.callbacks.load(ordering: .relaxed)
        while true {
            head.pointee.next = old
            let r = s.pointee.callbacks.weakCompareExchange(expected: old, desired: head,
                                                            successOrdering: .releasing, failureOrdering: .relaxed)
            if r.exchanged { break }
            old = r.original
        }
        let n = s.pointee.pending.wrappingAdd(1, ordering: .relaxed).newValue
        startReclaimerIfNeeded()
        // Never wait here, as the kernel's call_rcu never does: the caller may hold a lock
        // (a range, a PTE lock) that a reader inside its section is waiting for, and the grace
        // period would wait for that reader. A flood only hurries the reclaimer; the queueing
        // thread pays at `throttle()`, where it holds nothing.
        if n == batchSize || (n >= backPressure && n % batchSize == 0) { reclaimer.kick() }
    }

    /// Back pressure for `callRCU` floods, at a point where the caller holds no lock a reader
    /// may wait for (the model's return to user space, where Linux runs `cond_resched` and
    /// its callback kthreads catch up): if this thread has queued `backPressure` callbacks not
    /// yet run, it waits for a grace period and runs them (`rcu_barrier`).
    public func throttle() {
        let s = slot(currentThreadIndex())
        if s.pointee.pending.load(ordering: .relaxed) >= backPressure && s.pointee.nesting.load(ordering: .relaxed) == 0 {
            barrier()
        }
    }

    /// `call_rcu()` with a closure (allocates; for cold paths).
    public func callRCU(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(ClosureBox(body)).toOpaque()
        let head = UnsafeMutablePointer<RCUHead>.allocate(capacity: 1)
        head.initialize(to: RCUHead(context: box) { raw in
            let h = raw.assumingMemoryBound(to: RCUHead.self)
            let box = Unmanaged<ClosureBox>.fromOpaque(h.pointee.context!).takeRetainedValue()
            h.deallocate()
            box.body()
        })
        callRCU(head)
    }

    /// Frees raw memory after a grace period (`kfree_rcu`; allocates a head, for cold paths).
    public func deferDeallocate(_ pointer: UnsafeMutableRawPointer) {
        let head = UnsafeMutablePointer<RCUHead>.allocate(capacity: 1)
        head.initialize(to: RCUHead(context: pointer) { raw in
            let h = raw.assumingMemoryBound(to: RCUHead.self)
            h.pointee.context!.deallocate()
            h.deallocate()
        })
        callRCU(head)
    }

    /// Asks the reclaimer to run the queued callbacks now rather than at its next batch or tick
    /// (for callers whose callbacks recycle memory they are about to need).
    public func expedite() {
        startReclaimerIfNeeded()
        reclaimer.kick()
    }

    /// `rcu_barrier()`: returns once every callback queued before the call has run — not
    /// those queued meanwhile, so it returns under any other thread's steady `callRCU` traffic.
    /// A callback queued before it is either still on a list (this pass takes it) or in the
    /// batch of a pass that holds `reclaimLock` until it has run (this pass waits for that).
    public func barrier() {
        precondition(!isReadLockHeld, "rcu barrier inside an RCU read-side section deadlocks")
        processPending()
    }

    /// Runs callbacks until none is queued, including those the callbacks queue: for
    /// teardown and quiescent checks, when no other thread is queueing (under steady traffic
    /// it need not return; `barrier()` does).
    public func drain() {
        precondition(!isReadLockHeld, "rcu drain inside an RCU read-side section deadlocks")
        while processPending() {}
    }

    /// Callbacks queued and not yet run (racy).
    public var pendingCallbacks: Int {
        var n = 0
        for t in 0..<threadIndexHighWater() { n += slot(t).pointee.pending.load(ordering: .relaxed) }
        return n
    }

    /// Callbacks the calling thread queued that have not been taken yet.
    public var pendingCallbacksOfThisThread: Int {
        slot(currentThreadIndex()).pointee.pending.load(ordering: .relaxed)
    }

    /// Takes every queued callback, waits one grace period, runs them. Returns whether any ran.
    @discardableResult
    func processPending() -> Bool {
        reclaimLock.withLock { _ in
            var batch: UnsafeMutablePointer<RCUHead>?
            var last: UnsafeMutablePointer<RCUHead>?
            for t in 0..<threadIndexHighWater() {
                let s = slot(t)
                guard s.pointee.callbacks.load(ordering: .relaxed) != nil else { continue }
                guard let list = s.pointee.callbacks.exchange(nil, ordering: .acquiring) else { continue }
                var n = 0
                var tailOfList = list
                n = 1
                while let nx = tailOfList.pointee.next { tailOfList = nx; n += 1 }
                s.pointee.pending.wrappingSubtract(n, ordering: .relaxed)
                if last == nil { batch = list } else { last!.pointee.next = list }
                last = tailOfList
            }
            guard var cur = batch else { return false }
            synchronize()
            while true {
                let next = cur.pointee.next
                cur.pointee.function(UnsafeMutableRawPointer(cur))
                guard let n = next else { break }
                cur = n
            }
            return true
        }
    }

    func startReclaimerIfNeeded() {
        if reclaimer.started.load(ordering: .acquiring) { return }
        reclaimer.startLock.withLock { thread in
            if reclaimer.started.load(ordering: .relaxed) { return }
            let context = Unmanaged.passUnretained(self).toOpaque()
            var t = pthread_t()
            let rc = pthread_create(&t, nil, { arg in
                let rcu = Unmanaged<RCU>.fromOpaque(arg!).takeUnretainedValue()
                // Started by whichever thread queued first, often a benchmark worker pinned to
                // one CPU: inheriting that pin put the reclaimer on the worker's CPU and its
                // grace periods waited for the worker to be preempted.
                _ = fl_unpin_to_process_cpus()
                rcu.reclaimerLoop()
                return nil
            }, context)
            precondition(rc == 0, "cannot start the RCU reclaimer thread")
            thread = t
            reclaimer.started.store(true, ordering: .releasing)
        }
    }

    func reclaimerLoop() {
        let word = reclaimer.wakeWord
        while !reclaimer.stopping.load(ordering: .acquiring) {
            if word.pointee.load(ordering: .acquiring) == 0 {
                _ = fl_futex_wait(futexAddress(word), 0, 10_000_000)
            }
            word.pointee.store(0, ordering: .relaxed)
            processPending()
        }
    }
}

final class ClosureBox {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
