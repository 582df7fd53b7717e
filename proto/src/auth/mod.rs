//! Signed publish/play tokens: what a publisher or viewer presents to be let in, and
//! the one check ([`check`]) every protocol (RTMP, HTTP-FLV, HLS) makes with it.
//! Sans-IO like the rest of the crate: the secrets and `now` come from the caller, who
//! reads the key files and the clock; nothing here does.
//!
//! # Wire format v1
//!
//! ```text
//! token  = "v1." kid "." exp "." action "." scope "." sig
//! kid    = 1*32 of [A-Za-z0-9_-]            key id, names a secret in the server's keyring
//! exp    = 1*12 DIGIT                       Unix time in seconds; valid while now < exp
//! action = "publish" / "play"
//! scope  = base64url-without-padding(claim)
//! claim  = APP "/" STREAM                    exactly this stream
//!        / APP "/*"                           every stream of APP
//!          optionally followed by "@" IP      bound to that client address (IPv4 dotted or IPv6 as Rust's IpAddr Display prints it; parse with IpAddr::from_str)
//! sig    = base64url-without-padding(HMAC-SHA256(secret, everything before the last "."))   (always 43 chars)
//! ```
//!
//! APP and STREAM follow the [`StreamKey`] rules. A token is at most 512 bytes (the
//! longest one that can be minted is 497). Tokens contain only `[A-Za-z0-9._-]`, so
//! they need no escaping in URLs or RTMP stream names. The secret is the raw bytes
//! (the server strips trailing whitespace from the secret file before handing it
//! over); a secret shorter than 16 bytes is refused by the keyring.
//!
//! Each token has exactly one spelling, so a token that verifies is what
//! [`Keyring::mint`] makes from its claims: `exp` has no leading zeros (`0` itself
//! aside), base64url has no padding and no stray trailing bits, and `IP` is written as
//! `IpAddr`'s `Display` writes it. Anything else is [`Refusal::Malformed`].
//!
//! Minting from a shell (what the README shows; a unit test runs it):
//!
//! ```sh
//! secret=$(cat k1.secret)
//! scope=$(printf %s 'live/cam' | basenc --base64url | tr -d '=')
//! head="v1.k1.$(( $(date +%s) + 3600 )).publish.$scope"
//! echo "$head.$(printf %s "$head" | openssl dgst -sha256 -hmac "$secret" -binary | basenc --base64url | tr -d '=')"
//! ```
//!
//! # What this does not do
//! - No revocation list and no replay protection: a token is good for anyone holding
//!   it until `exp` (bind it to an address with `@IP` to narrow that). Keep lifetimes
//!   short and rotate keys by inserting the new one first, then removing the old one
//!   once its tokens have expired.
//! - No clock: the caller passes `now_unix` in every [`Request`].
//! - Where the token travels (the `token` query parameter, see [`token_in_query`]) is
//!   the drivers' business; [`crate::hls::with_query`] carries a viewer's token into
//!   the URIs of an HLS playlist.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod keyring;
mod query;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use keyring::{KeyError, Keyring};
pub use query::{query_without_token, token_in_query};

use crate::media::StreamKey;

/// The longest token [`Keyring::verify`] reads; longer input is [`Refusal::Malformed`].
pub const MAX_TOKEN_BYTES: usize = 512;

/// What a token allows: sending a stream or watching one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Publish,
    Play,
}

impl Action {
    /// The token's spelling: `publish` or `play`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of `"..".parse::<Action>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("action is neither 'publish' nor 'play'")]
pub struct ActionError;

impl FromStr for Action {
    type Err = ActionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publish" => Ok(Action::Publish),
            "play" => Ok(Action::Play),
            _ => Err(ActionError),
        }
    }
}

/// Which streams a token is good for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Exactly this stream (`live/cam`).
    Stream(StreamKey),
    /// Every stream of this app (`live/*`). The name must follow the [`StreamKey`]
    /// part rules, or [`Keyring::mint`] refuses it.
    App(String),
}

impl Scope {
    /// True when a token with this scope is good for `key`.
    pub fn covers(&self, key: &StreamKey) -> bool {
        match self {
            Scope::Stream(stream) => stream == key,
            Scope::App(app) => key.app() == app,
        }
    }

    /// Whether an `App` name follows the stream key rules (a `Stream` always does).
    fn is_valid(&self) -> bool {
        match self {
            Scope::Stream(_) => true,
            // A valid stream part stands in for the `*`.
            Scope::App(app) => StreamKey::new(app, "x").is_ok(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Stream(key) => write!(f, "{key}"),
            Scope::App(app) => write!(f, "{app}/*"),
        }
    }
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The keyring entry that signed it.
    pub key_id: String,
    /// Valid while `now_unix < expires_unix`.
    pub expires_unix: u64,
    pub action: Action,
    pub scope: Scope,
    /// The only client address it is good from, when bound.
    pub ip: Option<IpAddr>,
}

/// What a client asks to do, as the driver saw it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub action: Action,
    pub key: &'a StreamKey,
    /// The client's address (`None` when unknown, e.g. behind a proxy that does not
    /// say); a token bound to an address is then refused.
    pub peer_ip: Option<IpAddr>,
    /// The caller's clock, Unix seconds.
    pub now_unix: u64,
}

/// Why a token was refused. `Display` is meant for the client (an RTMP `_error`
/// description, an HTTP 401/403 body): it says what is wrong and what to do, and never
/// holds secret material. Everything from the token it shows (the key id) has passed
/// the format check, so it is short and made of `[A-Za-z0-9_-]`; it cannot forge a log
/// line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no token; add token=... (minted for this stream) to the URL query or the RTMP stream name"
    )]
    Missing,
    #[error("malformed token: {0}; expected v1.KID.EXP.ACTION.SCOPE.SIG as minted by the server")]
    Malformed(&'static str),
    #[error("token signed with key '{key_id}', which this server does not have; mint a new one")]
    UnknownKey { key_id: String },
    #[error("token signature does not match its content; mint a new one")]
    BadSignature,
    #[error("token expired {} s ago; mint a new one", now_unix.saturating_sub(*expired_unix))]
    Expired { expired_unix: u64, now_unix: u64 },
    #[error("token allows {allowed}, not {requested}; mint a {requested} token")]
    WrongAction { allowed: Action, requested: Action },
    #[error("token is for '{scope}', not stream '{stream}'; mint one for this stream")]
    WrongStream { scope: Scope, stream: StreamKey },
    #[error("token is bound to client address {bound}, not {}; mint one for this address", DisplayPeer(*peer))]
    WrongIp { bound: IpAddr, peer: Option<IpAddr> },
}

struct DisplayPeer(Option<IpAddr>);

impl fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("an unknown address"),
        }
    }
}

impl Refusal {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired { .. } => "expired",
            Refusal::WrongAction { .. } => "wrong_action",
            Refusal::WrongStream { .. } => "wrong_stream",
            Refusal::WrongIp { .. } => "wrong_ip",
        }
    }
}

/// The one check every protocol calls: `token` is what the client sent (`None` when
/// absent; an empty token counts as absent). Refusals come in this order: `Missing`,
/// `Malformed`, `UnknownKey`, `BadSignature`, `Expired`, `WrongAction`, `WrongStream`,
/// `WrongIp`, so nothing about the claims is told to a client that cannot sign.
///
/// Addresses compare after [`IpAddr::to_canonical`]: a dual-stack socket reports an
/// IPv4 client as `::ffff:a.b.c.d`, and that matches a token bound to `a.b.c.d`.
pub fn check(keys: &Keyring, token: Option<&str>, req: &Request) -> Result<Claims, Refusal> {
    let token = token.filter(|t| !t.is_empty()).ok_or(Refusal::Missing)?;
    let claims = keys.verify(token)?;
    if req.now_unix >= claims.expires_unix {
        return Err(Refusal::Expired {
            expired_unix: claims.expires_unix,
            now_unix: req.now_unix,
        });
    }
    if claims.action != req.action {
        return Err(Refusal::WrongAction {
            allowed: claims.action,
            requested: req.action,
        });
    }
    if !claims.scope.covers(req.key) {
        return Err(Refusal::WrongStream {
            scope: claims.scope,
            stream: req.key.clone(),
        });
    }
    if let Some(bound) = claims.ip {
        if req.peer_ip.map(|p| p.to_canonical()) != Some(bound.to_canonical()) {
            return Err(Refusal::WrongIp {
                bound,
                peer: req.peer_ip,
            });
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keys() -> Keyring {
        let mut keys = Keyring::new();
        keys.insert("k1", b"0123456789abcdef-one").unwrap();
        keys.insert("k2", b"0123456789abcdef-two").unwrap();
        keys
    }

    fn cam() -> StreamKey {
        StreamKey::new("live", "cam").unwrap()
    }

    fn play(key: &StreamKey, peer: Option<IpAddr>) -> Request<'_> {
        Request {
            action: Action::Play,
            key,
            peer_ip: peer,
            now_unix: NOW,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn mint(scope: &Scope, action: Action, bound: Option<IpAddr>, exp: u64) -> String {
        keys().mint(None, action, scope, bound, exp).unwrap()
    }

    #[test]
    fn stream_app_and_ip_scopes_round_trip() {
        let keys = keys();
        let cam = cam();
        let other = StreamKey::new("live", "other").unwrap();
        let stream = Scope::Stream(cam.clone());
        let app = Scope::App("live".into());
        for (scope, bound, key, peer) in [
            (&stream, None, &cam, None),
            (&app, None, &other, Some(ip("192.0.2.1"))),
            (&stream, Some(ip("192.0.2.7")), &cam, Some(ip("192.0.2.7"))),
            // a dual-stack socket's view of the same IPv4 client
            (
                &app,
                Some(ip("192.0.2.7")),
                &cam,
                Some(ip("::ffff:192.0.2.7")),
            ),
            (
                &stream,
                Some(ip("2001:db8::7")),
                &cam,
                Some(ip("2001:db8::7")),
            ),
        ] {
            let token = mint(scope, Action::Play, bound, NOW + 60);
            assert!(token.len() <= MAX_TOKEN_BYTES);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            let claims = check(&keys, Some(&token), &play(key, peer)).unwrap();
            assert_eq!(
                claims,
                Claims {
                    key_id: "k1".into(),
                    expires_unix: NOW + 60,
                    action: Action::Play,
                    scope: scope.clone(),
                    ip: bound,
                }
            );
        }
    }

    #[test]
    fn tokens_of_either_key_verify_during_rotation() {
        let keys = keys();
        let cam = cam();
        let scope = Scope::Stream(cam.clone());
        for id in ["k1", "k2"] {
            let token = keys
                .mint(Some(id), Action::Publish, &scope, None, NOW + 1)
                .unwrap();
            assert!(token.starts_with(&format!("v1.{id}.")));
            let req = Request {
                action: Action::Publish,
                ..play(&cam, None)
            };
            assert_eq!(check(&keys, Some(&token), &req).unwrap().key_id, id);
        }
        // The old key gone, its tokens are refused by name; the new one's still work.
        let old = keys
            .mint(Some("k1"), Action::Play, &scope, None, NOW + 1)
            .unwrap();
        let mut rotated = Keyring::new();
        rotated.insert("k2", b"0123456789abcdef-two").unwrap();
        assert_eq!(
            check(&rotated, Some(&old), &play(&cam, None)),
            Err(Refusal::UnknownKey {
                key_id: "k1".into()
            })
        );
    }

    /// Replaces the `n`-th dot-separated field of `token`.
    fn with_field(token: &str, n: usize, value: &str) -> String {
        let mut fields: Vec<&str> = token.split('.').collect();
        fields[n] = value;
        fields.join(".")
    }

    #[test]
    fn every_refusal_from_a_real_token() {
        let keys = keys();
        let cam = cam();
        let good = mint(
            &Scope::Stream(cam.clone()),
            Action::Play,
            Some(ip("192.0.2.7")),
            NOW + 60,
        );
        let peer = Some(ip("192.0.2.7"));
        let refusal = |token: Option<&str>, req: &Request| check(&keys, token, req).unwrap_err();

        // one flipped signature character (the first: the last one carries 2 padding bits)
        let sig_at = good.rfind('.').unwrap() + 1;
        let mut tampered = good.clone().into_bytes();
        tampered[sig_at] = if tampered[sig_at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let later_exp = with_field(&good, 2, &(NOW + 6000).to_string());
        let other_scope = with_field(&good, 4, "bGl2ZS9vdGhlcg");
        let unknown = with_field(&good, 1, "k9");
        let cases: Vec<(Option<&str>, Request, Refusal)> = vec![
            (None, play(&cam, peer), Refusal::Missing),
            (Some(""), play(&cam, peer), Refusal::Missing),
            (Some("garbage"), play(&cam, peer), Refusal::Malformed("")),
            (Some(&tampered), play(&cam, peer), Refusal::BadSignature),
            (Some(&later_exp), play(&cam, peer), Refusal::BadSignature),
            (Some(&other_scope), play(&cam, peer), Refusal::BadSignature),
            (
                Some(&unknown),
                play(&cam, peer),
                Refusal::UnknownKey {
                    key_id: "k9".into(),
                },
            ),
            (
                Some(&good),
                Request {
                    now_unix: NOW + 63,
                    ..play(&cam, peer)
                },
                Refusal::Expired {
                    expired_unix: NOW + 60,
                    now_unix: NOW + 63,
                },
            ),
            (
                Some(&good),
                Request {
                    action: Action::Publish,
                    ..play(&cam, peer)
                },
                Refusal::WrongAction {
                    allowed: Action::Play,
                    requested: Action::Publish,
                },
            ),
        ];
        for (token, req, expected) in cases {
            let got = refusal(token, &req);
            assert_eq!(got.reason(), expected.reason(), "{token:?}: {got}");
            if !matches!(expected, Refusal::Malformed(_)) {
                assert_eq!(got, expected, "{token:?}");
            }
        }
        let other = StreamKey::new("live", "other").unwrap();
        assert_eq!(
            refusal(Some(&good), &play(&other, peer)),
            Refusal::WrongStream {
                scope: Scope::Stream(cam.clone()),
                stream: other.clone(),
            }
        );
        for wrong_peer in [Some(ip("192.0.2.8")), None] {
            assert_eq!(
                refusal(Some(&good), &play(&cam, wrong_peer)),
                Refusal::WrongIp {
                    bound: ip("192.0.2.7"),
                    peer: wrong_peer,
                }
            );
        }
        // exp == now is already expired: valid while now < exp
        assert_eq!(
            refusal(
                Some(&good),
                &Request {
                    now_unix: NOW + 60,
                    ..play(&cam, peer)
                }
            )
            .reason(),
            "expired"
        );
    }

    #[test]
    fn refusals_read_well_and_reveal_nothing() {
        let cases = [
            (Refusal::Missing, "missing", "no token"),
            (Refusal::Malformed("x"), "malformed", "malformed token: x"),
            (
                Refusal::UnknownKey {
                    key_id: "k9".into(),
                },
                "unknown_key",
                "key 'k9'",
            ),
            (Refusal::BadSignature, "bad_signature", "signature"),
            (
                Refusal::Expired {
                    expired_unix: 10,
                    now_unix: 13,
                },
                "expired",
                "token expired 3 s ago; mint a new one",
            ),
            (
                Refusal::WrongAction {
                    allowed: Action::Play,
                    requested: Action::Publish,
                },
                "wrong_action",
                "allows play, not publish",
            ),
            (
                Refusal::WrongStream {
                    scope: Scope::App("live".into()),
                    stream: StreamKey::new("other", "cam").unwrap(),
                },
                "wrong_stream",
                "'live/*', not stream 'other/cam'",
            ),
            (
                Refusal::WrongIp {
                    bound: ip("192.0.2.7"),
                    peer: None,
                },
                "wrong_ip",
                "192.0.2.7, not an unknown address",
            ),
        ];
        for (refusal, reason, text) in cases {
            assert_eq!(refusal.reason(), reason);
            let shown = refusal.to_string();
            assert!(shown.contains(text), "{shown}");
            assert!(!shown.contains("0123456789abcdef"));
        }
    }

    #[test]
    fn actions_and_scopes_spell_like_the_token() {
        for action in [Action::Publish, Action::Play] {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
        assert_eq!("Play".parse::<Action>(), Err(ActionError));
        assert_eq!(Scope::Stream(cam()).to_string(), "live/cam");
        assert_eq!(Scope::App("live".into()).to_string(), "live/*");
        assert!(Scope::App("live".into()).covers(&cam()));
        assert!(!Scope::App("liv".into()).covers(&cam()));
        assert!(!Scope::Stream(StreamKey::new("live", "ca").unwrap()).covers(&cam()));
    }

    /// The README's shell one-liner, with a fixed exp and the secret inline, makes a
    /// token the verifier accepts.
    #[test]
    fn shell_minted_token_verifies() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("openssl is not installed; skipping the shell minting check");
            return;
        }
        let script = r#"
secret='0123456789abcdef-one'
scope=$(printf %s 'live/cam' | basenc --base64url | tr -d '=')
head="v1.k1.1700003600.publish.$scope"
echo "$head.$(printf %s "$head" | openssl dgst -sha256 -hmac "$secret" -binary | basenc --base64url | tr -d '=')"
"#;
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8(out.stdout).unwrap();
        let token = token.trim_end();
        let cam = cam();
        let req = Request {
            action: Action::Publish,
            ..play(&cam, None)
        };
        let claims = check(&keys(), Some(token), &req).unwrap();
        assert_eq!(claims.expires_unix, 1_700_003_600);
        assert_eq!(
            keys()
                .mint(
                    Some("k1"),
                    Action::Publish,
                    &Scope::Stream(cam.clone()),
                    None,
                    1_700_003_600
                )
                .unwrap(),
            token
        );
    }
}
