import FaultlineMM
import FaultlineSync

// Helpers the test targets share (address spaces, stress loops, recorded traces).

public let page = Linux.pageSize
public let rw: Prot = [.read, .write]
public let anonPrivate: MapFlags = [.private, .anonymous]
public let anonShared: MapFlags = [.shared, .anonymous]

/// A fresh address space for a design, with an optional configuration tweak.
public func makeSpace(_ design: Design, frames: Int = 8192, _ tweak: (inout AddressSpace.Configuration) -> Void = { _ in }) -> AddressSpace {
    var cfg = AddressSpace.Configuration()
    tweak(&cfg)
    return AddressSpace(system: MMSystem(frames: frames), design: design, configuration: cfg)
}

/// The maps lines as `start-end perms offset path` strings, relative to `base` in pages
/// where that makes a test readable.
public func layout(_ mm: AddressSpace) -> [String] {
    mm.mapsLines().filter { $0.path != "[heap]" }.map { $0.comparable }
}

public func line(_ start: UInt64, _ end: UInt64, _ perms: String, _ offset: UInt64 = 0, _ path: String = "") -> String {
    MapsLine(start: start, end: end, perms: perms, offset: offset, path: path).comparable
}

extension Result {
    /// The value; traps with the error (tests only).
    public func must() -> Success {
        switch self {
        case .success(let v): return v
        case .failure(let e): fatalError("unexpected \(e)")
        }
    }
}
