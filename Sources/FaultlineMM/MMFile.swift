import CFaultline
import FaultlineSync
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How the kernel places mappings of a file (its `f_op->get_unmapped_area`).
public enum FilePlacement: Sendable {
    /// `thp_get_unmapped_area`: ext4, xfs, btrfs… — large mappings start congruent to their
    /// file offset modulo 2 MiB, so page-cache folios can be mapped by PMDs.
    case thpAligned
    /// No callback (or shmem with huge pages off): the generic search.
    case plain
}

/// An in-memory file: a size, backing contents (the "disk"), and a page cache of frames shared
/// by every mapping of it (`struct address_space`). Anonymous shared memory is a file too
/// (`shmem_zero_setup`), shown as `/dev/zero (deleted)`.
///
/// A page-cache miss copies the page from the backing contents, after an optional simulated
/// I/O latency; fault paths that must not hold their lock across I/O ask `isCached` first.
public final class MMFile: @unchecked Sendable {
    public let path: String
    public let device: (major: UInt32, minor: UInt32)
    public let inode: UInt64
    /// Anonymous shared memory (`/dev/zero (deleted)`).
    public let isShmem: Bool
    public let ioLatencyNs: UInt64
    public let placement: FilePlacement
    @usableFromInline let frames: FramePool
    let sizeWord: Atomic<UInt64>
    /// Page cache (the kernel's xarray, two levels here): chunk tables of `chunkPages` slots,
    /// allocated on first use, each slot the frame number + 1 of a page index, 0 when not
    /// cached. Sparse, so that a 64 TiB MAP_NORESERVE shared mapping costs a top table only.
    @usableFromInline let chunks: UnsafeMutablePointer<Atomic<UInt>>
    @usableFromInline let chunkCount: Int
    public let capacityPages: Int
    /// File contents beyond the page cache (the "disk"); none reads as zeros. A file made
    /// without contents gets its backing at its first writeback (`writeBack`).
    let backingBits: Atomic<UInt>
    /// Whether the backing was mapped by `writeBack` (else allocated with the contents).
    let backingMapped = Atomic<Bool>(false)
    var backing: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: backingBits.load(ordering: .acquiring)) }
    /// Pages written back (`nr_written`).
    let written = Atomic<Int>(0)
    let cacheLock = SpinLock()
    let misses = Atomic<Int>(0)
    /// `i_mmap_rwsem`: truncation walks `iMmap` for read; linking, unlinking and resizing a
    /// VMA of the file take it for write.
    let iMmapLock = RWSemaphore()
    /// `i_mmap`: the VMAs mapping the file, each with its address space, in an interval tree
    /// over file pages (truncation and hole punching visit only the VMAs that map the pages).
    var iMmap = VMAIntervalTree()
    /// Broken on purpose, for the control that shows the race test can fail: a split or merge
    /// of this file's VMAs takes the i_mmap lock per link, unlink and range change (as the
    /// model did before), not once around them all. Per file, so that other tests running at
    /// the same time keep the real protocol.
    @_spi(Testing) public var _brokenIMmapSections = false

    static let inodes = Atomic<UInt64>(1000)

    /// The backing device's readahead window in pages (`bdi->ra_pages`, from `read_ahead_kb`;
    /// Linux's default 128 KiB). 0 turns readahead off: a miss reads its page alone.
    public var readaheadPages: Int = 32
    /// The largest page-cache folio (`mapping_max_folio_order()`): PMD order for a regular
    /// file (ext4 has large folios since 6.16), 0 for shared memory (its folios follow the
    /// huge= setting, not readahead).
    public var maxFolioOrder: Int
    /// `struct file_ra_state` (Linux keeps one per open file; the model one per file, shared
    /// by its mappings): the current window and the order its folios were read at.
    var ra = ReadaheadState()
    /// Called as a fault starts an async readahead (tests: which locks are held then).
    @_spi(Testing) public var asyncReadaheadHook: (() -> Void)?
    let raLock = SpinLock()

    /// - Parameters:
    ///   - path: the path `/proc/pid/maps` shows.
    ///   - size: bytes.
    ///   - contents: initial bytes (zero-filled beyond them); nil for a file of zeros.
    ///   - capacity: the most bytes the file may ever hold (page-cache table size).
    ///   - ioLatencyNs: simulated read latency of a page-cache miss (a major fault).
    ///   - frames: the frame pool its page cache takes frames from.
    ///   - isShmem: shared memory (tmpfs, memfd, shared anonymous); placed plainly unless `placement` says otherwise.
    ///   - device: the device numbers maps shows.
    ///   - inode: the inode number maps shows (a fresh one when nil).
    ///   - placement: how mmap places mappings of it (`thp_get_unmapped_area` or plain).
    public init(path: String, size: UInt64, contents: [UInt8]? = nil, capacity: UInt64? = nil,
                ioLatencyNs: UInt64 = 0, frames: FramePool, isShmem: Bool = false,
                device: (UInt32, UInt32) = (0xfe, 0), inode: UInt64? = nil, placement: FilePlacement? = nil) {
        self.path = path
        self.placement = placement ?? (isShmem ? .plain : .thpAligned)
        maxFolioOrder = isShmem ? 0 : 9
        self.isShmem = isShmem
        self.ioLatencyNs = ioLatencyNs
        self.frames = frames
        self.device = (device.0, device.1)
        self.inode = inode ?? MMFile.inodes.wrappingAdd(1, ordering: .relaxed).newValue
        sizeWord = Atomic(size)
        let cap = Linux.pageAlign(max(capacity ?? size, size)) / Linux.pageSize
        capacityPages = Int(cap)
        chunkCount = max((capacityPages + Self.chunkPages - 1) >> Self.chunkShift, 1)
        chunks = .allocate(capacity: chunkCount)
        for i in 0..<chunkCount { (chunks + i).initialize(to: Atomic(0)) }
        if let contents, !contents.isEmpty {
            let total = Int(cap) * Int(Linux.pageSize)
            let b = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 4096)
            b.initializeMemory(as: UInt8.self, repeating: 0, count: total)
            contents.withUnsafeBytes { b.copyMemory(from: $0.baseAddress!, byteCount: min(contents.count, total)) }
            backingBits = Atomic(UInt(bitPattern: b))
        } else {
            backingBits = Atomic(0)
        }
    }

    /// Anonymous shared memory of `size` bytes (`shmem_zero_setup`).
    static func shmem(size: UInt64, frames: FramePool) -> MMFile {
        MMFile(path: "/dev/zero (deleted)", size: size, frames: frames, isShmem: true, device: (0, 1))
    }

    deinit {
        iMmap.removeAll()
        // Reclaim finds a cached page's file through its mapping: no longer, once we go.
        frames.lru.fileLock.lockWrite()
        for c in 0..<chunkCount {
            guard let t = chunk(c) else { continue }
            for i in 0..<slotsInChunk(c) {
                let v = t[i].load(ordering: .relaxed)
                if v != 0 { frames.page(FrameNumber(v - 1)).pointee.mapping.store(0, ordering: .relaxed) }
            }
        }
        frames.lru.fileLock.unlockWrite()
        for c in 0..<chunkCount {
            guard let t = chunk(c) else { continue }
            for i in 0..<slotsInChunk(c) {
                let v = t[i].load(ordering: .relaxed)
                if v != 0 { frames.put(FrameNumber(v - 1)) }
            }
            t.deallocate()
        }
        chunks.deallocate()
        if let backing {
            if backingMapped.load(ordering: .relaxed) { munmap(backing, capacityPages * Int(Linux.pageSize)) }
            else { backing.deallocate() }
        }
    }

    /// `struct page` fields of a page entering the cache at `index`: its mapping (this file,
    /// unretained: `deinit` clears it under the LRU's file lock) and index, as reclaim's
    /// reverse map reads them.
    @inline(__always)
    func setCacheRmap(_ f: FrameNumber, _ index: UInt64) {
        let p = frames.page(f)
        p.pointee.mapping.store(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque()), ordering: .relaxed)
        p.pointee.index.store(index, ordering: .relaxed)
    }

    /// Flags of a new page-cache page.
    var cacheFlags: UInt32 { PageMeta.Flag.pageCache | (isShmem ? PageMeta.Flag.swapBacked : 0) }

    /// `writepage` + its completion, at once: page `index` (`f`, which the caller holds)
    /// goes to the backing contents if the cache still holds it there (truncation zeroes the
    /// backing under the same lock, after taking the page out). False if it left the cache.
    func writeBack(_ index: UInt64, _ f: FrameNumber) -> Bool {
        if backing == nil {
            let bytes = capacityPages * Int(Linux.pageSize)
            let m = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            precondition(m != MAP_FAILED, "cannot reserve \(bytes) bytes for a file's contents")
            if backingBits.compareExchange(expected: 0, desired: UInt(bitPattern: m!), ordering: .acquiringAndReleasing).exchanged {
                backingMapped.store(true, ordering: .relaxed)
            } else {
                munmap(m, bytes)
            }
        }
        cacheLock.lock()
        defer { cacheLock.unlock() }
        guard cachedPage(index) == f else { return false }
        (backing! + Int(index) * Int(Linux.pageSize)).copyMemory(from: frames.pointer(f), byteCount: Int(Linux.pageSize))
        frames.page(f).pointee.flags.bitwiseAnd(~(PageMeta.Flag.dirty | PageMeta.Flag.reclaim), ordering: .relaxed)
        written.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    /// Zeroes pages `[first, first + count)` of the backing (the caller holds `cacheLock`):
    /// a mapped backing gives the memory back rather than writing zeros over it.
    func zeroBacking(_ first: Int, _ count: Int) {
        guard let backing, count > 0 else { return }
        let p = backing + first * Int(Linux.pageSize)
        if backingMapped.load(ordering: .relaxed) { _ = madvise(p, count * Int(Linux.pageSize), MADV_DONTNEED) }
        else { p.initializeMemory(as: UInt8.self, repeating: 0, count: count * Int(Linux.pageSize)) }
    }

    /// Pages written back so far.
    public var pagesWrittenBack: Int { written.load(ordering: .relaxed) }

    @usableFromInline static let chunkShift = 15
    @usableFromInline static let chunkPages = 1 << chunkShift

    /// Chunk `c`'s table, or nil if nothing in it was ever cached.
    @inlinable @inline(__always)
    func chunk(_ c: Int) -> UnsafeMutablePointer<Atomic<UInt32>>? {
        UnsafeMutablePointer(bitPattern: chunks[c].load(ordering: .acquiring))
    }

    func slotsInChunk(_ c: Int) -> Int { min(Self.chunkPages, capacityPages - (c << Self.chunkShift)) }

    /// The slot of page `index`, allocating its chunk (`xas_create`).
    func slotCreating(_ index: UInt64) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let c = Int(index >> UInt64(Self.chunkShift))
        let i = Int(index & UInt64(Self.chunkPages - 1))
        if let t = chunk(c) { return t + i }
        let n = slotsInChunk(c)
        let t = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: n)
        for k in 0..<n { (t + k).initialize(to: Atomic(0)) }
        let r = chunks[c].compareExchange(expected: 0, desired: UInt(bitPattern: t), ordering: .acquiringAndReleasing)
        if r.exchanged { return t + i }
        t.deallocate()
        return UnsafeMutablePointer<Atomic<UInt32>>(bitPattern: r.original)! + i
    }

    public var size: UInt64 { sizeWord.load(ordering: .relaxed) }

    /// `s_maxbytes`: ext4's with 4 KiB blocks and extents (2^32 - 1 blocks), tmpfs's
    /// `MAX_LFS_FILESIZE` for shared memory.
    public var maxBytes: UInt64 { isShmem ? UInt64(Int64.max) : 0xFFFF_FFFF << Linux.pageShift }

    /// Pages of the file (`DIV_ROUND_UP(i_size, PAGE_SIZE)`).
    public var sizeInPages: UInt64 { Linux.pageAlign(size) / Linux.pageSize }

    /// Page-cache misses so far (simulated reads).
    public var cacheMisses: Int { misses.load(ordering: .relaxed) }

    /// The frame the cache holds for page `index` now, or nil (no reference taken: for
    /// checks; a fault uses `getPage`).
    @inlinable @inline(__always)
    public func cachedPage(_ index: UInt64) -> FrameNumber? {
        guard index < UInt64(capacityPages), let t = chunk(Int(index >> UInt64(Self.chunkShift))) else { return nil }
        let v = t[Int(index & UInt64(Self.chunkPages - 1))].load(ordering: .acquiring)
        return v == 0 ? nil : FrameNumber(v - 1)
    }

    /// `filemap_get_entry()` + `folio_try_get()`: the cached frame of page `index` with a
    /// reference for the caller, or nil. Truncation may remove the page and drop the cache's
    /// reference at any moment: a reference is taken only while one is still held, and the
    /// slot is checked again after it (a frame freed and reused elsewhere is let go).
    @inlinable
    public func getPage(_ index: UInt64) -> FrameNumber? {
        while true {
            guard let f = cachedPage(index) else { return nil }
            guard frames.tryGet(f) else { continue }
            if cachedPage(index) == f { return f }
            frames.put(f)
        }
    }

    /// `filemap_fault()` without the locking: the frame of page `index` with a reference for
    /// the caller, reading it in on a miss (after the simulated latency). nil when out of frames.
    public func readPage(_ index: UInt64) -> FrameNumber? {
        while true {
            if let f = getPage(index) { return f }
            precondition(index < UInt64(capacityPages), "page \(index) beyond the file's capacity")
            if ioLatencyNs > 0 { simulateIO() }
            let backing = self.backing
            guard let f = frames.allocate(zeroed: backing == nil, flags: cacheFlags) else { return nil }
            if let backing {
                frames.pointer(f).copyMemory(from: backing + Int(index) * Int(Linux.pageSize), byteCount: Int(Linux.pageSize))
            }
            setCacheRmap(f, index)
            // One reference for the cache, one for the caller, before the page is visible.
            frames.get(f)
            let r = slotCreating(index).pointee.compareExchange(expected: 0, desired: f + 1, ordering: .acquiringAndReleasing)
            if r.exchanged {
                misses.wrappingAdd(1, ordering: .relaxed)
                frames.lruAdd(f)
                return f
            }
            frames.put(f)
            frames.put(f)
        }
    }

    /// Reads page `index` into the cache (the I/O a fault dropped its locks for, or
    /// populate's); false when out of frames.
    @discardableResult
    public func readAhead(_ index: UInt64) -> Bool {
        guard let f = readPage(index) else { return false }
        frames.put(f)
        return true
    }

    /// Reads every page of the file into the cache (what reading it once leaves) — dirty, as
    /// writing it leaves it (writeback has not run yet); false when frames ran out.
    @discardableResult
    public func readIntoCache(dirty: Bool = false) -> Bool {
        for index in 0..<sizeInPages {
            guard readAhead(index) else { return false }
            if dirty, let f = cachedPage(index) { frames.page(f).pointee.flags.bitwiseOr(PageMeta.Flag.dirty, ordering: .relaxed) }
        }
        return true
    }

    /// The I/O wait of a page-cache miss: sleep (it would be a blocked task).
    func simulateIO() { fl_sleep_ns(ioLatencyNs) }

    /// `filemap_remove_folio()`: the page has left the cache (its `mapping` is gone); a fault
    /// that took its own reference before keeps the frame alive until it lets go.
    /// `__remove_mapping()`: page `index` leaves the cache if the cache still holds `f` there.
    func remove(_ index: UInt64, ifHolding f: FrameNumber) {
        guard index < UInt64(capacityPages), let t = chunk(Int(index >> UInt64(Self.chunkShift))) else { return }
        let slot = t + Int(index & UInt64(Self.chunkPages - 1))
        if slot.pointee.compareExchange(expected: UInt32(f) + 1, desired: 0, ordering: .acquiringAndReleasing).exchanged {
            dropFromCache(f)
        }
    }

    /// `__remove_mapping()` for a clean page MADV_PAGEOUT unmapped: it leaves the cache only
    /// if the cache still holds it there, nothing maps it, it is clean and the cache's
    /// reference is the only one — frozen (1 → 0) before the slot is cleared, so a lookup
    /// racing with the removal cannot take one and looks again. A page a fault took meanwhile
    /// stays cached: dropping it anyway left that fault's PTE on a page outside the cache, so
    /// what was written through it was gone at the next fault after a zap (the stress's lost
    /// writes in shared anonymous slots).
    func removeIfUnused(_ index: UInt64, ifHolding f: FrameNumber) {
        guard index < UInt64(capacityPages), let t = chunk(Int(index >> UInt64(Self.chunkShift))) else { return }
        let slot = t + Int(index & UInt64(Self.chunkPages - 1))
        let p = frames.page(f)
        func unused() -> Bool {
            p.pointee.mapcount.load(ordering: .acquiring) == 0 && p.pointee.flags.load(ordering: .acquiring) & PageMeta.Flag.dirty == 0
        }
        guard slot.pointee.load(ordering: .acquiring) == UInt32(f) + 1, unused(),
              p.pointee.refcount.compareExchange(expected: 1, desired: 0, ordering: .acquiringAndReleasing).exchanged else { return }
        // Frozen: no one can map or dirty it now; someone may have between the checks.
        guard unused() else {
            p.pointee.refcount.store(1, ordering: .releasing)
            return
        }
        guard slot.pointee.compareExchange(expected: UInt32(f) + 1, desired: 0, ordering: .acquiringAndReleasing).exchanged else {
            // Truncation took it out first and drops the cache's reference: whoever of the
            // two comes second frees it.
            if p.pointee.refcount.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue == 0 { frames.freeDeferred([f]) }
            return
        }
        p.pointee.flags.bitwiseAnd(~(PageMeta.Flag.pageCache | PageMeta.Flag.reclaim), ordering: .relaxed)
        p.pointee.mapping.store(0, ordering: .relaxed)
        frames.freeDeferred([f])
    }

    func dropFromCache(_ f: FrameNumber) {
        frames.page(f).pointee.flags.bitwiseAnd(~PageMeta.Flag.pageCache, ordering: .relaxed)
        frames.put(f)
    }

    /// `/proc/pid/maps` device column.
    var deviceString: String {
        hex2(device.major) + ":" + hex2(device.minor)
    }
}

func hex2(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return s.count < 2 ? "0" + s : s
}
