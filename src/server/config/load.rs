//! TOML in and out: parsing one document or a stack of overlays (tables merge key by
//! key), mapping toml's errors to [`ConfigError::Parse`] with the file, line, column and
//! key path, and printing the effective configuration.
//!
//! Parsing is pure (text in, [`Config`] or [`ConfigError`] out): reading the files and
//! applying command-line overrides live in [`crate::server::cli`].

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;

use super::{Config, ConfigError};

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
    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::server::config::{Cores, PlayMissing, RecordFormat};

    /// `text` parsed and validated; panics if either fails.
    pub(in crate::server::config) fn parse_ok(text: &str) -> Config {
        let config = parse("test.toml", text).unwrap();
        config.validate().unwrap();
        config
    }

    /// The validation error for `text`, as (key, message).
    pub(in crate::server::config) fn invalid_key(text: &str) -> (String, String) {
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
