//! Where a token travels: the `token` parameter of a URL query (`/live/cam.flv?token=T`)
//! or of an RTMP stream name (`cam?token=T`). Only finding and removing it; what the
//! rest of the query means is the caller's.

use std::borrow::Cow;

/// The parameters of `query` (`a=b&token=T&c`; one leading `?` is skipped) as
/// (whole pair, key).
fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .map(|pair| (pair, pair.split_once('=').map_or(pair, |(key, _)| key)))
}

/// Finds the `token` parameter in a URL query or RTMP query (`a=b&token=T&c`), first
/// occurrence; percent-decodes it (`%2E` etc.; an invalid escape is kept as it is, and
/// bytes that are not UTF-8 become U+FFFD, which [`super::Keyring::verify`] refuses).
/// `None` when absent or empty.
pub fn token_in_query(query: &str) -> Option<Cow<'_, str>> {
    let (pair, _) = pairs(query).find(|(_, key)| *key == "token")?;
    let value = pair.split_once('=').map_or("", |(_, value)| value);
    if value.is_empty() {
        return None;
    }
    Some(percent_decode(value))
}

/// The query with every `token` parameter removed (for passing the rest on to a hook or
/// logs); the other parameters keep their order and bytes.
pub fn query_without_token(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (pair, _) in pairs(query).filter(|(_, key)| *key != "token") {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    out
}

fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_token_and_decodes_it() {
        let cases = [
            ("token=v1.k1", Some("v1.k1")),
            ("a=b&token=T&c", Some("T")),
            ("?token=T", Some("T")),
            ("token=A&token=B", Some("A")),
            ("_HLS_msn=3&_HLS_part=1&token=v1.k1.9", Some("v1.k1.9")),
            ("token=v1%2Ek1%2e9", Some("v1.k1.9")),
            ("token=a%zzb%4", Some("a%zzb%4")),
            ("token=%", Some("%")),
            ("token=%ff", Some("\u{fffd}")),
            ("token=a=b", Some("a=b")),
            ("", None),
            ("a=b", None),
            ("token", None),
            ("token=", None),
            ("token=&token=T", None),
            ("Token=T&xtoken=T&token_=T", None),
            ("%74oken=T", None),
        ];
        for (query, expected) in cases {
            assert_eq!(token_in_query(query).as_deref(), expected, "{query}");
        }
        assert!(matches!(
            token_in_query("token=T"),
            Some(Cow::Borrowed("T"))
        ));
    }

    #[test]
    fn removes_every_token() {
        for (query, expected) in [
            ("", ""),
            ("token=T", ""),
            ("token", ""),
            ("a=b&token=T&c", "a=b&c"),
            (
                "token=A&_HLS_msn=3&token=B&_HLS_part=1",
                "_HLS_msn=3&_HLS_part=1",
            ),
            ("tokens=1&a=%41", "tokens=1&a=%41"),
        ] {
            assert_eq!(query_without_token(query), expected, "{query}");
        }
    }
}
