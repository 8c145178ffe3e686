import CFaultline
import Synchronization

extension ListRangeLock {
    /// Per-thread magazines of 128-byte list nodes, shared by every `ListRangeLock` (nodes are
    /// all alike). Unlinked nodes are retired to the unlinking thread's magazine; every 64 of
    /// them go to RCU as one batch (one `call_rcu` per 64 nodes, using the first node's head),
    /// and after the grace period the batch joins a global list of ready batches that any
    /// thread takes whole. The hot path allocates and frees with plain loads and stores on the
    /// caller's own slot; the global list is touched once per 64 nodes.
    final class NodePool: @unchecked Sendable {
        static let shared = NodePool()
        static let batch = 64

        /// Per-thread magazine: owned by one thread at a time (thread indices are handed over
        /// under a mutex, which orders one owner's accesses before the next one's).
        struct Magazine {
            var free: UnsafeMutableRawPointer?
            var retired: UnsafeMutableRawPointer?
            var retiredCount: Int
            /// The node this thread parked (`ListRangeLock.park`), its state word when parked
            /// (generation | free), and what it locks, so a revive reads nothing shared.
            var parked: UnsafeMutableRawPointer?
            var parkedWord: UInt64
            var parkedKey: RangeKey
            /// What this thread unlocked last (parking starts when it unlocks that again).
            var lastKey: RangeKey
        }

        /// A request as parking compares it: which lock, which range, which mode.
        struct RangeKey: Equatable {
            var lock: UInt
            var start: UInt64
            var end: UInt64
            var reader: Bool
            static let none = RangeKey(lock: 0, start: 0, end: 0, reader: false)
        }

        let magazines: UnsafeMutableRawPointer
        let stride: Int
        let readyLock = SpinLock()
        var ready: [UnsafeMutableRawPointer] = []
        /// Batches handed to RCU and not yet back; past a few, the reclaimer is hurried so the
        /// pool recycles warm memory instead of growing.
        let inFlight = Atomic<Int>(0)
        let rcu: RCU

        init(rcu: RCU = .shared) {
            self.rcu = rcu
            let (base, stride) = allocatePadded(Magazine.self, count: Int(FL_MAX_THREADS))
            magazines = base
            self.stride = stride
            for i in 0..<Int(FL_MAX_THREADS) {
                (base + i * stride).bindMemory(to: Magazine.self, capacity: 1)
                    .initialize(to: Magazine(free: nil, retired: nil, retiredCount: 0, parked: nil, parkedWord: 0,
                                          parkedKey: .none, lastKey: .none))
            }
        }

        @inline(__always)
        func magazine() -> UnsafeMutablePointer<Magazine> {
            (magazines + currentThreadIndex() &* stride).assumingMemoryBound(to: Magazine.self)
        }

        /// The link between pooled nodes (bytes 56..<64, never read by list walkers).
        @inline(__always)
        static func poolNext(_ n: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
            (n + 56).load(as: UnsafeMutableRawPointer?.self)
        }

        @inline(__always)
        static func setPoolNext(_ n: UnsafeMutableRawPointer, _ next: UnsafeMutableRawPointer?) {
            (n + 56).storeBytes(of: next, as: UnsafeMutableRawPointer?.self)
        }

        @inline(__always)
        func allocate() -> UnsafeMutableRawPointer {
            let m = magazine()
            if let n = m.pointee.free {
                m.pointee.free = Self.poolNext(n)
                return n
            }
            return refill(m)
        }

        @inline(never)
        func refill(_ m: UnsafeMutablePointer<Magazine>) -> UnsafeMutableRawPointer {
            var list = readyLock.withLock { ready.popLast() }
            if list == nil {
                // A fresh chunk; pooled memory is kept for reuse, never returned.
                let chunk = UnsafeMutableRawPointer.allocate(byteCount: LNode.size * Self.batch, alignment: 128)
                var head: UnsafeMutableRawPointer? = nil
                for i in 0..<Self.batch {
                    let n = chunk + i * LNode.size
                    n.bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
                    // Pooled nodes are held (`NodeState`); generation 0: no slot names it yet.
                    (n + 64).bindMemory(to: Atomic<UInt64>.self, capacity: 1).initialize(to: Atomic(NodeState.held))
                    (n + 72).bindMemory(to: Atomic<UInt32>.self, capacity: 1).initialize(to: Atomic(0))
                    (n + 32).bindMemory(to: RCUHead.self, capacity: 1)
                        .initialize(to: RCUHead(context: nil, function: NodePool.batchReady))
                    Self.setPoolNext(n, head)
                    head = n
                }
                list = head
            }
            let n = list!
            m.pointee.free = Self.poolNext(n)
            return n
        }

        /// A node never published (or no longer reachable by anyone): straight back.
        @inline(__always)
        func free(_ n: UnsafeMutableRawPointer) {
            let m = magazine()
            Self.setPoolNext(n, m.pointee.free)
            m.pointee.free = n
        }

        /// A node just unlinked: reusable once every reader that may still see it is gone.
        @inline(__always)
        func retire(_ n: UnsafeMutableRawPointer) {
            let m = magazine()
            Self.setPoolNext(n, m.pointee.retired)
            m.pointee.retired = n
            m.pointee.retiredCount += 1
            if m.pointee.retiredCount == Self.batch {
                let batchHead = n
                m.pointee.retired = nil
                m.pointee.retiredCount = 0
                let head = (batchHead + 32).assumingMemoryBound(to: RCUHead.self)
                head.pointee.context = Unmanaged.passUnretained(self).toOpaque()
                head.pointee.function = NodePool.batchReady
                rcu.callRCU(head)
                if inFlight.wrappingAdd(1, ordering: .relaxed).newValue == 32 { rcu.expedite() }
            }
        }

        /// Waiters asleep outside their RCU section (`waitReleased`), all locks together: a
        /// batch is scanned for them only when there are any.
        static let sleepingWaiters = Atomic<Int>(0)

        /// RCU callback: the grace period is over, the batch (linked from its first node) is
        /// free — unless a waiter that found one of its nodes before the grace period still
        /// sleeps on it outside RCU: then it waits another grace period.
        static let batchReady: @convention(c) (UnsafeMutableRawPointer) -> Void = { raw in
            let h = raw.assumingMemoryBound(to: RCUHead.self)
            let pool = Unmanaged<NodePool>.fromOpaque(h.pointee.context!).takeUnretainedValue()
            let first = raw - 32
            if NodePool.sleepingWaiters.load(ordering: .acquiring) != 0 {
                var n: UnsafeMutableRawPointer? = first
                while let x = n {
                    if LNode(raw: x).sleepers.pointee.load(ordering: .acquiring) != 0 {
                        pool.rcu.callRCU(h)
                        return
                    }
                    n = NodePool.poolNext(x)
                }
            }
            pool.readyLock.withLock { pool.ready.append(first) }
            pool.inFlight.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}
