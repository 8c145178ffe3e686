import FaultlineMM
import FaultlineSync
#if canImport(Glibc)
import Glibc
#endif

/// How a replay runs.
public struct ReplayOptions: Sendable {
    public var design: Design = .global
    public var tree: VMATreeKind = .maple
    /// The process whose maps `--maps` prints (default: the first one traced).
    public var pid: Int? = nil
    /// Frames (4 KiB) shared by every replayed process: MAP_POPULATE and MADV_POPULATE_* fault.
    public var frames = 65_536
    /// Infer a mapping a recorded success needs even inside memory the trace itself mapped,
    /// unmapped or saw fail (`--lenient`; counted). Off: such a call is a mismatch.
    public var inferIntoTouched = false
    /// `fault_around_bytes` (debugfs; 64 KiB by default): what a file read fault maps around it.
    public var faultAroundBytes = 65_536
    /// Frames set aside for a recorded trace's files in the page cache, at most (256 MiB holds
    /// every file the gallery's programs map); a trace that claims more leaves the rest uncached.
    public var cacheFrames = 1 << 16
    public init() {}
}

/// A call whose model result differs from the recorded one.
public struct ReplayMismatch: Sendable, CustomStringConvertible {
    public var line: Int
    public var text: String
    public var recorded: String
    public var model: String

    public var description: String { "line \(line): \(text)\n    recorded \(recorded), model \(model)" }
}

/// What a replay did.
public struct ReplaySummary: Sendable {
    public var replayed = 0
    public var mismatches: [ReplayMismatch] = []
    /// Calls not replayed, by reason (`other: wait4`, `unfinished`, …).
    public var skippedByReason: [String: Int] = [:]
    /// Mappings the kernel made inside execve (or before an attach) that a recorded call needed.
    public var inferred = 0
    public var inferredBytes: UInt64 = 0
    /// Inferences by reason: the call that needed the memory, and whether the trace had
    /// touched it (`… into memory the trace touched (lenient)`).
    public var inferredByReason: [String: Int] = [:]
    public var processes = 0
    public var threads = 0
    /// The final maps of the chosen process (at its exit, or at the end of the trace).
    public var maps: [MapsLine] = []
    public var mapsPid: Int? = nil
    /// Lines skipped under `--lenient`.
    public var malformed = 0
    /// The recorded faults checked against the model (`faultline record` traces).
    public var faults = FaultCheck()

    public var skipped: Int { skippedByReason.values.reduce(0, +) }

    public var summaryLine: String { "\(replayed) calls replayed, \(mismatches.count) mismatches, \(skipped) skipped" }
}

/// One process of the trace: an address space shared by its threads.
final class ReplayProcess {
    /// Replaced only while empty: when execve's stack says where `[stack]` is.
    var mm: AddressSpace
    var heapKnown = false
    var tasks = 0
    /// The operations each task ran on this address space, in order (for the timed mode).
    var script: [Int: [ScriptStep]] = [:]
    var taskOrder: [Int] = []
    var brkStart: UInt64? = nil
    /// What the trace has shown of this address space (see `TouchedMemory`).
    var touched = TouchedMemory()
    /// The trace showed the mappings execve made (`exec_map` lines): nothing is inferred.
    var layoutKnown = false
    /// Which step last changed each range, the waits each task already has (timed replay's
    /// cross-thread order), and the break as the script moves it.
    var owners = RangeOwners()
    var waited: [Int: [Int: Int]] = [:]
    var noteBrk: UInt64? = nil
    /// The last recorded faults on this address space: task, event index, what it made
    /// present (`raceKey`), time.
    var recentFaults: [(pid: Int, index: Int, key: UInt64, time: UInt64?)] = []
    init(mm: AddressSpace) { self.mm = mm }
}

/// Replays a parsed trace against the model, process by process, in trace order, and compares
/// every result with the recorded one.
public final class TraceReplayer {
    public let options: ReplayOptions
    let trace: ParsedTrace
    /// The frames and RCU domains every replayed process shares (the timed mode's too).
    public let system: MMSystem
    var tasks: [Int: ReplayProcess] = [:]
    /// Children of clone/fork calls, in trace order: the child pid's relation to its parent.
    var clones: [Int: [(parent: Int, sharesVM: Bool)]] = [:]
    var files: [String: MMFile] = [:]
    var fileExtents: [String: UInt64] = [:]
    var summary = ReplaySummary()
    let chosenPid: Int?
    /// munmaps run ahead of their completion line (see `runInFlightUnmaps`), by event index.
    var doneEarly: [Int: SyscallResult] = [:]
    /// The chosen process as it ended (or as the trace left it).
    var chosenProcess: ReplayProcess? = nil
    /// Recorded faults followed by a SIGSEGV or SIGBUS to their task (event index → signal).
    var signalAfterFault: [Int: String] = [:]
    var faultCheck = FaultCheck()
    /// File pages (by `major:minor inode`) that entered the host's page cache during the
    /// recording: not cached until their `page_cache_add`.
    var coldPages: [String: Set<UInt64>] = [:]
    /// Pages added before the replay made the file (cached from its start).
    var addedEarly: [String: Set<UInt64>] = [:]
    /// `major:minor inode` → the file, for `page_cache_add`.
    var filesByInode: [String: MMFile] = [:]
    /// Each task's latest event index so far (for the fault check's race test).
    var lastEvent: [Int: Int] = [:]
    /// The trace carries recorded faults: files start in the page cache, as the host's were.
    let hasFaults: Bool

    public init(trace: ParsedTrace, options: ReplayOptions = ReplayOptions()) {
        self.trace = trace
        self.options = options
        // A recorded fault stream starts with its files in the page cache: frames for them on
        // top of the replay's own.
        let faults = trace.events.contains { if case .fault = $0 { true } else { false } }
        let extents = Self.mappedExtents(trace)
        system = MMSystem(frames: options.frames + (faults ? min(Self.cachePages(trace, extents), options.cacheFrames) : 0))
        hasFaults = faults
        fileExtents = extents
        chosenPid = options.pid ?? trace.firstPid
        summary.mapsPid = chosenPid
        summary.malformed = trace.malformed.count
        prepass()
    }

    /// Clone children and file extents, known before the replay reaches them: a child's first
    /// line can come before its parent's clone returns.
    func prepass() {
        var lastFault: [Int: Int] = [:]
        for (i, e) in trace.events.enumerated() {
            switch e {
            case .fault(let f): lastFault[f.pid] = i
            case .signal(let pid, _, let name):
                if let i = lastFault.removeValue(forKey: pid), name == "SIGSEGV" || name == "SIGBUS" { signalAfterFault[i] = name }
            case .pageCacheAdd(let a):
                coldPages["\(a.device) \(a.inode)", default: []].formUnion(a.index..<(a.index &+ a.pages))
            default: lastFault[e.pid] = nil
            }
        }
        for case .call(let c) in trace.events {
            guard let m = try? MemoryCall.decode(c) else { continue }
            switch m {
            case .clone(let flags):
                if let child = c.result.childPid {
                    clones[child, default: []].append((c.pid, flags.sharesVM))
                }
            default: break
            }
        }
    }

    /// How far into each file the trace maps (or truncates) it.
    static func mappedExtents(_ trace: ParsedTrace) -> [String: UInt64] {
        var extents: [String: UInt64] = [:]
        for e in trace.events {
            switch e {
            case .execMap(let m) where m.isFile:
                extents[m.path] = max(extents[m.path] ?? 0, m.offset &+ (m.end - m.start))
            case .call(let c):
                switch try? MemoryCall.decode(c) {
                case let .mmap(_, len, _, flags, fd, off)? where !flags.contains(.anonymous):
                    if let path = fd.path { extents[path] = max(extents[path] ?? 0, off &+ len) }
                case let .ftruncate(fd, len)? where c.result.succeeded:
                    if let path = fd.path { extents[path] = max(extents[path] ?? 0, len) }
                default: break
                }
            default: break
            }
        }
        return extents
    }

    /// Frames to set aside for a recorded trace's files in the page cache: the mapped part of
    /// each file the recording described (the caller caps it at `ReplayOptions.cacheFrames`: a
    /// trace that claims more leaves the rest uncached, counted, rather than exhausting memory).
    static func cachePages(_ trace: ParsedTrace, _ extents: [String: UInt64]) -> Int {
        var n: UInt64 = 0
        for (path, f) in trace.files where f.regular {
            guard let e = extents[path] else { continue }
            n &+= Linux.pageAlign(min(f.size, e, maxFileBytes)) >> Linux.pageShift
        }
        return Int(min(n, UInt64(Int.max)))
    }

    func newProcess() -> ReplayProcess {
        var cfg = AddressSpace.Configuration()
        cfg.tree = options.tree
        cfg.faultAroundPages = max(1, options.faultAroundBytes / Int(Linux.pageSize))
        summary.processes += 1
        return ReplayProcess(mm: AddressSpace(system: system, design: options.design, configuration: cfg))
    }

    /// The task's process, creating it from its clone parent (or fresh) on its first event.
    func process(of pid: Int) -> ReplayProcess {
        if let p = tasks[pid] { return p }
        var p: ReplayProcess
        if var q = clones[pid], !q.isEmpty, let parent = tasks[q[0].parent] {
            let rel = q.removeFirst()
            clones[pid] = q
            if rel.sharesVM {
                p = parent
            } else {
                p = ReplayProcess(mm: parent.mm.fork())
                p.heapKnown = parent.heapKnown
                p.touched = parent.touched
                summary.processes += 1
            }
        } else {
            p = newProcess()
        }
        p.tasks += 1
        summary.threads += 1
        tasks[pid] = p
        return p
    }

    func endTask(_ pid: Int) {
        guard let p = tasks.removeValue(forKey: pid) else { return }
        p.tasks -= 1
        if pid == chosenPid {
            summary.maps = p.mm.mapsLines()
            chosenProcess = p
        }
    }

    /// Records what the model ran, for the timed mode.
    func note(_ pid: Int, _ p: ReplayProcess, _ call: MemoryCall, file: MMFile? = nil) {
        note(pid, p, ScriptStep(call: call, file: file))
    }

    func note(_ pid: Int, _ p: ReplayProcess, _ step: ScriptStep) {
        if p.script[pid] == nil { p.taskOrder.append(pid) }
        var s = step
        let count = (p.script[pid]?.count ?? 0) + 1
        // The ranges the step needs and changes: it runs after whichever other task changed
        // them last, and now owns what it changes.
        let (reads, changes) = Self.ranges(of: step, brk: &p.noteBrk)
        let me = RangeOwners.Owner(task: pid, count: count)
        var waits: [RangeOwners.Owner] = []
        for r in reads { waits += p.owners.read(r, by: me) }
        for r in changes { waits += p.owners.change(r, by: me) }
        for o in waits where o.task != pid && o.count > (p.waited[pid]?[o.task] ?? 0) {
            s.after.append((o.task, o.count))
            p.waited[pid, default: [:]][o.task] = o.count
        }
        p.script[pid, default: []].append(s)
    }

    /// What a step reads of the address space and what it changes (page-aligned; a change
    /// reads too), for the timed replay's cross-thread order. `brk` follows the break as the script moves it.
    static func ranges(of step: ScriptStep, brk: inout UInt64?) -> (reads: [Range<UInt64>], changes: [Range<UInt64>]) {
        func span(_ a: UInt64, _ l: UInt64) -> Range<UInt64>? {
            let lo = Linux.pageAlignDown(a), end = a &+ l
            guard l > 0, end > a else { return nil }
            let hi = Linux.pageAlign(end)
            return hi > lo ? lo..<hi : nil
        }
        switch step.operation {
        case .access(let a, _):
            return ([Linux.pageAlignDown(a)..<(Linux.pageAlignDown(a) &+ Linux.pageSize)], [])
        case let .mirror(start, end, _, _, _):
            return ([], [start..<end])
        case .spawn:
            return ([], [])
        case .call(let c):
            switch c {
            case let .mmap(a, l, _, flags, _, _):
                // Only a placed mapping has a known range (a failed one ran with the hint).
                guard flags.contains(.fixed) || flags.contains(.fixedNoReplace), let r = span(a, l) else { return ([], []) }
                return ([], [r])
            case let .munmap(a, l), let .mprotect(a, l, _), let .mseal(a, l, _),
                 let .mlock(a, l), let .mlock2(a, l, _), let .munlock(a, l):
                guard let r = span(a, l) else { return ([], []) }
                return ([], [r])
            case let .madvise(a, l, _):
                guard let r = span(a, l) else { return ([], []) }
                return ([r], [])
            case let .mremap(a, oldLen, newLen, _, newAddr):
                let old = span(a, max(oldLen, Linux.pageSize)), new = span(newAddr == 0 ? a : newAddr, newLen)
                return ([], [old, new].compactMap { $0 })
            case .brk(let a):
                defer { if a != 0 { brk = a } }
                guard a != 0, let b = brk, a != b else { return ([], []) }
                let lo = Linux.pageAlignDown(min(a, b)), hi = Linux.pageAlign(max(a, b))
                return ([], hi > lo ? [lo..<hi] : [])
            default:
                return ([], [])
            }
        }
    }

    /// Runs `call` on `p`'s address space and notes it for the timed mode.
    func run(_ call: MemoryCall, _ pid: Int, _ p: ReplayProcess, file: MMFile? = nil) -> SyscallResult {
        note(pid, p, call, file: file)
        return call.run(on: p.mm, file: file)
    }

    func file(_ path: String) -> MMFile {
        if let f = files[path] { return f }
        // The page-cache table is sized by the file: a trace that maps far into a file (or a
        // malformed one) gets at most `maxFileBytes` of it; faults beyond read as past EOF.
        let extent = min(fileExtents[path] ?? Linux.pageSize, Self.maxFileBytes)
        let isShm = path.hasPrefix("/memfd:") || path.hasPrefix("/dev/shm/") || path.hasPrefix("/SYSV")
        // What the file was: as the recording described it, else as it is on this machine.
        var described = trace.files[path]
        if described == nil {
            var st = stat()
            if stat(path, &st) == 0 {
                let (major, minor) = Linux.deviceNumbers(UInt64(st.st_dev))
                described = RecordedFile(device: "\(major):\(minor)", inode: UInt64(st.st_ino), size: UInt64(st.st_size),
                                         path: path, regular: (st.st_mode & S_IFMT) == S_IFREG)
            }
        }
        let f: MMFile
        if let d = described {
            // A regular file has its size; a device (/dev/zero) reads as zeros throughout.
            let size = d.regular ? min(d.size, Self.maxFileBytes) : extent
            f = MMFile(path: path, size: size, capacity: max(size, extent), frames: system.frames,
                       isShmem: isShm, device: (d.major, d.minor), inode: d.inode,
                       placement: d.regular && !isShm ? .thpAligned : .plain)
            let key = "\(d.device) \(d.inode)"
            filesByInode[key] = f
            // Files the recording described have frames set aside; others are warmed only while
            // that leaves the replay most of its own. A file left cold shows as extra faults.
            if hasFaults && !isShm && d.regular && (trace.files[path] != nil || f.sizeInPages <= UInt64(options.frames / 8)) {
                let cold = (coldPages[key] ?? []).subtracting(addedEarly[key] ?? [])
                var ok = true
                // The part the trace maps (the rest no fault can reach).
                let mapped = min(f.sizeInPages, Linux.pageAlign(extent) >> Linux.pageShift)
                for i in 0..<mapped where !cold.contains(i) && ok { ok = f.readAhead(i) }
                if ok { faultCheck.warmedFiles += 1 } else { faultCheck.unwarmedFiles += 1 }
                if !cold.isEmpty { faultCheck.coldFiles += 1 }
            } else if hasFaults && !isShm && d.regular {
                faultCheck.unwarmedFiles += 1
            }
        } else {
            f = MMFile(path: path, size: extent, frames: system.frames, isShmem: isShm, device: isShm ? (0, 1) : (0, 0))
        }
        files[path] = f
        return f
    }

    static let maxFileBytes: UInt64 = 4 << 30

    func skip(_ reason: String) { summary.skippedByReason[reason, default: 0] += 1 }

    /// Runs the whole trace.
    public func run() -> ReplaySummary {
        for (i, e) in trace.events.enumerated() {
            defer { lastEvent[e.pid] = i }
            switch e {
            case .call(let c): replay(c, at: i)
            case .exited(let pid, _, _), .killed(let pid, _, _): endTask(pid)
            case .signal: break
            case .fault(let f): replayFault(f, at: i)
            case .execMap(let m): replayExecMap(m)
            case .pageCacheAdd(let a):
                let key = "\(a.device) \(a.inode)"
                if let f = filesByInode[key] {
                    // As the host added it: one folio of that size (fault-around and a fault's
                    // finish map a large folio whole).
                    if a.index < Linux.pageAlign(fileExtents[f.path] ?? 0) >> Linux.pageShift {
                        f.cacheFolio(a.index, pages: a.pages)
                    }
                } else {
                    addedEarly[key, default: []].formUnion(a.index..<(a.index &+ a.pages))
                }
            case .unfinished(_, _, let name):
                // A trace cut short, or a thread killed mid-call; exit and execve never return.
                if name != "exit" && name != "exit_group" && name != "execve" { skip("unfinished") }
            }
        }
        if let pid = chosenPid, let p = tasks[pid] {
            summary.maps = p.mm.mapsLines()
            chosenProcess = p
        }
        summary.faults = faultCheck
        return summary
    }

    func mismatch(_ c: TraceCall, _ model: String) {
        summary.mismatches.append(ReplayMismatch(line: c.line, text: c.text, recorded: c.result.description, model: model))
    }

    /// Runs `call` as recorded; only when the model disagrees with a recorded success does it
    /// infer the memory `needs` lacks (where the trace cannot have seen it) and run it again.
    /// A call that failed on the model is idempotent in what it changed before failing
    /// (mprotect and madvise up to a hole, mremap's destination), so the second run ends where
    /// running after the inference would have.
    func runInferring(_ call: MemoryCall, _ c: TraceCall, _ p: ReplayProcess, needs: (UInt64, UInt64)) -> SyscallResult {
        var r = call.run(on: p.mm)
        if !Self.agrees(r, c.result), c.result.succeeded {
            let (made, refused) = inferHoles(c.pid, p, needs.0, needs.1, reason: call.name)
            if made > 0 { r = call.run(on: p.mm) }
            note(c.pid, p, call)
            if !Self.agrees(r, c.result) {
                let why = refused.isEmpty ? "" : "; not inferred: " + refused.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16))" }
                    .joined(separator: ", ") + ", which the trace itself mapped, unmapped or saw fail (--lenient infers it, counted)"
                mismatch(c, Self.text(r) + why)
            }
            return r
        }
        note(c.pid, p, call)
        if !Self.agrees(r, c.result) { mismatch(c, Self.text(r)) }
        return r
    }

    /// The model's result as a recorded one prints (`-1 ENOMEM`, `0x7f…`).
    static func text(_ r: SyscallResult) -> String {
        if let e = r.errnoName { return "-1 \(e)" }
        return TraceResult(value: r.value).description
    }

    /// Whether the model's result is the recorded one.
    static func agrees(_ r: SyscallResult, _ rec: TraceResult) -> Bool {
        if let e = r.errnoName { return rec.errno == e }
        return rec.errno == nil && rec.value == r.value
    }

    /// Errors that depend on how a file was opened or where it lives — state strace's memory
    /// and process classes do not show.
    static let fileStateErrnos: Set<String> = ["EACCES", "EPERM", "ENODEV", "ETXTBSY", "EBADF", "EOVERFLOW", "EAGAIN"]

    /// A thread's munmap that was in flight when another thread's mmap got the same range
    /// back: strace prints it finishing later, but the kernel had already freed the range.
    /// Runs such munmaps now; returns whether any ran.
    func runInFlightUnmaps(at index: Int, _ c: TraceCall, _ p: ReplayProcess, _ range: Range<UInt64>) -> Bool {
        var ran = false
        let events = trace.events
        var j = index + 1
        while j < events.count && j < index + 20_000 {
            defer { j += 1 }
            guard case .call(let d) = events[j], d.pid != c.pid, d.startLine < c.line, d.name == "munmap",
                  doneEarly[j] == nil, tasks[d.pid] === p,
                  case .munmap(let a, let l)? = (try? MemoryCall.decode(d)) ?? nil, a < range.upperBound, a &+ l > range.lowerBound else { continue }
            doneEarly[j] = run(.munmap(addr: a, length: l), d.pid, p)
            if d.result.succeeded { p.touched.insert(a, l) }
            ran = true
        }
        return ran
    }

    /// PROCMAP_QUERY by name (strace 6.11+) or by number (older: `_IOC(...)` or hex).
    static func isProcmapQuery(_ request: String) -> Bool {
        request == "PROCMAP_QUERY" || request == "_IOC(_IOC_READ|_IOC_WRITE, 0x66, 0x11, 0x68)"
            || request.lowercased() == "0xc0686611"
    }

    func replay(_ c: TraceCall, at index: Int) {
        let decoded: MemoryCall?
        do { decoded = try MemoryCall.decode(c) } catch {
            skip("undecodable")
            return
        }
        guard let call = decoded else {
            if c.name == "ioctl" && c.args.count > 1 && Self.isProcmapQuery(c.args[1]) {
                // Its answer is written to the struct, which strace 6.1 does not print.
                skip("PROCMAP_QUERY (answer not in the trace)")
            } else {
                skip("other: " + c.name)
            }
            return
        }
        // `= ?`: normal for exit (it does not return); any other call's effect is unknown.
        if c.result.value == nil && !call.endsTask {
            skip("no result")
            return
        }
        let p = process(of: c.pid)
        let mm = p.mm
        let rec = c.result
        switch call {
        case let .mmap(addr, len, prot, flags, fd, off):
            var f = flags
            let anonymous = f.contains(.anonymous)
            var file: MMFile? = anonymous || fd.number < 0 ? nil : self.file(fd.path ?? "fd \(fd.number) of pid \(c.pid)")
            // mmap_zero(): a shared mapping of /dev/zero is anonymous shared memory.
            if fd.path == "/dev/zero", f.type == MapFlags.shared.rawValue, off == 0 {
                file = nil
                f.insert(.anonymous)
            }
            if let e = rec.errno, file != nil, Self.fileStateErrnos.contains(e) { skip("file state (\(e))"); return }
            summary.replayed += 1
            if rec.succeeded, let want = rec.value {
                // The kernel chose (or accepted) this address: place the mapping there.
                var a = addr
                if !f.contains(.fixed) { f.insert(.fixedNoReplace); a = want }
                let placed = MemoryCall.mmap(addr: a, length: len, prot: prot, flags: f, fd: fd, offset: off)
                var r = placed.run(on: mm, file: file)
                if r.errno == .EEXIST, !flags.contains(.fixedNoReplace),
                   runInFlightUnmaps(at: index, c, p, want..<(want &+ Linux.pageAlign(len))) {
                    r = placed.run(on: mm, file: file)
                }
                note(c.pid, p, placed, file: file)
                p.touched.insert(want, len)
                if !Self.agrees(r, rec) {
                    mismatch(c, Self.text(r))
                    // Follow the real layout from here on.
                    if r.succeeded { _ = mm.munmap(r.value, len) }
                    var g = f
                    g.remove(.fixedNoReplace)
                    g.insert(.fixed)
                    _ = mm.mmap(want, len, prot, g, file: file, offset: off)
                }
            } else {
                let r = run(.mmap(addr: addr, length: len, prot: prot, flags: f, fd: fd, offset: off), c.pid, p, file: file)
                if !Self.agrees(r, rec) {
                    mismatch(c, Self.text(r))
                    if r.succeeded { _ = mm.munmap(r.value, len) }
                }
            }
        case .munmap:
            summary.replayed += 1
            let r = doneEarly.removeValue(forKey: index) ?? run(call, c.pid, p)
            if case let .munmap(addr, len) = call, rec.succeeded { p.touched.insert(addr, len) }
            if !Self.agrees(r, rec) { mismatch(c, Self.text(r)) }
        case let .mprotect(addr, len, _):
            if let e = rec.errno, Self.fileStateErrnos.contains(e) { skip("file state (\(e))"); return }
            summary.replayed += 1
            _ = runInferring(call, c, p, needs: (addr, len))
            // ENOMEM: the kernel found part of the range unmapped.
            if rec.errno == "ENOMEM" { p.touched.insert(addr, len) }
        case let .madvise(addr, len, _):
            if let e = rec.errno, e == "EPERM" || e == "EAGAIN" { skip("file state (\(e))"); return }
            summary.replayed += 1
            _ = runInferring(call, c, p, needs: (addr, len))
            if rec.errno == "ENOMEM" { p.touched.insert(addr, len) }
        case let .mremap(addr, oldLen, newLen, flags, newAddr):
            summary.replayed += 1
            var f = flags
            var target = newAddr
            if rec.succeeded, let want = rec.value, f.contains(.mayMove) && !f.contains(.fixed) && want != addr {
                // The kernel moved it: move it to the same place.
                f.insert(.fixed)
                target = want
            }
            let placed = MemoryCall.mremap(addr: addr, oldLength: oldLen, newLength: newLen, flags: f, newAddr: target)
            _ = runInferring(placed, c, p, needs: (addr, max(oldLen, Linux.pageSize)))
            if rec.succeeded, let want = rec.value {
                p.touched.insert(addr, max(oldLen, newLen))
                p.touched.insert(want, newLen)
            } else if rec.errno == "EFAULT" {
                p.touched.insert(addr, max(oldLen, Linux.pageSize))
            }
        case .brk(let addr):
            summary.replayed += 1
            if addr == 0, !p.heapKnown, let v = rec.value {
                // load_elf_binary() placed the heap here (randomised).
                p.heapKnown = mm.setBrkStart(v)
                if p.heapKnown { p.brkStart = v; p.noteBrk = v }
            }
            p.heapKnown = true
            let before = mm.currentBrk
            let r = run(call, c.pid, p)
            if rec.value != r.value { mismatch(c, TraceResult(value: r.value).description) }
            if let v = rec.value, v != before { p.touched.insert(min(v, before), max(v, before) - min(v, before)) }
        case let .mseal(addr, len, _):
            summary.replayed += 1
            _ = runInferring(call, c, p, needs: (addr, len))
            if rec.errno == "ENOMEM" { p.touched.insert(addr, len) }
        case let .mlock(addr, len), let .mlock2(addr, len, _), let .munlock(addr, len):
            // The traced process's RLIMIT_MEMLOCK and capabilities are not in the trace.
            if let e = rec.errno, e == "EPERM" || e == "EAGAIN" { skip("lock limits (\(e))"); return }
            summary.replayed += 1
            let start = addr & Linux.pageMask
            let pages = Linux.pageAlign(len &+ Linux.offsetInPage(addr))
            _ = runInferring(call, c, p, needs: (start, pages))
            if rec.errno == "ENOMEM" { p.touched.insert(start, pages) }
        case .mlockall, .munlockall:
            if let e = rec.errno, e == "EPERM" || e == "ENOMEM" { skip("lock limits (\(e))"); return }
            summary.replayed += 1
            let r = run(call, c.pid, p)
            if !Self.agrees(r, rec) { mismatch(c, Self.text(r)) }
        case let .ftruncate(fd, len):
            // EINVAL for a non-negative length: not open for writing, or not a regular file.
            if let e = rec.errno, Self.fileStateErrnos.contains(e) || (e == "EINVAL" && Int64(bitPattern: len) >= 0) {
                skip("file state (\(e))")
                return
            }
            summary.replayed += 1
            let r = run(call, c.pid, p, file: file(fd.path ?? "fd \(fd.number) of pid \(c.pid)"))
            if !Self.agrees(r, rec) { mismatch(c, Self.text(r)) }
        case .clone(let flags):
            summary.replayed += 1
            if let child = rec.childPid {
                _ = process(of: child)
                // The timed replay starts a thread only once its creator got here.
                if flags.sharesVM { note(c.pid, p, ScriptStep(.spawn(task: child))) }
            }
        case .execve:
            guard rec.succeeded else { skip("failed execve"); return }
            summary.replayed += 1
            // A fresh address space; the old one stays with any task still sharing it.
            if let old = tasks[c.pid] { old.tasks -= 1 }
            let n = newProcess()
            n.tasks = 1
            tasks[c.pid] = n
        case .exit(let group):
            summary.replayed += 1
            if group {
                let victims = tasks.filter { $0.value === p }.map(\.key)
                for v in victims { endTask(v) }
            } else {
                endTask(c.pid)
            }
        }
    }

    /// Maps over the holes of [addr, addr+len) that a recorded success proves the kernel had
    /// mapped — made inside execve, or before the trace began — where the trace has not shown
    /// the memory itself (`TouchedMemory`); there only with `inferIntoTouched`. Private,
    /// read-write, each its own file so that it merges with nothing. Returns how many
    /// mappings it made and the ranges it refused.
    func inferHoles(_ pid: Int, _ p: ReplayProcess, _ addr: UInt64, _ len: UInt64, reason: String)
        -> (made: Int, refused: [Range<UInt64>]) {
        guard Linux.offsetInPage(addr) == 0, len > 0 else { return (0, []) }
        let end = Linux.pageAlign(addr &+ len)
        guard end > addr else { return (0, []) }
        var cursor = addr
        var holes: [Range<UInt64>] = []
        for line in p.mm.mapsLines(in: addr..<end) {
            if line.start > cursor { holes.append(cursor..<min(line.start, end)) }
            cursor = max(cursor, line.end)
        }
        if cursor < end { holes.append(cursor..<end) }
        var made = 0
        var refused: [Range<UInt64>] = []
        for h in holes {
            // With execve's layout known, every hole is one the trace has shown.
            let (untouched, touched) = p.layoutKnown ? ([], [h]) : p.touched.split(h)
            var parts = untouched.map { ($0, "\(reason): memory mapped before the trace began") }
            if options.inferIntoTouched {
                parts += touched.map { ($0, "\(reason): into memory the trace touched (lenient)") }
            } else {
                refused += touched
            }
            for (r, why) in parts.sorted(by: { $0.0.lowerBound < $1.0.lowerBound }) {
                // Each its own file (page-cache table sized to it); a hole too large for that is
                // not what execve maps — left alone, so the model's own result stands.
                guard r.upperBound - r.lowerBound <= Self.maxFileBytes else { continue }
                let f = MMFile(path: "[inferred]", size: r.upperBound - r.lowerBound, frames: system.frames, device: (0, 0), inode: 0)
                let call = MemoryCall.mmap(addr: r.lowerBound, length: r.upperBound - r.lowerBound, prot: [.read, .write],
                                           flags: [.private, .fixedNoReplace], fd: FileDescriptor(-1, path: "[inferred]"), offset: 0)
                if call.run(on: p.mm, file: f).succeeded {
                    made += 1
                    summary.inferred += 1
                    summary.inferredBytes += r.upperBound - r.lowerBound
                    summary.inferredByReason[why, default: 0] += 1
                    note(pid, p, call, file: f)
                }
            }
        }
        return (made, refused)
    }
}

extension TraceReplayer {
    /// Every address space still alive (processes not yet exited, and the chosen one), checked
    /// at rest with the frames they map (`MMSystem.checkQuiescent`): empty when consistent.
    public func checkInvariants() -> [String] {
        var seen: Set<ObjectIdentifier> = []
        var spaces: [AddressSpace] = []
        for p in Array(tasks.values) + (chosenProcess.map { [$0] } ?? []) where seen.insert(ObjectIdentifier(p)).inserted {
            spaces.append(p.mm)
        }
        return system.checkQuiescent(spaces)
    }
}
