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
    let kicks = Atomic<Int>(0)
    let startLock = Mutex<pthread_t?>(nil)

    init() {
        wakeWord = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: 1)
        wakeWord.initialize(to: Atomic(0))
    }

    deinit { wakeWord.deallocate() }

    /// Wakes the reclaimer (counted: a wake is a system call, and where it is made decides who
    /// the woken thread preempts).
    func kick() {
        kicks.wrappingAdd(1, ordering: .relaxed)
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
        // period would wait for that reader. Nor wake the reclaimer here: the wake's return
        // from the kernel is where the woken reclaimer preempts this thread, lock and all
        // (Linux's call_rcu wakes nobody; its PREEMPT_NONE kernel reschedules on the return
        // to user space). A batch's kick waits for `throttle()`, where the thread holds
        // nothing; a thread that never gets there is served by the reclaimer's tick.
        if n == batchSize || (n >= backPressure && n % batchSize == 0) {
            s.pointee.kickWanted.store(true, ordering: .relaxed)
        }
    }

    /// The model's return to user space, where the caller holds no lock a reader may wait for
    /// (Linux runs `cond_resched` and the CPU's RCU softirq there): runs the callbacks of this
    /// thread's whose grace period is over (`rcu_core()` → `rcu_do_batch()`, on the CPU that
    /// queued them), kicks the reclaimer for a batch `callRCU` queued, and if this thread has
    /// queued `backPressure` callbacks not yet run, waits for a grace period and runs them
    /// (`rcu_barrier`).
    public func throttle() {
        let s = slot(currentThreadIndex())
        guard s.pointee.nesting.load(ordering: .relaxed) == 0 else { return }
        if !s.pointee.runsOwn.load(ordering: .relaxed) { s.pointee.runsOwn.store(true, ordering: .relaxed) }
        if s.pointee.done.load(ordering: .relaxed) != nil { runDone(s) }
        if s.pointee.pending.load(ordering: .relaxed) >= backPressure {
            s.pointee.kickWanted.store(false, ordering: .relaxed)
            barrier()
        } else if s.pointee.kickWanted.load(ordering: .relaxed) {
            s.pointee.kickWanted.store(false, ordering: .relaxed)
            reclaimer.kick()
        }
    }

    /// Runs the owner's ready callbacks (`invoking` set first, so that a `barrier()` that
    /// finds the list gone waits for them to finish).
    @inline(never)
    func runDone(_ s: UnsafeMutablePointer<RCUSlot>) {
        s.pointee.invoking.store(true, ordering: .sequentiallyConsistent)
        if let list = s.pointee.done.exchange(nil, ordering: .sequentiallyConsistent) { invokeChain(list, of: s) }
        s.pointee.invoking.store(false, ordering: .releasing)
    }

    /// Runs a chain of `s`'s callbacks and takes them off its pending count (counted as they
    /// run: the chain is walked once, as Linux's segmented lists keep counts and tails).
    @inline(__always)
    func invokeChain(_ first: UnsafeMutablePointer<RCUHead>, of s: UnsafeMutablePointer<RCUSlot>) {
        var cur = first
        var n = 1
        while true {
            let next = cur.pointee.next
            cur.pointee.function(UnsafeMutableRawPointer(cur))
            guard let nx = next else { break }
            cur = nx
            n += 1
        }
        s.pointee.pending.wrappingSubtract(n, ordering: .relaxed)
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
    /// A callback queued before it is either still on a list (this pass takes it), in the
    /// batch of a pass that holds `reclaimLock` until it has run or handed it back (this pass
    /// waits for that), on an owner's ready list (this pass takes it), or being run by its
    /// owner (this pass waits for that).
    public func barrier() {
        precondition(!isReadLockHeld, "rcu barrier inside an RCU read-side section deadlocks")
        processPending(all: true)
    }

    /// Runs callbacks until none is queued, including those the callbacks queue: for
    /// teardown and quiescent checks, when no other thread is queueing (under steady traffic
    /// it need not return; `barrier()` does).
    public func drain() {
        precondition(!isReadLockHeld, "rcu drain inside an RCU read-side section deadlocks")
        while processPending(all: true) {}
    }

    /// Times the reclaimer has been woken (for tests).
    @_spi(Testing) public var _reclaimerKicks: Int { reclaimer.kicks.load(ordering: .relaxed) }

    /// Callbacks queued and not yet run (racy).
    public var pendingCallbacks: Int {
        var n = 0
        for t in 0..<threadIndexHighWater() { n += slot(t).pointee.pending.load(ordering: .relaxed) }
        return n
    }

    /// Callbacks the calling thread queued that have not run yet.
    public var pendingCallbacksOfThisThread: Int {
        slot(currentThreadIndex()).pointee.pending.load(ordering: .relaxed)
    }

    /// Takes every queued callback and waits one grace period (`rcu_gp_kthread`); then hands
    /// each thread's back to it if it runs its own (`runsOwn`; Linux runs callbacks on the
    /// CPU that queued them) and runs the rest. A ready list its owner left untaken for a whole
    /// pass is run here. With `all` (`rcu_barrier`), runs everything, ready lists included,
    /// and waits for owners running theirs. Returns whether any callback ran or was handed back.
    @discardableResult
    func processPending(all: Bool) -> Bool {
        reclaimLock.withLock { _ in
            let pass = passes.wrappingAdd(1, ordering: .relaxed).newValue
            let high = threadIndexHighWater()
            var took = false
            for t in 0..<high {
                let s = slot(t)
                guard s.pointee.callbacks.load(ordering: .relaxed) != nil else { continue }
                guard let list = s.pointee.callbacks.exchange(nil, ordering: .acquiring) else { continue }
                s.pointee.waiting.store(list, ordering: .relaxed)
                took = true
            }
            // Ready lists to run here: every one under `all`, else those left a whole pass.
            var ran = false
            for t in 0..<high {
                let s = slot(t)
                guard s.pointee.done.load(ordering: .relaxed) != nil,
                      all || s.pointee.doneSince.load(ordering: .relaxed) &+ 1 < pass,
                      let list = s.pointee.done.exchange(nil, ordering: .sequentiallyConsistent) else { continue }
                invokeChain(list, of: s)
                ran = true
            }
            if all {
                for t in 0..<high where t != currentThreadIndex() {
                    let s = slot(t)
                    while s.pointee.invoking.load(ordering: .acquiring) { fl_yield() }
                }
            }
            guard took else { return ran }
            synchronize()
            for t in 0..<high {
                let s = slot(t)
                guard let list = s.pointee.waiting.exchange(nil, ordering: .relaxed) else { continue }
                if all || !s.pointee.runsOwn.load(ordering: .relaxed) {
                    invokeChain(list, of: s)
                    continue
                }
                // Onto the ready list; the tail is looked for only when the owner has left an
                // earlier list there.
                var tail: UnsafeMutablePointer<RCUHead>? = nil
                var old = s.pointee.done.load(ordering: .relaxed)
                while true {
                    if old != nil && tail == nil {
                        var t = list
                        while let nx = t.pointee.next { t = nx }
                        tail = t
                    }
                    if let tail { tail.pointee.next = old }
                    let r = s.pointee.done.compareExchange(expected: old, desired: list,
                                                           successOrdering: .releasing, failureOrdering: .relaxed)
                    if r.exchanged { break }
                    old = r.original
                }
                if old == nil { s.pointee.doneSince.store(pass, ordering: .relaxed) }
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
            processPending(all: false)
        }
    }
}

final class ClosureBox {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
