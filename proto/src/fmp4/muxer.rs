//! [`Fmp4Muxer`]: frames in, CMAF init segment and `moof`+`mdat` fragments out.
//!
//! Tracks: video (H.264 `avc1`, H.265 `hvc1`, AV1 `av01`, VP9 `vp09`) as track 1 at
//! 90 kHz, AAC audio as track 2 at its sampling rate. Timing rules:
//! - Video sample durations are DTS deltas; the last sample of a fragment ends at the
//!   `end_dts_ms` the packager gives. Each fragment starts where the previous one ended,
//!   so `tfdt` is continuous and any drift is absorbed by the first sample's duration;
//!   composition offsets are computed from the exact PTS, so presentation times never
//!   drift (version-1 `trun` when one is negative).
//! - AAC samples last exactly 1024 (or 960) ticks of the audio timescale, so `tfdt`
//!   counts samples and accumulates no millisecond rounding. A gap in the publisher's
//!   audio (a timestamp jump of more than a frame) stretches the sample before it, or
//!   moves `tfdt` forward when it falls between fragments.
//!
//! VP9's `vpcC` has no frame size, so with VP9 the init segment is available once the
//! first key frame has been pushed. MP3 and other FLV codecs are refused with [`MuxError::UnsupportedCodec`].

use bytes::Bytes;

use crate::media::codec::{
    av1, codec_name, vp9, AudioSpecificConfig, Av1Config, AvcConfig, HevcConfig, VpConfig,
};
use crate::media::{AudioCodec, Codec, Frame, FrameKind, VideoCodec};
use crate::mux::{MuxError, Muxer};

use super::fragment::{
    write_fragment, FragmentSample, TrackRun, SAMPLE_FLAGS_NON_SYNC, SAMPLE_FLAGS_SYNC,
};
use super::init::{init_segment, InitTrack, SampleEntry, VideoConfigBox};

pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;
pub const VIDEO_TIMESCALE: u32 = 90_000;

struct PendingSample {
    dts_ms: u64,
    pts_ms: i64,
    keyframe: bool,
    data: Bytes,
}

struct Track {
    codec: Codec,
    init: InitTrack,
    /// The config payload the track was built from, to spot real changes.
    config_payload: Bytes,
    /// AAC: PCM samples per frame; `None` for video.
    samples_per_frame: Option<u32>,
    /// Decode time where the next fragment starts, in the track timescale.
    next_decode_time: Option<u64>,
    pending: Vec<PendingSample>,
}

impl Track {
    fn ticks(&self, ms: i64) -> i64 {
        // Exact for 90 kHz; for audio rates, rounding to the nearest tick.
        let ts = i64::from(self.init.timescale);
        (ms * ts + 500).div_euclid(1000)
    }

    /// Timing of the pending samples; returns the run and the next fragment's start.
    fn take_run(&mut self, track_id: u32, end_dts_ms: u64) -> Option<TrackRun> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        let first_dts = self.ticks(pending[0].dts_ms as i64);
        let (base, samples) = match self.samples_per_frame {
            None => {
                let base = self.next_decode_time.map_or(first_dts.max(0) as u64, |t| t);
                let mut start = base as i64;
                let mut samples = Vec::with_capacity(pending.len());
                for (i, s) in pending.iter().enumerate() {
                    let end_ms = pending.get(i + 1).map_or(end_dts_ms, |n| n.dts_ms);
                    // A zero or negative duration (duplicate timestamps, or an end before
                    // the last DTS) becomes one tick so decode order stays strict.
                    let end = self.ticks(end_ms as i64).max(start + 1);
                    let cto = (self.ticks(s.pts_ms) - start)
                        .clamp(i64::from(i32::MIN), i64::from(i32::MAX));
                    samples.push(FragmentSample {
                        duration: u32::try_from(end - start).unwrap_or(u32::MAX),
                        flags: if s.keyframe {
                            SAMPLE_FLAGS_SYNC
                        } else {
                            SAMPLE_FLAGS_NON_SYNC
                        },
                        composition_offset: cto as i32,
                        data: s.data.clone(),
                    });
                    start = end;
                }
                self.next_decode_time = Some(start as u64);
                (base, samples)
            }
            Some(frame_ticks) => {
                let frame = i64::from(frame_ticks);
                // Whole frames between an expected and an actual decode time: gaps are
                // kept on the frame grid so ms rounding never creeps into durations.
                let frames_between = |from: i64, to: i64| (to - from + frame / 2).div_euclid(frame);
                let base = match self.next_decode_time {
                    Some(t) => {
                        let t = t as i64;
                        let lost = frames_between(t, first_dts);
                        (t + frame * lost.max(0)) as u64
                    }
                    None => first_dts.max(0) as u64,
                };
                let mut start = base as i64;
                let mut samples = Vec::with_capacity(pending.len());
                for (i, s) in pending.iter().enumerate() {
                    let span = pending.get(i + 1).map_or(1, |next| {
                        frames_between(start, self.ticks(next.dts_ms as i64))
                    });
                    let duration = frame * span.max(1);
                    samples.push(FragmentSample {
                        duration: u32::try_from(duration).unwrap_or(u32::MAX),
                        flags: SAMPLE_FLAGS_SYNC,
                        composition_offset: 0,
                        data: s.data.clone(),
                    });
                    start += duration;
                }
                self.next_decode_time = Some(start as u64);
                (base, samples)
            }
        };
        Some(TrackRun {
            track_id,
            base_media_decode_time: base,
            samples,
            all_sync: self.samples_per_frame.is_some(),
        })
    }
}

/// The fMP4/CMAF muxer. See the module notes for the timing rules.
#[derive(Default)]
pub struct Fmp4Muxer {
    video: Option<Track>,
    audio: Option<Track>,
    init: Option<Bytes>,
    sequence_number: u32,
}

fn unsupported(codec: Codec) -> MuxError {
    MuxError::UnsupportedCodec {
        codec: codec_name(codec),
        container: "fMP4",
    }
}

fn dimension(v: Option<u32>) -> u16 {
    v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0)
}

impl Fmp4Muxer {
    pub fn new() -> Self {
        Self::default()
    }

    fn video_entry(codec: Codec, payload: &[u8]) -> Result<SampleEntry, MuxError> {
        let (size, config) = match codec {
            Codec::Video(VideoCodec::H264) => {
                let c = AvcConfig::parse(payload)?;
                let sps = c.parse_first_sps();
                (
                    sps.map(|s| (s.width, s.height)),
                    VideoConfigBox::Avc(payload.to_vec()),
                )
            }
            Codec::Video(VideoCodec::H265) => {
                let c = HevcConfig::parse(payload)?;
                let sps = c.parse_first_sps();
                (
                    sps.map(|s| (s.width, s.height)),
                    VideoConfigBox::Hevc(payload.to_vec()),
                )
            }
            Codec::Video(VideoCodec::Av1) => {
                let c = Av1Config::parse(payload)?;
                (c.dimensions(), VideoConfigBox::Av1(payload.to_vec()))
            }
            Codec::Video(VideoCodec::Vp9) => {
                // Normalize: the sample entry wants the record after the FullBox header.
                let c = VpConfig::parse(payload)?;
                (None, VideoConfigBox::Vp9(c.to_bytes()?))
            }
            other => return Err(unsupported(other)),
        };
        Ok(SampleEntry::Video {
            width: dimension(size.map(|s| s.0)),
            height: dimension(size.map(|s| s.1)),
            config,
        })
    }

    fn push_config(&mut self, frame: &Frame) -> Result<(), MuxError> {
        let slot = match frame.codec {
            Codec::Video(_) => &self.video,
            Codec::Audio(_) => &self.audio,
            Codec::Script => return Ok(()),
        };
        if slot
            .as_ref()
            .is_some_and(|t| t.codec == frame.codec && t.config_payload == frame.payload)
        {
            return Ok(()); // a repeated sequence header changes nothing
        }
        let (init, samples_per_frame) = match frame.codec {
            Codec::Audio(AudioCodec::Aac) => {
                let asc = AudioSpecificConfig::parse(&frame.payload)?;
                let init = InitTrack {
                    track_id: AUDIO_TRACK_ID,
                    timescale: asc.sample_rate,
                    entry: SampleEntry::Aac {
                        channels: u16::from(asc.channels().unwrap_or(2)),
                        sample_rate: asc.sample_rate,
                        audio_specific_config: frame.payload.to_vec(),
                    },
                };
                (init, Some(asc.samples_per_frame()))
            }
            Codec::Video(_) => {
                let entry = Self::video_entry(frame.codec, &frame.payload)?;
                (
                    InitTrack {
                        track_id: VIDEO_TRACK_ID,
                        timescale: VIDEO_TIMESCALE,
                        entry,
                    },
                    None,
                )
            }
            other => return Err(unsupported(other)),
        };
        let previous = match frame.codec {
            Codec::Video(_) => self.video.take(),
            _ => self.audio.take(),
        };
        // A new config keeps the track's timeline: decode times stay continuous unless
        // the timescale itself changed.
        let next_decode_time = previous
            .as_ref()
            .filter(|p| p.init.timescale == init.timescale)
            .and_then(|p| p.next_decode_time);
        let track = Track {
            codec: frame.codec,
            init,
            config_payload: frame.payload.clone(),
            samples_per_frame,
            next_decode_time,
            pending: previous.map(|p| p.pending).unwrap_or_default(),
        };
        match frame.codec {
            Codec::Video(_) => self.video = Some(track),
            _ => self.audio = Some(track),
        }
        self.init = None;
        Ok(())
    }

    fn push_media(&mut self, frame: &Frame) -> Result<(), MuxError> {
        let (slot, track_name) = match frame.codec {
            Codec::Video(VideoCodec::Legacy { .. }) | Codec::Audio(AudioCodec::Legacy { .. }) => {
                return Err(unsupported(frame.codec))
            }
            Codec::Video(_) => (&mut self.video, "video"),
            Codec::Audio(_) => (&mut self.audio, "audio"),
            Codec::Script => return Ok(()),
        };
        let track = match slot {
            Some(t) if t.codec == frame.codec => t,
            _ => return Err(MuxError::MissingConfig { track: track_name }),
        };
        let mut data = frame.payload.clone();
        match frame.codec {
            Codec::Video(VideoCodec::Av1) => {
                // AV1-ISOBMFF 2.4: temporal delimiters are not stored in samples.
                let td_len = match av1::obus(&data).next() {
                    Some(Ok(obu)) if obu.obu_type == av1::OBU_TEMPORAL_DELIMITER => obu.raw.len(),
                    _ => 0,
                };
                data = data.slice(td_len..);
            }
            Codec::Video(VideoCodec::Vp9) if frame.keyframe => {
                // vpcC has no frame size; the first key frame header does.
                if let (Some((w, h)), SampleEntry::Video { width, height, .. }) =
                    (vp9::keyframe_size(&data), &mut track.init.entry)
                {
                    let (w, h) = (dimension(Some(w)), dimension(Some(h)));
                    if (*width, *height) != (w, h) {
                        (*width, *height) = (w, h);
                        self.init = None;
                    }
                }
            }
            _ => {}
        }
        track.pending.push(PendingSample {
            dts_ms: frame.dts_ms,
            pts_ms: frame.pts_ms(),
            keyframe: frame.keyframe || frame.track() == crate::media::Track::Audio,
            data,
        });
        Ok(())
    }
}

impl Muxer for Fmp4Muxer {
    fn init_segment(&mut self) -> Option<Bytes> {
        if let Some(Track {
            init:
                InitTrack {
                    entry: SampleEntry::Video { width: 0, .. },
                    ..
                },
            codec,
            ..
        }) = &self.video
        {
            if *codec == Codec::Video(VideoCodec::Vp9) {
                // vpcC carries no frame size; wait for the first key frame's header.
                return None;
            }
        }
        if self.init.is_none() {
            let tracks: Vec<InitTrack> = self
                .video
                .iter()
                .chain(&self.audio)
                .map(|t| t.init.clone())
                .collect();
            if tracks.is_empty() {
                return None;
            }
            self.init = Some(Bytes::from(init_segment(&tracks)));
        }
        self.init.clone()
    }

    /// fMP4 segments need no header of their own: each fragment is self-contained.
    fn start_segment(&mut self) {}

    fn push(&mut self, frame: &Frame) -> Result<(), MuxError> {
        match frame.kind {
            FrameKind::Config => self.push_config(frame),
            FrameKind::Media => self.push_media(frame),
            FrameKind::Metadata | FrameKind::EndOfSequence => Ok(()),
        }
    }

    fn take_fragment(&mut self, end_dts_ms: u64) -> Bytes {
        let mut runs = Vec::with_capacity(2);
        if let Some(run) = self
            .video
            .as_mut()
            .and_then(|t| t.take_run(VIDEO_TRACK_ID, end_dts_ms))
        {
            runs.push(run);
        }
        if let Some(run) = self
            .audio
            .as_mut()
            .and_then(|t| t.take_run(AUDIO_TRACK_ID, end_dts_ms))
        {
            runs.push(run);
        }
        if runs.is_empty() {
            return Bytes::new();
        }
        self.sequence_number = self.sequence_number.wrapping_add(1);
        Bytes::from(write_fragment(self.sequence_number, &runs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::reader::{self, Fmp4File};
    use crate::fmp4::testsupport::{
        assert_ffmpeg_decodes, assert_golden, ffprobe_codecs, frames_from_mp4,
    };
    use crate::media::Track as MediaTrack;

    /// Muxes like the HLS packager: a fragment per GOP ending at the next key frame, the
    /// init segment fetched when the first fragment is published. Returns (init, fragments).
    fn mux(frames: &[Frame]) -> (Bytes, Vec<Bytes>) {
        let mut mux = Fmp4Muxer::new();
        let mut fragments = Vec::new();
        for f in frames {
            if f.starts_gop() {
                let fragment = mux.take_fragment(f.dts_ms);
                if !fragment.is_empty() {
                    fragments.push(fragment);
                }
                mux.start_segment();
            }
            mux.push(f).unwrap();
        }
        fragments.push(mux.take_fragment(end_of(frames)));
        (
            mux.init_segment()
                .expect("configs and a key frame came first"),
            fragments,
        )
    }

    fn end_of(frames: &[Frame]) -> u64 {
        frames.last().unwrap().dts_ms + 67
    }

    fn file_bytes(init: &Bytes, fragments: &[Bytes]) -> Vec<u8> {
        init.iter()
            .chain(fragments.iter().flat_map(|f| f.iter()))
            .copied()
            .collect()
    }

    fn media(frames: &[Frame], track: MediaTrack) -> Vec<&Frame> {
        frames
            .iter()
            .filter(|f| f.kind == FrameKind::Media && f.track() == track)
            .collect()
    }

    /// tfdt continuity, exact PTS, sync flags and sample bytes of one track.
    fn check_track(file: &Fmp4File, data: &[u8], track_id: u32, frames: &[&Frame], end_ms: u64) {
        let timescale = file
            .tracks
            .iter()
            .find(|t| t.track_id == track_id)
            .unwrap()
            .timescale;
        let trafs: Vec<_> = file
            .fragments
            .iter()
            .flat_map(|f| &f.trafs)
            .filter(|t| t.track_id == track_id)
            .collect();
        let mut expected_tfdt = trafs[0].base_media_decode_time.unwrap();
        let mut i = 0;
        for traf in &trafs {
            assert_eq!(
                traf.base_media_decode_time,
                Some(expected_tfdt),
                "tfdt continuity on track {track_id}"
            );
            let mut dts = expected_tfdt as i64;
            for s in &traf.samples {
                let f = frames[i];
                assert_eq!(&data[s.data.clone()], &f.payload[..], "sample {i} bytes");
                if timescale == VIDEO_TIMESCALE {
                    assert_eq!(
                        dts + s.composition_offset,
                        f.pts_ms() * 90,
                        "sample {i} PTS"
                    );
                    assert_eq!(s.is_sync(), f.keyframe, "sample {i} sync flag");
                } else {
                    assert!(s.is_sync());
                    assert!(
                        s.duration > 0 && s.duration % 1024 == 0,
                        "AAC sample {i} duration {}",
                        s.duration
                    );
                    let want = (f.dts_ms * u64::from(timescale)) as i64 / 1000;
                    assert!(
                        (dts - want).abs() < 1024,
                        "AAC sample {i} at {dts}, frame at {want}"
                    );
                }
                dts += i64::from(s.duration);
                i += 1;
            }
            expected_tfdt += traf.duration();
        }
        assert_eq!(i, frames.len(), "every frame became a sample");
        if timescale == VIDEO_TIMESCALE {
            assert_eq!(expected_tfdt, end_ms * 90, "video durations sum to the end");
        } else {
            let last = frames.last().unwrap().dts_ms * u64::from(timescale) / 1000;
            assert!(
                expected_tfdt.abs_diff(last + 1024) < 1024,
                "audio ends one frame after the last"
            );
        }
    }

    #[test]
    fn h264_aac_golden_probe_and_timing() {
        let frames = frames_from_mp4("h264_aac.mp4");
        let (init, fragments) = mux(&frames);
        assert_eq!(fragments.len(), 3, "one fragment per GOP");
        let bytes = file_bytes(&init, &fragments);
        let path = assert_golden("fmp4/h264_aac.mp4", &bytes);
        assert_eq!(ffprobe_codecs(&path), ["h264", "aac"]);
        assert_ffmpeg_decodes(&path);

        let file = reader::parse(&bytes).unwrap();
        assert_eq!(
            file.fragments
                .iter()
                .map(|f| f.sequence_number)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(file.tracks[0].timescale, 90_000);
        assert_eq!(file.tracks[1].timescale, 48_000);
        assert_eq!((file.tracks[0].width, file.tracks[0].height), (128, 72));
        check_track(
            &file,
            &bytes,
            VIDEO_TRACK_ID,
            &media(&frames, MediaTrack::Video),
            end_of(&frames),
        );
        check_track(
            &file,
            &bytes,
            AUDIO_TRACK_ID,
            &media(&frames, MediaTrack::Audio),
            end_of(&frames),
        );
        for f in &file.fragments {
            let video = f
                .trafs
                .iter()
                .find(|t| t.track_id == VIDEO_TRACK_ID)
                .unwrap();
            assert!(
                video.samples[0].is_sync(),
                "each fragment starts with a sync sample"
            );
            assert_eq!(video.trun_versions, [0], "no negative offsets here");
        }
    }

    #[test]
    fn recording_cut_after_a_fragment_is_playable() {
        let frames = frames_from_mp4("h264_aac.mp4");
        let (init, fragments) = mux(&frames);
        let dir = std::env::temp_dir().join(format!("shardcast-fmp4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.mp4");
        std::fs::write(&path, file_bytes(&init, &fragments[..2])).unwrap();
        assert_eq!(ffprobe_codecs(&path), ["h264", "aac"]);
        assert_ffmpeg_decodes(&path);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn video_only_golden(input: &str, golden: &str, codec: &str, entry: &[u8; 4]) {
        let frames = frames_from_mp4(input);
        let (init, fragments) = mux(&frames);
        let bytes = file_bytes(&init, &fragments);
        let path = assert_golden(golden, &bytes);
        assert_eq!(ffprobe_codecs(&path), [codec]);
        assert_ffmpeg_decodes(&path);
        let file = reader::parse(&bytes).unwrap();
        assert_eq!(&file.tracks[0].sample_entry, entry);
        assert_eq!((file.tracks[0].width, file.tracks[0].height), (128, 72));
        let video = media(&frames, MediaTrack::Video);
        check_track(&file, &bytes, VIDEO_TRACK_ID, &video, end_of(&frames));
    }

    #[test]
    fn h265_golden_and_probe() {
        video_only_golden("h265.mp4", "fmp4/h265.mp4", "hevc", b"hvc1");
    }

    #[test]
    fn av1_golden_and_probe() {
        video_only_golden("av1.mp4", "fmp4/av1.mp4", "av1", b"av01");
    }

    #[test]
    fn vp9_golden_and_probe() {
        video_only_golden("vp9.mp4", "fmp4/vp9.mp4", "vp9", b"vp09");
    }

    fn frame(
        codec: Codec,
        kind: FrameKind,
        keyframe: bool,
        dts_ms: u64,
        cts_ms: i32,
        payload: &[u8],
    ) -> Frame {
        Frame {
            codec,
            kind,
            keyframe,
            dts_ms,
            cts_ms,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    const H264: Codec = Codec::Video(VideoCodec::H264);
    const AAC: Codec = Codec::Audio(AudioCodec::Aac);

    fn avc_config() -> Frame {
        frame(
            H264,
            FrameKind::Config,
            false,
            0,
            0,
            &crate::media::codec::avc::tests::record(),
        )
    }

    #[test]
    fn init_segment_follows_configs() {
        let mut mux = Fmp4Muxer::new();
        assert_eq!(mux.init_segment(), None);
        assert_eq!(mux.take_fragment(0), Bytes::new());
        mux.push(&avc_config()).unwrap();
        let video_only = mux.init_segment().unwrap();
        mux.push(&avc_config()).unwrap();
        assert_eq!(
            mux.init_segment().unwrap(),
            video_only,
            "a repeated config changes nothing"
        );
        mux.push(&frame(AAC, FrameKind::Config, false, 0, 0, &[0x11, 0x90]))
            .unwrap();
        let both = mux.init_segment().unwrap();
        assert_ne!(both, video_only);
        let file = reader::parse(&both).unwrap();
        assert_eq!(file.tracks.len(), 2);
        assert_eq!((file.tracks[0].width, file.tracks[0].height), (1920, 1080));
    }

    #[test]
    fn unsupported_and_missing_configs() {
        let mut mux = Fmp4Muxer::new();
        let mp3 = frame(
            Codec::Audio(AudioCodec::Legacy { header: 0x2f }),
            FrameKind::Media,
            false,
            0,
            0,
            &[0xff, 0xfb],
        );
        assert_eq!(
            mux.push(&mp3),
            Err(MuxError::UnsupportedCodec {
                codec: "MP3 audio".into(),
                container: "fMP4"
            })
        );
        let idr = frame(H264, FrameKind::Media, true, 0, 0, &[0, 0, 0, 1, 0x65]);
        assert_eq!(
            mux.push(&idr),
            Err(MuxError::MissingConfig { track: "video" })
        );
        let bad = frame(H264, FrameKind::Config, false, 0, 0, &[1, 2, 3]);
        assert!(matches!(mux.push(&bad), Err(MuxError::Malformed { .. })));
        assert_eq!(mux.init_segment(), None);
    }

    #[test]
    fn negative_composition_offsets_use_trun_version_1() {
        let mut mux = Fmp4Muxer::new();
        mux.push(&avc_config()).unwrap();
        mux.push(&frame(
            H264,
            FrameKind::Media,
            true,
            0,
            -33,
            &[0, 0, 0, 1, 0x65],
        ))
        .unwrap();
        mux.push(&frame(
            H264,
            FrameKind::Media,
            false,
            33,
            0,
            &[0, 0, 0, 1, 0x41],
        ))
        .unwrap();
        let mut bytes = mux.init_segment().unwrap().to_vec();
        bytes.extend_from_slice(&mux.take_fragment(66));
        let file = reader::parse(&bytes).unwrap();
        let traf = &file.fragments[0].trafs[0];
        assert_eq!(traf.trun_versions, [1]);
        assert_eq!(traf.samples[0].composition_offset, -33 * 90);
        assert_eq!(
            traf.samples.iter().map(|s| s.duration).collect::<Vec<_>>(),
            [33 * 90, 33 * 90]
        );
        assert!(!traf.samples[1].is_sync());
    }

    #[test]
    fn audio_gap_stretches_the_sample_before_it_and_tfdt_stays_exact() {
        let mut mux = Fmp4Muxer::new();
        mux.push(&frame(AAC, FrameKind::Config, false, 0, 0, &[0x11, 0x90]))
            .unwrap(); // 48 kHz
                       // 21.33 ms frames: ms timestamps are rounded, durations must still be 1024.
        let dts = |n: u64| (n * 1024 * 1000 + 24_000) / 48_000;
        for n in 0..5 {
            mux.push(&frame(AAC, FrameKind::Media, false, dts(n), 0, &[n as u8]))
                .unwrap();
        }
        // Frames 5..9 are lost; 10 arrives.
        mux.push(&frame(AAC, FrameKind::Media, false, dts(10), 0, &[10]))
            .unwrap();
        let mut bytes = mux.init_segment().unwrap().to_vec();
        bytes.extend_from_slice(&mux.take_fragment(dts(11)));
        for n in 11..14 {
            mux.push(&frame(AAC, FrameKind::Media, false, dts(n), 0, &[n as u8]))
                .unwrap();
        }
        bytes.extend_from_slice(&mux.take_fragment(dts(14)));
        let file = reader::parse(&bytes).unwrap();
        let (a, b) = (&file.fragments[0].trafs[0], &file.fragments[1].trafs[0]);
        let durations: Vec<u32> = a.samples.iter().map(|s| s.duration).collect();
        assert_eq!(durations, [1024, 1024, 1024, 1024, 6 * 1024, 1024]);
        assert_eq!(a.base_media_decode_time, Some(0));
        assert_eq!(b.base_media_decode_time, Some(11 * 1024));
    }
}
