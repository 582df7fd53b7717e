//! The swarm's publisher: an FLV file (made by ffmpeg) held in memory and replayed in
//! real time, looped with increasing timestamps, so a run of any length is one
//! continuous live stream. Sans-IO: the event loop asks what is due at `now` and hands
//! the tags to an RTMP client.
//!
//! Codec configs and metadata go out once, at the start: a real encoder does not repeat
//! them, and servers cache them for joiners.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::flv::{FlvError, FlvReader, TagKind};
use proto::media::FrameKind;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable FLV file: {source}")]
    Flv {
        path: String,
        #[source]
        source: FlvError,
    },
    #[error("{path} has no video keyframe; make it with ffmpeg -c:v libx264 -g <fps*2>")]
    NoKeyframe { path: String },
}

/// One tag of the source file.
#[derive(Clone, Debug)]
pub struct SourceTag {
    pub kind: TagKind,
    /// Relative to the file's first tag.
    pub timestamp_ms: u32,
    pub body: Bytes,
    /// A coded frame (counted in the ledger), as opposed to a config or metadata.
    pub media: bool,
}

#[derive(Debug)]
pub struct FlvSource {
    tags: Vec<SourceTag>,
    /// Media time of one pass: the last timestamp plus one frame interval.
    loop_ms: u32,
}

impl FlvSource {
    pub fn load(path: &Path) -> Result<FlvSource, SourceError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
            path: name.clone(),
            source,
        })?;
        FlvSource::parse(&bytes).map_err(|e| match e {
            SourceError::Flv { source, .. } => SourceError::Flv { path: name, source },
            SourceError::NoKeyframe { .. } => SourceError::NoKeyframe { path: name },
            other => other,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<FlvSource, SourceError> {
        let flv_err = |source| SourceError::Flv {
            path: String::new(),
            source,
        };
        let mut reader = FlvReader::new();
        reader.push(bytes);
        let mut tags = Vec::new();
        let mut keyframes = 0;
        while let Some(tag) = reader.poll_tag().map_err(flv_err)? {
            let frame = tag.frame().map_err(flv_err)?;
            let media = frame.as_ref().is_some_and(|f| f.kind == FrameKind::Media);
            keyframes += usize::from(frame.as_ref().is_some_and(|f| f.keyframe));
            // "@setDataFrame" is what a publisher sends; the file holds bare onMetaData.
            let body = if tag.kind == TagKind::Script {
                let mut b = b"\x02\x00\x0d@setDataFrame".to_vec();
                b.extend_from_slice(&tag.body);
                Bytes::from(b)
            } else {
                tag.body
            };
            tags.push(SourceTag {
                kind: tag.kind,
                timestamp_ms: tag.timestamp_ms,
                body,
                media,
            });
        }
        if keyframes == 0 {
            return Err(SourceError::NoKeyframe {
                path: String::new(),
            });
        }
        let first = tags.iter().map(|t| t.timestamp_ms).min().unwrap_or(0);
        for t in &mut tags {
            t.timestamp_ms -= first;
        }
        let video: Vec<u32> = tags
            .iter()
            .filter(|t| t.kind == TagKind::Video && t.media)
            .map(|t| t.timestamp_ms)
            .collect();
        // One pass lasts one video frame past the last video frame, so the frame rate is
        // even across the seam; audio past that point only pushes the next pass later.
        let (last_video, interval) = match video.as_slice() {
            [.., a, b] if b > a => (*b, b - a),
            [.., b] => (*b, 40),
            [] => (0, 40),
        };
        let last = tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(0);
        let loop_ms = (last_video + interval).max(last + 1);
        Ok(FlvSource { tags, loop_ms })
    }

    pub fn loop_ms(&self) -> u32 {
        self.loop_ms
    }
}

/// Replays a source in real time from `start`.
#[derive(Debug)]
pub struct Schedule {
    source: FlvSource,
    start: Instant,
    next: usize,
    pass: u32,
}

impl Schedule {
    pub fn new(source: FlvSource, start: Instant) -> Schedule {
        Schedule {
            source,
            start,
            next: 0,
            pass: 0,
        }
    }

    fn timestamp(&self, i: usize) -> u32 {
        self.source.tags[i].timestamp_ms + self.pass * self.source.loop_ms
    }

    /// When the next tag is due.
    pub fn next_due(&self) -> Instant {
        self.start + Duration::from_millis(u64::from(self.timestamp(self.next)))
    }

    /// The next tag if it is due at `now`, with its looped timestamp.
    pub fn poll_due(&mut self, now: Instant) -> Option<(SourceTag, u32)> {
        loop {
            if self.next_due() > now {
                return None;
            }
            let (i, pass) = (self.next, self.pass);
            let ts = self.timestamp(i);
            self.next += 1;
            if self.next == self.source.tags.len() {
                self.next = 0;
                self.pass += 1;
            }
            let tag = &self.source.tags[i];
            if pass > 0 && !tag.media {
                continue;
            }
            return Some((tag.clone(), ts));
        }
    }
}

/// The tag's message kind for the RTMP client.
pub fn rtmp_kind(kind: TagKind) -> proto::rtmp::MediaKind {
    use proto::rtmp::MediaKind;
    match kind {
        TagKind::Audio => MediaKind::Audio,
        TagKind::Video => MediaKind::Video,
        TagKind::Script => MediaKind::Data,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::flv;
    use proto::media::{AudioCodec, Codec, Frame, VideoCodec};

    /// A small FLV file: metadata, two configs, 2 GOPs of 3 video frames (40 ms) and audio.
    pub(crate) fn sample_flv() -> Vec<u8> {
        let mut out = flv::file_header(true, true).to_vec();
        let mut push = |codec, kind, keyframe, dts_ms| {
            let f = Frame {
                codec,
                kind,
                keyframe,
                dts_ms,
                cts_ms: 0,
                payload: Bytes::from(vec![7u8; 20]),
            };
            out.extend_from_slice(&flv::write_tag(&f, dts_ms).unwrap());
        };
        let avc = Codec::Video(VideoCodec::H264);
        let aac = Codec::Audio(AudioCodec::Aac);
        push(avc, FrameKind::Config, false, 0);
        push(aac, FrameKind::Config, false, 0);
        for i in 0..6u64 {
            push(avc, FrameKind::Media, i % 3 == 0, i * 40);
            push(aac, FrameKind::Media, false, i * 40 + 5);
        }
        out
    }

    #[test]
    fn loops_with_increasing_timestamps_and_configs_once() {
        let src = FlvSource::parse(&sample_flv()).unwrap();
        assert_eq!(src.loop_ms(), 240);
        let t0 = Instant::now();
        let mut s = Schedule::new(src, t0);
        let got: Vec<(TagKind, u32, bool)> =
            std::iter::from_fn(|| s.poll_due(t0 + Duration::from_millis(600)))
                .map(|(t, ts)| (t.kind, ts, t.media))
                .collect();
        let configs = got.iter().filter(|g| !g.2).count();
        assert_eq!(configs, 2, "{got:?}");
        let video: Vec<u32> = got
            .iter()
            .filter(|g| g.0 == TagKind::Video && g.2)
            .map(|g| g.1)
            .collect();
        assert_eq!(video, (0..=15).map(|i| i * 40).collect::<Vec<_>>());
        // nothing is early
        assert!(s.next_due() > t0 + Duration::from_millis(600));
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(FlvSource::parse(&sample_flv()).unwrap(), t0);
        let first: Vec<_> = std::iter::from_fn(|| s.poll_due(t0)).collect();
        // configs and the first video frame at 0 ms
        assert_eq!(first.len(), 3);
        assert_eq!(s.next_due(), t0 + Duration::from_millis(5));
    }

    #[test]
    fn a_file_without_keyframes_is_refused() {
        let mut out = flv::file_header(false, true).to_vec();
        let f = Frame {
            codec: Codec::Video(VideoCodec::H264),
            kind: FrameKind::Media,
            keyframe: false,
            dts_ms: 0,
            cts_ms: 0,
            payload: Bytes::from_static(b"x"),
        };
        out.extend_from_slice(&flv::write_tag(&f, 0).unwrap());
        assert!(matches!(
            FlvSource::parse(&out),
            Err(SourceError::NoKeyframe { .. })
        ));
        assert!(matches!(
            FlvSource::parse(b"<html>"),
            Err(SourceError::Flv { .. })
        ));
    }
}
