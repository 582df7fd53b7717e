//! The segmenter: decides where segments and parts begin and end, drives the container
//! muxer accordingly, keeps the live window, and builds one [`HlsSnapshot`] per update.
//!
//! It does not parse codecs (the driver passes [`VariantInfo`]), read a clock (the
//! caller passes `wallclock_ms` with each frame, used only for
//! `EXT-X-PROGRAM-DATE-TIME`), or wait for anything (blocking requests are answered by
//! the snapshot with `Wait`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::playlist::{
    CompleteSegment, MediaPlaylist, MediaSegment, MultivariantPlaylist, PartialSegment,
    ServerControl, VariantStream,
};
use super::snapshot::HlsSnapshot;
use super::{HlsConfig, HlsError, Variant, VariantInfo};
use crate::media::{Frame, FrameKind, StreamKey, Track};
use crate::mux::Muxer;

/// Segments that have left the playlist stay downloadable for this many more segments:
/// RFC 8216bis §6.2.2 requires a removed segment to remain available for its own
/// duration plus the playlist's after it first appeared, which a window of N segments
/// plus two covers.
const RETAINED_AFTER_WINDOW: usize = 2;

/// Frame interval assumed when none has been seen yet (to date the end of a stream that
/// stopped after one frame).
const FALLBACK_FRAME_MS: u64 = 33;

/// How many recent frame intervals of the driving track the part cutter looks at.
const INTERVAL_HISTORY: usize = 8;

/// One LL-HLS part: `p/{msn}.{index}.m4s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartId {
    pub msn: u64,
    pub part: u32,
}

/// What a call completed. The driver publishes [`Packager::snapshot`] and wakes the
/// requests waiting on this stream on every shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// The last LL-HLS part completed.
    pub part: Option<PartId>,
    /// The media sequence number of the segment completed.
    pub segment: Option<u64>,
    /// `EXT-X-ENDLIST` was added: waiting requests must be answered now.
    pub ended: bool,
}

/// The numbering a packager has reached, to continue it in a new packager for the same
/// stream key so that no URL is ever reused with different bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    next_msn: u64,
    discontinuity_sequence: u64,
    next_init_generation: u32,
    target_duration_s: u64,
    min_program_date_time_ms: u64,
}

impl ResumePoint {
    /// Start numbering at `msn` (e.g. seconds since the epoch, for a process that keeps
    /// no state across restarts). The first segment carries a discontinuity.
    pub fn starting_at(msn: u64) -> Self {
        ResumePoint {
            next_msn: msn,
            discontinuity_sequence: 0,
            next_init_generation: 0,
            target_duration_s: 0,
            min_program_date_time_ms: 0,
        }
    }
}

/// A complete segment, shared by the packager and the snapshots that list it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) msn: u64,
    pub(crate) discontinuity_sequence: u64,
    pub(crate) discontinuity: bool,
    pub(crate) init_generation: Option<u32>,
    pub(crate) program_date_time_ms: u64,
    pub(crate) duration_ms: u64,
    pub(crate) bytes: Bytes,
    /// LL-HLS parts; after the segment closes, each is a slice of `bytes`.
    pub(crate) parts: Vec<Part>,
}

#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub(crate) duration_ms: u64,
    pub(crate) independent: bool,
    pub(crate) bytes: Bytes,
}

/// The segment being produced.
#[derive(Debug)]
struct OpenSegment {
    msn: u64,
    discontinuity_sequence: u64,
    discontinuity: bool,
    init_generation: Option<u32>,
    program_date_time_ms: u64,
    start_dts_ms: u64,
    parts: Vec<Part>,
    part_start_dts_ms: u64,
    /// The part in progress contains a keyframe (or, audio-only, any frame).
    part_independent: bool,
}

/// Maps stream time to wall-clock time for `EXT-X-PROGRAM-DATE-TIME`. Fixed at the
/// first segment after a (re)start, so dates follow media time exactly and never
/// overlap ambiguously (RFC 8216bis §6.2.1); set again after each discontinuity.
#[derive(Clone, Copy, Debug)]
struct ClockAnchor {
    dts_ms: u64,
    wall_ms: u64,
}

/// The HLS or LL-HLS packager of one stream, generic over the container muxer.
pub struct Packager<M: Muxer> {
    stream_key: StreamKey,
    variant: Variant,
    muxer: M,
    config: HlsConfig,
    info: VariantInfo,

    next_msn: u64,
    discontinuity_sequence: u64,
    pending_discontinuity: bool,
    /// A segment has been started under this numbering (here or before a resume).
    started_any: bool,
    target_duration_s: u64,
    ended: bool,

    has_video: bool,
    has_audio: bool,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    init: Option<(u32, Bytes)>,
    next_init_generation: u32,
    inits: VecDeque<(u32, Bytes)>,

    open: Option<OpenSegment>,
    segments: VecDeque<Arc<Segment>>,

    clock: Option<ClockAnchor>,
    /// Where the last closed segment ends in wall-clock time: no later date may precede it.
    min_program_date_time_ms: u64,
    last_dts_ms: Option<u64>,
    last_driving_dts_ms: Option<u64>,
    intervals: VecDeque<u64>,

    pending: Update,
    dirty: bool,
    snapshot: Arc<HlsSnapshot>,
}

impl<M: Muxer> Packager<M> {
    pub fn new(
        stream_key: StreamKey,
        variant: Variant,
        muxer: M,
        config: HlsConfig,
    ) -> Result<Self, HlsError> {
        Self::build(stream_key, variant, muxer, config, None)
    }

    /// Continues the numbering of an earlier packager of the same stream key (see
    /// [`Packager::resume_point`]); the first new segment carries a discontinuity.
    pub fn resume(
        stream_key: StreamKey,
        variant: Variant,
        muxer: M,
        config: HlsConfig,
        point: ResumePoint,
    ) -> Result<Self, HlsError> {
        Self::build(stream_key, variant, muxer, config, Some(point))
    }

    /// A new stream whose media sequence starts at `first_msn` rather than 0, with no
    /// discontinuity: seeding it from the clock (seconds since the epoch) keeps segment
    /// URLs unique across process restarts and republishes, so immutable caching is safe.
    pub fn new_at(
        stream_key: StreamKey,
        variant: Variant,
        muxer: M,
        config: HlsConfig,
        first_msn: u64,
    ) -> Result<Self, HlsError> {
        let mut p = Self::build(
            stream_key,
            variant,
            muxer,
            config,
            Some(ResumePoint::starting_at(first_msn)),
        )?;
        p.pending_discontinuity = false;
        p.started_any = false;
        Ok(p)
    }

    fn build(
        stream_key: StreamKey,
        variant: Variant,
        muxer: M,
        config: HlsConfig,
        point: Option<ResumePoint>,
    ) -> Result<Self, HlsError> {
        config.validate()?;
        let resumed = point.is_some();
        let point = point.unwrap_or(ResumePoint::starting_at(0));
        let snapshot = HlsSnapshot::empty(
            variant,
            config.segment_target_ms,
            config.part_target_ms,
            config.blocking_timeout_ms,
            point.next_msn,
        );
        Ok(Packager {
            stream_key,
            variant,
            muxer,
            info: VariantInfo::default(),
            next_msn: point.next_msn,
            discontinuity_sequence: point.discontinuity_sequence,
            pending_discontinuity: resumed,
            started_any: resumed,
            target_duration_s: point
                .target_duration_s
                .max(config.segment_target_ms.div_ceil(1000)),
            ended: false,
            has_video: false,
            has_audio: false,
            video_config: None,
            audio_config: None,
            init: None,
            next_init_generation: point.next_init_generation,
            inits: VecDeque::new(),
            open: None,
            segments: VecDeque::new(),
            clock: None,
            min_program_date_time_ms: point.min_program_date_time_ms,
            last_dts_ms: None,
            last_driving_dts_ms: None,
            intervals: VecDeque::with_capacity(INTERVAL_HISTORY),
            pending: Update::default(),
            dirty: false,
            snapshot: Arc::new(snapshot),
            config,
        })
    }

    /// Where the numbering stands, for [`Packager::resume`]. A segment still open is
    /// counted as used, since its parts may already have been served.
    pub fn resume_point(&self) -> ResumePoint {
        let open = self.open.is_some();
        ResumePoint {
            next_msn: self.next_msn + u64::from(open),
            discontinuity_sequence: self.discontinuity_sequence,
            next_init_generation: self.next_init_generation,
            target_duration_s: self.target_duration_s,
            min_program_date_time_ms: self.min_program_date_time_ms,
        }
    }

    /// The latest snapshot (rebuilt after every call that returned an [`Update`]).
    pub fn snapshot(&self) -> Arc<HlsSnapshot> {
        Arc::clone(&self.snapshot)
    }

    /// Replaces what the multivariant playlist advertises; the new text is in the next
    /// [`Packager::snapshot`], which the driver should publish.
    pub fn set_variant_info(&mut self, info: VariantInfo) {
        if info != self.info {
            self.info = info;
            self.dirty = true;
            self.publish_if_dirty();
        }
    }

    /// Adds one frame (decode order; `wallclock_ms` is the Unix time it arrived).
    /// Returns what completed, if anything. On error the frame is dropped and the
    /// packager stays usable; an update completed by the same call is returned by the
    /// next successful one.
    pub fn push(&mut self, frame: &Frame, wallclock_ms: u64) -> Result<Option<Update>, HlsError> {
        if self.ended {
            return Err(HlsError::Ended {
                stream_key: self.stream_key.clone(),
            });
        }
        let result = match frame.kind {
            // Not a sample: the next keyframe (and its config, if it changed) restarts decoding.
            FrameKind::EndOfSequence => Ok(()),
            FrameKind::Metadata => self.mux(frame),
            FrameKind::Config => self.handle_config(frame),
            FrameKind::Media => self.handle_media(frame, wallclock_ms),
        };
        self.publish_if_dirty();
        result.map(|()| self.take_update())
    }

    /// The publisher went away (or will reconnect): closes the segment in progress and
    /// makes the next one start with `EXT-X-DISCONTINUITY` at the next keyframe. Media
    /// sequence and discontinuity sequence numbers continue.
    pub fn discontinuity(&mut self) -> Option<Update> {
        if self.ended {
            return None;
        }
        self.break_stream(None);
        self.publish_if_dirty();
        self.take_update()
    }

    /// The stream is over for good (reconnect grace expired): closes the segment in
    /// progress and adds `EXT-X-ENDLIST`. Later frames are refused; a new publish of the
    /// same key should use [`Packager::resume`] with [`Packager::resume_point`].
    pub fn end_of_stream(&mut self) -> Option<Update> {
        if self.ended {
            return None;
        }
        self.break_stream(None);
        self.ended = true;
        self.pending.ended = true;
        self.dirty = true;
        self.publish_if_dirty();
        self.take_update()
    }

    fn take_update(&mut self) -> Option<Update> {
        let update = std::mem::take(&mut self.pending);
        (update != Update::default()).then_some(update)
    }

    fn mux(&mut self, frame: &Frame) -> Result<(), HlsError> {
        self.muxer.push(frame).map_err(|source| HlsError::Mux {
            stream_key: self.stream_key.clone(),
            source,
        })
    }

    fn handle_config(&mut self, frame: &Frame) -> Result<(), HlsError> {
        let slot = match frame.track() {
            Track::Video => &mut self.video_config,
            Track::Audio => &mut self.audio_config,
            Track::Data => return self.mux(frame),
        };
        if slot.as_ref() == Some(&frame.payload) {
            // Encoders repeat their sequence headers; only a change matters.
            return Ok(());
        }
        *slot = Some(frame.payload.clone());
        match frame.track() {
            Track::Video => self.has_video = true,
            _ => self.has_audio = true,
        }
        // New or changed encoding parameters must be signalled with a discontinuity
        // (RFC 8216bis §6.2.1), and the old segment must be muxed with the old config.
        if self.open.is_some() {
            self.break_stream(Some(frame.dts_ms));
        } else if self.started_any {
            self.pending_discontinuity = true;
        }
        self.mux(frame)
    }

    fn handle_media(&mut self, frame: &Frame, wallclock_ms: u64) -> Result<(), HlsError> {
        let track = frame.track();
        let newly_seen = match track {
            Track::Video => !std::mem::replace(&mut self.has_video, true),
            Track::Audio => !std::mem::replace(&mut self.has_audio, true),
            Track::Data => return Ok(()),
        };
        if newly_seen && self.open.is_some() {
            // A track without a config record (legacy codec) appeared mid-stream.
            self.break_stream(Some(frame.dts_ms));
        }
        if let (Some(last), true) = (self.last_dts_ms, self.open.is_some()) {
            if frame.dts_ms < last || frame.dts_ms - last > self.config.segment_target_ms {
                tracing::warn!(
                    stream_key = %self.stream_key,
                    last_dts_ms = last,
                    dts_ms = frame.dts_ms,
                    "HLS: timestamp jump; closing the segment and starting a discontinuity"
                );
                self.break_stream(None);
            }
        }

        let driving = track == self.driving_track();
        let starts_segment = driving && (track == Track::Audio || frame.keyframe);
        if driving {
            self.note_interval(frame.dts_ms);
        }
        let started_any = self.started_any;
        let mut opened = false;
        match &self.open {
            None if !starts_segment => return Ok(()), // wait for a keyframe
            None => {
                self.start_segment(frame, wallclock_ms)?;
                opened = true;
            }
            Some(open) => {
                let elapsed = frame.dts_ms.saturating_sub(open.start_dts_ms);
                if starts_segment && elapsed >= self.config.segment_target_ms {
                    self.close_segment(frame.dts_ms);
                    self.start_segment(frame, wallclock_ms)?;
                    opened = true;
                } else if driving && elapsed >= self.config.max_segment_ms {
                    tracing::warn!(
                        stream_key = %self.stream_key,
                        gop_ms = elapsed,
                        target_ms = self.config.segment_target_ms,
                        "HLS: no keyframe for {elapsed} ms; closing the segment and waiting for \
                         the next keyframe; set the encoder keyframe interval to {} ms or less",
                        self.config.segment_target_ms
                    );
                    self.break_stream(Some(frame.dts_ms));
                    return Ok(());
                } else if self.variant == Variant::Fmp4LowLatency
                    && driving
                    && self.part_is_due(frame)
                {
                    self.close_part(frame.dts_ms);
                }
            }
        }
        self.last_dts_ms = Some(frame.dts_ms);
        if let Err(error) = self.mux(frame) {
            if opened {
                self.abandon_open_segment(started_any);
            }
            return Err(error);
        }
        let independent = match track {
            Track::Video => frame.keyframe,
            _ => !self.has_video,
        };
        if let Some(open) = self.open.as_mut() {
            open.part_independent |= independent;
        }
        Ok(())
    }

    fn driving_track(&self) -> Track {
        if self.has_video {
            Track::Video
        } else {
            Track::Audio
        }
    }

    fn note_interval(&mut self, dts_ms: u64) {
        if let Some(last) = self.last_driving_dts_ms.replace(dts_ms) {
            if self.intervals.len() == INTERVAL_HISTORY {
                self.intervals.pop_front();
            }
            self.intervals.push_back(dts_ms.saturating_sub(last));
        }
    }

    fn max_recent_interval(&self) -> Option<u64> {
        self.intervals.iter().copied().max()
    }

    /// Whether `frame` (of the driving track) should start a new part. Parts must not
    /// exceed PART-TARGET and should be at least 85% of it (RFC 8216bis §4.4.4.9), so the
    /// cut comes before the frame that would carry the part past the target, judged by
    /// the largest recent frame interval; a keyframe also starts a part once the current
    /// one has reached 85%, so that more parts are independent.
    fn part_is_due(&self, frame: &Frame) -> bool {
        let Some(open) = &self.open else { return false };
        let elapsed = frame.dts_ms.saturating_sub(open.part_start_dts_ms);
        if elapsed == 0 {
            return false;
        }
        let target = self.config.part_target_ms;
        let lookahead = self.max_recent_interval().unwrap_or(0);
        let keyframe_cut =
            frame.keyframe && frame.track() == Track::Video && elapsed * 100 >= target * 85;
        elapsed + lookahead > target || keyframe_cut
    }

    fn start_segment(&mut self, frame: &Frame, wallclock_ms: u64) -> Result<(), HlsError> {
        self.muxer.start_segment();
        let init_generation = match self.variant {
            Variant::Ts => None,
            Variant::Fmp4LowLatency => {
                let Some(init) = self.muxer.init_segment() else {
                    return Err(HlsError::NoInitSegment {
                        stream_key: self.stream_key.clone(),
                    });
                };
                Some(self.init_generation_for(init))
            }
        };
        let discontinuity = std::mem::take(&mut self.pending_discontinuity) && self.started_any;
        if discontinuity {
            self.discontinuity_sequence += 1;
        }
        self.started_any = true;
        let min_wall = self.min_program_date_time_ms;
        let anchor = *self.clock.get_or_insert(ClockAnchor {
            dts_ms: frame.dts_ms,
            wall_ms: wallclock_ms.max(min_wall),
        });
        self.open = Some(OpenSegment {
            msn: self.next_msn,
            discontinuity_sequence: self.discontinuity_sequence,
            discontinuity,
            init_generation,
            program_date_time_ms: anchor
                .wall_ms
                .saturating_add(frame.dts_ms.saturating_sub(anchor.dts_ms)),
            start_dts_ms: frame.dts_ms,
            parts: Vec::new(),
            part_start_dts_ms: frame.dts_ms,
            part_independent: false,
        });
        Ok(())
    }

    /// Forgets a segment whose first frame the muxer refused, so no empty segment is
    /// published; the stream waits for the next keyframe as after a discontinuity
    /// (unless nothing was ever published).
    fn abandon_open_segment(&mut self, started_any_before: bool) {
        let Some(open) = self.open.take() else { return };
        if open.discontinuity {
            self.discontinuity_sequence -= 1;
        }
        // Discard what start_segment wrote (TS: PAT and PMT).
        let _ = self.muxer.take_fragment(open.start_dts_ms);
        self.started_any = started_any_before;
        self.pending_discontinuity = started_any_before;
        self.clock = None;
        self.last_dts_ms = None;
        self.last_driving_dts_ms = None;
        self.intervals.clear();
    }

    /// The generation of `init`, starting a new one (and a discontinuity: the format
    /// changed) when it differs from the current one.
    fn init_generation_for(&mut self, init: Bytes) -> u32 {
        if let Some((generation, current)) = &self.init {
            if *current == init {
                return *generation;
            }
            self.pending_discontinuity = true;
        }
        let generation = self.next_init_generation;
        self.next_init_generation += 1;
        self.init = Some((generation, init.clone()));
        self.inits.push_back((generation, init));
        generation
    }

    fn close_part(&mut self, end_dts_ms: u64) {
        let open = self
            .open
            .as_mut()
            .expect("parts are closed only inside an open segment");
        let bytes = self.muxer.take_fragment(end_dts_ms);
        let index = open.parts.len() as u32;
        open.parts.push(Part {
            duration_ms: end_dts_ms.saturating_sub(open.part_start_dts_ms),
            independent: open.part_independent,
            bytes,
        });
        open.part_start_dts_ms = end_dts_ms;
        open.part_independent = false;
        self.pending.part = Some(PartId {
            msn: open.msn,
            part: index,
        });
        self.dirty = true;
    }

    fn close_segment(&mut self, end_dts_ms: u64) {
        let (bytes, parts) = match self.variant {
            Variant::Ts => (self.muxer.take_fragment(end_dts_ms), Vec::new()),
            Variant::Fmp4LowLatency => {
                self.close_part(end_dts_ms);
                let open = self
                    .open
                    .as_mut()
                    .expect("close_segment is called only with an open segment");
                join_parts(std::mem::take(&mut open.parts))
            }
        };
        let open = self
            .open
            .take()
            .expect("close_segment is called only with an open segment");
        let duration_ms = end_dts_ms.saturating_sub(open.start_dts_ms);
        self.target_duration_s = self.target_duration_s.max(duration_ms.div_ceil(1000));
        self.min_program_date_time_ms = open.program_date_time_ms.saturating_add(duration_ms);
        self.segments.push_back(Arc::new(Segment {
            msn: open.msn,
            discontinuity_sequence: open.discontinuity_sequence,
            discontinuity: open.discontinuity,
            init_generation: open.init_generation,
            program_date_time_ms: open.program_date_time_ms,
            duration_ms,
            bytes,
            parts,
        }));
        self.next_msn += 1;
        while self.segments.len() > self.config.window_segments + RETAINED_AFTER_WINDOW {
            self.segments.pop_front();
        }
        // Keep the init segments that a retained segment or the next one uses.
        let oldest_used = self.segments.front().and_then(|s| s.init_generation);
        let current = self.init.as_ref().map(|(g, _)| *g);
        while let Some(&(generation, _)) = self.inits.front() {
            if Some(generation) == current || oldest_used.is_some_and(|oldest| generation >= oldest)
            {
                break;
            }
            self.inits.pop_front();
        }
        self.pending.segment = Some(open.msn);
        self.dirty = true;
    }

    /// Ends the continuous media: closes the open segment (at `at`, the timestamp of
    /// the frame that ended it, when plausible; else one frame after the last) and makes
    /// the next segment start at a keyframe with a discontinuity.
    fn break_stream(&mut self, at: Option<u64>) {
        if let Some(open) = &self.open {
            let last = self.last_dts_ms.unwrap_or(open.start_dts_ms);
            let end = match at {
                Some(at) if at > last && at - last <= self.config.segment_target_ms => at,
                _ => last.saturating_add(
                    self.max_recent_interval()
                        .unwrap_or(FALLBACK_FRAME_MS)
                        .max(1),
                ),
            };
            self.close_segment(end);
        }
        if self.started_any {
            self.pending_discontinuity = true;
        }
        self.clock = None;
        self.last_dts_ms = None;
        self.last_driving_dts_ms = None;
        self.intervals.clear();
    }

    fn publish_if_dirty(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.snapshot = Arc::new(self.build_snapshot());
        }
    }

    fn build_snapshot(&self) -> HlsSnapshot {
        let has_content = match self.variant {
            Variant::Ts => !self.segments.is_empty(),
            Variant::Fmp4LowLatency => {
                !self.segments.is_empty() || self.open.as_ref().is_some_and(|o| !o.parts.is_empty())
            }
        };
        HlsSnapshot {
            variant: self.variant,
            multivariant: has_content.then(|| self.multivariant_playlist().render()),
            playlist: has_content.then(|| self.media_playlist().render()),
            segments: self.segments.iter().cloned().collect(),
            open_msn: self.next_msn,
            open_parts: self
                .open
                .as_ref()
                .map(|o| o.parts.clone())
                .unwrap_or_default(),
            inits: self.inits.iter().cloned().collect(),
            target_duration_s: self.target_duration_s,
            segment_target_ms: self.config.segment_target_ms,
            part_target_ms: self.config.part_target_ms,
            blocking_timeout_ms: self.config.blocking_timeout_ms,
            ended: self.ended,
        }
    }

    fn listed_segments(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter().skip(
            self.segments
                .len()
                .saturating_sub(self.config.window_segments),
        )
    }

    fn media_playlist(&self) -> MediaPlaylist {
        let ll = self.variant == Variant::Fmp4LowLatency;
        // The segment in progress is listed through its parts once it has one; before
        // that its tags (date, map, discontinuity) would dangle before the preload hint.
        let open = self.open.as_ref().filter(|o| ll && !o.parts.is_empty());
        // EXT-X-PART tags more than three target durations from the end are dropped
        // (RFC 8216bis §6.2.2); the part bytes stay downloadable with their segment.
        let total_ms: u64 = self.listed_segments().map(|s| s.duration_ms).sum::<u64>()
            + open.map_or(0, |o| o.parts.iter().map(|p| p.duration_ms).sum());
        let part_horizon_ms = total_ms.saturating_sub(3000 * self.target_duration_s);

        let mut entries = Vec::new();
        let mut position_ms = 0;
        let mut first_dsn = None;
        let mut previous_init = None;
        let listed = self.listed_segments().map(|s| {
            let header = EntryHeader {
                msn: s.msn,
                discontinuity_sequence: s.discontinuity_sequence,
                discontinuity: s.discontinuity,
                init_generation: s.init_generation,
                program_date_time_ms: s.program_date_time_ms,
            };
            (header, &s.parts[..], Some(s.duration_ms))
        });
        let open_entry = open.map(|o| {
            let header = EntryHeader {
                msn: o.msn,
                discontinuity_sequence: o.discontinuity_sequence,
                discontinuity: o.discontinuity,
                init_generation: o.init_generation,
                program_date_time_ms: o.program_date_time_ms,
            };
            (header, &o.parts[..], None)
        });
        for (header, parts, duration_ms) in listed.chain(open_entry) {
            let first = first_dsn.is_none();
            first_dsn.get_or_insert(header.discontinuity_sequence);
            let map_uri = (ll && (first || header.init_generation != previous_init))
                .then(|| init_uri(header.init_generation.unwrap_or(0)));
            previous_init = header.init_generation;
            let mut listed_parts = Vec::new();
            for (index, part) in parts.iter().enumerate() {
                position_ms += part.duration_ms;
                if position_ms > part_horizon_ms {
                    listed_parts.push(PartialSegment {
                        duration_ms: part.duration_ms,
                        uri: format!("p/{}.{index}.m4s", header.msn),
                        independent: part.independent,
                    });
                }
            }
            if !ll {
                position_ms += duration_ms.unwrap_or(0);
            }
            entries.push(MediaSegment {
                // The first entry's discontinuity is carried by EXT-X-DISCONTINUITY-SEQUENCE.
                discontinuity: header.discontinuity && !first,
                map_uri,
                program_date_time_ms: Some(header.program_date_time_ms),
                parts: listed_parts,
                complete: duration_ms.map(|duration_ms| CompleteSegment {
                    duration_ms,
                    uri: match self.variant {
                        Variant::Ts => format!("ts/{}.ts", header.msn),
                        Variant::Fmp4LowLatency => format!("s/{}.m4s", header.msn),
                    },
                }),
            });
        }
        let media_sequence = self
            .segments
            .len()
            .saturating_sub(self.config.window_segments);
        let media_sequence = self
            .segments
            .get(media_sequence)
            .map_or(self.next_msn, |s| s.msn);
        MediaPlaylist {
            version: Some(if ll { 6 } else { 3 }),
            target_duration_s: self.target_duration_s,
            media_sequence,
            discontinuity_sequence: first_dsn.unwrap_or(self.discontinuity_sequence),
            // Every segment starts at a keyframe (or, audio-only, at any frame).
            independent_segments: true,
            server_control: ll.then(|| ServerControl {
                can_block_reload: true,
                hold_back_ms: Some(3000 * self.target_duration_s),
                part_hold_back_ms: Some(3 * self.config.part_target_ms),
            }),
            part_target_ms: ll.then_some(self.config.part_target_ms),
            segments: entries,
            preload_hint_part: (ll && !self.ended).then(|| {
                let next_part = self.open.as_ref().map_or(0, |o| o.parts.len());
                format!("p/{}.{next_part}.m4s", self.next_msn)
            }),
            end_list: self.ended,
        }
    }

    fn multivariant_playlist(&self) -> MultivariantPlaylist {
        // BANDWIDTH is the peak segment bit rate (RFC 8216bis §4.4.6.2): measured over
        // the window, or over the parts so far before the first segment completes.
        let rate = |bytes: usize, ms: u64| (bytes as u64 * 8000).checked_div(ms).unwrap_or(0);
        let listed: Vec<&Arc<Segment>> = self.listed_segments().collect();
        let mut peak = listed
            .iter()
            .map(|s| rate(s.bytes.len(), s.duration_ms))
            .max()
            .unwrap_or(0);
        if let (0, Some(open)) = (peak, &self.open) {
            let bytes = open.parts.iter().map(|p| p.bytes.len()).sum();
            peak = rate(bytes, open.parts.iter().map(|p| p.duration_ms).sum());
        }
        let average = (!listed.is_empty()).then(|| {
            rate(
                listed.iter().map(|s| s.bytes.len()).sum(),
                listed.iter().map(|s| s.duration_ms).sum(),
            )
        });
        let frame_rate_millis = self
            .info
            .frame_rate
            .filter(|fps| fps.is_finite() && *fps > 0.0 && *fps < 1000.0)
            .map(|fps| (fps * 1000.0).round() as u64);
        MultivariantPlaylist {
            independent_segments: true,
            variants: vec![VariantStream {
                bandwidth_bps: peak.max(self.info.bandwidth_bps.unwrap_or(0)).max(1),
                average_bandwidth_bps: average.filter(|a| *a > 0),
                codecs: (!self.info.codecs.is_empty()).then(|| self.info.codecs.clone()),
                resolution: self.info.resolution,
                frame_rate_millis,
                uri: match self.variant {
                    Variant::Ts => format!("{}/ts.m3u8", self.stream_key.stream()),
                    Variant::Fmp4LowLatency => "ll.m3u8".to_owned(),
                },
            }],
        }
    }
}

/// The per-segment tags shared by complete and open playlist entries.
struct EntryHeader {
    msn: u64,
    discontinuity_sequence: u64,
    discontinuity: bool,
    init_generation: Option<u32>,
    program_date_time_ms: u64,
}

fn init_uri(generation: u32) -> String {
    if generation == 0 {
        "init.mp4".to_owned()
    } else {
        format!("init-{generation}.mp4")
    }
}

/// Concatenates the parts into the segment's bytes and re-points each part at its slice
/// of them, so a segment's media is held once.
fn join_parts(parts: Vec<Part>) -> (Bytes, Vec<Part>) {
    let mut joined = BytesMut::with_capacity(parts.iter().map(|p| p.bytes.len()).sum());
    for part in &parts {
        joined.extend_from_slice(&part.bytes);
    }
    let joined = joined.freeze();
    let mut offset = 0;
    let parts = parts
        .into_iter()
        .map(|part| {
            let len = part.bytes.len();
            let slice = joined.slice(offset..offset + len);
            offset += len;
            Part {
                bytes: slice,
                ..part
            }
        })
        .collect();
    (joined, parts)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::hls::parse::{parse_media_playlist, parse_multivariant_playlist};
    use crate::hls::{CacheControl, HlsLookup};
    use crate::media::{AudioCodec, Codec, VideoCodec};
    use crate::mux::MuxError;

    /// 2024-03-01T12:00:00Z: the fake wall clock reads this plus the frame's dts.
    const EPOCH_MS: u64 = 1_709_294_400_000;

    /// A muxer double whose output spells out what it was given: `S|` at a segment
    /// start, `v{dts}k`/`v{dts}`/`a{dts}` per sample, `>{end}` at each fragment end.
    #[derive(Default)]
    struct FakeMuxer {
        fmp4: bool,
        video_config: Option<Bytes>,
        audio_config: Option<Bytes>,
        pending: String,
    }

    impl FakeMuxer {
        fn ts() -> Self {
            FakeMuxer::default()
        }

        fn fmp4() -> Self {
            FakeMuxer {
                fmp4: true,
                ..FakeMuxer::default()
            }
        }
    }

    impl Muxer for FakeMuxer {
        fn init_segment(&mut self) -> Option<Bytes> {
            if !self.fmp4 || (self.video_config.is_none() && self.audio_config.is_none()) {
                return None;
            }
            let show =
                |c: &Option<Bytes>| c.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            Some(Bytes::from(format!(
                "init{:?}{:?}",
                show(&self.video_config),
                show(&self.audio_config)
            )))
        }

        fn start_segment(&mut self) {
            self.pending.push_str("S|");
        }

        fn push(&mut self, frame: &Frame) -> Result<(), MuxError> {
            match (frame.kind, frame.track()) {
                (FrameKind::Config, Track::Video) => {
                    self.video_config = Some(frame.payload.clone())
                }
                (FrameKind::Config, Track::Audio) => {
                    self.audio_config = Some(frame.payload.clone())
                }
                (FrameKind::Media, Track::Video) if self.video_config.is_none() => {
                    return Err(MuxError::MissingConfig { track: "video" });
                }
                (FrameKind::Media, Track::Video) => {
                    let key = if frame.keyframe { "k" } else { "" };
                    self.pending.push_str(&format!("v{}{key},", frame.dts_ms));
                }
                (FrameKind::Media, Track::Audio) => {
                    self.pending.push_str(&format!("a{},", frame.dts_ms))
                }
                _ => {}
            }
            Ok(())
        }

        fn take_fragment(&mut self, end_dts_ms: u64) -> Bytes {
            let text = std::mem::take(&mut self.pending);
            Bytes::from(format!("{text}>{end_dts_ms};"))
        }
    }

    fn key() -> StreamKey {
        StreamKey::new("live", "cam").unwrap()
    }

    fn config_frame(track: Track, payload: &'static str) -> Frame {
        Frame {
            codec: match track {
                Track::Video => Codec::Video(VideoCodec::H264),
                _ => Codec::Audio(AudioCodec::Aac),
            },
            kind: FrameKind::Config,
            keyframe: false,
            dts_ms: 0,
            cts_ms: 0,
            payload: Bytes::from_static(payload.as_bytes()),
        }
    }

    fn video(dts_ms: u64, keyframe: bool) -> Frame {
        Frame {
            codec: Codec::Video(VideoCodec::H264),
            kind: FrameKind::Media,
            keyframe,
            dts_ms,
            cts_ms: 0,
            payload: Bytes::from_static(b"frame"),
        }
    }

    fn audio(dts_ms: u64) -> Frame {
        Frame {
            codec: Codec::Audio(AudioCodec::Aac),
            kind: FrameKind::Media,
            keyframe: false,
            dts_ms,
            cts_ms: 0,
            payload: Bytes::from_static(b"aac"),
        }
    }

    /// Video at `fps` (ms timestamps rounded down, as RTMP carries them) with a keyframe
    /// every `gop_frames`, plus AAC at 48 kHz (21.33 ms), interleaved by dts (video first),
    /// for frame times in `from_ms..to_ms`; frame numbering starts at `from_ms` too.
    fn av(from_ms: u64, to_ms: u64, fps: u64, gop_frames: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        let first_video = (from_ms * fps).div_ceil(1000);
        for i in first_video.. {
            let dts = i * 1000 / fps;
            if dts >= to_ms {
                break;
            }
            frames.push(video(dts, (i - first_video) % gop_frames == 0));
        }
        let first_audio = (from_ms * 48_000).div_ceil(1024 * 1000);
        for i in first_audio.. {
            let dts = i * 1024 * 1000 / 48_000;
            if dts >= to_ms {
                break;
            }
            frames.push(audio(dts));
        }
        frames.sort_by_key(|f| (f.dts_ms, f.track() == Track::Audio));
        frames
    }

    fn packager(variant: Variant) -> Packager<FakeMuxer> {
        let muxer = if variant == Variant::Ts {
            FakeMuxer::ts()
        } else {
            FakeMuxer::fmp4()
        };
        let mut p = Packager::new(key(), variant, muxer, HlsConfig::default()).unwrap();
        p.push(&config_frame(Track::Video, "avc-1"), EPOCH_MS)
            .unwrap();
        p.push(&config_frame(Track::Audio, "aac-1"), EPOCH_MS)
            .unwrap();
        p
    }

    fn run(p: &mut Packager<FakeMuxer>, frames: &[Frame]) -> Vec<Update> {
        frames
            .iter()
            .filter_map(|f| p.push(f, EPOCH_MS + f.dts_ms).unwrap())
            .collect()
    }

    fn media(p: &Packager<FakeMuxer>) -> MediaPlaylist {
        let snapshot = p.snapshot();
        let bytes = snapshot.media_playlist().expect("a playlist exists");
        parse_media_playlist(std::str::from_utf8(bytes).unwrap()).unwrap()
    }

    fn body(lookup: HlsLookup) -> String {
        match lookup {
            HlsLookup::Ready { body, .. } => String::from_utf8(body.to_vec()).unwrap(),
            other => panic!("expected a body, got {other:?}"),
        }
    }

    fn complete(playlist: &MediaPlaylist) -> Vec<(u64, String)> {
        playlist
            .segments
            .iter()
            .filter_map(|s| s.complete.as_ref().map(|c| (c.duration_ms, c.uri.clone())))
            .collect()
    }

    fn check_golden(name: &str, actual: &[u8]) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/golden/hls")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read(&path).unwrap_or_else(|_| {
            panic!("{} missing: run UPDATE_GOLDEN=1 cargo test", path.display())
        });
        assert_eq!(
            String::from_utf8_lossy(actual),
            String::from_utf8_lossy(&expected),
            "{name}"
        );
    }

    #[test]
    fn ts_segments_cut_at_the_first_keyframe_at_or_after_the_target() {
        // Keyframes every 1.5 s: 2 s is not a keyframe, so segments run to 3 s.
        let mut p = packager(Variant::Ts);
        let updates = run(&mut p, &av(0, 9_100, 25, 38));
        let segments: Vec<u64> = updates.iter().filter_map(|u| u.segment).collect();
        assert_eq!(segments, [0, 1]);
        assert!(
            updates.iter().all(|u| u.part.is_none()),
            "classic HLS has no parts"
        );
        let playlist = media(&p);
        // 38 frames at 25 fps = 1520 ms: keyframes at 0, 1520, 3040, 4560, 6080, 7600, 9120.
        assert_eq!(
            complete(&playlist),
            [(3040, "ts/0.ts".to_owned()), (3040, "ts/1.ts".to_owned())]
        );
        assert_eq!(playlist.target_duration_s, 4, "ceil(3.04 s)");
        // The segment bytes hold exactly the frames of [0, 3040) and start with a segment start.
        let seg0 = body(p.snapshot().lookup("/ts/0.ts", ""));
        assert!(seg0.starts_with("S|v0k,a0,"), "{seg0}");
        assert!(seg0.contains("v3000,") && !seg0.contains("v3040"), "{seg0}");
        assert!(seg0.ends_with(">3040;"), "{seg0}");
        assert!(body(p.snapshot().lookup("/ts/1.ts", "")).starts_with("S|v3040k,"));
    }

    #[test]
    fn target_duration_never_decreases() {
        let mut p = packager(Variant::Ts);
        run(&mut p, &av(0, 6_000, 25, 75)); // 3 s GOPs: a 3 s segment
        assert_eq!(media(&p).target_duration_s, 3);
        run(&mut p, &av(6_000, 20_000, 25, 25)); // then 1 s GOPs: 2 s segments
        let playlist = media(&p);
        assert!(
            complete(&playlist).iter().skip(1).all(|(d, _)| *d == 2000),
            "{playlist:?}"
        );
        assert_eq!(playlist.target_duration_s, 3);
        // A resumed packager starts from the same floor.
        assert_eq!(p.resume_point().target_duration_s, 3);
    }

    /// Checks every LL-HLS part rule on a playlist: durations sum to EXTINF, no part
    /// exceeds PART-TARGET, parts under 85% are only final or independent ones, and
    /// INDEPENDENT marks exactly the parts whose bytes contain a keyframe.
    fn check_parts(p: &Packager<FakeMuxer>) -> usize {
        let snapshot = p.snapshot();
        let target = p.config.part_target_ms;
        let mut checked = 0;
        for segment in snapshot.segments.iter() {
            let sum: u64 = segment.parts.iter().map(|p| p.duration_ms).sum();
            assert_eq!(sum, segment.duration_ms, "segment {}", segment.msn);
            assert!(
                segment.parts[0].independent,
                "segment {} starts with a keyframe",
                segment.msn
            );
            for (i, part) in segment.parts.iter().enumerate() {
                let last = i + 1 == segment.parts.len();
                assert!(
                    part.duration_ms <= target,
                    "part {}.{i}: {} ms",
                    segment.msn,
                    part.duration_ms
                );
                assert!(
                    last || part.independent || part.duration_ms * 100 >= target * 85,
                    "part {}.{i}: {} ms",
                    segment.msn,
                    part.duration_ms
                );
                let text = String::from_utf8_lossy(&part.bytes).into_owned();
                let has_key = text.contains("k,") || !p.has_video;
                assert_eq!(
                    part.independent, has_key,
                    "part {}.{i}: {text}",
                    segment.msn
                );
                checked += 1;
            }
            assert_eq!(
                segment.parts.iter().map(|p| p.bytes.len()).sum::<usize>(),
                segment.bytes.len()
            );
        }
        checked
    }

    #[test]
    fn ll_parts_follow_the_part_rules_at_30_fps() {
        let mut p = packager(Variant::Fmp4LowLatency);
        let updates = run(&mut p, &av(0, 12_000, 30, 60));
        assert!(check_parts(&p) > 30);
        // Every update names the part just completed, in order.
        let parts: Vec<PartId> = updates.iter().filter_map(|u| u.part).collect();
        for pair in parts.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                b == PartId {
                    msn: a.msn,
                    part: a.part + 1
                } || b
                    == PartId {
                        msn: a.msn + 1,
                        part: 0
                    },
                "{a:?} {b:?}"
            );
        }
        let playlist = media(&p);
        assert_eq!(
            complete(&playlist)
                .iter()
                .map(|(d, _)| *d)
                .collect::<Vec<_>>(),
            [2000; 5]
        );
        assert_eq!(playlist.target_duration_s, 2);
    }

    #[test]
    fn every_ll_playlist_published_is_well_formed() {
        // After each update: the playlist parses, only the last entry is incomplete and it
        // has parts, the hint names the part after the last one, and EXT-X-MEDIA-SEQUENCE
        // and the URIs agree.
        let mut p = packager(Variant::Fmp4LowLatency);
        let mut checked = 0;
        for f in av(0, 16_000, 30, 60) {
            if p.push(&f, EPOCH_MS + f.dts_ms).unwrap().is_none() {
                continue;
            }
            let playlist = media(&p);
            let (open, complete) = match playlist.segments.split_last() {
                Some((last, rest)) if last.complete.is_none() => (Some(last), rest),
                _ => (None, &playlist.segments[..]),
            };
            for (i, segment) in complete.iter().enumerate() {
                let msn = playlist.media_sequence + i as u64;
                assert_eq!(
                    segment.complete.as_ref().unwrap().uri,
                    format!("s/{msn}.m4s")
                );
            }
            let open_msn = playlist.media_sequence + complete.len() as u64;
            let next_part = match open {
                Some(open) => {
                    assert!(!open.parts.is_empty(), "{playlist:?}");
                    let last = &open.parts.last().unwrap().uri;
                    assert_eq!(*last, format!("p/{open_msn}.{}.m4s", open.parts.len() - 1));
                    open.parts.len()
                }
                None => 0,
            };
            assert_eq!(
                playlist.preload_hint_part,
                Some(format!("p/{open_msn}.{next_part}.m4s"))
            );
            checked += 1;
        }
        assert!(checked > 40);
    }

    #[test]
    fn ll_parts_with_a_keyframe_inside_are_independent() {
        // 25 fps, keyframes every second: the 1000 ms keyframe falls 40 ms into a part.
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 4_100, 25, 25));
        check_parts(&p);
        let first = &p.snapshot().segments[0];
        let shape: Vec<(u64, bool)> = first
            .parts
            .iter()
            .map(|p| (p.duration_ms, p.independent))
            .collect();
        assert_eq!(
            shape,
            [
                (320, true),
                (320, false),
                (320, false),
                (320, true),
                (320, false),
                (320, false),
                (80, false)
            ]
        );
    }

    #[test]
    fn ll_keyframe_after_85_percent_starts_a_part() {
        // 10 fps, keyframes every 300 ms: 300 ms is 90% of the target, so each keyframe
        // starts a new (independent) part instead of riding inside the current one.
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 4_100, 10, 3));
        check_parts(&p);
        let first = &p.snapshot().segments[0];
        assert!(
            first
                .parts
                .iter()
                .all(|p| p.duration_ms == 300 && p.independent),
            "{:?}",
            first.parts
        );
    }

    #[test]
    fn audio_only_streams_cut_by_time_and_every_part_is_independent() {
        let mut p = Packager::new(
            key(),
            Variant::Fmp4LowLatency,
            FakeMuxer::fmp4(),
            HlsConfig::default(),
        )
        .unwrap();
        p.push(&config_frame(Track::Audio, "aac-1"), EPOCH_MS)
            .unwrap();
        let frames: Vec<Frame> = av(0, 7_000, 25, 25)
            .into_iter()
            .filter(|f| f.track() == Track::Audio)
            .collect();
        run(&mut p, &frames);
        assert!(check_parts(&p) > 10);
        let durations: Vec<u64> = complete(&media(&p)).iter().map(|(d, _)| *d).collect();
        // AAC frames are 21.33 ms: the first at or after each 2 s target is at 2005, 4010
        // and 6016 ms.
        assert_eq!(durations, [2005, 2005, 2006]);
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let mut p = packager(Variant::Ts);
        let mut frames = vec![audio(0), video(0, false), video(40, false)];
        frames.extend(av(80, 2_200, 25, 25));
        run(&mut p, &frames);
        let seg0 = body(p.snapshot().lookup("/ts/0.ts", ""));
        assert!(seg0.starts_with("S|v80k,"), "{seg0}");
    }

    #[test]
    fn discontinuity_keeps_numbering_and_marks_the_next_segment() {
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 4_500, 25, 25));
        // Publisher gone: the open segment (4000..4480) closes one frame interval after its last frame.
        let update = p.discontinuity().expect("the open segment closed");
        assert_eq!(update.segment, Some(2));
        // Back 10 s later on the wall clock, with its own timestamps restarting at 0;
        // non-keyframes before the first keyframe are dropped.
        let later = EPOCH_MS + 20_000;
        assert_eq!(p.push(&video(0, false), later).unwrap(), None);
        for f in av(40, 4_100, 25, 25) {
            p.push(&f, later + f.dts_ms).unwrap();
        }
        let playlist = media(&p);
        let uris: Vec<String> = complete(&playlist).into_iter().map(|(_, u)| u).collect();
        assert_eq!(
            uris,
            ["s/0.m4s", "s/1.m4s", "s/2.m4s", "s/3.m4s", "s/4.m4s"]
        );
        assert_eq!(
            complete(&playlist)[2].0,
            520,
            "4000 to 4480 plus one 40 ms frame"
        );
        let flags: Vec<bool> = playlist.segments.iter().map(|s| s.discontinuity).collect();
        // Segment 5 (from 4040) has no part yet, so it is not listed.
        assert_eq!(flags, [false, false, false, true, false]);
        assert_eq!(playlist.discontinuity_sequence, 0);
        // Dates: continuous before the break, then the new wall clock.
        let dates: Vec<u64> = playlist
            .segments
            .iter()
            .map(|s| s.program_date_time_ms.unwrap())
            .collect();
        assert_eq!(
            &dates[..4],
            [EPOCH_MS, EPOCH_MS + 2000, EPOCH_MS + 4000, later + 40]
        );
        // An unchanged init keeps its URI: only the first entry carries EXT-X-MAP.
        assert_eq!(
            playlist
                .segments
                .iter()
                .filter(|s| s.map_uri.is_some())
                .count(),
            1
        );
        check_parts(&p);
    }

    #[test]
    fn discontinuity_sequence_follows_the_window() {
        let mut p = packager(Variant::Ts);
        run(&mut p, &av(0, 2_100, 25, 25));
        p.discontinuity();
        run(&mut p, &av(10_000, 30_100, 25, 25));
        let playlist = media(&p);
        // Segments 0 and 1 before the break, 2..=11 after it: the first one after the break
        // has left the window, and its discontinuity is counted in the sequence.
        assert_eq!(playlist.media_sequence, 6);
        assert_eq!(playlist.discontinuity_sequence, 1);
        assert!(playlist.segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn codec_change_starts_a_new_init_generation_with_a_discontinuity() {
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 2_500, 25, 25));
        // The same config again changes nothing.
        p.push(
            &Frame {
                dts_ms: 2_500,
                ..config_frame(Track::Video, "avc-1")
            },
            EPOCH_MS + 2_500,
        )
        .unwrap();
        assert!(p.open.is_some());
        let update = p
            .push(
                &Frame {
                    dts_ms: 2_520,
                    ..config_frame(Track::Video, "avc-2")
                },
                EPOCH_MS + 2_520,
            )
            .unwrap()
            .expect("the config change closed the segment");
        assert_eq!(update.segment, Some(1));
        run(&mut p, &av(2_520, 4_700, 25, 25));
        let playlist = media(&p);
        let maps: Vec<Option<&str>> = playlist
            .segments
            .iter()
            .map(|s| s.map_uri.as_deref())
            .collect();
        // The segment opened at 4520 has no part yet, so it is not listed.
        assert_eq!(maps, [Some("init.mp4"), None, Some("init-1.mp4")]);
        assert!(playlist.segments[2].discontinuity);
        let snapshot = p.snapshot();
        assert!(body(snapshot.lookup("/init.mp4", "")).contains("avc-1"));
        assert!(body(snapshot.lookup("/init-1.mp4", "")).contains("avc-2"));
        assert_eq!(snapshot.lookup("/init-2.mp4", ""), HlsLookup::NotFound);
        // Segment 1 was muxed with the old config and closed at the config's timestamp.
        assert_eq!(complete(&playlist)[1].0, 520);
    }

    #[test]
    fn window_slides_and_evicted_segments_are_gone() {
        let mut p = packager(Variant::Ts);
        run(&mut p, &av(0, 24_100, 25, 25)); // 12 segments of 2 s
        let playlist = media(&p);
        assert_eq!(playlist.media_sequence, 6);
        let uris: Vec<String> = complete(&playlist).into_iter().map(|(_, u)| u).collect();
        assert_eq!(
            uris,
            ["ts/6.ts", "ts/7.ts", "ts/8.ts", "ts/9.ts", "ts/10.ts", "ts/11.ts"]
        );
        let snapshot = p.snapshot();
        // Two segments past the window stay downloadable for players still fetching them.
        assert!(matches!(
            snapshot.lookup("/ts/4.ts", ""),
            HlsLookup::Ready { .. }
        ));
        assert!(matches!(
            snapshot.lookup("/ts/5.ts", ""),
            HlsLookup::Ready { .. }
        ));
        assert_eq!(snapshot.lookup("/ts/3.ts", ""), HlsLookup::NotFound);
        assert_eq!(snapshot.lookup("/ts/0.ts", ""), HlsLookup::NotFound);
        assert_eq!(snapshot.segments.len(), 8);
        // The segment in progress is waited for; the one after it is unknown.
        assert_eq!(
            snapshot.lookup("/ts/12.ts", ""),
            HlsLookup::Wait {
                msn: 12,
                part: None
            }
        );
        assert_eq!(snapshot.lookup("/ts/13.ts", ""), HlsLookup::NotFound);
        // An old snapshot still held by a request keeps its bytes alive on its own.
        let old = p.snapshot();
        run(&mut p, &av(24_100, 30_100, 25, 25));
        assert!(matches!(
            old.lookup("/ts/4.ts", ""),
            HlsLookup::Ready { .. }
        ));
        assert_eq!(p.snapshot().lookup("/ts/4.ts", ""), HlsLookup::NotFound);
    }

    #[test]
    fn ll_window_lists_parts_only_for_the_last_three_target_durations() {
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 16_700, 25, 25));
        let playlist = media(&p);
        let end: u64 = playlist
            .segments
            .iter()
            .map(|s| {
                s.complete.as_ref().map_or_else(
                    || s.parts.iter().map(|p| p.duration_ms).sum(),
                    |c| c.duration_ms,
                )
            })
            .sum();
        let mut position = 0;
        for segment in &playlist.segments {
            let listed = segment.parts.len();
            let all = p.snapshot().find_segment_parts(segment);
            for (i, part) in all.iter().enumerate() {
                position += part.duration_ms;
                let expected = position > end - 6000;
                let is_listed = i >= all.len() - listed;
                assert_eq!(is_listed, expected, "{segment:?} part {i}");
            }
        }
        // Part bytes of a segment whose parts left the playlist are still served.
        let first = playlist.media_sequence;
        assert!(playlist.segments[0].parts.is_empty());
        assert!(matches!(
            p.snapshot().lookup(&format!("/p/{first}.0.m4s"), ""),
            HlsLookup::Ready { .. }
        ));
    }

    impl HlsSnapshot {
        /// All parts (listed or not) of the segment a parsed playlist entry names.
        fn find_segment_parts(&self, entry: &MediaSegment) -> Vec<Part> {
            let uri = entry.complete.as_ref().map(|c| c.uri.clone());
            match uri {
                Some(uri) => {
                    let msn: u64 = uri
                        .trim_start_matches("s/")
                        .trim_end_matches(".m4s")
                        .parse()
                        .unwrap();
                    self.find_segment(msn).unwrap().parts.clone()
                }
                None => self.open_parts.clone(),
            }
        }
    }

    /// A snapshot with segment 0 complete (7 parts: 0..2000 at 25 fps, 1 s GOPs) and
    /// segment 1 open with parts 1.0 and 1.1 done.
    fn blocking_state() -> Packager<FakeMuxer> {
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 2_641, 25, 25));
        let snapshot = p.snapshot();
        assert_eq!(
            (snapshot.segments.len(), snapshot.segments[0].parts.len()),
            (1, 7)
        );
        assert_eq!((snapshot.open_msn, snapshot.open_parts.len()), (1, 2));
        p
    }

    #[test]
    fn blocking_reload_decisions_follow_rfc8216bis() {
        let p = blocking_state();
        let snapshot = p.snapshot();
        let playlist = snapshot.media_playlist().unwrap().clone();
        let ready_plain = HlsLookup::Ready {
            content_type: "application/vnd.apple.mpegurl",
            cache_control: CacheControl::Playlist,
            body: playlist.clone(),
        };
        let ready_blocking = HlsLookup::Ready {
            content_type: "application/vnd.apple.mpegurl",
            cache_control: CacheControl::BlockingPlaylist { max_age_s: 12 },
            body: playlist,
        };
        let wait = |msn, part| HlsLookup::Wait { msn, part };
        let bad = |q: &str| match snapshot.lookup("/ll.m3u8", q) {
            HlsLookup::BadRequest(_) => true,
            other => panic!("{q}: {other:?}"),
        };
        let cases = [
            ("", ready_plain.clone()),
            ("_HLS_skip=YES", ready_plain.clone()),
            // _HLS_msn alone: ready once the segment is complete, wait up to last + 2.
            ("_HLS_msn=0", ready_blocking.clone()),
            ("_HLS_msn=1", wait(1, None)),
            ("_HLS_msn=2", wait(2, None)),
            // Parts: produced, the next one (the preload hint), and past the segment's end.
            ("_HLS_msn=1&_HLS_part=1", ready_blocking.clone()),
            ("_HLS_msn=1&_HLS_part=0", ready_blocking.clone()),
            ("_HLS_msn=1&_HLS_part=2", wait(1, Some(2))),
            ("_HLS_msn=0&_HLS_part=6", ready_blocking.clone()),
            // Past segment 0's last part (6) means part 0 of segment 1, which exists.
            ("_HLS_msn=0&_HLS_part=7", ready_blocking.clone()),
            ("_HLS_msn=0&_HLS_part=4000000000", ready_blocking.clone()),
            // Advance Part Limit at a 0.333 s part target: 9 parts ahead is fine, 10 is not.
            ("_HLS_msn=1&_HLS_part=10", wait(1, Some(10))),
            ("_HLS_msn=2&_HLS_part=3", wait(2, Some(3))),
        ];
        for (query, expected) in cases {
            assert_eq!(snapshot.lookup("/ll.m3u8", query), expected, "{query}");
        }
        for query in [
            "_HLS_part=1",
            "_HLS_msn=3",
            "_HLS_msn=1&_HLS_part=11",
            "_HLS_msn=2&_HLS_part=4",
            "_HLS_msn=3&_HLS_part=0",
            "_HLS_msn=x",
            "_HLS_msn=1&_HLS_part=",
            "_HLS_msn=18446744073709551615&_HLS_part=0",
        ] {
            assert!(bad(query));
        }
    }

    /// A viewer's `token` parameter (proto::auth) rides along in every request of a
    /// tokenised playlist: before, between or after the delivery directives, or alone,
    /// it changes nothing, on playlists, segments, parts and init segments alike.
    #[test]
    fn a_token_in_the_query_changes_no_lookup() {
        let p = blocking_state();
        let snapshot = p.snapshot();
        let token =
            "token=v1.k1.1700003600.play.bGl2ZS9jYW0.WyLA_hO4tEIL6RdadbeC2DsdSRD2_YilMoPxIFfdHwk";
        let queries = [
            "",
            "_HLS_skip=YES",
            "_HLS_msn=0",
            "_HLS_msn=1",
            "_HLS_msn=2",
            "_HLS_msn=1&_HLS_part=1",
            "_HLS_msn=1&_HLS_part=2",
            "_HLS_part=2&_HLS_msn=1",
            "_HLS_msn=1&_HLS_part=2&_HLS_skip=v2",
            "_HLS_msn=2&_HLS_part=3",
            "_HLS_msn=0&_HLS_part=7",
            // refused with and without the token
            "_HLS_part=1",
            "_HLS_msn=3",
            "_HLS_msn=1&_HLS_part=11",
            "_HLS_msn=x",
        ];
        let mut checked = 0;
        for rest in [
            "/ll.m3u8",
            "/index.m3u8",
            "/init.mp4",
            "/s/0.m4s",
            "/p/1.1.m4s",
            "/p/1.2.m4s",
            "/s/9.m4s",
        ] {
            for query in queries {
                let expected = snapshot.lookup(rest, query);
                let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
                // the token at every position among the other parameters
                for at in 0..=pairs.len() {
                    let mut with = pairs.clone();
                    with.insert(at, token);
                    let with = with.join("&");
                    assert_eq!(snapshot.lookup(rest, &with), expected, "{rest}?{with}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 37);
        assert!(matches!(
            snapshot.lookup("/ll.m3u8", &format!("_HLS_msn=1&_HLS_part=2&{token}")),
            HlsLookup::Wait {
                msn: 1,
                part: Some(2)
            }
        ));
    }

    #[test]
    fn blocking_reload_for_an_evicted_segment_returns_the_playlist() {
        let mut p = packager(Variant::Fmp4LowLatency);
        run(&mut p, &av(0, 20_100, 25, 25));
        let snapshot = p.snapshot();
        assert!(snapshot.find_segment(0).is_none());
        assert!(matches!(
            snapshot.lookup("/ll.m3u8", "_HLS_msn=0&_HLS_part=3"),
            HlsLookup::Ready {
                cache_control: CacheControl::BlockingPlaylist { .. },
                ..
            }
        ));
        assert!(matches!(
            snapshot.lookup("/ll.m3u8", "_HLS_msn=0"),
            HlsLookup::Ready { .. }
        ));
    }

    #[test]
    fn part_and_segment_requests_wait_for_the_hint_and_refuse_the_rest() {
        let p = blocking_state();
        let snapshot = p.snapshot();
        let hint = media(&p).preload_hint_part.unwrap();
        assert_eq!(hint, "p/1.2.m4s");
        // Part 1.1 holds exactly the frames of [2320, 2640), in decode order.
        let expected: String = av(0, 2_641, 25, 25)
            .iter()
            .filter(|f| (2_320..2_640).contains(&f.dts_ms))
            .map(|f| match f.track() {
                Track::Video => format!("v{},", f.dts_ms),
                _ => format!("a{},", f.dts_ms),
            })
            .collect();
        assert_eq!(
            body(snapshot.lookup("/p/1.1.m4s", "")),
            format!("{expected}>2640;")
        );
        assert!(body(snapshot.lookup("/p/0.6.m4s", "")).ends_with(">2000;"));
        assert!(body(snapshot.lookup("/s/0.m4s", "")).starts_with("S|v0k,"));
        let cases = [
            (
                "/p/1.2.m4s",
                HlsLookup::Wait {
                    msn: 1,
                    part: Some(2),
                },
            ),
            (
                "/p/1.10.m4s",
                HlsLookup::Wait {
                    msn: 1,
                    part: Some(10),
                },
            ),
            (
                "/p/2.0.m4s",
                HlsLookup::Wait {
                    msn: 2,
                    part: Some(0),
                },
            ),
            ("/p/1.11.m4s", HlsLookup::NotFound),
            ("/p/0.7.m4s", HlsLookup::NotFound),
            ("/p/3.0.m4s", HlsLookup::NotFound),
            ("/s/1.m4s", HlsLookup::Wait { msn: 1, part: None }),
            ("/s/2.m4s", HlsLookup::NotFound),
            ("/p/1.m4s", HlsLookup::NotFound),
            ("/p/01.0.m4s", HlsLookup::NotFound),
            ("/init-0.mp4", HlsLookup::NotFound),
            ("/ts.m3u8", HlsLookup::NotFound),
            ("/nope", HlsLookup::NotFound),
        ];
        for (rest, expected) in cases {
            assert_eq!(snapshot.lookup(rest, ""), expected, "{rest}");
        }
        match snapshot.lookup("/p/1.1.m4s", "") {
            HlsLookup::Ready {
                content_type,
                cache_control,
                ..
            } => {
                assert_eq!(
                    (content_type, cache_control),
                    ("video/mp4", CacheControl::Immutable)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_is_served_before_the_first_output_but_playlists_wait() {
        let p = packager(Variant::Fmp4LowLatency);
        let snapshot = p.snapshot();
        assert_eq!(
            snapshot.lookup("/ll.m3u8", ""),
            HlsLookup::Wait { msn: 0, part: None }
        );
        assert_eq!(
            snapshot.lookup("/index.m3u8", ""),
            HlsLookup::Wait { msn: 0, part: None }
        );
        assert_eq!(
            snapshot.lookup("/ll.m3u8", "_HLS_msn=0&_HLS_part=0"),
            HlsLookup::Wait {
                msn: 0,
                part: Some(0)
            }
        );
        assert!(matches!(
            snapshot.lookup("/ll.m3u8", "_HLS_msn=2"),
            HlsLookup::BadRequest(_)
        ));
        assert_eq!(snapshot.lookup("/init.mp4", ""), HlsLookup::NotFound);
    }

    #[test]
    fn end_of_stream_adds_endlist_and_stops_blocking() {
        let mut p = blocking_state();
        let update = p.end_of_stream().unwrap();
        assert_eq!((update.segment, update.ended), (Some(1), true));
        assert_eq!(p.end_of_stream(), None);
        let playlist = media(&p);
        assert!(playlist.end_list && playlist.preload_hint_part.is_none());
        let snapshot = p.snapshot();
        // Directives are ignored with EXT-X-ENDLIST.
        assert!(matches!(
            snapshot.lookup("/ll.m3u8", "_HLS_msn=9&_HLS_part=0"),
            HlsLookup::Ready {
                cache_control: CacheControl::Playlist,
                ..
            }
        ));
        assert_eq!(snapshot.lookup("/p/2.0.m4s", ""), HlsLookup::NotFound);
        assert_eq!(snapshot.lookup("/s/2.m4s", ""), HlsLookup::NotFound);
        assert!(matches!(
            p.push(&video(5_000, true), EPOCH_MS),
            Err(HlsError::Ended { .. })
        ));

        // A new publish of the same key continues the numbering, after a discontinuity.
        let point = p.resume_point();
        let mut next = Packager::resume(
            key(),
            Variant::Fmp4LowLatency,
            FakeMuxer::fmp4(),
            HlsConfig::default(),
            point,
        )
        .unwrap();
        next.push(&config_frame(Track::Video, "avc-1"), EPOCH_MS)
            .unwrap();
        next.push(&config_frame(Track::Audio, "aac-1"), EPOCH_MS)
            .unwrap();
        run(&mut next, &av(0, 2_100, 25, 25));
        let playlist = media(&next);
        assert_eq!(playlist.media_sequence, 2);
        assert_eq!(playlist.discontinuity_sequence, 1);
        assert_eq!(
            playlist.segments[0].map_uri.as_deref(),
            Some("init-1.mp4"),
            "init URLs are not reused either"
        );
        assert!(playlist.segments[0].program_date_time_ms.unwrap() >= EPOCH_MS + 2_680);
    }

    #[test]
    fn muxer_errors_drop_the_frame_without_losing_updates() {
        let mut p =
            Packager::new(key(), Variant::Ts, FakeMuxer::ts(), HlsConfig::default()).unwrap();
        // Media before its config: the muxer refuses it, the packager carries on.
        let err = p.push(&video(0, true), EPOCH_MS).unwrap_err();
        assert!(
            matches!(
                err,
                HlsError::Mux {
                    source: MuxError::MissingConfig { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("live/cam"), "{err}");
        p.push(&config_frame(Track::Video, "avc-1"), EPOCH_MS)
            .unwrap();
        p.push(&config_frame(Track::Audio, "aac-1"), EPOCH_MS)
            .unwrap();
        let updates = run(&mut p, &av(0, 4_100, 25, 25));
        assert_eq!(
            updates.iter().filter_map(|u| u.segment).collect::<Vec<_>>(),
            [0, 1]
        );
    }

    #[test]
    fn ll_without_an_init_segment_refuses_to_start() {
        let mut p = Packager::new(
            key(),
            Variant::Fmp4LowLatency,
            FakeMuxer::fmp4(),
            HlsConfig::default(),
        )
        .unwrap();
        assert!(matches!(
            p.push(&video(0, true), EPOCH_MS),
            Err(HlsError::NoInitSegment { .. })
        ));
        assert!(p.open.is_none());
    }

    #[test]
    fn timestamp_jumps_become_discontinuities() {
        let mut p = packager(Variant::Ts);
        run(&mut p, &av(0, 3_000, 25, 25)); // segment 0, and 1 cut short by the jump
        run(&mut p, &av(60_000, 64_100, 25, 25)); // one minute forward: 2, 3 and 4
        run(&mut p, &av(1_000, 5_100, 25, 25)); // and back: 5 and 6
        let playlist = media(&p);
        assert_eq!(playlist.media_sequence, 1);
        let flags: Vec<bool> = playlist.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(flags, [false, true, false, false, true, false]);
        assert!(
            complete(&playlist).iter().all(|(d, _)| *d <= 2000),
            "{playlist:?}"
        );
    }

    #[test]
    fn a_missing_keyframe_cannot_grow_a_segment_without_bound() {
        let mut p = packager(Variant::Ts);
        let mut frames = av(0, 40_000, 25, 2_000); // one keyframe only
        frames.extend(av(40_000, 42_100, 25, 25));
        run(&mut p, &frames);
        let playlist = media(&p);
        assert_eq!(complete(&playlist)[0].0, 30_000);
        assert!(playlist.segments[1].discontinuity);
        assert!(body(p.snapshot().lookup("/ts/1.ts", "")).starts_with("S|v40000k,"));
    }

    #[test]
    fn multivariant_playlists_describe_the_variant() {
        let mut ts = packager(Variant::Ts);
        ts.set_variant_info(VariantInfo {
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30_000.0 / 1001.0),
            bandwidth_bps: Some(10),
        });
        run(&mut ts, &av(0, 4_100, 25, 25));
        let text = body(ts.snapshot().lookup(".m3u8", ""));
        let playlist = parse_multivariant_playlist(&text).unwrap();
        let variant = &playlist.variants[0];
        assert_eq!(variant.uri, "cam/ts.m3u8", "relative to /live/cam.m3u8");
        assert_eq!(variant.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(
            (variant.resolution, variant.frame_rate_millis),
            (Some((1280, 720)), Some(29_970))
        );
        // Measured from the fake muxer's bytes: above the declared 10 bit/s.
        let seg_bits =
            |msn: u64| body(ts.snapshot().lookup(&format!("/ts/{msn}.ts"), "")).len() as u64 * 8;
        assert_eq!(
            variant.bandwidth_bps,
            seg_bits(0).max(seg_bits(1)) * 1000 / 2000
        );
        assert_eq!(
            variant.average_bandwidth_bps,
            Some((seg_bits(0) + seg_bits(1)) * 1000 / 4000)
        );

        let ll = blocking_state();
        let playlist =
            parse_multivariant_playlist(&body(ll.snapshot().lookup("/index.m3u8", ""))).unwrap();
        assert_eq!(playlist.variants[0].uri, "ll.m3u8");
        assert_eq!(
            playlist.variants[0].codecs, None,
            "unknown codecs are left out"
        );
        assert_eq!(ll.snapshot().lookup(".m3u8", ""), HlsLookup::NotFound);
    }

    #[test]
    fn config_is_validated() {
        let bad = [
            HlsConfig {
                segment_target_ms: 100,
                ..HlsConfig::default()
            },
            HlsConfig {
                part_target_ms: 50,
                ..HlsConfig::default()
            },
            HlsConfig {
                part_target_ms: 1500,
                ..HlsConfig::default()
            },
            HlsConfig {
                window_segments: 2,
                ..HlsConfig::default()
            },
            HlsConfig {
                max_segment_ms: 3000,
                ..HlsConfig::default()
            },
        ];
        for config in bad {
            let result = Packager::new(key(), Variant::Ts, FakeMuxer::ts(), config.clone());
            assert!(
                matches!(result, Err(HlsError::InvalidConfig { .. })),
                "{config:?}"
            );
        }
    }

    #[test]
    fn routes_paths_to_variants() {
        for (rest, variant) in [
            (".m3u8", Some(Variant::Ts)),
            ("/ts.m3u8", Some(Variant::Ts)),
            ("/ts/3.ts", Some(Variant::Ts)),
            ("/index.m3u8", Some(Variant::Fmp4LowLatency)),
            ("/ll.m3u8", Some(Variant::Fmp4LowLatency)),
            ("/init-2.mp4", Some(Variant::Fmp4LowLatency)),
            ("/s/3.m4s", Some(Variant::Fmp4LowLatency)),
            ("/p/3.1.m4s", Some(Variant::Fmp4LowLatency)),
            (".flv", None),
            ("/other.m3u8", None),
        ] {
            assert_eq!(Variant::for_path(rest), variant, "{rest}");
        }
    }

    #[test]
    fn golden_playlists() {
        let mut ts = packager(Variant::Ts);
        ts.set_variant_info(VariantInfo {
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(25.0),
            bandwidth_bps: Some(2_500_000),
        });
        run(&mut ts, &av(0, 10_100, 25, 25));
        ts.discontinuity();
        for f in av(0, 8_100, 25, 25) {
            ts.push(&f, EPOCH_MS + 30_000 + f.dts_ms).unwrap();
        }
        let snapshot = ts.snapshot();
        check_golden(
            "ts.m3u8",
            &body(snapshot.lookup("/ts.m3u8", "")).into_bytes(),
        );
        check_golden(
            "ts-multivariant.m3u8",
            &body(snapshot.lookup(".m3u8", "")).into_bytes(),
        );

        let mut ll = packager(Variant::Fmp4LowLatency);
        ll.set_variant_info(VariantInfo {
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1920, 1080)),
            frame_rate: Some(30.0),
            bandwidth_bps: None,
        });
        run(&mut ll, &av(0, 8_700, 30, 60));
        let snapshot = ll.snapshot();
        check_golden(
            "ll.m3u8",
            &body(snapshot.lookup("/ll.m3u8", "")).into_bytes(),
        );
        check_golden(
            "ll-index.m3u8",
            &body(snapshot.lookup("/index.m3u8", "")).into_bytes(),
        );
        ll.end_of_stream();
        check_golden(
            "ll-ended.m3u8",
            &body(ll.snapshot().lookup("/ll.m3u8", "")).into_bytes(),
        );
    }
}
