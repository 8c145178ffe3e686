/// A log-linear latency histogram in the manner of HdrHistogram: exact below 128 ns, then 64
/// sub-buckets per power of two (under 1.6% relative error) up to 2^40 ns. Each thread records
/// into its own; the harness merges them. Recording is an index computation and an increment.
public struct LatencyHistogram: Sendable {
    public private(set) var counts: [UInt64]
    public private(set) var total: UInt64 = 0
    public private(set) var maxValue: UInt64 = 0

    static let linear = 128
    static let subBuckets = 64
    static let maxShift = 34
    static let bucketCount = linear + maxShift * subBuckets

    public init() { counts = Array(repeating: 0, count: Self.bucketCount) }

    static func index(_ v: UInt64) -> Int {
        if v < UInt64(linear) { return Int(v) }
        let msb = 63 - v.leadingZeroBitCount
        let shift = min(msb - 6, maxShift)
        let mantissa = min(Int(v >> UInt64(shift)), 2 * subBuckets - 1)
        return linear + (shift - 1) * subBuckets + mantissa - subBuckets
    }

    /// The middle of bucket `i`.
    static func value(at i: Int) -> UInt64 {
        if i < linear { return UInt64(i) }
        let k = i - linear
        let shift = UInt64(k / subBuckets + 1)
        let m = UInt64(k % subBuckets + subBuckets)
        return m << shift + (1 << shift) / 2
    }

    @inline(__always)
    public mutating func record(_ ns: UInt64) {
        counts[Self.index(ns)] &+= 1
        total &+= 1
        if ns > maxValue { maxValue = ns }
    }

    public mutating func merge(_ o: LatencyHistogram) {
        for i in 0..<counts.count { counts[i] &+= o.counts[i] }
        total &+= o.total
        maxValue = max(maxValue, o.maxValue)
    }

    /// The value at `q` (0...1) of the recorded distribution; 0 when empty.
    public func percentile(_ q: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        if q >= 1 { return maxValue }
        let rank = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= max(rank, 1) { return min(Self.value(at: i), maxValue) }
        }
        return maxValue
    }

    /// p50, p90, p99, p99.9, max.
    public var summary: LatencySummary {
        LatencySummary(p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99),
                       p999: percentile(0.999), max: maxValue, samples: total)
    }

    /// (percentile, ns) points for a percentile curve: 0, 50, 75, 90, 95, 99, 99.5, 99.9,
    /// 99.95, 99.99, max.
    public var curve: [[Double]] {
        [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0].map { [$0 * 100, Double(percentile($0))] }
    }
}

/// The latency percentiles a report shows, in ns.
public struct LatencySummary: Sendable, Codable, Equatable {
    public var p50: UInt64
    public var p90: UInt64
    public var p99: UInt64
    public var p999: UInt64
    public var max: UInt64
    public var samples: UInt64
}
