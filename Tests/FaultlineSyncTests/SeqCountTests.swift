import CFaultline
import FaultlineSync
import Synchronization
import FaultlineTestSupport
import Testing

/// A payload of four words written under a seqcount; a consistent snapshot has them equal.
final class SeqPayload: @unchecked Sendable {
    let seq = SeqCount()
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    init() {
        words = .allocate(capacity: 4)
        for i in 0..<4 { (words + i).initialize(to: Atomic(0)) }
    }
    deinit { words.deallocate() }

    func write(_ v: UInt64) {
        seq.writeBegin()
        for i in 0..<4 {
            words[i].store(v, ordering: .relaxed)
            dwell(3)
        }
        seq.writeEnd()
    }

    /// Returns whether an accepted snapshot was torn. `honourRetry: false` is the broken
    /// reader that trusts whatever it read.
    func readAcceptedTorn(honourRetry: Bool) -> Bool {
        while true {
            let s = seq.readBegin()
            var vals = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            vals.0 = words[0].load(ordering: .relaxed)
            vals.1 = words[1].load(ordering: .relaxed)
            vals.2 = words[2].load(ordering: .relaxed)
            vals.3 = words[3].load(ordering: .relaxed)
            if honourRetry && seq.readRetry(s) { continue }
            return !(vals.0 == vals.1 && vals.1 == vals.2 && vals.2 == vals.3)
        }
    }
}

func seqcountStress(honourRetry: Bool, seconds: Double) -> (reads: Int, torn: Int) {
    let p = SeqPayload()
    let reads = Atomic<Int>(0)
    let torn = Atomic<Int>(0)
    stress(threads: 3, seconds: seconds) { t, _ in
        if t == 0 {
            for _ in 0..<64 { p.write(UInt64.random(in: 1...UInt64.max)) }
        } else {
            for _ in 0..<64 {
                if p.readAcceptedTorn(honourRetry: honourRetry) { torn.wrappingAdd(1, ordering: .relaxed) }
                reads.wrappingAdd(1, ordering: .relaxed)
            }
        }
    }
    return (reads.load(ordering: .relaxed), torn.load(ordering: .relaxed))
}

@Suite("SeqCount")
struct SeqCountTests {
    @Test func sequenceMovesByTwoPerWrite() {
        let s = SeqCount()
        let a = s.readBegin()
        #expect(a % 2 == 0)
        s.writeBegin()
        let v1 = s.isWriting
        #expect(v1)
        let v2 = s.rawRead() % 2 == 1
        #expect(v2)
        let v3 = s.readRetry(a)
        #expect(v3)
        s.writeEnd()
        let v4 = !s.isWriting
        #expect(v4)
        let v5 = s.rawRead() == a + 2
        #expect(v5)
        let b = s.readBegin()
        let v6 = !s.readRetry(b)
        #expect(v6)
    }

    @Test func readersNeverAcceptATornPayload() {
        let r = seqcountStress(honourRetry: true, seconds: 1.0)
        #expect(r.reads > 1000)
        #expect(r.torn == 0)
    }
}

@Suite("Broken controls: seqcount")
struct BrokenControlSeqCount {
    @Test func stressCatchesReaderThatIgnoresRetry() {
        let r = seqcountStress(honourRetry: false, seconds: 1.5)
        #expect(r.torn > 0)
    }
}
