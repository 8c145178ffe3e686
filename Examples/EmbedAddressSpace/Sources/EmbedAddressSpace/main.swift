// Drives a Faultline address space through its public API, as an emulator that keeps its
// guest's memory in Faultline would: map, touch (faults), fork, protect, read the maps, unmap.
// Each step checks what Linux would do; any difference exits with status 1.
import FaultlineMM
#if canImport(Glibc)
import Glibc
#endif

var failures = 0
@MainActor func check(_ ok: Bool, _ what: String) {
    print((ok ? "ok    " : "FAIL  ") + what)
    if !ok { failures += 1 }
}

// Frames are shared by every address space of a system (a machine's RAM).
let system = MMSystem(frames: 4096)
// Any design runs the same semantics; per-VMA locks are what Linux 6.18 runs.
let parent = AddressSpace(system: system, design: .perVMA)

// Calls speak the one vocabulary: the same values run on the model or the host kernel.
let map = MemoryCall.mmap(addr: 0, length: 4 * Linux.pageSize, prot: [.read, .write], flags: [.private, .anonymous],
                          fd: .none, offset: 0)
let mapped = map.run(on: parent)
check(mapped.succeeded, map.strace(result: mapped))
let base = mapped.value

// A store faults the page in (a zeroed anonymous frame); a load reads it back.
check(parent.store(base, 42).succeeded, "store 42 at the first page (a write fault)")
check(parent.load(base) == .success(42), "load it back")
check(parent.load(base + Linux.pageSize) == .success(0), "an untouched page reads as zero")

// fork: the child gets a copy-on-write copy; each side sees its own writes.
let child = parent.fork()
check(child.store(base, 7).succeeded, "the child writes its copy")
check(parent.load(base) == .success(42) && child.load(base) == .success(7), "parent 42, child 7 (copy-on-write)")

// mprotect to read-only: a store now fails as SIGSEGV/SEGV_ACCERR would.
check(parent.mprotect(base, Linux.pageSize, .read).succeeded, "mprotect(PROT_READ) the first page")
check(parent.store(base, 1).error == .segvAccErr, "a store to it is SEGV_ACCERR")

// /proc/pid/maps: the mprotect split the mapping in two.
let lines = parent.mapsLines().filter { $0.start >= base && $0.end <= base + 4 * Linux.pageSize }
for l in lines { print("      " + l.description) }
check(lines.map(\.perms) == ["r--p", "rw-p"], "maps shows r--p then rw-p")

// munmap: the memory is gone, an access is SEGV_MAPERR; errors are Linux's errnos.
check(parent.munmap(base, 4 * Linux.pageSize).succeeded, "munmap the whole range")
check(parent.load(base) == .failure(.segvMapErr), "a load after munmap is SEGV_MAPERR")
check(parent.munmap(base + 1, Linux.pageSize).error == .EINVAL, "munmap of an unaligned address is EINVAL")
check(child.load(base) == .success(7), "the child's copy is untouched")

if failures > 0 {
    print("\(failures) check(s) failed")
    exit(1)
}
print("all checks passed")
