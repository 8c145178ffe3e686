import CFaultline
import FaultlineSync
import Glibc
import Synchronization

/// Fixed-size objects whose memory lockless readers may still be reading when they are
/// freed: `retire` hands them to RCU and they are reused only after a grace period
/// (`SLAB_TYPESAFE_BY_RCU` / `call_rcu` + `kmem_cache_free`). Thread-safe; allocation is rare
/// enough (a page table per 2 MiB, a VMA per mapping) for one spinlock.
///
/// Each thread keeps up to `sheafCapacity` free objects of its own (the per-CPU sheaves that
/// Linux 6.18 gives the VMA and maple-node caches, `slub_percpu_sheaves`): a thread that frees
/// and allocates, as mmap and munmap do, touches no line another thread writes. An empty
/// sheaf refills from the shared lists, a full one gives half back (the barn's role).
final class RCUSlab: @unchecked Sendable {
    let objectSize: Int
    let alignment: Int
    let perSlab: Int
    let rcu: RCU
    let lock = SpinLock()
    var free: [UnsafeMutableRawPointer] = []
    var slabs: [UnsafeMutableRawPointer] = []
    /// Per thread: [count, live, objects…], on cache lines of their own; zero pages from
    /// mmap, backed only for the thread slots that are used. `live` counts objects the thread
    /// allocated less those it freed (a thread may free another's: only the sum means
    /// anything).
    let sheaves: UnsafeMutableRawPointer
    static let sheafCapacity = 32
    static let sheafStride = (2 + sheafCapacity) * 8 + 48
    static let sheavesBytes = sheafStride * Int(FL_MAX_THREADS)
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
        let m = mmap(nil, Self.sheavesBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(m != MAP_FAILED, "cannot reserve \(Self.sheavesBytes) bytes for the per-thread sheaves")
        sheaves = m!
    }

    /// The calling thread's sheaf: its count word, its live word, then its objects.
    @inline(__always)
    func sheaf() -> UnsafeMutablePointer<Int> {
        (sheaves + currentThreadIndex() &* Self.sheafStride).assumingMemoryBound(to: Int.self)
    }

    /// The thread's live count moves by `delta` (a plain word only its thread writes; read
    /// racily by `liveObjects`, as an atomic relaxed load).
    @inline(__always)
    func addLive(_ sheaf: UnsafeMutablePointer<Int>, _ delta: Int) {
        let w = UnsafeMutableRawPointer(sheaf + 1).assumingMemoryBound(to: Atomic<Int>.self)
        w.pointee.store(w.pointee.load(ordering: .relaxed) &+ delta, ordering: .relaxed)
    }

    /// The top object of the thread's sheaf, or nil when it is empty.
    @inline(__always)
    func popSheaf(_ sh: UnsafeMutablePointer<Int>) -> UnsafeMutableRawPointer? {
        let n = sh[0]
        guard n > 0 else { return nil }
        sh[0] = n &- 1
        return UnsafeMutableRawPointer(bitPattern: sh[1 &+ n])
    }

    /// Puts `p` in the thread's sheaf; a full sheaf first gives its older half to the shared
    /// list (`reusable` for a typesafe cache, else `free`).
    @inline(__always)
    func pushSheaf(_ sh: UnsafeMutablePointer<Int>, _ p: UnsafeMutableRawPointer, typesafe: Bool) {
        var n = sh[0]
        if n == Self.sheafCapacity {
            let half = Self.sheafCapacity / 2
            lock.lock()
            for i in 0..<half {
                let q = UnsafeMutableRawPointer(bitPattern: sh[2 &+ i])!
                if typesafe { reusable.append(q) } else { free.append(q) }
            }
            lock.unlock()
            for i in 0..<(n - half) { sh[2 &+ i] = sh[2 &+ half &+ i] }
            n -= half
        }
        sh[2 &+ n] = Int(bitPattern: p)
        sh[0] = n &+ 1
    }

    /// Fills an empty sheaf with up to half its capacity from the shared list (typesafe:
    /// freed, still-initialised objects; else free memory).
    func refillSheaf(_ sh: UnsafeMutablePointer<Int>, typesafe: Bool) {
        lock.lock()
        var n = 0
        let want = Self.sheafCapacity / 2
        while n < want, let p = typesafe ? reusable.popLast() : free.popLast() {
            sh[2 &+ n] = Int(bitPattern: p)
            n += 1
        }
        lock.unlock()
        // The most recently freed on top, as the shared list had it.
        var i = 0, j = n - 1
        while i < j {
            let t = sh[2 &+ i]
            sh[2 &+ i] = sh[2 &+ j]
            sh[2 &+ j] = t
            i += 1
            j -= 1
        }
        sh[0] = n
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
        munmap(sheaves, Self.sheavesBytes)
    }

    /// Zero-filled memory for one object.
    func allocate() -> UnsafeMutableRawPointer {
        let sh = sheaf()
        if sh[0] == 0 { refillSheaf(sh, typesafe: false) }
        let p: UnsafeMutableRawPointer
        if let q = popSheaf(sh) {
            if poison && !poisonIntact(q) { poisonViolations.wrappingAdd(1, ordering: .relaxed) }
            p = q
        } else {
            lock.lock()
            p = newSlabLocked()
            lock.unlock()
        }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: objectSize)
        addLive(sh, 1)
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
        let sh = sheaf()
        addLive(sh, -1)
        pushSheaf(sh, p, typesafe: false)
    }

    /// Back after a grace period.
    func retire(_ objects: [UnsafeMutableRawPointer]) {
        guard !objects.isEmpty else { return }
        let box = Shared(objects)
        rcu.callRCU { [self] in self.retireNow(box.value) }
    }

    /// For callers already past a grace period (their own RCU callback).
    func retireNow(_ objects: [UnsafeMutableRawPointer]) {
        if poison { for p in objects { poisonObject(p) } }
        let sh = sheaf()
        addLive(sh, -objects.count)
        for p in objects { pushSheaf(sh, p, typesafe: false) }
    }

    /// Objects handed out and not freed: the threads' counts summed (exact when quiescent).
    var liveObjects: Int {
        var n = 0
        for t in 0..<threadIndexHighWater() {
            let w = (sheaves + t &* Self.sheafStride + 8).assumingMemoryBound(to: Atomic<Int>.self)
            n &+= w.pointee.load(ordering: .relaxed)
        }
        return n
    }

    // MARK: SLAB_TYPESAFE_BY_RCU

    /// Freed objects that are still initialised (`SLAB_TYPESAFE_BY_RCU`): reused at once, last
    /// freed first, so a reader's stale pointer really may meet a new object.
    var reusable: [UnsafeMutableRawPointer] = []

    /// An object for a `SLAB_TYPESAFE_BY_RCU` cache: one freed earlier (`reused`: still
    /// initialised, and readers may be looking at it) or fresh, uninitialised memory.
    func allocateTypesafe() -> (object: UnsafeMutableRawPointer, reused: Bool) {
        precondition(!poison, "SLAB_TYPESAFE_BY_RCU caches are never poisoned (readers may read freed objects)")
        let sh = sheaf()
        if sh[0] == 0 { refillSheaf(sh, typesafe: true) }
        addLive(sh, 1)
        if let p = popSheaf(sh) { return (p, true) }
        lock.lock()
        let p = free.popLast() ?? newSlabLocked()
        lock.unlock()
        return (p, false)
    }

    /// `kmem_cache_free()` to a `SLAB_TYPESAFE_BY_RCU` cache: back at once, no grace period;
    /// the memory stays an initialised object of this type until the slab goes.
    func freeTypesafe(_ p: UnsafeMutableRawPointer) {
        let sh = sheaf()
        addLive(sh, -1)
        pushSheaf(sh, p, typesafe: true)
    }
}
