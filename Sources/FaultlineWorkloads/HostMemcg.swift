import FaultlineMM
#if canImport(Glibc)
import Glibc
#endif

// Where this process's memory is charged on the host: the lab mirrors it (`MemcgMode.host`).
extension MemCgroup {
    /// The memory cgroup this process runs in on the host: its controller's version and its
    /// path from the root (`/proc/self/cgroup`: the v1 line naming `memory`, else the v2 line
    /// if the unified hierarchy has the controller), or nil when memory is not controlled.
    public struct HostPlacement: Equatable, Sendable {
        public var version: Int
        public var path: String
        /// Levels charged: the path's components and the root.
        public var depth: Int { path.split(separator: "/").count + 1 }
        public var description: String { "cgroup v\(version) \(path) (\(depth) levels)" }

        public init(version: Int, path: String) {
            self.version = version
            self.path = path
        }
    }

    /// Parses `/proc/self/cgroup`'s text; `v2HasMemory`: whether the unified hierarchy's root
    /// lists the memory controller (`cgroup.controllers`).
    public static func hostPlacement(procSelfCgroup text: String, v2HasMemory: Bool) -> HostPlacement? {
        var v2: String? = nil
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty { v2 = String(parts[2]); continue }
            if parts[1].split(separator: ",").contains("memory") { return HostPlacement(version: 1, path: String(parts[2])) }
        }
        if let p = v2, v2HasMemory { return HostPlacement(version: 2, path: p) }
        return nil
    }

    /// This process's placement (nil: no memory controller, or not Linux).
    public static func hostPlacement() -> HostPlacement? {
        guard let text = ProcessLayout.readProcFile("/proc/self/cgroup") else { return nil }
        let controllers = ProcessLayout.readProcFile("/sys/fs/cgroup/cgroup.controllers")
            ?? ProcessLayout.readProcFile("/sys/fs/cgroup/unified/cgroup.controllers") ?? ""
        return hostPlacement(procSelfCgroup: text, v2HasMemory: controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("memory"))
    }
}
