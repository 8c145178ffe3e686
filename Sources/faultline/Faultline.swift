import ArgumentParser

@main
struct Faultline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "faultline",
        abstract: "A Linux-faithful address space in user space, and a lab for mmap-locking designs.",
        subcommands: [Compare.self, Calibrate.self, ResultsCommand.self, Bench.self, Difftest.self, RecordCommand.self, ReplayCommand.self, Run.self, Stress.self, Seed.self, CowRaceCommand.self]
    )
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Micro-benchmarks of the building blocks.",
        subcommands: [BenchLocks.self, BenchTrees.self, BenchFault.self]
    )
}
