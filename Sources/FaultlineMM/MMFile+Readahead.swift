import FaultlineSync

/// `struct file_ra_state`: the readahead window (`start`, `size` pages, the last `asyncSize`
/// of them read ahead of need) and the folio order it was read at.
struct ReadaheadState {
    var start: UInt64 = 0
    var size: UInt64 = 0
    var asyncSize: UInt64 = 0
    var order = 0
}

extension MMFile {
    /// `MAX_PAGECACHE_ORDER` on x86-64: PMD order.
    static let maxPageCacheOrder = 9

    /// `do_sync_mmap_readahead()`: a fault's page-cache miss at `index` reads around it —
    /// `readaheadPages` centred on the page (`ra->start = pgoff - ra_pages / 2`), the last
    /// quarter marked to read further ahead, in order-0 folios (mmap read-around resets the
    /// order). VM_RAND_READ, or no readahead, reads the page alone. False when out of frames.
    @discardableResult
    public func readAround(_ index: UInt64, random: Bool = false) -> Bool {
        let ra = UInt64(readaheadPages)
        if random || ra <= 1 || isShmem || index >= sizeInPages { return readAhead(index) }
        let start = index > ra / 2 ? index - ra / 2 : 0
        // One I/O for the window (the device reads it as one request).
        if ioLatencyNs > 0 { simulateIO() }
        raLock.lock()
        self.ra = ReadaheadState(start: start, size: ra, asyncSize: ra / 4, order: 0)
        raLock.unlock()
        guard readOrder(start: start, size: ra, mark: start + ra - ra / 4, order: 0) else { return false }
        return cachedPage(index) != nil || readAhead(index)
    }

    /// `page_cache_async_ra()`: a fault found a folio marked PG_readahead (the flag is
    /// cleared by the caller). When it is where the window expected it, the window moves on by
    /// its size and its folios grow by two orders (up to `maxFolioOrder`), all of it read
    /// ahead (`async_size = size`: the new window's first folio carries the mark). Measured on
    /// 6.18 (ext4, read_ahead_kb 8192): a sequential pass over a fresh 128 MiB shared mapping
    /// adds 2048 pages of order 0, then 2048 each of orders 2, 4, 6, 8, then order 9.
    public func asyncReadahead(_ index: UInt64, order folioOrder: Int) {
        let maxPages = UInt64(readaheadPages)
        guard maxPages > 1, !isShmem else { return }
        asyncReadaheadHook?()
        raLock.lock()
        var r = ra
        let expected = (r.start &+ r.size &- r.asyncSize) & ~((1 << UInt64(folioOrder)) - 1)
        guard r.size > 0, index == expected else {
            raLock.unlock()
            return
        }
        r.start &+= r.size
        r.size = max(r.size, Self.nextReadaheadSize(r.size, maxPages))
        r.asyncSize = r.size
        r.order = min(folioOrder + 2, maxFolioOrder, Self.maxPageCacheOrder)
        ra = r
        raLock.unlock()
        _ = readOrder(start: r.start, size: r.size, mark: r.start, order: r.order)
    }

    /// `get_next_ra_size()`: the window quadruples while small, doubles, then stays at the max.
    static func nextReadaheadSize(_ cur: UInt64, _ max: UInt64) -> UInt64 {
        if cur < max / 16 { return 4 * cur }
        if cur <= max / 2 { return 2 * cur }
        return max
    }

    /// `page_cache_ra_order()`: folios of `order` over [start, start + size) below EOF —
    /// smaller where the index is not aligned to it or the window would end inside it; the
    /// folio holding `mark` gets PG_readahead. A page already cached stops the large folios
    /// (`ra_alloc_folio` fails with EEXIST); the rest is read in order-0 pages around the
    /// cached ones (`do_page_cache_ra`). False when out of frames.
    func readOrder(start: UInt64, size: UInt64, mark: UInt64, order: Int) -> Bool {
        let end = min(start &+ size, sizeInPages, UInt64(capacityPages))
        var index = start
        var large = order > 0
        while index < end {
            var o = large ? order : 0
            if o > 0 && index & ((1 << UInt64(o)) - 1) != 0 { o = index.trailingZeroBitCount }
            while o > 0 && index &+ (1 << UInt64(o)) > end { o -= 1 }
            let n = UInt64(1) << UInt64(o)
            switch addFolio(index, order: o, marked: mark >= index && mark < index &+ n) {
            case .added: index &+= n
            case .exists:
                if o > 0 { large = false } else { index &+= 1 }
            case .outOfFrames: return false
            }
        }
        return true
    }

    /// Puts pages [index, index + pages) into the cache as one folio, as a recording saw the
    /// host add them (`filemap:mm_filemap_add_to_page_cache`), or page by page where part of
    /// it is cached already or it is not an aligned power of two. False when out of frames.
    @discardableResult
    public func cacheFolio(_ index: UInt64, pages: UInt64) -> Bool {
        let end = min(index &+ pages, sizeInPages, UInt64(capacityPages))
        guard index < end else { return true }
        if pages > 1, pages & (pages - 1) == 0, index & (pages - 1) == 0, index &+ pages == end {
            switch addFolio(index, order: pages.trailingZeroBitCount, marked: false) {
            case .added: return true
            case .outOfFrames: return false
            case .exists: break
            }
        }
        for i in index..<end where cachedPage(i) == nil {
            if case .outOfFrames = addFolio(i, order: 0, marked: false) { return false }
        }
        return true
    }

    enum AddResult { case added, exists, outOfFrames }

    /// `filemap_add_folio()`: pages [index, index + 2^order) enter the cache as one folio, or
    /// none does (a page already there).
    func addFolio(_ index: UInt64, order: Int, marked: Bool) -> AddResult {
        let n = 1 << order
        for i in 0..<UInt64(n) where cachedPage(index &+ i) != nil { return .exists }
        var flags = cacheFlags | (UInt32(order) << PageMeta.Flag.orderShift)
        let backing = self.backing
        if marked { flags |= PageMeta.Flag.reclaim }
        var added: [(index: UInt64, frame: FrameNumber)] = []
        added.reserveCapacity(n)
        for i in 0..<UInt64(n) {
            guard let f = frames.allocate(zeroed: backing == nil, flags: flags) else {
                for a in added { removeUnmapped(a.index, a.frame) }
                return .outOfFrames
            }
            let k = index &+ i
            if let backing {
                frames.pointer(f).copyMemory(from: backing + Int(k) * Int(Linux.pageSize), byteCount: Int(Linux.pageSize))
            }
            setCacheRmap(f, k)
            // The cache's reference.
            let r = slotCreating(k).pointee.compareExchange(expected: 0, desired: UInt32(f + 1), ordering: .acquiringAndReleasing)
            guard r.exchanged else {
                frames.put(f)
                for a in added { removeUnmapped(a.index, a.frame) }
                return .exists
            }
            misses.wrappingAdd(1, ordering: .relaxed)
            frames.lruAdd(f)
            added.append((k, f))
        }
        return .added
    }

    /// Undoes `addFolio`'s insertion of page `index` (a folio that could not be completed):
    /// the cache's reference goes, unless truncation took the page first.
    private func removeUnmapped(_ index: UInt64, _ f: FrameNumber) {
        if slotCreating(index).pointee.compareExchange(expected: UInt32(f + 1), desired: 0, ordering: .acquiringAndReleasing).exchanged {
            frames.put(f)
        }
    }

    /// The page-cache index range of the folio holding `index`, if that page is cached.
    @inlinable
    public func folioRange(_ index: UInt64) -> Range<UInt64>? {
        guard let f = cachedPage(index) else { return nil }
        let n = UInt64(1) << UInt64(frames.page(f).pointee.folioOrder)
        let head = index & ~(n - 1)
        return head..<(head &+ n)
    }
}
