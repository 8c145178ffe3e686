import FaultlineMM
import FaultlineSync

let page = Linux.pageSize
let rw: Prot = [.read, .write]
let anonPrivate: MapFlags = [.private, .anonymous]
let anonShared: MapFlags = [.shared, .anonymous]

/// A fresh address space for a design, with an optional configuration tweak.
func makeSpace(_ design: Design, frames: Int = 8192, _ tweak: (inout AddressSpace.Configuration) -> Void = { _ in }) -> AddressSpace {
    var cfg = AddressSpace.Configuration()
    tweak(&cfg)
    return AddressSpace(system: MMSystem(frames: frames), design: design, configuration: cfg)
}

/// The maps lines as `start-end perms offset path` strings, relative to `base` in pages
/// where that makes a test readable.
func layout(_ mm: AddressSpace) -> [String] {
    mm.mapsLines().filter { $0.path != "[heap]" }.map { $0.comparable }
}

func line(_ start: UInt64, _ end: UInt64, _ perms: String, _ offset: UInt64 = 0, _ path: String = "") -> String {
    MapsLine(start: start, end: end, perms: perms, offset: offset, path: path).comparable
}

extension Result {
    /// The value; traps with the error (tests only).
    func must() -> Success {
        switch self {
        case .success(let v): return v
        case .failure(let e): fatalError("unexpected \(e)")
        }
    }
}
