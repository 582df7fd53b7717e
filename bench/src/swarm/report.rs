//! Summaries: per-protocol totals and percentiles, process CPU and memory from /proc, and
//! the JSON line the compare script reads.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::ledger::{Histograms, Ledger, Tally};
use crate::viewer::Protocol;

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 on every
/// architecture the tool runs on (sysconf(_SC_CLK_TCK) reports the same value).
const TICKS_PER_S: f64 = 100.0;

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / TICKS_PER_S)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // fields after ')' start at field 3 (state); utime and stime are fields 14 and 15
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// (VmRSS, VmHWM) in KiB.
pub fn memory_kib(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory(&status)
}

fn parse_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Per-protocol results.
#[derive(Default)]
pub struct ProtocolStats {
    pub viewers: usize,
    pub connected: usize,
    pub playing: usize,
    pub with_keyframe: usize,
    pub without_frames: usize,
    pub disconnects: usize,
    pub errors: usize,
    pub error_samples: BTreeMap<String, usize>,
    pub frames: u64,
    pub frames_expected: u64,
    pub bytes: u64,
    pub bytes_expected: u64,
    pub unknown: u64,
    pub out_of_order: u64,
    pub before_keyframe: u64,
    pub hist: Histograms,
}

impl ProtocolStats {
    /// Adds one viewer's final counts.
    pub fn add(&mut self, tally: &Tally, ledger: &Ledger, connected: bool, playing: bool) {
        self.viewers += 1;
        self.connected += usize::from(connected);
        self.playing += usize::from(playing);
        self.with_keyframe += usize::from(tally.first_keyframe_at.is_some());
        self.without_frames += usize::from(tally.first_seq.is_none());
        let (frames, bytes) = tally.expected(ledger);
        self.frames += tally.frames;
        self.bytes += tally.bytes;
        self.frames_expected += frames;
        self.bytes_expected += bytes;
        self.unknown += tally.unknown;
        self.out_of_order += tally.out_of_order;
        self.before_keyframe += tally.before_keyframe;
    }

    pub fn error(&mut self, what: String) {
        self.errors += 1;
        // a few distinct messages are enough to see what went wrong
        if self.error_samples.len() < 5 || self.error_samples.contains_key(&what) {
            *self.error_samples.entry(what).or_default() += 1;
        }
    }

    pub fn delivered(&self) -> f64 {
        if self.frames_expected == 0 {
            0.0
        } else {
            self.frames as f64 / self.frames_expected as f64
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "viewers": self.viewers,
            "connected": self.connected,
            "playing": self.playing,
            "with_keyframe": self.with_keyframe,
            "without_frames": self.without_frames,
            "disconnects": self.disconnects,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "frames_received": self.frames,
            "frames_expected": self.frames_expected,
            "delivered": self.delivered(),
            "bytes_received": self.bytes,
            "bytes_expected": self.bytes_expected,
            "unknown_frames": self.unknown,
            "out_of_order": self.out_of_order,
            "before_keyframe": self.before_keyframe,
            "latency_ms": percentiles(&self.hist.latency_us),
            "startup_ms": percentiles(&self.hist.startup_us),
        })
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
    })
}

/// CPU and memory of the measured processes and of the swarm itself over the window.
#[derive(Clone, Debug, Default)]
pub struct ProcessStats {
    pub window: Duration,
    pub server_cpu_s: Option<f64>,
    pub server_rss_peak_kib: u64,
    pub server_rss_window_start_kib: u64,
    pub swarm_cpu_s: f64,
    pub swarm_rss_kib: u64,
}

pub fn json_line(
    label: &str,
    ledger: &Ledger,
    per_protocol: &BTreeMap<Protocol, ProtocolStats>,
    procs: &ProcessStats,
) -> Value {
    let viewers: usize = per_protocol.values().map(|p| p.viewers).sum();
    let window_s = procs.window.as_secs_f64();
    let viewer_seconds = viewers as f64 * window_s;
    let per_viewer_s = procs
        .server_cpu_s
        .filter(|_| viewer_seconds > 0.0)
        .map(|c| c / viewer_seconds);
    json!({
        "label": label,
        "viewers": viewers,
        "window_s": window_s,
        "published_frames": ledger.published(),
        "published_bytes": ledger.published_bytes(),
        "server_cpu_s": procs.server_cpu_s,
        "server_cpu_pct": procs.server_cpu_s.map(|c| 100.0 * c / window_s.max(1e-9)),
        "server_cpu_per_viewer_s": per_viewer_s,
        "server_rss_peak_kib": procs.server_rss_peak_kib,
        "server_rss_window_start_kib": procs.server_rss_window_start_kib,
        "swarm_cpu_pct": 100.0 * procs.swarm_cpu_s / window_s.max(1e-9),
        "swarm_rss_kib": procs.swarm_rss_kib,
        "protocols": per_protocol.iter().map(|(p, s)| (p.name().to_owned(), s.json())).collect::<serde_json::Map<_, _>>(),
    })
}

/// A few lines for a person watching the run.
pub fn human(line: &Value) -> String {
    let mut out = format!(
        "{}: {} viewers, window {:.1} s, server CPU {} ({} µs per viewer-second), RSS peak {} KiB, swarm CPU {:.0}%\n",
        line["label"].as_str().unwrap_or(""),
        line["viewers"],
        line["window_s"].as_f64().unwrap_or(0.0),
        line["server_cpu_pct"].as_f64().map_or("n/a".into(), |c| format!("{c:.1}%")),
        line["server_cpu_per_viewer_s"].as_f64().map_or("n/a".into(), |c| format!("{:.2}", c * 1e6)),
        line["server_rss_peak_kib"],
        line["swarm_cpu_pct"].as_f64().unwrap_or(0.0),
    );
    if let Some(protos) = line["protocols"].as_object() {
        for (name, p) in protos {
            out.push_str(&format!(
                "  {name}: {}/{} playing, delivered {:.4} ({} / {} frames), latency p50 {} p99 {} ms, startup p50 {} p99 {} ms, disconnects {}, errors {} {}\n",
                p["playing"], p["viewers"], p["delivered"].as_f64().unwrap_or(0.0),
                p["frames_received"], p["frames_expected"],
                p["latency_ms"]["p50"], p["latency_ms"]["p99"],
                p["startup_ms"]["p50"], p["startup_ms"]["p99"],
                p["disconnects"], p["errors"], p["error_samples"],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_spaces_and_parens_in_the_name() {
        let stat = "4242 (glommio ex) 1) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 37 0 0 20 0 3 0 100 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\tnginx\nVmHWM:\t    9000 kB\nVmRSS:\t    8123 kB\nThreads:\t1\n";
        assert_eq!(parse_memory(status), Some((8123, 9000)));
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn our_own_process_is_readable() {
        let me = std::process::id().to_string();
        assert!(cpu_seconds(&me).is_some());
        let (rss, hwm) = memory_kib(&me).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn delivered_ratio_and_errors() {
        let mut s = ProtocolStats::default();
        assert_eq!(s.delivered(), 0.0);
        s.frames = 99;
        s.frames_expected = 100;
        assert!((s.delivered() - 0.99).abs() < 1e-12);
        for i in 0..10 {
            s.error(format!("e{i}"));
        }
        s.error("e0".into());
        assert_eq!(s.errors, 11);
        assert_eq!(s.error_samples.len(), 5);
        assert_eq!(s.error_samples["e0"], 2);
    }
}
