import CFaultline
import Synchronization

/// Bytes between two independently written per-thread or per-object hot words.
/// 128, not 64: the adjacent-line prefetcher pairs 64-byte lines, so 64 still false-shares.
public let cacheLineStride = 128

/// Allocates `count` objects of `T`, each starting on its own `cacheLineStride` boundary.
/// Swift cannot align a type above 16 bytes, so padding is done here by hand.
@inlinable
public func allocatePadded<T: ~Copyable>(_: T.Type, count: Int) -> (base: UnsafeMutableRawPointer, stride: Int) {
    let stride = (MemoryLayout<T>.size + cacheLineStride - 1) / cacheLineStride * cacheLineStride
    let base = UnsafeMutableRawPointer.allocate(byteCount: max(stride, cacheLineStride) * max(count, 1), alignment: cacheLineStride)
    return (base, max(stride, cacheLineStride))
}

/// The calling thread's dense index (recycled when the thread exits).
@inlinable @inline(__always)
public func currentThreadIndex() -> Int { Int(fl_thread_index()) }

/// One past the highest thread index ever handed out.
@inlinable
public func threadIndexHighWater() -> Int { Int(fl_thread_index_high_water()) }

/// Monotonic clock in nanoseconds.
@inlinable @inline(__always)
public func monotonicNanoseconds() -> UInt64 { fl_now_ns() }

/// The raw 32-bit word behind an `Atomic<UInt32>`, for futex calls.
@inlinable @inline(__always)
func futexAddress(_ p: UnsafeMutablePointer<Atomic<UInt32>>) -> UnsafeMutablePointer<UInt32> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: UInt32.self)
}

/// Spin `spins` times, then sleep on the futex, until `word` is non-zero; returns that value.
/// The waiting half of the kernel's `wake_q` / `wake_up_process` hand-shake.
@inlinable
func waitWhileZero(_ word: UnsafeMutablePointer<Atomic<UInt32>>, spins: Int) -> UInt32 {
    var i = 0
    while i < spins {
        let v = word.pointee.load(ordering: .acquiring)
        if v != 0 { return v }
        fl_cpu_relax()
        i += 1
    }
    while true {
        let v = word.pointee.load(ordering: .acquiring)
        if v != 0 { return v }
        _ = fl_futex_wait(futexAddress(word), 0, -1)
    }
}

/// Sets `word` to `value` and wakes one sleeper. The caller must not touch the waiter's memory
/// afterwards: a waiter may return (and its stack frame vanish) as soon as the store lands.
@inlinable
func setAndWake(_ word: UnsafeMutablePointer<Atomic<UInt32>>, _ value: UInt32) {
    word.pointee.store(value, ordering: .releasing)
    _ = fl_futex_wake(futexAddress(word), 1)
}
