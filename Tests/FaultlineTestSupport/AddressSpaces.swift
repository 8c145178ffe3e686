import FaultlineMM
import CFaultline
import Synchronization
import Glibc
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

/// A writer started from inside a fault, through the fault hook: at `stage`, for a fault at
/// `address`, once, `write` runs on a new thread and the fault waits for it (up to 200 ms:
/// under a design that excludes the writer, it waits for this fault instead, so the fault
/// goes on without it). `attach` the address space once made; `finish` joins the writer.
public final class WriterInFault: @unchecked Sendable {
    private let mm = UnsafeMutablePointer<AddressSpace?>.allocate(capacity: 1)
    private let writer = UnsafeMutablePointer<pthread_t?>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<Atomic<Bool>>.allocate(capacity: 1)
    private let stage: FaultStage
    private let address: UInt64
    private let write: @Sendable (AddressSpace) -> Void

    public init(at stage: FaultStage, address: UInt64, _ write: @escaping @Sendable (AddressSpace) -> Void) {
        self.stage = stage
        self.address = address
        self.write = write
        mm.initialize(to: nil)
        writer.initialize(to: nil)
        done.initialize(to: Atomic(false))
    }

    deinit {
        mm.deallocate()
        writer.deallocate()
        done.deallocate()
    }

    /// The hook to put in `Configuration.faultHook`.
    public var hook: @Sendable (FaultStage, UInt64) -> Void {
        { [self] stage, address in
            guard stage == self.stage, address == self.address, writer.pointee == nil, let space = mm.pointee else { return }
            let write = self.write, done = Shared(self.done)
            writer.pointee = Threads.spawn {
                write(space)
                done.value.pointee.store(true, ordering: .releasing)
            }
            let t0 = fl_now_ns()
            while !self.done.pointee.load(ordering: .acquiring) && fl_now_ns() &- t0 < 200_000_000 { fl_sleep_ns(1_000_000) }
        }
    }

    public func attach(_ space: AddressSpace) { mm.pointee = space }

    /// Joins the writer (if the hook ran) and lets the address space go; whether it ran.
    @discardableResult
    public func finish() -> Bool {
        let ran = writer.pointee != nil
        if let t = writer.pointee { Threads.join(t) }
        mm.pointee = nil
        return ran
    }
}
