//! When a ring's subscribers are woken: the write pacer of one ring (owned or mirror).
//!
//! Each wake makes every waiting subscriber write what it has in one go, so fewer wakes
//! mean fewer, fuller writes. The rules, with `delay` the shard's current write delay:
//! - a **video** item wakes at once if the last wake was at least `delay` ago, otherwise
//!   it ensures a wake at `last_wake + delay`;
//! - any other item (audio, data) never wakes at once; it ensures a wake no later than
//!   `push_time + delay`, so audio rides with the next video frame within the budget;
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
            Some(last) if now < last + delay => self.ensure(last + delay),
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

    #[test]
    fn video_only_wakes_at_most_once_per_delay() {
        let t0 = Instant::now();
        let d = 20 * MS;
        let mut p = Pacer::default();
        assert_eq!(p.on_push(t0, true, d), Pace::WakeNow, "first frame at once");
        assert_eq!(p.on_push(t0 + 5 * MS, true, d), Pace::WakeAt(t0 + d));
        assert_eq!(p.on_push(t0 + 10 * MS, true, d), Pace::Armed);
        assert!(!p.handle_timeout(t0 + 19 * MS));
        assert!(p.handle_timeout(t0 + 20 * MS));
        assert_eq!(p.armed(), None);
        // 40 ms after the last wake (at 20): at once again.
        assert_eq!(p.on_push(t0 + 60 * MS, true, d), Pace::WakeNow);
        assert_eq!(
            p.on_push(t0 + 80 * MS, true, d),
            Pace::WakeNow,
            "exactly delay later"
        );
    }

    #[test]
    fn audio_between_video_rides_with_the_next_frame() {
        let t0 = Instant::now();
        let d = 40 * MS;
        let mut p = Pacer::default();
        assert_eq!(p.on_push(t0, true, d), Pace::WakeNow);
        // Audio never wakes at once, even long after the last wake.
        assert_eq!(
            p.on_push(t0 + 50 * MS, false, d),
            Pace::WakeAt(t0 + 90 * MS)
        );
        assert_eq!(
            p.on_push(t0 + 60 * MS, false, d),
            Pace::Armed,
            "earlier wake kept"
        );
        // The next video frame, past the budget since the last wake, takes the audio along.
        assert_eq!(p.on_push(t0 + 66 * MS, true, d), Pace::WakeNow);
        assert_eq!(p.armed(), None);
        assert!(!p.handle_timeout(t0 + 90 * MS), "nothing left to wake for");
        // Video within the budget: the wake is due at last + delay (106); a later audio
        // push does not postpone it.
        assert_eq!(
            p.on_push(t0 + 70 * MS, true, d),
            Pace::WakeAt(t0 + 106 * MS)
        );
        assert_eq!(p.on_push(t0 + 75 * MS, false, d), Pace::Armed);
        assert!(p.handle_timeout(t0 + 106 * MS));
    }

    #[test]
    fn zero_delay_wakes_on_every_push() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        for (i, video) in [true, false, false, true, true].into_iter().enumerate() {
            assert_eq!(
                p.on_push(t0 + i as u32 * MS, video, Duration::ZERO),
                Pace::WakeNow
            );
        }
        assert_eq!(p.armed(), None);
    }

    #[test]
    fn delay_change_applies_to_the_next_push() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.on_push(t0, true, 10 * MS), Pace::WakeNow);
        // Stretched under load: video 15 ms after the last wake now waits.
        assert_eq!(
            p.on_push(t0 + 15 * MS, true, 50 * MS),
            Pace::WakeAt(t0 + 50 * MS)
        );
        // Shrunk again: an earlier deadline replaces the armed one.
        assert_eq!(
            p.on_push(t0 + 16 * MS, true, 20 * MS),
            Pace::WakeAt(t0 + 20 * MS)
        );
        assert!(p.handle_timeout(t0 + 20 * MS));
        // Turned off: at once, and any armed wake is dropped.
        assert_eq!(
            p.on_push(t0 + 21 * MS, false, 30 * MS),
            Pace::WakeAt(t0 + 51 * MS)
        );
        assert_eq!(p.on_push(t0 + 22 * MS, true, Duration::ZERO), Pace::WakeNow);
        assert_eq!(p.armed(), None);
    }
}
