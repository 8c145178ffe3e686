import FaultlineSync

/// Lespinasse's fine-grained locking with the Kogan–Dice–Issa list range lock.
public enum RangeDesign: RangeLockedDesign {
    public static let summary = "short lock for the VMA tree + list range lock for the operation's range; faults read-lock their page"
    public static func makeState() -> DesignState { DesignState(listLock: ListRangeLock()) }
}
