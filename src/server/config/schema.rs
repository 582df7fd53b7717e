//! The `shardcast.toml` schema: one serde struct per section, the defaults of every key,
//! and how [`Cores`] and [`PathTemplate`] are written in TOML (as one string each).
//!
//! Every field has a default, so an empty file (or none) is a complete configuration.
//! Unknown keys are errors (`deny_unknown_fields`): a typo must not silently fall back
//! to a default. Ranges and the relations between keys are checked in
//! [`super::validate`], not here.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use proto::media::StreamKey;

use super::{ConfigError, Cores, PathTemplate};

/// The whole configuration. Field docs give the default; `shardcast.toml` at the
/// repository root is the commented reference and is tested to equal [`Config::default`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub streams: StreamsConfig,
    pub hls: HlsConfig,
    pub record: RecordConfig,
    pub limits: super::LimitsConfig,
    pub auth: super::AuthConfig,
    pub hooks: super::HooksConfig,
    pub audit: super::AuditConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// CPUs to run one shard on each; default all online CPUs.
    pub cores: Cores,
    /// Address every listener binds to; default 127.0.0.1 (operators set 0.0.0.0).
    pub bind: IpAddr,
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `info,shardcast_proto::rtmp=debug`); `RUST_LOG` wins.
    pub log_level: String,
    /// How long a graceful shutdown waits for connections to drain; default 5000.
    pub shutdown_timeout_ms: u64,
    /// Name of this node in logs, metrics and the API; default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cores: Cores::All,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            shutdown_timeout_ms: 5000,
            node_name: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines, coloured on a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    pub enabled: bool,
    pub port: u16,
    /// The chunk size we announce with Set Chunk Size; default 4096.
    pub chunk_size: u32,
    /// Largest message a peer may send; default 16 MiB (the 24-bit length field's limit).
    pub max_message_bytes: u32,
    /// Apps a publisher or player may use; empty allows any; default `["live"]`.
    pub apps: Vec<String>,
    pub play_missing: PlayMissing,
    /// Window Acknowledgement Size we announce; default 2 500 000.
    pub ack_window_bytes: u32,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            enabled: true,
            port: 1935,
            chunk_size: 4096,
            max_message_bytes: 16 * MIB as u32,
            apps: vec!["live".to_owned()],
            play_missing: PlayMissing::NotFound,
            ack_window_bytes: 2_500_000,
        }
    }
}

/// What a player asking for a stream nobody publishes gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayMissing {
    /// `NetStream.Play.StreamNotFound`, then the connection closes.
    NotFound,
    /// The player waits (until `streams.idle_timeout_ms`) for a publisher to start.
    Wait,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    pub port: u16,
    /// Largest request line plus headers; default 8192.
    pub max_request_head_bytes: usize,
    /// `Access-Control-Allow-Origin` value; `""` sends no CORS header; default `*`.
    pub cors_allow_origin: String,
    /// Serve the JSON API under `/api/`; default true.
    pub api: bool,
    /// `/api/*` needs `Authorization: Bearer <token>` with the token in
    /// `api_token_file`. Unset: required as soon as `server.bind` is not loopback.
    /// Changing state (kick) always needs the token beyond loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_auth: Option<bool>,
    /// A file holding the API's bearer token (trailing whitespace ignored, at least 16
    /// bytes, not readable by every user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
    /// `/metrics` stays open when the API needs a token (for a Prometheus scraper on a
    /// trusted network); `/healthz` is always open; default false.
    pub metrics_public: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            port: 8080,
            max_request_head_bytes: 8192,
            cors_allow_origin: "*".to_owned(),
            api: true,
            api_auth: None,
            api_token_file: None,
            metrics_public: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Frames each stream's fan-out ring holds (a power of two); default 1024.
    pub ring_slots: usize,
    /// Bytes of the current GOP kept for instant start; default 16 MiB.
    pub gop_cache_bytes: u64,
    /// How long viewers stay attached after the publisher drops; default 5000.
    pub reconnect_grace_ms: u64,
    /// A stream with no publisher and no viewers is reaped after this long, and a
    /// publisher that sends no media (pings do not count) for this long is dropped;
    /// default 30000.
    pub idle_timeout_ms: u64,
    /// 0 = unlimited, for all three limits.
    pub max_publishers: u32,
    pub max_viewers: u32,
    pub max_viewers_per_stream: u32,
    /// A viewer skipped forward this many times within `lag_window_ms` is
    /// disconnected; 0 never disconnects; default 3.
    pub lag_skips_before_disconnect: u32,
    pub lag_window_ms: u64,
    /// Latency budget of viewer writes: audio and data wait (at most this long) to ride
    /// with the next video frame, and a viewer is written to at most once per budget,
    /// so each write is one fuller TCP segment. 0 writes every frame as it arrives.
    #[serde(alias = "write_batch_ms")]
    pub write_delay_ms: u64,
    /// Under load a shard stretches the budget up to this, so it never saturates; the
    /// effective value is `shardcast_write_delay_ms` in `/metrics`. Equal to
    /// `write_delay_ms` turns stretching off.
    pub max_write_delay_ms: u64,
    /// A viewer whose socket accepts no bytes for this long is disconnected (counted as
    /// `stalled`); default 10000.
    pub send_stall_timeout_ms: u64,
    /// Gather frames for up to this long before sending them to another shard;
    /// default 1000.
    pub feed_batch_us: u64,
    /// SO_SNDBUF for viewer sockets; default none (the kernel's autotuning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_send_buffer_bytes: Option<u32>,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            ring_slots: 1024,
            gop_cache_bytes: 16 * MIB,
            reconnect_grace_ms: 5000,
            idle_timeout_ms: 30_000,
            max_publishers: 0,
            max_viewers: 0,
            max_viewers_per_stream: 0,
            lag_skips_before_disconnect: 3,
            lag_window_ms: 30_000,
            write_delay_ms: 40,
            max_write_delay_ms: 100,
            send_stall_timeout_ms: 10_000,
            feed_batch_us: 1000,
            viewer_send_buffer_bytes: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    pub enabled: bool,
    /// Target segment length (cut at the first keyframe after it); default 2000.
    pub segment_ms: u64,
    /// LL-HLS part target; default 333.
    pub part_ms: u64,
    /// Segments listed in a live playlist; default 6.
    pub window_segments: u32,
    /// How long a blocking playlist reload (`_HLS_msn`) waits; default 6000.
    pub blocking_timeout_ms: u64,
    /// Classic HLS with MPEG-TS segments; default true.
    pub ts: bool,
    /// LL-HLS with fMP4 segments and parts; default true.
    pub ll: bool,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            enabled: true,
            segment_ms: 2000,
            part_ms: 333,
            window_segments: 6,
            blocking_timeout_ms: 6000,
            ts: true,
            ll: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    pub enabled: bool,
    /// Apps whose streams are recorded; empty records every app; default `["live"]`.
    pub apps: Vec<String>,
    pub format: RecordFormat,
    /// Directory recordings go under (relative = to the working directory);
    /// default `recordings`. `--record-dir` overrides it.
    pub dir: PathBuf,
    /// File path below `dir`; default `{app}/{stream}/{start}.{ext}`.
    pub path: PathTemplate,
    /// Start a new file at the first keyframe after this long; 0 = never; default 0.
    pub rotate_ms: u64,
    /// fsync the file this often; 0 = only when it is closed; default 1000.
    pub fsync_ms: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enabled: false,
            apps: vec!["live".to_owned()],
            format: RecordFormat::Flv,
            dir: PathBuf::from("recordings"),
            path: PathTemplate::from_str("{app}/{stream}/{start}.{ext}")
                .expect("the built-in record path template uses only known placeholders"),
            rotate_ms: 0,
            fsync_ms: 1000,
        }
    }
}

impl RecordConfig {
    /// Whether streams of `app` are recorded.
    pub fn records_app(&self, app: &str) -> bool {
        self.enabled && (self.apps.is_empty() || self.apps.iter().any(|a| a == app))
    }

    /// The file a recording of `key` that started at `start` goes to.
    pub fn file_path(&self, key: &StreamKey, start: SystemTime) -> PathBuf {
        self.dir
            .join(self.path.render(key, start, self.format.extension()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    Flv,
    Fmp4,
}

impl RecordFormat {
    /// What `{ext}` expands to.
    pub fn extension(self) -> &'static str {
        match self {
            RecordFormat::Flv => "flv",
            RecordFormat::Fmp4 => "mp4",
        }
    }
}

pub(super) const MIB: u64 = 1024 * 1024;

/// Types written as one TOML string and parsed with [`FromStr`] into [`ConfigError`].
/// A parse failure carries only `value: expected ...`; the key path and position are
/// added by [`super::parse`], which knows where the string sat in the file.
macro_rules! serde_via_string {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(|e: ConfigError| match e {
                    ConfigError::Invalid {
                        value, expected, ..
                    } => serde::de::Error::custom(format!("{value}: expected {expected}")),
                    other => serde::de::Error::custom(other),
                })
            }
        }
    };
}

pub(super) use serde_via_string;

serde_via_string!(Cores);
serde_via_string!(PathTemplate);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::load::tests::parse_ok;

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(parse_ok(""), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn shipped_config_file_documents_the_defaults() {
        let text = include_str!("../../../shardcast.toml");
        assert_eq!(parse_ok(text), Config::default());
    }

    #[test]
    fn records_only_the_listed_apps() {
        let record = RecordConfig {
            enabled: true,
            ..RecordConfig::default()
        };
        assert!(record.records_app("live"));
        assert!(!record.records_app("other"));
    }
}
