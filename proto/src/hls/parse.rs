//! A playlist reader for the tags shardcast writes: media playlists (classic and
//! LL-HLS) and multivariant playlists, into the model of [`super::playlist`].
//!
//! It exists to check what the renderer produced (unit and integration tests) and is
//! fuzzed (`fuzz/fuzz_targets/hls_playlist.rs`). Tags it does not model are skipped, as
//! RFC 8216bis §4.1 tells clients to; anything malformed in a modelled tag is an error
//! naming the line. It never panics, and allocates only in proportion to its input.

use super::date::parse_program_date_time;
use super::playlist::{
    CompleteSegment, MediaPlaylist, MediaSegment, MultivariantPlaylist, PartialSegment,
    ServerControl, VariantStream,
};
use super::HlsError;

fn error(line: usize, reason: impl Into<String>) -> HlsError {
    HlsError::Playlist {
        line,
        reason: reason.into(),
    }
}

/// Splits the text into (1-based line number, line) after the checks every playlist
/// shares: `#EXTM3U` first, no control characters (RFC 8216bis §4.1).
fn lines(text: &str) -> Result<impl Iterator<Item = (usize, &str)>, HlsError> {
    if let Some(at) = text.find(|c: char| c.is_control() && c != '\n' && c != '\r') {
        let line = text[..at].matches('\n').count() + 1;
        return Err(error(line, "control character in playlist"));
    }
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim())
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, "#EXTM3U")) => Ok(lines.filter(|(_, l)| !l.is_empty())),
        _ => Err(error(1, "playlist does not start with #EXTM3U")),
    }
}

/// Reads a media playlist.
pub fn parse_media_playlist(text: &str) -> Result<MediaPlaylist, HlsError> {
    let mut playlist = MediaPlaylist::default();
    let mut target_duration = None;
    // Tags collected for the segment whose URI has not been seen yet.
    let mut pending = MediaSegment::default();
    let mut pending_used = false;
    let mut pending_duration: Option<u64> = None;
    for (n, line) in lines(text)? {
        let Some(tag) = line.strip_prefix('#') else {
            let Some(duration_ms) = pending_duration.take() else {
                return Err(error(n, "segment URI without a preceding #EXTINF"));
            };
            pending.complete = Some(CompleteSegment {
                duration_ms,
                uri: line.to_owned(),
            });
            playlist.segments.push(std::mem::take(&mut pending));
            pending_used = false;
            continue;
        };
        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
        match name {
            "EXT-X-VERSION" => {
                let version = integer(n, value)?;
                playlist.version =
                    Some(u8::try_from(version).map_err(|_| error(n, "version out of range"))?);
            }
            "EXT-X-TARGETDURATION" => target_duration = Some(integer(n, value)?),
            "EXT-X-MEDIA-SEQUENCE" => playlist.media_sequence = integer(n, value)?,
            "EXT-X-DISCONTINUITY-SEQUENCE" => {
                playlist.discontinuity_sequence = integer(n, value)?;
            }
            "EXT-X-INDEPENDENT-SEGMENTS" => playlist.independent_segments = true,
            "EXT-X-ENDLIST" => playlist.end_list = true,
            "EXT-X-SERVER-CONTROL" => {
                let mut control = ServerControl::default();
                for (key, attr) in attributes(n, value)? {
                    match key {
                        "CAN-BLOCK-RELOAD" => {
                            control.can_block_reload = attr.enumerated(n)? == "YES"
                        }
                        "HOLD-BACK" => control.hold_back_ms = Some(attr.seconds_ms(n)?),
                        "PART-HOLD-BACK" => control.part_hold_back_ms = Some(attr.seconds_ms(n)?),
                        _ => {}
                    }
                }
                playlist.server_control = Some(control);
            }
            "EXT-X-PART-INF" => {
                let attrs = attributes(n, value)?;
                let target = required(n, &attrs, "PART-TARGET")?.seconds_ms(n)?;
                playlist.part_target_ms = Some(target);
            }
            "EXT-X-PRELOAD-HINT" => {
                let attrs = attributes(n, value)?;
                if required(n, &attrs, "TYPE")?.enumerated(n)? == "PART" {
                    let uri = required(n, &attrs, "URI")?.quoted(n)?;
                    playlist.preload_hint_part = Some(uri.to_owned());
                }
            }
            "EXTINF" => {
                // `#EXTINF:<duration>,[<title>]`; the title is not modelled.
                let duration = value.split_once(',').map_or(value, |(d, _)| d);
                pending_duration =
                    Some(seconds_ms(duration).ok_or_else(|| error(n, "bad #EXTINF duration"))?);
            }
            "EXT-X-DISCONTINUITY" => {
                pending.discontinuity = true;
                pending_used = true;
            }
            "EXT-X-MAP" => {
                let attrs = attributes(n, value)?;
                pending.map_uri = Some(required(n, &attrs, "URI")?.quoted(n)?.to_owned());
                pending_used = true;
            }
            "EXT-X-PROGRAM-DATE-TIME" => {
                let ms = parse_program_date_time(value)
                    .ok_or_else(|| error(n, "bad #EXT-X-PROGRAM-DATE-TIME"))?;
                pending.program_date_time_ms = Some(ms);
                pending_used = true;
            }
            "EXT-X-PART" => {
                let attrs = attributes(n, value)?;
                let mut independent = false;
                for (key, attr) in &attrs {
                    if *key == "INDEPENDENT" {
                        independent = attr.enumerated(n)? == "YES";
                    }
                }
                pending.parts.push(PartialSegment {
                    duration_ms: required(n, &attrs, "DURATION")?.seconds_ms(n)?,
                    uri: required(n, &attrs, "URI")?.quoted(n)?.to_owned(),
                    independent,
                });
                pending_used = true;
            }
            _ => {}
        }
    }
    if pending_duration.is_some() {
        return Err(error(0, "#EXTINF at the end of the playlist has no URI"));
    }
    if pending_used {
        playlist.segments.push(pending);
    }
    playlist.target_duration_s =
        target_duration.ok_or_else(|| error(0, "missing #EXT-X-TARGETDURATION"))?;
    Ok(playlist)
}

/// Reads a multivariant playlist.
pub fn parse_multivariant_playlist(text: &str) -> Result<MultivariantPlaylist, HlsError> {
    let mut playlist = MultivariantPlaylist::default();
    let mut pending: Option<VariantStream> = None;
    for (n, line) in lines(text)? {
        let Some(tag) = line.strip_prefix('#') else {
            let Some(mut variant) = pending.take() else {
                return Err(error(n, "URI without a preceding #EXT-X-STREAM-INF"));
            };
            variant.uri = line.to_owned();
            playlist.variants.push(variant);
            continue;
        };
        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
        match name {
            "EXT-X-INDEPENDENT-SEGMENTS" => playlist.independent_segments = true,
            "EXT-X-STREAM-INF" => {
                let attrs = attributes(n, value)?;
                let mut variant = VariantStream {
                    bandwidth_bps: required(n, &attrs, "BANDWIDTH")?.integer(n)?,
                    average_bandwidth_bps: None,
                    codecs: None,
                    resolution: None,
                    frame_rate_millis: None,
                    uri: String::new(),
                };
                for (key, attr) in &attrs {
                    match *key {
                        "AVERAGE-BANDWIDTH" => {
                            variant.average_bandwidth_bps = Some(attr.integer(n)?)
                        }
                        "CODECS" => variant.codecs = Some(attr.quoted(n)?.to_owned()),
                        "RESOLUTION" => variant.resolution = Some(attr.resolution(n)?),
                        "FRAME-RATE" => variant.frame_rate_millis = Some(attr.seconds_ms(n)?),
                        _ => {}
                    }
                }
                pending = Some(variant);
            }
            _ => {}
        }
    }
    if pending.is_some() {
        return Err(error(
            0,
            "#EXT-X-STREAM-INF at the end of the playlist has no URI",
        ));
    }
    Ok(playlist)
}

/// One attribute value as written: quoted strings keep their quotes off.
#[derive(Clone, Copy, Debug)]
enum Attr<'a> {
    Quoted(&'a str),
    Bare(&'a str),
}

impl<'a> Attr<'a> {
    fn quoted(self, line: usize) -> Result<&'a str, HlsError> {
        match self {
            Attr::Quoted(s) => Ok(s),
            Attr::Bare(_) => Err(error(line, "expected a quoted-string attribute")),
        }
    }

    fn bare(self, line: usize) -> Result<&'a str, HlsError> {
        match self {
            Attr::Bare(s) => Ok(s),
            Attr::Quoted(_) => Err(error(line, "expected an unquoted attribute")),
        }
    }

    fn enumerated(self, line: usize) -> Result<&'a str, HlsError> {
        self.bare(line)
    }

    fn integer(self, line: usize) -> Result<u64, HlsError> {
        integer(line, self.bare(line)?)
    }

    fn seconds_ms(self, line: usize) -> Result<u64, HlsError> {
        seconds_ms(self.bare(line)?).ok_or_else(|| error(line, "bad decimal-floating-point value"))
    }

    fn resolution(self, line: usize) -> Result<(u32, u32), HlsError> {
        let text = self.bare(line)?;
        let bad = || error(line, "bad RESOLUTION");
        let (w, h) = text.split_once('x').ok_or_else(bad)?;
        let dimension =
            |s: &str| u32::try_from(integer(line, s).map_err(|_| bad())?).map_err(|_| bad());
        Ok((dimension(w)?, dimension(h)?))
    }
}

fn required<'a>(line: usize, attrs: &[(&str, Attr<'a>)], name: &str) -> Result<Attr<'a>, HlsError> {
    // The last occurrence wins, like every other repeated value here.
    attrs
        .iter()
        .rev()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| error(line, format!("missing {name} attribute")))
}

/// Parses an attribute list (RFC 8216bis §4.2): `NAME=value` pairs separated by commas,
/// where a value is a quoted string (which may contain commas) or runs to the next comma.
fn attributes(line: usize, mut text: &str) -> Result<Vec<(&str, Attr<'_>)>, HlsError> {
    let mut out = Vec::new();
    while !text.is_empty() {
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| error(line, "attribute without '='"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(error(line, "bad attribute name"));
        }
        let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| error(line, "unterminated quoted string"))?;
            (Attr::Quoted(&quoted[..end]), &quoted[end + 1..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (Attr::Bare(&rest[..end]), &rest[end..])
        };
        out.push((name, value));
        text = match rest.strip_prefix(',') {
            Some(next) if !next.is_empty() => next,
            Some(_) => return Err(error(line, "trailing comma in attribute list")),
            None if rest.is_empty() => rest,
            None => return Err(error(line, "junk after a quoted attribute")),
        };
    }
    Ok(out)
}

/// A decimal-integer (RFC 8216bis §4.2): digits only, fits in 64 bits.
fn integer(line: usize, text: &str) -> Result<u64, HlsError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(line, format!("'{text}' is not a decimal-integer")));
    }
    text.parse()
        .map_err(|_| error(line, format!("'{text}' does not fit in 64 bits")))
}

/// A non-negative decimal-floating-point number of seconds, rounded to milliseconds.
pub(crate) fn seconds_ms(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let mut ms = whole.parse::<u64>().ok()?.checked_mul(1000)?;
    let mut digits = fraction.bytes().map(|b| u64::from(b - b'0'));
    for scale in [100, 10, 1] {
        ms = ms.checked_add(digits.next().unwrap_or(0) * scale)?;
    }
    // Round half up on the first dropped digit.
    if digits.next().is_some_and(|d| d >= 5) {
        ms = ms.checked_add(1)?;
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str = "#EXTM3U\r\n\
        #EXT-X-VERSION:6\n\
        #EXT-X-TARGETDURATION:2\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,HOLD-BACK=6\n\
        #EXT-X-PART-INF:PART-TARGET=0.33333\n\
        #EXT-X-MEDIA-SEQUENCE:10\n\
        #EXT-X-SOMETHING-NEW:FOO=\"bar\"\n\
        \n\
        #EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXT-X-PROGRAM-DATE-TIME:2024-03-01T12:00:00.000Z\n\
        #EXT-X-PART:DURATION=1.0,URI=\"p/10.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=1.0,URI=\"p/10.1.m4s\"\n\
        #EXTINF:2.0,title, with comma\n\
        s/10.m4s\n\
        #EXT-X-PART:DURATION=0.5,URI=\"p/11.0.m4s\",INDEPENDENT=YES,GAP=NO\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p/11.1.m4s\"\n";

    #[test]
    fn reads_an_ll_playlist_with_an_open_segment() {
        let playlist = parse_media_playlist(LL).unwrap();
        assert_eq!(playlist.version, Some(6));
        assert_eq!(playlist.target_duration_s, 2);
        assert_eq!(playlist.media_sequence, 10);
        assert_eq!(playlist.part_target_ms, Some(333));
        let control = playlist.server_control.as_ref().unwrap();
        assert!(control.can_block_reload);
        assert_eq!(
            (control.hold_back_ms, control.part_hold_back_ms),
            (Some(6000), Some(1000))
        );
        assert_eq!(playlist.segments.len(), 2);
        let first = &playlist.segments[0];
        assert_eq!(first.map_uri.as_deref(), Some("init.mp4"));
        assert_eq!(first.program_date_time_ms, Some(1_709_294_400_000));
        assert_eq!(
            first
                .parts
                .iter()
                .map(|p| p.independent)
                .collect::<Vec<_>>(),
            [true, false]
        );
        let complete = first.complete.as_ref().unwrap();
        assert_eq!(
            (complete.duration_ms, complete.uri.as_str()),
            (2000, "s/10.m4s")
        );
        let open = &playlist.segments[1];
        assert!(open.complete.is_none());
        assert_eq!(open.parts[0].uri, "p/11.0.m4s");
        assert_eq!(playlist.preload_hint_part.as_deref(), Some("p/11.1.m4s"));
        assert!(!playlist.end_list);
    }

    #[test]
    fn render_then_parse_is_the_identity_on_parsed_models() {
        let parsed = parse_media_playlist(LL).unwrap();
        let rendered = parsed.render();
        let text = std::str::from_utf8(&rendered).unwrap();
        assert_eq!(parse_media_playlist(text).unwrap(), parsed);
    }

    #[test]
    fn rejects_malformed_media_playlists_with_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("#EXTM3X\n", 1, "EXTM3U"),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.ts\n",
                3,
                "without a preceding",
            ),
            ("#EXTM3U\n#EXT-X-TARGETDURATION:x\n", 2, "decimal-integer"),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:99999999999999999999\n",
                2,
                "64 bits",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-1,\na.ts\n",
                3,
                "EXTINF",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=1\n",
                3,
                "URI",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"a\n",
                3,
                "unterminated",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"a\"x\n",
                3,
                "junk",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"a\",\n",
                3,
                "trailing comma",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:uri=\"a\"\n",
                3,
                "attribute name",
            ),
            ("#EXTM3U\n#EXT-X-VERSION:300\n", 2, "version"),
            ("#EXTM3U\n#EXT-X-TARGETDURATION:2\x07\n", 2, "control"),
            ("#EXTM3U\n#EXTINF:1,\n", 0, "no URI"),
            ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n", 0, "TARGETDURATION"),
        ];
        for (text, line, words) in cases {
            match parse_media_playlist(text) {
                Err(HlsError::Playlist { line: got, reason }) => {
                    assert_eq!(got, *line, "{text:?}: {reason}");
                    assert!(reason.contains(words), "{text:?}: {reason}");
                }
                other => panic!("{text:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn reads_a_multivariant_playlist() {
        let text = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=25\n\
            cam/ts.m3u8\n";
        let playlist = parse_multivariant_playlist(text).unwrap();
        assert!(playlist.independent_segments);
        let variant = &playlist.variants[0];
        assert_eq!(variant.bandwidth_bps, 800_000);
        assert_eq!(variant.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(variant.resolution, Some((640, 360)));
        assert_eq!(variant.frame_rate_millis, Some(25_000));
        assert_eq!(variant.uri, "cam/ts.m3u8");
        assert!(
            parse_multivariant_playlist("#EXTM3U\n#EXT-X-STREAM-INF:CODECS=\"a\"\nx\n").is_err()
        );
        assert!(parse_multivariant_playlist("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n").is_err());
        assert!(parse_multivariant_playlist(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=9x\nx\n"
        )
        .is_err());
    }

    #[test]
    fn seconds_round_to_milliseconds() {
        assert_eq!(seconds_ms("2"), Some(2000));
        assert_eq!(seconds_ms("0.3334"), Some(333));
        assert_eq!(seconds_ms("0.3335"), Some(334));
        assert_eq!(seconds_ms("1.9995"), Some(2000));
        assert_eq!(seconds_ms("2."), Some(2000));
        for bad in ["", ".5", "-1", "1e3", "1.2.3", "18446744073709552"] {
            assert_eq!(seconds_ms(bad), None, "{bad}");
        }
    }
}
