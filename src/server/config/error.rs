//! [`ConfigError`], the one error type of configuration loading and validation, and the
//! helper that builds its `key = value: expected ...` form.

use std::fmt;
use std::path::PathBuf;

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
    /// `shardcast token` could not mint (no keys, an unreadable secret, a bad flag).
    #[error("cannot mint a token: {0}")]
    Token(String),
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

pub(super) fn invalid(
    key: &str,
    value: impl fmt::Display,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        expected: expected.into(),
    }
}
