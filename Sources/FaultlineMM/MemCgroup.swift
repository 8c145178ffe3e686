import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `struct page_counter` (mm/page_counter.c): the pages charged to a cgroup, counted at every
/// level up to the root, each level with its limit. Lockless, as Linux's: a charge adds at each
/// level and takes it back from the levels below one that went over its limit.
public final class PageCounter: @unchecked Sendable {
    /// `usage`, alone on its cache line (`CACHELINE_PADDING` in Linux): every CPU's stock
    /// refill and every batch of frees writes it, at every level.
    let line: UnsafeMutablePointer<Atomic<Int>>
    public let parent: PageCounter?
    let limit: Atomic<Int>
    /// `watermark` (v1 `memory.max_usage_in_bytes`): the highest usage seen, racy as Linux's.
    let peak = Atomic<Int>(0)
    /// `failcnt`: charges this level refused.
    let failures = Atomic<Int>(0)

    /// `PAGE_COUNTER_MAX`: no limit.
    public static let unlimited = Int.max / Int(Linux.pageSize)

    /// This level and its ancestors, unretained (each level holds its parent): a charge's and
    /// an uncharge's walk takes no reference per level.
    let chain: UnsafeMutableBufferPointer<Unmanaged<PageCounter>>

    init(parent: PageCounter?, limit: Int) {
        self.parent = parent
        self.limit = Atomic(limit)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        line = raw.bindMemory(to: Atomic<Int>.self, capacity: 1)
        line.initialize(to: Atomic(0))
        chain = unretainedChain(above: parent?.chain)
        chain.initializeElement(at: 0, to: Unmanaged.passUnretained(self))
    }

    deinit {
        UnsafeMutableRawPointer(line).deallocate()
        chain.deallocate()
    }

    /// Pages charged to this level (its own and its descendants').
    public var usage: Int { line.pointee.load(ordering: .relaxed) }
    /// The limit in pages (`memory.max`, v1 `memory.limit_in_bytes`).
    public var max: Int { limit.load(ordering: .relaxed) }
    /// The highest usage seen (`memory.peak`, v1 `memory.max_usage_in_bytes`).
    public var watermark: Int { peak.load(ordering: .relaxed) }
    /// Charges refused at this level (`failcnt`).
    public var failcnt: Int { failures.load(ordering: .relaxed) }

    /// `page_counter_try_charge()`: nil when every level took `n` pages, else the level whose
    /// limit refused them (the levels below it are uncharged again).
    func tryCharge(_ n: Int) -> PageCounter? {
        for i in chain.indices {
            let refused = chain[i]._withUnsafeGuaranteedRef { level -> Bool in
                let new = level.line.pointee.wrappingAdd(n, ordering: .relaxed).newValue
                if new > level.limit.load(ordering: .relaxed) {
                    level.line.pointee.wrappingSubtract(n, ordering: .relaxed)
                    level.failures.wrappingAdd(1, ordering: .relaxed)
                    return true
                }
                // Racy, as Linux's: a watermark may miss a concurrent peak.
                if new > level.peak.load(ordering: .relaxed) { level.peak.store(new, ordering: .relaxed) }
                return false
            }
            if refused {
                for j in 0..<i { chain[j]._withUnsafeGuaranteedRef { _ = $0.line.pointee.wrappingSubtract(n, ordering: .relaxed) } }
                return chain[i].takeUnretainedValue()
            }
        }
        return nil
    }

    /// `page_counter_uncharge()`: takes `n` pages off every level.
    func uncharge(_ n: Int) {
        for level in chain {
            let new = level._withUnsafeGuaranteedRef { $0.line.pointee.wrappingSubtract(n, ordering: .relaxed).newValue }
            precondition(new >= 0, "page counter uncharged below zero")
        }
    }
}

/// `struct mem_cgroup`: a memory cgroup, the unit Linux charges user memory to. A page
/// fault's anonymous page, a page-cache page and a swapped-in page are charged to the
/// faulting task's memcg when they are allocated (`mem_cgroup_charge()`) and uncharged when
/// they are freed (`mem_cgroup_uncharge_folios()`): its `memory` counter and every ancestor's.
/// A charge over a limit reclaims (`try_to_free_mem_cgroup_pages()`) and, failing that, is
/// an out-of-memory fault.
///
/// Each thread (Linux: each CPU) keeps a stock of pages already charged: a charge the stock
/// covers touches no shared line; a miss charges `chargeBatch` pages up the hierarchy and
/// stocks the rest (`consume_stock()`, `refill_stock()`). Frees uncharge every level directly,
/// one batch of up to `folioBatch` pages at a time. Statistics are per thread and summed on
/// reading; each update also counts towards the shared "updates to flush" of each level
/// (`memcg_rstat_updated()`), one shared write per `chargeBatch` updates.
///
/// Not modelled (each is named in the docs): the v1 `memsw` counter (charged beside `memory`
/// on a stock miss, it stays with a swapped-out page's swap entry), kernel memory (page
/// tables, VMAs and anon_vmas are charged too on Linux), the seven-memcg limit of a CPU's
/// stock (a thread here stocks for every memcg it charges), `memory.high` throttling and
/// v1 event thresholds, and the OOM killer (a charge that reclaim cannot make room for fails
/// the fault with `.oom`, which Linux turns into a kill).
public final class MemCgroup: @unchecked Sendable {
    /// The path from the hierarchy's root, "/" for the root itself.
    public let path: String
    public let parent: MemCgroup?
    /// `memcg->memory`.
    public let memory: PageCounter
    /// Per thread, one line: [0] the stock (`memcg_stock_pcp.nr_pages`), [1] updates not yet
    /// counted in `statsUpdates` (`memcg_vmstats_percpu.stats_updates`), [2...] the
    /// statistics (`Stat`), [7] set when this thread's last charge failed.
    let percpu = PerThreadCounters(width: 8)
    @usableFromInline let slots: CounterSlots
    /// `vmstats->stats_updates`: updates on all threads not yet flushed, on its own line.
    let statsUpdates: UnsafeMutablePointer<Atomic<Int>>
    /// `memcg->events[MEMCG_OOM]`: charges that failed after reclaim.
    let oomEvents = Atomic<Int>(0)
    /// This memcg and its ancestors, unretained (each holds its parent), and `memory`: the
    /// per-charge and per-free paths take no reference on the way.
    let chain: UnsafeMutableBufferPointer<Unmanaged<MemCgroup>>
    let memoryRef: Unmanaged<PageCounter>

    /// `MEMCG_CHARGE_BATCH`: what a stock miss charges, and the stock's most.
    public static let chargeBatch = 64
    /// `FOLIO_BATCH_SIZE`: frees are uncharged this many pages at a time at most.
    static let folioBatch = 31
    /// `MAX_RECLAIM_RETRIES`: reclaim rounds before a charge fails.
    static let maxReclaimRetries = 16
    /// `1 << PAGE_ALLOC_COSTLY_ORDER`.
    static let costlyPages = 8

    enum Slot { static let stock = 0, pending = 1, anon = 2, file = 3, pgpgin = 4, pgpgout = 5, failed = 7 }

    /// A memcg under `parent` (nil: the root) at `path`, its `memory` limited to `limitPages`.
    public init(path: String = "/", parent: MemCgroup? = nil, limitPages: Int = PageCounter.unlimited) {
        self.path = path
        self.parent = parent
        memory = PageCounter(parent: parent?.memory, limit: limitPages)
        slots = percpu.slots
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cacheLineStride, alignment: cacheLineStride)
        statsUpdates = raw.bindMemory(to: Atomic<Int>.self, capacity: 1)
        statsUpdates.initialize(to: Atomic(0))
        memoryRef = Unmanaged.passUnretained(memory)
        chain = unretainedChain(above: parent?.chain)
        chain.initializeElement(at: 0, to: Unmanaged.passUnretained(self))
    }

    deinit {
        UnsafeMutableRawPointer(statsUpdates).deallocate()
        chain.deallocate()
    }

    /// A chain of memcgs as deep as `path` ("/a/b": root, /a, /a/b), the last one returned,
    /// none limited.
    public static func chain(_ path: String) -> MemCgroup {
        var m = MemCgroup()
        var at = ""
        for part in path.split(separator: "/") {
            at += "/" + part
            m = MemCgroup(path: at, parent: m)
        }
        return m
    }

    /// Levels from this memcg up to the root, this one first.
    public var hierarchy: [MemCgroup] { chain.map { $0.takeUnretainedValue() } }

    /// Sets the limit (`memory.max`); usage above it stays until reclaim or frees bring it down.
    public func setLimit(pages: Int) { memory.limit.store(pages, ordering: .relaxed) }

    /// Charges that failed after reclaim (v2 `memory.events` oom).
    public var ooms: Int { oomEvents.load(ordering: .relaxed) }

    // MARK: Charging

    @inline(__always)
    func slot(_ k: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { slots.base + (currentThreadIndex() &* slots.stride &+ k) }

    /// `consume_stock()`: takes `n` pages from the calling thread's stock if it holds them.
    /// A compare-and-swap, because another thread may drain the stock (`drain_all_stock()`).
    @inline(__always)
    func consumeStock(_ n: Int) -> Bool {
        let p = slot(Slot.stock)
        var cur = p.pointee.load(ordering: .relaxed)
        while cur >= UInt64(n) {
            let r = p.pointee.compareExchange(expected: cur, desired: cur - UInt64(n), ordering: .relaxed)
            if r.exchanged { return true }
            cur = r.original
        }
        return false
    }

    /// `refill_stock()`: adds `n` charged pages to the calling thread's stock; a stock past
    /// `chargeBatch` is drained (given back to the counters).
    func refillStock(_ n: Int) {
        let p = slot(Slot.stock)
        if p.pointee.wrappingAdd(UInt64(n), ordering: .relaxed).newValue > UInt64(Self.chargeBatch) {
            drainStock(p)
        }
    }

    /// `drain_stock()`.
    func drainStock(_ p: UnsafeMutablePointer<Atomic<UInt64>>) {
        let n = Int(p.pointee.exchange(0, ordering: .relaxed))
        if n > 0 { memoryRef._withUnsafeGuaranteedRef { $0.uncharge(n) } }
    }

    /// `drain_all_stock()`: every thread's stock back to the counters (Linux queues this on
    /// each CPU; here the charging thread takes each stock with an exchange).
    public func drainAllStock() {
        for t in 0..<threadIndexHighWater() { drainStock(slots.base + t * slots.stride + Slot.stock) }
    }

    /// Pages held in stocks, all threads (racy).
    public var stocked: Int {
        (0..<threadIndexHighWater()).reduce(0) { $0 + Int((slots.base + $1 * slots.stride + Slot.stock).pointee.load(ordering: .relaxed)) }
    }

    /// `try_charge_memcg()`: charges `n` pages, the stock first. `reclaim` frees some memory
    /// and says how many pages it freed (nil: none to call); it is only looked at when the
    /// stock misses (reading a closure copies, and retains, its context).
    @inline(__always)
    func tryCharge(_ n: Int, reclaim: @autoclosure () -> (() -> Int)?) -> Bool {
        if consumeStock(n) { return true }
        return tryChargeSlow(n, reclaim: reclaim())
    }

    @inline(never)
    func tryChargeSlow(_ n: Int, reclaim: (() -> Int)?) -> Bool {
        var batch = Swift.max(Self.chargeBatch, n)
        var retries = Self.maxReclaimRetries
        var drained = false
        while true {
            if consumeStock(n) { return true }
            guard let over = memory.tryCharge(batch) else { break }
            // A batch is only an optimisation: try the pages asked for alone.
            if batch > n { batch = n; continue }
            // Other CPUs' stocks hold charged pages nobody uses.
            if !drained { drainAllStock(); drained = true; continue }
            // `try_to_free_mem_cgroup_pages()`: frees uncharge at once, so a retry sees them.
            let freed = reclaim?() ?? 0
            if over.usage + n <= over.max { continue }
            // Progress is worth another try only for small charges: a THP's 512 pages
            // (above `PAGE_ALLOC_COSTLY_ORDER`) would keep reclaim going for long.
            if freed > 0 && n <= Self.costlyPages { continue }
            retries -= 1
            if retries > 0 && reclaim != nil { continue }
            oomEvents.wrappingAdd(1, ordering: .relaxed)
            slot(Slot.failed).pointee.store(1, ordering: .relaxed)
            return false
        }
        if batch > n { refillStock(batch - n) }
        return true
    }

    /// Whether the calling thread's last charge failed, clearing the mark: the fault that got
    /// `.oom` from a failed charge has already reclaimed what it could.
    func takeChargeFailure() -> Bool {
        let p = slot(Slot.failed)
        guard p.pointee.load(ordering: .relaxed) != 0 else { return false }
        p.pointee.store(0, ordering: .relaxed)
        return true
    }

    // MARK: Statistics

    /// Statistics, summed over the threads (`memory.stat`).
    public struct Stat: Equatable, Sendable {
        /// Pages charged as anonymous (swap-cache pages included) and as page cache. Linux's
        /// `anon` and `file` count mapped anonymous pages and cached pages as the rmap and the
        /// page cache add them; the model counts them as they are charged.
        public var anon: Int
        public var file: Int
        /// Pages charged and uncharged so far (`pgpgin`, `pgpgout`).
        public var pgpgin: Int
        public var pgpgout: Int

        public init(anon: Int, file: Int, pgpgin: Int, pgpgout: Int) {
            self.anon = anon
            self.file = file
            self.pgpgin = pgpgin
            self.pgpgout = pgpgout
        }
    }

    /// `memory.stat` of this memcg alone (`mem_cgroup_flush_stats()` first: the shared count of
    /// updates to flush starts again from zero).
    public var stat: Stat {
        statsUpdates.pointee.store(0, ordering: .relaxed)
        func sum(_ k: Int) -> Int { Int(Int64(bitPattern: percpu.sum(k))) }
        return Stat(anon: sum(Slot.anon), file: sum(Slot.file), pgpgin: sum(Slot.pgpgin), pgpgout: sum(Slot.pgpgout))
    }

    /// `mem_cgroup_charge_statistics()` and the lruvec counts: `anon` and `file` pages just
    /// charged (negative: uncharged).
    @inline(__always)
    func account(anon: Int, file: Int) {
        slots.add(Slot.anon, UInt64(bitPattern: Int64(anon)))
        slots.add(Slot.file, UInt64(bitPattern: Int64(file)))
        let n = anon + file
        slots.add(n > 0 ? Slot.pgpgin : Slot.pgpgout, UInt64(Swift.abs(n)))
        rstatUpdated(Swift.abs(n))
    }

    /// `memcg_rstat_updated()`: counts `n` updates at each level; a level's thread count
    /// reaching `chargeBatch` moves to its shared count, and a level whose shared count already
    /// calls for a flush (`memcg_vmstats_needs_flush()`: past a batch per CPU) ends the walk.
    @inline(__always)
    func rstatUpdated(_ n: Int) {
        let threshold = Self.chargeBatch * onlineCPUs
        for m in chain {
            let flushable = m._withUnsafeGuaranteedRef { level -> Bool in
                if level.statsUpdates.pointee.load(ordering: .relaxed) > threshold { return true }
                let p = level.slot(Slot.pending)
                let pending = p.pointee.load(ordering: .relaxed) &+ UInt64(n)
                if pending < UInt64(Self.chargeBatch) {
                    p.pointee.store(pending, ordering: .relaxed)
                } else {
                    p.pointee.store(0, ordering: .relaxed)
                    level.statsUpdates.pointee.wrappingAdd(Int(pending), ordering: .relaxed)
                }
                return false
            }
            if flushable { break }
        }
    }

    let onlineCPUs = Swift.max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
}

/// Room for a level and, after it, the chain of its ancestors `above` (nil: none), copied;
/// the caller puts itself at index 0 once it is initialised.
private func unretainedChain<T: AnyObject>(above: UnsafeMutableBufferPointer<Unmanaged<T>>?) -> UnsafeMutableBufferPointer<Unmanaged<T>> {
    let chain = UnsafeMutableBufferPointer<Unmanaged<T>>.allocate(capacity: 1 + (above?.count ?? 0))
    if let above { _ = UnsafeMutableBufferPointer(rebasing: chain[1...]).initialize(from: above) }
    return chain
}
