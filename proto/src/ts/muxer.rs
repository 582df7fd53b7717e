//! [`TsMuxer`]: frames in, 188-byte MPEG-TS packets out, for HLS segments.
//!
//! One program (PMT PID 0x1000) with H.264 or H.265 video on PID 0x100 and AAC or MP3
//! audio on PID 0x101, the layout ffmpeg uses. What it guarantees:
//! - PAT and PMT open every segment and repeat every [`PSI_INTERVAL_MS`] within one;
//!   the PMT version changes when the track set changes.
//! - A PCR on the video PID (audio PID without video) with every video access unit, and
//!   PCR-only packets so that consecutive PCRs are never more than 100 ms apart.
//! - Continuity counters per PID, continuous across segments.
//! - Video: AVCC → Annex B, an AUD first in every access unit, SPS/PPS (and VPS) from
//!   the last config before every IDR/IRAP that lacks them, the random access indicator
//!   on key frames.
//! - Audio: AAC frames wrapped in ADTS, MP3 frames as they are; consecutive frames share
//!   a PES (up to [`AUDIO_PES_MAX_MS`]) whose PTS is the first frame's.
//! - PTS/DTS = (ms + [`PTS_OFFSET_MS`]) × 90, so a negative composition offset on the
//!   first frames never makes a PTS negative.
//!
//! AV1, VP9 and other FLV codecs are refused with [`MuxError::UnsupportedCodec`].

use bytes::Bytes;

use crate::media::codec::{
    codec_name, is_flv_mp3, nalu, AudioSpecificConfig, AvcConfig, HevcConfig,
};
use crate::media::{AudioCodec, Codec, Frame, FrameKind, VideoCodec};
use crate::mux::{MuxError, Muxer};

use super::pes::{self, STREAM_ID_AUDIO, STREAM_ID_VIDEO};
use super::psi::{self, PmtStream};

pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
const PROGRAM_NUMBER: u16 = 1;
const TRANSPORT_STREAM_ID: u16 = 1;

pub const STREAM_TYPE_MPEG1_AUDIO: u8 = 0x03;
pub const STREAM_TYPE_MPEG2_AUDIO: u8 = 0x04;
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
pub const STREAM_TYPE_H264: u8 = 0x1b;
pub const STREAM_TYPE_H265: u8 = 0x24;

/// Added to every PTS/DTS. Like ffmpeg's 1.4 s start, it leaves room for negative
/// composition offsets and for the PCR to run ahead of the first DTS.
pub const PTS_OFFSET_MS: u64 = 1400;
/// The PCR runs this far behind the newest DTS, so every PES arrives before it is due.
pub const PCR_LEAD_MS: u64 = 700;
/// 13818-1 allows 100 ms between PCRs; HLS players and set-top boxes expect it.
pub const PCR_MAX_INTERVAL_MS: u64 = 100;
pub const PSI_INTERVAL_MS: u64 = 100;
/// Longest span of audio frames packed into one PES.
pub const AUDIO_PES_MAX_MS: u64 = 100;
/// PCR-only packets bridge gaps up to this long; a longer gap (a publisher pause) is
/// left as a PCR jump rather than filled with hundreds of empty packets.
const PCR_FILL_MAX_MS: u64 = 2000;

const AUD_H264: [u8; 2] = [0x09, 0xf0]; // primary_pic_type 7: any slice type
const AUD_H265: [u8; 3] = [0x46, 0x01, 0x50]; // type 35, pic_type 2: any slice type

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoKind {
    H264,
    H265,
}

/// How each video codec marks access units, parameter sets and random access points.
struct NalRules {
    nal_type: fn(&[u8]) -> Option<u8>,
    /// The AUD NAL unit we insert (without start code).
    aud: &'static [u8],
    aud_type: u8,
    /// SPS presence means the publisher already sends parameter sets in-band.
    is_parameter_set: fn(u8) -> bool,
    is_irap: fn(u8) -> bool,
}

impl NalRules {
    fn of(kind: VideoKind) -> Self {
        match kind {
            VideoKind::H264 => NalRules {
                nal_type: nalu::avc_nal_type,
                aud: &AUD_H264,
                aud_type: nalu::avc_type::AUD,
                is_parameter_set: |t| t == nalu::avc_type::SPS,
                is_irap: |t| t == nalu::avc_type::IDR,
            },
            VideoKind::H265 => NalRules {
                nal_type: nalu::hevc_nal_type,
                aud: &AUD_H265,
                aud_type: nalu::hevc_type::AUD,
                is_parameter_set: |t| t == nalu::hevc_type::SPS,
                is_irap: |t| {
                    (nalu::hevc_type::IRAP_FIRST..=nalu::hevc_type::IRAP_LAST).contains(&t)
                },
            },
        }
    }
}

struct VideoTrack {
    kind: VideoKind,
    nalu_length_size: u8,
    /// SPS/PPS (with VPS first for H.265) from the last config, Annex B.
    parameter_sets: Vec<u8>,
}

enum AudioKind {
    Aac(AudioSpecificConfig),
    Mp3,
}

struct AudioTrack {
    kind: AudioKind,
    stream_type: u8,
}

struct PendingAudio {
    first_dts_ms: u64,
    pts_90k: u64,
    data: Vec<u8>,
}

/// The MPEG-TS muxer. See the module notes for what it writes.
pub struct TsMuxer {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    pmt_version: u8,
    /// Continuity counters: PAT, PMT, video, audio.
    cc: [u8; 4],
    /// The newest DTS pushed: the muxer's clock for PCR and PSI repetition.
    clock_ms: Option<u64>,
    last_pcr_ms: Option<u64>,
    last_psi_ms: Option<u64>,
    psi_needed: bool,
    pending_audio: Option<PendingAudio>,
    out: Vec<u8>,
}

impl Default for TsMuxer {
    fn default() -> Self {
        Self::new()
    }
}

fn to_90k(ms: u64) -> u64 {
    (ms * 90) & pes::TIMESTAMP_MASK
}

/// The PCR base for the muxer clock at `ms`.
fn pcr_90k(ms: u64) -> u64 {
    to_90k(ms + PTS_OFFSET_MS - PCR_LEAD_MS)
}

/// PTS/DTS in 90 kHz units with the fixed offset; `None` if the offset cannot absorb a
/// negative time.
fn timestamp_90k(ms: i64) -> Option<u64> {
    let shifted = ms.checked_add(PTS_OFFSET_MS as i64)?;
    u64::try_from(shifted).ok().map(to_90k)
}

fn unsupported(codec: Codec) -> MuxError {
    MuxError::UnsupportedCodec {
        codec: codec_name(codec),
        container: "MPEG-TS",
    }
}

/// MPEG-1 (stream type 3) or MPEG-2/2.5 low-sampling-rate audio (stream type 4), from
/// the version bits of the first MP3 frame header.
fn mp3_stream_type(frame: &[u8]) -> Result<u8, MuxError> {
    match frame {
        [0xff, b, ..] if b & 0xe0 == 0xe0 => Ok(if (b >> 3) & 3 == 3 {
            STREAM_TYPE_MPEG1_AUDIO
        } else {
            STREAM_TYPE_MPEG2_AUDIO
        }),
        _ => Err(MuxError::Malformed {
            what: "MP3 frame",
            detail: "no MPEG audio frame sync at the start".into(),
        }),
    }
}

impl TsMuxer {
    pub fn new() -> Self {
        TsMuxer {
            video: None,
            audio: None,
            pmt_version: 0,
            cc: [0; 4],
            clock_ms: None,
            last_pcr_ms: None,
            last_psi_ms: None,
            psi_needed: true,
            pending_audio: None,
            out: Vec::new(),
        }
    }

    fn pcr_pid(&self) -> u16 {
        if self.video.is_some() || self.audio.is_none() {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    fn cc_index(pid: u16) -> usize {
        match pid {
            0 => 0,
            PMT_PID => 1,
            VIDEO_PID => 2,
            _ => 3,
        }
    }

    fn tracks_changed(&mut self) {
        self.pmt_version = (self.pmt_version + 1) & 0x1f;
        self.psi_needed = true;
    }

    fn write_psi(&mut self) {
        let mut streams = Vec::with_capacity(2);
        if let Some(v) = &self.video {
            let stream_type = match v.kind {
                VideoKind::H264 => STREAM_TYPE_H264,
                VideoKind::H265 => STREAM_TYPE_H265,
            };
            streams.push(PmtStream {
                stream_type,
                pid: VIDEO_PID,
            });
        }
        if let Some(a) = &self.audio {
            streams.push(PmtStream {
                stream_type: a.stream_type,
                pid: AUDIO_PID,
            });
        }
        let pat = psi::pat_section(TRANSPORT_STREAM_ID, PROGRAM_NUMBER, PMT_PID);
        let pmt = psi::pmt_section(PROGRAM_NUMBER, self.pmt_version, self.pcr_pid(), &streams);
        for (pid, section) in [(0, pat), (PMT_PID, pmt)] {
            let cc = &mut self.cc[Self::cc_index(pid)];
            self.out
                .extend_from_slice(&psi::section_packet(pid, *cc, &section));
            *cc = (*cc + 1) & 0x0f;
        }
        self.psi_needed = false;
        self.last_psi_ms = self.clock_ms;
    }

    /// Advances the clock to `dts_ms`, repeats PSI when due, and bridges PCR gaps.
    fn advance_clock(&mut self, dts_ms: u64) {
        let now = self.clock_ms.map_or(dts_ms, |c| c.max(dts_ms));
        self.clock_ms = Some(now);
        if self.psi_needed
            || self
                .last_psi_ms
                .is_none_or(|t| now.saturating_sub(t) >= PSI_INTERVAL_MS)
        {
            self.write_psi();
        }
        if let Some(mut last) = self.last_pcr_ms {
            let gap = now.saturating_sub(last);
            if gap > PCR_MAX_INTERVAL_MS && gap <= PCR_FILL_MAX_MS {
                // Step in 100 ms until the PCR this frame (or the next one) carries is
                // within 100 ms of the last one written.
                let pid = self.pcr_pid();
                while now - last > PCR_MAX_INTERVAL_MS {
                    last += PCR_MAX_INTERVAL_MS;
                    let cc = self.cc[Self::cc_index(pid)];
                    pes::pcr_only_packet(&mut self.out, pid, cc, pcr_90k(last));
                }
                self.last_pcr_ms = Some(last);
            }
        }
    }

    /// Writes one PES on `pid`, with a PCR if `pid` carries the program clock.
    fn write_pes(&mut self, pid: u16, pes: &[u8], random_access: bool) {
        let pcr = if pid == self.pcr_pid() {
            self.clock_ms
        } else {
            None
        };
        if let Some(now) = pcr {
            self.last_pcr_ms = Some(now);
        }
        let pcr_90k = pcr.map(pcr_90k);
        let cc = &mut self.cc[Self::cc_index(pid)];
        pes::packetize(&mut self.out, pid, cc, pes, pcr_90k, random_access);
    }

    fn flush_audio(&mut self) {
        let Some(pending) = self.pending_audio.take() else {
            return;
        };
        let mut pes = Vec::with_capacity(14 + pending.data.len());
        pes::write_pes_header(
            &mut pes,
            STREAM_ID_AUDIO,
            pending.pts_90k,
            None,
            pending.data.len(),
        );
        pes.extend_from_slice(&pending.data);
        // Without video, every audio PES is a random access point.
        let random_access = self.video.is_none();
        self.write_pes(AUDIO_PID, &pes, random_access);
    }

    fn push_config(&mut self, frame: &Frame) -> Result<(), MuxError> {
        match frame.codec {
            Codec::Video(VideoCodec::H264) => {
                let cfg = AvcConfig::parse(&frame.payload)?;
                self.set_video(VideoKind::H264, cfg.nalu_length_size, cfg.parameter_sets());
            }
            Codec::Video(VideoCodec::H265) => {
                let cfg = HevcConfig::parse(&frame.payload)?;
                self.set_video(VideoKind::H265, cfg.nalu_length_size, cfg.parameter_sets());
            }
            Codec::Audio(AudioCodec::Aac) => {
                let asc = AudioSpecificConfig::parse(&frame.payload)?;
                // Refuse now, not at the first frame, what ADTS cannot describe.
                asc.adts_header(0).map_err(|e| MuxError::UnsupportedCodec {
                    codec: format!("AAC ({e})"),
                    container: "MPEG-TS",
                })?;
                let changed = !matches!(
                    self.audio,
                    Some(AudioTrack {
                        kind: AudioKind::Aac(_),
                        ..
                    })
                );
                self.audio = Some(AudioTrack {
                    kind: AudioKind::Aac(asc),
                    stream_type: STREAM_TYPE_AAC_ADTS,
                });
                if changed {
                    self.tracks_changed();
                }
            }
            Codec::Audio(AudioCodec::Legacy { header }) if is_flv_mp3(header) => {}
            other => return Err(unsupported(other)),
        }
        Ok(())
    }

    fn set_video<'a>(
        &mut self,
        kind: VideoKind,
        nalu_length_size: u8,
        sets: impl Iterator<Item = &'a [u8]>,
    ) {
        let mut parameter_sets = Vec::new();
        for set in sets {
            parameter_sets.extend_from_slice(&nalu::START_CODE);
            parameter_sets.extend_from_slice(set);
        }
        let changed = self.video.as_ref().is_none_or(|v| v.kind != kind);
        self.video = Some(VideoTrack {
            kind,
            nalu_length_size,
            parameter_sets,
        });
        if changed {
            self.tracks_changed();
        }
    }

    /// AUD, parameter sets if needed, then the access unit's own NAL units, Annex B.
    fn annex_b_access_unit(track: &VideoTrack, frame: &Frame) -> Result<(Vec<u8>, bool), MuxError> {
        let rules = NalRules::of(track.kind);
        let mut has_ps = false;
        let mut irap = frame.keyframe;
        for nal in nalu::nalus(&frame.payload, track.nalu_length_size) {
            let t = (rules.nal_type)(nal?);
            has_ps |= t.is_some_and(rules.is_parameter_set);
            irap |= t.is_some_and(rules.is_irap);
        }
        let mut out = Vec::with_capacity(frame.payload.len() + track.parameter_sets.len() + 16);
        out.extend_from_slice(&nalu::START_CODE);
        out.extend_from_slice(rules.aud);
        if irap && !has_ps {
            out.extend_from_slice(&track.parameter_sets);
        }
        // Framing was checked above; an AUD from the publisher would be a second one.
        for nal in nalu::nalus(&frame.payload, track.nalu_length_size).flatten() {
            if nal.is_empty() || (rules.nal_type)(nal) == Some(rules.aud_type) {
                continue;
            }
            out.extend_from_slice(&nalu::START_CODE);
            out.extend_from_slice(nal);
        }
        Ok((out, irap))
    }

    fn push_video(&mut self, frame: &Frame) -> Result<(), MuxError> {
        let kind = match frame.codec {
            Codec::Video(VideoCodec::H264) => VideoKind::H264,
            Codec::Video(VideoCodec::H265) => VideoKind::H265,
            other => return Err(unsupported(other)),
        };
        let track = match &self.video {
            Some(t) if t.kind == kind => t,
            _ => return Err(MuxError::MissingConfig { track: "video" }),
        };
        let pts = timestamp_90k(frame.pts_ms()).ok_or_else(|| negative_pts(frame))?;
        let dts = to_90k(frame.dts_ms + PTS_OFFSET_MS);
        let (au, random_access) = Self::annex_b_access_unit(track, frame)?;
        self.advance_clock(frame.dts_ms);
        let mut pes = Vec::with_capacity(19 + au.len());
        pes::write_pes_header(&mut pes, STREAM_ID_VIDEO, pts, Some(dts), au.len());
        pes.extend_from_slice(&au);
        self.write_pes(VIDEO_PID, &pes, random_access);
        Ok(())
    }

    fn push_audio(&mut self, frame: &Frame) -> Result<(), MuxError> {
        let header: Option<[u8; 7]> = match (frame.codec, &self.audio) {
            (
                Codec::Audio(AudioCodec::Aac),
                Some(AudioTrack {
                    kind: AudioKind::Aac(asc),
                    ..
                }),
            ) => Some(asc.adts_header(frame.payload.len())?),
            (Codec::Audio(AudioCodec::Aac), _) => {
                return Err(MuxError::MissingConfig { track: "audio" })
            }
            (Codec::Audio(AudioCodec::Legacy { header }), audio) if is_flv_mp3(header) => {
                if !matches!(
                    audio,
                    Some(AudioTrack {
                        kind: AudioKind::Mp3,
                        ..
                    })
                ) {
                    // MP3 has no config frame: its first frame declares the track.
                    let stream_type = mp3_stream_type(&frame.payload)?;
                    self.flush_audio();
                    self.audio = Some(AudioTrack {
                        kind: AudioKind::Mp3,
                        stream_type,
                    });
                    self.tracks_changed();
                }
                None
            }
            (other, _) => return Err(unsupported(other)),
        };
        let pts = timestamp_90k(frame.pts_ms()).ok_or_else(|| negative_pts(frame))?;
        if let Some(p) = &self.pending_audio {
            if frame.dts_ms.saturating_sub(p.first_dts_ms) >= AUDIO_PES_MAX_MS
                || frame.dts_ms < p.first_dts_ms
            {
                self.flush_audio();
            }
        }
        self.advance_clock(frame.dts_ms);
        let pending = self.pending_audio.get_or_insert_with(|| PendingAudio {
            first_dts_ms: frame.dts_ms,
            pts_90k: pts,
            data: Vec::with_capacity(2048),
        });
        if let Some(h) = header {
            pending.data.extend_from_slice(&h);
        }
        pending.data.extend_from_slice(&frame.payload);
        Ok(())
    }
}

fn negative_pts(frame: &Frame) -> MuxError {
    MuxError::Malformed {
        what: "frame timestamps",
        detail: format!(
            "presentation time {} ms is more than {PTS_OFFSET_MS} ms before the stream start",
            frame.pts_ms()
        ),
    }
}

impl Muxer for TsMuxer {
    /// TS has no initialization segment.
    fn init_segment(&mut self) -> Option<Bytes> {
        None
    }

    fn start_segment(&mut self) {
        self.flush_audio();
        self.write_psi();
    }

    fn push(&mut self, frame: &Frame) -> Result<(), MuxError> {
        match frame.kind {
            FrameKind::Config => self.push_config(frame),
            FrameKind::Metadata | FrameKind::EndOfSequence => Ok(()),
            FrameKind::Media => match frame.codec {
                Codec::Video(_) => self.push_video(frame),
                Codec::Audio(_) => self.push_audio(frame),
                Codec::Script => Ok(()),
            },
        }
    }

    fn take_fragment(&mut self, _end_dts_ms: u64) -> Bytes {
        self.flush_audio();
        Bytes::from(std::mem::take(&mut self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::testsupport::{
        assert_ffmpeg_decodes, assert_golden, ffprobe_codecs, frames_from_mp4,
    };
    use crate::media::codec::nalu::{
        annex_b_nalus, avc_nal_type, avc_type, hevc_nal_type, hevc_type,
    };
    use crate::ts::reader::{self, TsStream};

    /// Muxes `frames` the way the HLS packager does: a segment starts at every video key
    /// frame (or every `audio_only_segment_ms` without video). Returns the segments.
    fn mux_segments(frames: &[Frame]) -> Vec<Bytes> {
        let mut mux = TsMuxer::new();
        let mut segments = Vec::new();
        let mut started = false;
        let mut segment_start_ms = 0;
        let has_video = frames
            .iter()
            .any(|f| f.track() == crate::media::Track::Video);
        for f in frames {
            let boundary = f.kind == FrameKind::Media
                && if has_video {
                    f.starts_gop()
                } else {
                    f.dts_ms >= segment_start_ms + 500 || !started
                };
            if boundary {
                if started {
                    segments.push(mux.take_fragment(f.dts_ms));
                }
                mux.start_segment();
                started = true;
                segment_start_ms = f.dts_ms;
            }
            mux.push(f).unwrap();
        }
        let end = frames.last().unwrap().dts_ms + 40;
        segments.push(mux.take_fragment(end));
        segments
    }

    fn concat(segments: &[Bytes]) -> Vec<u8> {
        segments.iter().flat_map(|s| s.iter().copied()).collect()
    }

    fn check_stream_invariants(segments: &[Bytes]) -> TsStream {
        for (i, seg) in segments.iter().enumerate() {
            let ts = reader::read(seg).unwrap();
            assert_eq!(
                ts.pat_packets.first(),
                Some(&0),
                "segment {i} starts with a PAT"
            );
            assert_eq!(
                ts.pmt_packets.first(),
                Some(&1),
                "segment {i} has a PMT second"
            );
        }
        let all = reader::read(&concat(segments)).unwrap();
        assert!(
            all.cc_errors.is_empty(),
            "continuity errors: {:?}",
            all.cc_errors
        );
        let interval = all.max_pcr_interval_ms().expect("PCRs present");
        assert!(
            interval <= PCR_MAX_INTERVAL_MS,
            "PCR interval {interval} ms"
        );
        // PSI repeats within segments too.
        let gaps = all
            .pat_packets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        assert!(all.pat_packets.len() >= segments.len(), "PAT per segment");
        assert!(gaps > 0);
        all
    }

    #[test]
    fn h264_aac_golden_probe_and_invariants() {
        let frames = frames_from_mp4("h264_aac.mp4");
        let segments = mux_segments(&frames);
        assert_eq!(
            segments.len(),
            3,
            "2 s with a key frame every 10 frames at 15 fps"
        );
        let bytes = concat(&segments);
        let path = assert_golden("ts/h264_aac.ts", &bytes);
        assert_eq!(ffprobe_codecs(&path), ["h264", "aac"]);
        assert_ffmpeg_decodes(&path);

        let ts = check_stream_invariants(&segments);
        assert_eq!(ts.pcr_pid, Some(VIDEO_PID));
        assert_eq!(ts.stream_type(VIDEO_PID), Some(STREAM_TYPE_H264));
        assert_eq!(ts.stream_type(AUDIO_PID), Some(STREAM_TYPE_AAC_ADTS));
        let first = reader::read(&segments[0]).unwrap();
        assert!(
            first.pes_of(VIDEO_PID).count() > 0 && first.pes_of(AUDIO_PID).count() > 0,
            "first segment has A and V"
        );

        // Video PES timing is exactly (ms + offset) * 90 and every key frame has RAI.
        let video_frames: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.kind == FrameKind::Media && f.track() == crate::media::Track::Video)
            .collect();
        let video_pes: Vec<_> = ts.pes_of(VIDEO_PID).collect();
        assert_eq!(video_pes.len(), video_frames.len());
        for (f, p) in video_frames.iter().zip(&video_pes) {
            assert_eq!(p.pts, Some((f.pts_ms() as u64 + PTS_OFFSET_MS) * 90));
            let dts = p.dts.or(p.pts).unwrap();
            assert_eq!(dts, (f.dts_ms + PTS_OFFSET_MS) * 90);
            assert_eq!(p.random_access, f.keyframe);
            let types: Vec<u8> = annex_b_nalus(&p.payload).filter_map(avc_nal_type).collect();
            assert_eq!(types[0], avc_type::AUD, "AUD first");
            assert_eq!(types.iter().filter(|&&t| t == avc_type::AUD).count(), 1);
            if f.keyframe {
                assert_eq!(
                    &types[1..3],
                    &[avc_type::SPS, avc_type::PPS],
                    "parameter sets before IDR"
                );
            } else {
                assert!(!types.contains(&avc_type::SPS));
            }
        }

        // Audio: every AAC frame is there as one ADTS frame, PES PTS is its first frame's.
        let aac_frames: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.kind == FrameKind::Media && f.track() == crate::media::Track::Audio)
            .collect();
        let mut adts = Vec::new();
        for p in ts.pes_of(AUDIO_PID) {
            let mut rest = &p.payload[..];
            let mut first = true;
            while !rest.is_empty() {
                assert_eq!(&rest[..2], &[0xff, 0xf1]);
                let len = (usize::from(rest[3] & 3) << 11)
                    | usize::from(rest[4]) << 3
                    | usize::from(rest[5] >> 5);
                if first {
                    let f = aac_frames[adts.len()];
                    assert_eq!(p.pts, Some((f.dts_ms + PTS_OFFSET_MS) * 90));
                    first = false;
                }
                adts.push(&rest[7..len]);
                rest = &rest[len..];
            }
        }
        assert_eq!(adts.len(), aac_frames.len());
        for (raw, f) in adts.iter().zip(&aac_frames) {
            assert_eq!(*raw, &f.payload[..]);
        }
        assert!(
            ts.pes_of(AUDIO_PID).count() < aac_frames.len(),
            "AAC frames share PES packets"
        );
    }

    #[test]
    fn h265_golden_and_probe() {
        let frames = frames_from_mp4("h265.mp4");
        let segments = mux_segments(&frames);
        let path = assert_golden("ts/h265.ts", &concat(&segments));
        assert_eq!(ffprobe_codecs(&path), ["hevc"]);
        assert_ffmpeg_decodes(&path);
        let ts = check_stream_invariants(&segments);
        assert_eq!(ts.stream_type(VIDEO_PID), Some(STREAM_TYPE_H265));
        let key = ts.pes_of(VIDEO_PID).next().unwrap();
        let types: Vec<u8> = annex_b_nalus(&key.payload)
            .filter_map(hevc_nal_type)
            .collect();
        assert_eq!(
            &types[..4],
            &[
                hevc_type::AUD,
                hevc_type::VPS,
                hevc_type::SPS,
                hevc_type::PPS
            ]
        );
    }

    #[test]
    fn mp3_audio_only_golden_and_probe() {
        let frames = frames_from_mp4("mp3.mp4");
        let segments = mux_segments(&frames);
        let path = assert_golden("ts/mp3.ts", &concat(&segments));
        assert_eq!(ffprobe_codecs(&path), ["mp3"]);
        assert_ffmpeg_decodes(&path);
        let ts = check_stream_invariants(&segments);
        assert_eq!(ts.pcr_pid, Some(AUDIO_PID), "PCR on audio without video");
        assert_eq!(ts.stream_type(AUDIO_PID), Some(STREAM_TYPE_MPEG1_AUDIO));
        assert!(ts.pes_of(AUDIO_PID).all(|p| p.random_access));
    }

    fn frame(codec: Codec, kind: FrameKind, keyframe: bool, dts_ms: u64, payload: &[u8]) -> Frame {
        Frame {
            codec,
            kind,
            keyframe,
            dts_ms,
            cts_ms: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    const H264: Codec = Codec::Video(VideoCodec::H264);

    fn avc_config() -> Frame {
        frame(
            H264,
            FrameKind::Config,
            false,
            0,
            &crate::media::codec::avc::tests::record(),
        )
    }

    #[test]
    fn sparse_video_gets_pcr_only_packets() {
        let mut mux = TsMuxer::new();
        mux.push(&avc_config()).unwrap();
        mux.start_segment();
        // 2 fps: 500 ms between frames.
        for i in 0..6u64 {
            let nal: &[u8] = if i == 0 {
                &[0, 0, 0, 2, 0x65, 0x88]
            } else {
                &[0, 0, 0, 2, 0x41, 0x9a]
            };
            mux.push(&frame(H264, FrameKind::Media, i == 0, i * 500, nal))
                .unwrap();
        }
        let ts = reader::read(&mux.take_fragment(3000)).unwrap();
        assert!(ts.max_pcr_interval_ms().unwrap() <= PCR_MAX_INTERVAL_MS);
        assert!(
            ts.pcrs.len() >= 26,
            "PCR every 100 ms over 2.5 s: {}",
            ts.pcrs.len()
        );
        assert!(ts.cc_errors.is_empty());
        assert_eq!(ts.pes.len(), 6);
    }

    #[test]
    fn in_band_parameter_sets_are_not_duplicated() {
        let mut mux = TsMuxer::new();
        mux.push(&avc_config()).unwrap();
        mux.start_segment();
        let sps = crate::media::codec::avc::tests::SPS_1080P;
        let pps = crate::media::codec::avc::tests::PPS;
        let mut au = Vec::new();
        for nal in [&[0x09, 0xf0][..], sps, pps, &[0x65, 0x88, 0x84]] {
            au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            au.extend_from_slice(nal);
        }
        mux.push(&frame(H264, FrameKind::Media, true, 0, &au))
            .unwrap();
        let ts = reader::read(&mux.take_fragment(40)).unwrap();
        let types: Vec<u8> = annex_b_nalus(&ts.pes[0].payload)
            .filter_map(avc_nal_type)
            .collect();
        assert_eq!(
            types,
            [avc_type::AUD, avc_type::SPS, avc_type::PPS, avc_type::IDR]
        );
    }

    #[test]
    fn negative_composition_offset_keeps_pts_positive() {
        let mut mux = TsMuxer::new();
        mux.push(&avc_config()).unwrap();
        mux.start_segment();
        let mut f = frame(H264, FrameKind::Media, true, 0, &[0, 0, 0, 2, 0x65, 0x88]);
        f.cts_ms = -200;
        mux.push(&f).unwrap();
        let ts = reader::read(&mux.take_fragment(40)).unwrap();
        assert_eq!(ts.pes[0].pts, Some((PTS_OFFSET_MS - 200) * 90));
        f.cts_ms = -(PTS_OFFSET_MS as i32) - 1;
        assert!(matches!(mux.push(&f), Err(MuxError::Malformed { .. })));
    }

    #[test]
    fn unsupported_and_missing_configs() {
        let mut mux = TsMuxer::new();
        let av1 = frame(
            Codec::Video(VideoCodec::Av1),
            FrameKind::Config,
            false,
            0,
            &[0x81, 0, 0, 0],
        );
        assert_eq!(
            mux.push(&av1),
            Err(MuxError::UnsupportedCodec {
                codec: "AV1 video".into(),
                container: "MPEG-TS"
            })
        );
        let vp6 = frame(
            Codec::Video(VideoCodec::Legacy { codec_id: 4 }),
            FrameKind::Media,
            true,
            0,
            &[1],
        );
        assert!(matches!(
            mux.push(&vp6),
            Err(MuxError::UnsupportedCodec { .. })
        ));
        let speex = frame(
            Codec::Audio(AudioCodec::Legacy { header: 0xb2 }),
            FrameKind::Media,
            false,
            0,
            &[1],
        );
        assert!(matches!(
            mux.push(&speex),
            Err(MuxError::UnsupportedCodec { .. })
        ));
        let idr = frame(H264, FrameKind::Media, true, 0, &[0, 0, 0, 1, 0x65]);
        assert_eq!(
            mux.push(&idr),
            Err(MuxError::MissingConfig { track: "video" })
        );
        let aac = frame(
            Codec::Audio(AudioCodec::Aac),
            FrameKind::Media,
            false,
            0,
            &[1, 2],
        );
        assert_eq!(
            mux.push(&aac),
            Err(MuxError::MissingConfig { track: "audio" })
        );
        // A broken access unit is an error, not a panic, and writes nothing.
        mux.push(&avc_config()).unwrap();
        let before = mux.out.len();
        let broken = frame(H264, FrameKind::Media, true, 0, &[0, 0, 0, 9, 0x65]);
        assert!(matches!(mux.push(&broken), Err(MuxError::Malformed { .. })));
        assert_eq!(mux.out.len(), before);
    }

    #[test]
    fn adding_a_track_bumps_the_pmt_version() {
        let mut mux = TsMuxer::new();
        mux.push(&avc_config()).unwrap();
        mux.start_segment();
        mux.push(&frame(
            H264,
            FrameKind::Media,
            true,
            0,
            &[0, 0, 0, 2, 0x65, 0x88],
        ))
        .unwrap();
        let first = reader::read(&mux.take_fragment(40)).unwrap();
        mux.push(&frame(
            Codec::Audio(AudioCodec::Aac),
            FrameKind::Config,
            false,
            40,
            &[0x11, 0x90],
        ))
        .unwrap();
        mux.start_segment();
        mux.push(&frame(
            H264,
            FrameKind::Media,
            true,
            40,
            &[0, 0, 0, 2, 0x65, 0x88],
        ))
        .unwrap();
        let second = reader::read(&mux.take_fragment(80)).unwrap();
        assert_eq!(first.streams.len(), 1);
        assert_eq!(second.streams.len(), 2);
        assert_ne!(first.pmt_version, second.pmt_version);
    }
}
