import FaultlineSync
import Synchronization

/// `struct anon_vma` (mm/rmap.c): what an anonymous page's `mapping` points to, so that the
/// page's mappings can be found from the page (the reverse map). Every VMA that may map a page
/// of this anon_vma — the VMA that created it, the pieces it was split into, and its copies in
/// forked children — has an `anon_vma_chain` entry in `tree`, an interval tree over the pages
/// (`vm_pgoff` ranges) each VMA maps. An anon_vma made by fork is a child of the parent's: its
/// VMAs chain to every ancestor too, because their pages may still be the ancestors'.
///
/// All anon_vmas of one fork hierarchy share the root's `rwsem`; `tree`, `numChildren` and
/// `numActiveVMAs` are changed under it held for write (`anon_vma_lock_write`). The object is
/// freed when its tree empties and no child holds it as root: into `AnonVMACache` after an RCU
/// grace period, where, as in Linux's `SLAB_TYPESAFE_BY_RCU` cache, it stays an anon_vma.
public final class AnonVMA: @unchecked Sendable {
    public private(set) var id: UInt64
    /// `anon_vma->root`: the first of the hierarchy (itself for a root); its lock is everyone's.
    private(set) unowned(unsafe) var root: AnonVMA! = nil
    /// `anon_vma->parent`: the anon_vma this one was forked from (itself for a root).
    private(set) unowned(unsafe) var parent: AnonVMA! = nil
    /// `anon_vma->rwsem`: used on the root only.
    let rwsem = RWSemaphore()
    /// `anon_vma->refcount`: 1 while the tree is not empty, one per child whose root this is,
    /// one per rmap walker that pinned it.
    let refcount = Atomic<Int>(1)
    /// `num_children`: anon_vmas forked from this one, plus one for a root's link to itself.
    var numChildren = 0
    /// `num_active_vmas`: VMAs whose `anon_vma` is this one.
    var numActiveVMAs = 0
    /// `anon_vma->rb_root`: the chain entries of every VMA that may map its pages.
    var tree = RBTree<AnonVMAChain, RBIntervalAugmentation<AnonVMAChain>>()
    let rcu: RCU
    /// The cache it came from and goes back to. Not a strong reference: the cache holds its
    /// free anon_vmas, and each holding it back would keep both alive for good. The system
    /// holds the cache while anon_vmas are in use, a pending free's RCU callback after that.
    unowned(unsafe) let cache: AnonVMACache

    static let ids = Atomic<UInt64>(0)

    init(rcu: RCU, cache: AnonVMACache) {
        id = AnonVMA.ids.wrappingAdd(1, ordering: .relaxed).newValue
        self.rcu = rcu
        self.cache = cache
        root = self
        parent = self
    }

    /// `anon_vma_alloc()`: a root of its own, one reference; a freed one from the cache if
    /// there is one (retained by the cache), else a new one retained until the cache goes.
    static func alloc(_ system: MMSystem) -> AnonVMA {
        let cache = system.anonVMACache
        cache.live.wrappingAdd(1, ordering: .relaxed)
        if let a = cache.take() {
            precondition(a.tree.isEmpty && a.refcount.load(ordering: .relaxed) == 0, "a cached anon_vma in use")
            a.id = AnonVMA.ids.wrappingAdd(1, ordering: .relaxed).newValue
            a.root = a
            a.parent = a
            a.numChildren = 0
            a.numActiveVMAs = 0
            // Last: a stale walker's `tryGet` that sees 1 sees the fields above.
            a.refcount.store(1, ordering: .releasing)
            return a
        }
        let a = AnonVMA(rcu: system.rcu, cache: cache)
        return Unmanaged.passRetained(a).takeUnretainedValue()
    }

    /// `anon_vma_fork()`'s child: `parent`'s hierarchy, holding its root.
    func makeChild(of parent: AnonVMA) {
        self.parent = parent
        root = parent.root
        root.get()
    }

    var bits: UInt { UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ bits: UInt) -> AnonVMA {
        Unmanaged<AnonVMA>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
    }

    /// `get_anon_vma()`.
    func get() { refcount.wrappingAdd(1, ordering: .relaxed) }

    /// `atomic_inc_not_zero(&anon_vma->refcount)`: a reference unless the last one is gone.
    func tryGet() -> Bool {
        var c = refcount.load(ordering: .relaxed)
        while c > 0 {
            let r = refcount.compareExchange(expected: c, desired: c + 1, ordering: .acquiring)
            if r.exchanged { return true }
            c = r.original
        }
        return false
    }

    /// `put_anon_vma()` / `__put_anon_vma()`: the last reference frees it after a grace period
    /// (an rmap walker may have read a page's `mapping` under RCU), then lets go of its root.
    func put() {
        guard refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        let r = root!
        let me = Unmanaged.passUnretained(self)
        let cache = self.cache
        rcu.callRCU { cache.free(me) }
        if r !== self { r.put() }
    }

    /// `anon_vma_lock_write()` / `anon_vma_unlock_write()` / `anon_vma_lock_read()`.
    func lockWrite() { root.rwsem.lockWrite() }
    func unlockWrite() { root.rwsem.unlockWrite() }
    func lockRead() { root.rwsem.lockRead() }
    func unlockRead() { root.rwsem.unlockRead() }
}

/// `struct anon_vma_chain`: links one VMA to one anon_vma. It sits in the anon_vma's interval
/// tree (`rb`, over the VMA's pages `[first, end)`) and in the VMA's list (`same_vma`, newest
/// first, as `list_add` makes it).
struct AnonVMAChain: RBIntervalPayload {
    var vma: VMARef
    var anonVMA: Unmanaged<AnonVMA>
    var nextInVMA: AVCNode?
    var first: UInt64
    var end: UInt64
    var subtreeEnd: UInt64

    var intervalStart: UInt64 { first }
    var intervalEnd: UInt64 { end }
}

typealias AVCNode = UnsafeMutablePointer<RBNode<AnonVMAChain>>

extension UnsafeMutablePointer where Pointee == VMA {
    /// `vma->anon_vma_chain`'s first entry.
    var anonChainHead: AVCNode? {
        AVCNode(bitPattern: pointee.anonChainHeadBits.load(ordering: .relaxed))
    }

    /// The chain, in list order.
    var anonChainEntries: [AVCNode] {
        var out: [AVCNode] = []
        var n = anonChainHead
        while let c = n { out.append(c); n = c.pointee.payload.nextInVMA }
        return out
    }
}

/// `anon_vma_cachep` (`SLAB_TYPESAFE_BY_RCU`): freed anon_vmas stay anon_vmas, so an rmap
/// walker that read a page's `mapping` under RCU finds an anon_vma there even when it is
/// stale — its reference count 0 (`tryGet` fails), or reused (the walk finds VMAs that do not
/// map the page and leaves it) — never memory handed to something else. Shared with the RCU
/// callbacks that free into it, so it may outlive its system.
final class AnonVMACache: @unchecked Sendable {
    /// anon_vmas allocated and not yet freed (the leak check's count).
    let live = Atomic<Int>(0)
    private let lock = SpinLock()
    private var free: [Unmanaged<AnonVMA>] = []

    func take() -> AnonVMA? {
        lock.lock()
        defer { lock.unlock() }
        return free.popLast()?.takeUnretainedValue()
    }

    func free(_ a: Unmanaged<AnonVMA>) {
        live.wrappingSubtract(1, ordering: .relaxed)
        lock.lock()
        free.append(a)
        lock.unlock()
    }

    deinit { for a in free { a.release() } }
}
