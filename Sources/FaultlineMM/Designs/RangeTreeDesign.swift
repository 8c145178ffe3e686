import FaultlineSync

/// Lespinasse's fine-grained locking with the interval-tree range lock (Kara/Bueso, FIFO
/// among overlapping requests) as the baseline.
public enum RangeTreeDesign: RangeLockedDesign {
    public static let summary = "short lock for the VMA tree + interval-tree range lock (FIFO); faults read-lock their page"
    public static func makeState() -> DesignState { DesignState(treeLock: TreeRangeLock()) }
}
