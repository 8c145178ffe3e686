import FaultlineSync

/// A snapshot of what a design did: faults, lockless successes, aborts by reason, fallbacks,
/// retries, and waits on each kind of lock. Subtract two snapshots for an interval.
public struct DesignCounters: Sendable, Codable, Equatable {
    /// Faults that installed or fixed a PTE.
    public var faults: UInt64 = 0
    /// Faults completed without `mmap_lock` (speculatively, under a VMA lock, or under a range
    /// lock with the short lock dropped).
    public var locklessSuccesses: UInt64 = 0
    public var aborts: UInt64 = 0
    /// Aborts by `AbortReason` name.
    public var abortReasons: [String: UInt64] = [:]
    public var fallbacks: UInt64 = 0
    /// Faults retried after dropping a lock for I/O (`VM_FAULT_RETRY`).
    public var retries: UInt64 = 0
    public var majorFaults: UInt64 = 0
    public var mmapLockAcquisitions: UInt64 = 0
    public var mmapLockContended: UInt64 = 0
    public var mmapLockWaitNs: UInt64 = 0
    public var vmaLockAcquisitions: UInt64 = 0
    public var vmaLockContended: UInt64 = 0
    public var vmaLockWaitNs: UInt64 = 0
    public var rangeLockContended: UInt64 = 0
    public var rangeLockWaitNs: UInt64 = 0
    public var mapsVMAs: UInt64 = 0
    public var mapsFallbacks: UInt64 = 0
    /// TLB shootdowns (`flush_tlb_range` after permissions were taken away).
    public var tlbFlushes: UInt64 = 0

    public init() {}

    /// In JSON, `locklessSuccesses` is `speculativeSuccesses`: faults completed without
    /// `mmap_lock`, speculatively or under a VMA or range lock.
    enum CodingKeys: String, CodingKey {
        case faults, locklessSuccesses = "speculativeSuccesses", aborts, abortReasons, fallbacks, retries, majorFaults
        case mmapLockAcquisitions, mmapLockContended, mmapLockWaitNs, vmaLockAcquisitions, vmaLockContended, vmaLockWaitNs
        case rangeLockContended, rangeLockWaitNs, mapsVMAs, mapsFallbacks, tlbFlushes
    }

    /// Speculative/lockless attempts that aborted, per fault handled.
    public var abortRate: Double { faults == 0 ? 0 : Double(aborts) / Double(faults) }

    /// The plain counters, for arithmetic over all of them (key paths are immutable values).
    nonisolated(unsafe) static let fields: [WritableKeyPath<DesignCounters, UInt64>] = [
        \.faults, \.locklessSuccesses, \.aborts, \.fallbacks, \.retries, \.majorFaults,
        \.mmapLockAcquisitions, \.mmapLockContended, \.mmapLockWaitNs,
        \.vmaLockAcquisitions, \.vmaLockContended, \.vmaLockWaitNs,
        \.rangeLockContended, \.rangeLockWaitNs, \.mapsVMAs, \.mapsFallbacks, \.tlbFlushes,
    ]

    public static func + (a: DesignCounters, b: DesignCounters) -> DesignCounters {
        var d = DesignCounters()
        for f in fields { d[keyPath: f] = a[keyPath: f] &+ b[keyPath: f] }
        d.abortReasons = a.abortReasons.merging(b.abortReasons) { $0 &+ $1 }
        return d
    }

    public static func - (a: DesignCounters, b: DesignCounters) -> DesignCounters {
        var d = DesignCounters()
        for f in fields { d[keyPath: f] = a[keyPath: f] &- b[keyPath: f] }
        for (k, v) in a.abortReasons { d.abortReasons[k] = v &- (b.abortReasons[k] ?? 0) }
        return d
    }
}

extension AbortReason {
    public var name: String {
        switch self {
        case .seqChanged: "seq-changed"
        case .vmaChanged: "vma-changed"
        case .lockContended: "lock-contended"
        case .detached: "detached"
        case .notAnonymous: "not-anonymous"
        case .noAnonVMA: "no-anon-vma"
        case .noVMA: "no-vma"
        case .noPageTable: "no-page-table"
        case .pteChanged: "cow-refused"
        }
    }
}

extension AddressSpace {
    /// The design's counters now (sums over threads; racy while threads run).
    public var designCounters: DesignCounters {
        var c = DesignCounters()
        let s = stats.sums()
        func v(_ k: MMStat) -> UInt64 { s[k.rawValue] }
        c.faults = v(.faults)
        c.locklessSuccesses = v(.speculativeSuccesses)
        c.aborts = v(.aborts)
        for r in AbortReason.allCases { c.abortReasons[r.name] = v(r.stat) }
        c.fallbacks = v(.fallbacks)
        c.retries = v(.retries)
        c.majorFaults = v(.majorFaults)
        c.mapsVMAs = v(.mapsVMAs)
        c.mapsFallbacks = v(.mapsFallbacks)
        c.tlbFlushes = v(.tlbFlushes)
        let l = lockStats.sums()
        c.mmapLockAcquisitions = l[RWSemStat.readAcquired.rawValue] &+ l[RWSemStat.writeAcquired.rawValue]
        c.mmapLockContended = l[RWSemStat.readContended.rawValue] &+ l[RWSemStat.writeContended.rawValue]
        c.mmapLockWaitNs = l[RWSemStat.readWaitNs.rawValue] &+ l[RWSemStat.writeWaitNs.rawValue]
        let vl = designState.vmaLockStats.sums()
        c.vmaLockAcquisitions = vl[RWSemStat.readAcquired.rawValue] &+ vl[RWSemStat.writeAcquired.rawValue]
        c.vmaLockContended = vl[RWSemStat.readContended.rawValue] &+ vl[RWSemStat.writeContended.rawValue]
        c.vmaLockWaitNs = vl[RWSemStat.readWaitNs.rawValue] &+ vl[RWSemStat.writeWaitNs.rawValue]
        let r = designState.rangeWaits.sums()
        c.rangeLockContended = r[0]
        c.rangeLockWaitNs = r[1]
        return c
    }
}
