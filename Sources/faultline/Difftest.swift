import ArgumentParser
import FaultlineDiff
import FaultlineMM
import Foundation

struct Difftest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "difftest",
        abstract: "Run random mmap/munmap/mprotect/mremap/madvise/mseal/brk/ftruncate/fork sequences, with loads and stores, on the host kernel and on the model, and compare.",
        discussion: """
        Each sequence runs in a fresh helper process (faultline-host) that walls off everything \
        outside a 64 GiB window, so mappings whose address the kernel chooses land in it; the \
        model mirrors the helper's layout. Loads and stores run among the calls (the helper \
        catches SIGSEGV and SIGBUS and reports the signal and its code). After a fork both \
        processes stay alive and the sequence moves between them now and then. After every step the \
        result (value or errno, the byte loaded, or the signal), the maps lines of the window \
        and the heap (range, permissions, offset, path), every page's pagemap entry (present, \
        file or shmem, mapped once) and each window VMA's smaps Rss, Anonymous, LazyFree, Locked and Swap must agree. \
        A disagreement is shrunk to a minimal sequence and printed in strace syntax. A sequence \
        that diverges is run again first: a disagreement is one the host repeats; one it does \
        not (the rerun agrees and the model answers that step as before) is the host varying \
        (a page another kernel thread held locked, say), printed whole and not counted unless \
        --strict. \
        Exit status 1 on any disagreement.
        """
    )

    @Option(help: "Sequences to run.")
    var sequences: Int = 100

    @Option(help: "Seed of the first sequence (sequence i uses seed + i).")
    var seed: UInt64 = 1

    @Option(help: "Calls per sequence (loads and stores come on top).")
    var steps: Int = 40

    @Option(help: "Percent of steps that are loads or stores (0: calls only).")
    var accesses: Int = 45

    @Option(help: "Path of the faultline-host helper (default: next to this executable).")
    var helper: String?

    @Option(help: "Stop after this many disagreements.")
    var maxFailures: Int = 5

    @Flag(help: "Count a divergence the host did not repeat when run again as a disagreement too (by default it is printed under 'run again' and not counted).")
    var strict = false

    @Flag(help: "Print every sequence.")
    var verbose = false

    @Option(help: "Design the model runs under.")
    var design: Design = .global

    @Option(help: "How the model's maps are read: locked or lockless.")
    var maps: MapsReader = .locked

    @Option(help: "VMA index: maple, or rbtree (global only).")
    var tree: VMATreeKind = .maple

    func validate() throws {
        if sequences < 1 || steps < 1 { throw ValidationError("--sequences and --steps must be positive") }
        if !(0...90).contains(accesses) { throw ValidationError("--accesses must be 0…90 (percent of steps)") }
        if !design.allowsTree(tree) { throw ValidationError("\(design.rawValue) needs the maple tree (its readers take no lock)") }
    }

    func run() throws {
        let path = helper ?? siblingExecutable("faultline-host")
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ValidationError("helper not found at \(path); build it (swift build) or pass --helper")
        }
        let runner = try DiffRunner(helperPath: path)
        runner.design = design
        runner.mapsReader = maps
        runner.tree = tree
        var failures = 0
        var ran = 0
        // Off a terminal, a line every 10 s: a 10,000-sequence run is an hour of lines otherwise.
        let progress = Progress(total: sequences, minInterval: 10)
        for i in 0..<sequences {
            let s = seed &+ UInt64(i)
            let calls = runner.generate(seed: s, calls: steps, accessPercent: accesses)
            ran += 1
            progress.step(i, "sequence seed \(s), \(failures) disagreements")
            if verbose {
                print("sequence seed \(s):")
                for c in calls { print("  " + c.description) }
            }
            let varied = runner.hostVariations.count
            guard let d = try runner.run(calls) else {
                if strict && runner.hostVariations.count > varied {
                    failures += 1
                    progress.finish()
                    print("disagreement in sequence seed \(s) at step \(runner.hostVariations.last!.index + 1), which the host did not repeat when run again (--strict counts it; not shrunk):")
                    print(runner.hostVariations.last!.description)
                    if failures >= maxFailures { break }
                }
                continue
            }
            failures += 1
            progress.finish()
            let small = try runner.shrink(calls, d)
            print("disagreement in sequence seed \(s) at step \(d.index + 1); shrunk to \(small.index + 1) steps:")
            print(small.description)
            if failures >= maxFailures { break }
        }
        progress.finish()
        print("\(ran) sequences, \(failures) disagreements (design \(design.rawValue), \(maps.rawValue) maps, \(accesses)% loads and stores)")
        // What the host answered, so a reader sees what the agreement covered.
        for (name, outcomes) in runner.coverage.sorted(by: { $0.key < $1.key }) {
            let total = outcomes.values.reduce(0, +)
            let parts = outcomes.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("  \(name): \(total) (\(parts))")
        }
        print("  huge pages (model, sequences that agreed): \(runner.thpFaults) THPs faulted, \(runner.thpZeroFaults) huge zero page faults, \(runner.thpSplits) huge PMDs split, \(runner.thpCollapses) collapsed by MADV_COLLAPSE, \(runner.thpFallbacks) fallbacks to small pages")
        if runner.punchReaimed > 0 {
            print("  not generated: \(runner.punchReaimed) MADV_REMOVE over a shared file mapping (a punched last page near EOF comes back differently on the host, seed 15005; not understood yet); other advice drawn instead")
        }
        if runner.eofTailReaimed > 0 {
            print("  not generated: \(runner.eofTailReaimed) stores past EOF into the last page of a shared file mapping (writeback zeroes them whenever the host's flusher runs); loads made instead")
        }
        if runner.thpReaimed > 0 {
            print("  not generated: \(runner.thpReaimed) loads, stores or advice that would leave a PTE-mapped 2 MiB in a VM_HUGEPAGE VMA, which the host's khugepaged collapses when it likes (the model has no khugepaged yet); drawn again elsewhere")
        }
        if runner.collapseReaimed > 0 {
            print("  not generated: \(runner.collapseReaimed) MADV_COLLAPSE over file or shmem memory (page-cache collapse is not modelled: the model refuses with EINVAL); other advice drawn instead")
        }
        if runner.khugepagedReruns > 0 {
            print("  rerun: \(runner.khugepagedReruns) diverging runs during which the host's khugepaged collapsed memory (its global pages_collapsed moved); \(runner.khugepagedGivenUp) sequences given up after three such runs, not compared")
        }
        if !runner.hostVariations.isEmpty {
            print("  run again: \(runner.hostVariations.count) divergences the host did not repeat (run again, the sequence agreed throughout and the model answered the step as before), not counted as disagreements; each as first seen:")
            for d in runner.hostVariations {
                print(d.description.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))
            }
        }
        // Left out by construction, not by a redraw: said on every run all the same.
        print("  never generated: mlockall(MCL_CURRENT) (it would lock the helper's own executable, libc and stack, which the model mirrors by permissions and names only)")
        if failures > 0 { throw ExitCode(1) }
    }
}

/// A file next to the running executable.
func siblingExecutable(_ name: String) -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent + "/" + name
}
