//! Write pacing of one ring's subscribers: when a push wakes them.
//!
//! CPU per viewer follows writes (each one a TCP segment, a receiver wake-up and a task
//! wake-up), not bytes, so subscribers are woken once for several items where the
//! latency budget allows. The rules, for a budget `d`:
//! - a **video** item wakes at once when the last wake is at least `d / 2` old;
//!   otherwise at `last wake + d / 2`. So video is never held longer than half the
//!   budget, and writes happen at most every `d / 2`;
//! - any other item (audio, data) wakes no later than `push + d`: it rides with the next
//!   video frame when one comes within the budget (at 30 fps, every 33 ms), so a stream's
//!   viewers are written to about once per video frame instead of once per frame;
//! - an earlier scheduled wake is kept; `d == 0` wakes at every push.
//!
//! Sans-IO: the hub passes `now` and arms one timer per ring for [`Pacer::deadline`].

use std::time::{Duration, Instant};

/// What the caller does after a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Wake the subscribers now.
    WakeNow,
    /// Make sure a wake happens at this instant (a timer); one may be armed already.
    WakeAt(Instant),
}

#[derive(Clone, Debug)]
pub struct Pacer {
    last_wake: Option<Instant>,
    /// The wake scheduled for later, if any.
    due: Option<Instant>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            last_wake: None,
            due: None,
        }
    }

    /// An item was pushed at `now`.
    pub fn on_push(&mut self, now: Instant, video: bool, budget: Duration) -> Pace {
        if budget.is_zero() {
            return self.woke(now);
        }
        let at = if video {
            match self.last_wake {
                Some(last) if now < last + budget / 2 => last + budget / 2,
                _ => return self.woke(now),
            }
        } else {
            now + budget
        };
        let at = self.due.map_or(at, |due| due.min(at));
        self.due = Some(at);
        Pace::WakeAt(at)
    }

    /// The scheduled wake, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// The timer fired at `now`: true when the subscribers must be woken (the wake was
    /// not already done by a video push, nor moved later).
    pub fn on_timer(&mut self, now: Instant) -> bool {
        match self.due {
            Some(due) if due <= now => {
                self.woke(now);
                true
            }
            _ => false,
        }
    }

    fn woke(&mut self, now: Instant) -> Pace {
        self.last_wake = Some(now);
        self.due = None;
        Pace::WakeNow
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
        let mut p = Pacer::new();
        let mut out = Vec::new();
        for &(ms, video) in pushes {
            while let Some(due) = p.deadline().filter(|d| *d <= at(ms)) {
                assert!(p.on_timer(due));
                out.push(due.duration_since(t0).as_millis() as u64);
            }
            if p.on_push(at(ms), video, Duration::from_millis(budget_ms)) == Pace::WakeNow {
                out.push(ms);
            }
        }
        if let Some(due) = p.deadline() {
            assert!(p.on_timer(due));
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
        let mut p = Pacer::new();
        assert_eq!(p.on_push(t0, true, 40 * MS), Pace::WakeNow);
        let due = match p.on_push(t0 + 5 * MS, false, 40 * MS) {
            Pace::WakeAt(at) => at,
            other => panic!("audio waits: {other:?}"),
        };
        assert_eq!(p.on_push(t0 + 33 * MS, true, 40 * MS), Pace::WakeNow);
        assert!(!p.on_timer(due), "the video wake already carried the audio");
    }
}
