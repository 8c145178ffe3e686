// swift-tools-version: 6.1
import PackageDescription

// An emulator's or sandbox's view of Faultline: the address space as a library, by path.
let package = Package(
    name: "EmbedAddressSpace",
    dependencies: [.package(name: "Faultline", path: "../..")],
    targets: [
        .executableTarget(name: "EmbedAddressSpace", dependencies: [.product(name: "FaultlineMM", package: "Faultline")]),
    ]
)
