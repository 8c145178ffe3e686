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
    /// The kernel's VMA_LOCK_SUCCESS / _ABORT / _RETRY / _MISS events (per-VMA designs;
    /// `MMStat.vmaLockSuccess` has the definitions).
    public var vmaLockSuccess: UInt64 = 0
    public var vmaLockAbort: UInt64 = 0
    public var vmaLockRetry: UInt64 = 0
    public var vmaLockMiss: UInt64 = 0
    /// VMAs reused at once from a SLAB_TYPESAFE_BY_RCU cache (per-vma-6.15).
    public var vmasReused: UInt64 = 0
    /// THPs mapped at fault time (`thp_fault_alloc`) and faults that wanted one and fell back
    /// to a small page (`thp_fault_fallback`).
    public var thpFaults: UInt64 = 0
    public var thpFallbacks: UInt64 = 0

    public init() {}

    /// In JSON, `locklessSuccesses` is `speculativeSuccesses`: faults completed without
    /// `mmap_lock`, speculatively or under a VMA or range lock.
    enum CodingKeys: String, CodingKey {
        case faults, locklessSuccesses = "speculativeSuccesses", aborts, abortReasons, fallbacks, retries, majorFaults
        case mmapLockAcquisitions, mmapLockContended, mmapLockWaitNs, vmaLockAcquisitions, vmaLockContended, vmaLockWaitNs
        case rangeLockContended, rangeLockWaitNs, mapsVMAs, mapsFallbacks, tlbFlushes
        case vmaLockSuccess, vmaLockAbort, vmaLockRetry, vmaLockMiss, vmasReused, thpFaults, thpFallbacks
    }

    /// Results files written before a counter existed read it as 0.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        for (field, key) in Self.fieldKeys {
            self[keyPath: field] = try c.decodeIfPresent(UInt64.self, forKey: key) ?? 0
        }
        abortReasons = try c.decodeIfPresent([String: UInt64].self, forKey: .abortReasons) ?? [:]
    }

    /// The kernel's per-VMA-lock events under their `/proc/vmstat` names, and the VMAs reused
    /// at once; nil when the design took no VMA lock.
    public var vmaLockEventsLine: String? {
        if vmaLockSuccess | vmaLockAbort | vmaLockRetry | vmaLockMiss == 0 { return nil }
        var s = "VMA lock events: vma_lock_success \(vmaLockSuccess), vma_lock_abort \(vmaLockAbort), "
            + "vma_lock_retry \(vmaLockRetry), vma_lock_miss \(vmaLockMiss)"
        if vmasReused > 0 { s += "; VMAs reused at once (SLAB_TYPESAFE_BY_RCU) \(vmasReused)" }
        return s
    }

    /// Speculative/lockless attempts that aborted, per fault handled.
    public var abortRate: Double { faults == 0 ? 0 : Double(aborts) / Double(faults) }

    /// The plain counters with their JSON keys, for arithmetic over all of them and decoding
    /// (key paths are immutable values).
    nonisolated(unsafe) static let fieldKeys: [(WritableKeyPath<DesignCounters, UInt64>, CodingKeys)] = [
        (\.faults, .faults), (\.locklessSuccesses, .locklessSuccesses), (\.aborts, .aborts),
        (\.fallbacks, .fallbacks), (\.retries, .retries), (\.majorFaults, .majorFaults),
        (\.mmapLockAcquisitions, .mmapLockAcquisitions), (\.mmapLockContended, .mmapLockContended),
        (\.mmapLockWaitNs, .mmapLockWaitNs), (\.vmaLockAcquisitions, .vmaLockAcquisitions),
        (\.vmaLockContended, .vmaLockContended), (\.vmaLockWaitNs, .vmaLockWaitNs),
        (\.rangeLockContended, .rangeLockContended), (\.rangeLockWaitNs, .rangeLockWaitNs),
        (\.mapsVMAs, .mapsVMAs), (\.mapsFallbacks, .mapsFallbacks), (\.tlbFlushes, .tlbFlushes),
        (\.vmaLockSuccess, .vmaLockSuccess), (\.vmaLockAbort, .vmaLockAbort), (\.vmaLockRetry, .vmaLockRetry),
        (\.vmaLockMiss, .vmaLockMiss), (\.vmasReused, .vmasReused),
        (\.thpFaults, .thpFaults), (\.thpFallbacks, .thpFallbacks),
    ]
    nonisolated(unsafe) static let fields = fieldKeys.map(\.0)

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
        c.vmaLockSuccess = v(.vmaLockSuccess)
        c.vmaLockAbort = v(.vmaLockAbort)
        c.vmaLockRetry = v(.vmaLockRetry)
        c.vmaLockMiss = v(.vmaLockMiss)
        c.vmasReused = v(.vmaReused)
        c.thpFaults = v(.thpFaultAlloc)
        c.thpFallbacks = v(.thpFaultFallback)
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
