//! The playlist model and its renderer: what a media or multivariant playlist says, as
//! plain data, and the one function that writes it as M3U8 text.
//!
//! The packager builds these models from its segment state and renders them once per
//! update; [`super::parse`] reads the same model back, so
//! `parse(render(model)) == model` holds for every model the parser can produce (the
//! fuzz target checks it). Only the tags shardcast writes are modelled; the parser skips
//! the rest. Durations are whole milliseconds, so the sum of a segment's parts equals its
//! `EXTINF` exactly in the rendered decimals.

use std::fmt::Write as _;

use bytes::Bytes;

use super::date::format_program_date_time;

/// A media playlist (RFC 8216bis §4.4.3 – §4.4.5).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MediaPlaylist {
    /// `EXT-X-VERSION`, absent when `None`.
    pub version: Option<u8>,
    /// `EXT-X-TARGETDURATION`, whole seconds.
    pub target_duration_s: u64,
    /// `EXT-X-MEDIA-SEQUENCE`: the media sequence number of the first listed segment.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`; written only when non-zero.
    pub discontinuity_sequence: u64,
    pub independent_segments: bool,
    pub server_control: Option<ServerControl>,
    /// `EXT-X-PART-INF:PART-TARGET`, milliseconds.
    pub part_target_ms: Option<u64>,
    /// In playlist order. Only the last one may be incomplete (`complete: None`).
    pub segments: Vec<MediaSegment>,
    /// `EXT-X-PRELOAD-HINT:TYPE=PART` URI.
    pub preload_hint_part: Option<String>,
    pub end_list: bool,
}

/// `EXT-X-SERVER-CONTROL`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerControl {
    pub can_block_reload: bool,
    pub hold_back_ms: Option<u64>,
    pub part_hold_back_ms: Option<u64>,
}

/// One media segment with the tags that apply to it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MediaSegment {
    pub discontinuity: bool,
    /// `EXT-X-MAP:URI`, present on the first segment and wherever the init changes.
    pub map_uri: Option<String>,
    /// `EXT-X-PROGRAM-DATE-TIME` as Unix milliseconds.
    pub program_date_time_ms: Option<u64>,
    /// `EXT-X-PART` tags of this segment (LL-HLS).
    pub parts: Vec<PartialSegment>,
    /// `EXTINF` and URI; `None` for the segment still being produced, which the
    /// playlist lists only through its parts.
    pub complete: Option<CompleteSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompleteSegment {
    pub duration_ms: u64,
    pub uri: String,
}

/// `EXT-X-PART`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialSegment {
    pub duration_ms: u64,
    pub uri: String,
    pub independent: bool,
}

/// A multivariant playlist (RFC 8216bis §4.4.6) with `EXT-X-STREAM-INF` variants only.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MultivariantPlaylist {
    pub independent_segments: bool,
    pub variants: Vec<VariantStream>,
}

/// `EXT-X-STREAM-INF` and its URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantStream {
    pub bandwidth_bps: u64,
    pub average_bandwidth_bps: Option<u64>,
    pub codecs: Option<String>,
    pub resolution: Option<(u32, u32)>,
    /// `FRAME-RATE` in thousandths of a frame per second (29.970 fps = 29970).
    pub frame_rate_millis: Option<u64>,
    pub uri: String,
}

/// `1234` ms as `1.234`: the decimal-floating-point form every HLS duration uses.
pub(crate) fn seconds(out: &mut String, ms: u64) {
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

impl MediaPlaylist {
    pub fn render(&self) -> Bytes {
        let mut out = String::with_capacity(256 + self.segments.len() * 160);
        out.push_str("#EXTM3U\n");
        if let Some(version) = self.version {
            let _ = writeln!(out, "#EXT-X-VERSION:{version}");
        }
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_s);
        if let Some(control) = &self.server_control {
            out.push_str("#EXT-X-SERVER-CONTROL:");
            let mut attrs = AttrWriter::new(&mut out);
            if control.can_block_reload {
                attrs.raw("CAN-BLOCK-RELOAD", "YES");
            }
            if let Some(ms) = control.hold_back_ms {
                attrs.seconds("HOLD-BACK", ms);
            }
            if let Some(ms) = control.part_hold_back_ms {
                attrs.seconds("PART-HOLD-BACK", ms);
            }
            out.push('\n');
        }
        if let Some(ms) = self.part_target_ms {
            out.push_str("#EXT-X-PART-INF:PART-TARGET=");
            seconds(&mut out, ms);
            out.push('\n');
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        for segment in &self.segments {
            segment.render(&mut out);
        }
        if let Some(uri) = &self.preload_hint_part {
            out.push_str("#EXT-X-PRELOAD-HINT:");
            AttrWriter::new(&mut out)
                .raw("TYPE", "PART")
                .quoted("URI", uri);
            out.push('\n');
        }
        if self.end_list {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        Bytes::from(out)
    }
}

impl MediaSegment {
    fn render(&self, out: &mut String) {
        // Tags that apply to a parent segment also apply to its first part, so they go
        // before the first EXT-X-PART (RFC 8216bis §4.4.4.9).
        if self.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(uri) = &self.map_uri {
            out.push_str("#EXT-X-MAP:");
            AttrWriter::new(out).quoted("URI", uri);
            out.push('\n');
        }
        if let Some(ms) = self.program_date_time_ms {
            out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            out.push_str(&format_program_date_time(ms));
            out.push('\n');
        }
        for part in &self.parts {
            out.push_str("#EXT-X-PART:");
            let mut attrs = AttrWriter::new(out);
            attrs
                .seconds("DURATION", part.duration_ms)
                .quoted("URI", &part.uri);
            if part.independent {
                attrs.raw("INDEPENDENT", "YES");
            }
            out.push('\n');
        }
        if let Some(complete) = &self.complete {
            out.push_str("#EXTINF:");
            seconds(out, complete.duration_ms);
            out.push_str(",\n");
            out.push_str(&complete.uri);
            out.push('\n');
        }
    }
}

impl MultivariantPlaylist {
    pub fn render(&self) -> Bytes {
        let mut out = String::with_capacity(128 + self.variants.len() * 160);
        out.push_str("#EXTM3U\n");
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        for variant in &self.variants {
            out.push_str("#EXT-X-STREAM-INF:");
            let mut attrs = AttrWriter::new(&mut out);
            attrs.raw("BANDWIDTH", &variant.bandwidth_bps.to_string());
            if let Some(bps) = variant.average_bandwidth_bps {
                attrs.raw("AVERAGE-BANDWIDTH", &bps.to_string());
            }
            if let Some(codecs) = &variant.codecs {
                attrs.quoted("CODECS", codecs);
            }
            if let Some((w, h)) = variant.resolution {
                attrs.raw("RESOLUTION", &format!("{w}x{h}"));
            }
            if let Some(millis) = variant.frame_rate_millis {
                attrs.seconds("FRAME-RATE", millis);
            }
            out.push('\n');
            out.push_str(&variant.uri);
            out.push('\n');
        }
        Bytes::from(out)
    }
}

/// Writes a comma-separated attribute list (RFC 8216bis §4.2).
struct AttrWriter<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> AttrWriter<'a> {
    fn new(out: &'a mut String) -> Self {
        AttrWriter { out, first: true }
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(name);
        self.out.push('=');
    }

    fn raw(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        self.out.push_str(value);
        self
    }

    fn quoted(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        self.out.push('"');
        self.out.push_str(value);
        self.out.push('"');
        self
    }

    fn seconds(&mut self, name: &str, ms: u64) -> &mut Self {
        self.name(name);
        seconds(self.out, ms);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_ll_media_playlist_in_spec_order() {
        let playlist = MediaPlaylist {
            version: Some(6),
            target_duration_s: 2,
            media_sequence: 7,
            discontinuity_sequence: 1,
            independent_segments: true,
            server_control: Some(ServerControl {
                can_block_reload: true,
                hold_back_ms: Some(6000),
                part_hold_back_ms: Some(999),
            }),
            part_target_ms: Some(333),
            segments: vec![
                MediaSegment {
                    map_uri: Some("init.mp4".into()),
                    program_date_time_ms: Some(1_709_294_400_000),
                    complete: Some(CompleteSegment {
                        duration_ms: 2002,
                        uri: "s/7.m4s".into(),
                    }),
                    ..MediaSegment::default()
                },
                MediaSegment {
                    discontinuity: true,
                    program_date_time_ms: Some(1_709_294_402_002),
                    parts: vec![PartialSegment {
                        duration_ms: 40,
                        uri: "p/8.0.m4s".into(),
                        independent: true,
                    }],
                    ..MediaSegment::default()
                },
            ],
            preload_hint_part: Some("p/8.1.m4s".into()),
            end_list: false,
        };
        let text = String::from_utf8(playlist.render().to_vec()).unwrap();
        let expected = "#EXTM3U\n\
            #EXT-X-VERSION:6\n\
            #EXT-X-TARGETDURATION:2\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,HOLD-BACK=6.000,PART-HOLD-BACK=0.999\n\
            #EXT-X-PART-INF:PART-TARGET=0.333\n\
            #EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-DISCONTINUITY-SEQUENCE:1\n\
            #EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2024-03-01T12:00:00.000Z\n\
            #EXTINF:2.002,\n\
            s/7.m4s\n\
            #EXT-X-DISCONTINUITY\n\
            #EXT-X-PROGRAM-DATE-TIME:2024-03-01T12:00:02.002Z\n\
            #EXT-X-PART:DURATION=0.040,URI=\"p/8.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p/8.1.m4s\"\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn renders_a_multivariant_playlist() {
        let playlist = MultivariantPlaylist {
            independent_segments: true,
            variants: vec![VariantStream {
                bandwidth_bps: 2_500_000,
                average_bandwidth_bps: Some(2_000_000),
                codecs: Some("avc1.64001f,mp4a.40.2".into()),
                resolution: Some((1280, 720)),
                frame_rate_millis: Some(29_970),
                uri: "live/ts.m3u8".into(),
            }],
        };
        assert_eq!(
            playlist.render(),
            "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,\
             CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.970\n\
             live/ts.m3u8\n"
        );
    }
}
