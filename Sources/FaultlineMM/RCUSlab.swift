import FaultlineSync
import Synchronization

/// Fixed-size objects whose memory lockless readers may still be reading when they are
/// freed: `retire` hands them to RCU and they are reused only after a grace period
/// (`SLAB_TYPESAFE_BY_RCU` / `call_rcu` + `kmem_cache_free`). Thread-safe; allocation is rare
/// enough (a page table per 2 MiB, a VMA per mapping) for one spinlock.
final class RCUSlab: @unchecked Sendable {
    let objectSize: Int
    let alignment: Int
    let perSlab: Int
    let rcu: RCU
    let lock = SpinLock()
    var free: [UnsafeMutableRawPointer] = []
    var slabs: [UnsafeMutableRawPointer] = []
    let live = Atomic<Int>(0)
    /// `SLAB_POISON`: freed objects are filled with `poisonByte` and checked when reused, so a
    /// write after free is found (`poisonViolations`).
    let poison: Bool
    let poisonViolations = Atomic<Int>(0)
    static let poisonByte: UInt8 = 0x6b   // POISON_FREE

    init(objectSize: Int, alignment: Int, perSlab: Int = 64, rcu: RCU, poison: Bool = false) {
        self.objectSize = (objectSize + alignment - 1) / alignment * alignment
        self.alignment = alignment
        self.perSlab = perSlab
        self.rcu = rcu
        self.poison = poison
    }

    /// Fills a freed object with the poison pattern.
    func poisonObject(_ p: UnsafeMutableRawPointer) {
        p.initializeMemory(as: UInt8.self, repeating: Self.poisonByte, count: objectSize)
    }

    /// Whether a free object still holds the pattern (nothing wrote to it after it was freed).
    func poisonIntact(_ p: UnsafeMutableRawPointer) -> Bool {
        let words = p.assumingMemoryBound(to: UInt64.self)
        for i in 0..<(objectSize / 8) where words[i] != 0x6b6b_6b6b_6b6b_6b6b { return false }
        return true
    }

    deinit {
        for s in slabs { s.deallocate() }
    }

    /// Zero-filled memory for one object.
    func allocate() -> UnsafeMutableRawPointer {
        let p: UnsafeMutableRawPointer = lock.withLock {
            if let p = free.popLast() {
                if poison && !poisonIntact(p) { poisonViolations.wrappingAdd(1, ordering: .relaxed) }
                return p
            }
            return newSlabLocked()
        }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: objectSize)
        live.wrappingAdd(1, ordering: .relaxed)
        return p
    }

    /// A fresh slab (lock held): its first object for the caller, the rest (poisoned if the
    /// cache poisons) on the free list.
    private func newSlabLocked() -> UnsafeMutableRawPointer {
        let slab = UnsafeMutableRawPointer.allocate(byteCount: objectSize * perSlab, alignment: alignment)
        slabs.append(slab)
        for i in 1..<perSlab {
            if poison { poisonObject(slab + i * objectSize) }
            free.append(slab + i * objectSize)
        }
        return slab
    }

    /// Back at once: nobody else can reach `p`.
    func freeNow(_ p: UnsafeMutableRawPointer) {
        if poison { poisonObject(p) }
        live.wrappingSubtract(1, ordering: .relaxed)
        lock.withLock { free.append(p) }
    }

    /// Back after a grace period.
    func retire(_ objects: [UnsafeMutableRawPointer]) {
        guard !objects.isEmpty else { return }
        let box = Shared(objects)
        rcu.callRCU { [self] in
            if self.poison { for p in box.value { self.poisonObject(p) } }
            self.live.wrappingSubtract(box.value.count, ordering: .relaxed)
            self.lock.withLock { self.free.append(contentsOf: box.value) }
        }
    }

    /// For callers already past a grace period (their own RCU callback).
    func retireNow(_ objects: [UnsafeMutableRawPointer]) {
        if poison { for p in objects { poisonObject(p) } }
        live.wrappingSubtract(objects.count, ordering: .relaxed)
        lock.withLock { free.append(contentsOf: objects) }
    }

    var liveObjects: Int { live.load(ordering: .relaxed) }

    // MARK: SLAB_TYPESAFE_BY_RCU

    /// Freed objects that are still initialised (`SLAB_TYPESAFE_BY_RCU`): reused at once, last
    /// freed first, so a reader's stale pointer really may meet a new object.
    var reusable: [UnsafeMutableRawPointer] = []

    /// An object for a `SLAB_TYPESAFE_BY_RCU` cache: one freed earlier (`reused`: still
    /// initialised, and readers may be looking at it) or fresh, uninitialised memory.
    func allocateTypesafe() -> (object: UnsafeMutableRawPointer, reused: Bool) {
        precondition(!poison, "SLAB_TYPESAFE_BY_RCU caches are never poisoned (readers may read freed objects)")
        let r: (UnsafeMutableRawPointer, Bool) = lock.withLock {
            if let p = reusable.popLast() { return (p, true) }
            return (free.popLast() ?? newSlabLocked(), false)
        }
        live.wrappingAdd(1, ordering: .relaxed)
        return r
    }

    /// `kmem_cache_free()` to a `SLAB_TYPESAFE_BY_RCU` cache: back at once, no grace period;
    /// the memory stays an initialised object of this type until the slab goes.
    func freeTypesafe(_ p: UnsafeMutableRawPointer) {
        live.wrappingSubtract(1, ordering: .relaxed)
        lock.withLock { reusable.append(p) }
    }
}
