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

/// Where a sequence went different ways on the host and on the model.
public struct Divergence: CustomStringConvertible {
    public var index: Int
    public var calls: [MemoryCall]
    public var hostResults: [SyscallResult]
    public var modelResult: SyscallResult
    public var hostMaps: [MapsLine]
    public var modelMaps: [MapsLine]

    /// A fork's line says where the sequence goes on.
    func strace(_ c: MemoryCall, _ r: SyscallResult) -> String {
        c.isFork ? c.strace(result: r) + " (the sequence continues in the child)" : c.strace(result: r)
    }

    public var description: String {
        var s = "  sequence (strace syntax, host results):\n"
        for (i, c) in calls.prefix(index + 1).enumerated() {
            let mark = i == index ? "→ " : "  "
            s += "    \(mark)" + strace(c, hostResults[i]) + "\n"
        }
        let c = calls[index]
        s += "  model returned: " + strace(c, modelResult) + "\n"
        let h = Set(hostMaps.map(\.comparable))
        let m = Set(modelMaps.map(\.comparable))
        if h != m {
            s += "  maps, host:\n" + hostMaps.map { "    " + $0.comparable + "\n" }.joined()
            s += "  maps, model:\n" + modelMaps.map { "    " + $0.comparable + "\n" }.joined()
        }
        return s
    }
}

/// The differential tester: random call sequences on the host kernel (through
/// `faultline-host`) and on the model; every result and errno, and the window's maps lines
/// after every call, must agree.
public final class DiffRunner {
    public let helperPath: String
    let directory: String
    let fileSpecs: [(String, UInt64)]
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

    /// A model mirroring the host layout, and its files by descriptor (3, 4, …, as the helper holds them).
    func makeModel() -> (AddressSpace, [Int32: MMFile]) {
        let system = MMSystem(frames: 32_768)
        var cfg = AddressSpace.Configuration()
        cfg.startBrk = layout.startBrk
        cfg.mmapBase = cfg.taskSize
        cfg.tree = tree
        let mm = AddressSpace(system: system, design: design, configuration: cfg)
        for line in layout.lines where line.end <= cfg.taskSize && line.path != "[heap]" {
            let isPlug = layout.plugs.contains { $0.overlaps(line.start..<line.end) }
            let flags: VMFlags = isPlug ? [.mayRead, .mayWrite, .mayExec, .noReserve] : AddressSpace.flags(forPerms: line.perms)
            mm.mirror(start: line.start, end: line.end, flags: flags, anonymous: layout.anon.contains(line.start))
        }
        if layout.brk > layout.startBrk {
            _ = mm.brk(layout.brk)
            if let heap = layout.lines.first(where: { $0.path == "[heap]" }), layout.anon.contains(heap.start) {
                mm.giveAnonVMA(at: heap.start)
            }
        }
        var files: [Int32: MMFile] = [:]
        for (i, f) in fileSpecs.enumerated() { files[Int32(3 + i)] = system.makeFile(path: f.0, size: f.1) }
        return (mm, files)
    }

    func modelMaps(_ mm: AddressSpace) -> [MapsLine] {
        let w = layout.window
        let h = layout.heapArea
        return mm.mapsLines(reader: mapsReader).filter { ($0.start < w.upperBound && $0.end > w.lowerBound) || ($0.start < h.upperBound && $0.end > h.lowerBound) }
    }

    /// Runs `calls` on a fresh helper and a fresh model; nil when they agree throughout.
    public func run(_ calls: [MemoryCall]) throws -> Divergence? {
        let h = try HostHelper(path: helperPath, files: fileSpecs)
        let l = try readLayout(h)
        if l != layout { layout = l }
        var (mm, files) = makeModel()
        var hostResults: [SyscallResult] = []
        for (i, c) in calls.enumerated() {
            h.send(c.hostCommand)
            let (hr, hmaps) = try h.readResponse()
            hostResults.append(SyscallResult(raw: hr))
            coverage[c.name, default: [:]][SyscallResult(raw: hr).errnoName ?? "ok", default: 0] += 1
            let mr: SyscallResult
            if c.isFork {
                mm = mm.fork()
                mr = SyscallResult(raw: 0)
            } else {
                mr = c.run(on: mm, file: c.mappedDescriptor.flatMap { files[$0.number] })
            }
            let mmaps = modelMaps(mm)
            if hr != mr.raw || hmaps.map(\.comparable) != mmaps.map(\.comparable) {
                return Divergence(index: i, calls: calls, hostResults: hostResults, modelResult: mr,
                                  hostMaps: hmaps, modelMaps: mmaps)
            }
        }
        return nil
    }

    /// Shrinks a diverging sequence: drops chunks, then single calls, while it still diverges.
    public func shrink(_ calls: [MemoryCall], _ first: Divergence) throws -> Divergence {
        var best = first
        var seq = Array(calls.prefix(first.index + 1))
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

    /// Generates `steps` calls from `seed`, stepping a model to aim at live mappings.
    public func generate(seed: UInt64, steps: Int) -> [MemoryCall] {
        var g = CallGenerator(seed: seed, window: layout.window, heap: layout.startBrk, files: fileSpecs.map { ($0.0, $0.1) })
        var (mm, files) = makeModel()
        var calls: [MemoryCall] = []
        for _ in 0..<steps {
            let c = g.next(mm)
            calls.append(c)
            if c.isFork { mm = mm.fork() } else { _ = c.run(on: mm, file: c.mappedDescriptor.flatMap { files[$0.number] }) }
        }
        return calls
    }
}
