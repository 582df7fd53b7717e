//! Ingest timestamp normalization: a publisher's 32-bit millisecond message timestamps in,
//! the stream's monotonic u64 `dts_ms` out.
//!
//! What it fixes, per stream (one [`Timeline`] per published stream, kept across
//! publisher reconnects):
//! - 32-bit wrap-around (every 49.7 days, or sooner for encoders that start near the top):
//!   extended by unwrapping each message against the previous one of its track.
//! - Small backward steps from broken encoders: clamped to the track's last dts (counted).
//!   Audio and video are tracked separately, so ordinary A/V interleaving, where one track
//!   runs a few hundred ms behind the other, passes through untouched.
//! - Discontinuities: a track whose time lands more than `max_forward_jump_ms` ahead of, or
//!   `max_backward_jump_ms` behind, the stream's head (the highest dts of any track) is
//!   re-based to continue one frame interval after the head (counted). Comparing with the
//!   stream rather than the track itself keeps A/V in step: after an encoder restart both
//!   tracks land next to each other.
//! - Republish: [`Timeline::republish`] makes the next publisher's first message continue
//!   one frame interval after the head, whatever its timestamps start at; its tracks keep
//!   their relative offsets.
//!
//! A clean stream passes through unchanged: the first publisher's timestamps are kept as
//! they are (no re-basing to zero), so logs and captures match what the encoder sent.
//! Script data does not move the timeline (`onMetaData` often carries timestamp 0 in the
//! middle of a stream): it gets the current head.
//!
//! Pure and sans-IO; the driver logs from [`Timeline::counters`] when a counter changes.

use super::Track;

/// Thresholds of a [`Timeline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineConfig {
    /// A track more than this far ahead of the stream head is re-based.
    pub max_forward_jump_ms: u64,
    /// A track more than this far behind the stream head is re-based; closer than that it
    /// is clamped to its own last dts. Must exceed the largest A/V skew of real encoders.
    pub max_backward_jump_ms: u64,
    /// The gap left before a re-based or republished track when its frame interval is
    /// not known yet.
    pub default_gap_ms: u64,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            max_forward_jump_ms: 10_000,
            max_backward_jump_ms: 2_000,
            default_gap_ms: 20,
        }
    }
}

/// What the timeline had to correct so far. Counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimelineCounters {
    /// 32-bit timestamp wrap-arounds extended.
    pub wraps: u64,
    /// Messages whose dts was raised to their track's previous dts.
    pub clamped: u64,
    /// Tracks re-based after a jump forward beyond `max_forward_jump_ms`.
    pub forward_rebases: u64,
    /// Tracks re-based after a jump backward beyond `max_backward_jump_ms`.
    pub backward_rebases: u64,
    /// Calls to [`Timeline::republish`].
    pub republishes: u64,
}

/// Where a track's publisher timestamps are on the stream timeline.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    last_raw: u32,
    /// `last_raw` with wrap-arounds extended.
    last_extended: i64,
    /// dts = extended + offset.
    offset: i64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TrackState {
    /// `None` until the track's first message of the current publisher.
    mapping: Option<Mapping>,
    last_dts: Option<u64>,
    /// The last positive step between two messages, as the frame interval.
    interval_ms: Option<u64>,
}

/// Steps above this are pauses, not frame intervals.
const MAX_INTERVAL_MS: i64 = 1_000;

/// One stream's ingest timeline. See the module notes.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    config: TimelineConfig,
    /// Audio, video.
    tracks: [TrackState; 2],
    /// The offset for a track's first message under the current publisher, so that its
    /// tracks keep their relative timing.
    publisher_offset: Option<i64>,
    head: Option<u64>,
    counters: TimelineCounters,
}

impl Timeline {
    pub fn new(config: TimelineConfig) -> Self {
        Timeline {
            config,
            ..Default::default()
        }
    }

    /// Maps one message's publisher timestamp to the stream's dts.
    ///
    /// The result never goes backwards within a track, and never lands more than
    /// `max_forward_jump_ms` (plus one frame interval) after the stream's head.
    pub fn dts_ms(&mut self, track: Track, timestamp_ms: u32) -> u64 {
        let index = match track {
            Track::Audio => 0,
            Track::Video => 1,
            Track::Data => return self.head.unwrap_or(0),
        };
        let gap = self.tracks[index]
            .interval_ms
            .unwrap_or(self.config.default_gap_ms) as i64;
        let head = self.head.map(|h| h as i64);
        let state = &mut self.tracks[index];

        let (extended, mut offset) = match state.mapping {
            Some(m) => {
                // The signed distance to the previous message: wraps in either direction
                // come out as small steps.
                let step = i64::from(timestamp_ms.wrapping_sub(m.last_raw) as i32);
                if step > 0 && timestamp_ms < m.last_raw {
                    self.counters.wraps += 1;
                }
                if (1..=MAX_INTERVAL_MS).contains(&step) {
                    state.interval_ms = Some(step as u64);
                }
                (m.last_extended + step, m.offset)
            }
            None => {
                let extended = i64::from(timestamp_ms);
                let offset = *self.publisher_offset.get_or_insert(match head {
                    // A republished stream continues after what viewers have seen.
                    Some(h) => h + gap - extended,
                    None => 0,
                });
                (extended, offset)
            }
        };

        let mut dts = extended + offset;
        if let Some(h) = head {
            let forward = dts > h + self.config.max_forward_jump_ms as i64;
            let backward = dts < h - self.config.max_backward_jump_ms as i64;
            if forward || backward {
                if forward {
                    self.counters.forward_rebases += 1;
                } else {
                    self.counters.backward_rebases += 1;
                }
                offset = h + gap - extended;
                dts = h + gap;
            }
        }
        let floor = state.last_dts.map_or(0, |d| d as i64);
        if dts < floor {
            self.counters.clamped += 1;
            dts = floor;
        }
        let dts = dts.max(0) as u64;
        state.mapping = Some(Mapping {
            last_raw: timestamp_ms,
            last_extended: extended,
            offset,
        });
        state.last_dts = Some(dts);
        self.head = Some(self.head.map_or(dts, |h| h.max(dts)));
        dts
    }

    /// A new publisher took over the stream: its timestamps, wherever they start, continue
    /// one frame interval after the current head.
    pub fn republish(&mut self) {
        self.counters.republishes += 1;
        self.publisher_offset = None;
        for track in &mut self.tracks {
            track.mapping = None;
        }
    }

    /// The highest dts handed out so far.
    pub fn head_ms(&self) -> Option<u64> {
        self.head
    }

    pub fn counters(&self) -> TimelineCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic randomness for the property tests, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A well-behaved publisher: 25 fps video and 43 fps audio interleaved by time, with
    /// some audio sent after the next video frame when `skew` is on, starting at `start`
    /// (so 32-bit wraps happen when it is high).
    /// Yields (track, 32-bit timestamp, true extended timestamp).
    fn clean_publisher(
        rng: &mut Rng,
        start: u64,
        skew: bool,
        count: usize,
    ) -> Vec<(Track, u32, u64)> {
        let (mut video, mut audio) = (start, start);
        let mut out = Vec::new();
        while out.len() < count {
            if video <= audio {
                out.push((Track::Video, video as u32, video));
                video += 40;
            } else {
                out.push((Track::Audio, audio as u32, audio));
                audio += 23;
            }
        }
        // Delay some audio messages behind later video ones, as muxers with A/V skew do.
        for i in 1..out.len() {
            if out[i].0 == Track::Audio && out[i - 1].0 == Track::Video && skew && rng.below(3) == 0
            {
                out.swap(i, i - 1);
            }
        }
        out
    }

    fn assert_monotonic_per_track(outputs: &[(Track, u64)]) {
        for track in [Track::Audio, Track::Video] {
            let dts: Vec<u64> = outputs
                .iter()
                .filter(|(t, _)| *t == track)
                .map(|(_, d)| *d)
                .collect();
            assert!(
                dts.windows(2).all(|w| w[0] <= w[1]),
                "{track:?} went backwards: {dts:?}"
            );
        }
    }

    #[test]
    fn clean_streams_pass_through_across_wraps() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..200 {
            // Half of the rounds start just below the 32-bit wrap.
            let start = if round % 2 == 0 {
                rng.below(1 << 20)
            } else {
                (1 << 32) - rng.below(5_000) - 1
            };
            let mut tl = Timeline::default();
            let input = clean_publisher(&mut rng, start, true, 500);
            let mut outputs = Vec::new();
            for &(track, raw, truth) in &input {
                let dts = tl.dts_ms(track, raw);
                assert_eq!(
                    dts, truth,
                    "round {round}: a clean stream is passed through"
                );
                outputs.push((track, dts));
            }
            assert_monotonic_per_track(&outputs);
            let c = tl.counters();
            assert_eq!(
                (c.clamped, c.forward_rebases, c.backward_rebases),
                (0, 0, 0),
                "round {round}"
            );
            if start > u32::MAX as u64 - 10_000 {
                assert!(c.wraps >= 1, "round {round} crossed the wrap");
            }
        }
    }

    #[test]
    fn random_garbage_stays_monotonic_and_bounded() {
        let mut rng = Rng(42);
        let config = TimelineConfig::default();
        for round in 0..300 {
            let mut tl = Timeline::new(config);
            let mut outputs = Vec::new();
            let mut raw = [rng.next() as u32; 2];
            for _ in 0..400 {
                let i = rng.below(2) as usize;
                let track = [Track::Audio, Track::Video][i];
                raw[i] = match rng.below(10) {
                    0 => rng.next() as u32,                              // anything
                    1 => raw[i].wrapping_sub(rng.below(3_000) as u32),   // backwards
                    2 => raw[i].wrapping_add(rng.below(100_000) as u32), // jump ahead
                    3 if rng.below(20) == 0 => {
                        tl.republish();
                        rng.below(1_000) as u32
                    }
                    _ => raw[i].wrapping_add(rng.below(50) as u32), // normal
                };
                let before = tl.head_ms();
                let dts = tl.dts_ms(track, raw[i]);
                if let Some(head) = before {
                    assert!(
                        dts <= head + config.max_forward_jump_ms + MAX_INTERVAL_MS as u64,
                        "round {round}: jumped from head {head} to {dts}"
                    );
                }
                outputs.push((track, dts));
            }
            assert_monotonic_per_track(&outputs);
        }
    }

    #[test]
    fn small_backward_steps_are_clamped() {
        let mut tl = Timeline::default();
        assert_eq!(tl.dts_ms(Track::Video, 1000), 1000);
        assert_eq!(tl.dts_ms(Track::Video, 1040), 1040);
        assert_eq!(
            tl.dts_ms(Track::Video, 1020),
            1040,
            "clamped to the last video dts"
        );
        assert_eq!(tl.dts_ms(Track::Video, 1080), 1080, "and back on track");
        // Audio a little behind video is legitimate interleaving, not a backward step.
        assert_eq!(tl.dts_ms(Track::Audio, 900), 900);
        assert_eq!(tl.counters().clamped, 1);
    }

    #[test]
    fn jumps_are_rebased_onto_the_stream() {
        let mut tl = Timeline::default();
        for ts in (0..=400).step_by(40) {
            tl.dts_ms(Track::Video, ts);
        }
        tl.dts_ms(Track::Audio, 390);
        // The encoder jumps 1 hour ahead: continue one frame interval after the head.
        assert_eq!(tl.dts_ms(Track::Video, 3_600_000), 440);
        assert_eq!(
            tl.dts_ms(Track::Video, 3_600_040),
            480,
            "steps after the jump are kept"
        );
        // Audio jumps with it and lands next to video, not one more hour later.
        let audio = tl.dts_ms(Track::Audio, 3_600_010);
        assert!((480..=520).contains(&audio), "audio at {audio}");
        assert_eq!(tl.counters().forward_rebases, 2);

        // Encoder restart: timestamps back to 0.
        let before = tl.head_ms().unwrap();
        assert_eq!(tl.dts_ms(Track::Video, 0), before + 40);
        assert_eq!(tl.counters().backward_rebases, 1);
    }

    #[test]
    fn republish_continues_after_the_head() {
        let mut tl = Timeline::default();
        for i in 0..100u32 {
            tl.dts_ms(Track::Video, 50_000 + i * 40);
            tl.dts_ms(Track::Audio, 50_000 + i * 40 - 15);
        }
        let head = tl.head_ms().unwrap();
        assert_eq!(head, 50_000 + 99 * 40);
        tl.republish();
        // The new publisher starts at 0 with audio first, then video 0, then both run on.
        let a0 = tl.dts_ms(Track::Audio, 0);
        let v0 = tl.dts_ms(Track::Video, 0);
        let v1 = tl.dts_ms(Track::Video, 40);
        let a1 = tl.dts_ms(Track::Audio, 23);
        // One audio interval (40 ms here) after the head; the tracks keep their alignment.
        assert_eq!(a0, head + 40);
        assert_eq!((v0, v1, a1), (a0, a0 + 40, a0 + 23));
        let c = tl.counters();
        assert_eq!(
            (
                c.republishes,
                c.forward_rebases,
                c.backward_rebases,
                c.clamped
            ),
            (1, 0, 0, 0)
        );
    }

    #[test]
    fn republish_with_random_restarts_is_monotonic() {
        let mut rng = Rng(7);
        let mut tl = Timeline::default();
        let mut outputs = Vec::new();
        for _ in 0..50 {
            let start = rng.next() & 0xFFFF_FFFF;
            for (track, raw, _) in clean_publisher(&mut rng, start, true, 100) {
                outputs.push((track, tl.dts_ms(track, raw)));
            }
            let head = tl.head_ms().unwrap();
            tl.republish();
            let (track, raw, _) = clean_publisher(&mut rng, 0, false, 1)[0];
            let first = tl.dts_ms(track, raw);
            assert!(
                first > head && first <= head + MAX_INTERVAL_MS as u64,
                "continues right after {head}: {first}"
            );
            outputs.push((track, first));
        }
        assert_monotonic_per_track(&outputs);
    }

    #[test]
    fn script_data_does_not_move_the_timeline() {
        let mut tl = Timeline::default();
        assert_eq!(tl.dts_ms(Track::Data, 0), 0);
        tl.dts_ms(Track::Video, 5_000);
        assert_eq!(tl.dts_ms(Track::Data, 0), 5_000);
        assert_eq!(tl.dts_ms(Track::Video, 5_040), 5_040);
        assert_eq!(tl.counters(), TimelineCounters::default());
    }
}
