//! The FLV file format: the 9-byte header with PreviousTagSize0, and a sans-IO streaming
//! reader of tags for FLV files and HTTP-FLV streams.
//!
//! The reader holds at most one incomplete tag: its memory is bounded by the tag size
//! limit plus whatever the caller pushes before polling. Tag bodies are handed out as
//! `Bytes` slices of its buffer (no copy).

use bytes::{Buf, Bytes, BytesMut};

use super::{parse_body, FlvError, TagKind};
use crate::media::Frame;

/// The largest tag an FLV header can describe (the DataSize field is 24 bits).
pub const DEFAULT_MAX_TAG_BYTES: usize = 0x00FF_FFFF;

const HEADER_LEN: usize = 9;
const TAG_HEADER_LEN: usize = 11;
/// No encoder writes a longer header; a larger DataOffset is garbage, not a header.
const MAX_HEADER_LEN: u32 = 1024;
const FLAG_AUDIO: u8 = 0x04;
const FLAG_VIDEO: u8 = 0x01;

/// The FLV file header followed by PreviousTagSize0: the first 13 bytes of every FLV
/// file and HTTP-FLV response.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let mut flags = 0;
    if has_audio {
        flags |= FLAG_AUDIO;
    }
    if has_video {
        flags |= FLAG_VIDEO;
    }
    [
        b'F',
        b'L',
        b'V',
        1,
        flags,
        0,
        0,
        0,
        HEADER_LEN as u8,
        0,
        0,
        0,
        0,
    ]
}

/// The flags of an FLV header. Informational only: players (and this reader) look at the
/// tags that actually arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlvHeader {
    pub has_audio: bool,
    pub has_video: bool,
}

/// One FLV tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub kind: TagKind,
    /// The tag's 32-bit millisecond timestamp (24 bits plus the extended byte).
    pub timestamp_ms: u32,
    pub body: Bytes,
}

impl Tag {
    /// Parses the body, see [`parse_body`].
    pub fn frame(&self) -> Result<Option<Frame>, FlvError> {
        parse_body(self.kind, u64::from(self.timestamp_ms), self.body.clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    /// Skipping the rest of a header longer than 9 bytes.
    SkipHeader(usize),
    /// Expecting a PreviousTagSize, then a tag.
    PreviousTagSize,
    Tag,
}

/// A streaming FLV reader: push bytes split anywhere, pull tags.
///
/// ```
/// # use shardcast_proto::flv::{FlvReader, file_header};
/// let mut reader = FlvReader::new();
/// reader.push(&file_header(true, true));
/// assert_eq!(reader.poll_tag(), Ok(None)); // needs more bytes
/// assert!(reader.header().unwrap().has_video);
/// ```
///
/// After an error the reader is stuck: every later poll returns the same error, because
/// the position of the next tag is unknown.
#[derive(Debug)]
pub struct FlvReader {
    buf: BytesMut,
    state: State,
    header: Option<FlvHeader>,
    max_tag_bytes: usize,
    error: Option<FlvError>,
    unknown_tags: u64,
    bad_previous_sizes: u64,
    last_tag_size: Option<u32>,
}

impl Default for FlvReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvReader {
    pub fn new() -> Self {
        Self::with_max_tag_bytes(DEFAULT_MAX_TAG_BYTES)
    }

    /// A reader that rejects tags whose body is larger than `max_tag_bytes`.
    pub fn with_max_tag_bytes(max_tag_bytes: usize) -> Self {
        FlvReader {
            buf: BytesMut::new(),
            state: State::Header,
            header: None,
            max_tag_bytes,
            error: None,
            unknown_tags: 0,
            bad_previous_sizes: 0,
            last_tag_size: None,
        }
    }

    /// Appends bytes from the file or the network.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The file header, once it has been read.
    pub fn header(&self) -> Option<FlvHeader> {
        self.header
    }

    /// Bytes pushed but not yet returned as tags.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Tags of a type other than audio, video and script data, skipped so far.
    pub fn unknown_tags(&self) -> u64 {
        self.unknown_tags
    }

    /// PreviousTagSize fields that did not match the tag before them. Some writers get
    /// them wrong and no reader needs them, so they are counted, not fatal.
    pub fn bad_previous_sizes(&self) -> u64 {
        self.bad_previous_sizes
    }

    /// The next complete tag, `Ok(None)` when more bytes are needed.
    pub fn poll_tag(&mut self) -> Result<Option<Tag>, FlvError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.advance();
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    fn advance(&mut self) -> Result<Option<Tag>, FlvError> {
        loop {
            match self.state {
                State::Header => {
                    // Fail as soon as the signature is in: a stream that is not FLV
                    // should not wait for more bytes.
                    if self.buf.len() >= 4 && &self.buf[..4] != b"FLV\x01" {
                        return Err(not_flv(&self.buf));
                    }
                    if self.buf.len() < HEADER_LEN {
                        return Ok(None);
                    }
                    let flags = self.buf[4];
                    let offset =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                    if !(HEADER_LEN as u32..=MAX_HEADER_LEN).contains(&offset) {
                        return Err(FlvError::BadHeaderSize {
                            offset,
                            max: MAX_HEADER_LEN,
                        });
                    }
                    self.header = Some(FlvHeader {
                        has_audio: flags & FLAG_AUDIO != 0,
                        has_video: flags & FLAG_VIDEO != 0,
                    });
                    self.buf.advance(HEADER_LEN);
                    self.state = State::SkipHeader(offset as usize - HEADER_LEN);
                }
                State::SkipHeader(left) => {
                    let n = left.min(self.buf.len());
                    self.buf.advance(n);
                    if n < left {
                        self.state = State::SkipHeader(left - n);
                        return Ok(None);
                    }
                    self.state = State::PreviousTagSize;
                }
                State::PreviousTagSize => {
                    if self.buf.len() < 4 {
                        return Ok(None);
                    }
                    let size = self.buf.get_u32();
                    // PreviousTagSize0 is 0; after that it repeats the last tag's size.
                    if size != self.last_tag_size.unwrap_or(0) {
                        self.bad_previous_sizes += 1;
                    }
                    self.state = State::Tag;
                }
                State::Tag => {
                    if self.buf.len() < TAG_HEADER_LEN {
                        return Ok(None);
                    }
                    let h = &self.buf[..TAG_HEADER_LEN];
                    if h[0] & 0x20 != 0 {
                        return Err(FlvError::Encrypted);
                    }
                    let type_id = h[0] & 0x1F;
                    let size =
                        (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
                    if size > self.max_tag_bytes {
                        return Err(FlvError::TagTooLarge {
                            size,
                            limit: self.max_tag_bytes,
                        });
                    }
                    let timestamp_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
                    if self.buf.len() < TAG_HEADER_LEN + size {
                        // Reserve once for the whole tag rather than regrowing per push.
                        self.buf.reserve(TAG_HEADER_LEN + size - self.buf.len());
                        return Ok(None);
                    }
                    self.buf.advance(TAG_HEADER_LEN);
                    let body = self.buf.split_to(size).freeze();
                    self.last_tag_size = Some((TAG_HEADER_LEN + size) as u32);
                    self.state = State::PreviousTagSize;
                    match TagKind::from_type_id(type_id) {
                        Some(kind) => {
                            return Ok(Some(Tag {
                                kind,
                                timestamp_ms,
                                body,
                            }))
                        }
                        None => self.unknown_tags += 1,
                    }
                }
            }
        }
    }
}

fn not_flv(buf: &[u8]) -> FlvError {
    FlvError::NotFlv {
        found: [buf[0], buf[1], buf[2], buf[3]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::write_tag;
    use crate::media::{AudioCodec, Codec, FrameKind, Track, VideoCodec};

    fn read_all(chunks: &[&[u8]]) -> Vec<Tag> {
        let mut reader = FlvReader::new();
        let mut tags = Vec::new();
        for chunk in chunks {
            reader.push(chunk);
            while let Some(tag) = reader.poll_tag().unwrap() {
                tags.push(tag);
            }
        }
        assert_eq!(reader.buffered(), 0, "trailing bytes left over");
        assert_eq!(reader.bad_previous_sizes(), 0);
        tags
    }

    /// Parses a whole file, checks that each tag re-serializes byte for byte, and returns
    /// the frames.
    fn frames_of(file: &[u8]) -> Vec<Frame> {
        let tags = read_all(&[file]);
        let mut rebuilt = file[..13].to_vec();
        let mut frames = Vec::new();
        for tag in &tags {
            let frame = tag
                .frame()
                .unwrap()
                .expect("every tag in the fixtures carries a frame");
            rebuilt.extend_from_slice(&write_tag(&frame, u64::from(tag.timestamp_ms)).unwrap());
            frames.push(frame);
        }
        assert!(
            rebuilt == file,
            "re-serialized file differs from the original"
        );
        frames
    }

    const H264_AAC: &[u8] = include_bytes!("../../../testdata/flv/h264-aac.flv");
    const H264_MP3: &[u8] = include_bytes!("../../../testdata/flv/h264-mp3.flv");
    const HEVC: &[u8] = include_bytes!("../../../testdata/flv/hevc.flv");
    const AV1: &[u8] = include_bytes!("../../../testdata/flv/av1.flv");
    const VP9: &[u8] = include_bytes!("../../../testdata/flv/vp9.flv");

    fn video(frames: &[Frame]) -> Vec<&Frame> {
        frames
            .iter()
            .filter(|f| f.track() == Track::Video)
            .collect()
    }

    #[test]
    fn ffmpeg_h264_aac_file() {
        let frames = frames_of(H264_AAC);
        assert_eq!(
            (frames[0].codec, frames[0].kind),
            (Codec::Script, FrameKind::Metadata)
        );
        let v = video(&frames);
        // ffmpeg: sequence header, 10 pictures at 10 fps with a GOP of 10, end of sequence.
        assert_eq!(v.len(), 12);
        assert_eq!(
            (v[0].codec, v[0].kind),
            (Codec::Video(VideoCodec::H264), FrameKind::Config)
        );
        assert_eq!(v[11].kind, FrameKind::EndOfSequence);
        let pictures = &v[1..11];
        assert_eq!(
            pictures.iter().map(|f| f.keyframe).collect::<Vec<_>>(),
            [true, false, false, false, false, false, false, false, false, false]
        );
        assert_eq!(
            pictures.iter().map(|f| f.dts_ms).collect::<Vec<_>>(),
            (0..10).map(|i| i * 100).collect::<Vec<_>>()
        );
        // x264 uses B-frames: presentation order differs from decode order, and every
        // picture is shown once at a 100 ms grid.
        assert!(pictures.iter().any(|f| f.cts_ms != 0));
        let mut pts: Vec<i64> = pictures.iter().map(|f| f.pts_ms()).collect();
        pts.sort();
        let first = pts[0];
        assert_eq!(pts, (0..10).map(|i| first + i * 100).collect::<Vec<_>>());

        let audio: Vec<_> = frames
            .iter()
            .filter(|f| f.track() == Track::Audio)
            .collect();
        assert_eq!(
            (audio[0].codec, audio[0].kind),
            (Codec::Audio(AudioCodec::Aac), FrameKind::Config)
        );
        assert!(audio[1..]
            .iter()
            .all(|f| f.kind == FrameKind::Media && f.codec == Codec::Audio(AudioCodec::Aac)));
        // 1 s of 44.1 kHz AAC is ~44 frames of 1024 samples.
        assert!(
            (43..=46).contains(&(audio.len() - 1)),
            "{} AAC frames",
            audio.len() - 1
        );
        assert!(audio.windows(2).all(|w| w[0].dts_ms <= w[1].dts_ms));
    }

    #[test]
    fn ffmpeg_h264_mp3_file() {
        let frames = frames_of(H264_MP3);
        let audio: Vec<_> = frames
            .iter()
            .filter(|f| f.track() == Track::Audio)
            .collect();
        // MP3, 44.1 kHz, 16-bit, mono (lavfi sine): header byte 0x2E, passed through.
        assert!(audio
            .iter()
            .all(|f| f.codec == Codec::Audio(AudioCodec::Legacy { header: 0x2e })));
        assert!(
            audio.iter().all(|f| f.payload[0] == 0xff),
            "each payload starts with an MP3 sync word"
        );
        let v = video(&frames);
        assert!(v[1..11].iter().all(|f| f.cts_ms == 0), "encoded with -bf 0");
    }

    #[test]
    fn enhanced_hevc_file() {
        let frames = frames_of(HEVC);
        assert_eq!(frames.len(), 12);
        assert!(frames
            .iter()
            .all(|f| f.codec == Codec::Video(VideoCodec::H265)));
        assert_eq!(frames[0].kind, FrameKind::Config);
        assert_eq!(&frames[0].payload[..1], &[1], "hvcC configurationVersion");
        assert_eq!(frames[11].kind, FrameKind::EndOfSequence);
        assert!(frames[1].keyframe && frames[2..11].iter().all(|f| !f.keyframe));
        assert!(frames[1..11].iter().any(|f| f.cts_ms > 0), "x265 B-frames");
        // The samples are 4-byte length-prefixed NAL units that add up to the payload.
        for f in &frames[1..11] {
            let mut rest = &f.payload[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest = &rest[4 + len..];
            }
        }
    }

    #[test]
    fn enhanced_av1_and_vp9_files() {
        for (file, codec) in [(AV1, VideoCodec::Av1), (VP9, VideoCodec::Vp9)] {
            let frames = frames_of(file);
            assert_eq!(frames.len(), 12);
            assert!(frames.iter().all(|f| f.codec == Codec::Video(codec)));
            assert_eq!(frames[0].kind, FrameKind::Config);
            assert!(frames[1].keyframe, "{codec:?} starts with a key frame");
            assert!(frames[1..11]
                .iter()
                .all(|f| f.kind == FrameKind::Media && f.cts_ms == 0));
            assert_eq!(
                frames[1..11].iter().map(|f| f.dts_ms).collect::<Vec<_>>(),
                (0..10).map(|i| i * 100).collect::<Vec<_>>()
            );
        }
        // av1C starts with marker 1 and version 1.
        assert_eq!(frames_of(AV1)[0].payload[0], 0x81);
    }

    #[test]
    fn reads_the_same_at_every_split() {
        let whole = read_all(&[H264_AAC]);
        for at in 0..H264_AAC.len() {
            let (a, b) = H264_AAC.split_at(at);
            assert_eq!(read_all(&[a, b]), whole, "split at byte {at}");
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = HEVC.chunks(1).collect();
        assert_eq!(read_all(&bytes), read_all(&[HEVC]));
    }

    #[test]
    fn rejects_what_is_not_flv() {
        let mut r = FlvReader::new();
        r.push(b"GET / HTTP/1.1\r\n");
        assert!(matches!(r.poll_tag(), Err(FlvError::NotFlv { found }) if &found == b"GET "));
        // Detected from the signature alone, and the error sticks.
        let mut r = FlvReader::new();
        r.push(b"FLV\x02");
        assert!(matches!(r.poll_tag(), Err(FlvError::NotFlv { .. })));
        assert!(r.poll_tag().is_err());

        let mut r = FlvReader::new();
        r.push(b"FLV\x01\x05\xff\xff\xff\xff");
        assert!(matches!(r.poll_tag(), Err(FlvError::BadHeaderSize { .. })));
    }

    #[test]
    fn skips_longer_headers_and_unknown_tags() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x0c\xaa\xbb\xcc\x00\x00\x00\x00".to_vec();
        // An unknown tag type 15 with 2 bytes, then an MP3 audio tag.
        file.extend_from_slice(
            b"\x0f\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00\x0d",
        );
        file.extend_from_slice(
            b"\x08\x00\x00\x02\x00\x00\x05\x00\x00\x00\x00\x2f\xff\x00\x00\x00\x0d",
        );
        let mut r = FlvReader::new();
        r.push(&file);
        let tag = r.poll_tag().unwrap().unwrap();
        assert_eq!(
            (tag.kind, tag.timestamp_ms, &tag.body[..]),
            (TagKind::Audio, 5, &b"\x2f\xff"[..])
        );
        assert_eq!(r.poll_tag(), Ok(None));
        assert_eq!(r.unknown_tags(), 1);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn limits_tag_size_and_rejects_encryption() {
        let mut head = file_header(true, false).to_vec();
        head.extend_from_slice(b"\x08\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        let mut r = FlvReader::with_max_tag_bytes(1000);
        r.push(&head);
        assert_eq!(
            r.poll_tag(),
            Err(FlvError::TagTooLarge {
                size: 65536,
                limit: 1000
            })
        );

        let mut r = FlvReader::new();
        let mut enc = file_header(true, false).to_vec();
        enc.extend_from_slice(b"\x28\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00");
        r.push(&enc);
        assert_eq!(r.poll_tag(), Err(FlvError::Encrypted));
    }

    #[test]
    fn counts_wrong_previous_tag_sizes() {
        let mut file = file_header(true, false).to_vec();
        file.extend_from_slice(b"\x08\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x2f\x00\x00\x00\x63");
        let mut r = FlvReader::new();
        r.push(&file);
        assert!(r.poll_tag().unwrap().is_some());
        assert_eq!(r.poll_tag(), Ok(None));
        assert_eq!(r.bad_previous_sizes(), 1);
    }

    #[test]
    fn extended_timestamps() {
        let mut file = file_header(true, false).to_vec();
        file.extend_from_slice(b"\x08\x00\x00\x01\x12\x34\x56\x78\x00\x00\x00\x2f\x00\x00\x00\x0c");
        let tags = read_all(&[&file]);
        assert_eq!(tags[0].timestamp_ms, 0x7812_3456);
    }
}
