//! Carries a query parameter (a viewer's `token=...`) into every URI of a playlist, so
//! that players (hls.js, Safari, ExoPlayer) send it with each media playlist, segment,
//! part, init segment, preload hint and rendition report they fetch, with no client
//! change. A byte-level rewrite of a rendered playlist: it does not parse or validate
//! the playlist, and leaves every byte it does not insert where it was.
//!
//! It does not touch `data:` URIs (a query would corrupt the data), and it does not
//! look at where a URI points: the caller must only rewrite playlists whose URIs are
//! its own (ours are all relative), or the parameter goes to another host too.

use bytes::Bytes;

/// The playlist with `param` (e.g. `token=v1.k1...`) appended to every URI: each URI
/// line (a non-empty line not starting with `#`) and every `URI="..."` attribute of a
/// tag line (`EXT-X-MAP`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`,
/// `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`, any tag but `EXTINF`, whose title is free
/// text). Uses `&` when the URI already has a `?`, else `?`, and goes before a
/// `#fragment`. Line endings (LF or CRLF) kept; everything else byte-identical. Lines
/// are classified as the playlist reader does: after trimming whitespace, and after a
/// byte order mark on the first line.
pub fn with_query(playlist: &[u8], param: &str) -> Bytes {
    Bytes::from(rewrite(playlist, param, |_, _| {}))
}

/// The `param` of [`with_query`] joined to one URI: what a rewritten URI reads.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn uri_with(uri: &str, param: &str) -> String {
    let at = insertion_point(uri.as_bytes());
    format!(
        "{}{}{param}{}",
        &uri[..at],
        char::from(separator(&uri.as_bytes()[..at])),
        &uri[at..]
    )
}

/// [`with_query`], also telling `inserted(offset, len)` where each insertion (separator
/// and `param`) landed in the output.
pub(crate) fn rewrite(
    playlist: &[u8],
    param: &str,
    mut inserted: impl FnMut(usize, usize),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(playlist.len() + param.len() * 64);
    for (index, line) in playlist.split_inclusive(|&b| b == b'\n').enumerate() {
        let (start, end) = trimmed(line, index == 0);
        let content = &line[start..end];
        // (start, end) of each URI within `line`
        let mut uris: Vec<(usize, usize)> = Vec::new();
        if let Some(tag) = content.strip_prefix(b"#") {
            // EXTINF's value is a duration and a free-text title, not an attribute list
            if !tag.starts_with(b"EXTINF:") {
                let base = start + 1;
                uris.extend(
                    uri_attributes(tag)
                        .into_iter()
                        .map(|(a, b)| (base + a, base + b)),
                );
            }
        } else if !content.is_empty() {
            uris.push((start, end));
        }
        let mut copied = 0;
        for (a, b) in uris {
            let uri = &line[a..b];
            if uri.starts_with(b"data:") {
                continue;
            }
            let at = a + insertion_point(uri);
            out.extend_from_slice(&line[copied..at]);
            let offset = out.len();
            out.push(separator(&line[a..at]));
            out.extend_from_slice(param.as_bytes());
            inserted(offset, out.len() - offset);
            copied = at;
        }
        out.extend_from_slice(&line[copied..]);
    }
    out
}

/// Where the query goes in `uri`: before a fragment, else at the end.
fn insertion_point(uri: &[u8]) -> usize {
    uri.iter().position(|&b| b == b'#').unwrap_or(uri.len())
}

fn separator(before: &[u8]) -> u8 {
    if before.contains(&b'?') {
        b'&'
    } else {
        b'?'
    }
}

/// The content of `line` (which may end in `\n` or `\r\n`) without its line ending and
/// surrounding whitespace, as `str::trim` (the reader's) sees it when the line is UTF-8.
fn trimmed(line: &[u8], first: bool) -> (usize, usize) {
    let mut end = line.len();
    if line[..end].ends_with(b"\n") {
        end -= 1;
    }
    if line[..end].ends_with(b"\r") {
        end -= 1;
    }
    let mut start = 0;
    if first && line[..end].starts_with("\u{feff}".as_bytes()) {
        start = 3;
    }
    match std::str::from_utf8(&line[start..end]) {
        Ok(text) => {
            let inner = text.trim_start();
            let lead = text.len() - inner.len();
            (start + lead, start + lead + inner.trim_end().len())
        }
        Err(_) => {
            let body = &line[start..end];
            let lead = body.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let tail = body[lead..]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            (start + lead, end - tail)
        }
    }
}

/// The value ranges of every `URI="..."` attribute in `tag` (a tag line without its
/// `#`), scanning the attribute list as RFC 8216bis §4.2 defines it: a quoted string
/// may hold commas and `=`, so `NAME="a,URI="` has no URI attribute.
fn uri_attributes(tag: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let Some(colon) = tag.iter().position(|&b| b == b':') else {
        return found;
    };
    let mut i = colon + 1;
    while i < tag.len() {
        let name_start = i;
        while i < tag.len() && tag[i] != b'=' && tag[i] != b',' {
            i += 1;
        }
        if i == tag.len() {
            break;
        }
        if tag[i] == b',' {
            i += 1;
            continue;
        }
        let name = &tag[name_start..i];
        i += 1;
        if tag.get(i) == Some(&b'"') {
            let open = i + 1;
            let Some(len) = tag[open..].iter().position(|&b| b == b'"') else {
                // unterminated: nothing after it is an attribute
                break;
            };
            if name == b"URI" {
                found.push((open, open + len));
            }
            i = open + len + 1;
        }
        while i < tag.len() && tag[i] != b',' {
            i += 1;
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::parse::{parse_media_playlist, parse_multivariant_playlist};

    const TOKEN: &str =
        "token=v1.k1.1700003600.play.bGl2ZS9jYW0.WyLA_hO4tEIL6RdadbeC2DsdSRD2_YilMoPxIFfdHwk";

    fn golden(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../testdata/golden/hls/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn rewritten(input: &str) -> String {
        String::from_utf8(with_query(input.as_bytes(), "t=1").to_vec()).unwrap()
    }

    /// Every URI the playlist reader finds in a media playlist.
    fn media_uris(text: &str) -> Vec<String> {
        let playlist = parse_media_playlist(text).unwrap();
        let mut uris = Vec::new();
        for segment in &playlist.segments {
            uris.extend(segment.map_uri.clone());
            uris.extend(segment.parts.iter().map(|p| p.uri.clone()));
            uris.extend(segment.complete.iter().map(|c| c.uri.clone()));
        }
        uris.extend(playlist.preload_hint_part.clone());
        uris
    }

    #[test]
    fn golden_playlists_carry_the_token_in_every_uri_once() {
        for name in ["ll.m3u8", "ll-ended.m3u8", "ts.m3u8"] {
            let input = String::from_utf8(golden(name)).unwrap();
            let output = String::from_utf8(with_query(input.as_bytes(), TOKEN).to_vec()).unwrap();
            let before = media_uris(&input);
            let after = media_uris(&output);
            assert!(before.len() > 5, "{name}");
            let expected: Vec<String> = before.iter().map(|u| format!("{u}?{TOKEN}")).collect();
            assert_eq!(after, expected, "{name}");
            // ... and nowhere else: one per URI, and the rest of the text unchanged
            assert_eq!(output.matches(TOKEN).count(), before.len(), "{name}");
            assert_eq!(output.replace(&format!("?{TOKEN}"), ""), input, "{name}");
        }
        for name in ["ll-index.m3u8", "ts-multivariant.m3u8"] {
            let input = String::from_utf8(golden(name)).unwrap();
            let output = String::from_utf8(with_query(input.as_bytes(), TOKEN).to_vec()).unwrap();
            let before = parse_multivariant_playlist(&input).unwrap();
            let after = parse_multivariant_playlist(&output).unwrap();
            assert_eq!(after.variants.len(), before.variants.len());
            for (a, b) in after.variants.iter().zip(&before.variants) {
                assert_eq!(a.uri, format!("{}?{TOKEN}", b.uri));
            }
            assert_eq!(output.matches(TOKEN).count(), before.variants.len());
        }
    }

    #[test]
    fn every_tag_with_a_uri_and_crlf_playlists() {
        let input = "#EXTM3U\r\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"x,URI=\",URI=\"audio/ll.m3u8\"\r\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"iframes.m3u8?x=1\"\r\n\
            #EXT-X-MAP:URI=\"init.mp4\"\r\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AAAA\"\r\n\
            #EXTINF:2.000,URI=\"title\"\r\n\
            s/0.m4s\r\n\
            #EXT-X-PART:DURATION=0.300,URI=\"p/1.0.m4s\",INDEPENDENT=YES\r\n\
            # a comment\r\n\
            \r\n\
            \x20 seg.ts?a=b#t=1 \r\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p/1.1.m4s\"\r\n\
            #EXT-X-RENDITION-REPORT:URI=\"../other/ll.m3u8\",LAST-MSN=1,LAST-PART=0\n\
            #EXT-X-MAP:URI=\"unterminated\n\
            last";
        let expected = "#EXTM3U\r\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"x,URI=\",URI=\"audio/ll.m3u8?t=1\"\r\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"iframes.m3u8?x=1&t=1\"\r\n\
            #EXT-X-MAP:URI=\"init.mp4?t=1\"\r\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AAAA\"\r\n\
            #EXTINF:2.000,URI=\"title\"\r\n\
            s/0.m4s?t=1\r\n\
            #EXT-X-PART:DURATION=0.300,URI=\"p/1.0.m4s?t=1\",INDEPENDENT=YES\r\n\
            # a comment\r\n\
            \r\n\
            \x20 seg.ts?a=b&t=1#t=1 \r\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p/1.1.m4s?t=1\"\r\n\
            #EXT-X-RENDITION-REPORT:URI=\"../other/ll.m3u8?t=1\",LAST-MSN=1,LAST-PART=0\n\
            #EXT-X-MAP:URI=\"unterminated\n\
            last?t=1";
        assert_eq!(rewritten(input), expected);
        assert_eq!(uri_with("seg.ts?a=b#t=1", "t=1"), "seg.ts?a=b&t=1#t=1");
    }

    #[test]
    fn odd_input_is_left_alone() {
        for input in [
            "",
            "\n",
            "\r\n\r\n",
            "#EXTM3U",
            "\u{feff}#EXTM3U\n",
            "#EXT-X-MAP:URI=\"\"",
            "#X:=,,=\"",
            "#X:URI=\"",
        ] {
            let expected = input.replace("URI=\"\"", "URI=\"?t=1\"");
            assert_eq!(rewritten(input), expected, "{input:?}");
        }
        assert_eq!(
            with_query(b"\xff\xfe a\n#X:URI=\"\xff\"", "t=1").as_ref(),
            b"\xff\xfe a?t=1\n#X:URI=\"\xff?t=1\""
        );
    }
}
