//! Codec configuration record readers and writers, and the bitstream helpers the muxers
//! need: AVC/HEVC decoder configuration records and SPS dimensions, AV1 `av1C` with its
//! sequence header, VP9 `vpcC`, AAC AudioSpecificConfig and ADTS headers, length-prefixed
//! NAL unit iteration and Annex B conversion, and RFC 6381 codec strings.
//!
//! Everything here reads untrusted bytes from publishers: parsers are bounded by their
//! input, never panic, and fail with a [`CodecError`] naming what was malformed. They do
//! not decode pictures or samples; they read just enough for packaging, playlists and QoS.

pub mod aac;
pub mod av1;
pub mod avc;
pub mod bits;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hevc;
pub mod nalu;
pub mod vp9;

use crate::media::{AudioCodec, Codec, Frame, VideoCodec};

pub use aac::AudioSpecificConfig;
pub use av1::Av1Config;
pub use avc::{AvcConfig, AvcSps};
pub use hevc::{HevcConfig, HevcSps};
pub use vp9::VpConfig;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("{what} is truncated; the publisher sent an incomplete codec configuration")]
    Truncated { what: &'static str },
    #[error("{what} is malformed: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{what} uses an unsupported feature: {detail}")]
    Unsupported { what: &'static str, detail: String },
}

impl CodecError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        CodecError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(what: &'static str, detail: impl Into<String>) -> Self {
        CodecError::Unsupported {
            what,
            detail: detail.into(),
        }
    }
}

/// The displayed picture size: the coded size less the cropping (AVC frame cropping,
/// HEVC conformance window), checked to be non-empty and at most 65,536 on a side.
pub(crate) fn cropped_size(
    what: &'static str,
    coded: (u64, u64),
    crop: (u64, u64),
) -> Result<(u64, u64), CodecError> {
    let (Some(width), Some(height)) = (coded.0.checked_sub(crop.0), coded.1.checked_sub(crop.1))
    else {
        return Err(CodecError::invalid(
            what,
            "cropping exceeds the picture size",
        ));
    };
    if width == 0 || height == 0 || width > 1 << 16 || height > 1 << 16 {
        return Err(CodecError::invalid(
            what,
            format!("picture size {width}x{height}"),
        ));
    }
    Ok((width, height))
}

impl From<CodecError> for crate::mux::MuxError {
    fn from(e: CodecError) -> Self {
        crate::mux::MuxError::Malformed {
            what: "codec data",
            detail: e.to_string(),
        }
    }
}

/// A human name for a codec in error messages (`H.264 video`, `FLV sound format 10`).
pub fn codec_name(codec: Codec) -> String {
    match codec {
        Codec::Video(VideoCodec::H264) => "H.264 video".into(),
        Codec::Video(VideoCodec::H265) => "H.265 video".into(),
        Codec::Video(VideoCodec::Av1) => "AV1 video".into(),
        Codec::Video(VideoCodec::Vp9) => "VP9 video".into(),
        Codec::Video(VideoCodec::Legacy { codec_id }) => format!("FLV video codec {codec_id}"),
        Codec::Audio(AudioCodec::Aac) => "AAC audio".into(),
        Codec::Audio(AudioCodec::Legacy { header }) if is_flv_mp3(header) => "MP3 audio".into(),
        Codec::Audio(AudioCodec::Legacy { header }) => format!("FLV sound format {}", header >> 4),
        Codec::Script => "script data".into(),
    }
}

/// A parsed codec configuration, one variant per codec with a configuration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecConfig {
    Avc(AvcConfig),
    Hevc(HevcConfig),
    Av1(Av1Config),
    Vp9(VpConfig),
    Aac(AudioSpecificConfig),
}

impl CodecConfig {
    /// Parses the payload of a [`crate::media::FrameKind::Config`] frame of `codec`.
    pub fn parse(codec: Codec, payload: &[u8]) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Video(VideoCodec::H264) => CodecConfig::Avc(AvcConfig::parse(payload)?),
            Codec::Video(VideoCodec::H265) => CodecConfig::Hevc(HevcConfig::parse(payload)?),
            Codec::Video(VideoCodec::Av1) => CodecConfig::Av1(Av1Config::parse(payload)?),
            Codec::Video(VideoCodec::Vp9) => CodecConfig::Vp9(VpConfig::parse(payload)?),
            Codec::Audio(AudioCodec::Aac) => CodecConfig::Aac(AudioSpecificConfig::parse(payload)?),
            other => {
                return Err(CodecError::unsupported(
                    "codec configuration",
                    format!("{other:?} has no configuration record"),
                ))
            }
        })
    }

    /// The RFC 6381 `codecs` parameter value (`avc1.64001f`, `mp4a.40.2`, ...).
    pub fn codec_string(&self) -> String {
        match self {
            CodecConfig::Avc(c) => c.codec_string(),
            CodecConfig::Hevc(c) => c.codec_string(),
            CodecConfig::Av1(c) => c.codec_string(),
            CodecConfig::Vp9(c) => c.codec_string(),
            CodecConfig::Aac(c) => c.codec_string(),
        }
    }

    pub fn info(&self) -> CodecInfo {
        let mut info = CodecInfo {
            codec_string: self.codec_string(),
            ..CodecInfo::default()
        };
        match self {
            CodecConfig::Avc(c) => {
                info.profile = Some(c.profile);
                info.level = Some(c.level);
                if let Some(sps) = c.parse_first_sps() {
                    info.width = Some(sps.width);
                    info.height = Some(sps.height);
                }
            }
            CodecConfig::Hevc(c) => {
                info.profile = Some(c.general_profile_idc);
                info.level = Some(c.general_level_idc);
                if let Some(sps) = c.parse_first_sps() {
                    info.width = Some(sps.width);
                    info.height = Some(sps.height);
                }
            }
            CodecConfig::Av1(c) => {
                info.profile = Some(c.seq_profile);
                info.level = Some(c.seq_level_idx_0);
                if let Some((w, h)) = c.dimensions() {
                    info.width = Some(w);
                    info.height = Some(h);
                }
            }
            CodecConfig::Vp9(c) => {
                info.profile = Some(c.profile);
                info.level = Some(c.level);
            }
            CodecConfig::Aac(c) => {
                info.profile = Some(c.object_type);
                info.sample_rate = Some(c.sample_rate);
                info.channels = c.channels();
            }
        }
        info
    }
}

/// What metadata, playlists and QoS report about a track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecInfo {
    /// RFC 6381 codec string for the HLS `CODECS` attribute.
    pub codec_string: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// AVC/HEVC `profile_idc`, AV1 `seq_profile`, VP9 profile, AAC audio object type.
    pub profile: Option<u8>,
    /// AVC/HEVC `level_idc`, AV1 `seq_level_idx`, VP9 level.
    pub level: Option<u8>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
}

impl CodecInfo {
    /// Summarizes a config frame. Legacy MP3 audio has no configuration record, so any
    /// MP3 frame is accepted and read from its FLV audio header.
    pub fn from_config(frame: &Frame) -> Result<CodecInfo, CodecError> {
        if let Codec::Audio(AudioCodec::Legacy { header }) = frame.codec {
            return legacy_audio_info(header);
        }
        Ok(CodecConfig::parse(frame.codec, &frame.payload)?.info())
    }
}

/// FLV sound formats 2 (MP3) and 14 (MP3 8 kHz).
pub fn is_flv_mp3(header: u8) -> bool {
    matches!(header >> 4, 2 | 14)
}

fn legacy_audio_info(header: u8) -> Result<CodecInfo, CodecError> {
    if !is_flv_mp3(header) {
        return Err(CodecError::unsupported(
            "FLV audio",
            format!("sound format {} has no codec string", header >> 4),
        ));
    }
    // FLV's rate field is coarse (5.5/11/22/44 kHz); the MP3 frame header is exact,
    // but for metadata the FLV value is what the publisher declared.
    let sample_rate = if header >> 4 == 14 {
        8000
    } else {
        [5512, 11025, 22050, 44100][usize::from((header >> 2) & 3)]
    };
    Ok(CodecInfo {
        // RFC 6381 / HLS authoring spec: MPEG-1/2 layer III is signalled as mp4a.40.34.
        codec_string: "mp4a.40.34".into(),
        sample_rate: Some(sample_rate),
        channels: Some(if header & 1 == 1 { 2 } else { 1 }),
        ..CodecInfo::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::FrameKind;
    use bytes::Bytes;

    fn config(codec: Codec, payload: &[u8]) -> Frame {
        Frame {
            codec,
            kind: FrameKind::Config,
            keyframe: false,
            dts_ms: 0,
            cts_ms: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn aac_info() {
        let info =
            CodecInfo::from_config(&config(Codec::Audio(AudioCodec::Aac), &[0x11, 0x90])).unwrap();
        assert_eq!(info.codec_string, "mp4a.40.2");
        assert_eq!(info.sample_rate, Some(48000));
        assert_eq!(info.channels, Some(2));
        assert_eq!(info.profile, Some(2));
    }

    #[test]
    fn mp3_info_from_flv_header() {
        // format 2, 44 kHz, 16-bit, stereo
        let info = CodecInfo::from_config(&config(
            Codec::Audio(AudioCodec::Legacy { header: 0x2f }),
            &[],
        ))
        .unwrap();
        assert_eq!(info.codec_string, "mp4a.40.34");
        assert_eq!(info.sample_rate, Some(44100));
        assert_eq!(info.channels, Some(2));
        let err = CodecInfo::from_config(&config(
            Codec::Audio(AudioCodec::Legacy { header: 0x6f }),
            &[],
        ))
        .unwrap_err();
        assert!(matches!(err, CodecError::Unsupported { .. }));
    }

    #[test]
    fn legacy_video_has_no_config() {
        let err = CodecInfo::from_config(&config(
            Codec::Video(VideoCodec::Legacy { codec_id: 2 }),
            &[1, 2],
        ))
        .unwrap_err();
        assert!(matches!(err, CodecError::Unsupported { .. }), "{err}");
    }
}

#[cfg(test)]
mod real_config_tests {
    use super::*;
    use crate::fmp4::testsupport::frames_from_mp4;

    fn infos(name: &str) -> Vec<CodecInfo> {
        frames_from_mp4(name)
            .iter()
            .filter(|f| f.is_config())
            .map(|f| CodecInfo::from_config(f).unwrap())
            .collect()
    }

    /// Configs written by x264, x265, libaom, libvpx and ffmpeg's AAC encoder.
    #[test]
    fn codec_info_of_ffmpeg_encodes() {
        let [video, audio] = &infos("h264_aac.mp4")[..] else {
            panic!("two tracks")
        };
        assert_eq!(video.codec_string, "avc1.64000a");
        assert_eq!(
            (video.width, video.height, video.profile, video.level),
            (Some(128), Some(72), Some(100), Some(10))
        );
        assert_eq!(audio.codec_string, "mp4a.40.2");
        assert_eq!((audio.sample_rate, audio.channels), (Some(48000), Some(1)));
        for (file, prefix) in [
            ("h265.mp4", "hvc1.1.6.L"),
            ("av1.mp4", "av01.0."),
            ("vp9.mp4", "vp09.00."),
        ] {
            let [video] = &infos(file)[..] else {
                panic!("one track in {file}")
            };
            assert!(
                video.codec_string.starts_with(prefix),
                "{file}: {}",
                video.codec_string
            );
            if file != "vp9.mp4" {
                assert_eq!((video.width, video.height), (Some(128), Some(72)), "{file}");
            }
        }
    }
}
