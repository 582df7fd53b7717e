//! When a ring's subscribers are woken: the write pacer of one ring (owned or mirror).
//!
//! Each wake makes every waiting subscriber write what it has in one go, so fewer wakes
//! mean fewer, fuller writes. The rules, with `delay` the shard's current write delay:
//! - a **video** item wakes at once if the last wake was at least `delay / 2` ago,
//!   otherwise it ensures a wake at `last_wake + delay / 2`: video is never held longer
//!   than half the budget, and a ring is woken at most every `delay / 2`;
//! - any other item (audio, data) never wakes at once; it ensures a wake no later than
//!   `push_time + delay`, so audio rides with the next video frame within the budget (at
//!   30 fps and the default 40 ms: one wake per video frame instead of one per frame).
//!
//! Why half: with a full budget between wakes, an audio deadline that fires just before
//! a video frame would hold that frame for most of a budget (measured: p99 +15 ms at
//! 1,000 viewers); half a budget keeps video prompt and still merges audio into it.
//! - an already-armed earlier wake is kept; `delay == 0` wakes at every push.
//!
//! Config items and keyframes follow the same rules (by their track). Plain state, no
//! clock: the hub core passes `now` and owns the one timer per ring.

use std::time::{Duration, Instant};

/// What a push asks of the ring's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Wake the subscribers now.
    WakeNow,
    /// A wake is (newly) due at this time: arm the ring's timer.
    WakeAt(Instant),
    /// An earlier wake is already armed.
    Armed,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Pacer {
    last_wake: Option<Instant>,
    armed: Option<Instant>,
}

impl Pacer {
    /// One item was pushed at `now`.
    pub fn on_push(&mut self, now: Instant, is_video: bool, delay: Duration) -> Pace {
        if delay.is_zero() {
            self.woke(now);
            return Pace::WakeNow;
        }
        if !is_video {
            return self.ensure(now + delay);
        }
        match self.last_wake {
            Some(last) if now < last + delay / 2 => self.ensure(last + delay / 2),
            _ => {
                self.woke(now);
                Pace::WakeNow
            }
        }
    }

    /// The armed wake, if any.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// The ring's timer fired at `now`: true when the subscribers are to be woken.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.armed.is_some_and(|at| at <= now) {
            self.woke(now);
            return true;
        }
        false
    }

    fn ensure(&mut self, at: Instant) -> Pace {
        match self.armed {
            Some(armed) if armed <= at => Pace::Armed,
            _ => {
                self.armed = Some(at);
                Pace::WakeAt(at)
            }
        }
    }

    fn woke(&mut self, now: Instant) {
        self.last_wake = Some(now);
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Replays pushes (time in ms, video?) through a pacer with a fake clock, firing the
    /// timer when due; returns the wake times.
    fn wakes(budget_ms: u64, pushes: &[(u64, bool)]) -> Vec<u64> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = Pacer::default();
        let mut out = Vec::new();
        for &(ms, video) in pushes {
            while let Some(due) = p.armed().filter(|d| *d <= at(ms)) {
                assert!(p.handle_timeout(due));
                out.push(due.duration_since(t0).as_millis() as u64);
            }
            if p.on_push(at(ms), video, Duration::from_millis(budget_ms)) == Pace::WakeNow {
                out.push(ms);
            }
        }
        if let Some(due) = p.armed() {
            assert!(p.handle_timeout(due));
            out.push(due.duration_since(t0).as_millis() as u64);
        }
        out
    }

    /// 30 fps video and 43 audio frames per second (AAC at 44.1 kHz), 1 s, and the
    /// first video frame of the next second.
    fn av_second() -> Vec<(u64, bool)> {
        let mut v: Vec<(u64, bool)> = (0..=30).map(|i| (i * 1000 / 30, true)).collect();
        v.extend((0..43).map(|i| (i * 1024 * 1000 / 44100 + 1, false)));
        v.sort();
        v
    }

    #[test]
    fn audio_rides_with_the_next_video_frame() {
        let w = wakes(40, &av_second());
        assert_eq!(w.len(), 31, "one write per video frame: {w:?}");
        let video: Vec<u64> = (0..=30).map(|i| i * 1000 / 30).collect();
        assert_eq!(
            w, video,
            "video is never held at 30 fps with a 40 ms budget"
        );
    }

    #[test]
    fn no_frame_waits_longer_than_the_budget() {
        for budget in [10, 20, 33, 40, 60, 100] {
            let pushes = av_second();
            let w = wakes(budget, &pushes);
            for &(ms, video) in &pushes {
                let next = w
                    .iter()
                    .find(|&&t| t >= ms)
                    .expect("every push is followed by a wake");
                let limit = if video { budget / 2 } else { budget };
                assert!(
                    next - ms <= limit,
                    "budget {budget}: frame at {ms} waited {}",
                    next - ms
                );
            }
            for pair in w.windows(2) {
                assert!(
                    pair[1] - pair[0] >= budget / 2,
                    "budget {budget}: wakes {pair:?}"
                );
            }
        }
    }

    #[test]
    fn a_large_budget_batches_video_frames_too() {
        let w = wakes(100, &av_second());
        assert!(
            w.len() <= 22,
            "at most one wake per 50 ms over 1.03 s: {} wakes",
            w.len()
        );
        for pair in w.windows(2) {
            assert!(
                pair[1] - pair[0] >= 33,
                "wakes at least a frame apart: {w:?}"
            );
        }
    }

    #[test]
    fn a_zero_budget_wakes_at_every_push() {
        let pushes = av_second();
        assert_eq!(wakes(0, &pushes).len(), pushes.len());
    }

    #[test]
    fn audio_only_is_written_once_per_budget() {
        let pushes: Vec<(u64, bool)> = (0..43).map(|i| (i * 1024 * 1000 / 44100, false)).collect();
        let w = wakes(50, &pushes);
        // Each wake carries the audio of the budget since the first frame that waited:
        // about one wake per budget plus one frame.
        assert!((14..=20).contains(&w.len()), "{} wakes", w.len());
    }

    #[test]
    fn a_stale_timer_does_not_wake_twice() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.on_push(t0, true, 40 * MS), Pace::WakeNow);
        let due = match p.on_push(t0 + 5 * MS, false, 40 * MS) {
            Pace::WakeAt(at) => at,
            other => panic!("audio waits: {other:?}"),
        };
        assert_eq!(p.on_push(t0 + 33 * MS, true, 40 * MS), Pace::WakeNow);
        assert!(
            !p.handle_timeout(due),
            "the video wake already carried the audio"
        );
    }
}
