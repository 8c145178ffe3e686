import FaultlineMM
import FaultlineSync
#if canImport(Glibc)
import Glibc
#endif

/// The host's layout as the helper reported it, mirrored into each model.
struct HostLayout: Equatable {
    var startBrk: UInt64 = 0
    var brk: UInt64 = 0
    var windowStart: UInt64 = 0
    var windowSize: UInt64 = 0
    var plugs: [Range<UInt64>] = []
    /// Starts of VMAs that have anonymous pages (and so an anon_vma).
    var anon: Set<UInt64> = []
    var lines: [MapsLine] = []

    var window: Range<UInt64> { windowStart..<(windowStart + windowSize) }
    /// The heap and the room the helper left after it.
    var heapArea: Range<UInt64> { startBrk..<(Linux.pageAlign(brk) + (64 << 20)) }
}

/// Which process the sequence moves to: the one that forked the running one, or the last
/// one the running one forked.
public enum ProcessSwitch: String, Hashable, Sendable {
    case parent, child
}

/// One step of a sequence: a system call, a load or store, or a move to another process of
/// the sequence (after fork both stay alive; each runs the steps while it holds the sequence).
public enum DiffStep: Hashable, Sendable, CustomStringConvertible {
    case call(MemoryCall)
    case access(MemoryAccess)
    case switchTo(ProcessSwitch)
    /// A PROCMAP_QUERY ioctl on `/proc/self/maps`.
    case query(ProcmapQuery)

    var hostCommand: String {
        switch self {
        case .call(let c): c.hostCommand
        case .access(let a): a.hostCommand
        case .switchTo(let p): p.rawValue
        case .query(let q): q.hostCommand
        }
    }

    public var description: String {
        switch self {
        case .call(let c): c.strace()
        case .access(let a): a.description
        case .switchTo(let p): "[the sequence moves to the \(p.rawValue)]"
        case .query(let q): q.description
        }
    }

    var isFork: Bool {
        if case .call(let c) = self { return c.isFork }
        return false
    }
}

/// How a step ended: a call's result, or an access's value or signal.
public enum StepOutcome: Hashable, Sendable {
    case call(SyscallResult)
    case access(AccessOutcome)
    case query(ProcmapAnswer)

    /// The coverage key: `ok`, an errno's name, or the signal.
    var coverageKey: String {
        switch self {
        case .call(let r): r.errnoName ?? "ok"
        case .access(.signal(let e)): AccessOutcome.signal(e).description
        case .access: "ok"
        case .query(.failed(let e)): e.description
        case .query: "ok"
        }
    }
}

/// Where a sequence went different ways on the host and on the model.
public struct Divergence: CustomStringConvertible {
    public var index: Int
    public var steps: [DiffStep]
    public var hostOutcomes: [StepOutcome]
    public var modelOutcome: StepOutcome
    var hostState: HostState
    var modelState: HostState

    func text(_ s: DiffStep, _ o: StepOutcome) -> String {
        switch (s, o) {
        case let (.call(c), .call(r)):
            return c.isFork ? c.strace(result: r) + " (the sequence continues in the child)" : c.strace(result: r)
        case let (.access(a), .access(r)):
            return a.text(outcome: r)
        case let (.switchTo(p), .call(r)):
            return "[the sequence moves to the \(p.rawValue)" + (r.errnoName.map { ": none, \($0)" } ?? "") + "]"
        case let (.query(q), .query(r)):
            return q.text(outcome: r)
        default:
            return s.description + " = ?"
        }
    }

    /// What differed: the outcome, the maps, pages' presence, or a VMA's Rss/Anonymous/LazyFree.
    public var differences: [String] {
        var d: [String] = []
        if hostOutcomes[index] != modelOutcome { d.append("outcome") }
        if hostState.maps.map(\.comparable) != modelState.maps.map(\.comparable) { d.append("maps") }
        if hostState.pages != modelState.pages { d.append("pages") }
        if hostState.usage != modelState.usage { d.append("smaps") }
        return d
    }

    public var description: String {
        var s = "  sequence (strace syntax, host results):\n"
        for (i, c) in steps.prefix(index + 1).enumerated() {
            let mark = i == index ? "→ " : "  "
            s += "    \(mark)" + text(c, hostOutcomes[i]) + "\n"
        }
        s += "  model: " + text(steps[index], modelOutcome) + "\n"
        s += "  differs in: " + differences.joined(separator: ", ") + "\n"
        let h = Set(hostState.maps.map(\.comparable))
        let m = Set(modelState.maps.map(\.comparable))
        if h != m {
            s += "  maps, host:\n" + hostState.maps.map { "    " + $0.comparable + "\n" }.joined()
            s += "  maps, model:\n" + modelState.maps.map { "    " + $0.comparable + "\n" }.joined()
        }
        if hostState.pages != modelState.pages {
            s += "  pages (. absent, a anonymous or zero page, f file or shmem; capital: mapped once):\n"
            let starts = Set(hostState.pages.map(\.start) + modelState.pages.map(\.start)).sorted()
            for a in starts {
                let hp = hostState.pages.first { $0.start == a }?.picture ?? "-"
                let mp = modelState.pages.first { $0.start == a }?.picture ?? "-"
                if hp == mp { continue }
                s += "    0x\(String(a, radix: 16)) host:  \(hp)\n"
                s += "    0x\(String(a, radix: 16)) model: \(mp)\n"
            }
        }
        if hostState.usage != modelState.usage {
            func row(_ u: [VMAUsage]) -> String {
                u.map { "0x\(String($0.start, radix: 16)) Rss \($0.rssKB) kB Anonymous \($0.anonymousKB) kB LazyFree \($0.lazyFreeKB) kB Locked \($0.lockedKB) kB Swap \($0.swapKB) kB AnonHugePages \($0.anonHugeKB) kB" }.joined(separator: "; ")
            }
            s += "  smaps, host:  " + row(hostState.usage) + "\n"
            s += "  smaps, model: " + row(modelState.usage) + "\n"
        }
        return s
    }
}

/// One run of a sequence, as `DiffRunner.judge` weighs it.
public struct DiffAttempt<D> {
    public var divergence: D?
    /// The host's khugepaged collapsed memory during the run (its global counter moved).
    public var khugepagedMoved: Bool
    /// On a rerun: the model answered the first run's diverging step exactly as then.
    public var modelRepeated: Bool

    public init(divergence: D?, khugepagedMoved: Bool, modelRepeated: Bool) {
        self.divergence = divergence
        self.khugepagedMoved = khugepagedMoved
        self.modelRepeated = modelRepeated
    }
}

/// The differential tester: random sequences of calls, loads and stores on the host kernel
/// (through `faultline-host`) and on the model; every result, errno, value and signal, and
/// after every step the maps lines, each page's pagemap entry and each VMA's smaps Rss,
/// Anonymous and LazyFree, must agree.
public final class DiffRunner {
    public let helperPath: String
    let directory: String
    let fileSpecs: [(String, UInt64)]
    /// The helper's files' device readahead window, in pages.
    let readaheadPages: Int
    var layout = HostLayout()
    /// What the host answered, per call name and outcome (`ok` or the errno), over every
    /// sequence run: what the 0 disagreements covered.
    public private(set) var coverage: [String: [String: Int]] = [:]

    /// - Parameter helperPath: the `faultline-host` executable.
    /// The design the model runs under, and how it reads maps (results must not depend on either).
    public var design: Design = .global
    public var mapsReader: MapsReader = .locked
    public var tree: VMATreeKind = .maple

    public init(helperPath: String) throws {
        self.helperPath = helperPath
        var template = Array("/tmp/faultline-difftest-XXXXXX".utf8CString)
        guard let d = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw HostError(description: "cannot create a temporary directory")
        }
        directory = String(cString: d)
        // Sizes with a partial last page, so that EOF and SIGBUS are exercised.
        fileSpecs = [(directory + "/f0", 5 * 4096 + 100), (directory + "/f1", 64 * 4096), (directory + "/f2", 3 * 4096 + 1)]
        readaheadPages = Linux.hostReadaheadPages(for: directory)
        layout = try probeLayout()
    }

    deinit {
        for (p, _) in fileSpecs { unlink(p) }
        rmdir(directory)
    }

    func readLayout(_ h: HostHelper) throws -> HostLayout {
        var l = HostLayout()
        while let line = h.readLine(), line != "end" {
            let parts = line.split(separator: " ")
            switch parts.first {
            case "start_brk": l.startBrk = UInt64(parts[1])!
            case "brk": l.brk = UInt64(parts[1])!
            case "window": l.windowStart = UInt64(parts[1])!; l.windowSize = UInt64(parts[2])!
            case "plug": l.plugs.append(UInt64(parts[1])!..<UInt64(parts[2])!)
            case "layout": if let m = MapsLine(parsing: line.dropFirst(7)) { l.lines.append(m) }
            case "anon": l.anon.insert(UInt64(parts[1])!)
            case "error": throw HostError(description: "helper: " + line)
            default: break
            }
        }
        guard l.windowSize > 0 else { throw HostError(description: "helper reported no layout") }
        return l
    }

    func probeLayout() throws -> HostLayout {
        let h = try HostHelper(path: helperPath, files: fileSpecs)
        return try readLayout(h)
    }

    /// The contents `faultline-host` gives file `i` (`chunk[j] = (off + j) * 7 + i`).
    static func fileContents(index i: Int, size: UInt64) -> [UInt8] {
        (0..<Int(size)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }
    }

    /// A model mirroring the host layout, and its files by descriptor (3, 4, …, as the helper
    /// holds them), with the helper's contents, wholly in the page cache as the helper's
    /// writes left them on the host.
    func makeModel() -> (AddressSpace, [Int32: MMFile]) {
        let system = MMSystem(frames: 32_768)
        var cfg = AddressSpace.Configuration()
        cfg.startBrk = layout.startBrk
        cfg.mmapBase = cfg.taskSize
        cfg.tree = tree
        // Huge pages where the host would fault them.
        cfg.transparentHugepage = Linux.hostTHPMode
        // The helper's stack is named as the host names it (PROCMAP_QUERY walks out to it).
        cfg.startStack = layout.lines.first { $0.path == "[stack]" }?.start
        let mm = AddressSpace(system: system, design: design, configuration: cfg)
        // Outside the window the helper's own mappings are mirrored with what PROCMAP_QUERY
        // reports of them: permissions, file offset and name, file-backed or not.
        var standIns: [String: MMFile] = [:]
        for line in layout.lines where line.end <= cfg.taskSize && line.path != "[heap]" {
            let isPlug = layout.plugs.contains { $0.overlaps(line.start..<line.end) }
            let flags: VMFlags = isPlug ? [.mayRead, .mayWrite, .mayExec, .noReserve] : AddressSpace.flags(forPerms: line.perms)
            var file: MMFile?
            var special: String?
            if !isPlug && line.inode != 0 && line.path.hasPrefix("/") {
                let size = line.offset + (line.end - line.start)
                file = standIns[line.path] ?? system.makeFile(path: line.path, size: size)
                standIns[line.path] = file
            } else if !isPlug && line.path.hasPrefix("[") && line.path != "[stack]" {
                special = line.path
            }
            mm.mirror(start: line.start, end: line.end, flags: flags, file: file,
                      pgoff: file == nil ? nil : line.offset >> Linux.pageShift,
                      anonymous: layout.anon.contains(line.start), specialName: special)
        }
        if layout.brk > layout.startBrk {
            _ = mm.brk(layout.brk)
            if let heap = layout.lines.first(where: { $0.path == "[heap]" }), layout.anon.contains(heap.start) {
                mm.giveAnonVMA(at: heap.start)
            }
        }
        var files: [Int32: MMFile] = [:]
        for (i, f) in fileSpecs.enumerated() {
            let file = system.makeFile(path: f.0, size: f.1, contents: Self.fileContents(index: i, size: f.1),
                                       capacity: CallGenerator.fileCapacityPages * Linux.pageSize)
            // The helper wrote them moments ago: cached and dirty (writeback runs after 30 s);
            // a page that leaves the cache comes back read around, as the helper's device reads.
            file.readIntoCache(dirty: true)
            file.readaheadPages = readaheadPages
            files[Int32(3 + i)] = file
        }
        return (mm, files)
    }

    /// The model's state as the helper reports the host's: the maps lines of the window and
    /// the heap area, the pagemap of each window VMA and of the heap above its initial break,
    /// and each window VMA's smaps Rss, Anonymous, LazyFree and Locked.
    func modelState(_ mm: AddressSpace) -> HostState {
        let w = layout.window
        let h = layout.heapArea
        var state = HostState()
        state.maps = mm.mapsLines(reader: mapsReader).filter { ($0.start < w.upperBound && $0.end > w.lowerBound) || ($0.start < h.upperBound && $0.end > h.lowerBound) }
        let heapCompare = Linux.pageAlign(layout.brk)
        for m in state.maps {
            if m.start < w.upperBound && m.end > w.lowerBound {
                // Only inside the window (as the helper): a wall merged into a window VMA
                // spans terabytes.
                let s = max(m.start, w.lowerBound)
                state.appendPages(s, PageRun.encode(mm.pagemap(s, min(m.end, w.upperBound))))
            } else if m.end > heapCompare && m.start < h.upperBound {
                // Only inside the heap area (as the helper): a wall merged into a heap-area
                // VMA spans terabytes.
                let s = max(m.start, heapCompare)
                state.appendPages(s, PageRun.encode(mm.pagemap(s, min(m.end, h.upperBound))))
            }
        }
        for (start, u) in mm.usage(start: w.lowerBound, end: w.upperBound) {
            state.usage.append(VMAUsage(start: start, rssKB: u.rss >> 10, anonymousKB: u.anonymous >> 10, lazyFreeKB: u.lazyFree >> 10,
                                        lockedKB: u.locked >> 10, swapKB: u.swap >> 10, anonHugeKB: u.anonHugePages >> 10))
        }
        return state
    }


    /// Runs one step on the model. A fork's parent stays alive, as the helper's does (waiting
    /// to be handed the sequence again), so the pages they share count as mapped twice.
    func runModel(_ step: DiffStep, _ procs: inout ModelProcesses, _ files: [Int32: MMFile]) -> StepOutcome {
        switch step {
        case .call(let c):
            if c.isFork {
                procs.fork()
                return .call(SyscallResult(raw: 0))
            }
            return .call(c.run(on: procs.mm, file: c.fileDescriptor.flatMap { files[$0.number] }))
        case .access(let a):
            return .access(a.run(on: procs.mm))
        case .switchTo(let p):
            return .call(SyscallResult(raw: procs.switchTo(p) ? 0 : -Int64(Errno.ESRCH.rawValue)))
        case .query(let q):
            return .query(q.run(on: procs.mm))
        }
    }

    /// The host's khugepaged collapses so far (`khugepaged/pages_collapsed`; nil where it
    /// cannot be read). MADV_COLLAPSE does not count there.
    static func khugepagedCollapses() -> UInt64? {
        guard let f = fopen("/sys/kernel/mm/transparent_hugepage/khugepaged/pages_collapsed", "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 32)
        guard fgets(&buf, 32, f) != nil else { return nil }
        let s = String(decoding: buf.prefix(while: { $0 != 0 && $0 != 10 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return UInt64(s)
    }

    /// Sequences run again because the host's khugepaged collapsed memory while they ran and
    /// they diverged; and those given up after three such runs (not compared: counted).
    /// What the model did with huge pages in the sequences that agreed: THP faults (and
    /// copies replacing the huge zero page), huge-zero-page faults, fallbacks, PMD splits.
    public private(set) var thpFaults = 0, thpZeroFaults = 0, thpFallbacks = 0, thpSplits = 0, thpCollapses = 0
    var shrinking = false
    public private(set) var khugepagedReruns = 0
    public private(set) var khugepagedGivenUp = 0

    /// Divergences the host did not repeat: the sequence, run again, agreed throughout while
    /// the model answered the step exactly as before, so the host's answer is what changed
    /// (seen in CI: fault-around left out one page of a cached file, as `next_uptodate_folio()`
    /// skips a folio another kernel thread holds locked — writeback, reclaim, migration).
    /// Not counted as disagreements; each is printed whole.
    public private(set) var hostVariations: [Divergence] = []

    /// Runs `steps` on a fresh helper and a fresh model; nil when they agree throughout. A
    /// divergence counts when a second run diverges too: a rerun that agrees, with the model
    /// answering the diverging step as the first time, is the host varying (`hostVariations`).
    /// A divergence in a run during which the host's khugepaged collapsed something (anywhere:
    /// its counter is global) is not trusted: the sequence runs again, up to three times.
    public func run(_ steps: [DiffStep]) throws -> Divergence? {
        let r = try Self.judge { watch in
            let before = Self.khugepagedCollapses()
            let (d, repeated) = try runOnce(steps, watch: watch)
            var moved = false
            if d != nil, let b = before, let a = Self.khugepagedCollapses(), a != b { moved = true }
            return DiffAttempt(divergence: d, khugepagedMoved: moved, modelRepeated: repeated)
        }
        khugepagedReruns += r.khugepagedReruns
        switch r.verdict {
        case .agreed: return nil
        case .diverged(let d): return d
        case .hostVaried(let d):
            if !shrinking { hostVariations.append(d) }
            return nil
        case .givenUp:
            khugepagedGivenUp += 1
            return nil
        }
    }

    /// What `judge` concludes from a sequence's runs.
    public enum RunVerdict<D> {
        case agreed
        /// Diverged twice (the second run's divergence), or the model answered differently
        /// when run again (the first's: the model must be deterministic).
        case diverged(D)
        /// Diverged once; the rerun agreed and the model repeated its answer.
        case hostVaried(D)
        /// Three diverging runs during which khugepaged collapsed memory.
        case givenUp
    }

    /// The rules `run` applies; `attempt(watch)` runs the sequence once, `watch` being the
    /// first run's diverging step on a rerun (nil on the first run).
    @_spi(Testing) public static func judge<D>(_ attempt: (_ watch: D?) throws -> DiffAttempt<D>) rethrows -> (verdict: RunVerdict<D>, khugepagedReruns: Int) {
        var first: D?
        var khugepaged = 0
        while true {
            let a = try attempt(first)
            if a.divergence != nil && a.khugepagedMoved {
                khugepaged += 1
                if khugepaged == 3 { return (.givenUp, khugepaged) }
                continue
            }
            guard let f = first else {
                guard let d = a.divergence else { return (.agreed, khugepaged) }
                first = d
                continue
            }
            if let d = a.divergence { return (.diverged(d), khugepaged) }
            return (a.modelRepeated ? .hostVaried(f) : .diverged(f), khugepaged)
        }
    }

    /// One run of `steps`: its divergence, if any, and — when `watch` (an earlier run's
    /// divergence) is given — whether the model answered that step exactly as then.
    func runOnce(_ steps: [DiffStep], watch: Divergence? = nil) throws -> (Divergence?, modelRepeated: Bool) {
        var repeated = false
        let h = try HostHelper(path: helperPath, files: fileSpecs)
        let l = try readLayout(h)
        if l != layout { layout = l }
        let (mm0, files) = makeModel()
        var procs = ModelProcesses(mm0)
        var hostOutcomes: [StepOutcome] = []
        for (i, step) in steps.enumerated() {
            h.send(step.hostCommand)
            let (line, hostState) = try h.readResponse()
            let ho: StepOutcome
            switch step {
            case .call(let c):
                guard line.hasPrefix("result "), let v = Int64(line.dropFirst(7)) else {
                    throw HostError(description: "helper answered \(c.name) with: \(line)")
                }
                ho = .call(SyscallResult(raw: v))
                coverage[c.name, default: [:]][ho.coverageKey, default: 0] += 1
            case .access(let a):
                guard let o = AccessOutcome(hostLine: Substring(line), kind: a.kind) else {
                    throw HostError(description: "helper answered \(a) with: \(line)")
                }
                ho = .access(o)
                coverage[a.kind.rawValue, default: [:]][ho.coverageKey, default: 0] += 1
            case .switchTo(let p):
                guard line.hasPrefix("result "), let v = Int64(line.dropFirst(7)) else {
                    throw HostError(description: "helper answered \(p.rawValue) with: \(line)")
                }
                ho = .call(SyscallResult(raw: v))
                coverage["to " + p.rawValue, default: [:]][ho.coverageKey, default: 0] += 1
            case .query(let q):
                guard let a = ProcmapAnswer(hostLine: Substring(line)) else {
                    throw HostError(description: "helper answered \(q) with: \(line)")
                }
                ho = .query(a)
                coverage["PROCMAP_QUERY", default: [:]][ho.coverageKey, default: 0] += 1
            }
            hostOutcomes.append(ho)
            let mo = runModel(step, &procs, files)
            let ms = modelState(procs.mm)
            if let w = watch, w.index == i { repeated = mo == w.modelOutcome && ms.agrees(with: w.modelState) }
            if ho != mo || !hostState.agrees(with: ms) {
                return (Divergence(index: i, steps: steps, hostOutcomes: hostOutcomes, modelOutcome: mo,
                                   hostState: hostState, modelState: ms), repeated)
            }
        }
        for mm in procs.all where !shrinking {
            let t = mm.thpStats
            thpFaults += t.faultAlloc
            thpZeroFaults += t.zeroPageFaults
            thpFallbacks += t.faultFallback
            thpSplits += t.splitPMD
            thpCollapses += Int(mm.stats.sum(MMStat.thpCollapseAlloc.rawValue))
        }
        return (nil, repeated)
    }

    /// Shrinks a diverging sequence: drops chunks, then single steps, while it still diverges.
    public func shrink(_ steps: [DiffStep], _ first: Divergence) throws -> Divergence {
        shrinking = true
        defer { shrinking = false }
        var best = first
        var seq = Array(steps.prefix(first.index + 1))
        var chunk = max(seq.count / 2, 1)
        while chunk >= 1 {
            var i = 0
            var progressed = false
            while i < seq.count - 1 {
                var candidate = seq
                candidate.removeSubrange(i..<min(i + chunk, seq.count - 1))
                if let d = try run(candidate) {
                    seq = Array(candidate.prefix(d.index + 1))
                    best = d
                    progressed = true
                } else {
                    i += chunk
                }
            }
            if !progressed { chunk /= 2 }
        }
        return best
    }

    /// Accesses the generator aimed away from where the host would use a transparent huge
    /// page (THP-eligible VMAs; the model has no THP yet), and populating madvise calls it
    /// replaced for the same reason, over every sequence generated.
    public private(set) var thpReaimed = 0
    public private(set) var collapseReaimed = 0
    /// Stores the generator aimed beyond EOF into the last page of a shared file mapping and
    /// drew again: writeback zeroes that part of the page whenever it runs (the host's flusher
    /// decides when), so what a later load reads there is not the sequence's to say.
    public private(set) var eofTailReaimed = 0
    /// MADV_REMOVE calls over a shared mapping of one of the files, redrawn (see
    /// `CallGenerator.madvise`).
    public private(set) var punchReaimed = 0

    /// Generates `calls` system calls from `seed`, with loads and stores among them (each step
    /// an access with probability `accessPercent`), stepping a model to aim at live mappings.
    /// PROCMAP_QUERY ioctls go before this percentage of steps (drawn from a stream of their
    /// own: the calls, loads and stores of a seed are the same with or without them).
    public var queryPercent = 10

    public func generate(seed: UInt64, calls: Int, accessPercent: Int = 45) -> [DiffStep] {
        var g = CallGenerator(seed: seed, window: layout.window, heap: layout.startBrk,
                              heapCompare: Linux.pageAlign(layout.brk), files: fileSpecs.map { ($0.0, $0.1) })
        let (mm0, files) = makeModel()
        var procs = ModelProcesses(mm0)
        var steps: [DiffStep] = []
        var made = 0
        while made < calls {
            let step: DiffStep
            g.fileSizes = (0..<fileSpecs.count).map { files[Int32(3 + $0)]!.size }
            if queryPercent > 0 && g.wantsQuery(percent: UInt64(queryPercent)) {
                steps.append(.query(g.procmapQuery(procs.mm)))
            }
            if let to = g.processSwitch(hasParent: procs.hasParent, hasChild: procs.hasChild) {
                step = .switchTo(to)
            } else if g.below(100) < UInt64(accessPercent) {
                step = .access(g.access(procs.mm))
            } else {
                step = .call(g.next(procs.mm))
                made += 1
            }
            steps.append(step)
            _ = runModel(step, &procs, files)
        }
        thpReaimed += g.thpReaimed
        collapseReaimed += g.collapseReaimed
        eofTailReaimed += g.eofTailReaimed
        punchReaimed += g.punchReaimed
        return steps
    }
}

/// The model's processes of one sequence, as the helper's: a tree by fork, one of them
/// running the sequence.
struct ModelProcesses {
    private var spaces: [AddressSpace]
    private var parent: [Int?]
    private var lastChild: [Int?]
    private var running = 0

    init(_ mm: AddressSpace) {
        spaces = [mm]
        parent = [nil]
        lastChild = [nil]
    }

    var mm: AddressSpace { spaces[running] }
    var all: [AddressSpace] { spaces }
    var hasParent: Bool { parent[running] != nil }
    var hasChild: Bool { lastChild[running] != nil }

    /// The child runs the sequence from here on; the parent waits.
    mutating func fork() {
        spaces.append(mm.fork())
        parent.append(running)
        lastChild.append(nil)
        lastChild[running] = spaces.count - 1
        running = spaces.count - 1
    }

    /// false (ESRCH on the host) where there is no such process.
    mutating func switchTo(_ p: ProcessSwitch) -> Bool {
        guard let next = p == .parent ? parent[running] : lastChild[running] else { return false }
        running = next
        return true
    }
}
