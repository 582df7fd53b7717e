//! One complete audio or video access unit, codec configuration record, or metadata
//! message, with its timing. Payloads are `Bytes`: a frame is cloned per subscriber by
//! reference count, never by copy.

use bytes::Bytes;

/// Which elementary stream a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
    /// Script data (`onMetaData`); carries no media.
    Data,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264/AVC. Config payload: AVCDecoderConfigurationRecord; media payload: NAL units,
    /// each prefixed by its length (the size of the prefix is in the config record).
    H264,
    /// H.265/HEVC. Config: HEVCDecoderConfigurationRecord; media: length-prefixed NAL units.
    H265,
    /// AV1. Config: AV1CodecConfigurationRecord; media: low-overhead OBUs (as in ISO BMFF).
    Av1,
    /// VP9. Config: VPCodecConfigurationRecord; media: one VP9 frame (superframe allowed).
    Vp9,
    /// Any other FLV video codec id (Sorenson, VP6, ...): passed through untouched.
    /// The payload is the FLV video tag body after the first byte.
    Legacy { codec_id: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// AAC. Config payload: AudioSpecificConfig; media payload: one raw AAC frame.
    Aac,
    /// Any other FLV sound format (MP3, Speex, G.711, ...): passed through untouched.
    /// `header` is the FLV audio tag's first byte (format, rate, size, channels);
    /// the payload is the rest of the tag body.
    Legacy { header: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Video(VideoCodec),
    Audio(AudioCodec),
    /// Script data: the payload is an AMF0 `onMetaData` body (name string + ECMA array),
    /// without any `@setDataFrame` wrapper.
    Script,
}

impl Codec {
    pub fn track(self) -> Track {
        match self {
            Codec::Video(_) => Track::Video,
            Codec::Audio(_) => Track::Audio,
            Codec::Script => Track::Data,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Codec configuration (sequence header): needed by every decoder before media.
    Config,
    /// A coded access unit.
    Media,
    /// End of sequence (Enhanced RTMP SequenceEnd, AVC end of sequence).
    EndOfSequence,
    /// Stream metadata (`onMetaData`).
    Metadata,
}

/// A complete frame. Timestamps are milliseconds on the stream's own monotonic timeline
/// (see [`crate::media::timeline`]): `dts_ms` never goes backwards within a stream, and
/// the presentation time is `dts_ms + cts_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub codec: Codec,
    pub kind: FrameKind,
    /// A random access point: an IDR / IRAP / AV1 key frame. Always false for audio.
    pub keyframe: bool,
    pub dts_ms: u64,
    /// Composition time offset (B-frames): pts = dts + cts.
    pub cts_ms: i32,
    pub payload: Bytes,
}

impl Frame {
    pub fn track(&self) -> Track {
        self.codec.track()
    }

    pub fn is_config(&self) -> bool {
        self.kind == FrameKind::Config
    }

    /// The first frame a decoder can start from: a video key frame with media in it.
    pub fn starts_gop(&self) -> bool {
        self.keyframe && self.kind == FrameKind::Media && self.track() == Track::Video
    }

    pub fn pts_ms(&self) -> i64 {
        self.dts_ms as i64 + i64::from(self.cts_ms)
    }
}
