import FaultlineMM
import FaultlineWorkloads
import Foundation

/// Escapes text for XML/HTML.
func esc(_ s: String) -> String {
    var o = ""
    for c in s {
        switch c {
        case "&": o += "&amp;"
        case "<": o += "&lt;"
        case ">": o += "&gt;"
        case "\"": o += "&quot;"
        default: o.append(c)
        }
    }
    return o
}

/// The colour of a design in every chart.
func colour(_ design: String) -> String {
    switch design {
    case "host": "#333333"
    case "global": "#4e79a7"
    case "spf-mmseq": "#f28e2b"
    case "spf-vmaseq": "#e15759"
    case "per-vma": "#59a14f"
    case "per-vma-retry": "#8cd17d"
    case "range": "#b6992d"
    case "range-tree": "#b07aa1"
    default: "#ff9da7"
    }
}

/// A step of 1, 2 or 5 × 10^k giving about `n` ticks up to `max`.
func niceStep(_ max: Double, _ n: Double = 5) -> Double {
    guard max > 0 else { return 1 }
    let raw = max / n
    let p = pow(10, floor(log10(raw)))
    for m in [1.0, 2.0, 5.0, 10.0] where m * p >= raw { return m * p }
    return 10 * p
}

func num(_ v: Double) -> String { String(format: "%.1f", v) }

/// Inline SVG charts, one per call. Every chart has a title, labelled axes with units and a
/// legend or direct labels.
enum SVG {
    /// Horizontal bars with min–max whiskers and value labels.
    static func bars(title: String, unit: String, rows: [(label: String, value: Double, lo: Double, hi: Double, note: String)]) -> String {
        let left = 120.0, right = 170.0, top = 34.0, rowH = 24.0, bottom = 44.0, plotW = 430.0
        let width = left + plotW + right
        let height = top + rowH * Double(rows.count) + bottom
        let maxV = max(rows.map { max($0.hi, $0.value) }.max() ?? 1, 1e-9)
        let step = niceStep(maxV)
        let axisMax = ceil(maxV / step) * step
        func x(_ v: Double) -> Double { left + v / axisMax * plotW }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(num(width))\" height=\"\(num(height))\" viewBox=\"0 0 \(num(width)) \(num(height))\" role=\"img\">"
        s += "<title>\(esc(title))</title>"
        s += "<text x=\"\(num(left))\" y=\"20\" class=\"t\">\(esc(title))</text>"
        var v = 0.0
        while v <= axisMax + step / 2 {
            s += "<line x1=\"\(num(x(v)))\" y1=\"\(num(top - 4))\" x2=\"\(num(x(v)))\" y2=\"\(num(height - bottom))\" class=\"g\"/>"
            s += "<text x=\"\(num(x(v)))\" y=\"\(num(height - bottom + 16))\" class=\"tick\" text-anchor=\"middle\">\(esc(si(v)))</text>"
            v += step
        }
        s += "<text x=\"\(num(left + plotW / 2))\" y=\"\(num(height - 8))\" class=\"axis\" text-anchor=\"middle\">\(esc(unit))</text>"
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * rowH
            s += "<text x=\"\(num(left - 8))\" y=\"\(num(y + rowH * 0.65))\" class=\"lab\" text-anchor=\"end\">\(esc(r.label))</text>"
            s += "<rect x=\"\(num(left))\" y=\"\(num(y + 4))\" width=\"\(num(max(x(r.value) - left, 0.5)))\" height=\"\(num(rowH - 8))\" fill=\"\(colour(r.label))\"/>"
            if r.hi > r.lo {
                let cy = y + rowH / 2
                s += "<line x1=\"\(num(x(r.lo)))\" y1=\"\(num(cy))\" x2=\"\(num(x(r.hi)))\" y2=\"\(num(cy))\" class=\"w\"/>"
                s += "<line x1=\"\(num(x(r.lo)))\" y1=\"\(num(cy - 4))\" x2=\"\(num(x(r.lo)))\" y2=\"\(num(cy + 4))\" class=\"w\"/>"
                s += "<line x1=\"\(num(x(r.hi)))\" y1=\"\(num(cy - 4))\" x2=\"\(num(x(r.hi)))\" y2=\"\(num(cy + 4))\" class=\"w\"/>"
            }
            s += "<text x=\"\(num(left + plotW + 8))\" y=\"\(num(y + rowH * 0.65))\" class=\"lab\">\(esc(si(r.value) + (r.note.isEmpty ? "" : "  " + r.note)))</text>"
        }
        return s + "</svg>"
    }

    /// Lines over categorical x positions, with a legend.
    static func lines(title: String, xLabel: String, yLabel: String, xTicks: [String], series: [(name: String, points: [Double?])],
                      logY: Bool = false, yFormat: (Double) -> String = si) -> String {
        let left = 70.0, right = 150.0, top = 34.0, bottom = 48.0, plotW = 480.0, plotH = 220.0
        let width = left + plotW + right, height = top + plotH + bottom
        let values = series.flatMap { $0.points.compactMap { $0 } }.filter { !logY || $0 > 0 }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(num(width))\" height=\"\(num(height))\" viewBox=\"0 0 \(num(width)) \(num(height))\" role=\"img\">"
        s += "<title>\(esc(title))</title><text x=\"\(num(left))\" y=\"20\" class=\"t\">\(esc(title))</text>"
        guard let vmax = values.max(), let vmin = values.min() else { return s + "</svg>" }
        let n = max(xTicks.count - 1, 1)
        func x(_ i: Int) -> Double { xTicks.count == 1 ? left + plotW / 2 : left + Double(i) / Double(n) * plotW }
        var lo = 0.0, hi = vmax
        var ticks: [Double] = []
        if logY {
            lo = floor(log10(max(vmin, 1)))
            hi = max(ceil(log10(vmax)), lo + 1)
            ticks = stride(from: lo, through: hi, by: 1).map { $0 }
        } else {
            let step = niceStep(vmax)
            hi = ceil(vmax / step) * step
            ticks = stride(from: 0, through: hi + step / 2, by: step).map { $0 }
        }
        func y(_ v: Double) -> Double {
            let t = logY ? log10(max(v, 1)) : v
            return top + plotH - (t - lo) / max(hi - lo, 1e-9) * plotH
        }
        for t in ticks {
            let yy = logY ? top + plotH - (t - lo) / max(hi - lo, 1e-9) * plotH : y(t)
            s += "<line x1=\"\(num(left))\" y1=\"\(num(yy))\" x2=\"\(num(left + plotW))\" y2=\"\(num(yy))\" class=\"g\"/>"
            s += "<text x=\"\(num(left - 6))\" y=\"\(num(yy + 4))\" class=\"tick\" text-anchor=\"end\">\(esc(yFormat(logY ? pow(10, t) : t)))</text>"
        }
        for (i, l) in xTicks.enumerated() {
            s += "<text x=\"\(num(x(i)))\" y=\"\(num(top + plotH + 16))\" class=\"tick\" text-anchor=\"middle\">\(esc(l))</text>"
        }
        s += "<text x=\"\(num(left + plotW / 2))\" y=\"\(num(height - 8))\" class=\"axis\" text-anchor=\"middle\">\(esc(xLabel))</text>"
        s += "<text x=\"14\" y=\"\(num(top + plotH / 2))\" class=\"axis\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(num(top + plotH / 2)))\">\(esc(yLabel))</text>"
        for (k, se) in series.enumerated() {
            let pts = se.points.enumerated().compactMap { i, v in v.map { (x(i), y($0)) } }
            let c = colour(se.name)
            if pts.count > 1 {
                s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\" points=\"\(pts.map { "\(num($0.0)),\(num($0.1))" }.joined(separator: " "))\"/>"
            }
            for p in pts { s += "<circle cx=\"\(num(p.0))\" cy=\"\(num(p.1))\" r=\"3\" fill=\"\(c)\"/>" }
            let ly = top + Double(k) * 16
            s += "<rect x=\"\(num(left + plotW + 14))\" y=\"\(num(ly))\" width=\"10\" height=\"10\" fill=\"\(c)\"/>"
            s += "<text x=\"\(num(left + plotW + 30))\" y=\"\(num(ly + 9))\" class=\"lab\">\(esc(se.name))</text>"
        }
        return s + "</svg>"
    }

    /// Horizontal stacked bars of fractions (each row sums to 1), with a legend.
    static func stacked(title: String, rows: [(label: String, parts: [Double], note: String)], partNames: [String], partColours: [String]) -> String {
        let left = 120.0, right = 330.0, top = 54.0, rowH = 24.0, plotW = 360.0
        let width = left + plotW + right, height = top + rowH * Double(rows.count) + 30
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(num(width))\" height=\"\(num(height))\" viewBox=\"0 0 \(num(width)) \(num(height))\" role=\"img\">"
        s += "<title>\(esc(title))</title><text x=\"\(num(left))\" y=\"20\" class=\"t\">\(esc(title))</text>"
        var lx = left
        for (i, n) in partNames.enumerated() {
            s += "<rect x=\"\(num(lx))\" y=\"30\" width=\"10\" height=\"10\" fill=\"\(partColours[i])\"/>"
            s += "<text x=\"\(num(lx + 14))\" y=\"39\" class=\"lab\">\(esc(n))</text>"
            lx += 14 + Double(n.count) * 6.6 + 16
        }
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * rowH
            s += "<text x=\"\(num(left - 8))\" y=\"\(num(y + rowH * 0.65))\" class=\"lab\" text-anchor=\"end\">\(esc(r.label))</text>"
            var x = left
            for (k, p) in r.parts.enumerated() where p > 0 {
                let w = p * plotW
                s += "<rect x=\"\(num(x))\" y=\"\(num(y + 4))\" width=\"\(num(w))\" height=\"\(num(rowH - 8))\" fill=\"\(partColours[k])\"/>"
                x += w
            }
            s += "<text x=\"\(num(left + plotW + 8))\" y=\"\(num(y + rowH * 0.65))\" class=\"lab\">\(esc(r.note))</text>"
        }
        s += "<text x=\"\(num(left + plotW / 2))\" y=\"\(num(height - 6))\" class=\"axis\" text-anchor=\"middle\">fraction of the faults handled</text>"
        return s + "</svg>"
    }
}

extension Comparison {
    /// The self-contained report: inline SVG charts, the table, how to read it. Well-formed
    /// XML, so tests can parse it.
    public func html() -> String {
        // Replayed traces run at their own thread counts; headings name the others'.
        let maxT = rows.filter { !$0.workload.hasPrefix("replay:") }.map(\.threads).max() ?? (threads.max() ?? 1)
        func titled(_ w: String) -> String {
            let t = topThreads(w)
            return t == maxT ? w : "\(w) (\(t) thread\(t == 1 ? "" : "s"))"
        }
        var b = """
        <!DOCTYPE html>
        <html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>
        <title>Faultline: mmap-locking designs compared</title>
        <style>
        body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
        h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin:18px 0 4px}
        .t{font-size:14px;font-weight:600}.lab{font-size:12px}.tick{font-size:11px;fill:#555}.axis{font-size:12px;fill:#333}
        .g{stroke:#e3e3e3;stroke-width:1}.w{stroke:#111;stroke-width:1.2}
        table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
        td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}
        .charts{display:flex;flex-wrap:wrap;gap:18px}p.note{color:#555;font-size:13px}
        </style></head><body>
        <h1>Faultline: mmap-locking designs compared</h1>

        """
        b += "<p>\(esc(machine.date)) · \(esc(machine.cpu)), \(machine.cpus) CPUs, \(num(machine.memoryGiB)) GiB, Linux \(esc(machine.kernel)) · "
        b += "\(repetitions) repetition\(repetitions == 1 ? "" : "s") × \(String(format: "%.2f", secondsPerCell)) s per cell, designs interleaved within each repetition · "
        b += "\(String(format: "%.0f", sizeMiB)) MiB per thread · host = the real kernel, same run.</p>\n"

        b += "<h2>Throughput at \(maxT) thread\(maxT == 1 ? "" : "s")</h2><p class=\"note\">Median over repetitions; whiskers span min–max; × is the ratio to global.</p><div class=\"charts\">"
        for w in workloads {
            let rs = rows.filter { $0.workload == w && $0.threads == topThreads(w) }
            guard !rs.isEmpty else { continue }
            let unit = Comparison.unit(w) + " per second"
            b += SVG.bars(title: titled(w), unit: unit, rows: rs.map { r in
                (r.design, r.opsPerSecond, r.minOpsPerSecond, r.maxOpsPerSecond, r.ratioToGlobal.map { String(format: "×%.2f", $0) } ?? "")
            })
        }
        b += "</div>\n"

        // Only workloads run at more than one thread count have a scaling line.
        let scaled = workloads.filter { w in Set(rows.filter { $0.workload == w }.map(\.threads)).count > 1 }
        if !scaled.isEmpty {
            b += "<h2>Scaling with threads</h2><div class=\"charts\">"
            for w in workloads {
                let names = designs.filter { d in rows.contains { $0.design == d && $0.workload == w } }
                // A replayed trace runs at one thread count: no scaling line.
                let ts = Set(rows.filter { $0.workload == w }.map(\.threads)).sorted()
                guard !names.isEmpty, ts.count > 1 else { continue }
                let series = names.map { d in
                    (d, ts.map { t in rows.first { $0.design == d && $0.workload == w && $0.threads == t }?.opsPerSecond })
                }
                b += SVG.lines(title: w, xLabel: "threads", yLabel: Comparison.unit(w) + " per second",
                               xTicks: ts.map(String.init), series: series)
            }
            b += "</div>\n"
        }

        b += "<h2>Latency at \(maxT) thread\(maxT == 1 ? "" : "s")</h2><p class=\"note\">Per operation (one in eight timed), all repetitions merged; x is the percentile on a nines scale, y is log-scaled.</p><div class=\"charts\">"
        let nines: [(String, Double)] = [("p0", 0), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999), ("max", 1)]
        for w in workloads {
            let rs = rows.filter { $0.workload == w && $0.threads == topThreads(w) }
            guard !rs.isEmpty else { continue }
            let series: [(name: String, points: [Double?])] = rs.map { r in
                (r.design, nines.map { n -> Double? in
                    r.latencyCurve.first { abs($0[0] - n.1 * 100) < 1e-9 }.map { $0[1] }
                })
            }
            b += SVG.lines(title: titled(w), xLabel: "percentile", yLabel: "latency (ns)", xTicks: nines.map(\.0), series: series, logY: true) { v in
                v >= 1e6 ? "\(Int(v / 1e6)) ms" : (v >= 1e3 ? "\(Int(v / 1e3)) µs" : "\(Int(v)) ns")
            }
        }
        b += "</div>\n"

        b += "<h2>Where the faults went at \(maxT) thread\(maxT == 1 ? "" : "s")</h2><p class=\"note\">Lockless: completed without mmap_lock (speculatively, or under a VMA or range lock). After an abort: a lockless attempt gave up and the fault was redone under mmap_lock. Under mmap_lock: taken there directly. The note gives the abort rate and its main reasons.</p><div class=\"charts\">"
        for w in workloads {
            let rs = rows.filter { $0.workload == w && $0.threads == topThreads(w) && $0.counters != nil }
            // Workloads that do not fault (mmap1/2) have nothing to break down.
            guard rs.contains(where: { $0.counters!.faults > 0 }) else { continue }
            b += SVG.stacked(title: titled(w), rows: rs.map { r in
                let c = r.counters!
                if c.faults == 0 { return (r.design, [0, 0, 0], "no faults") }
                let f = Double(max(c.faults, 1))
                let lockless = min(Double(c.locklessSuccesses), f) / f
                let fallback = min(Double(c.fallbacks), f - Double(c.locklessSuccesses)) / f
                let rest = max(0, 1 - lockless - max(fallback, 0))
                let reasons = c.abortReasons.filter { $0.value > 0 }.sorted { $0.value > $1.value }.prefix(2).map(\.key)
                let note = String(format: "aborts %.2f/fault", r.abortRate ?? 0) + (reasons.isEmpty ? "" : " (" + reasons.joined(separator: ", ") + ")")
                return (r.design, [lockless, max(fallback, 0), rest], note)
            }, partNames: ["lockless", "after an abort", "under mmap_lock"], partColours: ["#59a14f", "#f28e2b", "#4e79a7"])
        }
        b += "</div>\n"

        // Recorded programs (faultline record → replay:FILE, compare --workloads gallery).
        let replayed = workloads.filter { $0.hasPrefix("replay:") }
        if !replayed.isEmpty {
            b += "<h2>Recorded programs</h2><p class=\"note\">Each trace's threads replay on threads of their own, each in its recorded order, a thread starting when its creator reaches the clone and a step waiting for the other threads' steps it followed on the ranges it reads or changes (the order the trace proves; none other); one operation is a recorded call or a recorded fault (an access, which faults unless another thread mapped the page first). Check: the trace replayed once in order against the model when loaded — call mismatches, and the share of recorded faults the model also took (matched) or would have added (extra); <code>faultline replay --check FILE</code> lists them. Refused: operations the model returned an error for, per pass.</p>"
            b += "<table><tr><th>program</th><th>check</th><th>threads</th><th style=\"text-align:left\">design</th><th>ops/s</th><th>calls/s</th><th>faults/s</th><th>× global</th><th>refused/pass</th></tr>\n"
            for w in replayed {
                let check = replayChecks?[w].map { c in
                    "\(c.calls) calls, \(c.callMismatches) mismatches; \(c.faults) faults, " + String(format: "%.1f%% matched, %.1f%% extra", 100 * c.faultsMatched, 100 * c.faultsExtra)
                } ?? ""
                let rs = rows.filter { $0.workload == w }
                for (k, r) in rs.enumerated() {
                    func rate(_ v: Double?) -> String { v.map { si($0) } ?? "" }
                    b += "<tr>"
                    if k == 0 {
                        b += "<td rowspan=\"\(rs.count)\">\(esc(String(w.dropFirst(7))))</td><td rowspan=\"\(rs.count)\" style=\"text-align:left\">\(esc(check))</td><td rowspan=\"\(rs.count)\">\(r.threads)</td>"
                    }
                    b += "<td style=\"text-align:left;white-space:nowrap\">\(esc(r.design))</td><td>\(rate(r.opsPerSecond))</td><td>\(rate(r.callsPerSecond))</td><td>\(rate(r.faultsPerSecond))</td>"
                    b += "<td>\(r.ratioToGlobal.map { String(format: "%.2f", $0) } ?? "")</td><td>\(r.refusedPerPass.map { String(format: "%.0f", $0) } ?? "")</td></tr>\n"
                }
            }
            b += "</table>\n"
        }

        // The model's Linux design against the host that runs it (faultline calibrate).
        let linux = Design.perVMA615.rawValue
        if designs.contains("host") && designs.contains(linux) {
            let cal = Calibration(self, design: linux)
            if !cal.rows.isEmpty {
                b += "<h2>Calibration: does \(linux) scale as the host does?</h2><p class=\"note\">The host runs Linux's own design; each repetition's N-thread throughput over the same repetition's 1-thread throughput, median and min–max over repetitions; the error is the model's median against the host's (±\(Int(cal.tolerance * 100))% is the goal). <code>faultline calibrate</code> runs only this, with more repetitions, and says what on the host it could not hold steady.</p>"
                b += "<table><tr><th>workload</th><th>threads</th><th>host</th><th>host min–max</th><th>\(esc(linux))</th><th>model min–max</th><th>error</th></tr>\n"
                func x(_ v: Double) -> String { String(format: "%.2f×", v) }
                for r in cal.rows {
                    let colour = r.within ? "#2e7d32" : "#c62828"
                    b += "<tr><td>\(esc(r.workload))</td><td>\(r.threads) ÷ 1</td><td>\(x(r.host.median))</td><td>\(x(r.host.min))–\(x(r.host.max))</td>"
                    b += "<td>\(x(r.model.median))</td><td>\(x(r.model.min))–\(x(r.model.max))</td>"
                    b += "<td style=\"color:\(colour)\">\(String(format: "%+.0f%%", r.error * 100))</td></tr>\n"
                }
                b += "</table>\n"
                if let p = cal.placement { b += "<p class=\"note\">\(esc(p)).</p>\n" }
            }
        }

        b += "<h2>All results</h2><table><tr><th>workload</th><th>design</th><th>threads</th><th>ops/s</th><th>min</th><th>max</th><th>× global</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>abort rate</th><th>mmap_lock wait</th><th>major faults/s</th><th>faults p99</th><th>calls p99</th></tr>\n"
        for r in rows {
            b += "<tr><td>\(esc(r.workload))</td><td>\(esc(r.design))</td><td>\(r.threads)</td><td>\(esc(si(r.opsPerSecond)))</td><td>\(esc(si(r.minOpsPerSecond)))</td><td>\(esc(si(r.maxOpsPerSecond)))</td>"
            b += "<td>\(r.ratioToGlobal.map { String(format: "%.2f", $0) } ?? "–")</td><td>\(esc(duration(r.latencyNs.p50)))</td><td>\(esc(duration(r.latencyNs.p99)))</td>"
            b += "<td>\(esc(duration(r.latencyNs.p999)))</td><td>\(esc(duration(r.latencyNs.max)))</td><td>\(r.abortRate.map { String(format: "%.3f", $0) } ?? "–")</td>"
            b += "<td>\(esc(r.mmapLockWaitText))</td><td>\(esc(r.majorFaultsText))</td>"
            b += "<td>\(r.faultLatencyNs.map { esc(duration($0.p99)) } ?? "–")</td><td>\(r.callLatencyNs.map { esc(duration($0.p99)) } ?? "–")</td></tr>\n"
        }
        b += "</table>\n"
        b += "<h2>How to read this</h2><ul>"
        b += "<li>Each workload is described by <code>faultline run --help</code>; an operation is \(esc("one page fault for page_fault*, one mmap+munmap pair for mmap*, one fault or call for the mixed workloads")).</li>"
        b += "<li>The host column runs the same loop on the real kernel with real threads. The model maps one page per fault; Linux may map a whole large folio of the page cache at once (see kernel faults/op in the table printed by the command).</li>"
        b += "<li>Designs are interleaved inside each repetition, so drift of the machine hits all of them; trust ratios and medians over single numbers.</li>"
        b += "</ul></body></html>\n"
        return b
    }
}
