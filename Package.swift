// swift-tools-version: 6.1
import PackageDescription

// Linux only: the primitives need futex(2) and membarrier(2), the differential tester runs
// its calls on the host kernel, and the model is x86-64 Linux's address space.
#if !os(Linux)
#error("Faultline builds on Linux only (futex, membarrier, the host kernel as the oracle)")
#endif

// Layers, arrows one way (each module depends only on modules above it):
// CFaultline (C shim) → FaultlineSync (primitives) → FaultlineTrees (range trees)
// → FaultlineMM (address space and its designs)
// → FaultlineHarnesses (stress, COW race, seed) | FaultlineDiff (differential tester)
//   | FaultlineReplay (strace replay) | FaultlineBench (micro-benchmarks)
// → FaultlineWorkloads (workloads and their harness; a trace's timed replay is one)
//   | FaultlineFuzz (fuzz checks)
// → FaultlineReport (compare, tables, HTML)
// → faultline (CLI), fuzz-strace / fuzz-syscalls (libFuzzer entries).
// The memory calls are one vocabulary, FaultlineMM's MemoryCall, that every layer above speaks.
// Tests share FaultlineTestSupport (address spaces, stress loops, recorded traces).
let package = Package(
    name: "Faultline",
    products: [
        .library(name: "FaultlineSync", targets: ["FaultlineSync"]),
        .library(name: "FaultlineTrees", targets: ["FaultlineTrees"]),
        .library(name: "FaultlineMM", targets: ["FaultlineMM"]),
        .library(name: "FaultlineHarnesses", targets: ["FaultlineHarnesses"]),
        .library(name: "FaultlineWorkloads", targets: ["FaultlineWorkloads"]),
        .library(name: "FaultlineReplay", targets: ["FaultlineReplay"]),
        .library(name: "FaultlineReport", targets: ["FaultlineReport"]),
        .executable(name: "faultline", targets: ["faultline"]),
        .executable(name: "faultline-host", targets: ["faultline-host"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
        // `swift package generate-documentation --target FaultlineMM` (CI builds the API docs).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .target(name: "CFaultline"),
        // The differential tester's helper: runs the calls on the host kernel.
        .executableTarget(name: "faultline-host"),
        .target(name: "FaultlineSync", dependencies: ["CFaultline"]),
        .target(name: "FaultlineTrees", dependencies: ["FaultlineSync", "CFaultline"]),
        .target(name: "FaultlineMM", dependencies: ["FaultlineTrees", "FaultlineSync", "CFaultline"]),
        .target(name: "FaultlineHarnesses", dependencies: ["FaultlineMM", "FaultlineSync", "CFaultline"]),
        .target(name: "FaultlineDiff", dependencies: ["FaultlineMM", "FaultlineSync"]),
        .target(name: "FaultlineReplay", dependencies: ["FaultlineMM", "FaultlineSync", "CFaultline"]),
        .target(name: "FaultlineWorkloads", dependencies: ["FaultlineReplay", "FaultlineMM", "FaultlineSync", "CFaultline"]),
        // Fuzz targets: the checks are a library (the test suite runs the corpora through them);
        // the executables are libFuzzer entries when built by Fuzz/run, corpus runners otherwise.
        .target(name: "FaultlineFuzz", dependencies: ["FaultlineReplay", "FaultlineMM"]),
        .executableTarget(name: "fuzz-strace", dependencies: ["FaultlineFuzz"]),
        .executableTarget(name: "fuzz-syscalls", dependencies: ["FaultlineFuzz"]),
        .target(name: "FaultlineReport", dependencies: ["FaultlineReplay", "FaultlineWorkloads", "FaultlineMM", "CFaultline"]),
        .target(name: "FaultlineBench", dependencies: ["FaultlineMM", "FaultlineTrees", "FaultlineSync", "CFaultline"]),
        .executableTarget(
            name: "faultline",
            dependencies: [
                "FaultlineBench",
                "FaultlineHarnesses",
                "FaultlineDiff",
                "FaultlineWorkloads",
                "FaultlineReport",
                "FaultlineReplay",
                "faultline-host",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        // Helpers the test targets share.
        .target(name: "FaultlineTestSupport", dependencies: ["FaultlineReplay", "FaultlineMM", "FaultlineSync", "CFaultline"],
                path: "Tests/FaultlineTestSupport"),
        .testTarget(name: "FaultlineSyncTests", dependencies: ["FaultlineSync", "CFaultline", "FaultlineTestSupport"]),
        .testTarget(name: "FaultlineMMTests", dependencies: ["FaultlineMM", "FaultlineSync", "FaultlineTrees", "FaultlineTestSupport"]),
        .testTarget(name: "FaultlineHarnessesTests", dependencies: ["FaultlineHarnesses", "FaultlineMM", "FaultlineSync"]),
        .testTarget(name: "FaultlineFuzzTests", dependencies: ["FaultlineFuzz"]),
        .testTarget(name: "FaultlineDiffTests", dependencies: ["FaultlineDiff"]),
        .testTarget(name: "FaultlineReplayTests", dependencies: ["FaultlineReplay", "FaultlineMM", "FaultlineTestSupport"], exclude: ["Traces"]),
        .testTarget(name: "FaultlineWorkloadsTests", dependencies: ["FaultlineWorkloads", "FaultlineReport", "FaultlineReplay", "FaultlineMM",
                                                                "FaultlineTestSupport"]),
        .testTarget(
            name: "FaultlineTreesTests",
            dependencies: ["FaultlineTrees", "FaultlineSync", "CFaultline",
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
    ]
)
