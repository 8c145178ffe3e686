import FaultlineMM

/// How a recorded fault stream agreed with the model, overall and by the kind of VMA the
/// fault hit.
public struct FaultCheck: Sendable, Equatable {
    public struct Tally: Sendable, Equatable {
        /// Faults the host took.
        public var recorded = 0
        /// The model, at that point of the trace, faults there too and ends as the host did
        /// (mapped, or a signal where the trace shows one).
        public var matched = 0
        /// The host faulted where the model's page tables already allowed the access because
        /// another task's fault near it (same fault-around block), still in flight, had mapped
        /// it: two tasks faulting on one page at once both fault, in Linux and in the model.
        public var raced = 0
        /// The host faulted where the model's page tables already allowed the access.
        public var missing = 0
        /// The host faulted and the model would too, but the model's fault ended in a signal
        /// the trace does not show (or the other way round).
        public var outcome = 0
        /// The host ran code at the fault's `ip` without a fault there; the model had no
        /// executable PTE for it and would have taken an instruction fault the host did not.
        public var extra = 0

        mutating func add(_ o: Tally) {
            recorded += o.recorded; matched += o.matched; raced += o.raced; missing += o.missing; outcome += o.outcome; extra += o.extra
        }
    }

    /// User faults, by VMA kind (`anon`, `heap`, `stack`, `file`, `file (shared)`, `shmem`,
    /// `vdso/vvar`, `no VMA`).
    public var user: [String: Tally] = [:]
    /// Kernel accesses to user memory (`copy_to_user` and the like), by VMA kind.
    public var kernel: [String: Tally] = [:]
    /// Of the matched: the host's fault was on a missing PTE and the model's on a present one
    /// (or the other way round) — both faulted, for different reasons.
    public var causeDiffers = 0
    /// Files the replay put wholly in the page cache before the first fault (the host's
    /// were: a recorded program's files are read as it runs, or were cached already).
    public var warmedFiles = 0
    /// Of those, files some of whose pages entered the host's cache during the recording
    /// (`page_cache_add`): those pages start uncached and are added when the host added them.
    public var coldFiles = 0
    /// Files left out of the page cache (too large for the frames, or frames ran out): their
    /// fault-around finds nothing, which shows as extra faults.
    public var unwarmedFiles = 0
    /// The first disagreements, with their trace lines.
    public var examples: [String] = []

    public var userTotal: Tally { user.values.reduce(into: Tally()) { $0.add($1) } }
    public var kernelTotal: Tally { kernel.values.reduce(into: Tally()) { $0.add($1) } }
    public var isEmpty: Bool { user.isEmpty && kernel.isEmpty }

    /// Matched (raced included) share of the recorded user faults, and extra faults per
    /// recorded user fault.
    public var matchedFraction: Double {
        let t = userTotal
        return t.recorded == 0 ? 1 : Double(t.matched + t.raced) / Double(t.recorded)
    }
    public var extraFraction: Double {
        let t = userTotal
        return t.recorded == 0 ? 0 : Double(t.extra) / Double(t.recorded)
    }
}

extension TraceReplayer {
    /// The kind of VMA at `address` in `mm`, as the fault check reports it.
    static func vmaKind(_ mm: AddressSpace, _ address: UInt64) -> String {
        let page = address & Linux.pageMask
        guard let l = mm.mapsLines(in: page..<(page &+ Linux.pageSize)).first, l.start <= address, address < l.end else {
            return "no VMA"
        }
        switch l.path {
        case "[heap]": return "heap"
        case "[stack]": return "stack"
        case "[vdso]", "[vvar]", "[vvar_vclock]": return "vdso/vvar"
        case "": return "anon"
        default:
            if l.path.hasPrefix("[anon") { return "anon" }
            if l.path.hasPrefix("/memfd:") || l.path.hasPrefix("/dev/shm/") || l.path.hasPrefix("/SYSV") { return "shmem" }
            return l.perms.hasSuffix("s") ? "file (shared)" : "file"
        }
    }

    /// One recorded fault: does the model fault there too, and end as the host did? Then the
    /// model takes it, so its page tables follow the host's.
    func replayFault(_ f: RecordedFault, at index: Int) {
        let p = process(of: f.pid)
        let mm = p.mm
        guard f.address < mm.config.taskSize else { return }
        let kind = Self.vmaKind(mm, f.address)
        var t = FaultCheck.Tally()
        t.recorded = 1
        let access = f.kind
        let pte = mm.pteValue(f.address)
        note(f.pid, p, ScriptStep(.access(address: f.address, kind: access)))
        if mm.accessFaults(f.address, access) {
            let r = mm.fault(f.address, access)
            let hostSignal = signalAfterFault[index]
            switch r {
            case .success:
                if let s = hostSignal {
                    t.outcome = 1
                    example("line \(f.line): \(f.body): the host sent \(s), the model mapped the page (\(kind))")
                } else {
                    t.matched = 1
                }
            case .failure(let e):
                if hostSignal != nil {
                    t.matched = 1
                } else {
                    t.outcome = 1
                    example("line \(f.line): \(f.body): the model ends in \(e), the host went on (\(kind))")
                }
            }
            if t.matched == 1, (pte & PTE.present != 0) != f.protection { faultCheck.causeDiffers += 1 }
        } else if racedWith(f, raceKey(f, kind), p) {
            t.raced = 1
        } else {
            t.missing = 1
            example("line \(f.line): \(f.body): the model's PTE already allows the \(access) (\(kind))")
        }
        p.recentFaults.append((f.pid, index, raceKey(f, kind), f.time))
        if p.recentFaults.count > 64 { p.recentFaults.removeFirst(p.recentFaults.count - 64) }
        // The instruction at ip ran without a fault on the host: its page was mapped there.
        let ipPage = f.ip & Linux.pageMask
        if !f.kernel, f.ip < mm.config.taskSize, ipPage != f.address & Linux.pageMask || access != .exec,
           mm.accessFaults(f.ip, .exec) {
            t.extra = 1
            let ipKind = Self.vmaKind(mm, f.ip)
            example("line \(f.line): \(f.body): the model has no executable PTE at ip (\(ipKind)): an instruction fault the host did not take")
            _ = mm.fault(f.ip, .exec)
        }
        if f.kernel { faultCheck.kernel[kind, default: .init()].add(t) } else { faultCheck.user[kind, default: .init()].add(t) }
    }

    /// How long after another task's fault one on the same block still counts as racing it,
    /// if that task showed no event in between: a fault that waits for no I/O returns within
    /// microseconds; 100 µs bounds it generously even under strace and perf.
    static let racedWindowNs: UInt64 = 100_000

    /// What a fault in flight makes present: a file read fault its fault-around block, any
    /// other fault its page. Blocks and pages get keys that never collide.
    func raceKey(_ f: RecordedFault, _ vmaKind: String) -> UInt64 {
        if f.kind != .write && vmaKind.hasPrefix("file") {
            return (f.address / UInt64(max(Int(Linux.pageSize), options.faultAroundBytes))) << 1 | 1
        }
        return (f.address >> Linux.pageShift) << 1
    }

    /// Whether another task's recent fault on the same page (or file block) may still have
    /// been in flight when `f` was taken: that task has no later event, and it was within the
    /// window.
    func racedWith(_ f: RecordedFault, _ key: UInt64, _ p: ReplayProcess) -> Bool {
        guard let t = f.time else { return false }
        for r in p.recentFaults.reversed() where r.pid != f.pid && r.key == key {
            guard let rt = r.time, t >= rt, t - rt <= Self.racedWindowNs else { return false }
            return lastEvent[r.pid].map { $0 <= r.index } ?? true
        }
        return false
    }

    func example(_ s: String) {
        if faultCheck.examples.count < 50 { faultCheck.examples.append(s) }
    }

    /// A mapping execve made: the process starts from the real layout, so nothing in it is
    /// ever inferred.
    func replayExecMap(_ m: ExecMapping) {
        let p = process(of: m.pid)
        guard m.end <= p.mm.config.taskSize else { return }
        p.layoutKnown = true
        if m.path == "[stack]" && p.mm.mapsLines().isEmpty {
            // maps names the VMA holding mm->start_stack `[stack]`: a fresh address space
            // configured with it (nothing was mapped yet).
            var cfg = p.mm.config
            cfg.startStack = m.end - 8
            p.mm = AddressSpace(system: system, design: options.design, configuration: cfg)
        }
        p.touched.insert(m.start, m.end - m.start)
        if m.path == "[stack]" || m.isSpecial {
            var flags = AddressSpace.flags(forPerms: m.perms)
            if m.path == "[stack]" { flags.insert(.growsDown) }
            // A special mapping replaces nothing: execve mapped it into empty space.
            guard p.mm.mapsLines(in: m.start..<m.end).isEmpty else {
                summary.skippedByReason["exec_map over a mapping: \(m.path)", default: 0] += 1
                return
            }
            p.mm.mirror(start: m.start, end: m.end, flags: flags, anonymous: m.path == "[stack]",
                        specialName: m.isSpecial ? m.path : nil)
            note(m.pid, p, ScriptStep(.mirror(start: m.start, end: m.end, flags: flags, anonymous: m.path == "[stack]",
                                              special: m.isSpecial ? m.path : nil)))
            return
        }
        var prot: Prot = []
        let c = Array(m.perms)
        if c[0] == "r" { prot.insert(.read) }
        if c[1] == "w" { prot.insert(.write) }
        if c[2] == "x" { prot.insert(.exec) }
        var flags: MapFlags = [c[3] == "s" ? .shared : .private, .fixed]
        let file: MMFile? = m.isFile ? self.file(m.path) : nil
        if file == nil { flags.insert(.anonymous) }
        let call = MemoryCall.mmap(addr: m.start, length: m.end - m.start, prot: prot, flags: flags,
                                   fd: FileDescriptor(file == nil ? -1 : 3, path: file == nil ? nil : m.path),
                                   offset: file == nil ? 0 : m.offset)
        let r = run(call, m.pid, p, file: file)
        if !r.succeeded {
            summary.mismatches.append(ReplayMismatch(line: m.line, text: "--- \(m.body) ---", recorded: "mapped by execve",
                                                     model: Self.text(r)))
        }
    }
}
