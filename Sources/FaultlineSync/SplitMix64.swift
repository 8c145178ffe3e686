/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, reproducible generator for per-thread
/// randomness in stress tests, workloads and the differential tester's call generator.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `0..<n` (modulo bias is irrelevant at these sizes).
    @inlinable
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }

    /// True `percent` times in a hundred.
    @inlinable
    public mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
}
