//! Fuzz entry point (`fuzz/fuzz_targets/auth_token.rs`), also run over the seeds by the
//! unit tests below. It panics only when it finds a bug in this module.

use std::net::{IpAddr, Ipv4Addr};

use super::{check, Action, Keyring, Refusal, Request};
use crate::media::StreamKey;

/// The fixed time of the fuzzed request.
pub const NOW_UNIX: u64 = 1_700_000_000;
/// The fixed client address of the fuzzed request.
pub const PEER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// The fuzz keyring: two keys, as during a rotation.
pub fn keyring() -> Keyring {
    let mut keys = Keyring::new();
    for (id, secret) in [
        ("k1", &b"fuzz-secret-number-one"[..]),
        ("k2", b"fuzz-secret-number-two"),
    ] {
        keys.insert(id, secret).expect("valid literal keys");
    }
    keys
}

/// The fuzz request: play `live/cam` from [`PEER_IP`] at [`NOW_UNIX`].
pub fn stream() -> StreamKey {
    StreamKey::new("live", "cam").expect("a valid literal key")
}

/// Reads `data` (lossily) as a token, verifies it against [`keyring`] and checks it
/// against the fixed request. Never panics; checks that `verify` and `check` agree, that
/// refusals print no control characters, and that a token that verifies is exactly what
/// minting its claims with the same key gives back.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let keys = keyring();
    let key = stream();
    let req = Request {
        action: Action::Play,
        key: &key,
        peer_ip: Some(PEER_IP),
        now_unix: NOW_UNIX,
    };
    let verified = keys.verify(&text);
    let checked = check(&keys, Some(&text), &req);
    for refusal in [verified.as_ref().err(), checked.as_ref().err()]
        .into_iter()
        .flatten()
    {
        let shown = refusal.to_string();
        assert!(
            !shown.chars().any(char::is_control) && shown.len() < 300,
            "refusal text {shown:?}"
        );
    }
    match (&verified, &checked) {
        (Ok(claims), Ok(passed)) => assert_eq!(claims, passed),
        (Ok(_), Err(refusal)) => assert!(
            matches!(
                refusal,
                Refusal::Expired { .. }
                    | Refusal::WrongAction { .. }
                    | Refusal::WrongStream { .. }
                    | Refusal::WrongIp { .. }
            ),
            "verified, then refused with {refusal:?}"
        ),
        (Err(_), Ok(_)) => panic!("check passed a token that does not verify: {text:?}"),
        (Err(first), Err(second)) if text.is_empty() => {
            assert_eq!((first.reason(), second), ("malformed", &Refusal::Missing))
        }
        (Err(first), Err(second)) => assert_eq!(first, second),
    }
    if let Ok(claims) = verified {
        let again = keys
            .mint(
                Some(&claims.key_id),
                claims.action,
                &claims.scope,
                claims.ip,
                claims.expires_unix,
            )
            .expect("claims that verified can be minted again");
        assert_eq!(again, text, "re-minted from {claims:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::*;

    const DIR: &str = "auth/corpus/auth_token";

    /// The hand-made seeds, each with the refusal `check` gives it (`None`: accepted).
    fn seeds() -> Vec<(&'static str, String, Option<&'static str>)> {
        let keys = keyring();
        let cam = Scope::Stream(stream());
        let live = Scope::App("live".into());
        let mint = |id, action, scope: &Scope, ip, exp| {
            keys.mint(Some(id), action, scope, ip, exp).unwrap()
        };
        let later = NOW_UNIX + 3600;
        let good = mint("k1", Action::Play, &cam, None, later);
        let mut tampered = good.clone().into_bytes();
        let at = good.rfind('.').unwrap() + 5;
        tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
        let other = Scope::Stream(StreamKey::new("live", "other").unwrap());
        let wrong_peer = Some("192.0.2.8".parse().unwrap());
        vec![
            ("valid-stream", good.clone(), None),
            (
                "valid-app-k2",
                mint("k2", Action::Play, &live, None, later),
                None,
            ),
            (
                "valid-ip",
                mint("k1", Action::Play, &cam, Some(PEER_IP), later),
                None,
            ),
            (
                "valid-ipv6-app",
                mint(
                    "k2",
                    Action::Play,
                    &live,
                    Some("::ffff:192.0.2.7".parse().unwrap()),
                    later,
                ),
                None,
            ),
            ("missing", String::new(), Some("missing")),
            ("garbage", "v1.k1.x.play..".into(), Some("malformed")),
            (
                "unknown-key",
                good.replacen("v1.k1.", "v1.k9.", 1),
                Some("unknown_key"),
            ),
            (
                "bad-signature",
                String::from_utf8(tampered).unwrap(),
                Some("bad_signature"),
            ),
            (
                "tampered-exp",
                good.replacen(&later.to_string(), &(later + 1).to_string(), 1),
                Some("bad_signature"),
            ),
            (
                "expired",
                mint("k1", Action::Play, &cam, None, NOW_UNIX),
                Some("expired"),
            ),
            (
                "wrong-action",
                mint("k2", Action::Publish, &cam, None, later),
                Some("wrong_action"),
            ),
            (
                "wrong-stream",
                mint("k1", Action::Play, &other, None, later),
                Some("wrong_stream"),
            ),
            (
                "wrong-ip",
                mint("k1", Action::Play, &cam, wrong_peer, later),
                Some("wrong_ip"),
            ),
        ]
    }

    #[test]
    fn seeds_give_their_refusals() {
        let keys = keyring();
        let key = stream();
        let req = Request {
            action: Action::Play,
            key: &key,
            peer_ip: Some(PEER_IP),
            now_unix: NOW_UNIX,
        };
        for (name, seed, reason) in seeds() {
            crate::testkit::check_seed_file(DIR, name, seed.as_bytes());
            let got = check(&keys, Some(&seed), &req);
            assert_eq!(
                got.as_ref().err().map(Refusal::reason),
                reason,
                "{name}: {got:?}"
            );
            token(seed.as_bytes());
        }
    }

    #[test]
    fn mutated_seeds_never_panic() {
        for (_, seed, _) in seeds() {
            crate::testkit::for_each_mutation(seed.as_bytes(), 2_000, token);
        }
    }

    #[test]
    fn fuzz_corpora_replay() {
        assert!(crate::testkit::replay_corpus(DIR, token) >= 10);
    }
}
