import ArgumentParser
import FaultlineBench
import FaultlineMM
import FaultlineWorkloads
import Foundation

struct BenchFault: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault",
        abstract: "ns per anonymous write fault in the model, beside zeroing a cold frame and the host kernel's fault.",
        discussion: """
        Each repetition maps a fresh region in the model and writes one byte per page through \
        access() (every access is a fault: an anonymous page, zeroed); then zeroes the same \
        number of cold 4 KiB pages of an already-backed area (the floor: a fault cannot be \
        cheaper than clearing its frame); then does the same writes on a real mapping of the \
        host kernel. Reported: medians and the model/floor ratio.
        """
    )

    @Option(help: "Region size in MiB.")
    var mib: UInt64 = 128

    @Option(help: "Repetitions.")
    var reps: Int = 5

    @Option(help: "Design.")
    var design: String = Design.global.rawValue

    @Option(help: "Which memory cgroup the model charges its pages to: none (the library's default) or host (a chain as deep as this process's, as compare and calibrate charge).")
    var memcg: MemcgMode = .none

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if mib < 1 || reps < 1 { throw ValidationError("--mib and --reps must be positive") }
        if Design(rawValue: design) == nil {
            throw ValidationError("unknown design \(design); choose from \(Design.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let bytes = mib << 20
        let system = FaultBenchmark.makeSystem(bytes: bytes)
        let charged = memcg.make()
        if let m = charged.memcg { system.attach(memcg: m) }
        let zero = FaultBenchmark.makeZeroArea(bytes: bytes)
        let d = Design(rawValue: design)!
        var samples: [FaultSample] = []
        for r in 0..<reps {
            progressLine("rep \(r + 1)/\(reps)")
            samples.append(FaultBenchmark.sample(design: d, bytes: bytes, system: system, zeroArea: zero))
        }
        progressLine(nil)
        func med(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
        let model = med(samples.map(\.modelFaultNs))
        let floor = med(samples.map(\.zeroFrameNs))
        let host = med(samples.map(\.hostFaultNs))
        if json {
            struct Out: Codable { var design: String; var mib: UInt64; var samples: [FaultSample]; var modelFaultNs: Double; var zeroFrameNs: Double; var hostFaultNs: Double; var ratioToFloor: Double }
            print(try encodeJSON(Out(design: design, mib: mib, samples: samples, modelFaultNs: model, zeroFrameNs: floor, hostFaultNs: host, ratioToFloor: model / floor)))
            return
        }
        print(formatTable([
            ["", "ns per page (median of \(reps))", "min–max"],
            ["model anonymous write fault (\(design))", fmt(model, 1), "\(fmt(samples.map(\.modelFaultNs).min()!, 1))–\(fmt(samples.map(\.modelFaultNs).max()!, 1))"],
            ["zeroing a cold 4 KiB frame (floor)", fmt(floor, 1), "\(fmt(samples.map(\.zeroFrameNs).min()!, 1))–\(fmt(samples.map(\.zeroFrameNs).max()!, 1))"],
            ["host kernel first-touch write fault", fmt(host, 1), "\(fmt(samples.map(\.hostFaultNs).min()!, 1))–\(fmt(samples.map(\.hostFaultNs).max()!, 1))"],
        ]))
        print("model / floor = \(fmt(model / floor, 2))×, model / host kernel = \(fmt(model / host, 2))×; memory cgroup charged: \(charged.description)")
    }
}
