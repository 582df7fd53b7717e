//! Per-shard counters and the Prometheus text exposition (`GET /metrics`).
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomics on its own cache
//! lines); a scrape on any shard sums them and reads the per-stream stats from the
//! directory. Nothing on the per-frame path touches a shared cache line.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::server::media::{StreamDirectory, SERIALIZE_ERRORS};

/// Reads one counter of a shard's metrics.
type Counter = fn(&ShardMetrics) -> &AtomicU64;

/// One shard's counters, padded to its own cache lines.
#[repr(align(128))]
#[derive(Default)]
pub struct ShardMetrics {
    pub rtmp_connections: AtomicU64,
    pub http_connections: AtomicU64,
    pub open: AtomicU64,
    pub publishers: AtomicU64,
    pub rtmp_viewers: AtomicU64,
    pub flv_viewers: AtomicU64,
    pub http_requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections closed because of bad input from the peer.
    pub protocol_errors: AtomicU64,
    /// Publish or play refused (bad name, limits, unknown app).
    pub rejected: AtomicU64,
    /// Viewers disconnected for being too slow.
    pub slow_viewers: AtomicU64,
    pub recording_errors: AtomicU64,
    /// Recordings open now (shutdown waits for them to close their files).
    pub recordings: AtomicU64,
    pub hls_segments: AtomicU64,
    /// Viewers disconnected, by [`Disconnect`] reason.
    pub viewer_disconnects: [AtomicU64; Disconnect::ALL.len()],
    /// The viewer write budget in force on this shard (stretched under load), in µs.
    pub write_delay_us: AtomicU64,
    /// This shard thread's CPU use over the last second, in thousandths of a core.
    pub load_permille: AtomicU64,
    /// Streams this shard owns (stream table entries, grace included).
    pub streams_owned: AtomicU64,
    /// HLS requests blocked on this shard waiting for a part or segment.
    pub hls_waiting: AtomicU64,
    /// Connections refused at accept, by [`Refusal`] reason.
    pub refused: [AtomicU64; Refusal::ALL.len()],
    /// Connections closed by a phase timeout, by [`Timeout`] phase.
    pub timeouts: [AtomicU64; Timeout::ALL.len()],
    /// Connections closed because the shard's input budget ran out.
    pub input_evictions: AtomicU64,
    /// Client IPs the admission table tracks now (see `server::admission`).
    pub tracked_ips: AtomicU64,
    /// Publish, play and API requests refused by access control, by [`Denial`].
    pub denials: [AtomicU64; Denial::ALL.len()],
    /// Webhook calls, by [`HookOutcome`].
    pub hook_calls: [AtomicU64; HookOutcome::ALL.len()],
    /// Audit lines written, and dropped because the writer fell behind.
    pub audit_lines: AtomicU64,
    pub audit_dropped: AtomicU64,
}

/// Why access control refused a request (`shardcast_access_denied_total{reason}`):
/// the token check's reasons (`proto::auth::Refusal::reason`), then the hooks' and the
/// API's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    WrongAction,
    WrongStream,
    WrongIp,
    /// A decision hook answered, and not with a 2xx.
    HookDenied,
    /// A fail-closed decision hook gave no usable answer (timeout, refused, 5xx).
    HookFailed,
    /// A fail-closed decision hook could not be called: too many calls in flight.
    HookBusy,
    /// An API request without the right bearer token.
    ApiToken,
}

impl Denial {
    pub const ALL: [Denial; 12] = [
        Denial::Missing,
        Denial::Malformed,
        Denial::UnknownKey,
        Denial::BadSignature,
        Denial::Expired,
        Denial::WrongAction,
        Denial::WrongStream,
        Denial::WrongIp,
        Denial::HookDenied,
        Denial::HookFailed,
        Denial::HookBusy,
        Denial::ApiToken,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Malformed => "malformed",
            Denial::UnknownKey => "unknown_key",
            Denial::BadSignature => "bad_signature",
            Denial::Expired => "expired",
            Denial::WrongAction => "wrong_action",
            Denial::WrongStream => "wrong_stream",
            Denial::WrongIp => "wrong_ip",
            Denial::HookDenied => "hook_denied",
            Denial::HookFailed => "hook_failed",
            Denial::HookBusy => "hook_busy",
            Denial::ApiToken => "api_token",
        }
    }

    /// The denial for a token refusal.
    pub fn of_token(r: &proto::auth::Refusal) -> Denial {
        use proto::auth::Refusal as R;
        match r {
            R::Missing => Denial::Missing,
            R::Malformed(_) => Denial::Malformed,
            R::UnknownKey { .. } => Denial::UnknownKey,
            R::BadSignature => Denial::BadSignature,
            R::Expired { .. } => Denial::Expired,
            R::WrongAction { .. } => Denial::WrongAction,
            R::WrongStream { .. } => Denial::WrongStream,
            R::WrongIp { .. } => Denial::WrongIp,
        }
    }
}

/// How a webhook call ended (`shardcast_hook_calls_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// A 2xx answer.
    Allowed,
    /// Any other answer.
    Denied,
    /// No usable answer after every attempt.
    Failed,
    /// Not called: too many calls in flight on the shard.
    Dropped,
}

impl HookOutcome {
    pub const ALL: [HookOutcome; 4] = [
        HookOutcome::Allowed,
        HookOutcome::Denied,
        HookOutcome::Failed,
        HookOutcome::Dropped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HookOutcome::Allowed => "allowed",
            HookOutcome::Denied => "denied",
            HookOutcome::Failed => "failed",
            HookOutcome::Dropped => "dropped",
        }
    }
}

/// Why a viewer's connection ended (`shardcast_viewer_disconnects_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// Its socket took no bytes for `streams.send_stall_timeout_ms`.
    Stalled,
    /// It fell out of the ring too often (`streams.lag_skips_before_disconnect`).
    TooSlow,
    /// The stream ended.
    StreamEnded,
    /// The player closed the connection or stopped playing.
    PeerClosed,
    /// A socket error, bad input, or shutdown.
    Error,
}

impl Disconnect {
    pub const ALL: [Disconnect; 5] = [
        Disconnect::Stalled,
        Disconnect::TooSlow,
        Disconnect::StreamEnded,
        Disconnect::PeerClosed,
        Disconnect::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Disconnect::Stalled => "stalled",
            Disconnect::TooSlow => "too_slow",
            Disconnect::StreamEnded => "stream_ended",
            Disconnect::PeerClosed => "peer_closed",
            Disconnect::Error => "error",
        }
    }
}

/// Why an accepted socket was closed at once (`shardcast_connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` are open.
    GlobalLimit,
    /// The client IP has `limits.max_connections_per_ip` open on this shard.
    IpLimit,
    /// The client IP opens connections faster than `limits.accept_rate_per_ip`.
    RateLimit,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::GlobalLimit, Refusal::IpLimit, Refusal::RateLimit];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::GlobalLimit => "global_limit",
            Refusal::IpLimit => "ip_limit",
            Refusal::RateLimit => "rate_limit",
        }
    }
}

/// Which phase's timeout closed a connection (`shardcast_connection_timeouts_total`).
/// A viewer's send stall is counted with the viewer disconnects (`stalled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// No complete RTMP handshake within `limits.rtmp_handshake_timeout_ms`.
    RtmpHandshake,
    /// Handshake done, but no publish or play within the same timeout.
    RtmpNegotiation,
    /// A publisher sent no media for `streams.idle_timeout_ms`.
    PublisherIdle,
    /// Another RTMP connection sent nothing (not even ping replies) for that long.
    RtmpIdle,
    /// No complete HTTP request head within `limits.http_head_timeout_ms`.
    HttpHead,
    /// A kept-alive HTTP connection sent no request for `limits.http_keepalive_timeout_ms`.
    HttpKeepalive,
}

impl Timeout {
    /// The phase of an RTMP connection's own close, if a timeout closed it.
    pub fn of_rtmp(reason: proto::rtmp::CloseReason) -> Option<Timeout> {
        use proto::rtmp::CloseReason;
        match reason {
            CloseReason::HandshakeTimeout => Some(Timeout::RtmpHandshake),
            CloseReason::NegotiationTimeout => Some(Timeout::RtmpNegotiation),
            CloseReason::PublisherIdle => Some(Timeout::PublisherIdle),
            CloseReason::IdleTimeout => Some(Timeout::RtmpIdle),
            CloseReason::Rejected => None,
        }
    }

    pub const ALL: [Timeout; 6] = [
        Timeout::RtmpHandshake,
        Timeout::RtmpNegotiation,
        Timeout::PublisherIdle,
        Timeout::RtmpIdle,
        Timeout::HttpHead,
        Timeout::HttpKeepalive,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Timeout::RtmpHandshake => "rtmp_handshake",
            Timeout::RtmpNegotiation => "rtmp_negotiation",
            Timeout::PublisherIdle => "publisher_idle",
            Timeout::RtmpIdle => "rtmp_idle",
            Timeout::HttpHead => "http_head",
            Timeout::HttpKeepalive => "http_keepalive",
        }
    }
}

impl ShardMetrics {
    pub fn refused(&self, why: Refusal) {
        Self::add(&self.refused[why as usize], 1);
    }

    pub fn timed_out(&self, phase: Timeout) {
        Self::add(&self.timeouts[phase as usize], 1);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn viewer_disconnected(&self, why: Disconnect) {
        Self::add(&self.viewer_disconnects[why as usize], 1);
    }

    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// What a graceful shutdown waits for: open connections and open recordings.
    pub fn draining(&self) -> u64 {
        self.open_connections() + self.recordings.load(Ordering::Relaxed)
    }
}

/// A counter with a `reason` label, per shard.
fn labelled(
    out: &mut String,
    shards: &[ShardMetrics],
    name: &str,
    help: &str,
    reasons: &[(&str, usize)],
    f: fn(&ShardMetrics, usize) -> &AtomicU64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (i, s) in shards.iter().enumerate() {
        for &(label, at) in reasons {
            let v = f(s, at).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shard=\"{i}\",reason=\"{label}\"}} {v}");
        }
    }
}

/// The Prometheus text format of every shard's counters and every stream's stats.
pub fn render(shards: &[ShardMetrics], dir: &StreamDirectory, uptime_s: f64) -> String {
    let mut out = String::with_capacity(4096);
    let counters: &[(&str, &str, &str, Counter)] = &[
        (
            "shardcast_rtmp_connections_total",
            "counter",
            "RTMP connections accepted",
            |m| &m.rtmp_connections,
        ),
        (
            "shardcast_http_connections_total",
            "counter",
            "HTTP connections accepted",
            |m| &m.http_connections,
        ),
        (
            "shardcast_open_connections",
            "gauge",
            "Connections open now",
            |m| &m.open,
        ),
        (
            "shardcast_publishers",
            "gauge",
            "Publishers connected now",
            |m| &m.publishers,
        ),
        ("shardcast_rtmp_viewers", "gauge", "RTMP viewers now", |m| {
            &m.rtmp_viewers
        }),
        (
            "shardcast_http_flv_viewers",
            "gauge",
            "HTTP-FLV viewers now",
            |m| &m.flv_viewers,
        ),
        (
            "shardcast_http_requests_total",
            "counter",
            "HTTP requests served",
            |m| &m.http_requests,
        ),
        (
            "shardcast_received_bytes_total",
            "counter",
            "Bytes read from peers",
            |m| &m.bytes_in,
        ),
        (
            "shardcast_sent_bytes_total",
            "counter",
            "Bytes written to peers",
            |m| &m.bytes_out,
        ),
        (
            "shardcast_protocol_errors_total",
            "counter",
            "Connections closed for bad input",
            |m| &m.protocol_errors,
        ),
        (
            "shardcast_rejected_total",
            "counter",
            "Publish/play requests refused",
            |m| &m.rejected,
        ),
        (
            "shardcast_slow_viewers_total",
            "counter",
            "Viewers disconnected for falling behind",
            |m| &m.slow_viewers,
        ),
        (
            "shardcast_recording_errors_total",
            "counter",
            "Recordings stopped by an error",
            |m| &m.recording_errors,
        ),
        (
            "shardcast_recordings",
            "gauge",
            "Recordings open now",
            |m| &m.recordings,
        ),
        (
            "shardcast_hls_segments_total",
            "counter",
            "HLS segments produced",
            |m| &m.hls_segments,
        ),
        (
            "shardcast_input_budget_evictions_total",
            "counter",
            "Connections closed for holding the most input when the shard's input budget ran out",
            |m| &m.input_evictions,
        ),
        (
            "shardcast_audit_lines_total",
            "counter",
            "Audit log lines written",
            |m| &m.audit_lines,
        ),
        (
            "shardcast_audit_dropped_total",
            "counter",
            "Audit log lines dropped because the writer fell behind",
            |m| &m.audit_dropped,
        ),
        (
            "shardcast_streams_owned",
            "gauge",
            "Streams this shard owns (its stream table, reconnect grace included)",
            |m| &m.streams_owned,
        ),
        (
            "shardcast_hls_blocked_requests",
            "gauge",
            "HLS playlist requests waiting for the next part or segment",
            |m| &m.hls_waiting,
        ),
        (
            "shardcast_admission_tracked_ips",
            "gauge",
            "Client IPs with open connections or a refilling accept bucket",
            |m| &m.tracked_ips,
        ),
    ];
    for &(name, kind, help, f) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{i}\"}} {}",
                f(s).load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP shardcast_viewer_disconnects_total Viewers disconnected, by reason\n# TYPE shardcast_viewer_disconnects_total counter"
    );
    for (i, s) in shards.iter().enumerate() {
        for why in Disconnect::ALL {
            let _ = writeln!(
                out,
                "shardcast_viewer_disconnects_total{{shard=\"{i}\",reason=\"{}\"}} {}",
                why.label(),
                s.viewer_disconnects[why as usize].load(Ordering::Relaxed)
            );
        }
    }
    labelled(
        &mut out,
        shards,
        "shardcast_connections_refused_total",
        "Connections closed at accept by admission, by reason",
        &Refusal::ALL.map(|r| (r.label(), r as usize)),
        |m, i| &m.refused[i],
    );
    labelled(
        &mut out,
        shards,
        "shardcast_connection_timeouts_total",
        "Connections closed by a phase timeout, by phase",
        &Timeout::ALL.map(|t| (t.label(), t as usize)),
        |m, i| &m.timeouts[i],
    );
    labelled(
        &mut out,
        shards,
        "shardcast_access_denied_total",
        "Publish, play and API requests refused by access control, by reason",
        &Denial::ALL.map(|r| (r.label(), r as usize)),
        |m, i| &m.denials[i],
    );
    labelled(
        &mut out,
        shards,
        "shardcast_hook_calls_total",
        "Webhook calls, by outcome (the label is named reason like the others)",
        &HookOutcome::ALL.map(|r| (r.label(), r as usize)),
        |m, i| &m.hook_calls[i],
    );
    // Gauges kept in thousandths, shown as decimals.
    let scaled: &[(&str, &str, Counter)] = &[
        (
            "shardcast_write_delay_ms",
            "Viewer write budget in force (stretched under load)",
            |m| &m.write_delay_us,
        ),
        (
            "shardcast_shard_load",
            "Shard thread CPU over the last second (1 = one core)",
            |m| &m.load_permille,
        ),
    ];
    for &(name, help, f) in scaled {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, s) in shards.iter().enumerate() {
            let v = f(s).load(Ordering::Relaxed) as f64 / 1000.0;
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {v:.3}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP shardcast_serialize_errors_total Frames that could not be serialized for viewers (a bug if non-zero)\n# TYPE shardcast_serialize_errors_total counter\nshardcast_serialize_errors_total {}",
        SERIALIZE_ERRORS.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP shardcast_uptime_seconds Seconds since start\n# TYPE shardcast_uptime_seconds gauge");
    let _ = writeln!(out, "shardcast_uptime_seconds {uptime_s:.1}");
    let _ = writeln!(
        out,
        "# HELP shardcast_streams Streams live now\n# TYPE shardcast_streams gauge"
    );
    let all = dir.all();
    let _ = writeln!(out, "shardcast_streams {}", all.len());
    type Stat = fn(&shards::directory::StreamStats) -> &AtomicU64;
    let per_stream: &[(&str, &str, &str, Stat)] = &[
        (
            "shardcast_stream_frames_total",
            "counter",
            "Frames published",
            |s| &s.frames,
        ),
        (
            "shardcast_stream_bytes_total",
            "counter",
            "Payload bytes published",
            |s| &s.bytes,
        ),
        (
            "shardcast_stream_keyframes_total",
            "counter",
            "Keyframes published",
            |s| &s.keyframes,
        ),
        (
            "shardcast_stream_bitrate_bps",
            "gauge",
            "Ingest bitrate over the last second",
            |s| &s.bitrate_bps,
        ),
        (
            "shardcast_stream_viewers",
            "gauge",
            "Viewers of the stream, all protocols and shards",
            |s| &s.viewers,
        ),
        (
            "shardcast_stream_lag_skips_total",
            "counter",
            "Viewer skips to the newest keyframe",
            |s| &s.lag_skips,
        ),
        (
            "shardcast_stream_resumes_total",
            "counter",
            "Publisher reconnects within the grace",
            |s| &s.resumes,
        ),
        (
            "shardcast_stream_timestamp_fixes_total",
            "counter",
            "Frames with repaired timestamps",
            |s| &s.timestamp_fixes,
        ),
    ];
    let mut keys: Vec<_> = all.keys().collect();
    keys.sort();
    for &(name, kind, help, f) in per_stream {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for key in &keys {
            let e = &all[*key];
            let _ = writeln!(
                out,
                "{name}{{stream=\"{key}\"}} {}",
                f(&e.stats).load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# HELP shardcast_stream_video_fps Video frames per second over the last second\n# TYPE shardcast_stream_video_fps gauge");
    for key in &keys {
        let fps = all[*key].stats.video_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "shardcast_stream_video_fps{{stream=\"{key}\"}} {fps:.2}"
        );
    }
    out
}
