import FaultlineFuzz
#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer's entry: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    SyscallFuzz.run(UnsafeBufferPointer(start: data, count: size))
    return 0
}

#if FUZZING
// Built with -sanitize=fuzzer: SwiftPM points main at fuzz_syscalls_main; hand over to libFuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("fuzz_syscalls_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v, fuzzOne)
}
#else
/// Without libFuzzer: runs each file named on the command line (a corpus, or a crash to
/// reproduce) through the same check.
@main
struct Runner {
    static func main() {
        var n = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let f = fopen(path, "rb") else { print("cannot open \(path)"); exit(2) }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let k = fread(&buf, 1, buf.count, f)
                if k <= 0 { break }
                bytes += buf[0..<k]
            }
            fclose(f)
            bytes.withUnsafeBufferPointer { SyscallFuzz.run($0) }
            n += 1
        }
        print("\(n) inputs ran clean")
    }
}
#endif
