import CFaultline
import FaultlineMM
import FaultlineSync
import Synchronization

/// Michel Lespinasse's copy-on-write race, made deterministic with a fault hook: re-checking
/// only the VMA at the end of a speculative COW fault can install a stale copy, because the PTE
/// can go read-only → writable → read-only (ABA) while the VMA never changes.
///
/// 1. P writes page X, forks C: X is copy-on-write, shared by both.
/// 2. Thread A1 in P writes word 0 of X: a COW fault copies the page, then is held (hook).
/// 3. C unmaps X: P's page is now P's alone.
/// 4. Thread A2 in P writes word 1 of X: the page is reused in place (made writable).
/// 5. P forks again: X is write-protected again — its PTE is exactly what A1 read.
/// 6. A1 goes on and installs its copy, made before A2's write, unless the design stops it.
///
/// Designs whose faults hold `mmap_lock`, the VMA lock or the page's range make fork (5) wait
/// for A1; `spf-mmseq` sees fork's bump of the mm sequence count and retries. Lost: A2's word.
public enum CowRace {
    public struct Result: Sendable {
        public var design: Design
        public var allowSpeculativeCOW: Bool
        /// A2's write was lost.
        public var lostWrite: Bool
        /// Whether fork (step 5) finished while A1 was held.
        public var forkRanWhileHeld: Bool
        /// Invariant problems after the run (none expected, lost write or not).
        public var problems: [String]
    }

    /// Runs the scenario once under `design`.
    public static func run(design: Design, allowSpeculativeCOW: Bool = false) -> Result {
        var cfg = AddressSpace.Configuration()
        cfg.allowSpeculativeCOW = allowSpeculativeCOW
        let state = CowRaceState()
        cfg.faultHook = { stage, _ in
            guard stage == .cowCopied, state.armed.exchange(false, ordering: .acquiringAndReleasing) else { return }
            state.held.store(true, ordering: .releasing)
            while !state.release.load(ordering: .acquiring) { fl_sleep_ns(100_000) }
        }
        let system = MMSystem(frames: 4096, poison: true)
        let p = AddressSpace(system: system, design: design, configuration: cfg)
        let page = Linux.pageSize
        // Two pages, so that page tables and the anon_vma exist before the race.
        guard case .success(let x) = p.mmap(0, 2 * page, [.read, .write], [.private, .anonymous]) else {
            return Result(design: design, allowSpeculativeCOW: allowSpeculativeCOW, lostWrite: false,
                          forkRanWhileHeld: false, problems: ["mmap failed"])
        }
        _ = p.store(x, 0xAA)
        _ = p.store(x + page, 0xBB)
        let child = p.fork()

        // A1: the COW fault that will be held after its copy.
        state.armed.store(true, ordering: .releasing)
        let mm = Shared(p)
        let a1 = Threads.spawn { _ = mm.value.withByte(x, .write) { $0.storeBytes(of: 1 as UInt64, as: UInt64.self) } }
        while !state.held.load(ordering: .acquiring) { fl_sleep_ns(100_000) }

        _ = child.munmap(x, 2 * page)
        // A2 (this thread): the page is ours alone now; written in place.
        _ = p.withByte(x + 8, .write) { $0.storeBytes(of: 2 as UInt64, as: UInt64.self) }

        let box = ChildBox()
        let forker = Threads.spawn {
            box.child = mm.value.fork()
            state.forked.store(true, ordering: .releasing)
        }
        // Designs that make fork wait for A1 keep it waiting; give the others time to finish.
        let deadline = fl_now_ns() + 300_000_000
        while !state.forked.load(ordering: .acquiring) && fl_now_ns() < deadline { fl_sleep_ns(1_000_000) }
        let forkRanWhileHeld = state.forked.load(ordering: .acquiring)
        state.release.store(true, ordering: .releasing)
        Threads.join(a1)
        Threads.join(forker)

        let word0 = p.withByte(x, .read) { $0.load(as: UInt64.self) }
        let word1 = p.withByte(x + 8, .read) { $0.load(as: UInt64.self) }
        var problems: [String] = []
        if case .success(let w) = word0, w != 1 { problems.append("A1's own write lost: word 0 is \(w)") }
        let lost: Bool
        switch word1 {
        case .success(let w): lost = w != 2
        case .failure(let e): lost = true; problems.append("read back failed: \(e)")
        }
        var spaces = [p, child]
        if let c2 = box.child { spaces.append(c2) }
        problems += system.checkQuiescent(spaces)
        return Result(design: design, allowSpeculativeCOW: allowSpeculativeCOW, lostWrite: lost,
                      forkRanWhileHeld: forkRanWhileHeld, problems: problems)
    }

    /// Whether the design (as configured) is expected to lose the write.
    public static func isUnsafe(_ design: Design, allowSpeculativeCOW: Bool) -> Bool {
        design.losesCOWRace(allowSpeculativeCOW: allowSpeculativeCOW)
    }
}

final class CowRaceState: @unchecked Sendable {
    let armed = Atomic<Bool>(false)
    let held = Atomic<Bool>(false)
    let release = Atomic<Bool>(false)
    let forked = Atomic<Bool>(false)
}

final class ChildBox: @unchecked Sendable {
    var child: AddressSpace?
}
