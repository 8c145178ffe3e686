// swift-tools-version: 6.1
import PackageDescription

// Layers, arrows one way:
// CFaultline (C shim) → FaultlineSync (primitives) → FaultlineTrees (range trees)
// → FaultlineMM (address space) → FaultlineDesigns → FaultlineWorkloads / FaultlineReplay
// → FaultlineReport → faultline (CLI).
// `FAULTLINE_INVARIANTS` compiles the `_checkInvariants()` calls in (debug builds).
let invariants: [SwiftSetting] = [.define("FAULTLINE_INVARIANTS", .when(configuration: .debug))]

let package = Package(
    name: "Faultline",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "FaultlineSync", targets: ["FaultlineSync"]),
        .library(name: "FaultlineTrees", targets: ["FaultlineTrees"]),
        .library(name: "FaultlineMM", targets: ["FaultlineMM"]),
        .library(name: "FaultlineDesigns", targets: ["FaultlineDesigns"]),
        .library(name: "FaultlineWorkloads", targets: ["FaultlineWorkloads"]),
        .library(name: "FaultlineReplay", targets: ["FaultlineReplay"]),
        .library(name: "FaultlineReport", targets: ["FaultlineReport"]),
        .executable(name: "faultline", targets: ["faultline"]),
        .executable(name: "faultline-host", targets: ["faultline-host"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
    ],
    targets: [
        .target(name: "CFaultline"),
        // The differential tester's helper: runs the calls on the host kernel.
        .executableTarget(name: "faultline-host"),
        .target(name: "FaultlineSync", dependencies: ["CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineTrees", dependencies: ["FaultlineSync", "CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineMM", dependencies: ["FaultlineTrees", "FaultlineSync", "CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineDesigns", dependencies: ["FaultlineMM", "FaultlineSync", "CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineDiff", dependencies: ["FaultlineMM", "FaultlineSync"], swiftSettings: invariants),
        .target(name: "FaultlineWorkloads", dependencies: ["FaultlineMM", "FaultlineSync", "CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineReplay", dependencies: ["FaultlineWorkloads", "FaultlineMM", "FaultlineSync", "CFaultline"], swiftSettings: invariants),
        // Fuzz targets: the checks are a library (the test suite runs the corpora through them);
        // the executables are libFuzzer entries when built by Fuzz/run, corpus runners otherwise.
        .target(name: "FaultlineFuzz", dependencies: ["FaultlineReplay", "FaultlineMM"], swiftSettings: invariants),
        .executableTarget(name: "fuzz-strace", dependencies: ["FaultlineFuzz"]),
        .executableTarget(name: "fuzz-syscalls", dependencies: ["FaultlineFuzz"]),
        .target(name: "FaultlineReport", dependencies: ["FaultlineReplay", "FaultlineWorkloads", "FaultlineMM", "CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineBench", dependencies: ["FaultlineMM", "FaultlineTrees", "FaultlineSync", "CFaultline"], swiftSettings: invariants),
        .executableTarget(
            name: "faultline",
            dependencies: [
                "FaultlineBench",
                "FaultlineDesigns",
                "FaultlineDiff",
                "FaultlineWorkloads",
                "FaultlineReport",
                "FaultlineReplay",
                "faultline-host",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        .testTarget(name: "FaultlineSyncTests", dependencies: ["FaultlineSync", "CFaultline"]),
        .testTarget(name: "FaultlineMMTests", dependencies: ["FaultlineMM", "FaultlineSync", "FaultlineTrees"]),
        .testTarget(name: "FaultlineDesignsTests", dependencies: ["FaultlineDesigns", "FaultlineMM", "FaultlineSync"]),
        .testTarget(name: "FaultlineFuzzTests", dependencies: ["FaultlineFuzz"]),
        .testTarget(name: "FaultlineReplayTests", dependencies: ["FaultlineReplay", "FaultlineMM"], exclude: ["Traces"]),
        .testTarget(name: "FaultlineWorkloadsTests", dependencies: ["FaultlineWorkloads", "FaultlineReport", "FaultlineReplay", "FaultlineMM"]),
        .testTarget(
            name: "FaultlineTreesTests",
            dependencies: ["FaultlineTrees", "FaultlineSync", "CFaultline",
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
    ]
)
