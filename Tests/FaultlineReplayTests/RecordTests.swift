import FaultlineMM
import FaultlineReplay
import FaultlineTestSupport
import Foundation
import Testing

@Suite("faultline record: the trace format and the merge")
struct RecordFormatTests {
    @Test("Fault, exec_map, page_cache_add and file lines parse, and print back as they were")
    func parseLines() throws {
        let t = try StraceParser.parse("""
        # faultline record: ./a.out
        # file {dev=254:0, ino=0x2a0, size=33519, regular=1, path="/etc/ld.so.cache"}
        7 1796548697.399531794 execve("./a.out", ["./a.out"], 0x7fff4aea4cd0 /* 38 vars */) = 0
        7 1796548697.399531794 --- exec_map {start=0x7ffe6d09e000, end=0x7ffe6d0bf000, prot=rw-p, offset=0x7ffffffde000, dev=00:00, ino=0, path="[stack]"} ---
        7 1796548697.400000000 --- page_fault_kernel {address=0x55c5a4be0028, ip=elf_load, error_code=0x2} ---
        7 1796548697.400000100 --- page_fault_user {address=0x7f0000001234, ip=0x7f0000000010, error_code=0x14} ---
        7 1796548697.400000200 --- page_cache_add {dev=254:0, ino=0x50ea, index=4, pages=4} ---
        """)
        #expect(t.files["/etc/ld.so.cache"] == RecordedFile(device: "254:0", inode: 0x2a0, size: 33519, path: "/etc/ld.so.cache"))
        #expect(t.events.count == 5)
        guard case .execMap(let m) = t.events[1], case .fault(let k) = t.events[2], case .fault(let u) = t.events[3],
              case .pageCacheAdd(let a) = t.events[4] else {
            Issue.record("wrong kinds: \(t.events)")
            return
        }
        #expect(m.path == "[stack]" && m.start == 0x7ffe6d09e000 && m.perms == "rw-p" && m.line == 4)
        #expect(k.kernel && k.ipSymbol == "elf_load" && k.kind == .write && !k.protection)
        #expect(!u.kernel && u.kind == .exec && u.ip == 0x7f0000000010 && u.time == 1_796_548_697_400_000_100)
        #expect(a.index == 4 && a.pages == 4 && a.inode == 0x50ea)
        #expect("--- \(u.body) ---" == "--- page_fault_user {address=0x7f0000001234, ip=0x7f0000000010, error_code=0x14} ---")
        #expect(k.body == "page_fault_kernel {address=0x55c5a4be0028, ip=elf_load, error_code=0x2}")
    }

    @Test("A malformed recorded line is an error naming its line", arguments: [
        "7 1.0 --- page_fault_user {address=0x1000, error_code=0x4} ---",
        "7 1.0 --- page_fault_user {address=0x1000, ip=main, error_code=0x4} ---",
        "7 1.0 --- exec_map {start=0x1001, end=0x2000, prot=r--p, offset=0x0, path=\"/x\"} ---",
        "7 1.0 --- exec_map {start=0x2000, end=0x1000, prot=r--p, offset=0x0, path=\"/x\"} ---",
        "7 1.0 --- page_cache_add {dev=254:0, ino=0x1, index=4, pages=0} ---",
        "7 1.0 --- page_cache_add {dev=254:0, ino=0x1, index=4, pages=3} ---",
        "7 1.0 --- page_cache_add {dev=254:0, ino=0x1, index=4, pages=1024} ---",
        "7 1.0 --- exec_map {start=0x1000, end=0x2000, prot=r--p, offset=0x0, path=\"/x} ---",
        "# file {dev=254, ino=0x1, size=1, path=\"/x\"}",
    ])
    func malformed(_ line: String) {
        #expect(throws: TraceSyntaxError.self) { try StraceParser.parse("1 1.0 brk(NULL) = 0x1000\n" + line) }
        let t = try? StraceParser.parse("1 1.0 brk(NULL) = 0x1000\n" + line, lenient: true)
        #expect(t?.malformed.first?.line == 2)
    }

    @Test("A stamp too large for nanoseconds, and a break near the top of memory, parse and replay without a trap (fuzz-strace)")
    func overflowingValues() throws {
        let t = try StraceParser.parse("""
        7 99999999999999999.000000001 --- page_fault_user {address=0x1000, ip=0x1000, error_code=0x4} ---
        7 1.0 brk(NULL) = 0x1000
        7 1.1 brk(0xfffffffffffff001) = 0x1000
        """)
        guard case .fault(let f) = t.events[0] else { Issue.record("not a fault"); return }
        #expect(f.time == nil)
        _ = TraceReplayer(trace: t).run()
    }

    static let perfText = """
         0/0         0.000000000: PERF_RECORD_COMM: perf-exec:100/100
    100/100 10.000000000: PERF_RECORD_COMM exec: strace:100/100
    100/100 10.000001000: exceptions:page_fault_user: address=0x55f477f10000 ip=0x55f477f10000 error_code=0x14
    101/101 10.000002000: exceptions:page_fault_user: address=0x7f0000000000 ip=0x7f0000000100 error_code=0x6
    101/101 10.000003000: PERF_RECORD_COMM exec: prog:101/101
    101/101 10.000003100: PERF_RECORD_MMAP2 101/101: [0x7ffe91a30000(0x21000) @ 0x7ffffffde000 00:00 0 0]: rw-p [stack]
    101/101 10.000003200: PERF_RECORD_MMAP2 101/101: [0x55a005158000(0xc000) @ 0 fe:00 253911 0]: r--p /usr/bin/prog
    101/101 10.000003300: exceptions:page_fault_kernel: address=0x55a005163028 ip=elf_load error_code=0x2
    101/101 10.000003400: exceptions:page_fault_kernel: address=0xffff888000001000 ip=memcpy error_code=0x0
    101/101 10.000004000: exceptions:page_fault_user: address=0x7f98d617f100 ip=0x7f98d617f100 error_code=0x14
    101/101 10.000004500: filemap:mm_filemap_add_to_page_cache: dev 254:0 ino 4e50 pfn=0x1234 ofs=16384 order=2
    101/101 10.000005000: PERF_RECORD_MMAP2 101/101: [0x7f98d6174000(0x2000) @ 0x7f98d6174000 00:00 0 0]: rw-p //anon
    102/102 10.000006000: exceptions:page_fault_user: address=0x7f0000002000 ip=0x7f0000000100 error_code=0x6
    101/101 10.000007000: PERF_RECORD_LOST lost 3
    """

    @Test("perf script lines parse into faults, mappings, execs and page-cache insertions")
    func perfScript() {
        let (events, ignored) = Recording.parsePerfScript(Self.perfText)
        #expect(events.count == 12)
        #expect(ignored == 2)
        #expect(Recording.lostEvents(Self.perfText) == 3)
        guard case .mmap(let m) = events[5].kind, case .pageCacheAdd(let a) = events[9].kind else {
            Issue.record("kinds: \(events)")
            return
        }
        #expect(m.path == "/usr/bin/prog" && m.end == 0x55a005164000 && m.inode == 253911 && m.device == "fe:00")
        #expect(a.index == 4 && a.pages == 4 && a.inode == 0x4e50 && a.device == "254:0")
    }

    @Test("The merge keeps strace's order, puts faults by time, execve's mappings after its line, and leaves out strace's own")
    func merge() {
        let strace = """
        101 10.000002500 execve("/usr/bin/prog", ["prog"], 0x7ffd /* 1 vars */) = 0
        101 10.000004200 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f98d6174000
        101 10.000005500 clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0, stack=0x7f00, stack_size=0x1000}, 88) = 102
        101 10.000008000 exit_group(0) = ?
        101 10.000009000 +++ exited with 0 +++

        """
        let (events, _) = Recording.parsePerfScript(Self.perfText)
        let (text, stats) = Recording.merge(strace: strace, perf: events, offsetNs: 0, header: ["test"])
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0] == "# test")
        #expect(lines[1].hasPrefix("101 10.000002500 execve("))
        #expect(lines[2].contains("exec_map {start=0x7ffe91a30000"))
        #expect(lines[3].contains("exec_map {start=0x55a005158000"))
        #expect(lines[4].contains("page_fault_kernel {address=0x55a005163028, ip=elf_load"))
        #expect(lines[5] == "101 10.000004000 --- page_fault_user {address=0x7f98d617f100, ip=0x7f98d617f100, error_code=0x14} ---")
        #expect(lines[6].hasPrefix("101 10.000004200 mmap("))
        #expect(lines[7] == "101 10.000004500 --- page_cache_add {dev=254:0, ino=0x4e50, index=4, pages=4} ---")
        #expect(lines[8].hasPrefix("101 10.000005500 clone3("))
        #expect(lines[9].hasPrefix("102 10.000006000 --- page_fault_user"))
        #expect(lines.count == 12)
        #expect(stats.faults == 2 && stats.kernelFaults == 1 && stats.execMaps == 2 && stats.pageCacheAdds == 1)
        // strace's fault (pid 100, not traced), the child's fault before its execve (strace's
        // code), and the kernel's fault on a kernel address.
        #expect(stats.foreignFaults == 2 && stats.kernelAddressFaults == 1)
        #expect(stats.unmatchedExecs == 0)
        // The merged trace replays.
        #expect((try? StraceParser.parse(text)) != nil)
    }

    @Test("A user fault stamped inside its own task's call goes after the call (the clocks agree only to microseconds)")
    func faultInsideCall() {
        let strace = """
        7 1.000001000 mprotect(0x7f0000000000, 4096, PROT_READ|PROT_WRITE <unfinished ...>
        8 1.000001500 munmap(0x7f1000000000, 4096) = 0
        7 1.000003000 <... mprotect resumed>) = 0

        """
        let perf = """
        7/7 1.000002000: exceptions:page_fault_user: address=0x7f0000000010 ip=0x401000 error_code=0x6
        8/8 1.000002100: exceptions:page_fault_user: address=0x7f2000000010 ip=0x401000 error_code=0x6
        """
        let (events, _) = Recording.parsePerfScript(perf)
        let (text, stats) = Recording.merge(strace: strace, perf: events, offsetNs: 0)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.count == 5, "\(text)")
        guard lines.count == 5 else { return }
        #expect(lines[2].hasPrefix("8 1.000002100 --- page_fault_user"))
        #expect(lines[3].hasPrefix("7 1.000003000 <... mprotect resumed>"))
        #expect(lines[4].hasPrefix("7 1.000002000 --- page_fault_user"))
        #expect(stats.deferredFaults == 1)
    }

    @Test("The two streams' common mappings bound the clock offset")
    func clockWindow() throws {
        // perf's clock runs about 1000 s behind strace's: each record lies between its call's
        // stamp and the task's next line.
        let strace = """
        101 1010.000002500 execve("/usr/bin/prog", ["prog"], 0x7ffd /* 1 vars */) = 0
        101 1010.000004200 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f98d6174000
        101 1010.000005500 exit_group(0) = ?
        """
        let perf = """
        101/101 10.000003000: PERF_RECORD_COMM exec: prog:101/101
        101/101 10.000004400: PERF_RECORD_MMAP2 101/101: [0x7f98d6174000(0x2000) @ 0x7f98d6174000 00:00 0 0]: rw-p //anon
        """
        let (events, _) = Recording.parsePerfScript(perf)
        let w = try #require(Recording.clockWindow(strace: strace, perf: events))
        #expect(w.anchors == 2)
        // exec: [1010.0000025 − 10.000003, 1010.0000042 − 10.000003];
        // mmap: [1010.0000042 − 10.0000044, 1010.0000055 − 10.0000044]; both: the intersection.
        #expect(w.lower == 999_999_999_800 && w.upper == 1_000_000_001_100)
        #expect(Recording.clockWindow(strace: strace, perf: []) == nil)

        // A split execve (gcc's vfork child): the exec lies between its `<unfinished ...>` line
        // and its `resumed` one — not after the resumed one (a regression: that put the offset
        // 2 ms off and faults before the mappings they hit).
        let split = """
        102 1010.000002500 execve("/usr/bin/cc1", ["cc1"], 0x7ffd /* 1 vars */ <unfinished ...>
        101 1010.000003000 <... vfork resumed>) = 102
        102 1010.000009000 <... execve resumed>) = 0
        102 1010.000010000 exit_group(0) = ?
        """
        let (e2, _) = Recording.parsePerfScript("102/102 10.000004000: PERF_RECORD_COMM exec: cc1:102/102")
        let w2 = try #require(Recording.clockWindow(strace: split, perf: e2))
        #expect(w2.lower == 999_999_998_500 && w2.upper == 1_000_000_005_000)
    }

    @Test("strace's -y paths and execve's files are the files a recording describes")
    func paths() {
        let text = """
        5 1.0 mmap(NULL, 33519, PROT_READ, MAP_PRIVATE, 3</etc/ld.so.cache>, 0) = 0x7f0000000000
        5 1.0 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3</etc/ld.so.cache>, 0) = 0x7f0000010000
        5 1.0 --- exec_map {start=0x1000, end=0x2000, prot=r--p, offset=0x0, dev=fe:00, ino=1, path="/usr/bin/prog"} ---
        5 1.0 --- exec_map {start=0x3000, end=0x4000, prot=r--p, offset=0x0, dev=00:00, ino=0, path="[vdso]"} ---
        """
        #expect(Recording.filePaths(strace: text) == ["/etc/ld.so.cache"])
        #expect(Recording.execMapPaths(text) == ["/usr/bin/prog"])
        let d = Recording.describeFiles(["/proc/self/exe", "/nonexistent/file", "/proc/self/exe"])
        #expect(d.count == 1)
    }
}

@Suite("Replaying recorded faults")
struct FaultCheckTests {
    static let layout = """
    # file {dev=254:0, ino=0x77, size=1048576, regular=1, path="/lib/fake.so"}
    10 1.000000000 execve("/bin/prog", ["prog"], 0x7ffd /* 1 vars */) = 0
    10 1.000000000 --- exec_map {start=0x7ffe00000000, end=0x7ffe00021000, prot=rw-p, offset=0x7ffffffde000, dev=00:00, ino=0, path="[stack]"} ---
    10 1.000000000 --- exec_map {start=0x7f0000000000, end=0x7f0000100000, prot=r-xp, offset=0x0, dev=254:0, ino=119, path="/lib/fake.so"} ---
    10 1.000000000 --- exec_map {start=0x7f0000200000, end=0x7f0000202000, prot=r-xp, offset=0x0, dev=00:00, ino=0, path="[vdso]"} ---
    10 1.000000100 mmap(0x7f1000000000, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x7f1000000000

    """

    func check(_ body: String, _ configure: (inout ReplayOptions) -> Void = { _ in }) throws -> ReplaySummary {
        var o = ReplayOptions()
        configure(&o)
        return try replay(Self.layout + body, options: o)
    }

    @Test("A first touch matches; a second fault by the same task on a mapped page is missing")
    func matchedAndMissing() throws {
        let s = try check("""
        10 1.000001000 --- page_fault_user {address=0x7f0000000100, ip=0x7f0000000100, error_code=0x14} ---
        10 1.000002000 --- page_fault_user {address=0x7f1000000010, ip=0x7f0000000100, error_code=0x6} ---
        10 1.000003000 --- page_fault_user {address=0x7f1000000020, ip=0x7f0000000100, error_code=0x6} ---
        10 1.000004000 --- page_fault_user {address=0x7f1000001020, ip=0x7f0000080100, error_code=0x6} ---
        """)
        #expect(s.mismatches.isEmpty)
        let anon = try #require(s.faults.user["anon"])
        #expect(anon.recorded == 3 && anon.matched == 2 && anon.missing == 1)
        #expect(s.faults.user["file"]?.matched == 1)
        // The last fault's ip is code the host ran unfaulted, outside the first's 64 KiB block.
        #expect(s.faults.userTotal.extra == 1)
        #expect(s.inferred == 0)
        #expect(s.maps.contains { $0.path == "[stack]" } && s.maps.contains { $0.path == "[vdso]" })
    }

    @Test("Two tasks faulting on one page at once: raced; one after the other returned: missing")
    func raced() throws {
        let threads = """
        10 1.000000200 clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0, stack=0x7f00, stack_size=0x1000}, 88) = 11
        10 1.000001000 --- page_fault_user {address=0x7f0000000100, ip=0x7f0000000100, error_code=0x14} ---

        """
        let racing = try check(threads + """
        10 1.000002000 --- page_fault_user {address=0x7f1000000010, ip=0x7f0000000100, error_code=0x6} ---
        11 1.000002500 --- page_fault_user {address=0x7f1000000800, ip=0x7f0000000100, error_code=0x6} ---
        """)
        #expect(racing.faults.user["anon"]?.raced == 1 && racing.faults.user["anon"]?.missing == 0)
        let after = try check(threads + """
        10 1.000002000 --- page_fault_user {address=0x7f1000000010, ip=0x7f0000000100, error_code=0x6} ---
        10 1.000002100 --- page_fault_user {address=0x7f1000003010, ip=0x7f0000000100, error_code=0x6} ---
        11 1.000002500 --- page_fault_user {address=0x7f1000000800, ip=0x7f0000000100, error_code=0x6} ---
        """)
        #expect(after.faults.user["anon"]?.raced == 0 && after.faults.user["anon"]?.missing == 1)
        let late = try check(threads + """
        10 1.000002000 --- page_fault_user {address=0x7f1000000010, ip=0x7f0000000100, error_code=0x6} ---
        11 1.000900000 --- page_fault_user {address=0x7f1000000800, ip=0x7f0000000100, error_code=0x6} ---
        """)
        #expect(late.faults.user["anon"]?.missing == 1)
    }

    @Test("Fault-around: what the host mapped around a file read is what the model maps; other sizes disagree")
    func faultAround() throws {
        // A read fault at page 0x10, then code running on page 0x1f (same 64 KiB block), then a
        // fault on page 0x20 (the next block).
        let body = """
        10 1.000001000 --- page_fault_user {address=0x7f0000010000, ip=0x7f0000010000, error_code=0x14} ---
        10 1.000002000 --- page_fault_user {address=0x7f1000000000, ip=0x7f000001f000, error_code=0x6} ---
        10 1.000003000 --- page_fault_user {address=0x7f0000020000, ip=0x7f0000020000, error_code=0x14} ---
        """
        let linux = try check(body)
        #expect(linux.faults.userTotal.matched == 3 && linux.faults.userTotal.extra == 0 && linux.faults.userTotal.missing == 0)
        #expect(linux.faults.warmedFiles == 1)
        let small = try check(body) { $0.faultAroundBytes = 4096 }
        #expect(small.faults.userTotal.extra == 1, "the host ran page 0x1f without a fault")
        let large = try check(body) { $0.faultAroundBytes = 1 << 20 }
        #expect(large.faults.userTotal.missing == 1, "the host faulted on page 0x20")
    }

    @Test("Pages the host read in while recording are not mapped by fault-around before they were added")
    func coldPages() throws {
        let body = """
        10 1.000001000 --- page_fault_user {address=0x7f0000010000, ip=0x7f0000010000, error_code=0x14} ---
        10 1.000001100 --- page_cache_add {dev=254:0, ino=0x77, index=17, pages=1} ---
        10 1.000002000 --- page_fault_user {address=0x7f0000011000, ip=0x7f0000011000, error_code=0x14} ---
        """
        let s = try check(body)
        #expect(s.faults.userTotal.matched == 2 && s.faults.userTotal.missing == 0)
        #expect(s.faults.coldFiles == 1)
        // Without the insertion the page is cached from the start and mapped around page 0x10.
        let warm = try check(body.replacingOccurrences(of: "index=17", with: "index=99"))
        #expect(warm.faults.userTotal.missing == 1)
    }

    @Test("A fault with no VMA matches only when the trace shows the signal")
    func outcome() throws {
        let fault = "10 1.000001000 --- page_fault_user {address=0x10000000, ip=0x7f0000000100, error_code=0x6} ---\n"
        let silent = try check(fault)
        #expect(silent.faults.user["no VMA"]?.outcome == 1)
        let signalled = try check(fault + "10 1.000001100 --- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x10000000} ---\n")
        #expect(signalled.faults.user["no VMA"]?.matched == 1)
    }

    @Test("A fault below the stack grows it, as Linux's does")
    func stackGrowth() throws {
        let s = try check("10 1.000001000 --- page_fault_user {address=0x7ffdffffeff8, ip=0x7f0000000100, error_code=0x6} ---\n")
        #expect(s.faults.user["no VMA"]?.matched == 1)
        #expect(s.maps.first { $0.path == "[stack]" }?.start == 0x7ffdffffe000)
    }

    @Test("Hostile recorded lines (a 1 TiB file, insertions far past its end) neither crash nor exhaust memory")
    func hostile() throws {
        let text = """
        # file {dev=254:0, ino=0x99, size=1099511627776, regular=1, path="/huge"}
        10 1.000000000 execve("/bin/prog", ["prog"], 0x7ffd /* 1 vars */) = 0
        10 1.000000000 --- exec_map {start=0x7e0000000000, end=0x7f0000000000, prot=r--p, offset=0x0, dev=254:0, ino=153, path="/huge"} ---
        10 1.000000100 --- page_cache_add {dev=254:0, ino=0x99, index=4503599627370000, pages=512} ---
        10 1.000000200 --- page_fault_user {address=0x7e0000001000, ip=0x7e0000001000, error_code=0x14} ---
        """
        var o = ReplayOptions()
        o.frames = 1024
        o.cacheFrames = 4096
        let r = TraceReplayer(trace: try StraceParser.parse(text), options: o)
        let s = r.run()
        #expect(s.faults.userTotal.recorded == 1)
        #expect(s.faults.unwarmedFiles == 1, "\(s.faults)")
        #expect(r.checkInvariants().isEmpty)
    }

    @Test("With execve's layout known, a call needing memory the trace never showed is a mismatch, not an inference")
    func noInferenceWithLayout() throws {
        let s = try check("10 1.000001000 mprotect(0x7f3000000000, 4096, PROT_READ) = 0\n")
        #expect(s.inferred == 0)
        #expect(s.mismatches.count == 1)
    }
}

@Suite("The gallery of recorded programs")
struct GalleryTests {
    static let traces = ["python-numpy-threads.trace", "gcc-compile.trace", "node-worker-startup.trace",
                         "xz-threads.trace", "alloc-threads.trace"]

    @Test("Each gallery program replays with no call mismatch and ≥ 95% of its faults matched, < 5% extra",
          arguments: traces, [Design.global, .perVMA615])
    func gallery(_ name: String, _ design: Design) throws {
        var o = ReplayOptions()
        o.design = design
        let s = try replay(try loadGallery(name), options: o)
        #expect(s.mismatches.isEmpty, "\(name): \(s.mismatches.prefix(3))")
        #expect(s.faults.userTotal.recorded > 1000)
        #expect(s.faults.matchedFraction >= 0.95, "\(name): \(s.faults.userTotal)")
        #expect(s.faults.extraFraction < 0.05, "\(name): \(s.faults.userTotal)")
        #expect(s.faults.unwarmedFiles == 0)
    }

    @Test("Every design checks the gcc trace's faults alike", arguments: Design.selectable)
    func everyDesign(_ d: Design) throws {
        var o = ReplayOptions()
        o.design = d
        let s = try replay(try loadGallery("gcc-compile.trace"), options: o)
        var g = ReplayOptions()
        g.design = .global
        let reference = try replay(try loadGallery("gcc-compile.trace"), options: g)
        #expect(s.faults == reference.faults)
        #expect(s.mismatches.isEmpty)
    }
}
