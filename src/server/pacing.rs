//! The viewer write budget of a shard, stretched under load.
//!
//! CPU per viewer follows the number of writes (TCP segments and wake-ups), not bytes
//! (bench/RESULTS.md), so a shard that is running out of CPU writes less often instead
//! of falling behind: once a second the shard's own CPU use is measured, and the budget
//! grows (up to `streams.max_write_delay_ms`) while the shard is busier than
//! [`HIGH_LOAD`], and shrinks back to `streams.write_delay_ms` once it is below
//! [`LOW_LOAD`]. The hub applies the budget per ring (see `shards::hub`): a video frame
//! wakes the ring's viewers when the last wake is at least a budget old, and audio
//! waits, up to a budget, to ride with the next video frame.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shards::rt::{self, Queue};

use crate::server::shard::Shard;

/// Above this share of a core, the budget grows.
pub const HIGH_LOAD: f64 = 0.85;
/// Below this share of a core, the budget shrinks back.
pub const LOW_LOAD: f64 = 0.60;
/// The smallest step of a stretch, so a base budget of 0 can grow.
const MIN_STEP: Duration = Duration::from_millis(5);

/// The budget policy: pure, so its steps can be tested without a shard.
#[derive(Clone, Debug)]
pub struct DelayController {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl DelayController {
    pub fn new(base: Duration, max: Duration) -> DelayController {
        DelayController {
            base,
            max: max.max(base),
            current: base,
        }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// One measurement: `load` is the shard's share of one core over the last period.
    /// Returns the budget to use from now on.
    pub fn update(&mut self, load: f64) -> Duration {
        if load > HIGH_LOAD && self.current < self.max {
            let grown = (self.current * 3 / 2).max(self.current + MIN_STEP);
            self.current = grown.min(self.max);
        } else if load < LOW_LOAD && self.current > self.base {
            let shrunk = self.current * 2 / 3;
            self.current = if shrunk < self.base + MIN_STEP / 5 {
                self.base
            } else {
                shrunk.max(self.base)
            };
        }
        self.current
    }
}

/// Start the shard's once-a-second budget controller (control queue).
pub fn start(shard: &Rc<Shard>) {
    let s = &shard.config.streams;
    let mut ctl = DelayController::new(
        Duration::from_millis(s.write_delay_ms),
        Duration::from_millis(s.max_write_delay_ms),
    );
    let publish = |shard: &Shard, delay: Duration, load: f64| {
        let m = shard.metrics();
        m.write_delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        m.load_permille
            .store((load * 1000.0) as u64, Ordering::Relaxed);
    };
    publish(shard, ctl.current(), 0.0);
    let shard = Rc::downgrade(shard);
    rt::spawn(Queue::Control, async move {
        let mut last = (Instant::now(), rt::thread_cpu_time());
        loop {
            rt::sleep(Duration::from_secs(1)).await;
            let Some(shard) = shard.upgrade() else { return };
            if shard.stopping.is_fired() {
                return;
            }
            let now = (Instant::now(), rt::thread_cpu_time());
            let wall = now.0.duration_since(last.0).as_secs_f64();
            let load = if wall > 0.0 {
                (now.1.saturating_sub(last.1)).as_secs_f64() / wall
            } else {
                0.0
            };
            last = now;
            let before = ctl.current();
            let delay = ctl.update(load);
            if delay != before {
                shard.hub.set_write_delay(delay);
                tracing::info!(
                    shard = shard.id,
                    load = format!("{load:.2}"),
                    write_delay_ms = delay.as_millis() as u64,
                    "viewer write budget changed with the shard's load"
                );
            }
            publish(&shard, delay, load);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn stretches_under_load_up_to_the_max_and_comes_back() {
        let mut c = DelayController::new(20 * MS, 100 * MS);
        assert_eq!(c.update(0.5), 20 * MS, "light load keeps the base");
        assert_eq!(c.update(0.7), 20 * MS, "between the marks nothing changes");
        assert_eq!(c.update(0.95), 30 * MS);
        assert_eq!(c.update(0.95), 45 * MS);
        assert_eq!(c.update(0.95), 67500 * Duration::from_micros(1));
        assert_eq!(c.update(0.95), 100 * MS, "capped at the max");
        assert_eq!(c.update(0.99), 100 * MS);
        assert_eq!(
            c.update(0.7),
            100 * MS,
            "hysteresis: no change between the marks"
        );
        let mut steps = 0;
        while c.current() > 20 * MS {
            c.update(0.3);
            steps += 1;
            assert!(steps < 10, "shrinks back to the base in a few seconds");
        }
        assert_eq!(c.current(), 20 * MS, "never below the base");
    }

    #[test]
    fn a_zero_base_grows_in_steps_and_returns_to_zero() {
        let mut c = DelayController::new(Duration::ZERO, 40 * MS);
        assert_eq!(c.update(0.9), 5 * MS);
        assert_eq!(c.update(0.9), 10 * MS);
        assert_eq!(c.update(0.9), 15 * MS);
        for _ in 0..20 {
            c.update(0.1);
        }
        assert_eq!(c.current(), Duration::ZERO);
    }

    #[test]
    fn max_equal_to_base_turns_stretching_off() {
        let mut c = DelayController::new(30 * MS, 30 * MS);
        assert_eq!(c.update(1.0), 30 * MS);
        assert_eq!(c.update(0.0), 30 * MS);
    }
}
