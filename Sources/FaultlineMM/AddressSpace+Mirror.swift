import FaultlineSync

extension AddressSpace {
    /// Inserts a VMA exactly as given, without merging (to mirror a layout another process
    /// has — the differential tester's helper, or mappings an strace log implies).
    /// - Parameters:
    ///   - start: the VMA's first address (page-aligned).
    ///   - end: the address just past it.
    ///   - flags: its `vm_flags`.
    ///   - file: the file it maps, if any.
    ///   - pgoff: the file page at `start` (default: 0 for a file, `start`'s page number for anonymous memory).
    ///   - anonymous: the VMA has anonymous pages, so it has an anon_vma.
    ///   - specialName: the name of a special mapping (`[vdso]`, `[vvar]`), shown in maps as it is.
    public func mirror(start: UInt64, end: UInt64, flags: VMFlags, file: MMFile? = nil, pgoff: UInt64? = nil,
                       anonymous: Bool = false, specialName: String? = nil) {
        precondition(start < end && Linux.offsetInPage(start) == 0 && Linux.offsetInPage(end) == 0)
        withWriter(.mirror, { start..<end }) {
            mirrorLocked(start: start, end: end, flags: flags, file: file, pgoff: pgoff, anonymous: anonymous,
                         specialName: specialName)
        }
    }

    func mirrorLocked(start: UInt64, end: UInt64, flags: VMFlags, file: MMFile?, pgoff: UInt64?, anonymous: Bool,
                      specialName: String? = nil) {
        precondition(findIntersection(start, end) == nil, "mirrored VMA overlaps")
        let v = vmaAlloc(start: start, end: end, flags: flags, pgoff: pgoff ?? (file == nil ? start >> Linux.pageShift : 0), file: file)
        if let specialName {
            v.pointee.anonName.store(AnonNames.shared.id(specialName) | AnonNames.specialMapping, ordering: .relaxed)
        }
        vmaLink(v)
        if anonymous { prepareAnonVMA(v) }
    }

    /// VM flags for a maps line's permission string (`rwxp`), with the VM_MAY* bits.
    public static func flags(forPerms perms: String) -> VMFlags {
        let c = Array(perms)
        var f: VMFlags = [.mayRead, .mayWrite, .mayExec]
        if c.count > 0 && c[0] == "r" { f.insert(.read) }
        if c.count > 1 && c[1] == "w" { f.insert(.write) }
        if c.count > 2 && c[2] == "x" { f.insert(.exec) }
        if c.count > 3 && c[3] == "s" { f.formUnion([.shared, .mayShare]) }
        return f
    }
}

extension AddressSpace {
    /// Gives the VMA at `address` an anon_vma, as its first anonymous page would.
    public func giveAnonVMA(at address: UInt64) {
        withWriter(.mirror, { address..<(address + Linux.pageSize) }) {
            if let v = tree.lookup(address) { prepareAnonVMA(v) }
        }
    }
}
