//! FLV tag bodies <-> [`Frame`]: legacy FLV (AVC, AAC, pass-through codecs) and Enhanced
//! RTMP ExVideoTagHeader / ExAudioTagHeader (FourCC codecs, ModEx, multitrack).
//!
//! See the module notes in [`super`] for how the optional parts of the specs are handled.

use bytes::{BufMut, Bytes, BytesMut};

use super::FlvError;
use crate::media::{AudioCodec, Codec, Frame, FrameKind, VideoCodec};

/// The kind of an FLV tag, which is also the RTMP message type of the body
/// (8 audio, 9 video, 18 AMF0 data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

impl TagKind {
    /// The FLV TagType / RTMP message type id, or `None` for any other value.
    pub fn from_type_id(type_id: u8) -> Option<TagKind> {
        match type_id {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        }
    }

    pub fn type_id(self) -> u8 {
        match self {
            TagKind::Audio => 8,
            TagKind::Video => 9,
            TagKind::Script => 18,
        }
    }
}

/// The tag kind a frame of this codec is written as.
pub fn tag_kind(codec: Codec) -> TagKind {
    match codec {
        Codec::Video(_) => TagKind::Video,
        Codec::Audio(_) => TagKind::Audio,
        Codec::Script => TagKind::Script,
    }
}

// Legacy FLV values.
const FRAME_KEY: u8 = 1;
const FRAME_INTER: u8 = 2;
const FRAME_GENERATED_KEY: u8 = 4;
const FRAME_COMMAND: u8 = 5;
const CODEC_AVC: u8 = 7;
/// Not in any spec: HEVC in the AVC layout, from encoder forks that predate E-RTMP.
const CODEC_HEVC_COMMUNITY: u8 = 12;
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;
const AVC_END_OF_SEQUENCE: u8 = 2;
const SOUND_EX_HEADER: u8 = 9;
const SOUND_AAC: u8 = 10;
/// AAC tags always say 44 kHz, 16-bit, stereo: the real values are in the
/// AudioSpecificConfig (FLV spec, AudioTagHeader), and every muxer writes 0xAF.
const AAC_HEADER: u8 = (SOUND_AAC << 4) | 0x0F;
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;

// Enhanced RTMP values (shared by audio and video unless noted).
const EX_HEADER_BIT: u8 = 0x80;
const PKT_SEQUENCE_START: u8 = 0;
const PKT_CODED_FRAMES: u8 = 1;
const PKT_SEQUENCE_END: u8 = 2;
const PKT_CODED_FRAMES_X: u8 = 3; // video only
const PKT_METADATA: u8 = 4; // video only
const PKT_MULTICHANNEL_CONFIG: u8 = 4; // audio only
const PKT_MPEG2TS_SEQUENCE_START: u8 = 5; // video only
const PKT_VIDEO_MULTITRACK: u8 = 6;
const PKT_AUDIO_MULTITRACK: u8 = 5;
const PKT_MOD_EX: u8 = 7;
const MULTITRACK_ONE_TRACK: u8 = 0;
const MULTITRACK_MANY_CODECS: u8 = 2;

const FOURCC_AVC: [u8; 4] = *b"avc1";
const FOURCC_HEVC: [u8; 4] = *b"hvc1";
const FOURCC_AV1: [u8; 4] = *b"av01";
const FOURCC_VP9: [u8; 4] = *b"vp09";
const FOURCC_AAC: [u8; 4] = *b"mp4a";

/// The largest body (and so frame payload plus header) an FLV tag can describe.
const MAX_TAG_BODY: usize = 0x00FF_FFFF;
const TAG_HEADER_LEN: usize = 11;
const PREVIOUS_TAG_SIZE_LEN: usize = 4;

/// AMF0 `"@setDataFrame"` as a string value: marker 0x02, u16 length 13, the bytes.
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
/// AMF0 `"onMetaData"` as a string value.
const ON_META_DATA: &[u8] = b"\x02\x00\x0aonMetaData";

/// Parses one FLV tag body (an RTMP audio, video or data message payload) into a frame
/// with `dts_ms = timestamp_ms`.
///
/// `Ok(None)` means the body is valid but carries nothing for the media pipeline (see
/// the module notes: command frames, MPEG2TSSequenceStart, other multitrack tracks,
/// non-`onMetaData` script data, audio multichannel configs). The payload is a slice of
/// `body`: nothing is copied.
pub fn parse_body(
    kind: TagKind,
    timestamp_ms: u64,
    body: Bytes,
) -> Result<Option<Frame>, FlvError> {
    let parsed = match kind {
        TagKind::Video => parse_video(body)?,
        TagKind::Audio => parse_audio(body)?,
        TagKind::Script => parse_script(body),
    };
    Ok(parsed.map(|p| Frame {
        codec: p.codec,
        kind: p.kind,
        // Only coded pictures are random access points; configs are state.
        keyframe: p.keyframe && p.kind == FrameKind::Media,
        dts_ms: timestamp_ms,
        cts_ms: p.cts_ms,
        payload: p.payload,
    }))
}

/// A frame before it gets its timestamp.
struct Parsed {
    codec: Codec,
    kind: FrameKind,
    keyframe: bool,
    cts_ms: i32,
    payload: Bytes,
}

impl Parsed {
    fn new(codec: Codec, kind: FrameKind, payload: Bytes) -> Self {
        Parsed {
            codec,
            kind,
            keyframe: false,
            cts_ms: 0,
            payload,
        }
    }
}

fn need(body: &[u8], len: usize, what: &'static str) -> Result<(), FlvError> {
    if body.len() < len {
        return Err(FlvError::Truncated {
            what,
            need: len,
            have: body.len(),
        });
    }
    Ok(())
}

/// Reads a signed 24-bit big-endian integer (composition time offsets).
fn si24(b: &[u8]) -> i32 {
    let raw = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    // Shift the sign bit of the 24-bit value into the i32 sign bit and back.
    ((raw << 8) as i32) >> 8
}

fn fourcc_text(fourcc: [u8; 4]) -> String {
    fourcc
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

fn parse_video(body: Bytes) -> Result<Option<Parsed>, FlvError> {
    need(&body, 1, "video tag header")?;
    let first = body[0];
    if first & EX_HEADER_BIT != 0 {
        return parse_ex_video(body);
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0F;
    if frame_type == FRAME_COMMAND {
        // Video info/command frame (seek markers): no picture in it.
        return Ok(None);
    }
    let keyframe = matches!(frame_type, FRAME_KEY | FRAME_GENERATED_KEY);
    let codec = match codec_id {
        CODEC_AVC => VideoCodec::H264,
        CODEC_HEVC_COMMUNITY => VideoCodec::H265,
        _ => {
            let mut p = Parsed::new(
                Codec::Video(VideoCodec::Legacy { codec_id }),
                FrameKind::Media,
                body.slice(1..),
            );
            p.keyframe = keyframe;
            return Ok(Some(p));
        }
    };
    need(&body, 5, "AVC video tag header")?;
    let kind = match body[1] {
        AVC_SEQUENCE_HEADER => FrameKind::Config,
        AVC_NALU => FrameKind::Media,
        AVC_END_OF_SEQUENCE => FrameKind::EndOfSequence,
        packet_type => {
            return Err(FlvError::UnknownPacketType {
                what: "AVC video",
                packet_type,
            })
        }
    };
    let mut p = Parsed::new(Codec::Video(codec), kind, body.slice(5..));
    if kind == FrameKind::Media {
        p.keyframe = keyframe;
        p.cts_ms = si24(&body[2..5]);
    }
    Ok(Some(p))
}

/// Skips the E-RTMP v2 `ModEx` prefixes that may precede the real packet type.
/// `pos` points just after the byte whose low nibble was `packet_type`; returns the
/// position after the last ModEx and the real packet type.
fn skip_mod_ex(body: &[u8], mut pos: usize, mut packet_type: u8) -> Result<(usize, u8), FlvError> {
    while packet_type == PKT_MOD_EX {
        need(body, pos + 1, "ModEx data size")?;
        let mut size = usize::from(body[pos]) + 1;
        pos += 1;
        if size == 256 {
            need(body, pos + 2, "ModEx data size")?;
            size = usize::from(u16::from_be_bytes([body[pos], body[pos + 1]])) + 1;
            pos += 2;
        }
        // The data (a nanosecond timestamp offset, or a type we don't know) is skipped,
        // then one byte: ModEx type (high nibble), next packet type (low nibble).
        need(body, pos + size + 1, "ModEx data")?;
        pos += size;
        packet_type = body[pos] & 0x0F;
        pos += 1;
    }
    Ok((pos, packet_type))
}

/// One track of an Enhanced RTMP message.
struct ExTrack {
    packet_type: u8,
    fourcc: [u8; 4],
    data: Bytes,
}

fn read_fourcc(body: &[u8], pos: usize) -> Result<[u8; 4], FlvError> {
    need(body, pos + 4, "Enhanced RTMP FourCC")?;
    Ok([body[pos], body[pos + 1], body[pos + 2], body[pos + 3]])
}

/// Reads the FourCC (and, for multitrack messages, finds track 0) of an ExAudio or
/// ExVideo tag whose header bytes end at `pos`. `None`: a multitrack message without
/// track 0.
fn select_ex_track(
    body: &Bytes,
    mut pos: usize,
    packet_type: u8,
    multitrack: u8,
) -> Result<Option<ExTrack>, FlvError> {
    if packet_type != multitrack {
        let fourcc = read_fourcc(body, pos)?;
        return Ok(Some(ExTrack {
            packet_type,
            fourcc,
            data: body.slice(pos + 4..),
        }));
    }
    need(body, pos + 1, "multitrack header")?;
    let multitrack_type = body[pos] >> 4;
    let packet_type = body[pos] & 0x0F;
    pos += 1;
    if packet_type == multitrack {
        return Err(FlvError::NestedMultitrack);
    }
    let mut shared_fourcc = None;
    if multitrack_type != MULTITRACK_MANY_CODECS {
        shared_fourcc = Some(read_fourcc(body, pos)?);
        pos += 4;
    }
    while pos < body.len() {
        let fourcc = match shared_fourcc {
            Some(f) => f,
            None => {
                let f = read_fourcc(body, pos)?;
                pos += 4;
                f
            }
        };
        need(body, pos + 1, "multitrack track id")?;
        let track_id = body[pos];
        pos += 1;
        let end = if multitrack_type == MULTITRACK_ONE_TRACK {
            body.len()
        } else {
            need(body, pos + 3, "multitrack track size")?;
            let size = (usize::from(body[pos]) << 16)
                | (usize::from(body[pos + 1]) << 8)
                | usize::from(body[pos + 2]);
            pos += 3;
            need(body, pos + size, "multitrack track")?;
            pos + size
        };
        if track_id == 0 {
            return Ok(Some(ExTrack {
                packet_type,
                fourcc,
                data: body.slice(pos..end),
            }));
        }
        pos = end;
    }
    Ok(None)
}

fn parse_ex_video(body: Bytes) -> Result<Option<Parsed>, FlvError> {
    let frame_type = (body[0] >> 4) & 0x07;
    let (pos, packet_type) = skip_mod_ex(&body, 1, body[0] & 0x0F)?;
    if frame_type == FRAME_COMMAND && packet_type != PKT_METADATA {
        // A command (one UI8) instead of a FourCC and a body: nothing to play.
        return Ok(None);
    }
    let Some(track) = select_ex_track(&body, pos, packet_type, PKT_VIDEO_MULTITRACK)? else {
        return Ok(None);
    };
    let codec = match track.fourcc {
        FOURCC_AVC => VideoCodec::H264,
        FOURCC_HEVC => VideoCodec::H265,
        FOURCC_AV1 => VideoCodec::Av1,
        FOURCC_VP9 => VideoCodec::Vp9,
        other => {
            return Err(FlvError::UnsupportedVideoCodec {
                fourcc: fourcc_text(other),
            })
        }
    };
    let has_cts = matches!(codec, VideoCodec::H264 | VideoCodec::H265);
    let data = track.data;
    let mut p = match track.packet_type {
        PKT_SEQUENCE_START => Parsed::new(Codec::Video(codec), FrameKind::Config, data),
        PKT_SEQUENCE_END => Parsed::new(Codec::Video(codec), FrameKind::EndOfSequence, data),
        PKT_METADATA => Parsed::new(Codec::Video(codec), FrameKind::Metadata, data),
        PKT_CODED_FRAMES if has_cts => {
            need(&data, 3, "Enhanced RTMP composition time")?;
            let mut p = Parsed::new(Codec::Video(codec), FrameKind::Media, data.slice(3..));
            p.cts_ms = si24(&data[..3]);
            p
        }
        // AV1 and VP9 have no composition offset field (no reordering in the container);
        // CodedFramesX means the same for them, so accept either.
        PKT_CODED_FRAMES | PKT_CODED_FRAMES_X => {
            Parsed::new(Codec::Video(codec), FrameKind::Media, data)
        }
        PKT_MPEG2TS_SEQUENCE_START => return Ok(None),
        packet_type => {
            return Err(FlvError::UnknownPacketType {
                what: "Enhanced RTMP video",
                packet_type,
            })
        }
    };
    p.keyframe = matches!(frame_type, FRAME_KEY | FRAME_GENERATED_KEY);
    Ok(Some(p))
}

fn parse_audio(body: Bytes) -> Result<Option<Parsed>, FlvError> {
    need(&body, 1, "audio tag header")?;
    let header = body[0];
    match header >> 4 {
        SOUND_AAC => {
            need(&body, 2, "AAC audio tag header")?;
            let kind = match body[1] {
                AAC_SEQUENCE_HEADER => FrameKind::Config,
                AAC_RAW => FrameKind::Media,
                packet_type => {
                    return Err(FlvError::UnknownPacketType {
                        what: "AAC audio",
                        packet_type,
                    })
                }
            };
            Ok(Some(Parsed::new(
                Codec::Audio(AudioCodec::Aac),
                kind,
                body.slice(2..),
            )))
        }
        SOUND_EX_HEADER => parse_ex_audio(body),
        _ => Ok(Some(Parsed::new(
            Codec::Audio(AudioCodec::Legacy { header }),
            FrameKind::Media,
            body.slice(1..),
        ))),
    }
}

fn parse_ex_audio(body: Bytes) -> Result<Option<Parsed>, FlvError> {
    let (pos, packet_type) = skip_mod_ex(&body, 1, body[0] & 0x0F)?;
    let Some(track) = select_ex_track(&body, pos, packet_type, PKT_AUDIO_MULTITRACK)? else {
        return Ok(None);
    };
    if track.fourcc != FOURCC_AAC {
        return Err(FlvError::UnsupportedAudioCodec {
            fourcc: fourcc_text(track.fourcc),
        });
    }
    let kind = match track.packet_type {
        PKT_SEQUENCE_START => FrameKind::Config,
        PKT_CODED_FRAMES => FrameKind::Media,
        PKT_SEQUENCE_END => FrameKind::EndOfSequence,
        // AAC's AudioSpecificConfig already describes its channels.
        PKT_MULTICHANNEL_CONFIG => return Ok(None),
        packet_type => {
            return Err(FlvError::UnknownPacketType {
                what: "Enhanced RTMP audio",
                packet_type,
            })
        }
    };
    Ok(Some(Parsed::new(
        Codec::Audio(AudioCodec::Aac),
        kind,
        track.data,
    )))
}

/// Removes a leading AMF0 `"@setDataFrame"` string, the wrapper a publisher puts around
/// `onMetaData` (RTMP `@setDataFrame`, and FLV files recorded from such streams).
/// Returns the body unchanged when it has no wrapper; never copies.
pub fn strip_set_data_frame(body: Bytes) -> Bytes {
    if body.starts_with(SET_DATA_FRAME) {
        body.slice(SET_DATA_FRAME.len()..)
    } else {
        body
    }
}

fn parse_script(body: Bytes) -> Option<Parsed> {
    let body = strip_set_data_frame(body);
    if !body.starts_with(ON_META_DATA) {
        return None;
    }
    Some(Parsed::new(Codec::Script, FrameKind::Metadata, body))
}

/// The bytes a body starts with, before the frame payload.
struct BodyHeader {
    bytes: [u8; 8],
    len: usize,
}

impl BodyHeader {
    fn new(bytes: &[u8]) -> Self {
        let mut h = BodyHeader {
            bytes: [0; 8],
            len: bytes.len(),
        };
        h.bytes[..bytes.len()].copy_from_slice(bytes);
        h
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// SI24 composition offset; values outside the 24-bit range (which no real stream has)
/// are clamped rather than wrapped into a wrong sign.
fn si24_bytes(cts_ms: i32) -> [u8; 3] {
    let v = cts_ms.clamp(-(1 << 23), (1 << 23) - 1) as u32;
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn video_frame_type(frame: &Frame) -> u8 {
    // Configs and sequence ends go out as key frames, as every muxer writes them.
    if frame.keyframe || frame.kind != FrameKind::Media {
        FRAME_KEY
    } else {
        FRAME_INTER
    }
}

fn body_header(frame: &Frame) -> BodyHeader {
    match frame.codec {
        Codec::Script => BodyHeader::new(&[]),
        Codec::Audio(AudioCodec::Legacy { header }) => BodyHeader::new(&[header]),
        Codec::Audio(AudioCodec::Aac) => match frame.kind {
            FrameKind::Config => BodyHeader::new(&[AAC_HEADER, AAC_SEQUENCE_HEADER]),
            // Legacy AAC has no end-of-sequence packet; E-RTMP audio does.
            FrameKind::EndOfSequence => {
                let mut b = [0u8; 5];
                b[0] = (SOUND_EX_HEADER << 4) | PKT_SEQUENCE_END;
                b[1..].copy_from_slice(&FOURCC_AAC);
                BodyHeader::new(&b)
            }
            FrameKind::Media | FrameKind::Metadata => BodyHeader::new(&[AAC_HEADER, AAC_RAW]),
        },
        Codec::Video(VideoCodec::Legacy { codec_id }) => {
            BodyHeader::new(&[(video_frame_type(frame) << 4) | (codec_id & 0x0F)])
        }
        Codec::Video(VideoCodec::H264) if frame.kind != FrameKind::Metadata => {
            let (packet_type, cts) = match frame.kind {
                FrameKind::Config => (AVC_SEQUENCE_HEADER, [0; 3]),
                FrameKind::EndOfSequence => (AVC_END_OF_SEQUENCE, [0; 3]),
                _ => (AVC_NALU, si24_bytes(frame.cts_ms)),
            };
            let first = (video_frame_type(frame) << 4) | CODEC_AVC;
            BodyHeader::new(&[first, packet_type, cts[0], cts[1], cts[2]])
        }
        Codec::Video(codec) => {
            let fourcc = match codec {
                VideoCodec::H264 => FOURCC_AVC,
                VideoCodec::H265 => FOURCC_HEVC,
                VideoCodec::Av1 => FOURCC_AV1,
                VideoCodec::Vp9 => FOURCC_VP9,
                VideoCodec::Legacy { .. } => unreachable!("legacy codecs are matched above"),
            };
            let has_cts = codec == VideoCodec::H265 && frame.cts_ms != 0;
            let (frame_type, packet_type) = match frame.kind {
                FrameKind::Config => (FRAME_KEY, PKT_SEQUENCE_START),
                FrameKind::EndOfSequence => (FRAME_KEY, PKT_SEQUENCE_END),
                // FrameType is ignored for Metadata; ffmpeg writes the command type.
                FrameKind::Metadata => (FRAME_COMMAND, PKT_METADATA),
                FrameKind::Media if has_cts => (video_frame_type(frame), PKT_CODED_FRAMES),
                // ffmpeg's rule: HEVC without an offset saves the SI24 with CodedFramesX;
                // AV1 and VP9 always use CodedFrames, which has no offset for them.
                FrameKind::Media if codec == VideoCodec::H265 => {
                    (video_frame_type(frame), PKT_CODED_FRAMES_X)
                }
                FrameKind::Media => (video_frame_type(frame), PKT_CODED_FRAMES),
            };
            let mut b = [0u8; 8];
            b[0] = EX_HEADER_BIT | (frame_type << 4) | packet_type;
            b[1..5].copy_from_slice(&fourcc);
            if has_cts && frame.kind == FrameKind::Media {
                b[5..8].copy_from_slice(&si24_bytes(frame.cts_ms));
                BodyHeader::new(&b)
            } else {
                BodyHeader::new(&b[..5])
            }
        }
    }
}

/// Serializes a frame as an FLV tag body (the payload of an RTMP audio/video/data
/// message): legacy AVC and AAC headers for H.264 and AAC, Enhanced RTMP ExVideoTagHeader
/// for H.265, AV1 and VP9, the stored header byte for pass-through codecs, and the AMF0
/// payload as is for script data. One allocation, one copy of the payload.
///
/// AV1/VP9 bodies have no composition offset: their `cts_ms` is not written.
pub fn write_body(frame: &Frame) -> Bytes {
    let header = body_header(frame);
    let mut out = BytesMut::with_capacity(header.len + frame.payload.len());
    out.put_slice(header.as_slice());
    out.put_slice(&frame.payload);
    out.freeze()
}

/// Serializes a frame as a complete FLV tag: the 11-byte tag header, the body, and the
/// trailing PreviousTagSize, in one allocation. Concatenating [`super::file_header`] and
/// such tags makes an FLV file or HTTP-FLV stream.
///
/// `timestamp_ms` is written as FLV's 32-bit timestamp (24 bits plus the extended byte):
/// it wraps after 49.7 days, as in RTMP.
pub fn write_tag(frame: &Frame, timestamp_ms: u64) -> Result<Bytes, FlvError> {
    let header = body_header(frame);
    let body_len = header.len + frame.payload.len();
    if body_len > MAX_TAG_BODY {
        return Err(FlvError::FrameTooLarge { size: body_len });
    }
    let mut out = BytesMut::with_capacity(TAG_HEADER_LEN + body_len + PREVIOUS_TAG_SIZE_LEN);
    out.put_u8(tag_kind(frame.codec).type_id());
    out.put_uint(body_len as u64, 3);
    let ts = timestamp_ms as u32;
    out.put_uint(u64::from(ts & 0x00FF_FFFF), 3);
    out.put_u8((ts >> 24) as u8);
    out.put_uint(0, 3); // StreamID: always 0
    out.put_slice(header.as_slice());
    out.put_slice(&frame.payload);
    out.put_u32((TAG_HEADER_LEN + body_len) as u32);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(
        codec: Codec,
        kind: FrameKind,
        keyframe: bool,
        cts_ms: i32,
        payload: &'static [u8],
    ) -> Frame {
        Frame {
            codec,
            kind,
            keyframe,
            dts_ms: 1234,
            cts_ms,
            payload: Bytes::from_static(payload),
        }
    }

    fn parse(kind: TagKind, body: &[u8]) -> Result<Option<Frame>, FlvError> {
        parse_body(kind, 1234, Bytes::copy_from_slice(body))
    }

    #[test]
    fn legacy_avc_packets() {
        let config = parse(TagKind::Video, b"\x17\x00\x00\x00\x00\x01\x64")
            .unwrap()
            .unwrap();
        assert_eq!(config.codec, Codec::Video(VideoCodec::H264));
        assert_eq!(config.kind, FrameKind::Config);
        assert!(!config.keyframe, "a config is not a random access point");
        assert_eq!(&config.payload[..], b"\x01\x64");

        // cts = -2 as SI24
        let media = parse(TagKind::Video, b"\x27\x01\xff\xff\xfe\x00\x00\x00\x01\x41")
            .unwrap()
            .unwrap();
        assert_eq!(
            (media.kind, media.keyframe, media.cts_ms, media.dts_ms),
            (FrameKind::Media, false, -2, 1234)
        );
        assert_eq!(media.pts_ms(), 1232);
        let key = parse(TagKind::Video, b"\x17\x01\x00\x00\x50\x00")
            .unwrap()
            .unwrap();
        assert!(key.keyframe && key.starts_gop());
        assert_eq!(key.cts_ms, 80);

        let eos = parse(TagKind::Video, b"\x17\x02\x00\x00\x00")
            .unwrap()
            .unwrap();
        assert_eq!(eos.kind, FrameKind::EndOfSequence);
        assert!(eos.payload.is_empty());
    }

    #[test]
    fn video_command_frames_are_ignored() {
        assert_eq!(parse(TagKind::Video, b"\x57\x00").unwrap(), None);
        assert_eq!(
            parse(TagKind::Video, b"\xd0\x01").unwrap(),
            None,
            "enhanced command frame"
        );
    }

    #[test]
    fn legacy_codecs_pass_through() {
        let f = parse(TagKind::Video, b"\x22\xaa\xbb").unwrap().unwrap();
        assert_eq!(f.codec, Codec::Video(VideoCodec::Legacy { codec_id: 2 }));
        assert_eq!(
            (f.kind, f.keyframe, &f.payload[..]),
            (FrameKind::Media, false, &b"\xaa\xbb"[..])
        );
        assert_eq!(&write_body(&f)[..], b"\x22\xaa\xbb");

        let mp3 = parse(TagKind::Audio, b"\x2f\xff\xfb").unwrap().unwrap();
        assert_eq!(mp3.codec, Codec::Audio(AudioCodec::Legacy { header: 0x2f }));
        assert_eq!(&write_body(&mp3)[..], b"\x2f\xff\xfb");
    }

    #[test]
    fn aac_packets() {
        let config = parse(TagKind::Audio, b"\xaf\x00\x12\x10").unwrap().unwrap();
        assert_eq!(
            (config.codec, config.kind),
            (Codec::Audio(AudioCodec::Aac), FrameKind::Config)
        );
        assert_eq!(&config.payload[..], b"\x12\x10");
        let raw = parse(TagKind::Audio, b"\xaf\x01\x21\x00").unwrap().unwrap();
        assert_eq!(raw.kind, FrameKind::Media);
        assert!(!raw.keyframe);
        assert!(matches!(
            parse(TagKind::Audio, b"\xaf\x07"),
            Err(FlvError::UnknownPacketType { packet_type: 7, .. })
        ));
    }

    #[test]
    fn enhanced_hevc_packets() {
        let config = parse(TagKind::Video, b"\x90hvc1\x01\x02").unwrap().unwrap();
        assert_eq!(
            (config.codec, config.kind),
            (Codec::Video(VideoCodec::H265), FrameKind::Config)
        );
        assert_eq!(&config.payload[..], b"\x01\x02");

        let coded = parse(
            TagKind::Video,
            b"\x91hvc1\x00\x00\x28\x00\x00\x00\x02\x26\x01",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (coded.kind, coded.keyframe, coded.cts_ms),
            (FrameKind::Media, true, 40)
        );
        assert_eq!(&coded.payload[..], b"\x00\x00\x00\x02\x26\x01");

        let x = parse(TagKind::Video, b"\xa3hvc1\x00\x00\x00\x01\x02")
            .unwrap()
            .unwrap();
        assert_eq!((x.kind, x.keyframe, x.cts_ms), (FrameKind::Media, false, 0));

        let end = parse(TagKind::Video, b"\x92hvc1").unwrap().unwrap();
        assert_eq!(end.kind, FrameKind::EndOfSequence);
    }

    #[test]
    fn enhanced_av1_vp9_and_avc() {
        let av1 = parse(TagKind::Video, b"\x91av01\x12\x00\x0a")
            .unwrap()
            .unwrap();
        assert_eq!((av1.codec, av1.cts_ms), (Codec::Video(VideoCodec::Av1), 0));
        assert_eq!(
            &av1.payload[..],
            b"\x12\x00\x0a",
            "AV1 CodedFrames has no SI24"
        );
        let vp9 = parse(TagKind::Video, b"\xa1vp09\x86").unwrap().unwrap();
        assert_eq!(
            (vp9.codec, vp9.keyframe),
            (Codec::Video(VideoCodec::Vp9), false)
        );
        // avc1 as an ExHeader codec comes out as plain H.264 and goes back as legacy AVC.
        let avc = parse(TagKind::Video, b"\x91avc1\x00\x00\x10\x00\x00\x00\x01\x65")
            .unwrap()
            .unwrap();
        assert_eq!(
            (avc.codec, avc.cts_ms),
            (Codec::Video(VideoCodec::H264), 16)
        );
        assert_eq!(
            &write_body(&avc)[..],
            b"\x17\x01\x00\x00\x10\x00\x00\x00\x01\x65"
        );
        assert_eq!(
            parse(TagKind::Video, b"\x95av01\x80\x04").unwrap(),
            None,
            "MPEG2TSSequenceStart"
        );
        assert!(matches!(
            parse(TagKind::Video, b"\x90vp08\x01"),
            Err(FlvError::UnsupportedVideoCodec { fourcc }) if fourcc == "vp08"
        ));
    }

    #[test]
    fn enhanced_metadata_is_kept_as_metadata() {
        let body = b"\xd4hvc1\x02\x00\x09colorInfo\x03\x00\x00\x09";
        let f = parse(TagKind::Video, body).unwrap().unwrap();
        assert_eq!(
            (f.codec, f.kind),
            (Codec::Video(VideoCodec::H265), FrameKind::Metadata)
        );
        assert_eq!(&write_body(&f)[..], &body[..]);
    }

    #[test]
    fn mod_ex_prefix_is_skipped() {
        // ModEx (7), size 3 (UI8 2 + 1), 3 bytes of nanosecond offset, then
        // ModExType 0 | PacketType CodedFramesX, then the FourCC.
        let f = parse(TagKind::Video, b"\x97\x02\x00\x01\x02\x03hvc1\xaa")
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.kind, f.keyframe, &f.payload[..]),
            (FrameKind::Media, true, &b"\xaa"[..])
        );
        // 16-bit size escape: UI8 255 means a UI16 follows.
        let mut body = vec![0x97, 0xff, 0x01, 0x00];
        body.extend_from_slice(&[0u8; 257]);
        body.push(0x03);
        body.extend_from_slice(b"hvc1\xbb");
        let f = parse(TagKind::Video, &body).unwrap().unwrap();
        assert_eq!(&f.payload[..], b"\xbb");
        assert!(matches!(
            parse(TagKind::Video, b"\x97\x05\x00"),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn multitrack_takes_track_zero() {
        // OneTrack: multitrack type 0, packet type CodedFramesX, FourCC, track id 0, data.
        let f = parse(TagKind::Video, b"\x96\x03hvc1\x00\xaa\xbb")
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.codec, &f.payload[..]),
            (Codec::Video(VideoCodec::H265), &b"\xaa\xbb"[..])
        );
        assert_eq!(
            parse(TagKind::Video, b"\x96\x03hvc1\x01\xaa").unwrap(),
            None,
            "not the default track"
        );
        // ManyTracks: track 1 (2 bytes), then track 0 (1 byte).
        let f = parse(
            TagKind::Video,
            b"\x96\x13hvc1\x01\x00\x00\x02\x11\x22\x00\x00\x00\x01\x33",
        )
        .unwrap()
        .unwrap();
        assert_eq!(&f.payload[..], b"\x33");
        // ManyTracksManyCodecs: each track has its FourCC.
        let f = parse(
            TagKind::Video,
            b"\x96\x20vp09\x01\x00\x00\x01\x44av01\x00\x00\x00\x01\x55",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (f.codec, &f.payload[..]),
            (Codec::Video(VideoCodec::Av1), &b"\x55"[..])
        );
        assert!(matches!(
            parse(TagKind::Video, b"\x96\x13hvc1\x00\x00\x00\x09\x11"),
            Err(FlvError::Truncated { .. })
        ));
        assert_eq!(
            parse(TagKind::Video, b"\x96\x16hvc1"),
            Err(FlvError::NestedMultitrack)
        );
        // Audio multitrack uses packet type 5.
        let a = parse(TagKind::Audio, b"\x95\x01mp4a\x00\x21")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.codec, a.kind, &a.payload[..]),
            (
                Codec::Audio(AudioCodec::Aac),
                FrameKind::Media,
                &b"\x21"[..]
            )
        );
    }

    #[test]
    fn enhanced_audio() {
        let c = parse(TagKind::Audio, b"\x90mp4a\x12\x10").unwrap().unwrap();
        assert_eq!(
            (c.codec, c.kind),
            (Codec::Audio(AudioCodec::Aac), FrameKind::Config)
        );
        assert_eq!(&write_body(&c)[..], b"\xaf\x00\x12\x10");
        let end = parse(TagKind::Audio, b"\x92mp4a").unwrap().unwrap();
        assert_eq!(end.kind, FrameKind::EndOfSequence);
        assert_eq!(&write_body(&end)[..], b"\x92mp4a");
        assert_eq!(
            parse(TagKind::Audio, b"\x94mp4a\x01\x02").unwrap(),
            None,
            "multichannel config"
        );
        assert!(matches!(
            parse(TagKind::Audio, b"\x90Opus\x01"),
            Err(FlvError::UnsupportedAudioCodec { fourcc }) if fourcc == "Opus"
        ));
    }

    #[test]
    fn community_hevc_codec_id_is_h265() {
        let f = parse(TagKind::Video, b"\x1c\x01\x00\x00\x21\xaa")
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.codec, f.keyframe, f.cts_ms),
            (Codec::Video(VideoCodec::H265), true, 33)
        );
        assert_eq!(&write_body(&f)[..], b"\x91hvc1\x00\x00\x21\xaa");
    }

    #[test]
    fn script_data() {
        let meta = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09";
        let mut wrapped = SET_DATA_FRAME.to_vec();
        wrapped.extend_from_slice(meta);
        for body in [&meta[..], &wrapped[..]] {
            let f = parse(TagKind::Script, body).unwrap().unwrap();
            assert_eq!((f.codec, f.kind), (Codec::Script, FrameKind::Metadata));
            assert_eq!(&f.payload[..], &meta[..]);
        }
        assert_eq!(
            parse(TagKind::Script, b"\x02\x00\x0aonCuePoint\x05").unwrap(),
            None
        );
        assert_eq!(parse(TagKind::Script, b"").unwrap(), None);
        assert_eq!(
            &strip_set_data_frame(Bytes::from_static(meta))[..],
            &meta[..]
        );
    }

    #[test]
    fn truncated_bodies_are_errors() {
        for (kind, body) in [
            (TagKind::Video, &b""[..]),
            (TagKind::Video, b"\x17\x01\x00"),
            (TagKind::Video, b"\x90hv"),
            (TagKind::Video, b"\x91hvc1\x00"),
            (TagKind::Audio, b""),
            (TagKind::Audio, b"\xaf"),
            (TagKind::Audio, b"\x90mp"),
        ] {
            assert!(
                matches!(parse(kind, body), Err(FlvError::Truncated { .. })),
                "{body:02x?}"
            );
        }
    }

    #[test]
    fn every_codec_and_kind_round_trips() {
        let mut frames = Vec::new();
        for codec in [
            Codec::Video(VideoCodec::H264),
            Codec::Video(VideoCodec::H265),
            Codec::Video(VideoCodec::Av1),
            Codec::Video(VideoCodec::Vp9),
        ] {
            frames.push(frame(codec, FrameKind::Config, false, 0, b"cfg"));
            frames.push(frame(codec, FrameKind::EndOfSequence, false, 0, b""));
            frames.push(frame(
                codec,
                FrameKind::Metadata,
                false,
                0,
                b"\x02\x00\x01x",
            ));
            frames.push(frame(codec, FrameKind::Media, true, 0, b"key"));
            frames.push(frame(codec, FrameKind::Media, false, 0, b"inter"));
            if matches!(codec, Codec::Video(VideoCodec::H264 | VideoCodec::H265)) {
                frames.push(frame(codec, FrameKind::Media, false, -40, b"b"));
                frames.push(frame(codec, FrameKind::Media, true, 8_388_607, b"max"));
            }
        }
        frames.push(frame(
            Codec::Video(VideoCodec::Legacy { codec_id: 4 }),
            FrameKind::Media,
            true,
            0,
            b"vp6",
        ));
        frames.push(frame(
            Codec::Audio(AudioCodec::Aac),
            FrameKind::Config,
            false,
            0,
            b"\x12\x10",
        ));
        frames.push(frame(
            Codec::Audio(AudioCodec::Aac),
            FrameKind::Media,
            false,
            0,
            b"raw",
        ));
        frames.push(frame(
            Codec::Audio(AudioCodec::Aac),
            FrameKind::EndOfSequence,
            false,
            0,
            b"",
        ));
        frames.push(frame(
            Codec::Audio(AudioCodec::Legacy { header: 0x2f }),
            FrameKind::Media,
            false,
            0,
            b"mp3",
        ));
        frames.push(frame(
            Codec::Script,
            FrameKind::Metadata,
            false,
            0,
            b"\x02\x00\x0aonMetaData\x05",
        ));
        for f in frames {
            let body = write_body(&f);
            let back = parse_body(tag_kind(f.codec), f.dts_ms, body.clone()).unwrap();
            assert_eq!(back.as_ref(), Some(&f), "body {body:02x?}");
            // write_tag frames exactly that body.
            let tag = write_tag(&f, 0x0102_0304).unwrap();
            assert_eq!(tag[0], tag_kind(f.codec).type_id());
            assert_eq!(
                &tag[4..8],
                &[0x02, 0x03, 0x04, 0x01],
                "24-bit timestamp, then the extended byte"
            );
            assert_eq!(&tag[11..tag.len() - 4], &body[..]);
            assert_eq!(
                &tag[tag.len() - 4..],
                &((tag.len() - 4) as u32).to_be_bytes()
            );
        }
    }

    #[test]
    fn oversized_frames_do_not_fit_a_tag() {
        let big = Frame {
            codec: Codec::Audio(AudioCodec::Legacy { header: 0x2f }),
            kind: FrameKind::Media,
            keyframe: false,
            dts_ms: 0,
            cts_ms: 0,
            payload: Bytes::from(vec![0u8; MAX_TAG_BODY]),
        };
        assert_eq!(
            write_tag(&big, 0),
            Err(FlvError::FrameTooLarge {
                size: MAX_TAG_BODY + 1
            })
        );
    }
}
