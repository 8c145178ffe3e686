import CFaultline
import FaultlineSync
import FaultlineTrees
import Synchronization

/// The machine an address space runs on: physical frames, the RCU domain, and the slabs
/// VMAs and page tables come from. Address spaces of one process tree (fork) share it.
public final class MMSystem: @unchecked Sendable {
    public let frames: FramePool
    public let rcu: RCU
    /// The MMU's accesses in flight (`withByte`: a PTE read and the byte touched through it),
    /// as a read side of their own: a TLB shootdown waits for these only, not for faults,
    /// much as an IPI is taken mid-fault on Linux.
    public let tlbRCU = RCU()
    let vmaSlab: RCUSlab
    /// VMAs of designs whose cache is `SLAB_TYPESAFE_BY_RCU` (Linux 6.15): freed objects are
    /// reused at once, never poisoned.
    let vmaTypesafeSlab: RCUSlab
    let tableSlab: RCUSlab
    /// VMA-tree nodes walked by the quiescent checks' tree invariants, all address spaces
    /// together: proof that a (release-built) stress or fuzz run checked its trees.
    public let treeNodesChecked = Atomic<Int>(0)
    /// `anon_vma_cachep`: freed anon_vmas (freeing waits for a grace period), and the count
    /// of live ones.
    let anonVMACache = AnonVMACache()
    /// The swap device (`swapon`), or nil: the host here has none, and difftest configures
    /// the model as the host is.
    public private(set) var swap: SwapDevice? = nil
    /// Reclaim's counters (`/proc/vmstat`).
    public let vmscan = VMScanStats()
    /// The background reclaimer; its thread starts at the first wake-up (`enableReclaim`).
    let kswapd = Kswapd()
    /// `zone->compact_defer_shift` and `compact_considered`.
    let compactDeferShift = Atomic<Int>(0)
    let compactConsidered = Atomic<Int>(0)
    /// khugepaged: off until `enableKhugepaged`.
    public let khugepaged = Khugepaged()
    /// Broken on purpose (tests): a split does not clone the anon_vma chain into the new VMA,
    /// so the reverse map cannot find the pages it maps (what the rmap check must catch).
    @_spi(Testing) public var _brokenSplitSkipsAnonClone = false
    /// Broken on purpose (tests): a page migration maps the new frame without copying the old
    /// one's contents (what the compaction tests' content checks must catch).
    @_spi(Testing) public var _brokenMigrationSkipsCopy = false
    /// Test hook: MADV_PAGEOUT has unmapped its clean page-cache pages and is about to drop
    /// them from their caches (a fault may map one again here).
    @_spi(Testing) public var _pageoutBeforeDrop: (() -> Void)? = nil
    /// Broken control for huge pages: a huge PMD is never split (an mprotect or zap of part
    /// of it leaves the table marked as one huge PMD whose pages now differ).
    @_spi(Testing) public var _brokenTHPNeverSplits = false
    /// `_brokenTHPNeverSplits` as inlinable fault code may read it.
    @usableFromInline var brokenTHPNeverSplits: Bool { _brokenTHPNeverSplits }
    /// Broken on purpose (tests): try_to_unmap clears only the first PTE it finds and counts
    /// the others as unmapped too, so reclaim frees a page that is still mapped.
    @_spi(Testing) public var _brokenTryToUnmapSkipsMappings = false
    /// Broken on purpose (tests): reclaim of a file page counts its PTEs as unmapped without
    /// clearing them, so the page leaves the cache and memory while still mapped.
    @_spi(Testing) public var _brokenFileReclaimKeepsPTEs = false

    /// - Parameters:
    ///   - frames: physical memory, in 4 KiB frames.
    ///   - prefault: back the frame reservation up front (benchmarks).
    ///   - rcu: the RCU domain whose grace periods free frames, VMAs and page tables.
    ///   - poison: fill freed frames, VMAs and page tables with a pattern and check it when
    ///     they are reused (stress testing: a write after free is counted in
    ///     `poisonViolations`).
    ///   - perCPUZoneFrames: the zone size the per-thread page lists are sized for (nil: the
    ///     pool's own; a benchmark whose pool holds just its region passes this machine's).
    public init(frames: Int, prefault: Bool = false, rcu: RCU = .shared, poison: Bool = false, perCPUZoneFrames: Int? = nil) {
        self.rcu = rcu
        self.frames = FramePool(frames: frames, prefault: prefault, rcu: rcu, poison: poison, perCPUZoneFrames: perCPUZoneFrames)
        vmaSlab = RCUSlab(objectSize: MemoryLayout<VMA>.stride, alignment: 64, rcu: rcu, poison: poison)
        vmaTypesafeSlab = RCUSlab(objectSize: MemoryLayout<VMA>.stride, alignment: 64, rcu: rcu)
        tableSlab = RCUSlab(objectSize: PageTablePage.bytes, alignment: 4096, perSlab: 16, rcu: rcu, poison: poison)
    }

    deinit {
        // VMA frees queued on RCU hold the slab unretained (a retain per munmap would write
        // the shared slab's header): they run before the slabs go.
        rcu.barrier()
        kswapd.stopAndJoin()
        khugepaged.stopAndJoin()
        // Files may outlive the system and keep its frames: no reclaim through it after this.
        frames.clearReclaim()
    }

    /// `swapon()`: an in-memory swap device of `pages` slots, each read taking `ioLatencyNs`
    /// (writes are asynchronous). Call before any address space uses the system.
    public func swapOn(pages: Int, ioLatencyNs: UInt64 = 0) {
        precondition(swap == nil, "one swap device per system")
        swap = SwapDevice(pages: pages, ioLatencyNs: ioLatencyNs, frames: frames)
    }

    /// The memory cgroup this system's processes run in (nil: memory is not charged).
    public var memcg: MemCgroup? { frames.memcgObject }

    /// Runs every process of this system in `memcg`: anonymous, page-cache and swapped-in pages
    /// allocated from now on are charged to it and its ancestors (`mem_cgroup_charge()`), and
    /// a charge over a limit reclaims through this system's reclaim (`enableReclaim`; without
    /// it the fault fails with `.oom`). Call before any address space uses the system.
    public func attach(memcg: MemCgroup) {
        precondition(frames.framesInUse == 0, "attach the memory cgroup before anything is allocated")
        frames.attach(memcg)
    }

    /// Writes after free found so far: (frames, VMAs, page tables).
    public var poisonViolations: (frames: Int, vmas: Int, tables: Int) {
        (frames.poisonViolations, vmaSlab.poisonViolations.load(ordering: .relaxed),
         tableSlab.poisonViolations.load(ordering: .relaxed))
    }

    /// A file of `size` bytes (see `MMFile`).
    public func makeFile(path: String, size: UInt64, contents: [UInt8]? = nil, capacity: UInt64? = nil,
                         ioLatencyNs: UInt64 = 0, placement: FilePlacement = .thpAligned) -> MMFile {
        MMFile(path: path, size: size, contents: contents, capacity: capacity, ioLatencyNs: ioLatencyNs,
               frames: frames, placement: placement)
    }

    /// Live VMAs and page-table pages, counting those waiting for a grace period.
    public var liveVMAs: Int { vmaSlab.liveObjects + vmaTypesafeSlab.liveObjects }
    public var livePageTables: Int { tableSlab.liveObjects }
}

/// Which structure indexes the VMAs.
public enum VMATreeKind: String, Sendable, CaseIterable {
    /// The maple tree (Linux 6.1+): RCU-safe, required by every lockless design.
    case maple
    /// The augmented rbtree + list + vmacache of Linux before 6.1 (readers need mmap_lock).
    case rbtree
}

/// The VMA index, either structure, switched on a stored kind (one predictable branch, no
/// dynamic dispatch).
@usableFromInline
struct VMATree: @unchecked Sendable {
    @usableFromInline let kind: VMATreeKind
    @usableFromInline let maple: MapleTree<VMARef>?
    @usableFromInline let rb: GapRBTree<VMARef>?

    init(kind: VMATreeKind, rcu: RCU) {
        self.kind = kind
        maple = kind == .maple ? MapleTree<VMARef>(rcu: rcu) : nil
        rb = kind == .rbtree ? GapRBTree<VMARef>() : nil
    }

    /// `vma_lookup()`.
    @inlinable @inline(__always)
    func lookup(_ a: UInt64) -> VMARef? {
        kind == .maple ? maple.unsafelyUnwrapped.lookup(a)?.value : rb.unsafelyUnwrapped.lookup(a)?.value
    }

    /// `find_vma()`: the first VMA ending after `a`.
    @inlinable @inline(__always)
    func find(from a: UInt64) -> VMARef? {
        kind == .maple ? maple.unsafelyUnwrapped.find(from: a)?.value : rb.unsafelyUnwrapped.find(from: a)?.value
    }

    func next(after a: UInt64) -> VMARef? {
        kind == .maple ? maple!.next(after: a)?.value : rb!.next(after: a)?.value
    }

    /// The last VMA ending at or before `a` (`vma_prev` of the slot at `a`).
    func prev(before a: UInt64) -> VMARef? {
        kind == .maple ? maple!.prev(before: a)?.value : rb!.prev(before: a)?.value
    }

    func store(_ start: UInt64, _ end: UInt64, _ v: VMARef?) {
        if kind == .maple { maple!.store(start...(end - 1), v) } else { rb!.store(start...(end - 1), v) }
    }

    func forEach(_ start: UInt64, _ end: UInt64, _ body: (VMARef) -> Bool) {
        guard end > start else { return }
        if kind == .maple {
            maple!.forEach(in: start...(end - 1)) { body($0.value) }
        } else {
            rb!.forEach(in: start...(end - 1)) { body($0.value) }
        }
    }

    func highestGap(size: UInt64, in w: ClosedRange<UInt64>) -> UInt64? {
        kind == .maple ? maple!.highestGap(size: size, in: w) : rb!.highestGap(size: size, in: w)
    }

    func lowestGap(size: UInt64, in w: ClosedRange<UInt64>) -> UInt64? {
        kind == .maple ? maple!.lowestGap(size: size, in: w) : rb!.lowestGap(size: size, in: w)
    }

    func bulkLoad(_ entries: [RangeEntry<VMARef>]) {
        if kind == .maple { maple!.bulkLoad(entries) } else { rb!.bulkLoad(entries) }
    }

    var count: Int { kind == .maple ? maple!.count : rb!.count }
}

/// `struct mm_struct`: a process address space — VMAs in a tree, 4-level page tables, the
/// locks every design needs, `brk`, counters. The system calls (`AddressSpace+Mmap.swift` …)
/// and the fault core (`AddressSpace+Fault.swift`) are shared mechanism; a `Design` decides
/// which locks surround them.
public final class AddressSpace: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var taskSize = Linux.taskSize
        /// Top of the top-down mmap search (`mm->mmap_base`).
        public var mmapBase = Linux.defaultMmapBase
        public var mmapMinAddr = Linux.mmapMinAddr
        public var maxMapCount = Linux.maxMapCount
        /// `mm->start_brk` (and the initial `brk`).
        public var startBrk: UInt64 = 0x5555_5555_9000
        public var tree: VMATreeKind = .maple
        /// `CONFIG_TRANSPARENT_HUGEPAGE`: large anonymous mappings are placed PMD-aligned.
        public var thpAlignAnonymous = true
        /// `vm.overcommit_memory != 2`: `MAP_NORESERVE` is honoured.
        public var honourNoReserve = true
        /// `vm.overcommit_memory = 0`: a call that would commit more pages than this (RAM +
        /// swap; the host's by default) fails with ENOMEM (`__vm_enough_memory`). nil:
        /// `overcommit_memory = 1`, never refused.
        public var commitLimitPages: UInt64? = Linux.hostCommitLimitPages
        /// Read faults on private anonymous memory map the shared zero page.
        public var useZeroPage = true
        /// `transparent_hugepage/enabled`: where anonymous faults map a PMD-sized THP. The
        /// common distribution default (`madvise`), not the host's, so that a run does not
        /// depend on the machine; the differential tester sets the host's
        /// (`Linux.hostTHPMode`).
        public var transparentHugepage = THPMode.madvise
        /// `transparent_hugepage/use_zero_page`: a read fault where a THP could go maps the
        /// huge zero page.
        public var thpUseZeroPage = true
        /// `transparent_hugepage/defrag`: which THP faults compact when no whole block is free.
        public var thpDefrag = THPDefrag.madvise
        /// `fault_around_bytes` / page size: a read fault on a file or shmem mapping also maps
        /// the cached pages of its aligned block of this many pages (Linux's default 64 KiB:
        /// 16). A power of two; 1 turns fault-around off.
        public var faultAroundPages = 16
        /// `RLIMIT_STACK`: the most a VM_GROWSDOWN VMA may span after a fault grew it
        /// (this process's limit by default).
        public var stackLimit = Linux.hostStackLimit
        /// x86 memory protection keys (`CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS` on a CPU
        /// with PKU; the host's by default): a PROT_EXEC-only mapping gets the execute-only
        /// key, so loads and stores to it are SIGSEGV/SEGV_PKUERR and populate skips it.
        public var executeOnlyPKey = Linux.hostHasPKeys
        /// `RLIMIT_MEMLOCK` in bytes and CAP_IPC_LOCK (this process's by default): what
        /// mlock, mlockall, MAP_LOCKED and a locked VMA's growth may lock.
        public var memlockLimit = Linux.hostMemlockLimit
        public var capIPCLock = Linux.hostCapIPCLock
        /// `mm->start_stack`, for the `[stack]` name (nil: no stack modelled).
        public var startStack: UInt64? = nil
        /// `spf-vmaseq` only: also handle copy-on-write of a present PTE speculatively, as
        /// Dufour's series did. Unsafe (Lespinasse's COW race); off by default.
        public var allowSpeculativeCOW = false
        /// What entering the kernel costs a fault or a memory call (`KernelEntry`): nothing by
        /// default (the library); the lab's workloads make the host's real crossing.
        public var kernelEntry = KernelEntry.none
        /// Test hook called at fault stages (`FaultStage`), on the faulting thread.
        public var faultHook: (@Sendable (FaultStage, UInt64) -> Void)? = nil
        public init() {}
    }

    public let system: MMSystem
    public let config: Configuration
    public let design: Design
    /// The design's type, whose hooks the writer side calls once per system call.
    public let designType: any MMDesign.Type
    /// `config.faultHook != nil`, read on the fault path without touching the closure.
    @usableFromInline let hasFaultHook: Bool
    @usableFromInline let tree: VMATree
    @usableFromInline let pgd: PageTablePage
    @usableFromInline let frames: FramePool
    @usableFromInline let rcuRead: RCUReadSide
    /// `system.tlbRCU`'s read side: held across each access through a PTE.
    @usableFromInline let tlbRead: RCUReadSide

    /// `mmap_lock`.
    public let mmapLock: RWSemaphore
    /// `mm->page_table_lock`: serialises `anon_vma_prepare` of one VMA by concurrent faults.
    let pageTableLock = SpinLock()
    /// Lespinasse's mm-wide sequence count: odd while an mmap writer is inside.
    public let mmSeq: SeqCount
    /// `mm_lock_seq` (per-VMA locks): a VMA whose `lockSeq` equals it is write-locked.
    public let mmLockSeq: Atomic<UInt64>
    /// Counters (`MMStat` columns), per thread.
    public let stats: PerThreadCounters
    /// `mmap_lock` and VMA-lock waits, when enabled.
    public let lockStats: PerThreadCounters
    let mapCountWord = Atomic<Int>(0)
    // Atomics: lock-free maps readers name `[heap]` from them.
    let startBrkWord: Atomic<UInt64>
    let brkWord: Atomic<UInt64>
    var startBrkValue: UInt64 {
        get { startBrkWord.load(ordering: .relaxed) }
        set { startBrkWord.store(newValue, ordering: .relaxed) }
    }
    var brkValue: UInt64 {
        get { brkWord.load(ordering: .relaxed) }
        set { brkWord.store(newValue, ordering: .relaxed) }
    }
    /// Range designs: page tables may be freed only inside the range the writer holds
    /// (`free_pgtables` floor/ceiling are clamped to it). Set under the short write lock.
    @exclusivity(unchecked) var tableFreeLimit: Range<UInt64> = 0..<UInt64.max
    /// What the last `movePageTables` (mremap) did; written under the writer's lock.
    @_spi(Testing) public internal(set) var _pageTableMoveWork = PageTableMoveWork()
    /// The call whose writer section is open (set under the writer's exclusion; nil for
    /// mmap and munmap, whose designs lock them their own way).
    @exclusivity(unchecked) public internal(set) var writerCall: WriterCall? = nil
    /// On khugepaged's list (`MMF_VM_HUGEPAGE`).
    let khugepagedEntered = Atomic<Bool>(false)
    /// `mm->def_flags`: VM_LOCKED (and VM_LOCKONFAULT) after mlockall(MCL_FUTURE), given to
    /// every new mapping and the heap's growth. Written under the writer's exclusion.
    @exclusivity(unchecked) public internal(set) var defFlags: VMFlags = []
    /// VMAs write-marked in the current writer section (ended at `endVMAWrites`).
    @exclusivity(unchecked) var markedVMAs: [VMARef] = []
    /// VMAs freed while marked (per-VMA sequence counts): freed when the section ends.
    @exclusivity(unchecked) var pendingVMAFrees: [VMARef] = []
    /// Design state that only some designs use (range locks).
    public let designState: DesignState
    /// `designState.vmaLockStats.slots`, kept here so that a 6.15 read lock counts without
    /// reading a class reference on the fault path.
    @usableFromInline let vmaLockSlots: CounterSlots
    /// The system's RCU domain and slabs, read without a retain: a retain writes the object's
    /// header, a cache line every thread of the system shares, and each line moved between
    /// CPUs per call is contention Linux does not have. The system keeps them alive.
    unowned(unsafe) let rcu: RCU
    unowned(unsafe) let vmaSlab: RCUSlab
    unowned(unsafe) let tableSlab: RCUSlab
    /// The per-call paths' references: `_withUnsafeGuaranteedRef` is what keeps the compiler
    /// from retaining around each call (`unowned(unsafe)` alone does not).
    let rcuRef: Unmanaged<RCU>
    let vmaTypesafeSlabRef: Unmanaged<RCUSlab>
    let vmaSlabRef: Unmanaged<RCUSlab>

    public init(system: MMSystem, design: Design = .global, configuration: Configuration = Configuration()) {
        precondition(design.allowsTree(configuration.tree), "\(design.rawValue) needs the maple tree")
        self.system = system
        config = configuration
        hasFaultHook = configuration.faultHook != nil
        self.design = design
        designType = design.type
        frames = system.frames
        rcuRead = system.rcu.readSide
        tlbRead = system.tlbRCU.readSide
        tree = VMATree(kind: configuration.tree, rcu: system.rcu)
        pgd = PageTablePage.initialize(system.tableSlab.allocate())
        lockStats = PerThreadCounters(width: RWSemStat.width)
        mmapLock = RWSemaphore(stats: lockStats)
        mmSeq = SeqCount()
        mmLockSeq = Atomic(0)
        stats = PerThreadCounters(width: MMStat.allCases.count)
        startBrkWord = Atomic(configuration.startBrk)
        brkWord = Atomic(configuration.startBrk)
        designState = designType.makeState()
        vmaLockSlots = designState.vmaLockStats.slots
        rcu = system.rcu
        vmaSlab = system.vmaSlab
        rcuRef = Unmanaged.passUnretained(system.rcu)
        vmaTypesafeSlabRef = Unmanaged.passUnretained(system.vmaTypesafeSlab)
        vmaSlabRef = Unmanaged.passUnretained(system.vmaSlab)
        tableSlab = system.tableSlab
    }

    deinit {
        teardown()
    }

    /// `security_vm_enough_memory_mm()` under heuristic overcommit: only one call's own
    /// charge is compared with RAM + swap.
    @inline(__always)
    func vmEnoughMemory(_ pages: UInt64) -> Bool {
        guard let limit = config.commitLimitPages else { return true }
        return pages <= limit
    }

    /// VMAs in the tree (`mm->map_count`).
    public var mapCount: Int { mapCountWord.load(ordering: .relaxed) }
    public var startBrk: UInt64 { startBrkValue }
    public var currentBrk: UInt64 { brkValue }

    // MARK: VMA lifecycle (writer side)

    /// `vm_area_alloc()` + init: a detached VMA holding a reference to `file`.
    func vmaAlloc(start: UInt64, end: UInt64, flags: VMFlags, pgoff: UInt64, file: MMFile?) -> VMARef {
        let fileBits = file.map { UInt(bitPattern: Unmanaged.passRetained($0).toOpaque()) } ?? 0
        let mm = mmBits
        if designType.vmaCacheTypesafeByRCU {
            let (raw, reused) = vmaTypesafeSlabRef._withUnsafeGuaranteedRef { $0.allocateTypesafe() }
            let v = raw.assumingMemoryBound(to: VMA.self)
            if reused {
                v.pointee.reinitialize(start: start, end: end, flags: flags, pgoff: pgoff, file: fileBits, mm: mm)
                count(.vmaReused)
            } else {
                // No statistics: the object outlives this address space.
                raw.bindMemory(to: VMA.self, capacity: 1)
                    .initialize(to: VMA(start: start, end: end, flags: flags, pgoff: pgoff, file: fileBits, mm: mm, lockSlots: nil))
            }
            return v
        }
        let raw = vmaSlabRef._withUnsafeGuaranteedRef { $0.allocate() }
        let v = raw.bindMemory(to: VMA.self, capacity: 1)
        v.initialize(to: VMA(start: start, end: end, flags: flags, pgoff: pgoff, file: fileBits, mm: mm,
                             lockSlots: vmaLockSlots))
        return v
    }

    /// `vm_area_dup()`: same fields, same file (a reference taken) and anon_vma, an empty
    /// chain: the caller clones it (`anon_vma_clone` for a split or mremap's copy,
    /// `anon_vma_fork` for fork) once the copy has its range.
    func vmaDup(_ src: VMARef) -> VMARef {
        let v = vmaAlloc(start: src.vmStart, end: src.vmEnd, flags: src.vmFlags, pgoff: src.vmPgoff, file: src.vmFile)
        v.pointee.anonVMABits.store(src.anonVMA, ordering: .relaxed)
        v.pointee.anonName.store(src.anonNameID, ordering: .relaxed)
        return v
    }

    /// What `vm_area_free()` lets go of: the file (the field is cleared, so a reader of a
    /// freed SLAB_TYPESAFE_BY_RCU object finds none). The anon_vma chain went before
    /// (`unlink_anon_vmas` in `vmaFreeDeferred`).
    static func vmaDropReferences(_ v: VMARef) {
        let f = v.pointee.fileBits.exchange(0, ordering: .relaxed)
        if f != 0 { Unmanaged<MMFile>.fromOpaque(UnsafeRawPointer(bitPattern: f)!).release() }
        precondition(v.pointee.anonChainHeadBits.load(ordering: .relaxed) == 0, "VMA freed with its anon_vma chain linked")
    }

    /// `vm_area_free()` after a grace period: lockless readers may still hold the pointer.
    func vmaFreeDeferred(_ vmasIn: [VMARef]) {
        var vmas = vmasIn
        // free_pgtables() / anon_vma_merge(): the pages are gone or moved to a survivor.
        for v in vmas { Self.unlinkAnonVMAs(v) }
        // A VMA marked in this writer section may have to stay until the section's end (a
        // per-VMA count ends there): no grace period may free it before then. Asked of each
        // VMA, not of `markedVMAs`: range designs free VMAs with the short lock dropped, while
        // another writer's section owns that list.
        let d = designType
        let marked = vmas.filter { d.freeWaitsForSectionEnd($0) }
        if !marked.isEmpty {
            pendingVMAFrees += marked
            vmas.removeAll { d.freeWaitsForSectionEnd($0) }
        }
        guard !vmas.isEmpty else { return }
        if d.vmaCacheTypesafeByRCU {
            // vm_area_free() to a SLAB_TYPESAFE_BY_RCU cache: detached, so no reader holds a
            // reference (vma_mark_detached waited them out); its pointer may still be read.
            vmaTypesafeSlabRef._withUnsafeGuaranteedRef { slab in
                for v in vmas {
                    Self.vmaDropReferences(v)
                    slab.freeTypesafe(UnsafeMutableRawPointer(v))
                }
            }
            return
        }
        let box = Shared(vmas)
        // Unmanaged: the callback holds no reference to the shared slab (the system keeps it,
        // and its deinit waits for this callback).
        let slab = vmaSlabRef
        rcuRef._withUnsafeGuaranteedRef {
            $0.callRCU {
                for v in box.value {
                    Self.vmaDropReferences(v)
                    v.deinitialize(count: 1)
                }
                slab._withUnsafeGuaranteedRef { $0.retireNow(box.value.map { UnsafeMutableRawPointer($0) }) }
            }
        }
    }

    /// `vma_start_write()`: marks a VMA as being changed by the writer of this section, as the
    /// design does (`MMDesign.vmaStartWrite`).
    @inline(__always)
    func vmaStartWrite(_ v: VMARef) { designType.vmaStartWrite(self, v) }

    /// Per-VMA locks' mark: wait for faults holding `v` for read and make new ones fail
    /// (`vm_lock_seq = mm_lock_seq`).
    func vmaLockMark(_ v: VMARef) {
        let seq = mmLockSeq.load(ordering: .relaxed)
        if v.pointee.lockSeq.load(ordering: .relaxed) == seq { return }
        v.pointee.lock.lockWrite()
        v.pointee.lockSeq.store(seq, ordering: .relaxed)
        v.pointee.lock.unlockWrite()
        markedVMAs.append(v)
        if hasFaultHook { config.faultHook!(.vmaMarked, v.vmStart) }
    }

    /// `vma_end_write_all()`: `mmap_write_unlock()` bumps `mm_lock_seq` (store-release),
    /// unlocking every marked VMA at once.
    func vmaLockUnmarkAll() { mmLockSeq.wrappingAdd(1, ordering: .releasing) }

    /// Per-VMA sequence counts' mark (`vm_write_begin`): the count is odd until the section
    /// ends.
    func vmaSeqWriteBegin(_ v: VMARef) {
        if v.pointee.seq.isWriting { return }
        v.pointee.seq.writeBegin()
        markedVMAs.append(v)
    }

    /// `vm_write_end()` for every VMA marked in the section.
    func vmaSeqWriteEndAll() {
        for v in markedVMAs { v.pointee.seq.writeEnd() }
    }

    /// End of a writer section: the design unmarks the VMAs marked in it.
    func endVMAWrites() {
        designType.endVMAWrites(self)
        markedVMAs.removeAll(keepingCapacity: true)
        if !pendingVMAFrees.isEmpty {
            let p = pendingVMAFrees
            pendingVMAFrees.removeAll()
            vmaFreeDeferred(p)
        }
    }

    /// `vma_mark_attached()`: in the tree, `vm_refcnt` 1.
    func vmaMarkAttached(_ v: VMARef) {
        v.pointee.detached.store(false, ordering: .releasing)
        v.pointee.vmRefcnt.store(1, ordering: .releasing)
    }

    /// `vma_mark_detached()`: out of the tree. Under the 6.15 lock, readers that raised
    /// `vm_refcnt` meanwhile (they will see the write mark and leave) are waited out, so that
    /// no reader holds a VMA that is freed.
    func vmaMarkDetached(_ v: VMARef) {
        v.pointee.detached.store(true, ordering: .releasing)
        if designType.vmaCacheTypesafeByRCU {
            vmaRefcntDetach(v)
        } else {
            v.pointee.vmRefcnt.store(0, ordering: .releasing)
        }
    }

    /// Inserts a VMA (`vma_link`). `iMmapHeld`: the caller holds the file's i_mmap lock for
    /// write (a split or merge, `withIMmapWrite`).
    func vmaLink(_ v: VMARef, iMmapHeld: Bool = false) {
        vmaStartWrite(v)
        tree.store(v.vmStart, v.vmEnd, v)
        vmaMarkAttached(v)
        mapCountWord.wrappingAdd(1, ordering: .relaxed)
        v.vmFile?.iMmapLink(v, self, held: iMmapHeld)
    }

    /// Removes a VMA from the tree (`vma_mark_detached`); the caller frees it.
    func vmaUnlink(_ v: VMARef, iMmapHeld: Bool = false) {
        vmaStartWrite(v)
        v.vmFile?.iMmapUnlink(v, held: iMmapHeld)
        tree.store(v.vmStart, v.vmEnd, nil)
        vmaMarkDetached(v)
        mapCountWord.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Changes a linked VMA's bounds (and pgoff), keeping the VMA tree and the file's i_mmap
    /// in step.
    func vmaSetRange(_ v: VMARef, start: UInt64, end: UInt64, pgoff: UInt64, iMmapHeld: Bool = false) {
        vmaStartWrite(v)
        let os = v.vmStart
        let oe = v.vmEnd
        // vma_adjust_trans_huge(): a huge PMD a new boundary cuts is split.
        if start != os || end != oe { splitHugePMDs(start != os ? start : end, end != oe ? end : start) }
        if start > os { tree.store(os, start, nil) }
        if end < oe { tree.store(end, oe, nil) }
        // A truncation reads the range under i_mmap's lock.
        let file = v.vmFile
        let lock = file?.mustLock(held: iMmapHeld) ?? false
        if lock { file!.iMmapLock.lockWrite() }
        v.setBounds(start, end)
        v.setPgoff(pgoff)
        file?.iMmap.update(v)
        if lock { file!.iMmapLock.unlockWrite() }
        anonVMAUpdateRange(v)
        tree.store(start, end, v)
    }

    /// `vma_prepare()` … `vma_complete()` for a file's VMAs: `body` changes, links and unlinks
    /// them (passing `iMmapHeld: true`) with the file's i_mmap lock held for write throughout,
    /// so a truncation sees the ranges before or after, never between.
    func withIMmapWrite<T>(_ file: MMFile?, _ body: () -> T) -> T {
        let f = file?._brokenIMmapSections == true ? nil : file
        f?.iMmapLock.lockWrite()
        defer { f?.iMmapLock.unlockWrite() }
        return body()
    }

    /// VMAs intersecting `[start, end)`, in order (writer side).
    func vmas(in start: UInt64, _ end: UInt64) -> [VMARef] {
        var out: [VMARef] = []
        tree.forEach(start, end) { out.append($0); return true }
        return out
    }

    /// Every VMA, in order.
    public func allVMAs() -> [VMARef] { vmas(in: 0, UInt64.max) }

    /// `find_vma_intersection()`.
    func findIntersection(_ start: UInt64, _ end: UInt64) -> VMARef? {
        guard let v = tree.find(from: start), v.vmStart < end else { return nil }
        return v
    }

    func teardown() {
        if khugepagedEntered.load(ordering: .relaxed) { system.khugepaged.exit(self) }
        // exit_mmap(): everything goes.
        let all = allVMAs()
        for v in all {
            zapRange(v.vmStart, v.vmEnd, vma: v, dropMarkers: true)
            vmaUnlink(v)
            Self.unlinkAnonVMAs(v)
        }
        freePageTables(floor: 0, ceiling: 0, start: 0, end: config.taskSize, level: 4, table: pgd, freeAll: true)
        endVMAWrites()
        vmaFreeDeferred(all)
        tableSlab.retire([pgd.base])
    }
}

/// What `AddressSpace.stats` counts, per thread.
public enum MMStat: Int, CaseIterable, Sendable {
    /// Faults handled (any kind), and by kind.
    case faults, anonFaults, zeroPageFaults, cowFaults, reuseFaults, fileFaults, fileCOWFaults, sharedWriteFaults
    /// Faults that waited for simulated I/O, and retries after dropping a lock for it.
    case majorFaults, retries
    /// Accesses satisfied by an existing PTE (no fault).
    case tlbHits
    /// Speculative or lockless fault attempts that succeeded, aborted, and fell back to the
    /// locked path (`fallbacks` also counts errors a lockless path hands to the locked one).
    case speculativeSuccesses, aborts, fallbacks
    /// Aborts by reason (`AbortReason`).
    case abortSeqChanged, abortVMAChanged, abortLockContended, abortDetached, abortNotAnonymous, abortNoAnonVMA,
         abortNoVMA, abortNoPageTable, abortPTEChanged
    /// Resident pages by type (`MM_ANONPAGES`, `MM_FILEPAGES`, `MM_SHMEMPAGES`), as deltas.
    case rssAnon, rssFile, rssShmem
    /// `/proc/pid/maps` lines produced, and lines a lock-free walk had to take `mmap_lock` for.
    case mapsVMAs, mapsFallbacks
    /// TLB shootdowns: flushes after permissions were taken from present PTEs (mprotect,
    /// fork's write-protect), each a wait for the accesses in flight.
    case tlbFlushes
    /// Pages mapped by fault-around (`filemap_map_pages`), beside the faults themselves.
    case faultAroundPages
    /// Pages MADV_PAGEOUT reclaimed: unmapped, and dropped from the page cache if clean.
    case pagedOut
    /// Pages MADV_COLD moved to an inactive list.
    case deactivated
    /// Faults on a swap entry (`do_swap_page`), major or not.
    case swapInFaults
    /// The kernel's per-VMA-lock fault events (`/proc/vmstat`, CONFIG_PER_VMA_LOCK_STATS), as
    /// it defines them: `vma_lock_success` a fault handled under the VMA lock (an access
    /// error too); `vma_lock_abort` no VMA could be locked; `vma_lock_retry` the fault under
    /// the VMA lock asked to be retried (under `mmap_lock`, or the VMA lock again); and
    /// `vma_lock_miss` a look-up repeated because the VMA found was detached.
    case vmaLockSuccess, vmaLockAbort, vmaLockRetry, vmaLockMiss
    /// VMAs allocated from a SLAB_TYPESAFE_BY_RCU cache by reusing a freed one.
    case vmaReused
    /// `/proc/vmstat` thp_fault_alloc, thp_fault_fallback, thp_split_pmd; and read faults that
    /// mapped the huge zero page.
    case thpFaultAlloc, thpFaultFallback, thpSplitPMD, thpZeroPageFaults
    /// Pages of a split THP mapped to the zero page because they held only zeros
    /// (`thp_underused_split_page`'s mechanism at any split, 6.12).
    case thpZeroRemapped
    /// THPs MADV_COLLAPSE made (`thp_collapse_alloc`); blocks it skipped for a swapped-out page
    /// (the model does not read them back first, Linux does) and VMAs it refused for being
    /// file or shmem (page-cache collapse is not modelled).
    case thpCollapseAlloc, collapseSwapSkipped, collapseFileRefused
    /// khugepaged's scan results that left a 2 MiB as it was (`SCAN_EXCEED_NONE_PTE`,
    /// `SCAN_EXCEED_SHARED_PTE`, `SCAN_LACK_REFERENCED_PAGE`), and its collapses.
    case khugepagedExceedNone, khugepagedExceedShared, khugepagedLackReferenced, khugepagedCollapsed
    /// THP faults that fell back because the memcg refused the THP's charge
    /// (`thp_fault_fallback_charge`; each is in `thpFaultFallback` too).
    case thpFaultFallbackCharge
}

/// The work of one `move_page_tables`: PTE slots visited, present PTEs moved one by one, and
/// whole PTE tables relinked (`move_pgt_entry`).
@_spi(Testing) public struct PageTableMoveWork: Equatable, Sendable {
    public var entriesVisited = 0
    public var entriesMoved = 0
    public var tablesMoved = 0
    public init() {}
}
