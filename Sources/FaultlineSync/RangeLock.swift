/// Read or write, as for `range_read_lock()` / `range_write_lock()`.
public enum RangeLockMode: Sendable, Hashable {
    case read, write
}

/// A reader/writer range lock: holders of overlapping ranges exclude each other unless both
/// read; holders of disjoint ranges never wait for each other.
///
/// Ranges are half-open and must not be empty. `lock` returns a handle that `unlock` takes
/// back; a handle is released exactly once.
public protocol RangeLock: AnyObject, Sendable {
    associatedtype Handle

    /// Blocks until `range` is held in `mode`.
    func lock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle
    /// Takes `range` if that needs no waiting; nil otherwise.
    func tryLock(_ range: Range<UInt64>, mode: RangeLockMode) -> Handle?
    /// Releases what `lock`/`tryLock` returned.
    func unlock(_ handle: Handle)
}
