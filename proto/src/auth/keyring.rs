//! The server's signing keys, and minting and verifying tokens with them (the format is
//! in the [module note](super)). Verifying reads the format, finds the key and checks
//! the signature in constant time; it knows no clock, so expiry is [`super::check`]'s.

use std::fmt;
use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Action, Claims, Refusal, Scope, MAX_TOKEN_BYTES};
use crate::media::StreamKey;

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret [`Keyring::insert`] takes.
pub const MIN_SECRET_BYTES: usize = 16;
/// The largest `exp` that fits the format's 12 digits.
const MAX_EXPIRES_UNIX: u64 = 999_999_999_999;

/// Why a key could not be added or a token not minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key id '{id:.40}' must be 1 to 32 of A-Z a-z 0-9 _ -")]
    InvalidId { id: String },
    #[error("key id '{id}' is in the keyring twice; give each secret its own id")]
    DuplicateId { id: String },
    #[error("secret of key '{id}' is {len} bytes; use at least 16 random bytes")]
    SecretTooShort { id: String, len: usize },
    #[error("no key '{id:.40}' in the keyring to mint with")]
    UnknownId { id: String },
    #[error("the keyring is empty; add a key before minting")]
    NoKeys,
    #[error("app '{app:.140}' of a token scope breaks the stream key rules")]
    InvalidScope { app: String },
    #[error("expiry {expires_unix} does not fit the token's 12 digits")]
    ExpiryOutOfRange { expires_unix: u64 },
}

/// The secrets tokens are signed with, by key id. Holds each secret as a keyed HMAC
/// state, not the raw bytes; `Debug` prints the key ids only.
#[derive(Clone, Default)]
pub struct Keyring {
    /// Insertion order: the first is the default for minting. Keyrings hold a handful
    /// of keys, so a scan beats a map.
    keys: Vec<(String, HmacSha256)>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds the secret `secret` (raw bytes, at least 16) under `id`.
    pub fn insert(&mut self, id: &str, secret: &[u8]) -> Result<(), KeyError> {
        if !valid_key_id(id) {
            return Err(KeyError::InvalidId { id: id.to_owned() });
        }
        if self.mac(id).is_some() {
            return Err(KeyError::DuplicateId { id: id.to_owned() });
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort {
                id: id.to_owned(),
                len: secret.len(),
            });
        }
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        self.keys.push((id.to_owned(), mac));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, in insertion order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    fn mac(&self, id: &str) -> Option<&HmacSha256> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, mac)| mac)
    }

    /// Mints with `key_id`, or the first key inserted when None. The token is good for
    /// `action` on `scope`, from `ip` only when given, while `now < expires_unix`.
    pub fn mint(
        &self,
        key_id: Option<&str>,
        action: Action,
        scope: &Scope,
        ip: Option<IpAddr>,
        expires_unix: u64,
    ) -> Result<String, KeyError> {
        let (id, mac) = match key_id {
            Some(id) => (
                id,
                self.mac(id)
                    .ok_or_else(|| KeyError::UnknownId { id: id.to_owned() })?,
            ),
            None => {
                let (id, mac) = self.keys.first().ok_or(KeyError::NoKeys)?;
                (id.as_str(), mac)
            }
        };
        if let Scope::App(app) = scope {
            if !scope.is_valid() {
                return Err(KeyError::InvalidScope { app: app.clone() });
            }
        }
        if expires_unix > MAX_EXPIRES_UNIX {
            return Err(KeyError::ExpiryOutOfRange { expires_unix });
        }
        let claim = match ip {
            Some(ip) => format!("{scope}@{ip}"),
            None => scope.to_string(),
        };
        let head = format!(
            "v1.{id}.{expires_unix}.{}.{}",
            action.as_str(),
            URL_SAFE_NO_PAD.encode(claim)
        );
        let mut mac = mac.clone();
        mac.update(head.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let token = format!("{head}.{sig}");
        debug_assert!(token.len() <= MAX_TOKEN_BYTES, "see longest_token_fits");
        Ok(token)
    }

    /// Format, key id, signature (constant time), in that order. No clock here: the
    /// claims may have expired; [`super::check`] decides that.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let parsed = parse(token)?;
        let Some(mac) = self.mac(parsed.key_id) else {
            return Err(Refusal::UnknownKey {
                key_id: parsed.key_id.to_owned(),
            });
        };
        let mut mac = mac.clone();
        mac.update(parsed.head.as_bytes());
        // verify_slice compares in constant time: a byte-by-byte `==` would tell a
        // forger, by its timing, how many leading bytes of a guess were right.
        mac.verify_slice(&parsed.sig)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(Claims {
            key_id: parsed.key_id.to_owned(),
            expires_unix: parsed.expires_unix,
            action: parsed.action,
            scope: parsed.scope,
            ip: parsed.ip,
        })
    }
}

/// A token that passed the format check, not yet the signature.
struct Parsed<'a> {
    /// Everything before the last `.`: what the signature covers.
    head: &'a str,
    key_id: &'a str,
    expires_unix: u64,
    action: Action,
    scope: Scope,
    ip: Option<IpAddr>,
    sig: [u8; 32],
}

fn parse(token: &str) -> Result<Parsed<'_>, Refusal> {
    let bad = |reason| Err(Refusal::Malformed(reason));
    if token.len() > MAX_TOKEN_BYTES {
        return bad("longer than 512 bytes");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return bad("a character outside A-Z a-z 0-9 . _ -");
    }
    let Some((head, sig)) = token.rsplit_once('.') else {
        return bad("no fields");
    };
    let fields: Vec<&str> = head.split('.').collect();
    let &[version, key_id, exp, action, scope] = fields.as_slice() else {
        return bad("not six dot-separated fields");
    };
    if version != "v1" {
        return bad("not version v1");
    }
    if !valid_key_id(key_id) {
        return bad("key id is not 1 to 32 of A-Z a-z 0-9 _ -");
    }
    // One spelling per value: no leading zeros, so a re-mint gives the same token.
    let canonical = (1..=12).contains(&exp.len())
        && exp.bytes().all(|b| b.is_ascii_digit())
        && (exp == "0" || !exp.starts_with('0'));
    let Some(expires_unix) = canonical.then(|| exp.parse::<u64>().ok()).flatten() else {
        return bad("exp is not 1 to 12 digits without leading zeros");
    };
    let Ok(action) = action.parse::<Action>() else {
        return bad("action is neither publish nor play");
    };
    let Some(claim) = URL_SAFE_NO_PAD
        .decode(scope)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    else {
        return bad("scope is not base64url (no padding) of UTF-8 text");
    };
    let Some((scope, ip)) = parse_claim(&claim) else {
        return bad("scope is not APP/STREAM or APP/* with an optional @IP");
    };
    let sig = match URL_SAFE_NO_PAD.decode(sig) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).ok(),
        Err(_) => None,
    };
    let Some(sig) = sig else {
        return bad("signature is not 43 characters of base64url");
    };
    Ok(Parsed {
        head,
        key_id,
        expires_unix,
        action,
        scope,
        ip,
        sig,
    })
}

/// `APP/STREAM` or `APP/*`, then optionally `@IP` in `IpAddr`'s own spelling.
fn parse_claim(claim: &str) -> Option<(Scope, Option<IpAddr>)> {
    let (scope, ip) = match claim.split_once('@') {
        Some((scope, ip)) => {
            let parsed: IpAddr = ip.parse().ok()?;
            // `::0:1` and `::1` are one address; only the Display spelling re-mints.
            (parsed.to_string() == ip).then_some(())?;
            (scope, Some(parsed))
        }
        None => (claim, None),
    };
    let (app, stream) = scope.split_once('/')?;
    let scope = if stream == "*" {
        Scope::App(app.to_owned())
    } else {
        Scope::Stream(StreamKey::new(app, stream).ok()?)
    };
    scope.is_valid().then_some((scope, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keyring {
        let mut keys = Keyring::new();
        keys.insert("k1", b"0123456789abcdef-one").unwrap();
        keys.insert("k2", b"0123456789abcdef-two").unwrap();
        keys
    }

    fn cam() -> Scope {
        Scope::Stream(StreamKey::new("live", "cam").unwrap())
    }

    #[test]
    fn insert_refuses_bad_ids_duplicates_and_short_secrets() {
        let mut keys = keys();
        for id in ["", "a.b", "a b", &"x".repeat(33), "k\n"] {
            assert!(
                matches!(
                    keys.insert(id, b"0123456789abcdef"),
                    Err(KeyError::InvalidId { .. })
                ),
                "{id:?}"
            );
        }
        assert_eq!(
            keys.insert("k1", b"0123456789abcdef"),
            Err(KeyError::DuplicateId { id: "k1".into() })
        );
        assert_eq!(
            keys.insert("k3", b"0123456789abcde"),
            Err(KeyError::SecretTooShort {
                id: "k3".into(),
                len: 15
            })
        );
        keys.insert(&"x".repeat(32), b"0123456789abcdef").unwrap();
        keys.insert("A_z-9", b"0123456789abcdef").unwrap();
        assert_eq!(keys.ids().count(), 4);
        assert!(!keys.is_empty() && Keyring::new().is_empty());
    }

    #[test]
    fn mint_picks_the_first_key_and_refuses_what_cannot_verify() {
        let keys = keys();
        let token = keys.mint(None, Action::Play, &cam(), None, 5).unwrap();
        assert!(token.starts_with("v1.k1.5.play.bGl2ZS9jYW0."), "{token}");
        assert_eq!(token.rsplit_once('.').unwrap().1.len(), 43);
        assert_eq!(
            Keyring::new().mint(None, Action::Play, &cam(), None, 5),
            Err(KeyError::NoKeys)
        );
        assert_eq!(
            keys.mint(Some("k3"), Action::Play, &cam(), None, 5),
            Err(KeyError::UnknownId { id: "k3".into() })
        );
        assert!(matches!(
            keys.mint(None, Action::Play, &Scope::App("a/b".into()), None, 5),
            Err(KeyError::InvalidScope { .. })
        ));
        assert!(keys
            .mint(None, Action::Play, &cam(), None, MAX_EXPIRES_UNIX)
            .is_ok());
        assert!(matches!(
            keys.mint(None, Action::Play, &cam(), None, MAX_EXPIRES_UNIX + 1),
            Err(KeyError::ExpiryOutOfRange { .. })
        ));
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let mut keys = Keyring::new();
        keys.insert("k1", b"SECRET-bytes-0123456789").unwrap();
        let shown = format!("{keys:?} {:?}", keys.clone());
        assert_eq!(shown, r#"Keyring { ids: ["k1"] } Keyring { ids: ["k1"] }"#);
        assert!(!shown.contains("SECRET"));
    }

    #[test]
    fn longest_token_fits_the_limit() {
        let mut keys = Keyring::new();
        let id = "k".repeat(32);
        keys.insert(&id, b"0123456789abcdef").unwrap();
        let app = "a".repeat(128);
        let key = StreamKey::new(&app, &"s".repeat(128)).unwrap();
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let token = keys
            .mint(
                None,
                Action::Publish,
                &Scope::Stream(key),
                Some(ip),
                MAX_EXPIRES_UNIX,
            )
            .unwrap();
        assert_eq!(token.len(), 497);
        assert!(keys.verify(&token).is_ok());
        // Over 512 bytes is refused before anything else is looked at.
        let long = format!("{token}{}", "A".repeat(MAX_TOKEN_BYTES + 1 - token.len()));
        assert_eq!(
            keys.verify(&long),
            Err(Refusal::Malformed("longer than 512 bytes"))
        );
    }

    #[test]
    fn only_the_canonical_spelling_verifies() {
        let keys = keys();
        let good = keys.mint(None, Action::Play, &cam(), None, 70).unwrap();
        assert!(keys.verify(&good).is_ok());
        // Each of these changes the bytes but not (or not validly) the meaning; the
        // format check refuses them before the signature is looked at.
        let head = |exp: &str, scope: &str| format!("v1.k1.{exp}.play.{scope}");
        let sig = good.rsplit_once('.').unwrap().1;
        for token in [
            format!("{}.{sig}", head("070", "bGl2ZS9jYW0")),
            format!("{}.{sig}", head("70", "bGl2ZS9jYW0=")),
            format!("{}.{sig}", head("70", "bGl2ZS9jYW1")), // stray trailing bits
            format!("{}.{sig}", head("1234567890123", "bGl2ZS9jYW0")),
            format!("{}.{sig}A", head("70", "bGl2ZS9jYW0")),
            format!("v2.{}", &good[3..]),
            good.replace(".play.", ".Play."),
            good.replace('.', ".."),
            format!("{good}\n"),
            format!(" {good}"),
        ] {
            assert!(
                matches!(keys.verify(&token), Err(Refusal::Malformed(_))),
                "{token}"
            );
        }
        let scope = |claim: &str| URL_SAFE_NO_PAD.encode(claim);
        for claim in [
            "live",
            "live/",
            "/cam",
            "live/cam/x",
            "live/a b",
            "live/..",
            "*/*",
            "live/cam@",
            "live/cam@::0:1",
            "live/cam@192.0.2.07",
            "live/cam@192.0.2.7@192.0.2.7",
            "live/cam@[::1]",
        ] {
            let token = format!("{}.{sig}", head("70", &scope(claim)));
            assert!(
                matches!(keys.verify(&token), Err(Refusal::Malformed(_))),
                "{claim}"
            );
        }
        for claim in ["live/*", "live/cam@::1", "live/*@::ffff:192.0.2.7"] {
            let token = format!("{}.{sig}", head("70", &scope(claim)));
            assert_eq!(keys.verify(&token), Err(Refusal::BadSignature), "{claim}");
        }
    }

    /// The signature check goes through hmac's constant-time comparison, and nothing
    /// else in this file compares signature bytes.
    #[test]
    fn signature_is_compared_in_constant_time() {
        let source = include_str!("keyring.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        assert_eq!(code.matches("verify_slice(&parsed.sig)").count(), 1);
        for forbidden in ["sig ==", "== sig", "sig.eq(", "ct_eq", "finalize() =="] {
            assert!(!code.contains(forbidden), "{forbidden}");
        }
        // And it is the path taken: a token differing only in its last signature
        // character is refused as a bad signature, like one differing in its first.
        let keys = keys();
        let good = keys.mint(None, Action::Play, &cam(), None, 70).unwrap();
        let (head, sig) = good.rsplit_once('.').unwrap();
        let last = if sig.ends_with('A') { "E" } else { "A" };
        let first = if sig.starts_with('A') { "B" } else { "A" };
        for forged in [
            format!("{head}.{}{last}", &sig[..42]),
            format!("{head}.{first}{}", &sig[1..]),
        ] {
            assert_eq!(keys.verify(&forged), Err(Refusal::BadSignature));
        }
    }
}
