import FaultlineSync

/// One line of `/proc/pid/maps`, parsed or produced.
public struct MapsLine: Equatable, Sendable, CustomStringConvertible {
    public var start: UInt64
    public var end: UInt64
    public var perms: String
    public var offset: UInt64
    public var device: String
    public var inode: UInt64
    public var path: String

    public init(start: UInt64, end: UInt64, perms: String, offset: UInt64, device: String = "00:00", inode: UInt64 = 0, path: String = "") {
        self.start = start
        self.end = end
        self.perms = perms
        self.offset = offset
        self.device = device
        self.inode = inode
        self.path = path
    }

    /// `show_map_vma()`: `%08lx-%08lx %c%c%c%c %08llx %02x:%02x %lu `, then the name padded
    /// to column 73.
    public var description: String {
        var s = hex8(start) + "-" + hex8(end) + " " + perms + " " + hex8(offset) + " " + device + " " + String(inode) + " "
        if !path.isEmpty {
            if s.count < 72 { s += String(repeating: " ", count: 72 - s.count) }
            s += " " + path
        }
        return s
    }

    /// The fields the differential tester compares: range, permissions, offset, path.
    public var comparable: String { hex8(start) + "-" + hex8(end) + " " + perms + " " + hex8(offset) + " " + path }

    /// Parses a maps line; nil when it is not one.
    public init?(parsing line: Substring) {
        let parts = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
        guard parts.count >= 5 else { return nil }
        let range = parts[0].split(separator: "-")
        guard range.count == 2, let s = UInt64(range[0], radix: 16), let e = UInt64(range[1], radix: 16),
              parts[1].count == 4, let off = UInt64(parts[2], radix: 16), let ino = UInt64(parts[4]) else { return nil }
        self.init(start: s, end: e, perms: String(parts[1]), offset: off, device: String(parts[3]), inode: ino,
                  path: parts.count > 5 ? String(parts[5].drop(while: { $0 == " " })) : "")
    }
}

func hex8(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return s.count < 8 ? String(repeating: "0", count: 8 - s.count) + s : s
}

extension AddressSpace {
    /// The maps line of one VMA.
    func mapsLine(_ v: VMARef) -> MapsLine {
        let f = v.vmFlags
        let perms = (f.contains(.read) ? "r" : "-") + (f.contains(.write) ? "w" : "-")
            + (f.contains(.exec) ? "x" : "-") + (f.contains(.mayShare) ? "s" : "p")
        if let file = v.vmFile {
            return MapsLine(start: v.vmStart, end: v.vmEnd, perms: perms, offset: v.vmPgoff << Linux.pageShift,
                            device: file.deviceString, inode: file.inode, path: file.path)
        }
        var name = ""
        let nameID = v.anonNameID
        if nameID & AnonNames.specialMapping != 0 {
            // A special mapping mirrored from another process (`[vdso]`, `[vvar]`).
            name = AnonNames.shared.name(nameID & ~AnonNames.specialMapping)
        } else if v.vmStart < brkValue && v.vmEnd > startBrkValue {
            // vma_is_initial_heap(): strictly overlapping [start_brk, brk) — a VMA that only
            // touches start_brk is not the heap (PROCMAP_QUERY found the difference).
            name = "[heap]"
        } else if let stack = config.startStack, v.vmStart <= stack && v.vmEnd >= stack {
            name = "[stack]"
        } else if v.anonNameID != 0 {
            name = "[anon:" + AnonNames.shared.name(v.anonNameID) + "]"
        }
        return MapsLine(start: v.vmStart, end: v.vmEnd, perms: perms, offset: 0, path: name)
    }

    /// `/proc/pid/maps` as structured lines of the VMAs meeting `window`, read under
    /// `mmap_lock` for read (`.locked`) or VMA by VMA (`.lockless`).
    /// `pace(n)` runs after the n-th line is produced — under `mmap_lock` in the locked form,
    /// between VMAs in the lock-free one — standing in for a reader that is slow to consume
    /// (the seq_file buffer filling up, a fault on the user buffer, preemption).
    public func mapsLines(in window: Range<UInt64> = 0..<UInt64.max, reader: MapsReader = .locked,
                          pace: ((Int) -> Void)? = nil) -> [MapsLine] {
        var out: [MapsLine] = []
        if reader == .locked {
            mmapLock.lockRead()
            for v in vmas(in: window.lowerBound, window.upperBound) {
                out.append(mapsLine(v))
                pace?(out.count)
            }
            mmapLock.unlockRead()
        } else {
            var from = window.lowerBound
            while from < window.upperBound, var l = nextMapsLine(from), l.start < window.upperBound {
                if l.start < from && !out.isEmpty {
                    // The VMA grew below the walk position after the previous line: show it
                    // from there on. proc(5) guarantees addresses never go backwards and that
                    // whatever stays mapped throughout the walk is shown.
                    if l.inode != 0 { l.offset += from - l.start }
                    l.start = from
                }
                out.append(l)
                pace?(out.count)
                from = l.end
            }
        }
        count(.mapsVMAs, UInt64(out.count))
        return out
    }

    /// `/proc/pid/maps`.
    public func mapsText(reader: MapsReader = .locked) -> String {
        mapsLines(reader: reader).map { $0.description + "\n" }.joined()
    }

    /// One step of the lock-free walk: the first VMA ending after `from`, copied while it was
    /// locked or validated as the design does (`MMDesign.nextMapsLine`); on any doubt, that
    /// one step under `mmap_lock` for read.
    func nextMapsLine(_ from: UInt64) -> MapsLine? { designType.nextMapsLine(self, from) }

    /// For designs with no lock-free structure to validate against: `mmap_lock` (the short
    /// lock) for this one VMA, dropped between VMAs.
    func mapsLineUnderMmapLock(_ from: UInt64) -> MapsLine? {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        return tree.find(from: from).map { mapsLine($0) }
    }

    /// A lock-free step that failed: the same under `mmap_lock`, counted.
    func mapsLineFallback(_ from: UInt64) -> MapsLine? {
        count(.mapsFallbacks)
        return mapsLineUnderMmapLock(from)
    }

    /// The VMA copied under RCU and validated by the mm sequence count (nil: retry locked).
    func mapsLineUnderMMSeq(_ from: UInt64) -> MapsLine? {
        var line: MapsLine?
        rcuRead.readLock()
        let seq = mmSeq.rawRead()
        if seq & 1 == 0, let v = tree.find(from: from) { line = mapsLine(v) }
        rcuRead.readUnlock()
        if let line, !mmSeq.readRetry(seq) { return line }
        return nil
    }

    /// The VMA copied under RCU and validated by its own sequence count, still attached and
    /// still the first after `from` (nil: retry locked).
    func mapsLineUnderVMASeq(_ from: UInt64) -> MapsLine? {
        var line: MapsLine?
        rcuRead.readLock()
        if let v = tree.find(from: from) {
            let seq = v.pointee.seq.rawRead()
            if seq & 1 == 0 {
                let l = mapsLine(v)
                if !v.pointee.seq.readRetry(seq), !v.pointee.detached.load(ordering: .acquiring),
                   from >= v.vmStart || tree.find(from: from) == v {
                    line = l
                }
            }
        }
        rcuRead.readUnlock()
        return line
    }

    /// `lock_next_vma()` (Linux 6.16): find the next VMA under RCU and read-lock it; refuse it
    /// if it was detached, shrank below `from`, or — when it starts after `from` — is no longer
    /// the first VMA after `from` (a VMA installed in between would otherwise be reported as a
    /// gap that never existed).
    func lockNextVMA(_ from: UInt64) -> MapsLine? {
        rcuRead.readLock()
        defer { rcuRead.readUnlock() }
        guard let v = tree.find(from: from), vmaStartRead(v) == nil else { return nil }
        defer { vmaEndRead(v) }
        if v.pointee.detached.load(ordering: .acquiring) || from >= v.vmEnd { return nil }
        if from < v.vmStart && tree.find(from: from) != v { return nil }
        return mapsLine(v)
    }

    /// Memory statistics of one VMA (`smaps_pte_entry` and friends), in bytes.
    public struct VMAUsage: Sendable {
        public var rss: UInt64 = 0
        public var pss: UInt64 = 0
        public var pssDirty: UInt64 = 0
        public var sharedClean: UInt64 = 0
        public var sharedDirty: UInt64 = 0
        public var privateClean: UInt64 = 0
        public var privateDirty: UInt64 = 0
        public var referenced: UInt64 = 0
        public var anonymous: UInt64 = 0
        /// Lazy-free anonymous pages (MADV_FREE) not written since: reclaim may discard them.
        public var lazyFree: UInt64 = 0
        /// `Locked:`: the Pss of a VM_LOCKED VMA, 0 for any other.
        public var locked: UInt64 = 0
        /// `Swap:` and `SwapPss:` (each entry's share of its slot).
        public var swap: UInt64 = 0
        public var swapPss: UInt64 = 0
        /// `AnonHugePages:`: THPs mapped by a huge PMD (`smaps_pmd_entry`).
        public var anonHugePages: UInt64 = 0
    }

    /// Walks the VMA's PTEs (the zero page does not count).
    func usage(_ v: VMARef) -> VMAUsage {
        var u = VMAUsage()
        let pssShift: UInt64 = 12
        rcuRead.readLock()
        forEachPTETable(v.vmStart, v.vmEnd) { table, s, e in
            if e &- s == Linux.pmdSize && table.pmdMapping.pointee.load(ordering: .relaxed) == PMDMapping.thp {
                u.anonHugePages += Linux.pmdSize
            }
            var a = s
            while a < e {
                let pte = table.entry(ptIndex(a, level: 1)).pointee.load(ordering: .acquiring)
                a += Linux.pageSize
                if PTE.isSwap(pte), let swap = system.swap {
                    // smaps_pte_entry(): swap entries, SwapPss shared by the slot's users.
                    u.swap += Linux.pageSize
                    u.swapPss += (Linux.pageSize << pssShift) / UInt64(max(swap.count(PTE.swapSlot(pte)), 1))
                    continue
                }
                guard pte & PTE.present != 0, pte & PTE.special == 0 else { continue }
                let p = frames.page(PTE.frame(pte))
                let mapcount = UInt64(max(p.pointee.mapcount.load(ordering: .relaxed), 1))
                let flags = p.pointee.flags.load(ordering: .relaxed)
                let dirty = pte & PTE.dirty != 0 || flags & PageMeta.Flag.dirty != 0
                let size = Linux.pageSize
                u.rss += size
                let pss = (size << pssShift) / mapcount
                u.pss += pss
                if dirty { u.pssDirty += pss }
                // smaps_account(): young, or PG_referenced.
                if pte & PTE.accessed != 0 || flags & PageMeta.Flag.referenced != 0 {
                    u.referenced += size
                }
                if flags & PageMeta.Flag.anon != 0 { u.anonymous += size }
                if flags & PageMeta.Flag.lazyFree != 0 && !dirty { u.lazyFree += size }
                if mapcount >= 2 {
                    if dirty { u.sharedDirty += size } else { u.sharedClean += size }
                } else {
                    if dirty { u.privateDirty += size } else { u.privateClean += size }
                }
            }
        }
        rcuRead.readUnlock()
        u.pss >>= pssShift
        u.pssDirty >>= pssShift
        u.swapPss >>= pssShift
        if v.vmFlags.contains(.locked) { u.locked = u.pss }
        return u
    }

    /// The smaps statistics of each VMA starting in `[start, end)`, by start address (what
    /// `smapsText()` prints, without formatting every VMA).
    public func usage(start: UInt64, end: UInt64) -> [(start: UInt64, usage: VMAUsage)] {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        return vmas(in: start, end).filter { $0.vmStart >= start }.map { ($0.vmStart, usage($0)) }
    }

    /// `/proc/pid/smaps` (the fields Faultline models; the rest are the kernel's zeros).
    public func smapsText() -> String {
        mmapLock.lockRead()
        defer { mmapLock.unlockRead() }
        var out = ""
        for v in vmas(in: 0, UInt64.max) {
            let u = usage(v)
            let f = v.vmFlags
            func row(_ label: String, _ bytes: UInt64) {
                let kb = String(bytes >> 10)
                out += label + String(repeating: " ", count: max(0, 16 - label.count))
                out += String(repeating: " ", count: max(0, 8 - kb.count)) + kb + " kB\n"
            }
            out += mapsLine(v).description + "\n"
            row("Size:", v.vmEnd - v.vmStart)
            row("KernelPageSize:", Linux.pageSize)
            row("MMUPageSize:", Linux.pageSize)
            row("Rss:", u.rss)
            row("Pss:", u.pss)
            row("Pss_Dirty:", u.pssDirty)
            row("Shared_Clean:", u.sharedClean)
            row("Shared_Dirty:", u.sharedDirty)
            row("Private_Clean:", u.privateClean)
            row("Private_Dirty:", u.privateDirty)
            row("Referenced:", u.referenced)
            row("Anonymous:", u.anonymous)
            row("KSM:", 0)
            row("LazyFree:", u.lazyFree)
            row("AnonHugePages:", u.anonHugePages)
            for label in ["ShmemPmdMapped:", "FilePmdMapped:",
                          "Shared_Hugetlb:", "Private_Hugetlb:"] { row(label, 0) }
            row("Swap:", u.swap)
            row("SwapPss:", u.swapPss)
            row("Locked:", u.locked)
            let eligible = thpEligible(v) ? "1" : "0"
            out += "THPeligible:" + String(repeating: " ", count: 16 - "THPeligible:".count)
                + String(repeating: " ", count: 7) + eligible + "\n"
            // arch_pkeys_enabled(): every VMA shows its key.
            if config.executeOnlyPKey {
                let key = f.contains(.pkeyExecOnly) ? "1" : "0"
                out += "ProtectionKey:" + String(repeating: " ", count: 9) + key + "\n"
            }
            out += "VmFlags: " + f.smapsDescription + " \n"
        }
        return out
    }

    /// `thp_vma_allowable_orders(vma, TVA_SMAPS, PMD_ORDER)`: the mode allows huge pages here
    /// and the last 2 MiB-aligned block that ends in the VMA lies inside it.
    func thpEligible(_ v: VMARef) -> Bool {
        guard v.vmEnd - v.vmStart >= Linux.pmdSize, v.isAnonymous else { return false }
        return thpFaultAllowed(VMASnapshot(v), v.vmEnd - Linux.pmdSize)
    }

    /// Resident pages by type (`MM_ANONPAGES`, `MM_FILEPAGES`, `MM_SHMEMPAGES`).
    public var rss: (anon: Int, file: Int, shmem: Int) {
        (Int(Int64(bitPattern: stats.sum(MMStat.rssAnon.rawValue))),
         Int(Int64(bitPattern: stats.sum(MMStat.rssFile.rawValue))),
         Int(Int64(bitPattern: stats.sum(MMStat.rssShmem.rawValue))))
    }
}
