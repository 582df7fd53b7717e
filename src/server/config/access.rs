//! Access control: `[auth]` (signed tokens for publish and play, the signing keys,
//! per-app overrides), `[hooks]` (HTTP webhooks that allow or deny, and notifications),
//! `[audit]` (one JSON line per decision) and the API's bearer token in `[http]`.
//!
//! The schema, its defaults and its validation live here; reading the secret files is
//! `server::access::keys`, the checks are `proto::auth` and `server::access`. Nothing
//! here touches a file or the network: a hook URL is parsed, not resolved.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use proto::media::StreamKey;

use super::error::invalid;
use super::validate::check_range;
use super::{Config, ConfigError};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Publishing needs a valid `publish` token. Unset: required as soon as
    /// `server.bind` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// Playing (RTMP, HTTP-FLV, HLS, LL-HLS) needs a valid `play` token; default false.
    pub play: bool,
    /// Signing keys, all accepted at once so that secrets can rotate; `shardcast
    /// token` signs with the first unless `--key-id` says otherwise.
    pub keys: Vec<KeyConfig>,
    /// Per-app overrides of `publish` and `play`: `[auth.apps.live] play = true`.
    pub apps: BTreeMap<String, AppAuthConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// Names the key in tokens: 1 to 32 ASCII letters, digits, '-' or '_'.
    pub id: String,
    /// A file holding the secret (trailing whitespace ignored, at least 16 bytes). It
    /// must not be readable by every user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Or an environment variable holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppAuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub play: Option<bool>,
}

impl Config {
    /// Whether publishing in `app` needs a token.
    pub fn publish_needs_token(&self, app: &str) -> bool {
        self.auth
            .apps
            .get(app)
            .and_then(|a| a.publish)
            .or(self.auth.publish)
            .unwrap_or(!self.server.bind.is_loopback())
    }

    /// Whether playing in `app` needs a token.
    pub fn play_needs_token(&self, app: &str) -> bool {
        self.auth
            .apps
            .get(app)
            .and_then(|a| a.play)
            .unwrap_or(self.auth.play)
    }

    /// Whether `/api/*` (and `/metrics`, unless `http.metrics_public`) needs the bearer
    /// token.
    pub fn api_needs_token(&self) -> bool {
        self.http
            .api_auth
            .unwrap_or(!self.server.bind.is_loopback())
    }

    /// Start-up warnings about access control an operator chose to weaken.
    pub fn access_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let public = !self.server.bind.is_loopback();
        if public && self.auth.publish == Some(false) && self.hooks.on_publish.is_none() {
            out.push(format!(
                "auth.publish = false while listening on {}: anyone who reaches the RTMP \
                 port can publish any stream; set auth.publish = true or configure \
                 hooks.on_publish",
                self.server.bind
            ));
        }
        if self.api_needs_token() && self.http.api && self.http.api_token_file.is_none() {
            out.push(
                "the HTTP API needs a bearer token here but http.api_token_file is not \
                 set: every /api request is refused with 401"
                    .to_owned(),
            );
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Before a publish is accepted; a 2xx answer allows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_publish: Option<HookConfig>,
    /// After a publisher leaves (notification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_unpublish: Option<HookConfig>,
    /// Before a play is accepted (RTMP, HTTP-FLV, and an HLS multivariant playlist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_play: Option<HookConfig>,
    /// After an RTMP or HTTP-FLV viewer leaves (notification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<HookConfig>,
    /// After a recording file is closed (notification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_record_done: Option<HookConfig>,
    /// Hook calls one shard runs at once; a decision past it gets the hook's `fail`
    /// policy at once, a notification past it is dropped (and counted); default 256.
    pub max_in_flight_per_shard: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_publish: None,
            on_unpublish: None,
            on_play: None,
            on_stop: None,
            on_record_done: None,
            max_in_flight_per_shard: 256,
        }
    }
}

impl HooksConfig {
    /// Every configured hook with its config key.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &HookConfig)> {
        [
            ("hooks.on_publish", &self.on_publish),
            ("hooks.on_unpublish", &self.on_unpublish),
            ("hooks.on_play", &self.on_play),
            ("hooks.on_stop", &self.on_stop),
            ("hooks.on_record_done", &self.on_record_done),
        ]
        .into_iter()
        .filter_map(|(k, h)| h.as_ref().map(|h| (k, h)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// `http://HOST[:PORT]/PATH`; a host name is resolved once, at start.
    pub url: HookUrl,
    /// One attempt (connect, request and answer) must finish within this; default 2000.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first when one fails (no answer, or a 5xx); a 4xx is an
    /// answer and is not retried; default 1.
    #[serde(default = "default_hook_retries")]
    pub retries: u32,
    /// What a decision hook (`on_publish`, `on_play`) does when every attempt failed:
    /// `closed` refuses, `open` allows; default closed.
    #[serde(default)]
    pub fail: HookFailure,
}

fn default_hook_timeout_ms() -> u64 {
    2000
}

fn default_hook_retries() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFailure {
    #[default]
    Closed,
    Open,
}

/// A hook's address: plain HTTP (the hook runs on this host or a trusted network; put a
/// local proxy in front of an HTTPS endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl fmt::Display for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

const HOOK_URL_EXPECTED: &str = "an http:// URL such as \"http://127.0.0.1:8085/on_publish\" \
    (https is not supported: run the hook locally or put a local proxy in front)";

impl FromStr for HookUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<HookUrl, ConfigError> {
        let bad = || invalid("url", format!("\"{s}\""), HOOK_URL_EXPECTED);
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 80,
                None => return Err(bad()),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, 80),
            }
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
        // The path goes into the request line as it is.
        let path_ok = path.bytes().all(|b| b.is_ascii_graphic());
        if !host_ok || !path_ok || port == 0 {
            return Err(bad());
        }
        Ok(HookUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

super::schema::serde_via_string!(HookUrl);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Write one JSON line per access decision; default true.
    pub enabled: bool,
    /// Append the lines to this file; unset: to the log (target `audit`, level info).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            file: None,
        }
    }
}

const KEY_ID_EXPECTED: &str = "1 to 32 ASCII letters, digits, '-' or '_'";

impl Config {
    pub(super) fn validate_access(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        for (i, k) in auth.keys.iter().enumerate() {
            let key = format!("auth.keys[{i}]");
            let id_ok = (1..=32).contains(&k.id.len())
                && k.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !id_ok {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("\"{}\"", k.id),
                    KEY_ID_EXPECTED,
                ));
            }
            if auth.keys[..i].iter().any(|o| o.id == k.id) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("\"{}\"", k.id),
                    "a key id not used by an earlier key",
                ));
            }
            match (&k.secret_file, &k.secret_env) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        &key,
                        format!("id \"{}\"", k.id),
                        "exactly one of secret_file or secret_env",
                    ))
                }
            }
        }
        for app in auth.apps.keys() {
            if StreamKey::new(app, "x").is_err() {
                return Err(invalid(
                    &format!("auth.apps.{app}"),
                    format!("\"{app}\""),
                    "an app name usable in a stream key",
                ));
            }
        }
        // A requirement nobody can meet is a configuration error, not a silent
        // refusal of every publisher.
        let apps: Vec<&str> = std::iter::once("")
            .chain(auth.apps.keys().map(String::as_str))
            .chain(self.rtmp.apps.iter().map(String::as_str))
            .collect();
        if auth.keys.is_empty() {
            if let Some(app) = apps.iter().find(|a| self.publish_needs_token(a)) {
                let why = if auth.publish.is_none() && !self.server.bind.is_loopback() {
                    format!(
                        "publishing needs a token because server.bind = {} is not loopback",
                        self.server.bind
                    )
                } else {
                    "publishing needs a token".to_owned()
                };
                let scope = if app.is_empty() {
                    String::new()
                } else {
                    format!(" (app '{app}')")
                };
                return Err(invalid(
                    "auth.keys",
                    "[]",
                    format!(
                        "at least one [[auth.keys]] entry: {why}{scope}; add a key (see the \
                         README, \"Access control\") or set auth.publish = false"
                    ),
                ));
            }
            if apps.iter().any(|a| self.play_needs_token(a)) {
                return Err(invalid(
                    "auth.keys",
                    "[]",
                    "at least one [[auth.keys]] entry: playing needs a token (auth.play)",
                ));
            }
        }
        for (key, hook) in self.hooks.all() {
            check_range(
                &format!("{key}.timeout_ms"),
                hook.timeout_ms,
                50..=60_000,
                "a whole number of milliseconds",
            )?;
            check_range(&format!("{key}.retries"), hook.retries, 0..=5, "a count")?;
        }
        check_range(
            "hooks.max_in_flight_per_shard",
            self.hooks.max_in_flight_per_shard,
            1..=65_536,
            "a count",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::load::tests::parse_ok;

    fn key(id: &str) -> KeyConfig {
        KeyConfig {
            id: id.to_owned(),
            secret_file: Some("/etc/shardcast/k.secret".into()),
            secret_env: None,
        }
    }

    #[test]
    fn publishing_needs_a_token_by_default_beyond_loopback_only() {
        let mut c = Config::default();
        assert!(!c.publish_needs_token("live"));
        assert!(!c.api_needs_token());
        c.server.bind = "0.0.0.0".parse().unwrap();
        assert!(c.publish_needs_token("live"));
        assert!(c.api_needs_token());
        // Without a key nobody could publish: refused with a way out.
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.keys") && e.contains("not loopback"), "{e}");
        c.auth.keys.push(key("k1"));
        c.validate().unwrap();
        assert!(c
            .access_warnings()
            .iter()
            .any(|w| w.contains("api_token_file")));
        c.auth.publish = Some(false);
        assert!(!c.publish_needs_token("live"));
        assert!(c
            .access_warnings()
            .iter()
            .any(|w| w.contains("auth.publish = false")));
    }

    #[test]
    fn per_app_overrides_win() {
        let c = parse_ok(
            r#"
            [auth]
            publish = true
            [[auth.keys]]
            id = "k1"
            secret_env = "K1"
            [auth.apps.open]
            publish = false
            [auth.apps.paid]
            play = true
            "#,
        );
        c.validate().unwrap();
        assert!(c.publish_needs_token("live"));
        assert!(!c.publish_needs_token("open"));
        assert!(c.play_needs_token("paid"));
        assert!(!c.play_needs_token("live"));
    }

    #[test]
    fn bad_keys_are_refused_by_name() {
        let mut c = Config::default();
        c.auth.keys = vec![key("k1"), key("k1")];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.keys[1].id"));
        c.auth.keys = vec![key("bad id")];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.keys[0].id"));
        let mut both = key("k2");
        both.secret_env = Some("X".into());
        c.auth.keys = vec![both];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
    }

    #[test]
    fn hook_urls_parse_or_name_the_problem() {
        let u: HookUrl = "http://127.0.0.1:8085/hooks/on_publish?x=1"
            .parse()
            .unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8085, "/hooks/on_publish?x=1")
        );
        let u: HookUrl = "http://[::1]:9/x".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.to_string(), "http://[::1]:9/x");
        let u: HookUrl = "http://hooks.internal".parse().unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        for bad in [
            "https://x/y",
            "ftp://x",
            "http://",
            "http://a b/",
            "http://x:0/",
            "http://x/a b",
        ] {
            assert!(bad.parse::<HookUrl>().is_err(), "{bad}");
        }
        let c = parse_ok(
            r#"
            [hooks.on_publish]
            url = "http://127.0.0.1:8085/p"
            fail = "open"
            "#,
        );
        let h = c.hooks.on_publish.as_ref().unwrap();
        assert_eq!(
            (h.timeout_ms, h.retries, h.fail),
            (2000, 1, HookFailure::Open)
        );
    }
}
