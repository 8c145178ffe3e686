import FaultlineSync

// mlock, mlock2, munlock, mlockall, munlockall (mm/mlock.c), probed on 6.18 (each kept as a
// test in MlockTests): the start is rounded down and the length up, not refused; the flags go
// on VMA by VMA (split and merged like any flag change) up to the first hole, which is
// ENOMEM with the VMAs before it changed and nothing populated; then the range is populated
// (read faults, write faults for private writable memory), and a VMA GUP refuses
// (PROT_NONE, the execute-only key) or a fault that fails (SIGBUS past EOF, a guard marker)
// makes mlock ENOMEM with VM_LOCKED kept; MLOCK_ONFAULT/MCL_ONFAULT lock without
// populating; mlockall(MCL_FUTURE) locks every later mapping and heap growth; a sealed VMA
// may be locked. smaps shows `lo`, `lf` and `Locked:` (the locked VMAs' Pss).

/// `MCL_*`.
public struct MlockallFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let current = MlockallFlags(rawValue: 1)
    public static let future = MlockallFlags(rawValue: 2)
    public static let onFault = MlockallFlags(rawValue: 4)
}

extension AddressSpace {
    /// `can_do_mlock()`.
    var canDoMlock: Bool { config.memlockLimit != 0 || config.capIPCLock }

    /// `mm->locked_vm`: pages of VM_LOCKED VMAs (writer side).
    var lockedVMPages: UInt64 {
        var n: UInt64 = 0
        tree.forEach(0, UInt64.max) { v in
            if v.vmFlags.contains(.locked) { n += pages(v) }
            return true
        }
        return n
    }

    /// `mlock_future_ok()`: may `bytes` more of VMA flags `flags` be locked?
    func mlockFutureOK(_ flags: VMFlags, _ bytes: UInt64) -> Bool {
        guard flags.contains(.locked), !config.capIPCLock else { return true }
        return lockedVMPages &+ (bytes >> Linux.pageShift) <= config.memlockLimit >> Linux.pageShift
    }

    /// `mlock(2)`.
    public func mlock(_ addr: UInt64, _ length: UInt64) -> Result<Void, Errno> {
        doMlock(addr, length, [.locked])
    }

    /// `mlock2(2)`: MLOCK_ONFAULT (1) locks without populating; any other bit is EINVAL.
    public func mlock2(_ addr: UInt64, _ length: UInt64, _ flags: UInt32) -> Result<Void, Errno> {
        if flags & ~1 != 0 { return .failure(.EINVAL) }
        return doMlock(addr, length, flags & 1 != 0 ? [.locked, .lockOnFault] : [.locked])
    }

    /// `munlock(2)`.
    public func munlock(_ addr: UInt64, _ length: UInt64) -> Result<Void, Errno> {
        defer { returnToUser() }
        let (start, len) = Self.mlockRange(addr, length)
        return withWriter(.mlock, { Self.lockRange(start, len) }) { applyVMALockFlags(start, len, []) }
    }

    /// `mlockall(2)`.
    public func mlockall(_ flagsIn: UInt32) -> Result<Void, Errno> {
        defer { returnToUser() }
        let flags = MlockallFlags(rawValue: flagsIn)
        if flagsIn == 0 || flagsIn & ~7 != 0 || flags == .onFault { return .failure(.EINVAL) }
        if !canDoMlock { return .failure(.EPERM) }
        let r: Result<Void, Errno> = withWriter(.mlock, { wholeSpace }) {
            let totalPages = allVMAs().reduce(0) { $0 + pages($1) }
            guard !flags.contains(.current) || totalPages <= config.memlockLimit >> Linux.pageShift || config.capIPCLock else {
                return .failure(.ENOMEM)
            }
            applyMlockallFlags(flags)
            return .success(())
        }
        if case .failure = r { return r }
        // mm_populate(0, TASK_SIZE): errors ignored.
        if flags.contains(.current) { _ = populateAfterWriter(0, config.taskSize, mode: .mapPopulate) }
        return .success(())
    }

    /// `munlockall(2)`.
    public func munlockall() -> Result<Void, Errno> {
        defer { returnToUser() }
        return withWriter(.mlock, { wholeSpace }) {
            applyMlockallFlags([])
            return .success(())
        }
    }

    /// The page range sys_mlock() works on: the start rounded down, the length rounded up
    /// with the start's offset (wrapping as size_t does).
    static func mlockRange(_ addr: UInt64, _ length: UInt64) -> (start: UInt64, len: UInt64) {
        let len = Linux.pageAlign(length &+ Linux.offsetInPage(addr))
        return (addr & Linux.pageMask, len)
    }

    /// The range a writer section covers (nil: nothing to change, or EINVAL).
    static func lockRange(_ start: UInt64, _ len: UInt64) -> Range<UInt64>? {
        start &+ len > start ? start..<(start &+ len) : nil
    }

    /// `do_mlock()`.
    func doMlock(_ addr: UInt64, _ length: UInt64, _ flags: VMFlags) -> Result<Void, Errno> {
        defer { returnToUser() }
        if !canDoMlock { return .failure(.EPERM) }
        let (start, len) = Self.mlockRange(addr, length)
        let applied: Result<Void, Errno> = withWriter(.mlock, { Self.lockRange(start, len) }) {
            if !config.capIPCLock {
                // count_mm_mlocked_page_nr(): what is locked already in the range counts once.
                var locked = (len >> Linux.pageShift) &+ lockedVMPages
                let limit = config.memlockLimit >> Linux.pageShift
                if locked > limit {
                    tree.forEach(start, start &+ len) { v in
                        if v.vmFlags.contains(.locked) { locked -= (min(v.vmEnd, start &+ len) - max(v.vmStart, start)) >> Linux.pageShift }
                        return true
                    }
                }
                if locked > limit { return .failure(.ENOMEM) }
            }
            return applyVMALockFlags(start, len, flags)
        }
        if case .failure = applied { return applied }
        guard len > 0, start &+ len > start else { return .success(()) }
        // __mm_populate(start, len, 0), then __mlock_posix_error_return().
        switch populateAfterWriter(start, start + len, mode: .mlock) {
        case .success: return .success(())
        case .failure(.EFAULT): return .failure(.ENOMEM)
        case .failure(.ENOMEM): return .failure(.EAGAIN)
        case .failure(let e): return .failure(e)
        }
    }

    /// `apply_vma_lock_flags()`: `flags` (VM_LOCKED, VM_LOCKONFAULT, or none) replace the
    /// lock flags of every VMA in `[start, start + len)`; a hole is ENOMEM, with the VMAs
    /// before it changed.
    func applyVMALockFlags(_ start: UInt64, _ len: UInt64, _ flags: VMFlags) -> Result<Void, Errno> {
        let end = start &+ len
        if end < start { return .failure(.EINVAL) }
        if end == start { return .success(()) }
        guard var vma = tree.lookup(start) else { return .failure(.ENOMEM) }
        var nstart = start
        while true {
            let newFlags = vma.vmFlags.subtracting([.locked, .lockOnFault]).union(flags)
            let tmp = min(vma.vmEnd, end)
            var covering = vma
            switch mlockFixup(vma, nstart, tmp, newFlags) {
            case .failure(let e): return .failure(e)
            case .success(let v): covering = v
            }
            nstart = max(tmp, min(covering.vmEnd, end))
            if nstart >= end { return .success(()) }
            guard let next = tree.lookup(nstart) else { return .failure(.ENOMEM) }
            vma = next
        }
    }

    /// `mlock_fixup()`: VM_SPECIAL, hugetlb and droppable VMAs are left as they are; the
    /// present anonymous pages of a range that becomes locked (or unlocked) count one more
    /// (one fewer) locked mapping (`mlock_vma_pages_range()`).
    func mlockFixup(_ v: VMARef, _ start: UInt64, _ end: UInt64, _ newFlags: VMFlags) -> Result<VMARef, Errno> {
        let old = v.vmFlags
        if newFlags == old || !old.isDisjoint(with: [.io, .pfnMap, .dontExpand, .mixedMap, .hugeTLB, .droppable]) { return .success(v) }
        let r = modifyFlags(v, start, end, newFlags)
        if case .success = r, old.contains(.locked) != newFlags.contains(.locked) {
            let delta: Int32 = newFlags.contains(.locked) ? 1 : -1
            rcuRead.readLock()
            forEachPresentPTE(start, end) { _, _, e in
                if e & PTE.special == 0 { mlockAnon(PTE.frame(e), delta) }
            }
            rcuRead.readUnlock()
        }
        return r
    }

    /// `apply_mlockall_flags()`: `mm->def_flags` for later mappings, and with MCL_CURRENT the
    /// lock flags of every VMA (errors ignored).
    func applyMlockallFlags(_ flags: MlockallFlags) {
        defFlags.subtract([.locked, .lockOnFault])
        var toAdd: VMFlags = []
        if flags.contains(.future) {
            defFlags.insert(.locked)
            if flags.contains(.onFault) { defFlags.insert(.lockOnFault) }
            if !flags.contains(.current) { return }
        }
        if flags.contains(.current) {
            toAdd.insert(.locked)
            if flags.contains(.onFault) { toAdd.insert(.lockOnFault) }
        }
        var a: UInt64 = 0
        while let v = tree.find(from: a) {
            let r = mlockFixup(v, v.vmStart, v.vmEnd, v.vmFlags.subtracting([.locked, .lockOnFault]).union(toAdd))
            a = (try? r.get())?.vmEnd ?? v.vmEnd
        }
    }

    /// `mm_populate()` / `__mm_populate()` after a writer section, with the read side of the
    /// design's locks (the range designs' range lock too).
    func populateAfterWriter(_ start: UInt64, _ end: UInt64, mode: PopulateMode) -> Result<Void, Errno> {
        let usesRange = designState.listLock != nil || designState.treeLock != nil
        let h = usesRange ? rangeLock(start..<end, .read) : nil
        mmapLock.lockRead()
        let r = populateLocked(start, end, mode: mode)
        mmapLock.unlockRead()
        if let h { rangeUnlock(h) }
        return r
    }
}
