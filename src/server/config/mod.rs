//! The server configuration: the `shardcast.toml` schema, its defaults, parsing with
//! errors that name the key, overlays of several files, and validation of ranges and of
//! the relations between settings.
//!
//! Every field has a default, so an empty file (or none) is a complete configuration.
//! Unknown keys are errors: a typo must not silently fall back to a default. Parsing is
//! pure (text in, [`Config`] or [`ConfigError`] out); reading files and the command line
//! live in [`super::cli`], and this module touches neither the clock nor the network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use proto::media::StreamKey;

/// Why a configuration was refused. Every message names the key path (`hls.part_ms`),
/// the offending value and what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax errors, wrong types and unknown keys. `origin` is the file (or
    /// `<overlay>` for the merge of several files); `line`/`column` are 1-based.
    #[error("{origin}{}: {}{message}", position(*line, *column), key_prefix(key))]
    Parse {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// A well-typed value outside its allowed range or in conflict with another key.
    #[error("{key} = {value}: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("cannot print the effective config as TOML: {0}")]
    Print(#[from] toml::ser::Error),
    #[error("cannot write the config report to stdout: {0}")]
    Output(#[source] std::io::Error),
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        _ => String::new(),
    }
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

fn invalid(key: &str, value: impl fmt::Display, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            port: 8080,
            max_request_head_bytes: 8192,
            cors_allow_origin: "*".to_owned(),
            api: true,
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
    /// publisher that sends nothing for this long is dropped; default 30000.
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

const MIB: u64 = 1024 * 1024;

/// Linux's NR_CPUS ceiling; also keeps `0-4000000000` from allocating a huge list.
const MAX_CPU_ID: usize = 8191;
const CORES_EXPECTED: &str = "\"all\" or a CPU list such as \"0-3,8\" (ids and ascending ranges \
     from 0 to 8191, separated by commas)";

/// `server.cores`: all online CPUs, or an explicit sorted, de-duplicated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cores {
    All,
    List(Vec<usize>),
}

impl Cores {
    /// The CPUs to start shards on, given the CPUs this process may run on.
    pub fn resolve(&self, online: &[usize]) -> Result<Vec<usize>, ConfigError> {
        match self {
            Cores::All => {
                let mut all = online.to_vec();
                all.sort_unstable();
                all.dedup();
                Ok(all)
            }
            Cores::List(list) => match list.iter().find(|cpu| !online.contains(cpu)) {
                Some(cpu) => Err(invalid(
                    "server.cores",
                    format!("\"{self}\""),
                    format!(
                        "CPUs this process may run on ({}); CPU {cpu} is not one of them",
                        Cores::List(online.to_vec())
                    ),
                )),
                None => Ok(list.clone()),
            },
        }
    }
}

impl FromStr for Cores {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = || invalid("server.cores", format!("\"{text}\""), CORES_EXPECTED);
        let text_trimmed = text.trim();
        if text_trimmed.eq_ignore_ascii_case("all") {
            return Ok(Cores::All);
        }
        let id = |s: &str| -> Result<usize, ConfigError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<usize>()
                .ok()
                .filter(|&n| n <= MAX_CPU_ID)
                .ok_or_else(bad)
        };
        // A bitmap, not a Vec: "0-8191" repeated across a long string stays 8 KiB.
        let mut chosen = vec![false; MAX_CPU_ID + 1];
        for item in text_trimmed.split(',') {
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (id(lo)?, id(hi)?),
                None => (id(item)?, id(item)?),
            };
            if lo > hi {
                return Err(bad());
            }
            chosen[lo..=hi].fill(true);
        }
        let cpus = (0..=MAX_CPU_ID).filter(|&cpu| chosen[cpu]).collect();
        Ok(Cores::List(cpus))
    }
}

/// The canonical form: `all`, or runs of consecutive ids collapsed to ranges (`0-3,8`).
impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Cores::List(list) = self else {
            return f.write_str("all");
        };
        let mut i = 0;
        while i < list.len() {
            let start = list[i];
            while i + 1 < list.len() && list[i + 1] == list[i] + 1 {
                i += 1;
            }
            let end = list[i];
            if start != list[0] {
                f.write_str(",")?;
            }
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// Types written as one TOML string and parsed with [`FromStr`] into [`ConfigError`].
/// A parse failure carries only `value: expected ...`; the key path and position are
/// added by [`parse`], which knows where the string sat in the file.
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

serde_via_string!(Cores);
serde_via_string!(PathTemplate);

/// `record.path`: a relative path with `{app}`, `{stream}`, `{start}` (UTC
/// `yyyymmdd-hhmmss`) and `{ext}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    App,
    Stream,
    Start,
    Ext,
}

impl PathTemplate {
    /// The path for one recording. Stream key parts are already safe as path
    /// components (no `/`, never `.` or `..`), so the result stays below the directory.
    pub fn render(&self, key: &StreamKey, start: SystemTime, ext: &str) -> PathBuf {
        let mut out = String::with_capacity(self.text.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::App => out.push_str(key.app()),
                Piece::Stream => out.push_str(key.stream()),
                Piece::Start => out.push_str(&utc_stamp(start)),
                Piece::Ext => out.push_str(ext),
            }
        }
        PathBuf::from(out)
    }
}

impl FromStr for PathTemplate {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = |expected: String| invalid("record.path", format!("\"{text}\""), expected);
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(bad(
                    "a template with balanced braces; found a '}' without '{'".into(),
                ));
            }
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(bad(
                    "a template with balanced braces; a '{' is never closed".into(),
                ));
            };
            pieces.push(match &after[..close] {
                "app" => Piece::App,
                "stream" => Piece::Stream,
                "start" => Piece::Start,
                "ext" => Piece::Ext,
                other => {
                    return Err(bad(format!(
                        "only the placeholders {{app}}, {{stream}}, {{start}} and {{ext}}; \
                         {{{other}}} is unknown"
                    )))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        let path = Path::new(text);
        if text.is_empty() || path.is_absolute() || text.starts_with('/') {
            return Err(bad(
                "a relative path below record.dir (set the directory with record.dir)".into(),
            ));
        }
        if path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad("a path without '.' or '..' components".into()));
        }
        // Two live streams, or a stream that reconnects, must never share a file.
        if !pieces.contains(&Piece::Stream) || !pieces.contains(&Piece::Start) {
            return Err(bad(
                "a template containing {stream} and {start}, so that no two recordings \
                 share a file"
                    .into(),
            ));
        }
        Ok(PathTemplate {
            text: text.to_owned(),
            pieces,
        })
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `yyyymmdd-hhmmss` in UTC; times before 1970 clamp to the epoch.
fn utc_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard
/// Hinnant's `civil_from_days` algorithm (eras of 400 years).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parse one TOML document (`origin` names it in errors). The result is not yet
/// validated: overlays and command-line flags may still change it.
pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| parse_error(origin, text, &e))
}

/// Parse several documents, later ones overriding the keys they set in earlier ones
/// (tables merge key by key; arrays and scalars are replaced whole).
pub fn parse_layers<'a>(
    layers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::new();
    let mut count = 0;
    for (origin, text) in layers {
        // Parse each layer alone first: errors then carry its name, line and column.
        parse(origin, text)?;
        let table: toml::Table = toml::from_str(text).map_err(|e| parse_error(origin, text, &e))?;
        merge(&mut merged, table);
        count += 1;
    }
    if count == 0 {
        return Ok(Config::default());
    }
    Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError::Parse {
        origin: "<overlay>".to_owned(),
        line: None,
        column: None,
        key: None,
        message: plain_message(e.message()),
    })
}

fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn parse_error(origin: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let (line, column) = match &span {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError::Parse {
        origin: origin.to_owned(),
        line,
        column,
        key: span.and_then(|s| key_at(text, s)),
        message: plain_message(err.message()),
    }
}

/// toml's message on one line, with Rust type names replaced by the values they take.
fn plain_message(message: &str) -> String {
    const TYPES: [(&str, &str); 5] = [
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 9223372036854775807",
        ),
        (
            "expected usize",
            "expected a whole number from 0 to 9223372036854775807",
        ),
        ("expected a boolean", "expected true or false"),
    ];
    let mut text = message.trim().lines().collect::<Vec<_>>().join("; ");
    for (rust, plain) in TYPES {
        if let Some(at) = text.rfind(rust) {
            if text[at + rust.len()..].is_empty() {
                text.replace_range(at.., plain);
            }
        }
    }
    text
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

type SpannedTable = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;

/// The `section.key` whose key or value contains `span`: toml's errors carry a
/// position but do not expose the key path, so find it in a spanned reading of the
/// same document. Every key of our schema sits exactly one table deep.
fn key_at(text: &str, span: Range<usize>) -> Option<String> {
    let within = |r: Range<usize>| r.start <= span.start && span.start < r.end.max(r.start + 1);
    let in_section = |section: &str, table: &SpannedTable| {
        table
            .iter()
            .find(|(key, value)| within(key.span()) || within(value.span()))
            .map(|(key, _)| format!("{section}.{}", key.get_ref()))
    };
    // Tables written with dotted keys (`rtmp.port = 1` at the root) have no span of
    // their own, so the spanned reading of sections can fail; then read without it.
    type Sections = BTreeMap<toml::Spanned<String>, toml::Spanned<SpannedTable>>;
    if let Ok(doc) = toml::from_str::<Sections>(text) {
        return doc.iter().find_map(|(section, table)| {
            in_section(section.get_ref(), table.get_ref())
                .or_else(|| within(section.span()).then(|| section.get_ref().clone()))
        });
    }
    let doc: BTreeMap<String, SpannedTable> = toml::from_str(text).ok()?;
    doc.iter()
        .find_map(|(section, table)| in_section(section, table))
}

impl Config {
    /// Check ranges and the relations between settings; the first problem found is
    /// returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.rtmp.validate()?;
        self.http.validate()?;
        if self.rtmp.enabled && self.http.enabled && self.rtmp.port == self.http.port {
            return Err(invalid(
                "http.port",
                self.http.port,
                format!("a port different from rtmp.port ({})", self.rtmp.port),
            ));
        }
        self.streams.validate()?;
        self.hls.validate()?;
        self.record.validate()
    }

    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }
}

fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let expected = format!("{what} from {} to {}", range.start(), range.end());
    Err(invalid(key, value, expected))
}

const MS: &str = "a whole number of milliseconds";
const BYTES: &str = "a number of bytes";

fn check_port(key: &str, port: u16) -> Result<(), ConfigError> {
    check_range(key, port, 1..=u16::MAX, "a TCP port")
}

/// App names become the first part of a [`StreamKey`], so they obey its rules.
fn check_apps(key: &str, apps: &[String]) -> Result<(), ConfigError> {
    for (i, app) in apps.iter().enumerate() {
        if let Err(e) = StreamKey::new(app, "x") {
            return Err(invalid(
                &format!("{key}[{i}]"),
                format!("\"{app}\""),
                format!("an app name usable in a stream key ({e})"),
            ));
        }
    }
    Ok(())
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Cores::List(list) = &self.cores {
            if list.is_empty() {
                return Err(invalid("server.cores", "\"\"", CORES_EXPECTED));
            }
        }
        check_log_filter(&self.log_level)
            .map_err(|why| invalid("server.log_level", format!("\"{}\"", self.log_level), why))?;
        check_range(
            "server.shutdown_timeout_ms",
            self.shutdown_timeout_ms,
            0..=600_000,
            MS,
        )?;
        if let Some(name) = &self.node_name {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    "server.node_name",
                    format!("\"{name}\""),
                    "1 to 64 ASCII letters, digits, '-', '_' or '.' (it appears in metric labels)",
                ));
            }
        }
        Ok(())
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why `filter` is not a usable tracing filter. A bare word that is not a level is
/// legal for `EnvFilter` (it enables one target at every level) but in a config file
/// it is nearly always a misspelt level that would silence all other logging.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const FORM: &str = "a tracing filter such as \"info\" or \"info,shardcast_proto=debug\"";
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "{FORM}; '{directive}' is not a level ({}) nor target=level",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| format!("{FORM} ({e})"))
}

impl RtmpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_port("rtmp.port", self.port)?;
        check_range("rtmp.chunk_size", self.chunk_size, 128..=65_536, BYTES)?;
        // The message length field is 24 bits: nothing larger can arrive anyway.
        check_range(
            "rtmp.max_message_bytes",
            self.max_message_bytes,
            64 * 1024..=16 * MIB as u32,
            BYTES,
        )?;
        check_apps("rtmp.apps", &self.apps)?;
        check_range(
            "rtmp.ack_window_bytes",
            self.ack_window_bytes,
            4096..=i32::MAX as u32,
            BYTES,
        )
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_port("http.port", self.port)?;
        check_range(
            "http.max_request_head_bytes",
            self.max_request_head_bytes,
            1024..=65_536,
            BYTES,
        )?;
        let origin = &self.cors_allow_origin;
        // The value is copied into a response header: refuse anything that could
        // split it or that browsers would reject anyway.
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let ok = origin.is_empty()
            || origin == "*"
            || host.is_some_and(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
        if !ok {
            return Err(invalid(
                "http.cors_allow_origin",
                format!("\"{origin}\""),
                "\"*\", \"\" (no CORS header) or one origin such as \"https://example.com\"",
            ));
        }
        Ok(())
    }
}

impl StreamsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let slots = self.ring_slots;
        if !(16..=65_536).contains(&slots) || !slots.is_power_of_two() {
            return Err(invalid(
                "streams.ring_slots",
                slots,
                "a power of two from 16 to 65536",
            ));
        }
        check_range(
            "streams.gop_cache_bytes",
            self.gop_cache_bytes,
            256 * 1024..=1024 * MIB,
            BYTES,
        )?;
        check_range(
            "streams.reconnect_grace_ms",
            self.reconnect_grace_ms,
            0..=300_000,
            MS,
        )?;
        check_range(
            "streams.idle_timeout_ms",
            self.idle_timeout_ms,
            1000..=3_600_000,
            MS,
        )?;
        check_range(
            "streams.lag_skips_before_disconnect",
            self.lag_skips_before_disconnect,
            0..=1000,
            "a count",
        )?;
        check_range(
            "streams.lag_window_ms",
            self.lag_window_ms,
            1000..=3_600_000,
            MS,
        )?;
        check_range("streams.write_delay_ms", self.write_delay_ms, 0..=500, MS)?;
        check_range(
            "streams.max_write_delay_ms",
            self.max_write_delay_ms,
            self.write_delay_ms..=1000,
            MS,
        )?;
        check_range(
            "streams.send_stall_timeout_ms",
            self.send_stall_timeout_ms,
            1000..=600_000,
            MS,
        )?;
        check_range(
            "streams.feed_batch_us",
            self.feed_batch_us,
            0..=50_000,
            "a whole number of microseconds",
        )?;
        if let Some(bytes) = self.viewer_send_buffer_bytes {
            check_range(
                "streams.viewer_send_buffer_bytes",
                bytes,
                4096..=64 * MIB as u32,
                BYTES,
            )?;
        }
        Ok(())
    }
}

impl HlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("hls.segment_ms", self.segment_ms, 500..=60_000, MS)?;
        check_range("hls.part_ms", self.part_ms, 100..=1000, MS)?;
        check_range(
            "hls.window_segments",
            self.window_segments,
            3..=1000,
            "a count",
        )?;
        if self.enabled && !self.ts && !self.ll {
            return Err(invalid(
                "hls.ll",
                false,
                "true, or hls.ts = true: with both off HLS serves nothing (set hls.enabled = false)",
            ));
        }
        if self.ll && self.part_ms * 2 > self.segment_ms {
            return Err(invalid(
                "hls.part_ms",
                self.part_ms,
                format!(
                    "at most half of hls.segment_ms ({}), so each segment has several parts",
                    self.segment_ms
                ),
            ));
        }
        // RFC 8216bis 6.2.5.2: a blocked reload must be able to outlast a few parts,
        // and past three target durations the server should answer 503 instead.
        let target_ms = self.segment_ms.div_ceil(1000) * 1000;
        let (lo, hi) = (3 * self.part_ms + 1, 3 * target_ms);
        if self.ll && !(lo..=hi).contains(&self.blocking_timeout_ms) {
            return Err(invalid(
                "hls.blocking_timeout_ms",
                self.blocking_timeout_ms,
                format!(
                    "{MS} from {lo} (more than 3 x hls.part_ms) to {hi} \
                     (3 x the target duration of hls.segment_ms)"
                ),
            ));
        }
        Ok(())
    }
}

impl RecordConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_apps("record.apps", &self.apps)?;
        if self.dir.as_os_str().is_empty() {
            return Err(invalid(
                "record.dir",
                "\"\"",
                "a directory path such as \"recordings\" or \"/var/lib/shardcast/recordings\"",
            ));
        }
        if self.rotate_ms != 0 {
            check_range("record.rotate_ms", self.rotate_ms, 10_000..=86_400_000, MS)
                .map_err(|e| with_zero_allowed(e, "0 (never rotate) or "))?;
        }
        check_range("record.fsync_ms", self.fsync_ms, 0..=60_000, MS)
    }
}

fn with_zero_allowed(err: ConfigError, prefix: &str) -> ConfigError {
    match err {
        ConfigError::Invalid {
            key,
            value,
            expected,
        } => ConfigError::Invalid {
            key,
            value,
            expected: format!("{prefix}{expected}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse_ok(text: &str) -> Config {
        let config = parse("test.toml", text).unwrap();
        config.validate().unwrap();
        config
    }

    /// The validation error for `text`, as (key, message).
    fn invalid_key(text: &str) -> (String, String) {
        let err = parse("test.toml", text)
            .and_then(|c| c.validate())
            .expect_err("config should be refused");
        let message = err.to_string();
        match err {
            ConfigError::Invalid { key, .. } => (key, message),
            ConfigError::Parse { key, .. } => (key.unwrap_or_default(), message),
            other => panic!("unexpected error kind: {other}"),
        }
    }

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
    fn defaults_round_trip_through_toml() {
        let mut config = Config::default();
        assert_eq!(parse_ok(&config.to_toml().unwrap()), config);
        config.server.cores = Cores::List(vec![0, 1, 2, 5]);
        config.server.node_name = Some("edge-1".into());
        config.streams.viewer_send_buffer_bytes = Some(1 << 20);
        config.record.format = RecordFormat::Fmp4;
        config.rtmp.play_missing = PlayMissing::Wait;
        assert_eq!(parse_ok(&config.to_toml().unwrap()), config);
    }

    #[test]
    fn cores_parse_sorted_and_deduplicated() {
        assert_eq!("all".parse::<Cores>().unwrap(), Cores::All);
        assert_eq!(
            "8, 0-3,2,3-4".parse::<Cores>().unwrap(),
            Cores::List(vec![0, 1, 2, 3, 4, 8])
        );
        let cores: Cores = "6,0-3,8,9,10".parse().unwrap();
        assert_eq!(cores.to_string(), "0-3,6,8-10");
        assert_eq!(cores.to_string().parse::<Cores>().unwrap(), cores);
        // Overlapping ranges cost no more than one.
        let many = vec!["0-8191"; 10_000].join(",");
        assert_eq!(many.parse::<Cores>().unwrap().to_string(), "0-8191");
    }

    #[test]
    fn bad_cores_name_the_key_and_the_form() {
        for bad in ["", "x", "3-1", "0-", "1,,2", "-1", "0-100000000000", "1.5"] {
            let err = bad.parse::<Cores>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("server.cores = \"{bad}\": expected")),
                "{err}"
            );
            assert!(err.contains("\"0-3,8\""), "{err}");
        }
        let (key, message) = invalid_key("[server]\ncores = \"0-x\"\n");
        assert_eq!(key, "server.cores");
        assert!(message.contains("test.toml:2:9"), "{message}");
    }

    #[test]
    fn cores_resolve_against_online_cpus() {
        let online = [0, 1, 2, 3];
        assert_eq!(Cores::All.resolve(&online).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            Cores::List(vec![1, 3]).resolve(&online).unwrap(),
            vec![1, 3]
        );
        let err = Cores::List(vec![1, 7])
            .resolve(&online)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CPU 7 is not one of them"), "{err}");
        assert!(err.contains("(0-3)"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_section() {
        let (key, message) = invalid_key("[rtmp]\nport = 1936\nchunksize = 4096\n");
        assert_eq!(key, "rtmp.chunksize");
        assert!(message.contains("unknown field `chunksize`"), "{message}");
        assert!(message.contains("test.toml:3:1"), "{message}");
        let (key, message) = invalid_key("[rtpm]\nport = 1\n");
        assert_eq!(key, "rtpm");
        assert!(message.contains("unknown field `rtpm`"), "{message}");
    }

    #[test]
    fn wrong_types_name_the_key_and_position() {
        let (key, message) = invalid_key("[http]\nenabled = true\nport = \"8080\"\n");
        assert_eq!(key, "http.port");
        assert!(
            message.starts_with("test.toml:3:8: http.port: invalid type"),
            "{message}"
        );
        let (key, _) = invalid_key("[rtmp]\napps = [\n  \"live\",\n  5,\n]\n");
        assert_eq!(key, "rtmp.apps");
        let (key, message) = invalid_key("[server]\nlog_format = \"xml\"\n");
        assert_eq!(key, "server.log_format");
        assert!(message.contains("`human`"), "{message}");
    }

    #[test]
    fn syntax_errors_keep_line_and_column() {
        let err = parse("a.toml", "[server]\nbind = \n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("a.toml:2:8: invalid string; expected"),
            "{err}"
        );
        let err = parse("a.toml", "[rtmp]\n[rtmp]\n").unwrap_err().to_string();
        assert!(err.contains("duplicate key `rtmp`"), "{err}");
        // Dotted keys at the root resolve to the same key path.
        let (key, _) = invalid_key("rtmp.port = \"x\"\n");
        assert_eq!(key, "rtmp.port");
    }

    #[test]
    fn out_of_range_values_name_key_value_and_range() {
        assert_eq!(
            invalid_key("[hls]\npart_ms = 50\n").1,
            "hls.part_ms = 50: expected a whole number of milliseconds from 100 to 1000"
        );
        assert_eq!(
            invalid_key("[rtmp]\nchunk_size = 100\n").1,
            "rtmp.chunk_size = 100: expected a number of bytes from 128 to 65536"
        );
        assert_eq!(
            invalid_key("[rtmp]\nport = 0\n").1,
            "rtmp.port = 0: expected a TCP port from 1 to 65535"
        );
        // Too big for the type: toml/serde's own message, still with the key.
        assert_eq!(
            invalid_key("[http]\nport = 70000\n").1,
            "test.toml:2:8: http.port: invalid value: integer `70000`, \
             expected a whole number from 0 to 65535"
        );
        assert_eq!(
            invalid_key("[streams]\nwrite_delay_ms = 501\n").0,
            "streams.write_delay_ms"
        );
    }

    #[test]
    fn ring_slots_must_be_a_power_of_two() {
        assert_eq!(
            invalid_key("[streams]\nring_slots = 1000\n").1,
            "streams.ring_slots = 1000: expected a power of two from 16 to 65536"
        );
        assert_eq!(
            parse_ok("[streams]\nring_slots = 4096\n")
                .streams
                .ring_slots,
            4096
        );
    }

    #[test]
    fn hls_relations_are_checked() {
        let (key, message) = invalid_key("[hls]\npart_ms = 300\nblocking_timeout_ms = 900\n");
        assert_eq!(key, "hls.blocking_timeout_ms");
        assert!(message.contains("from 901"), "{message}");
        let (key, _) = invalid_key("[hls]\nblocking_timeout_ms = 7000\n");
        assert_eq!(key, "hls.blocking_timeout_ms");
        let (key, _) = invalid_key("[hls]\nsegment_ms = 1000\npart_ms = 600\n");
        assert_eq!(key, "hls.part_ms");
        assert_eq!(invalid_key("[hls]\nts = false\nll = false\n").0, "hls.ll");
        // Without LL-HLS, parts and blocking reloads do not apply.
        parse_ok("[hls]\nll = false\nsegment_ms = 1000\npart_ms = 600\nblocking_timeout_ms = 1\n");
        parse_ok("[hls]\nenabled = false\nts = false\nll = false\n");
    }

    #[test]
    fn ports_must_differ() {
        assert_eq!(invalid_key("[http]\nport = 1935\n").0, "http.port");
        parse_ok("[http]\nport = 1935\n[rtmp]\nenabled = false\n");
    }

    #[test]
    fn apps_and_strings_are_checked() {
        assert_eq!(
            invalid_key("[rtmp]\napps = [\"live\", \"a/b\"]\n").0,
            "rtmp.apps[1]"
        );
        assert_eq!(
            invalid_key("[record]\napps = [\"..\"]\n").0,
            "record.apps[0]"
        );
        assert_eq!(
            invalid_key("[http]\ncors_allow_origin = \"x\\r\\nSet-Cookie: a\"\n").0,
            "http.cors_allow_origin"
        );
        parse_ok("[http]\ncors_allow_origin = \"https://player.example.com:8443\"\n");
        assert_eq!(
            invalid_key("[server]\nnode_name = \"a b\"\n").0,
            "server.node_name"
        );
        assert_eq!(
            invalid_key("[server]\nlog_level = \"inof\"\n").0,
            "server.log_level"
        );
        assert_eq!(
            invalid_key("[server]\nbind = \"localhost\"\n").0,
            "server.bind"
        );
        parse_ok("[server]\nlog_level = \"warn,shardcast_proto::rtmp=debug\"\nbind = \"::\"\n");
    }

    #[test]
    fn record_path_placeholders_are_checked() {
        let (key, message) = invalid_key("[record]\npath = \"{app}/{stream}-{date}.{ext}\"\n");
        assert_eq!(key, "record.path");
        assert!(message.contains("{date} is unknown"), "{message}");
        for bad in [
            "{stream}/{start",
            "{stream}}{start}",
            "/abs/{stream}{start}",
            "../{stream}{start}",
            "{app}.{ext}",
        ] {
            let err = bad.parse::<PathTemplate>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("record.path = \"{bad}\"")),
                "{err}"
            );
        }
        assert_eq!(
            invalid_key("[record]\nrotate_ms = 500\n").0,
            "record.rotate_ms"
        );
    }

    #[test]
    fn record_path_renders_utc_start() {
        let key = StreamKey::new("live", "cam-1").unwrap();
        // 2024-02-29T23:59:58Z, a leap day.
        let start = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        let record = parse_ok("[record]\nenabled = true\nformat = \"fmp4\"\n").record;
        assert_eq!(
            record.file_path(&key, start),
            PathBuf::from("recordings/live/cam-1/20240229-235958.mp4")
        );
        assert!(record.records_app("live"));
        assert!(!record.records_app("other"));
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229-000000"
        );
    }

    #[test]
    fn layers_merge_tables_and_replace_values() {
        let base = "[rtmp]\nport = 1936\napps = [\"a\", \"b\"]\n[hls]\nsegment_ms = 4000\n";
        let top = "[rtmp]\napps = [\"c\"]\n[hls]\npart_ms = 500\n";
        let config = parse_layers([("base.toml", base), ("top.toml", top)]).unwrap();
        assert_eq!(config.rtmp.port, 1936);
        assert_eq!(config.rtmp.apps, vec!["c".to_owned()]);
        assert_eq!((config.hls.segment_ms, config.hls.part_ms), (4000, 500));
        let err = parse_layers([("base.toml", base), ("top.toml", "[hls]\npart = 1\n")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("top.toml:2:1: hls.part: unknown field"),
            "{err}"
        );
        assert_eq!(parse_layers([]).unwrap(), Config::default());
    }
}
