import ArgumentParser
import FaultlineBench
import FaultlineHarnesses
import FaultlineMM

struct Seed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed",
        abstract: "The seed scenario on two threads: a faulter in its own region beside a thread mapping and unmapping elsewhere.",
        discussion: """
        The faulter writes one byte per page of its region and MADV_DONTNEEDs it, again and again; \
        the churner maps and unmaps memory that never meets the region. Each round runs every \
        design alone (solo) and beside the churner (contended), designs interleaved. Reported per \
        design: the faulter's contended throughput as a fraction of solo (median and range over \
        rounds), the same fraction beside a thread that only computes (what sharing this machine \
        costs by itself: the ceiling for any design), the abort rate of its lockless faults \
        (aborts per fault handled), and the churner's mmap+munmap pairs per second beside the \
        faulter and as a fraction of the churner alone (a design can protect the faulter by \
        starving the churner: read both fractions). Threads are pinned to CPUs 0 and 1 when there are two.
        """
    )

    @Option(parsing: .upToNextOption, help: "Designs (default: all).")
    var designs: [Design] = Design.selectable

    @Option(help: "VMA index for global: maple, or rbtree (the other designs always use the maple tree).")
    var tree: VMATreeKind = .maple

    @Option(help: "Seconds per trial.")
    var seconds: Double = 1

    @Option(help: "Rounds.")
    var rounds: Int = 5

    @Option(help: "Faulter region in pages.")
    var pages: Int = 4096

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if seconds <= 0 || rounds < 1 || pages < 1 { throw ValidationError("--seconds, --rounds and --pages must be positive") }
    }

    func run() throws {
        var o = SeedScenario.Options()
        o.designs = designs
        o.tree = tree
        o.seconds = seconds
        o.rounds = rounds
        o.regionPages = pages
        var progress: Progress? = nil
        let rows = SeedScenario.run(o) { done, total, label in
            if progress == nil { progress = Progress(total: total) }
            progress!.step(done, label)
        }
        progress?.finish()
        if json {
            print(try encodeJSON(rows))
            return
        }
        var t: [[String]] = [["design", "faults/s alone", "beside churn", "faulter fraction", "range", "beside compute",
                              "abort rate", "churn pairs/s", "churn fraction"]]
        for r in rows {
            t.append([r.design, fmt(r.medianSolo, 0), fmt(r.medianContended, 0), fmt(r.medianFraction, 3),
                      "\(fmt(r.fractions.min()!, 3))–\(fmt(r.fractions.max()!, 3))", fmt(r.medianCPUFraction, 3),
                      fmt(r.abortRate, 3), fmt(r.medianChurn, 0), fmt(r.medianChurnFraction, 3)])
        }
        print(formatTable(t))
    }
}
