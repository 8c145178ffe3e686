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
/// freed (after an RCU grace period: Linux's cache is `SLAB_TYPESAFE_BY_RCU`) when its tree
/// empties and no child holds it as root.
public final class AnonVMA: @unchecked Sendable {
    public let id: UInt64
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
    /// The system's count of live anon_vmas (for the leak check).
    let live: LiveCount

    static let ids = Atomic<UInt64>(0)

    /// `anon_vma_alloc()`: a root of its own, one reference.
    init(rcu: RCU, live: LiveCount) {
        id = AnonVMA.ids.wrappingAdd(1, ordering: .relaxed).newValue
        self.rcu = rcu
        self.live = live
        root = self
        parent = self
    }

    /// A new anon_vma, retained until `put()` lets go of the last reference.
    static func alloc(_ system: MMSystem) -> AnonVMA {
        let a = AnonVMA(rcu: system.rcu, live: system.liveAnonVMAs)
        system.liveAnonVMAs.value.wrappingAdd(1, ordering: .relaxed)
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
        let live = self.live
        rcu.callRCU {
            live.value.wrappingSubtract(1, ordering: .relaxed)
            me.release()
        }
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

/// A count shared with objects that may outlive their owner's other state (RCU callbacks).
final class LiveCount: @unchecked Sendable {
    let value = Atomic<Int>(0)
}
