import FaultlineMM

/// For one address space, which step last changed each address range (mapped, unmapped,
/// protected, moved it) and which steps read it since: the timed replay's cross-thread order.
/// A step that needs a range another task changed last runs after that change; a step that
/// changes a range runs after the other tasks' reads of it since the last change. The trace
/// proves both orders (the kernel handed out, or a task touched, what another had just
/// changed; the change came after the reads it would have broken).
struct RangeOwners {
    /// A task and how many of its steps must be done (the step's index + 1).
    struct Owner: Equatable {
        var task: Int
        var count: Int
    }
    struct Entry {
        var range: Range<UInt64>
        /// nil: no step of the trace changed it (execve mapped it, or nothing is there).
        var owner: Owner?
        /// Latest reading step per task since the last change.
        var readers: [Int: Int]
    }
    /// Sorted, disjoint.
    private(set) var entries: [Entry] = []

    /// The first entry ending after `a`.
    private func firstEndingAfter(_ a: UInt64) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].range.upperBound <= a { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// A step of `reader` reads `r`: returns the changes it must follow, and notes the read.
    mutating func read(_ r: Range<UInt64>, by reader: Owner) -> [Owner] {
        guard !r.isEmpty else { return [] }
        var waits: [Owner] = []
        var i = firstEndingAfter(r.lowerBound)
        var cursor = r.lowerBound
        while cursor < r.upperBound {
            if i < entries.count && entries[i].range.lowerBound <= cursor {
                if let o = entries[i].owner { waits.append(o) }
                entries[i].readers[reader.task] = reader.count
                cursor = entries[i].range.upperBound
                i += 1
            } else {
                // A gap: memory no step changed. Remember the read, so a later change waits.
                let end = i < entries.count ? min(entries[i].range.lowerBound, r.upperBound) : r.upperBound
                entries.insert(Entry(range: cursor..<end, owner: nil, readers: [reader.task: reader.count]), at: i)
                cursor = end
                i += 1
            }
        }
        return waits
    }

    /// A step of `changer` changes `r`: returns the change and the reads it must follow, and
    /// makes `r` its own.
    mutating func change(_ r: Range<UInt64>, by changer: Owner) -> [Owner] {
        guard !r.isEmpty else { return [] }
        let start = firstEndingAfter(r.lowerBound)
        var end = start
        var waits: [Owner] = []
        while end < entries.count && entries[end].range.lowerBound < r.upperBound {
            if let o = entries[end].owner { waits.append(o) }
            for (t, c) in entries[end].readers { waits.append(Owner(task: t, count: c)) }
            end += 1
        }
        var pieces: [Entry] = []
        if start < end, entries[start].range.lowerBound < r.lowerBound {
            var e = entries[start]
            e.range = e.range.lowerBound..<r.lowerBound
            pieces.append(e)
        }
        pieces.append(Entry(range: r, owner: changer, readers: [:]))
        if start < end, entries[end - 1].range.upperBound > r.upperBound {
            var e = entries[end - 1]
            e.range = r.upperBound..<e.range.upperBound
            pieces.append(e)
        }
        entries.replaceSubrange(start..<end, with: pieces)
        return waits
    }
}
