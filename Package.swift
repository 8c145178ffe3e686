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
        .executable(name: "faultline", targets: ["faultline"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "CFaultline"),
        .target(name: "FaultlineSync", dependencies: ["CFaultline"], swiftSettings: invariants),
        .target(name: "FaultlineBench", dependencies: ["FaultlineSync", "CFaultline"], swiftSettings: invariants),
        .executableTarget(
            name: "faultline",
            dependencies: [
                "FaultlineBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        .testTarget(name: "FaultlineSyncTests", dependencies: ["FaultlineSync", "CFaultline"]),
    ]
)
