import FaultlineMM
import FaultlineWorkloads
import Testing

/// `ProcessLayout`: a model cell starts from the mappings of the process the host cells run
/// in, so that its mmaps find the same gaps and merge (or not) with the same neighbours.
@Suite("Process layout")
struct ProcessLayoutTests {
    static let smaps = """
    555555554000-555555556000 r--p 00000000 08:01 1234                       /usr/bin/true
    Size:                  8 kB
    Anonymous:             0 kB
    VmFlags: rd mr mw me dw sd
    7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
    Anonymous:            12 kB
    VmFlags: rd wr mr mw me ac sd
    7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
    Anonymous:             0 kB
    VmFlags: rd wr mr mw me ac sd nh
    7f0000400000-7f0000402000 r-xp 00002000 08:01 99                         /usr/lib/libc.so.6
    Anonymous:             0 kB
    VmFlags: rd ex mr mw me sd
    7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
    Anonymous:             8 kB
    VmFlags: rd wr mr mw me gd ac
    ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
    VmFlags: ex
    """

    @Test func parsesMappingsFlagsAndAnonymousPages() {
        let l = ProcessLayout(smaps: Self.smaps)
        #expect(l.mappings.count == 6)
        #expect(l.mappings[1].hasAnonymousPages && !l.mappings[2].hasAnonymousPages)
        #expect(l.mappings[1].flags == [.read, .write, .mayRead, .mayWrite, .mayExec, .account, .softDirty])
        #expect(l.mappings[2].flags.contains(.noHugePage))
        #expect(l.mappings[3].line.path == "/usr/lib/libc.so.6" && l.mappings[3].line.offset == 0x2000)
        // The search starts at the end of the highest mapping below the stack.
        #expect(l.mmapBase == 0x7f00_0040_2000)
    }

    /// A torn read (a VMA that grew below where the previous read() stopped, shown again) is
    /// left out and counted, fields and all, so that mirroring never meets an overlap.
    @Test func anOverlappingLineFromATornReadIsLeftOut() {
        let torn = Self.smaps.replacingOccurrences(of: "7f0000200000-7f0000300000 rw-p 00000000 00:00 0 \n", with: """
        7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
        Anonymous:             4 kB
        VmFlags: rd wr mr mw me ac sd
        7f00001ff000-7f0000300000 rw-p 00000000 00:00 0 

        """)
        let l = ProcessLayout(smaps: torn)
        #expect(l.overlapping == 1)
        #expect(l.mappings.count == 6)
        #expect(l.mappings[2].line.start == 0x7f00_0020_0000 && l.mappings[2].hasAnonymousPages)
        #expect(l.mappings[2].flags.contains(.account) && !l.mappings[2].flags.contains(.noHugePage))
        let mm = AddressSpace(system: MMSystem(frames: 64), design: .global)
        #expect(l.mirror(into: mm) == 5)
    }

    /// New mappings go into the layout's gaps, top down, and merge only where the flags the
    /// host's VMAs have allow: beside a VM_NOHUGEPAGE neighbour, not; beside a plain anonymous
    /// one (VM_ACCOUNT, soft-dirty ignored), yes.
    @Test func mmapFindsTheLayoutsGapsAndMergesAsItsFlagsAllow() throws {
        let l = ProcessLayout(smaps: Self.smaps)
        let system = MMSystem(frames: 1024)
        var cfg = AddressSpace.Configuration()
        l.configure(&cfg)
        let mm = AddressSpace(system: system, design: .perVMA615, configuration: cfg)
        #expect(l.mirror(into: mm) == 5, "everything below the task size")
        let mirrored = mm.mapsLines(reader: .locked).map { "\(String($0.start, radix: 16))-\(String($0.end, radix: 16)) \($0.perms) \($0.path)" }
        #expect(mirrored.contains("7f0000400000-7f0000402000 r-xp /usr/lib/libc.so.6"))
        #expect(mirrored.contains("7ffffffde000-7ffffffff000 rw-p [stack]"))
        let mib: UInt64 = 1 << 20
        let a = try mm.mmap(0, mib, [.read, .write], [.private, .anonymous]).get()
        #expect(a == 0x7f00_0030_0000, "the highest gap that fits, below the libc")
        let b = try mm.mmap(0, mib, [.read, .write], [.private, .anonymous]).get()
        #expect(b == 0x7f00_0010_0000)
        let lines = mm.mapsLines(reader: .locked).filter { $0.start >= 0x7f00_0000_0000 && $0.end <= 0x7f00_0040_0000 }
        #expect(lines.map { [$0.start, $0.end] } == [[0x7f00_0000_0000, 0x7f00_0020_0000], [0x7f00_0020_0000, 0x7f00_0030_0000],
                                                      [0x7f00_0030_0000, 0x7f00_0040_0000]])
    }

    /// The live layout of this process parses and mirrors (the stack and the executable at least).
    @Test func thisProcessMirrors() {
        guard let l = ProcessLayout.current() else { Issue.record("cannot read /proc/self/smaps"); return }
        #expect(l.mappings.contains { $0.line.path == "[stack]" })
        #expect(l.mmapBase != nil)
        let mm = AddressSpace(system: MMSystem(frames: 64), design: .global)
        #expect(l.mirror(into: mm) >= l.mappings.count - 1)
    }

    /// A model cell starts from this process's layout unless told otherwise, and says so.
    @Test func aModelCellStartsFromThisProcesssLayout() {
        var o = smallOptions(.seedMix)
        o.layout = .host
        let system = WorkloadRunner.makeSystem(o, workloads: [.seedMix], threads: 2)
        let host = WorkloadRunner.runModel(design: .perVMA615, options: o, system: system)
        #expect((host.layoutMappings ?? 0) > 0)
        o.layout = .empty
        let empty = WorkloadRunner.runModel(design: .perVMA615, options: o, system: system)
        #expect(empty.layoutMappings == 0)
        #expect(host.ops > 0 && empty.ops > 0)
    }

    /// `/proc/self/cgroup`: the v1 line naming the memory controller wins; else the v2 line
    /// if the unified hierarchy has the controller; else none.
    @Test func hostPlacementIsReadFromProcSelfCgroup() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/4bd0\n3:cpuset:/\n0::/\n"
        #expect(MemCgroup.hostPlacement(procSelfCgroup: v1, v2HasMemory: false) == .init(version: 1, path: "/process_api/4bd0"))
        #expect(MemCgroup.hostPlacement(procSelfCgroup: v1, v2HasMemory: false)?.depth == 3)
        let v2 = "0::/user.slice/user-1000.slice/session-2.scope\n"
        #expect(MemCgroup.hostPlacement(procSelfCgroup: v2, v2HasMemory: true)?.depth == 4)
        #expect(MemCgroup.hostPlacement(procSelfCgroup: v2, v2HasMemory: false) == nil)
        #expect(MemCgroup.hostPlacement(procSelfCgroup: "5:cpu,memory:/\n", v2HasMemory: false)?.depth == 1)
    }
}
