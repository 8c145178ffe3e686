import FaultlineSync

/// An mmap-locking design: which locks surround the shared mechanism, and how a fault finds,
/// pins and validates its VMA. Selected per address space at run time.
public enum Design: String, CaseIterable, Sendable {
    /// Stock Linux before 6.4: one rw-semaphore (`mmap_lock`) per address space.
    case global

    /// One line for `--help` and reports.
    public var summary: String {
        switch self {
        case .global:
            "mmap_lock rwsem: faults/madvise read, mmap/munmap/mprotect/mremap/brk write; munmap downgrades before zapping; I/O faults drop the lock and retry"
        }
    }

    /// Writers mark VMAs with `vm_lock_seq` (per-VMA locks).
    @inlinable public var usesVMALocks: Bool { false }
    /// Writers bump each changed VMA's sequence count (Dufour's SPF).
    @inlinable public var usesVMASeq: Bool { false }
    /// Writers bump the mm-wide sequence count (Lespinasse's SPF).
    @inlinable public var usesMMSeq: Bool { false }

    /// Whether the design can run on `tree` (lockless readers need the RCU-safe maple tree).
    public func allowsTree(_ tree: VMATreeKind) -> Bool {
        switch self {
        case .global: true
        }
    }
}

/// Per-address-space state that only some designs use.
public final class DesignState: @unchecked Sendable {
    public let design: Design
    init(design: Design) { self.design = design }
}
