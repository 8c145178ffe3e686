import FaultlineSync
import Synchronization

// Truncation: ftruncate's truncate_setsize() + truncate_pagecache(), and the reverse map of a
// file that it needs (i_mmap). Probed on the host (Linux 6.18, ext4), each kept as a test in
// MemoryFidelityTests:
// - shrinking unmaps every page at or beyond the new last page from every mapping of the
//   file, private copies included (SIGBUS on the next access), removes them from the page
//   cache, and zeroes the rest of the new last page (a byte beyond the new EOF reads 0 through
//   any mapping of it, and keeps reading 0 after the file grows again);
// - growing zeroes the old last page beyond the old EOF (a byte stored there through a
//   mapping is gone), and the new pages read as zeros.
//
// Linux links a VMA into i_mmap and changes its range inside one i_mmap_lock_write section
// per split or merge (vma_prepare .. vma_complete), so that a truncation never sees a moment
// where pages of the file are mapped by a VMA it cannot find. The model does the same: a
// split or merge takes the file's `iMmapLock` for write around all its range changes, links
// and unlinks (`AddressSpace.withIMmapWrite`); a lone link or unlink takes it itself.

extension MMFile {
    /// Whether a call made inside `withIMmapWrite` must take the lock itself.
    @inline(__always)
    func mustLock(held: Bool) -> Bool { !held || _brokenIMmapSections }

    /// `vma_link_file()`: `v`, a VMA of `mm`, maps this file. `held`: the caller holds
    /// `iMmapLock` for write.
    func iMmapLink(_ v: VMARef, _ mm: AddressSpace, held: Bool = false) {
        let lock = mustLock(held: held)
        if lock { iMmapLock.lockWrite() }
        iMmap.insert(v, mm)
        if lock { iMmapLock.unlockWrite() }
    }

    /// `unlink_file_vma()`.
    func iMmapUnlink(_ v: VMARef, held: Bool = false) {
        let lock = mustLock(held: held)
        if lock { iMmapLock.lockWrite() }
        iMmap.remove(v)
        if lock { iMmapLock.unlockWrite() }
    }

    /// What is wrong with `v`'s place in i_mmap, if anything: linked with `mm`, over the file
    /// pages the VMA maps now.
    func iMmapProblem(_ v: VMARef, _ mm: AddressSpace) -> String? {
        iMmapLock.lockRead()
        defer { iMmapLock.unlockRead() }
        return iMmap.problem(v, mm)
    }

    /// VMAs mapping the file now (for checks).
    public var mappingCount: Int {
        iMmapLock.lockRead()
        defer { iMmapLock.unlockRead() }
        return iMmap.count
    }

    /// The interval tree's own invariants, and each node's range its VMA's (for checks: call
    /// with no split or merge of the file's VMAs running).
    public func _checkIMmap() {
        iMmapLock.lockRead()
        defer { iMmapLock.unlockRead() }
        iMmap._checkInvariants()
    }

    /// `do_truncate()` → `truncate_setsize()`: sets the size to `newSize`. ENOSPC when it is
    /// beyond the model's capacity for the file (a limit of the model's page-cache table, not
    /// of Linux, whose files are sparse: callers size `capacity` for what they will truncate to).
    public func truncate(to newSize: UInt64) -> Result<Void, Errno> {
        guard newSize <= UInt64(capacityPages) << Linux.pageShift else { return .failure(.ENOSPC) }
        let old = sizeWord.exchange(newSize, ordering: .acquiringAndReleasing)
        if newSize > old {
            // pagecache_isize_extended(): what was beyond the old EOF is zeros now.
            zero(from: old, to: Linux.pageAlign(old))
            return .success(())
        }
        guard newSize < old else { return .success(()) }
        // truncate_pagecache(): unmap, drop the pages, unmap again (a fault that found a page
        // before it left the cache may have mapped it since).
        let hole = Linux.pageAlign(newSize) >> Linux.pageShift
        unmapMappingRange(fromPage: hole)
        truncateInodePages(fromPage: hole)
        zero(from: newSize, to: Linux.pageAlign(newSize))
        unmapMappingRange(fromPage: hole)
        return .success(())
    }

    /// `unmap_mapping_range(mapping, holebegin, 0, even_cows = 1)`: zaps, in every VMA of the
    /// file, the pages of file index `hole` and beyond, private copies included.
    func unmapMappingRange(fromPage hole: UInt64) {
        unmapMappingRange(pages: hole..<UInt64.max, evenCows: true)
    }

    /// `unmap_mapping_range()` over file pages `pages`; without `evenCows` a private VMA's
    /// copies of them stay.
    func unmapMappingRange(pages: Range<UInt64>, evenCows: Bool) {
        guard !pages.isEmpty else { return }
        iMmapLock.lockRead()
        iMmap.forEachOverlap(pages.lowerBound, pages.upperBound) { v, owner in
            let pgoff = v.vmPgoff
            let vmaPages = (v.vmEnd &- v.vmStart) >> Linux.pageShift
            let lo = max(pages.lowerBound, pgoff)
            let hi = min(pages.upperBound, pgoff &+ vmaPages)
            guard lo < hi else { return }
            let start = v.vmStart &+ (lo &- pgoff) << Linux.pageShift
            let end = v.vmStart &+ (hi &- pgoff) << Linux.pageShift
            owner.unmapMappingRange(v, start, end, fileOnly: !evenCows)
        }
        iMmapLock.unlockRead()
    }

    /// `vfs_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` over whole pages (what
    /// MADV_REMOVE asks; ext4 and shmem both punch holes): the pages leave every shared
    /// mapping and the cache, private copies stay, the range reads as zeros; the size stays.
    func punchHole(pages requested: Range<UInt64>) {
        let end = min(requested.upperBound, Linux.pageAlign(size) >> Linux.pageShift, UInt64(capacityPages))
        guard requested.lowerBound < end else { return }
        let pages = requested.lowerBound..<end
        unmapMappingRange(pages: pages, evenCows: false)
        for index in pages {
            if let f = cachedPage(index) { remove(index, ifHolding: f) }
        }
        if let backing {
            cacheLock.lock()
            _ = backing
            zeroBacking(Int(pages.lowerBound), Int(pages.count))
            cacheLock.unlock()
        }
        unmapMappingRange(pages: pages, evenCows: false)
    }

    /// `truncate_inode_pages_range()`: pages `hole` and beyond leave the cache (a fault holding
    /// its own reference keeps the frame until it lets go), and the backing contents beyond
    /// them become zeros.
    func truncateInodePages(fromPage hole: UInt64) {
        let keep = Int(min(hole, UInt64(capacityPages)))
        for c in (keep >> Self.chunkShift)..<chunkCount {
            guard let t = chunk(c) else { continue }
            for i in max(keep - (c << Self.chunkShift), 0)..<slotsInChunk(c) {
                let v = t[i].exchange(0, ordering: .acquiringAndReleasing)
                if v != 0 { dropFromCache(FrameNumber(v - 1)) }
            }
        }
        if let backing, keep < capacityPages {
            // Under the lock writeback holds while it checks the page is still cached.
            cacheLock.lock()
            _ = backing
            zeroBacking(keep, capacityPages - keep)
            cacheLock.unlock()
        }
    }

    /// Zeroes bytes `[from, to)` of one page (`folio_zero_range`), in the cache and behind it.
    func zero(from: UInt64, to: UInt64) {
        guard to > from else { return }
        let index = from >> Linux.pageShift
        let offset = Int(Linux.offsetInPage(from))
        let count = Int(to - from)
        if let f = getPage(index) {
            (frames.pointer(f) + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
            frames.put(f)
        }
        if let backing, index < UInt64(capacityPages) {
            cacheLock.lock()
            (backing + Int(index) * Int(Linux.pageSize) + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
            cacheLock.unlock()
        }
    }

    /// `invalidate_mapping_pages()` (POSIX_FADV_DONTNEED, drop_caches): clean pages nobody maps
    /// leave the cache; mapped or dirty ones stay. Returns how many left.
    @discardableResult
    public func invalidateMappingPages() -> Int {
        var dropped = 0
        for c in 0..<chunkCount {
            guard let t = chunk(c) else { continue }
            for i in 0..<slotsInChunk(c) {
                let v = t[i].load(ordering: .acquiring)
                guard v != 0 else { continue }
                let meta = frames.page(FrameNumber(v - 1))
                if meta.pointee.mapcount.load(ordering: .relaxed) != 0 { continue }
                if meta.pointee.flags.load(ordering: .relaxed) & PageMeta.Flag.dirty != 0 { continue }
                if t[i].compareExchange(expected: v, desired: 0, ordering: .acquiringAndReleasing).exchanged {
                    dropFromCache(FrameNumber(v - 1))
                    dropped += 1
                }
            }
        }
        return dropped
    }
}

extension AddressSpace {
    /// `unmap_mapping_range_vma()`: truncation's zap of `[start, end)` in `v`, under the
    /// file's i_mmap lock rather than this address space's locks (page tables are freed after
    /// a grace period, so the walk is an RCU reader).
    func unmapMappingRange(_ v: VMARef, _ start: UInt64, _ end: UInt64, fileOnly: Bool = false) {
        rcuRead.readLock()
        let cleared = zapRange(start, end, vma: v, dropMarkers: false, fileOnly: fileOnly)
        rcuRead.readUnlock()
        if cleared > 0 { flushTLBRange() }
    }

    /// `ftruncate(2)` on `file` (nil: the descriptor is not open). `length` is the register's
    /// value: negative lengths are EINVAL before the descriptor is looked at, as in
    /// `do_sys_ftruncate()`.
    public func ftruncate(_ file: MMFile?, _ length: UInt64) -> Result<Void, Errno> {
        if Int64(bitPattern: length) < 0 { return .failure(.EINVAL) }
        guard let file else { return .failure(.EBADF) }
        // inode_newsize_ok(): beyond the file system's largest file.
        if length > file.maxBytes { return .failure(.EFBIG) }
        return file.truncate(to: length)
    }
}
