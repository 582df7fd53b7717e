//! Validation: the ranges of single keys and the relations between keys (ports that
//! must differ, LL-HLS parts that must fit in a segment). The first problem found is
//! returned as [`ConfigError::Invalid`], naming the key, the value and what is accepted.

use std::fmt;

use proto::media::StreamKey;

use super::cores::CORES_EXPECTED;
use super::error::invalid;
use super::schema::MIB;
use super::{
    Config, ConfigError, Cores, HlsConfig, HttpConfig, RecordConfig, RtmpConfig, ServerConfig,
    StreamsConfig,
};

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
        self.limits.validate()?;
        self.validate_access()?;
        self.record.validate()
    }
}

pub(super) fn check_range<T: PartialOrd + fmt::Display>(
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
    use crate::server::config::load::tests::{invalid_key, parse_ok};

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
        parse_ok("[server]\nlog_level = \"warn,shardcast_proto::rtmp=debug\"\nbind = \"::\"\n[auth]\npublish = false\n");
    }

    #[test]
    fn record_rotate_ms_is_checked() {
        assert_eq!(
            invalid_key("[record]\nrotate_ms = 500\n").0,
            "record.rotate_ms"
        );
    }
}
