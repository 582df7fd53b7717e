//! The server configuration: the `shardcast.toml` schema, its defaults, parsing with
//! errors that name the key, overlays of several files, and validation of ranges and of
//! the relations between settings.
//!
//! Every field has a default, so an empty file (or none) is a complete configuration.
//! Unknown keys are errors: a typo must not silently fall back to a default. Parsing is
//! pure (text in, [`Config`] or [`ConfigError`] out); reading files and the command line
//! live in [`super::cli`], and this module touches neither the clock nor the network.
//!
//! - `schema.rs`: the serde structs of every section and their defaults;
//! - `load.rs`: parsing, overlays and the mapping of toml's errors to key paths;
//! - `validate.rs`: ranges and the relations between keys;
//! - `cores.rs`: the `server.cores` CPU-list parser;
//! - `path_template.rs`: `record.path` recording path templates;
//! - `error.rs`: [`ConfigError`];
//! - `limits.rs`: the `[limits]` section (admission and connection-phase timeouts),
//!   schema, defaults and validation together;
//! - `access.rs`: `[auth]`, `[hooks]` and `[audit]` (tokens, webhooks, the audit log),
//!   likewise.

mod access;
mod cores;
mod error;
mod limits;
mod load;
mod path_template;
mod schema;
mod validate;

pub use access::{
    AppAuthConfig, AuditConfig, AuthConfig, HookConfig, HookFailure, HookUrl, HooksConfig,
    KeyConfig,
};
pub use cores::Cores;
pub use error::ConfigError;
pub use limits::{Cidr, LimitsConfig};
pub use load::{parse, parse_layers};
pub use path_template::PathTemplate;
pub use schema::{
    Config, HlsConfig, HttpConfig, LogFormat, PlayMissing, RecordConfig, RecordFormat, RtmpConfig,
    ServerConfig, StreamsConfig,
};
pub use validate::check_log_filter;
