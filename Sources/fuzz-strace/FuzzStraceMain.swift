import FaultlineFuzz

/// libFuzzer's entry: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    StraceFuzz.run(UnsafeBufferPointer(start: data, count: size))
    return 0
}

#if FUZZING
/// Built by Fuzz/run (-sanitize=fuzzer): SwiftPM points `main` at fuzz_strace_main.
@_cdecl("fuzz_strace_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.libFuzzerMain(argc, argv, fuzzOne)
}
#else
@main
struct Runner {
    static func main() { FuzzDriver.runFiles(StraceFuzz.run) }
}
#endif
