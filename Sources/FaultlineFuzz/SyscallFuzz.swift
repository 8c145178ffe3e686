import FaultlineMM
import Glibc

/// Bytes decoded into a sequence of memory calls (`MemoryCall`s, each also rendered to strace
/// syntax and read back), page touches, PROCMAP_QUERY ioctls and forks on the model, under a
/// design the first byte picks. After every call the address space must be consistent
/// (`checkQuiescent`: tree, VMAs, locks and counts at rest, every PTE allowed by its VMA and
/// mapping a live frame); a byte stored must read back; a query's lock-free answer must be
/// the locked maps'; at the end every frame's reference and map counts must match the page
/// tables of every space. Violations trap.
public enum SyscallFuzz {
    /// The window most addresses fall in, so that calls meet each other's mappings.
    static let base: UInt64 = 0x7000_0000_0000
    static let page = Linux.pageSize
    static let populateLimit: UInt64 = 16 << 20

    struct Bytes {
        var b: UnsafeBufferPointer<UInt8>
        var i = 0
        var isEmpty: Bool { i >= b.count }
        mutating func u8() -> UInt8 {
            defer { i += 1 }
            return i < b.count ? b[i] : 0
        }
        mutating func u64() -> UInt64 {
            var v: UInt64 = 0
            for _ in 0..<8 { v = v << 8 | UInt64(u8()) }
            return v
        }
        mutating func addr() -> UInt64 {
            let k = u8()
            switch k & 0xf {
            case 0: return 0
            case 1: return u64()
            case 2: return base + UInt64(u8()) * page + UInt64(u8() & 0x7)   // unaligned
            default: return base + UInt64(k >> 4 | (u8() & 0x3) << 4) * page
            }
        }
        mutating func len() -> UInt64 {
            let k = u8()
            switch k & 0xf {
            case 0: return 0
            case 1: return u64()
            case 2: return UInt64(u8()) * page + UInt64(u8())
            case 3: return (2 << 20) * UInt64(1 + (k >> 4))    // huge-page sized
            default: return UInt64(1 + (k >> 4)) * page
            }
        }
        mutating func prot() -> Prot {
            let k = u8()
            var p = Prot(rawValue: UInt32(k & 7))
            if k & 0x40 != 0 { p.insert(.growsDown) }
            if k & 0x80 != 0 && k & 0x20 != 0 { p = Prot(rawValue: p.rawValue | 0x10) }   // unknown bit
            return p
        }
        mutating func mapFlags() -> MapFlags {
            let k = u8(), m = u8()
            var f: MapFlags = [[.private], [.shared], [.sharedValidate], []][Int(k & 3)]
            if k & 0x04 != 0 { f.insert(.anonymous) }
            if k & 0x08 != 0 { f.insert(.fixed) }
            if k & 0x10 != 0 { f.insert(.fixedNoReplace) }
            if k & 0x20 != 0 { f.insert(.populate) }
            if k & 0x40 != 0 { f.insert(.noReserve) }
            if k & 0x80 != 0 { f.insert(.growsDown) }
            if m & 0x01 != 0 { f.insert(.stack) }
            if m & 0x02 != 0 { f.insert(.locked) }
            if m & 0x04 != 0 { f.insert(.hugeTLB); f.formUnion(MapFlags(rawValue: UInt32(m >> 3 & 0x1f) << 26)) }
            if m & 0xe0 == 0xe0 { f.insert(MapFlags(rawValue: 1 << 22)) }   // an unknown flag
            return f
        }

        /// Op codes 0–10 and 23–25: one memory call, and the file an mmap or ftruncate names.
        mutating func call(_ code: UInt8, _ mm: AddressSpace, _ files: [MMFile]) -> (MemoryCall, MMFile?) {
            switch code {
            case 0, 1, 2:
                let a = addr(), l = len(), p = prot()
                var f = mapFlags()
                // Populating is a fault per page, as in the kernel: keep an input's work bounded.
                if l > SyscallFuzz.populateLimit { f.subtract([.populate, .locked]) }
                let which = u8()
                let file: Int? = f.contains(.anonymous) || which & 3 == 3 ? nil : Int(which & 1)
                let off = which & 4 != 0 ? UInt64(u8() & 0x1f) * page + (which & 8 != 0 ? 17 : 0) : 0
                let fd = file.map { FileDescriptor(Int32(3 + $0), path: files[$0].path) } ?? .none
                return (.mmap(addr: a, length: l, prot: p, flags: f, fd: fd, offset: off), file.map { files[$0] })
            case 3, 4:
                return (.munmap(addr: addr(), length: len()), nil)
            case 5, 6:
                return (.mprotect(addr: addr(), length: len(), prot: prot()), nil)
            case 7:
                let a = addr(), o = len(), n = len(), f = MremapFlags(rawValue: UInt32(u8() & 0xf))
                return (.mremap(addr: a, oldLength: o, newLength: n, flags: f, newAddr: addr()), nil)
            case 8, 9:
                let a = addr(), l = len()
                let k = u8()
                let adv = k < 190 ? Int32(k % 26) : k < 210 ? 102 + Int32(k & 1) : Int32(bitPattern: UInt32(k) << 24)
                // Populating is a fault per page and installing guards a marker per page (tables
                // allocated for all of them): bounded, as mmap's populate is.
                let populates: Set<Int32> = [Advice.populateRead.rawValue, Advice.populateWrite.rawValue,
                                             Advice.willNeed.rawValue, Advice.guardInstall.rawValue]
                return (.madvise(addr: a, length: populates.contains(adv) ? min(l, SyscallFuzz.populateLimit) : l, advice: adv), nil)
            case 23:
                let a = addr(), l = len(), k = u8()
                return (.mseal(addr: a, length: l, flags: k < 240 ? 0 : UInt64(k & 0xf)), nil)
            case 25:
                let a = addr(), l = min(len(), SyscallFuzz.populateLimit), k = u8()
                switch k % 8 {
                case 0, 1: return (.mlock(addr: a, length: l), nil)
                case 2: return (.mlock2(addr: a, length: l, flags: UInt32(k >> 6)), nil)
                case 3, 4: return (.munlock(addr: a, length: l), nil)
                // Always with MCL_ONFAULT (alone: EINVAL): populating every VMA of an input
                // that mapped terabytes would be an input's whole budget.
                case 5: return (.mlockall(flags: UInt32(k >> 3) & 0xb | 4), nil)
                default: return (.munlockall, nil)
                }
            case 24:
                // Mostly within the files' capacity (a page, or a page and a bit), sometimes any
                // register value (negative: EINVAL; beyond ext4: EFBIG; beyond capacity: ENOSPC).
                let k = u8()
                let l = k & 0xc0 == 0xc0 ? u64() : UInt64(u8()) * page / 2 + (k & 0x20 != 0 ? UInt64(u8()) : 0)
                let file = Int(k & 1)
                return (.ftruncate(fd: FileDescriptor(Int32(3 + file), path: files[file].path), length: l), files[file])
            default:
                let k = u8()
                return (.brk(addr: k & 1 == 0 ? mm.currentBrk &+ UInt64(k >> 1) * page : mm.startBrk &+ UInt64(k) * 100), nil)
            }
        }
    }

    /// `FAULTLINE_FUZZ_TRACE=1` prints each step of an input (to see what a crash or timeout
    /// artifact does: `fuzz-syscalls ARTIFACT`).
    static let trace = getenv("FAULTLINE_FUZZ_TRACE") != nil

    static func log(_ s: String) { var s = s + "\n"; s.withUTF8 { _ = write(2, $0.baseAddress, $0.count) } }

    /// PROCMAP_QUERY's answer worked out from maps lines read under `mmap_lock`: the fuzzer's
    /// oracle for the lock-free walk.
    static func procmapReference(_ q: ProcmapQuery, _ lines: [MapsLine]) -> Result<ProcmapVMA, Errno> {
        if let e = q.argumentError { return .failure(e) }
        let next = q.flags & 0x10 != 0
        guard let l = lines.first(where: { l in
            guard l.end > q.address, next || l.start <= q.address else { return false }
            let p = Array(l.perms)
            let has: [UInt64: Bool] = [1: p[0] == "r", 2: p[1] == "w", 4: p[2] == "x", 8: p[3] == "s", 0x20: l.inode != 0]
            return has.allSatisfy { bit, yes in q.flags & bit == 0 || yes }
        }) else { return .failure(.ENOENT) }
        // Without COVERING_OR_NEXT only the covering VMA may answer.
        if !next, let covering = lines.first(where: { $0.end > q.address }), covering.start != l.start { return .failure(.ENOENT) }
        let p = Array(l.perms)
        var v = ProcmapVMA(start: l.start, end: l.end,
                           flags: (p[0] == "r" ? 1 : 0) | (p[1] == "w" ? 2 : 0) | (p[2] == "x" ? 4 : 0) | (p[3] == "s" ? 8 : 0),
                           pageSize: Linux.pageSize, offset: l.offset, nameSize: 0, name: "")
        let buffer = q.effectiveNameBuffer
        if buffer > 0 && !l.path.isEmpty {
            if UInt32(l.path.utf8.count + 1) > buffer { return .failure(.ENAMETOOLONG) }
            v.nameSize = UInt32(l.path.utf8.count + 1)
            v.name = l.path
        }
        return .success(v.copiedOut(size: q.size))
    }

    public static func run(_ input: UnsafeBufferPointer<UInt8>) {
        var r = Bytes(b: input)
        let design = Design.selectable[Int(r.u8()) % Design.selectable.count]
        let system = MMSystem(frames: 512)
        system.attach(memcg: MemCgroup.chain("/fuzz"))   // the check holds its usage to its pages
        system.swapOn(pages: 256)   // MADV_PAGEOUT swaps anonymous pages; faults read them back
        var cfg = AddressSpace.Configuration()
        cfg.commitLimitPages = 1 << 20   // 4 GiB: the same on every machine
        var spaces = [AddressSpace(system: system, design: design, configuration: cfg)]
        let files = [system.makeFile(path: "/f0", size: 5 * page + 100, capacity: 256 * page),
                     system.makeFile(path: "/f1", size: 64 * page, capacity: 256 * page)]
        var steps = 0
        while !r.isEmpty && steps < 96 {
            steps += 1
            let op = r.u8()
            let mm = spaces[Int(op >> 5) % spaces.count]
            switch op & 0x1f {
            case 0...10, 23...25:
                let (call, file) = r.call(op & 0x1f, mm, files)
                // The vocabulary's strace form reads back as the call (less what strace does not
                // print: mremap's new address without MREMAP_FIXED or MREMAP_DONTUNMAP).
                var shown = call
                if case let .mremap(a, o, n, f, _) = call, !f.contains(.fixed), !f.contains(.dontUnmap) {
                    shown = .mremap(addr: a, oldLength: o, newLength: n, flags: f, newAddr: 0)
                }
                let text = call.strace()
                precondition((try? MemoryCall(strace: text)) == shown, "\(text) does not read back as \(shown)")
                let got = call.run(on: mm, file: file)
                if trace { log("space \(Int(op >> 5) % spaces.count): \(text) = \(got)") }
                if case let .mmap(a, _, _, f, _, _) = call, got.succeeded {
                    precondition(Linux.offsetInPage(got.value) == 0, "mmap returned \(got)")
                    precondition(!f.contains(.fixed) || got.value == a, "MAP_FIXED placed elsewhere")
                }
            case 11:
                if spaces.count < 3 { spaces.append(mm.fork()) }
                if trace { log("fork: \(spaces.count) spaces") }
            case 12...21:
                let a = r.addr()
                let v = r.u8()
                if op & 1 == 0 {
                    if case .success = mm.store(a, v) {
                        precondition(mm.load(a) == .success(v), "a stored byte did not read back")
                    }
                } else {
                    _ = mm.load(a)
                }
            case 22:
                if spaces.count > 1 { spaces.remove(at: Int(r.u8()) % spaces.count) }
            case 26:
                // PROCMAP_QUERY through the design's lock-free maps walk must answer as the
                // locked maps read does.
                let k = r.u8(), n = r.u8()
                let sizes: [UInt64] = [ProcmapQuery.structSize, 16, 24, 8192, 200, 64]
                let q = ProcmapQuery(address: r.addr(), flags: UInt64(k & 0x7f), size: k & 0x80 != 0 ? sizes[Int(n % 6)] : ProcmapQuery.structSize,
                                     nameBufferSize: n & 0x80 != 0 ? UInt32(n & 0x1f) : 256)
                let got = mm.procmapQuery(q)
                let want = SyscallFuzz.procmapReference(q, mm.mapsLines(reader: .locked))
                if trace { log("space \(Int(op >> 5) % spaces.count): \(q.description) = \(got)") }
                precondition(got == want, "\(q): lock-free \(got), locked maps say \(want)")
            default:
                _ = mm.fault(r.addr(), [.read, .write, .exec][Int(r.u8()) % 3])
            }
            var problems: [String] = []
            var mappings = FrameMappings()
            mm.checkQuiescent(&problems, &mappings)
            // What the caps above cannot bound (a locked VMA grown by mremap is populated with
            // the zero page, without frames): an input whose page tables outgrow 64 MiB ends
            // here, as walking them after every step would outlast libFuzzer's timeout.
            let tables = mm.reachablePageTables
            if trace { log("  step \(steps) op \(op & 0x1f): \(mappings.count.values.reduce(0, +)) frame PTEs, \(tables) page tables") }
            if tables > 16384 { break }
            precondition(problems.isEmpty, problems.joined(separator: "\n"))
        }
        let problems = system.checkQuiescent(spaces)
        precondition(problems.isEmpty, problems.joined(separator: "\n"))
    }
}
