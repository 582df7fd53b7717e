//! Helpers shared by the runtime micro-benchmarks (`fanout`, `feeds`), included by each
//! with `#[path]`.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

pub const PAYLOAD_BYTES: usize = 2048;
/// Distinct payloads cycled through, so the benchmark does not hit one cache line.
pub const PAYLOAD_POOL: usize = 256;

/// Refcounted payloads, each cloned once so `Bytes` is already in its shared
/// (refcounted) representation, as a payload cut from an ingest buffer is.
pub fn payload_pool() -> Vec<Bytes> {
    (0..PAYLOAD_POOL)
        .map(|i| {
            let b = Bytes::from(vec![i as u8; PAYLOAD_BYTES]);
            drop(b.clone());
            b
        })
        .collect()
}

/// User + system CPU time of the calling thread.
pub fn thread_cpu() -> Cpu {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD)
        .expect("RUSAGE_THREAD exists on every Linux this runs on (2.6.26+)");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    Cpu {
        user: tv(u.user_time()),
        system: tv(u.system_time()),
    }
}

#[derive(Clone, Copy)]
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
}

impl Cpu {
    pub fn since(self, start: Cpu) -> Cpu {
        Cpu {
            user: self.user - start.user,
            system: self.system - start.system,
        }
    }
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// Returns `Pending` once after waking itself: glommio puts the task at the back of
/// its queue, so every task woken before it runs first.
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// Run `f` on its own thread and give up on the whole benchmark if it takes longer than
/// `limit`: glommio 0.9 executors were seen to park for good with work pending (both
/// shards asleep in io_uring_enter until a debugger attached), and a benchmark must
/// stop by itself.
pub fn with_deadline<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let runner = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = runner.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("{what}: no result after {limit:?}: a shard hung (glommio lost wake-up?); giving up");
            std::process::exit(3);
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: the benchmark thread panicked (see above)")
        }
    }
}
