import FaultlineMM
import FaultlineReplay
import FaultlineTestSupport
import Foundation
import Testing

@Suite("Recorded traces")
struct RecordedTraceTests {
    @Test("Each recorded trace replays with no mismatch", arguments: [
        "python-numpy-threads.strace", "python-multiprocessing.strace", "gcc-vfork-exec.strace", "perl-mremap.strace",
        "git-log.strace", "calls-errors.strace", "sh-stderr-pids.strace", "cat-maps.strace", "odd-mappings.strace",
    ])
    func noMismatch(_ name: String) throws {
        let (s, _) = try replay(try loadTrace(name))
        #expect(s.mismatches.isEmpty, "\(name): \(s.mismatches.map(\.description).joined(separator: "\n"))")
        #expect(s.replayed > 10)
    }

    @Test("Every design replays the error-heavy trace alike", arguments: Design.selectable)
    func everyDesign(_ d: Design) throws {
        let (s, _) = try replay(try loadTrace("calls-errors.strace"), design: d)
        #expect(s.mismatches.isEmpty)
        #expect(s.replayed == 252)
    }

    @Test("The python trace has threads sharing one address space")
    func threads() throws {
        let (s, r) = try replay(try loadTrace("python-numpy-threads.strace"))
        let script = try #require(r.script)
        #expect(script.tasks.count >= 4, "main thread, three Python threads, OpenBLAS threads")
        #expect(s.threads >= 4)
    }

    @Test("gcc's vfork children exec into address spaces of their own")
    func vforkExec() throws {
        let (s, _) = try replay(try loadTrace("gcc-vfork-exec.strace"))
        // gcc, cc1, as: three images (plus the first, before gcc's execve).
        #expect(s.processes == 4)
        #expect(s.skippedByReason["failed execve"] == 8)
    }

    @Test("perl's mremaps grow in place and move where the kernel moved them")
    func mremap() throws {
        let text = try loadTrace("perl-mremap.strace")
        let calls = try StraceParser.parse(text).calls.filter { $0.name == "mremap" }
        #expect(calls.count == 22)
        #expect(calls.contains { $0.result.value != UInt64($0.args[0].dropFirst(2), radix: 16) }, "some moved")
        let (s, _) = try replay(text)
        #expect(s.mismatches.isEmpty)
    }

    @Test("--maps: every mapping the trace shows is where the kernel's own maps put it")
    func mapsAgreeWithKernel() throws {
        let (s, _) = try replay(try loadTrace("cat-maps.strace"))
        let kernel = try loadTrace("cat-maps.kernel-maps").split(separator: "\n").compactMap { MapsLine(parsing: $0) }
        let kernelText = Set(kernel.map(\.description))
        let model = s.maps.filter { $0.path != "[inferred]" }
        #expect(model.count >= 20)
        for line in model { #expect(kernelText.contains(line.description), "model has \(line)") }
        // The kernel's lines from calls the trace shows (not execve's own mappings), except the
        // 128 KiB buffer cat unmapped after reading.
        let execveMade: Set<String> = ["/usr/bin/cat", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]",
                                       "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"]
        let modelText = Set(s.maps.map(\.description))
        let missing = kernel.filter { !execveMade.contains($0.path) && !modelText.contains($0.description) }
        #expect(missing.count == 1 && missing[0].end - missing[0].start == 139_264, "\(missing)")
        #expect(s.inferred == 2, "exe RELRO and ld.so RELRO")
    }

    @Test("--maps of odd mappings: /dev/zero, memfd, shm, hints, MAP_32BIT as the kernel printed them")
    func oddMappings() throws {
        let (s, _) = try replay(try loadTrace("odd-mappings.strace"))
        let kernel = try loadTrace("odd-mappings.kernel-maps").split(separator: "\n").compactMap { MapsLine(parsing: $0) }
        // Inodes of memfd and shm files, and the shm file's later unlink, are not in the trace;
        // mlock (replayed) splits the private /dev/zero mapping as it did the kernel's.
        func key(_ l: MapsLine) -> String {
            "\(l.start)-\(l.end) \(l.perms) \(l.path.replacingOccurrences(of: " (deleted)", with: ""))"
        }
        let kernelKeys = Set(kernel.map(key))
        let model = s.maps.filter { $0.path != "[inferred]" }
        #expect(model.count >= 15)
        for line in model { #expect(kernelKeys.contains(key(line)), "model has \(line)") }
        #expect(s.maps.contains { $0.path == "/dev/zero (deleted)" && $0.perms == "rw-s" }, "shmem_zero_setup")
        #expect(s.maps.contains { $0.path == "/memfd:faultline (deleted)" })
        #expect(s.maps.contains { $0.start < 0x1_0000_0000 && $0.path.isEmpty }, "MAP_32BIT below 4 GiB")
        #expect(s.skippedByReason["other: mlock"] == nil)
        #expect(s.maps.contains { $0.start == 0x7f93_2139_3000 && $0.end == 0x7f93_2139_4000 && $0.path == "/dev/zero" })
        #expect(s.maps.contains { $0.start == 0x7f93_2139_4000 && $0.offset == 0x1000 && $0.path == "/dev/zero" })
    }

    @Test("A doctored trace: each changed result is reported with its line")
    func doctored() throws {
        var lines = try loadTrace("cat-maps.strace").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let m = try #require(lines.firstIndex { $0.contains("munmap(") && $0.hasSuffix("= 0") && !$0.contains("37983") })
        lines[m] = lines[m].replacingOccurrences(of: "= 0", with: "= -1 EINVAL (Invalid argument)")
        let b = try #require(lines.firstIndex { $0.contains("brk(0x") })
        lines[b] = String(lines[b].prefix { $0 != "=" }) + "= 0x1000"
        let p = try #require(lines.firstIndex { $0.contains("LC_NUMERIC") })
        let addr = try #require(lines.first { $0.contains("LC_TIME") }?.split(separator: " ").last)
        lines[p] = String(lines[p].prefix { $0 != "=" }) + "= " + addr  // onto LC_TIME, mapped just before
        let (s, _) = try replay(lines.joined(separator: "\n"))
        #expect(s.mismatches.map(\.line).sorted() == [b + 1, p + 1, m + 1].sorted())
        let mm = try #require(s.mismatches.first { $0.line == m + 1 })
        #expect(mm.recorded == "-1 EINVAL" && mm.model == "0")
        #expect(s.mismatches.first { $0.line == p + 1 }?.model == "-1 EEXIST")
    }
}

@Suite("strace parser")
struct ParserTests {
    @Test("Split calls join, whatever the spacing")
    func split() throws {
        let t = try StraceParser.parse("""
        101   mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
        102 munmap(0x7f0000000000, 4096)   = 0
        101   <... mmap resumed>)   =   0x7f0000100000
        101 wait4(-1,  <unfinished ...>
        101 <... wait4 resumed>[{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 102
        """)
        let calls = t.calls
        #expect(calls.count == 3)
        #expect(calls[1].name == "mmap" && calls[1].args.count == 6 && calls[1].result.value == 0x7f00_0010_0000)
        #expect(calls[1].line == 3 && calls[1].startLine == 1)
        #expect(calls[2].args == ["-1", "[{WIFEXITED(s) && WEXITSTATUS(s) == 0}]", "0", "NULL"])
    }

    @Test("Prefixes and timestamps in every form")
    func prefixes() throws {
        let lines = [
            "munmap(0x1000, 4096) = 0",
            "[pid  4242] munmap(0x1000, 4096) = 0",
            "4242 02:20:44 munmap(0x1000, 4096) = 0",
            "4242 02:20:44.669029 munmap(0x1000, 4096) = 0 <0.000025>",
            "1795746044.703188 munmap(0x1000, 4096) = 0",
            "[pid 4242] 1795746044.703188 munmap(0x1000, 4096)       = 0 <0.000010>",
            "     0.000123 munmap(0x1000, 4096) = 0",
        ]
        for l in lines {
            let t = try StraceParser.parse(l)
            let c = try #require(t.calls.first, "\(l)")
            #expect(c.name == "munmap" && c.args == ["0x1000", "4096"] && c.result.value == 0, "\(l)")
            #expect(c.pid == (l.contains("4242") ? 4242 : StraceParser.defaultPid), "\(l)")
        }
    }

    @Test("Exits, kills, signals and strace's messages")
    func events() throws {
        let t = try StraceParser.parse("""
        7 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=8, si_uid=0, si_status=0, si_utime=0, si_stime=2 /* 0.02 s */} ---
        7 --- stopped by SIGSTOP ---
        8 +++ exited with 3 +++
        9 +++ killed by SIGKILL (core dumped) +++
        strace: Process 10 attached
        7 exit_group(0)                     = ?
        """)
        #expect(t.events.count == 5)
        #expect(t.events[0] == .signal(pid: 7, line: 1, name: "SIGCHLD"))
        #expect(t.events[1] == .signal(pid: 7, line: 2, name: "SIGSTOP"))
        #expect(t.events[2] == .exited(pid: 8, line: 3, status: 3))
        #expect(t.events[3] == .killed(pid: 9, line: 4, signal: "SIGKILL"))
        guard case .call(let c) = t.events[4] else { Issue.record("no call"); return }
        #expect(c.result.value == nil && c.line == 6)
    }

    @Test("Strings, comments, fd paths and shifts do not confuse the argument split")
    func arguments() throws {
        let t = try StraceParser.parse("""
        5 execve("/bin/a,b)\\"c", ["x", "y) = 3"], 0x7ffc /* 39 vars */) = 0
        5 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 3</tmp/we,ird (x)>, 0) = 0x7f0000000000
        5 mmap(NULL, 2097152, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, -1, 0) = -1 ENOMEM (Cannot allocate memory)
        5 madvise(0x7f0000000000, 4096, 0x3039 /* MADV_??? */) = -1 EINVAL (Invalid argument)
        """)
        let c = t.calls
        #expect(c[0].args.count == 3 && c[0].args[0] == "\"/bin/a,b)\\\"c\"")
        #expect(try MemoryCall.decode(c[0]) == .execve(path: "/bin/a,b)\"c"))
        #expect(c[1].args[4] == "3</tmp/we,ird (x)>")
        #expect(try MemoryCall.decode(c[1]) == .mmap(addr: 0, length: 4096, prot: .read, flags: .shared,
                                                      fd: FileDescriptor(3, path: "/tmp/we,ird (x)"), offset: 0))
        let huge = MapFlags(rawValue: 0x22 | 0x40000 | (21 << 26))
        #expect(try MemoryCall.decode(c[2]) == .mmap(addr: 0, length: 2 << 20, prot: [.read, .write], flags: huge, fd: .none, offset: 0))
        #expect(c[2].result == TraceResult(value: UInt64(bitPattern: -1), errno: "ENOMEM"))
        #expect(try MemoryCall.decode(c[3]) == .madvise(addr: 0x7f00_0000_0000, length: 4096, advice: 12345))
    }

    @Test("'strace: Process N attached' inside a line joins it to the next")
    func interjection() throws {
        let t = try StraceParser.parse("""
        clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLDstrace: Process 11 attached
        , child_tidptr=0x7f09b5b53a10) = 11
        [pid    11] munmap(0x1000, 4096) = 0
        [pid    10] vfork(strace: Process 12 attached
         <unfinished ...>
        [pid    10] <... vfork resumed>) = 12
        """)
        let c = t.calls
        #expect(c.count == 3)
        #expect(c[0].line == 1 && c[0].pid == 10, "unprefixed lines belong to the first process")
        #expect(c[2].name == "vfork" && c[2].startLine == 4 && c[2].line == 6)
    }

    @Test("A malformed line is an error naming its line; lenient skips and counts it")
    func malformed() throws {
        let text = """
        1 munmap(0x1000, 4096) = 0
        1 munmap(0x1000, 4096
        1 this is not strace
        1 <... mmap resumed>) = 0
        1 munmap(0x1000, 4096) = 0
        """
        #expect(throws: TraceSyntaxError.self) { try StraceParser.parse(text) }
        do {
            _ = try StraceParser.parse(text)
        } catch let e as TraceSyntaxError {
            #expect(e.line == 2)
            #expect(e.description.hasPrefix("line 2: "))
        }
        let t = try StraceParser.parse(text, lenient: true)
        #expect(t.malformed.map(\.line) == [2, 3, 4])
        #expect(t.calls.count == 2)
        // Bad arguments of a replayed call: an error with the line, never a crash.
        let bad = try StraceParser.parse("1 mmap(NULL, 4096, PROT_BOGUS, MAP_PRIVATE, -1, 0) = 0x1000")
        #expect(throws: TraceSyntaxError.self) { try MemoryCall.decode(bad.calls[0]) }
        let (s, _) = try replay("1 mmap(NULL, 4096, PROT_BOGUS, MAP_PRIVATE, -1, 0) = 0x1000\n1 munmap(0x1000, 4096) = 0")
        #expect(s.skippedByReason["undecodable"] == 1 && s.replayed == 1)
    }
}

/// Inputs libFuzzer once crashed on (`Fuzz/run`), replayed as `StraceFuzz` does: a parse or an
/// error naming a line, then a replay that leaves every address space consistent.
@Suite("Fuzzer regressions")
struct FuzzRegressionTests {
    @Test(arguments: ["unprefixed-clone-address.strace"])
    func replaysWithoutACrash(file: String) throws {
        let data = try Data(contentsOf: traceDirectory.appendingPathComponent("fuzz").appendingPathComponent(file))
        let text = String(decoding: data, as: UTF8.self)
        let trace = try StraceParser.parse(text, lenient: true)
        var o = ReplayOptions()
        o.frames = 1024
        let r = TraceReplayer(trace: trace, options: o)
        _ = r.run()
        #expect(r.checkInvariants().isEmpty)
    }

    /// A clone "returning" a value no pid can have (the fuzzer's find: it trapped converting
    /// it to Int) names no child, prefixed or not.
    @Test func cloneResultsThatAreNoPid() throws {
        let text = """
        10 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        clone(child_stack=NULL, flags=SIGCHLD) = 0x8000000000000000
        10 clone(child_stack=NULL, flags=SIGCHLD) = 0x7fca7693d000
        10 clone(child_stack=NULL, flags=SIGCHLD) = 11
        """
        let trace = try StraceParser.parse(text)
        #expect(trace.calls.map(\.pid) == [10, 10, 10, 10])
        #expect(trace.calls.map(\.result.childPid) == [nil, nil, nil, 11])
        let r = TraceReplayer(trace: trace, options: ReplayOptions())
        let s = r.run()
        #expect(s.mismatches.isEmpty && r.checkInvariants().isEmpty)
    }
}

@Suite("Replay semantics")
struct ReplaySemanticsTests {
    @Test("The first brk(NULL) sets the heap; fork copies; the exec'd child starts empty")
    func processes() throws {
        let text = """
        10 execve("/bin/x", ["x"], 0x7ffc /* 1 var */) = 0
        10 brk(NULL) = 0x555555600000
        10 brk(0x555555621000) = 0x555555621000
        10 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000
        10 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 11
        11 munmap(0x7f0000100000, 8192) = 0
        11 mprotect(0x7f0000100000, 4096, PROT_READ) = -1 ENOMEM (Cannot allocate memory)
        10 mprotect(0x7f0000100000, 4096, PROT_READ) = 0
        11 execve("/bin/y", ["y"], 0x7ffc /* 1 var */) = 0
        11 brk(NULL) = 0x555555900000
        11 mprotect(0x7f0000100000, 4096, PROT_READ) = -1 ENOMEM (Cannot allocate memory)
        11 exit_group(0) = ?
        11 +++ exited with 0 +++
        10 exit_group(0) = ?
        10 +++ exited with 0 +++
        """
        let (s, _) = try replay(text)
        #expect(s.mismatches.isEmpty, "\(s.mismatches)")
        #expect(s.inferred == 0)
        #expect(s.maps.map(\.description).contains { $0.hasPrefix("555555600000-555555621000 rw-p") && $0.hasSuffix("[heap]") })
        #expect(s.maps.contains { $0.start == 0x7f00_0010_0000 && $0.perms == "r--p" })
        let (child, _) = try replay(text, pid: 11)
        #expect(child.maps.isEmpty, "the exec'd child mapped nothing")
    }

    @Test("A recorded success on memory the trace never mapped is inferred, not a mismatch")
    func inference() throws {
        let (s, _) = try replay("""
        1 execve("/bin/x", ["x"], 0x7ffc /* 1 var */) = 0
        1 mprotect(0x555555557000, 8192, PROT_READ) = 0
        1 madvise(0x7ffff7ff0000, 4096, MADV_DONTNEED) = 0
        1 mprotect(0x10000000, 4096, PROT_READ) = -1 ENOMEM (Cannot allocate memory)
        """)
        #expect(s.mismatches.isEmpty)
        #expect(s.inferred == 2 && s.inferredBytes == 12288)
        #expect(s.maps.filter { $0.path == "[inferred]" }.count == 2)
    }

    /// Replays with `--lenient`'s inference rule.
    func replayLenient(_ text: String) throws -> ReplaySummary {
        var o = ReplayOptions()
        o.inferIntoTouched = true
        return TraceReplayer(trace: try StraceParser.parse(text), options: o).run()
    }

    @Test("A call the model runs as recorded and agrees with infers nothing (issue 14's reproduction)")
    func noInferenceWhenTheModelAgrees() throws {
        let (s, _) = try replay("""
        mmap(NULL, 917504, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7fc1d4e0c000
        munmap(0x7fc1d4e0c000, 917504)          = 0
        mmap(0x7fc1d4ea9000, 8192, PROT_NONE, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = 0x7fc1d4ea9000
        mremap(0x7fc1d4ea9000, 36864, 32768, 0) = 0x7fc1d4ea9000
        """)
        #expect(s.mismatches.isEmpty, "\(s.mismatches)")
        #expect(s.inferred == 0 && s.inferredByReason.isEmpty)
        #expect(s.maps.map(\.comparable) == [MapsLine(start: 0x7fc1_d4ea_9000, end: 0x7fc1_d4ea_b000, perms: "---p", offset: 0).comparable])
    }

    @Test("A recorded success that needs memory the trace unmapped is a mismatch; --lenient infers it, counted")
    func noInferenceIntoTouchedMemory() throws {
        let trace = """
        1 mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        1 munmap(0x7f0000002000, 8192) = 0
        1 mprotect(0x7f0000000000, 16384, PROT_READ) = 0
        """
        let (s, _) = try replay(trace)
        #expect(s.mismatches.count == 1 && s.mismatches.first?.line == 3)
        #expect(s.mismatches.first?.model.contains("not inferred: 0x7f0000002000-0x7f0000004000") == true, "\(s.mismatches)")
        #expect(s.inferred == 0)
        let l = try replayLenient(trace)
        #expect(l.mismatches.isEmpty, "\(l.mismatches)")
        #expect(l.inferredByReason == ["mprotect: into memory the trace touched (lenient)": 1])
    }

    @Test("Memory a recorded failure showed unmapped, or a parent unmapped before fork, is never inferred")
    func touchedByFailuresAndForks() throws {
        let (s, _) = try replay("""
        1 mprotect(0x10000000, 4096, PROT_READ) = -1 ENOMEM (Cannot allocate memory)
        1 mprotect(0x10000000, 4096, PROT_READ) = 0
        1 munmap(0x20000000, 4096) = 0
        1 fork() = 2
        2 madvise(0x20000000, 4096, MADV_DONTNEED) = 0
        2 mprotect(0x30000000, 4096, PROT_READ) = 0
        """)
        #expect(s.mismatches.map(\.line) == [2, 5], "\(s.mismatches)")
        // The child may still infer what neither it nor its parent ever showed.
        #expect(s.inferredByReason == ["mprotect: memory mapped before the trace began": 1])
    }

    @Test("After execve the new image's memory is untouched again")
    func execveStartsFresh() throws {
        let (s, _) = try replay("""
        1 munmap(0x555555557000, 8192) = 0
        1 execve("/bin/x", ["x"], 0x7ffc /* 1 var */) = 0
        1 mprotect(0x555555557000, 8192, PROT_READ) = 0
        """)
        #expect(s.mismatches.isEmpty, "\(s.mismatches)")
        #expect(s.inferredByReason == ["mprotect: memory mapped before the trace began": 1])
    }

    @Test("A munmap in flight when another thread gets the range back runs first")
    func inFlightUnmap() throws {
        let (s, _) = try replay("""
        1 mmap(NULL, 1048576, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        1 clone3({flags=CLONE_VM|CLONE_THREAD, child_tid=0x1}, 88) = 2
        2 munmap(0x7f0000000000, 1048576 <unfinished ...>
        1 mmap(NULL, 1048576, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        2 <... munmap resumed>) = 0
        1 mprotect(0x7f0000000000, 4096, PROT_READ) = 0
        """)
        #expect(s.mismatches.isEmpty, "\(s.mismatches)")
        #expect(s.inferred == 0, "the second mapping survives the munmap that finished first")
        #expect(s.maps.contains { $0.start == 0x7f00_0000_0000 && $0.perms == "r--p" })
    }

    @Test("Calls other than memory and process ones are counted and skipped")
    func skipped() throws {
        let (s, _) = try replay("""
        1 wait4(-1, NULL, 0, NULL) = -1 ECHILD (No child processes)
        1 msync(0x1000, 4096, MS_SYNC) = -1 ENOMEM (Cannot allocate memory)
        1 execve("/nope", ["nope"], 0x7ffc /* 1 var */) = -1 ENOENT (No such file or directory)
        1 munmap(0x1000, 4096) = 0
        """)
        #expect(s.summaryLine == "1 calls replayed, 0 mismatches, 3 skipped")
        #expect(s.skippedByReason["other: wait4"] == 1 && s.skippedByReason["other: msync"] == 1)
    }

    @Test("PROCMAP_QUERY is counted on its own, by name or by number (its answer is not in the line)")
    func procmapQueryCounted() throws {
        let (s, _) = try replay("""
        1 ioctl(3</proc/1/maps>, PROCMAP_QUERY, {size=104, query_flags=0, query_addr=0x1000}) = 0
        1 ioctl(3</proc/1/maps>, _IOC(_IOC_READ|_IOC_WRITE, 0x66, 0x11, 0x68), 0x7ffc0000) = -1 ENOENT (No such file or directory)
        1 ioctl(1, TCGETS, {c_iflag=ICRNL}) = 0
        """)
        #expect(s.skippedByReason["PROCMAP_QUERY (answer not in the trace)"] == 2)
        #expect(s.skippedByReason["other: ioctl"] == 1)
    }
}
