//! The publish ledger and per-viewer accounting against it.
//!
//! Latency is measured without touching the media: the publisher records the wall time
//! at which it wrote each media frame, keyed by (tag kind, timestamp), and a viewer that
//! receives a frame looks that key up. Publisher and viewers live in one process, so they
//! share one monotonic clock. The publisher loops its file with increasing timestamps,
//! so a key is never reused within a run.
//!
//! Only coded frames (not codec configs or metadata) are in the ledger: servers resend
//! configs to every joiner, so they are not "frames sent" in the sense of the count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use proto::flv::TagKind;

/// One published media frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// Position in publish order, from 0.
    pub seq: u64,
    pub at: Instant,
    /// Payload bytes published before this frame.
    pub bytes_before: u64,
}

/// What the publisher sent, and when.
#[derive(Debug, Default)]
pub struct Ledger {
    frames: HashMap<(TagKind, u32), Published>,
    /// Payload bytes published before frame `seq`, indexed by `seq`.
    bytes_before: Vec<u64>,
    published: u64,
    published_bytes: u64,
}

impl Ledger {
    /// Records a media frame written at `at`; returns its sequence number.
    pub fn record(
        &mut self,
        kind: TagKind,
        timestamp_ms: u32,
        body_len: usize,
        at: Instant,
    ) -> u64 {
        let seq = self.published;
        self.frames.insert(
            (kind, timestamp_ms),
            Published {
                seq,
                at,
                bytes_before: self.published_bytes,
            },
        );
        self.bytes_before.push(self.published_bytes);
        self.published += 1;
        self.published_bytes += body_len as u64;
        seq
    }

    pub fn lookup(&self, kind: TagKind, timestamp_ms: u32) -> Option<Published> {
        self.frames.get(&(kind, timestamp_ms)).copied()
    }

    /// Media frames published so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Payload bytes of the media frames published so far.
    pub fn published_bytes(&self) -> u64 {
        self.published_bytes
    }
}

/// Histograms shared by all viewers of one protocol (one per viewer would cost tens of
/// KiB each). Values in microseconds.
pub struct Histograms {
    pub latency_us: Histogram<u64>,
    pub startup_us: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid");
        Histograms {
            latency_us: h(),
            startup_us: h(),
        }
    }
}

/// Saturating microseconds for the histograms (which clamp at their upper bound).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One viewer's counts.
#[derive(Clone, Debug)]
pub struct Tally {
    pub connect_at: Instant,
    pub first_keyframe_at: Option<Instant>,
    /// Sequence number of the first keyframe received: the viewer's window starts there.
    pub first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// Media frames received that are in the ledger, and their payload bytes.
    pub frames: u64,
    pub bytes: u64,
    /// Media frames that are not in the ledger (a server that rewrote timestamps).
    pub unknown: u64,
    /// Frames that arrived with a sequence number at or below one already seen, or
    /// before the window; not counted in `frames`.
    pub out_of_order: u64,
    /// Media frames that arrived before the first keyframe.
    pub before_keyframe: u64,
}

impl Tally {
    pub fn new(connect_at: Instant) -> Self {
        Tally {
            connect_at,
            first_keyframe_at: None,
            first_seq: None,
            last_seq: None,
            frames: 0,
            bytes: 0,
            unknown: 0,
            out_of_order: 0,
            before_keyframe: 0,
        }
    }

    /// A coded media frame arrived at `now`.
    // The frame's fields come straight from the parser; a struct for them would only
    // be built to be taken apart here, once per frame per viewer.
    #[allow(clippy::too_many_arguments)]
    pub fn on_media(
        &mut self,
        now: Instant,
        kind: TagKind,
        timestamp_ms: u32,
        body_len: usize,
        keyframe: bool,
        ledger: &Ledger,
        hist: &mut Histograms,
    ) {
        let Some(p) = ledger.lookup(kind, timestamp_ms) else {
            self.unknown += 1;
            return;
        };
        if keyframe && self.first_keyframe_at.is_none() {
            self.first_keyframe_at = Some(now);
            self.first_seq = Some(p.seq);
            let _ = hist
                .startup_us
                .record(micros(now.saturating_duration_since(self.connect_at)));
        }
        // A player starts at a keyframe (servers without a GOP cache drop video until
        // one, so audio before it proves nothing either way): count from there.
        let Some(first) = self.first_seq else {
            self.before_keyframe += 1;
            return;
        };
        if p.seq < first || self.last_seq.is_some_and(|last| p.seq <= last) {
            self.out_of_order += 1;
            return;
        }
        self.last_seq = Some(p.seq);
        self.frames += 1;
        self.bytes += body_len as u64;
        // Frames from the GOP cache were published before this viewer asked for them:
        // their age is not latency through the server.
        if p.at >= self.connect_at {
            let _ = hist
                .latency_us
                .record(micros(now.saturating_duration_since(p.at)));
        }
    }

    /// Frames and payload bytes the viewer should have received: everything published
    /// from its first frame on.
    pub fn expected(&self, ledger: &Ledger) -> (u64, u64) {
        let Some(first) = self.first_seq else {
            return (0, 0);
        };
        let bytes_before = usize::try_from(first)
            .ok()
            .and_then(|i| ledger.bytes_before.get(i).copied())
            .unwrap_or(0);
        (
            ledger.published() - first,
            ledger.published_bytes() - bytes_before,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_at_the_first_frame_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        for i in 0..10u32 {
            ledger.record(
                TagKind::Video,
                i * 33,
                100 + i as usize,
                t0 + Duration::from_millis(u64::from(i) * 33),
            );
        }
        let mut hist = Histograms::default();
        // joins between frames 3 and 4; the GOP cache hands it frame 2 onwards
        let mut tally = Tally::new(t0 + Duration::from_millis(100));
        let now = t0 + Duration::from_millis(400);
        for i in 2..10u32 {
            tally.on_media(
                now,
                TagKind::Video,
                i * 33,
                100 + i as usize,
                i == 2,
                &ledger,
                &mut hist,
            );
        }
        assert_eq!(tally.first_seq, Some(2));
        assert_eq!(tally.frames, 8);
        assert_eq!(tally.expected(&ledger), (8, (2..10).map(|i| 100 + i).sum()));
        assert_eq!(tally.bytes, (2..10).map(|i| 100 + i).sum::<u64>());
        assert_eq!(hist.startup_us.len(), 1);
        assert!(
            (299_000..=301_000).contains(&hist.startup_us.max()),
            "{}",
            hist.startup_us.max()
        );
        // frames 4..9 were published after the connect: 6 latency samples
        assert_eq!(hist.latency_us.len(), 6);
        assert_eq!(tally.out_of_order, 0);
    }

    #[test]
    fn unknown_and_repeated_frames_are_counted_apart() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        ledger.record(TagKind::Audio, 0, 10, t0);
        ledger.record(TagKind::Audio, 23, 10, t0);
        let mut hist = Histograms::default();
        let mut tally = Tally::new(t0);
        ledger.record(TagKind::Video, 30, 10, t0);
        ledger.record(TagKind::Audio, 46, 10, t0);
        tally.on_media(t0, TagKind::Audio, 23, 10, false, &ledger, &mut hist);
        assert_eq!(tally.before_keyframe, 1);
        assert_eq!(tally.first_keyframe_at, None);
        tally.on_media(t0, TagKind::Video, 30, 10, true, &ledger, &mut hist);
        tally.on_media(t0, TagKind::Audio, 0, 10, false, &ledger, &mut hist);
        tally.on_media(t0, TagKind::Video, 30, 10, false, &ledger, &mut hist);
        tally.on_media(t0, TagKind::Video, 99, 10, false, &ledger, &mut hist);
        tally.on_media(t0, TagKind::Audio, 46, 10, false, &ledger, &mut hist);
        assert_eq!(tally.unknown, 1);
        assert_eq!(tally.out_of_order, 2);
        assert_eq!(tally.frames, 2);
        assert_eq!(tally.expected(&ledger), (2, 20));
        assert_eq!(hist.startup_us.len(), 1);
    }

    #[test]
    fn a_viewer_with_no_frames_expects_none() {
        let mut ledger = Ledger::default();
        ledger.record(TagKind::Video, 0, 10, Instant::now());
        assert_eq!(Tally::new(Instant::now()).expected(&ledger), (0, 0));
    }
}
