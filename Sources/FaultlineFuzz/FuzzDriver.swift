#if canImport(Glibc)
import Glibc
#endif

/// What the two fuzz executables share: handing over to libFuzzer when built by `Fuzz/run`
/// (`-sanitize=fuzzer -DFUZZING`), or running files through the check otherwise.
public enum FuzzDriver {
    public typealias Callback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

    #if FUZZING
    /// libFuzzer's driver, for executables whose `main` SwiftPM points elsewhere.
    public static func libFuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                                     _ callback: Callback) -> CInt {
        var c = argc
        var v = argv
        return LLVMFuzzerRunDriver(&c, &v, callback)
    }
    #endif

    /// Runs each file named on the command line (a corpus, or a crash to reproduce) through
    /// `check`; exit status 2 when a file cannot be read.
    public static func runFiles(_ check: (UnsafeBufferPointer<UInt8>) -> Void) {
        var n = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let f = fopen(path, "rb") else {
                print("cannot open \(path)")
                exit(2)
            }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let k = fread(&buf, 1, buf.count, f)
                if k <= 0 { break }
                bytes += buf[0..<k]
            }
            fclose(f)
            bytes.withUnsafeBufferPointer { check($0) }
            n += 1
        }
        print("\(n) inputs ran clean")
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: FuzzDriver.Callback) -> CInt
#endif
