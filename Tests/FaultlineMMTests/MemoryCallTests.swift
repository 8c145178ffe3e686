import FaultlineMM
import FaultlineSync
import FaultlineTestSupport
import Testing

/// The one vocabulary of calls: strace syntax both ways, the model and the host kernel.
@Suite struct MemoryCallTests {
    /// Random calls of every kind, flags with unknown bits included.
    static func randomCalls(_ n: Int, seed: UInt64) -> [MemoryCall] {
        var rng = SplitMix64(seed: seed)
        func r(_ m: UInt64) -> UInt64 { rng.next() % m }
        func addr() -> UInt64 { r(4) == 0 ? 0 : 0x7f00_0000_0000 + r(1 << 20) * 4096 + (r(8) == 0 ? r(4096) : 0) }
        var calls: [MemoryCall] = []
        for _ in 0..<n {
            switch r(11) {
            case 0:
                let fd: FileDescriptor = r(2) == 0 ? .none : FileDescriptor(Int32(r(40)), path: r(2) == 0 ? nil : "/tmp/f,\(r(9)) (x)")
                let flags = MapFlags(rawValue: UInt32(truncatingIfNeeded: r(1 << 32)) & ~(0x3f << 26) | (r(3) == 0 ? 21 << 26 : 0))
                calls.append(.mmap(addr: addr(), length: r(1 << 24), prot: Prot(rawValue: UInt32(r(64))), flags: flags, fd: fd,
                                   offset: r(4) * 4096))
            case 1: calls.append(.munmap(addr: addr(), length: r(1 << 30)))
            case 2: calls.append(.mprotect(addr: addr(), length: r(1 << 20), prot: Prot(rawValue: UInt32(r(8)) | (r(2) == 0 ? 0x0100_0000 : 0))))
            case 3:
                let f = MremapFlags(rawValue: UInt32(r(16)))
                calls.append(.mremap(addr: addr(), oldLength: r(1 << 20), newLength: r(1 << 20), flags: f,
                                     newAddr: f.contains(.fixed) || f.contains(.dontUnmap) ? addr() : 0))
            case 4: calls.append(.madvise(addr: addr(), length: r(1 << 20), advice: Int32(truncatingIfNeeded: Int64(r(120)) - 10)))
            case 5: calls.append(.brk(addr: addr()))
            case 6: calls.append(.clone(flags: CloneFlags(rawValue: r(1 << 32) & ~0xff | [0, 17, 10][Int(r(3))])))
            case 7: calls.append(.execve(path: "/bin/a \"b\"\\c\n\(r(100))"))
            case 8: calls.append(.mseal(addr: addr(), length: r(1 << 20), flags: r(4) == 0 ? r(16) : 0))
            case 9:
                let n = Int32(r(40)) - 2
                let fd = FileDescriptor(n, path: n < 0 || r(2) == 0 ? nil : "/tmp/t\(r(9))")   // strace shows no path for a bad one
                calls.append(.ftruncate(fd: fd, length: r(3) == 0 ? rng.next() : r(1 << 30)))
            default: calls.append(.exit(group: r(2) == 0))
            }
        }
        return calls
    }

    @Test("Every call renders to strace syntax and reads back as itself")
    func straceRoundTrip() throws {
        for call in Self.randomCalls(2000, seed: 7) {
            let text = call.strace()
            #expect(try MemoryCall(strace: text) == call, "\(text)")
            let withResult = call.strace(result: SyscallResult(errno: .ENOMEM))
            #expect(try MemoryCall(strace: withResult) == call, "\(withResult)")
        }
    }

    @Test("strace's own lines decode, with the names strace prints")
    func straceLines() throws {
        let m = try MemoryCall(strace: "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, -1, 0) = 0x7f3a2c000000")
        #expect(m == .mmap(addr: 0, length: 8192, prot: [.read, .write], flags: [.private, .anonymous, .stack], fd: .none, offset: 0))
        #expect(m.strace(result: SyscallResult(value: 0x7f3a_2c00_0000))
                == "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, -1, 0) = 0x7f3a2c000000")
        let f = try MemoryCall(strace: "mmap2(0x1000, 4096, PROT_READ, MAP_SHARED|MAP_FIXED, 3</usr/lib/x>, 0x2)")
        #expect(f == .mmap(addr: 0x1000, length: 4096, prot: .read, flags: [.shared, .fixed], fd: FileDescriptor(3, path: "/usr/lib/x"), offset: 0x2000))
        #expect(try MemoryCall(strace: "vfork()") == .clone(flags: [.vm, .vfork, .sigchld]))
        #expect(try MemoryCall(strace: "fork()") == .fork)
        #expect(try MemoryCall(strace: "clone3({flags=CLONE_VM|CLONE_FS|CLONE_THREAD, exit_signal=0, stack=0x7f}, 88)")
                == .clone(flags: [.vm, .fs, .thread]))
        #expect(try MemoryCall(strace: "madvise(0x1000, 4096, MADV_GUARD_INSTALL)") == .madvise(addr: 0x1000, length: 4096, advice: 102))
        #expect(try MemoryCall(strace: "pkey_mprotect(0x1000, 4096, PROT_READ, -1)") == .mprotect(addr: 0x1000, length: 4096, prot: .read))
        // strace older than mseal prints it by number.
        #expect(try MemoryCall(strace: "syscall_0x1ce(0x7f0000000000, 8192, 0) = 0") == .mseal(addr: 0x7f00_0000_0000, length: 8192, flags: 0))
        #expect(MemoryCall.mseal(addr: 0x1000, length: 4096, flags: 0).registers?.number == 462)
        #expect(try MemoryCall(strace: "ftruncate(5</memfd:pool (deleted)>, 65536) = 0")
                == .ftruncate(fd: FileDescriptor(5, path: "/memfd:pool (deleted)"), length: 65536))
        #expect(try MemoryCall(strace: "syscall_0x4d(3, -1)") == .ftruncate(fd: FileDescriptor(3), length: UInt64(bitPattern: -1)))
        #expect(MemoryCall.ftruncate(fd: FileDescriptor(3), length: 8192).registers?.arguments == [3, 8192])
        #expect(throws: MemoryCall.SyntaxError.self) { try MemoryCall(strace: "mprotect(0x1000, 4096, PROT_BOGUS)") }
        #expect(throws: MemoryCall.SyntaxError.self) { try MemoryCall(strace: "openat(AT_FDCWD, \"/x\", O_RDONLY)") }
        #expect(throws: MemoryCall.SyntaxError.self) { try MemoryCall(strace: "munmap(0x1000)") }
        #expect(try MemoryCall.decode(name: "pkey_mprotect", arguments: ["0x1000", "4096", "PROT_READ", "3"]) == nil)
    }

    @Test("Results print as strace prints them, errnos the model never returns included")
    func results() {
        #expect(SyscallResult(errno: .ENOMEM).strace(hex: true) == "-1 ENOMEM (Cannot allocate memory)")
        #expect(SyscallResult(raw: -19).strace(hex: false) == "-1 ENODEV (No such device)")
        #expect(SyscallResult(raw: -19).errno == nil && SyscallResult(raw: -19).errnoName == "ENODEV")
        #expect(SyscallResult(value: 0x7f00_0000_0000).description == "0x7f0000000000")
        #expect(MemoryCall.munmap(addr: 0x1000, length: 1).strace(result: SyscallResult(raw: 0)) == "munmap(0x1000, 1) = 0")
    }

    @Test("The same call runs on the model and on the host kernel with the same outcome")
    func modelAndHost() {
        let mm = AddressSpace(system: MMSystem(frames: 64))
        let calls: [MemoryCall] = [
            .munmap(addr: 0x1001, length: 4096),                                   // EINVAL: unaligned
            .mprotect(addr: 0x1000, length: 4096, prot: Prot(rawValue: 0x10)),      // EINVAL: unknown bit
            .madvise(addr: 0x1000, length: 4096, advice: 12345),                   // EINVAL: unknown advice
            .mmap(addr: 0, length: 0, prot: .read, flags: [.private, .anonymous], fd: .none, offset: 0),   // EINVAL: empty
            .mmap(addr: 0, length: 4096, prot: .read, flags: .private, fd: FileDescriptor(987), offset: 0), // EBADF
            .mremap(addr: 0x1000, oldLength: 4096, newLength: 8192, flags: MremapFlags(rawValue: 8), newAddr: 0), // EINVAL
            .ftruncate(fd: FileDescriptor(987), length: 0),                         // EBADF
            .ftruncate(fd: FileDescriptor(987), length: UInt64(bitPattern: -1)),    // EINVAL before the descriptor
            .clone(flags: .sigchld), .exit(group: true),                           // ENOSYS on one address space
        ]
        for c in calls {
            let model = c.run(on: mm)
            let host = c.runOnHost()
            #expect(model == host, "\(c.strace()): model \(model), host \(host)")
            #expect(!model.succeeded)
        }
        // A mapping made and removed on both: the host's address is its own, the results agree.
        let map = MemoryCall.mmap(addr: 0, length: 8192, prot: [.read, .write], flags: [.private, .anonymous], fd: .none, offset: 0)
        let h = map.runOnHost(), m = map.run(on: mm)
        #expect(h.succeeded && m.succeeded)
        #expect(MemoryCall.munmap(addr: h.value, length: 8192).runOnHost() == MemoryCall.munmap(addr: m.value, length: 8192).run(on: mm))
        #expect(MemoryCall.munmap(addr: h.value, length: 8192).registers?.number == 11)
        #expect(MemoryCall.fork.registers == nil && MemoryCall.fork.hostCommand == "fork")
    }
}
