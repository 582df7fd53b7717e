//! Fan-out cost per frame per local viewer, excluding the socket write.
//!
//! What one viewer costs the shard for one frame: reading it from the stream's
//! [`Ring`] and fetching the frame's serialized bytes (built once per frame and shared,
//! docs/runtime.md, "Serialize once"). The socket write is left out on purpose: it is measured
//! by the swarm benchmark, and it is the same cost whatever the fan-out design.
//!
//! Modes:
//! - `ring`: one thread, no runtime. Per published frame, every subscriber calls
//!   `next()` and `serialized()`. The floor: the data-structure cost alone.
//! - `tasks`: one glommio shard (`shards::rt`), one task per viewer looping
//!   `next()` / `wait().await`, as the HTTP-FLV and RTMP egress drivers do. The
//!   publisher pushes `burst` frames, then yields so the woken viewers run. This adds
//!   the real per-viewer costs: waker registration, wake-up and task poll. Cost is the
//!   shard thread's CPU time (`getrusage(RUSAGE_THREAD)`), so it counts spinning and
//!   parking as well.
//! - `paced`: `tasks` with the publisher pushing at a fixed frame rate on a timer, so
//!   the shard idles between frames as it would in production.
//!
//! Frames are 2 KiB payloads held as `bytes::Bytes` (cloned by refcount, as ingest
//! hands them over), one keyframe every 60. The benchmark checks what it measures:
//! every viewer must receive every frame and the serializer must run exactly once per
//! frame, or it panics.
//!
//! Usage: `fanout [--secs S] [--viewers 1,100,10000] [--mode ring|tasks|paced|all]`.
//! Prints one markdown table to stdout.

#[path = "../micro_common.rs"]
mod micro_common;
use micro_common::*;

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use shards::ring::{ItemMeta, Next, Ring, RingConfig, Subscriber};
use shards::rt::{self, Queue};

/// FLV tag header + payload + previous tag size.
const FLV_TAG_BYTES: u64 = 11 + PAYLOAD_BYTES as u64 + 4;
const KEYFRAME_EVERY: u64 = 60;
/// The ring's format slot used for the shared encoding (any index below FORMATS).
const FLV_FORMAT: usize = 1;
/// Frames pushed before the clock starts: fills the ring once, so eviction is in the
/// measured steady state.
const WARM_UP_FRAMES: u64 = 2048;
/// Frames between deadline checks.
const CHECK_EVERY: u64 = 16;
/// Frame rate of the `paced` mode: e.g. 33 streams at 30 fps landing on one shard.
const PACED_FPS: u32 = 1000;

#[derive(Clone)]
struct Frame {
    payload: Bytes,
    dts_ms: u32,
    keyframe: bool,
}

fn describe(frame: &Frame) -> ItemMeta {
    ItemMeta {
        keyframe: frame.keyframe,
        video: true,
        config_slot: None,
        byte_len: frame.payload.len(),
    }
}

fn frame(n: u64, pool: &[Bytes]) -> Frame {
    Frame {
        payload: pool[n as usize % pool.len()].clone(),
        // 30 fps timestamps; wraps like FLV's 32-bit milliseconds.
        dts_ms: (n * 33) as u32,
        keyframe: n.is_multiple_of(KEYFRAME_EVERY),
    }
}

/// What an FLV egress builds once per frame: tag header, payload copy, previous tag
/// size. A realistic one-off cost (a 2 KiB copy) amortized over the viewers.
fn flv_tag(f: &Frame) -> Bytes {
    let len = f.payload.len();
    let mut b = BytesMut::with_capacity(11 + len + 4);
    b.put_u8(9);
    b.put_uint(len as u64, 3);
    b.put_uint(u64::from(f.dts_ms & 0x00ff_ffff), 3);
    b.put_u8((f.dts_ms >> 24) as u8);
    b.put_uint(0, 3);
    b.put_slice(&f.payload);
    b.put_u32((11 + len) as u32);
    b.freeze()
}

enum Delivery {
    /// Bytes that would be written to the viewer's socket.
    Sent(usize),
    Pending,
    Ended,
}

/// One viewer's work for one item: read it and fetch its shared encoding.
fn deliver(sub: &mut Subscriber<Frame>, builds: &Cell<u64>) -> Delivery {
    match sub.next() {
        Next::Item { seq, .. } => {
            let wire = sub
                .serialized(seq, FLV_FORMAT, |f| {
                    builds.set(builds.get() + 1);
                    flv_tag(f)
                })
                .expect("the item was just read, so the ring still holds it");
            Delivery::Sent(black_box(wire).len())
        }
        Next::Pending => Delivery::Pending,
        Next::Ended => Delivery::Ended,
        Next::TooSlow { skips } => {
            panic!(
                "a benchmark viewer fell out of the ring ({skips} skips): the publisher outran it"
            )
        }
    }
}

/// One measured run.
struct Row {
    mode: String,
    viewers: usize,
    frames: u64,
    wall: Duration,
    cpu: Cpu,
    builds: u64,
    delivered: u64,
    /// Bytes the viewers would have written.
    bytes: u64,
}

impl Row {
    fn viewer_frames(&self) -> u64 {
        self.frames * self.viewers as u64
    }

    fn header() -> &'static str {
        "| mode | viewers | frames | viewer-frames/s | wall ns per viewer-frame | CPU ns per viewer-frame | sys share | builds per frame |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    }

    fn markdown(&self) -> String {
        let vf = self.viewer_frames() as f64;
        format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.2} |",
            self.mode,
            self.viewers,
            self.frames,
            vf / self.wall.as_secs_f64(),
            self.wall.as_nanos() as f64 / vf,
            self.cpu.total().as_nanos() as f64 / vf,
            100.0 * self.cpu.system.as_secs_f64() / self.cpu.total().as_secs_f64().max(1e-9),
            self.builds as f64 / self.frames as f64,
        )
    }

    /// The benchmark only counts if the fan-out really happened.
    fn check(&self) {
        assert_eq!(
            self.delivered,
            self.viewer_frames(),
            "{}: every viewer must receive every measured frame",
            self.mode
        );
        assert_eq!(
            self.builds, self.frames,
            "{}: serialize once: one build per frame whatever the viewer count",
            self.mode
        );
        assert_eq!(
            self.bytes,
            self.delivered * FLV_TAG_BYTES,
            "{}: every viewer gets the whole FLV tag",
            self.mode
        );
    }
}

/// `ring` mode: publisher and viewers in lockstep on this thread.
fn run_ring(viewers: usize, run_for: Duration) -> Row {
    let pool = payload_pool();
    let ring = Ring::new(RingConfig::default(), describe);
    let mut subs: Vec<_> = (0..viewers).map(|_| ring.subscribe()).collect();
    let builds = Cell::new(0);
    let mut n = 0;
    let mut round = |n: &mut u64, delivered: &mut (u64, u64)| {
        ring.push(frame(*n, &pool));
        *n += 1;
        for sub in &mut subs {
            if let Delivery::Sent(len) = deliver(sub, &builds) {
                delivered.0 += 1;
                delivered.1 += len as u64;
            }
        }
    };
    let mut ignored = (0, 0);
    while n < WARM_UP_FRAMES {
        round(&mut n, &mut ignored);
    }
    let (first, builds_before) = (n, builds.get());
    let mut delivered = (0, 0);
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    loop {
        for _ in 0..CHECK_EVERY {
            round(&mut n, &mut delivered);
        }
        if t0.elapsed() >= run_for {
            break;
        }
    }
    let wall = t0.elapsed();
    let cpu = thread_cpu().since(cpu0);
    Row {
        mode: "ring".into(),
        viewers,
        frames: n - first,
        wall,
        cpu,
        builds: builds.get() - builds_before,
        delivered: delivered.0,
        bytes: delivered.1,
    }
}

/// Counters shared by the viewer tasks of one shard.
#[derive(Default)]
struct Tally {
    delivered: Cell<u64>,
    bytes: Cell<u64>,
    builds: Cell<u64>,
    finished: Cell<usize>,
}

async fn viewer(mut sub: Subscriber<Frame>, tally: Rc<Tally>) {
    loop {
        match deliver(&mut sub, &tally.builds) {
            Delivery::Sent(len) => {
                tally.delivered.set(tally.delivered.get() + 1);
                tally.bytes.set(tally.bytes.get() + len as u64);
            }
            Delivery::Pending => sub.wait().await,
            Delivery::Ended => break,
        }
    }
    tally.finished.set(tally.finished.get() + 1);
}

/// How the `tasks` publisher paces its frames.
#[derive(Clone, Copy)]
enum Pace {
    /// `burst` frames, then yield to the viewers, as fast as possible.
    Flat { burst: u64 },
    /// One frame per 1/fps on a timer.
    Fps(u32),
}

/// `tasks` and `paced` modes: one pinned shard, a task per viewer.
fn run_tasks(viewers: usize, run_for: Duration, pace: Pace) -> Row {
    let handle = rt::start_executor("fanout", Some(0), move || async move {
        let pool = payload_pool();
        let ring = Ring::new(RingConfig::default(), describe);
        let tally = Rc::new(Tally::default());
        for _ in 0..viewers {
            rt::spawn(Queue::Media, viewer(ring.subscribe(), Rc::clone(&tally)));
        }
        // Let every viewer run once and park in wait().
        yield_now().await;
        let mut n = 0;
        let push_round = |n: &mut u64, burst: u64| {
            for _ in 0..burst {
                ring.push(frame(*n, &pool));
                *n += 1;
            }
        };
        while n < WARM_UP_FRAMES {
            push_round(&mut n, 1);
            yield_now().await;
        }
        let expected_before = n * viewers as u64;
        while tally.delivered.get() < expected_before {
            yield_now().await;
        }
        let (first, delivered0, builds0, bytes0) = (
            n,
            tally.delivered.get(),
            tally.builds.get(),
            tally.bytes.get(),
        );
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        match pace {
            Pace::Flat { burst } => loop {
                for _ in 0..CHECK_EVERY {
                    push_round(&mut n, burst);
                    yield_now().await;
                }
                if t0.elapsed() >= run_for {
                    break;
                }
            },
            Pace::Fps(fps) => {
                let interval = Duration::from_secs(1) / fps;
                let mut next = t0;
                while t0.elapsed() < run_for {
                    // Catch up after a late timer instead of drifting.
                    while next <= Instant::now() {
                        push_round(&mut n, 1);
                        next += interval;
                    }
                    rt::sleep(next.saturating_duration_since(Instant::now())).await;
                }
            }
        }
        // The last frames are delivered before the clock stops.
        let expected = n * viewers as u64;
        while tally.delivered.get() < expected {
            yield_now().await;
        }
        let wall = t0.elapsed();
        let cpu = thread_cpu().since(cpu0);
        ring.end();
        while tally.finished.get() < viewers {
            yield_now().await;
        }
        let mode = match pace {
            Pace::Flat { burst } => format!("tasks, burst {burst}"),
            Pace::Fps(fps) => format!("paced {fps} fps"),
        };
        Row {
            mode,
            viewers,
            frames: n - first,
            wall,
            cpu,
            builds: tally.builds.get() - builds0,
            delivered: tally.delivered.get() - delivered0,
            bytes: tally.bytes.get() - bytes0,
        }
    })
    .unwrap_or_else(|e| panic!("cannot start the benchmark shard: {e}"));
    handle
        .join()
        .unwrap_or_else(|_| panic!("the benchmark shard panicked (see above)"))
}

struct Args {
    run_for: Duration,
    viewers: Vec<usize>,
    mode: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        run_for: Duration::from_secs(1),
        viewers: vec![1, 100, 10_000],
        mode: "all".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--secs" => {
                let s: f64 = value()?.parse().map_err(|e| format!("--secs: {e}"))?;
                args.run_for =
                    Duration::try_from_secs_f64(s).map_err(|e| format!("--secs: {e}"))?;
            }
            "--viewers" => {
                args.viewers = value()?
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--viewers {v}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--mode" => args.mode = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !["all", "ring", "tasks", "paced"].contains(&args.mode.as_str()) {
        return Err(format!(
            "--mode {}: expected ring, tasks, paced or all",
            args.mode
        ));
    }
    Ok(args)
}

fn tasks_with_deadline(viewers: usize, run_for: Duration, pace: Pace) -> Row {
    with_deadline(
        run_for + Duration::from_secs(30),
        "fanout tasks",
        move || run_tasks(viewers, run_for, pace),
    )
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("fanout: {e}\nusage: fanout [--secs S] [--viewers 1,100,10000] [--mode ring|tasks|paced|all]");
        std::process::exit(2);
    });
    let wants = |m: &str| args.mode == "all" || args.mode == m;
    println!("{}", Row::header());
    let report = |row: Row| {
        row.check();
        println!("{}", row.markdown());
    };
    for &v in &args.viewers {
        if wants("ring") {
            report(run_ring(v, args.run_for));
        }
    }
    for burst in [1, 8] {
        for &v in &args.viewers {
            if wants("tasks") {
                report(tasks_with_deadline(v, args.run_for, Pace::Flat { burst }));
            }
        }
    }
    for &v in &args.viewers {
        if wants("paced") {
            report(tasks_with_deadline(v, args.run_for, Pace::Fps(PACED_FPS)));
        }
    }
}
