//! Process-wide logging: a tracing subscriber writing to stderr, readable lines or
//! JSON lines, filtered by `server.log_level` unless `RUST_LOG` is set.
//!
//! Call [`init`] once, after the configuration is loaded and before the shards start.
//! Under systemd, stderr goes to the journal; JSON suits log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{origin} = \"{filter}\" is not a usable tracing filter: {why}")]
    BadFilter {
        origin: &'static str,
        filter: String,
        why: String,
    },
    #[error("logging was already initialised in this process")]
    AlreadyInitialised,
}

/// The filter text to use and where it came from: `RUST_LOG` wins when set and not
/// blank, so an operator can turn on debug output without editing the config.
fn choose_filter<'a>(level: &'a str, rust_log: Option<&'a str>) -> (&'static str, &'a str) {
    match rust_log {
        Some(env) if !env.trim().is_empty() => ("RUST_LOG", env),
        _ => ("server.log_level", level),
    }
}

fn build_filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let (origin, filter) = choose_filter(level, rust_log);
    let bad = |why: String| LoggingError::BadFilter {
        origin,
        filter: filter.to_owned(),
        why,
    };
    super::config::check_log_filter(filter).map_err(bad)?;
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| bad(e.to_string()))
}

/// Install the global subscriber. `level` is `server.log_level`; a non-empty
/// `RUST_LOG` replaces it.
pub fn init(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = build_filter(level, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // Spans as fields of each line, so a shipper can filter by stream or peer.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_overrides_the_configured_level() {
        assert_eq!(choose_filter("info", None), ("server.log_level", "info"));
        assert_eq!(
            choose_filter("info", Some("  ")),
            ("server.log_level", "info")
        );
        assert_eq!(choose_filter("info", Some("debug")), ("RUST_LOG", "debug"));
        let filter = build_filter("info", Some("warn,shardcast=trace")).unwrap();
        assert_eq!(filter.to_string(), "shardcast=trace,warn");
    }

    #[test]
    fn bad_filters_say_where_they_came_from() {
        let err = build_filter("info", Some("inof")).unwrap_err().to_string();
        assert!(err.starts_with("RUST_LOG = \"inof\""), "{err}");
        let err = build_filter("shardcast=loud", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("server.log_level = \"shardcast=loud\""),
            "{err}"
        );
    }

    #[test]
    fn second_init_is_an_error_not_a_panic() {
        // The first call may lose a race with another test's subscriber; either way
        // the second one must report AlreadyInitialised.
        let _ = init(LogFormat::Json, "warn");
        assert!(matches!(
            init(LogFormat::Human, "info"),
            Err(LoggingError::AlreadyInitialised)
        ));
    }
}
