import CFaultline
import Synchronization

/// Per-thread statistics counters (the kernel's per-CPU counters, `this_cpu_add`).
///
/// Each thread owns one padded line of `width` counters and bumps them with a relaxed load and
/// store — no read-modify-write, no shared line. Readers sum every live slot. `reset()` is meant
/// for quiescent moments; racing a writer it can lose that writer's in-flight increment.
public final class PerThreadCounters: @unchecked Sendable {
    public let width: Int
    public let slots: CounterSlots

    public init(width: Int) {
        precondition(width > 0)
        self.width = width
        let strideBytes = (width * 8 + cacheLineStride - 1) / cacheLineStride * cacheLineStride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: strideBytes * Int(FL_MAX_THREADS), alignment: cacheLineStride)
        let words = raw.bindMemory(to: Atomic<UInt64>.self, capacity: strideBytes / 8 * Int(FL_MAX_THREADS))
        for i in 0..<(strideBytes / 8 * Int(FL_MAX_THREADS)) { (words + i).initialize(to: Atomic(0)) }
        slots = CounterSlots(base: words, stride: strideBytes / 8)
    }

    deinit {
        UnsafeMutableRawPointer(slots.base).deallocate()
    }

    /// Sum of counter `k` over every thread.
    public func sum(_ k: Int) -> UInt64 {
        precondition(k >= 0 && k < width)
        var total: UInt64 = 0
        for t in 0..<threadIndexHighWater() {
            total &+= (slots.base + t * slots.stride + k).pointee.load(ordering: .relaxed)
        }
        return total
    }

    /// Counter `k` of the calling thread alone.
    public func mine(_ k: Int) -> UInt64 {
        precondition(k >= 0 && k < width)
        return (slots.base + currentThreadIndex() * slots.stride + k).pointee.load(ordering: .relaxed)
    }

    /// All counters summed, in counter order.
    public func sums() -> [UInt64] { (0..<width).map { sum($0) } }

    public func reset() {
        for t in 0..<threadIndexHighWater() {
            for k in 0..<width { (slots.base + t * slots.stride + k).pointee.store(0, ordering: .relaxed) }
        }
    }
}

/// The hot-path view of `PerThreadCounters`: a raw base and stride, no reference counting.
@frozen
public struct CounterSlots: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Atomic<UInt64>>
    public let stride: Int

    @inlinable
    public init(base: UnsafeMutablePointer<Atomic<UInt64>>, stride: Int) {
        self.base = base
        self.stride = stride
    }

    /// `this_cpu_add()`: adds `n` to counter `k` of the calling thread.
    @inlinable @inline(__always)
    public func add(_ k: Int, _ n: UInt64 = 1) {
        let p = base + (currentThreadIndex() &* stride &+ k)
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}
