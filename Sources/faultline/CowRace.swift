import ArgumentParser
import FaultlineBench
import FaultlineHarnesses
import FaultlineMM

struct CowRaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cowrace",
        abstract: "Lespinasse's copy-on-write race, deterministically, under every design: which ones lose a write.",
        discussion: """
        P and its child share a page copy-on-write. A COW fault in P copies the page and is held; \
        the child unmaps the page; another thread of P writes it in place; P forks again, which \
        write-protects the page — its PTE is now exactly what the held fault read. Released, the \
        held fault installs its copy unless the design stops it, and the second thread's write is \
        lost. spf-vmaseq is run twice: as configured (no speculative COW of a present PTE) and \
        with speculative COW allowed, as Dufour's series did. Exit status 1 if a design that \
        should be safe loses the write, or an unsafe one does not.
        """
    )

    func run() throws {
        var rows: [[String]] = [["design", "fork ran while the fault was held", "lost write", "expected", "invariants"]]
        var wrong = 0
        var cases = (Design.selectable + [.brokenSPF]).map { ($0, false) }
        cases.insert((.spfVMASeq, true), at: cases.firstIndex { $0.0 == .spfVMASeq }! + 1)
        for (d, cow) in cases {
            let r = CowRace.run(design: d, allowSpeculativeCOW: cow)
            let unsafe = CowRace.isUnsafe(d, allowSpeculativeCOW: cow)
            if r.lostWrite != unsafe || !r.problems.isEmpty { wrong += 1 }
            rows.append([d.rawValue + (cow ? " (speculative COW)" : ""), r.forkRanWhileHeld ? "yes" : "no (waited)",
                         r.lostWrite ? "LOST" : "kept", unsafe ? "lost" : "kept",
                         r.problems.isEmpty ? "ok" : r.problems.joined(separator: "; ")])
        }
        print(formatTable(rows))
        if wrong > 0 { throw ExitCode(1) }
    }
}
