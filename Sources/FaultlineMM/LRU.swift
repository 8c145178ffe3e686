import CFaultline
import FaultlineSync
import Synchronization

/// The LRU lists a page can be on (`enum lru_list`).
public enum LRUList: Int, CaseIterable, Sendable {
    case inactiveAnon = 0, activeAnon, inactiveFile, activeFile, unevictable

    /// Anonymous (swap-backed) or file list.
    var isAnon: Bool { self == .inactiveAnon || self == .activeAnon }
    var isActive: Bool { self == .activeAnon || self == .activeFile }
}

/// `struct lruvec` of the model's one node (mm/swap.c, mm/vmscan.c), the classic
/// active/inactive lists: the host runs them (its `/sys/kernel/mm` has no `lru_gen`), so the
/// model ages pages as the host's reclaim does.
///
/// - Lists of frames, doubly linked by frame number, under `lock` (`lruvec->lru_lock`); a
///   listed page has `PageMeta.Flag.lru`, and `.active` when on an active list.
/// - New pages go to a per-thread batch first (`cpu_fbatches.lru_add`, `folio_add_lru()`),
///   which holds a reference to each; a full batch (31 pages, `FOLIO_BATCH_SIZE`) is moved to
///   the lists under one acquisition of the lock (`folio_batch_move_lru()`). Pages in a batch
///   are not on a list yet: reclaim cannot isolate them, as in Linux.
/// - A page whose last reference goes leaves its list (`__page_cache_release()` from
///   `free_unref_folios()`); reclaim isolates pages (`folio_isolate_lru()`: off the list,
///   `.lru` cleared, a reference held) and puts back what it keeps (`folio_putback_lru()`).
///
/// The model lists pages, Linux folios: a large page-cache folio's pages age and are
/// reclaimed one by one here.
public final class LRUVec: @unchecked Sendable {
    struct Link { var prev: UInt32; var next: UInt32; var list: Int32 }

    /// `FOLIO_BATCH_SIZE`.
    public static let batchSize = 31

    /// The frames' `struct page`s, read directly (a class reference loaded on the fault path
    /// would cost a retain), and the pool itself for frees (set once it exists).
    let meta: UnsafeMutablePointer<PageMeta>
    unowned(unsafe) var pool: FramePool? = nil
    /// `lruvec->lru_lock`.
    let lock = SpinLock()
    /// Per frame, then one sentinel per list (index `capacity + list`).
    @exclusivity(unchecked) var links: UnsafeMutablePointer<Link>
    let sizes: UnsafeMutablePointer<Int> = {
        let p = UnsafeMutablePointer<Int>.allocate(capacity: LRUList.allCases.count)
        p.initialize(repeating: 0, count: LRUList.allCases.count)
        return p
    }()
    let capacity: Int
    /// Per thread: a lock word, a count and up to 31 frames (its own line pair).
    let batches: UnsafeMutableRawPointer
    let batchStride: Int
    /// Times a batch was moved to the lists (`folio_batch_move_lru()` calls).
    let drains = Atomic<Int>(0)
    /// Held for read while reclaim follows a page-cache page's `mapping` to its file; a file
    /// going away clears its pages' mappings under it for write (Linux: the folio lock and
    /// the inode's own reference keep the mapping valid).
    let fileLock = RWSemaphore()

    init(meta: UnsafeMutablePointer<PageMeta>, capacity: Int) {
        self.meta = meta
        self.capacity = capacity
        links = .allocate(capacity: capacity + LRUList.allCases.count)
        for i in 0..<capacity { (links + i).initialize(to: Link(prev: 0, next: 0, list: -1)) }
        for l in 0..<LRUList.allCases.count {
            let s = UInt32(capacity + l)
            (links + Int(s)).initialize(to: Link(prev: s, next: s, list: Int32(l)))
        }
        batchStride = (8 + 8 + 4 * Self.batchSize + cacheLineStride - 1) / cacheLineStride * cacheLineStride
        batches = UnsafeMutableRawPointer.allocate(byteCount: batchStride * Int(FL_MAX_THREADS), alignment: cacheLineStride)
        batches.initializeMemory(as: UInt8.self, repeating: 0, count: batchStride * Int(FL_MAX_THREADS))
    }

    @inline(__always) func page(_ f: FrameNumber) -> UnsafeMutablePointer<PageMeta> { meta + Int(f) }

    /// `folio_try_get()` (as `FramePool.tryGet`).
    @inline(__always) func tryGet(_ f: FrameNumber) -> Bool {
        let p = page(f)
        var c = p.pointee.refcount.load(ordering: .relaxed)
        while c > 0 {
            let r = p.pointee.refcount.compareExchange(expected: c, desired: c + 1, ordering: .acquiring)
            if r.exchanged { return true }
            c = r.original
        }
        return false
    }

    deinit {
        sizes.deallocate()
        links.deallocate()
        batches.deallocate()
    }

    /// The list a page belongs on now, from its flags (`folio_lru_list()`): swap-backed pages
    /// (anonymous not lazy-free, shared memory) on the anon lists, others on the file lists;
    /// a page with a locked mapping on the unevictable list.
    @inline(__always)
    func listFor(_ f: FrameNumber) -> LRUList {
        let p = page(f)
        if p.pointee.mlockCount.load(ordering: .relaxed) > 0 { return .unevictable }
        let flags = p.pointee.flags.load(ordering: .relaxed)
        let anon = flags & PageMeta.Flag.anon != 0 ? flags & PageMeta.Flag.lazyFree == 0 : flags & PageMeta.Flag.swapBacked != 0
        let active = flags & PageMeta.Flag.active != 0
        return anon ? (active ? .activeAnon : .inactiveAnon) : (active ? .activeFile : .inactiveFile)
    }

    // MARK: List operations (lock held)

    /// `lruvec_add_folio()` (head) or `lruvec_add_folio_tail()`.
    func addLocked(_ f: FrameNumber, _ list: LRUList, tail: Bool = false) {
        let head = UInt32(capacity + list.rawValue)
        let (prev, next) = tail ? (links[Int(head)].prev, head) : (head, links[Int(head)].next)
        links[Int(f)] = Link(prev: prev, next: next, list: Int32(list.rawValue))
        links[Int(prev)].next = f
        links[Int(next)].prev = f
        sizes[list.rawValue] += 1
        // PG_lru, and PG_active / PG_unevictable as the list says: one set, one clear.
        let set = PageMeta.Flag.lru | (list.isActive ? PageMeta.Flag.active : 0) | (list == .unevictable ? PageMeta.Flag.unevictable : 0)
        let clear = (list.isActive ? 0 : PageMeta.Flag.active) | (list == .unevictable ? 0 : PageMeta.Flag.unevictable)
        let p = page(f)
        p.pointee.flags.bitwiseOr(set, ordering: .relaxed)
        p.pointee.flags.bitwiseAnd(~clear, ordering: .relaxed)
    }

    /// `lruvec_del_folio()`: off its list, `.lru` cleared. Returns the list it was on.
    @discardableResult
    func delLocked(_ f: FrameNumber) -> LRUList {
        let l = links[Int(f)]
        precondition(l.list >= 0, "frame \(f) is not on an LRU list")
        links[Int(l.prev)].next = l.next
        links[Int(l.next)].prev = l.prev
        links[Int(f)].list = -1
        sizes[Int(l.list)] -= 1
        page(f).pointee.flags.bitwiseAnd(~PageMeta.Flag.lru, ordering: .relaxed)
        return LRUList(rawValue: Int(l.list))!
    }

    // MARK: Adding (per-thread batches)

    @inline(__always)
    func batch() -> UnsafeMutableRawPointer { batches + currentThreadIndex() &* batchStride }

    /// `folio_add_lru()`: `f` (the caller holds a reference) goes to this thread's batch with
    /// a reference of the batch's own; a full batch moves to the lists.
    @inline(__always)
    public func add(_ f: FrameNumber) {
        let p = page(f)
        p.pointee.refcount.wrappingAdd(1, ordering: .relaxed)   // the batch's reference (`folio_get`)
        p.pointee.flags.bitwiseOr(PageMeta.Flag.lruBatch, ordering: .relaxed)
        let b = batch()
        let word = b.assumingMemoryBound(to: Atomic<UInt32>.self)
        // The batch's lock (`local_lock`): only `drainAll` from another thread contends.
        while !word.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { fl_cpu_relax() }
        let n = (b + 8).load(as: Int.self)
        (b + 16 + 4 * n).storeBytes(of: f, as: FrameNumber.self)
        if n + 1 == Self.batchSize {
            moveBatch(b, n + 1)
        } else {
            (b + 8).storeBytes(of: n + 1, as: Int.self)
            word.pointee.store(0, ordering: .releasing)
        }
    }

    /// `folio_batch_move_lru(lru_add)`: the batch's pages onto their lists under one lock,
    /// then the batch's references go. Called with the batch's lock held; releases it.
    @inline(never)
    func moveBatch(_ b: UnsafeMutableRawPointer, _ n: Int) {
        withUnsafeTemporaryAllocation(of: FrameNumber.self, capacity: Self.batchSize) { pages in
            for i in 0..<n { pages[i] = (b + 16 + 4 * i).load(as: FrameNumber.self) }
            (b + 8).storeBytes(of: 0, as: Int.self)
            b.assumingMemoryBound(to: Atomic<UInt32>.self).pointee.store(0, ordering: .releasing)
            drains.wrappingAdd(1, ordering: .relaxed)
            lock.lock()
            for i in 0..<n {
                let f = pages[i]
                // A page whose only reference is the batch's is on its way out: not listed.
                if page(f).pointee.refcount.load(ordering: .relaxed) > 1 { addLocked(f, listFor(f)) }
                page(f).pointee.flags.bitwiseAnd(~PageMeta.Flag.lruBatch, ordering: .relaxed)
            }
            lock.unlock()
            // The batch's references go; the pages it held last are freed after a grace period.
            var dead: [FrameNumber] = []
            for i in 0..<n where page(pages[i]).pointee.refcount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                dead.append(pages[i])
            }
            if !dead.isEmpty { pool.unsafelyUnwrapped.freeDeferred(dead) }
        }
    }

    /// `lru_add_drain()`: this thread's batch to the lists.
    public func drainLocal() { drain(batch()) }

    /// `lru_add_drain_all()`: every thread's batch to the lists.
    public func drainAll() {
        for t in 0..<Int(FL_MAX_THREADS) { drain(batches + t * batchStride) }
    }

    func drain(_ b: UnsafeMutableRawPointer) {
        let word = b.assumingMemoryBound(to: Atomic<UInt32>.self)
        guard (b + 8).load(as: Int.self) > 0 || word.pointee.load(ordering: .relaxed) != 0 else { return }
        while !word.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { fl_cpu_relax() }
        let n = (b + 8).load(as: Int.self)
        if n == 0 { word.pointee.store(0, ordering: .releasing); return }
        moveBatch(b, n)
    }

    // MARK: Removal, isolation, putback

    /// The last reference to `f` is gone: off its list (`__page_cache_release()`).
    @inline(__always)
    func release(_ f: FrameNumber) {
        guard page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 else { return }
        lock.lock()
        if page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 { delLocked(f) }
        lock.unlock()
    }

    /// `release()` for many pages under one acquisition (`free_unref_folios()`'s batches).
    func release(_ pages: [FrameNumber]) {
        var any = false
        for f in pages where page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 { any = true; break }
        guard any else { return }
        lock.lock()
        for f in pages where page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 { delLocked(f) }
        lock.unlock()
    }

    /// `folio_isolate_lru()`: takes `f` off its list with a reference for the caller; false if
    /// it is not on a list (in a batch, isolated by another, or being freed).
    public func isolate(_ f: FrameNumber) -> Bool {
        guard page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 else { return false }
        lock.lock()
        defer { lock.unlock() }
        guard page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0, tryGet(f) else { return false }
        delLocked(f)
        return true
    }

    /// `isolate_lru_folios()`: up to `n` pages from the tail of `list`, each with a reference.
    /// Returns them and how many were scanned.
    func isolateTail(_ list: LRUList, _ n: Int) -> (pages: [FrameNumber], scanned: Int) {
        var out: [FrameNumber] = []
        var scanned = 0
        lock.lock()
        let head = UInt32(capacity + list.rawValue)
        var cur = links[Int(head)].prev
        while cur != head && out.count < n && scanned < 4 * n {
            let prev = links[Int(cur)].prev
            scanned += 1
            // A page being freed (no references left) stays until its free takes it off.
            if tryGet(cur) {
                delLocked(cur)
                out.append(cur)
            }
            cur = prev
        }
        lock.unlock()
        return (out, scanned)
    }

    /// `folio_putback_lru()` / `move_folios_to_lru()`: isolated pages back on `list` (nil: the
    /// list their flags say), then the isolation references go.
    func putback(_ pages: [(FrameNumber, LRUList?)], tail: Bool = false) {
        guard !pages.isEmpty else { return }
        lock.lock()
        for (f, l) in pages { addLocked(f, l ?? listFor(f), tail: tail) }
        lock.unlock()
        pool.unsafelyUnwrapped.putDeferred(pages.map { $0.0 })
    }

    /// `folio_putback_lru()` for one page.
    public func putback(_ f: FrameNumber) { putback([(f, nil)]) }

    /// Moves a listed page to the list its flags say now (`folio_activate()`,
    /// `deactivate_file_folio()`, `mark_page_lazyfree()`, munlock's return to the evictable
    /// lists), at the head; `active` sets or clears `.active` first (nil: unchanged).
    func move(_ f: FrameNumber, active: Bool?, tail: Bool = false) {
        let p = page(f)
        guard p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 else {
            // In a batch or isolated: the flag is what its list will be chosen by.
            if let active {
                if active { p.pointee.flags.bitwiseOr(PageMeta.Flag.active, ordering: .relaxed) }
                else { p.pointee.flags.bitwiseAnd(~PageMeta.Flag.active, ordering: .relaxed) }
            }
            return
        }
        lock.lock()
        defer { lock.unlock() }
        if let active {
            if active { p.pointee.flags.bitwiseOr(PageMeta.Flag.active, ordering: .relaxed) }
            else { p.pointee.flags.bitwiseAnd(~PageMeta.Flag.active, ordering: .relaxed) }
        }
        guard p.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 else { return }
        delLocked(f)
        addLocked(f, listFor(f), tail: tail)
    }

    /// `mlock_folio()` / `munlock_folio()`: a listed page whose lock count crossed zero moves
    /// to or from the unevictable list (a page in a batch or isolated gets its list later
    /// from its count).
    func mlockChanged(_ f: FrameNumber) {
        guard page(f).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0 else { return }
        move(f, active: nil)
    }

    // MARK: Reading

    /// Pages on each list (`lruvec_page_state`: nr_inactive_anon, …).
    public var listSizes: [LRUList: Int] {
        lock.withLock { Dictionary(uniqueKeysWithValues: LRUList.allCases.map { ($0, sizes[$0.rawValue]) }) }
    }

    /// Pages waiting in per-thread batches (racy).
    public var batchedPages: Int {
        (0..<Int(FL_MAX_THREADS)).reduce(0) { $0 + (batches + $1 * batchStride + 8).load(as: Int.self) }
    }

    /// Whether `f` is on a list, and which (checks).
    func listOf(_ f: FrameNumber) -> LRUList? {
        lock.withLock { links[Int(f)].list >= 0 ? LRUList(rawValue: Int(links[Int(f)].list)) : nil }
    }

    /// What is wrong with the lists (quiescent checks): each list's links and size agree, each
    /// page on one has `.lru`, is not free, and `.active` as its list says.
    func problems() -> [String] {
        var out: [String] = []
        lock.lock()
        defer { lock.unlock() }
        var listed = 0
        for l in LRUList.allCases {
            let head = UInt32(capacity + l.rawValue)
            var n = 0
            var prev = head
            var cur = links[Int(head)].next
            while cur != head {
                if links[Int(cur)].prev != prev { out.append("lru \(l): broken link at frame \(cur)"); break }
                if links[Int(cur)].list != Int32(l.rawValue) { out.append("lru \(l): frame \(cur) says list \(links[Int(cur)].list)") }
                let flags = page(cur).pointee.flags.load(ordering: .relaxed)
                if flags & PageMeta.Flag.lru == 0 { out.append("lru \(l): frame \(cur) without PG_lru") }
                if flags & PageMeta.Flag.free != 0 { out.append("lru \(l): frame \(cur) is free") }
                if (flags & PageMeta.Flag.active != 0) != l.isActive { out.append("lru \(l): frame \(cur) PG_active wrong") }
                n += 1
                if n > capacity { out.append("lru \(l): cycle"); break }
                prev = cur
                cur = links[Int(cur)].next
            }
            if n != sizes[l.rawValue] { out.append("lru \(l): \(n) pages linked, size says \(sizes[l.rawValue])") }
            listed += n
        }
        for f in 1..<capacity where page(FrameNumber(f)).pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.lru != 0
            && links[f].list < 0 {
            out.append("frame \(f) has PG_lru but is on no list")
        }
        _ = listed
        return out
    }
}
