//! Cross-shard feed throughput and added latency.
//!
//! Two pinned shards (CPUs 0 and 1) run `shards::hub::Hub`. Shard 0 publishes one
//! stream; shard 1 has one subscriber, so every item goes: publisher push → owner ring
//! and batch for shard 1 → SPSC channel → mirror ring on shard 1 → subscriber. That
//! is the whole per-item path of a remote viewer except its socket write.
//!
//! - Throughput: items per second through the one feed, and each shard's thread CPU
//!   per item (`getrusage(RUSAGE_THREAD)`; includes spinning before parking). At `max`
//!   load the publisher runs as fast as the feed lets it: it keeps at most `window`
//!   items unacknowledged by the subscriber (half the mirror ring), because the hub has
//!   no back-pressure and a publisher that outruns a feed gets it shed by design.
//! - Latency: the publisher stamps an item with the time since a shared origin
//!   (`Instant`, same clock on both cores); the subscriber records arrival minus stamp
//!   in an HDR histogram. At fixed rates every item is stamped; at `max` load 1 in 64
//!   (a clock read costs about as much as the feed itself).
//!
//! Payloads are 2 KiB `bytes::Bytes` from a pool of distinct buffers, cloned by
//! refcount, so the refcount cache-line traffic between cores is in the numbers.
//! Each run checks that the subscriber received every measured item in order and that
//! no feed was shed, or panics.
//!
//! Usage: `feeds [--secs S]`. Prints one markdown table to stdout.

#[path = "../micro_common.rs"]
mod micro_common;
use micro_common::*;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use shards::directory::Directory;
use shards::hub::{Hub, HubConfig};
use shards::ring::{ItemMeta, Next};
use shards::{rt, run_shards, Shutdown};

const KEYFRAME_EVERY: u64 = 60;
/// At `max` load, 1 item in this many carries a timestamp.
const STAMP_EVERY: u64 = 64;
/// The subscriber publishes its progress (for the publisher's window) this often.
const ACK_EVERY: u64 = 64;
const STREAM: &str = "bench/feed";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Config,
    Warm,
    Measured,
    /// The run is over: the subscriber stops at this one.
    Last,
}

#[derive(Clone)]
struct Stamped {
    payload: Bytes,
    kind: Kind,
    /// Measured items count from 0.
    n: u64,
    /// Nanoseconds since the shared origin at push time; 0 = not stamped.
    sent_ns: u64,
}

fn describe(item: &Stamped) -> ItemMeta {
    ItemMeta {
        keyframe: item.kind != Kind::Config && item.n.is_multiple_of(KEYFRAME_EVERY),
        video: true,
        config_slot: (item.kind == Kind::Config).then_some(0),
        byte_len: item.payload.len(),
    }
}

type BenchHub = Hub<String, Stamped, ()>;

#[derive(Clone, Copy, Debug)]
enum Load {
    /// Items per second, paced by the shard's timer.
    Rate(u32),
    /// As fast as the feed takes them, at most `window` unacknowledged.
    Max { window: u64 },
}

#[derive(Clone, Debug)]
struct Spec {
    batch: Duration,
    batch_items: usize,
    load: Load,
}

/// State both shards of one run see.
struct Shared {
    origin: Instant,
    published: AtomicBool,
    /// Measured items the subscriber has read (updated every ACK_EVERY).
    received: AtomicU64,
    done: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

struct SenderSide {
    items: u64,
    first_push_ns: u64,
    cpu: Duration,
    batches: u64,
    items_sent: u64,
    shed: u64,
}

struct ReceiverSide {
    items: u64,
    last_arrival_ns: u64,
    cpu: Duration,
    latency_ns: Histogram<u64>,
}

enum Half {
    Sender(SenderSide),
    Receiver(ReceiverSide),
}

async fn publish_side(
    hub: Rc<BenchHub>,
    shared: Arc<Shared>,
    spec: Spec,
    run_for: Duration,
) -> SenderSide {
    let pool = payload_pool();
    let item = |n: u64, kind: Kind, sent_ns: u64| Stamped {
        payload: pool[n as usize % pool.len()].clone(),
        kind,
        n,
        sent_ns,
    };
    let publisher = hub
        .publish(&STREAM.to_string(), || ())
        .expect("each run has a fresh directory, so the key is free");
    publisher.push(item(0, Kind::Config, 0));
    publisher.push(item(0, Kind::Warm, 0));
    shared.published.store(true, Ordering::Release);
    // Measure only once the feed is open: the subscriber's OpenFeed has reached us.
    while hub.stats().feeds_out == 0 {
        rt::sleep(Duration::from_micros(100)).await;
    }
    let cpu0 = thread_cpu().total();
    let first_push_ns = shared.now_ns();
    let start = Instant::now();
    let mut n = 0;
    match spec.load {
        Load::Rate(per_sec) => {
            let interval = Duration::from_secs(1) / per_sec;
            let mut next = start;
            while start.elapsed() < run_for {
                // Catch up after a late timer instead of drifting; each item is stamped
                // when it is really pushed.
                while next <= Instant::now() {
                    publisher.push(item(n, Kind::Measured, shared.now_ns()));
                    n += 1;
                    next += interval;
                }
                rt::sleep(next.saturating_duration_since(Instant::now())).await;
            }
        }
        Load::Max { window } => loop {
            for _ in 0..ACK_EVERY {
                let sent_ns = if n.is_multiple_of(STAMP_EVERY) {
                    shared.now_ns()
                } else {
                    0
                };
                publisher.push(item(n, Kind::Measured, sent_ns));
                n += 1;
            }
            while n - shared.received.load(Ordering::Acquire) > window {
                yield_now().await;
            }
            if start.elapsed() >= run_for {
                break;
            }
        },
    }
    publisher.push(item(n, Kind::Last, 0));
    while !shared.done.load(Ordering::Acquire) {
        yield_now().await;
    }
    let cpu = thread_cpu().total() - cpu0;
    let stats = hub.stats();
    SenderSide {
        items: n,
        first_push_ns,
        cpu,
        batches: stats.batches_sent,
        items_sent: stats.items_sent,
        shed: stats.feeds_shed,
    }
}

async fn subscribe_side(hub: Rc<BenchHub>, shared: Arc<Shared>) -> ReceiverSide {
    while !shared.published.load(Ordering::Acquire) {
        rt::sleep(Duration::from_micros(100)).await;
    }
    let mut sub = hub
        .subscribe(&STREAM.to_string())
        .expect("the publisher on shard 0 is live");
    assert!(sub.is_remote(), "the stream is owned by shard 0");
    let mut latency_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .expect("static histogram bounds are valid");
    let mut items = 0;
    let mut cpu0 = None;
    loop {
        match sub.next() {
            Next::Item { item, .. } => match item.kind {
                Kind::Measured => {
                    cpu0.get_or_insert_with(|| thread_cpu().total());
                    assert_eq!(item.n, items, "the feed delivers every item, in order");
                    items += 1;
                    // Read the clock only for stamped items: at max load it would cost
                    // as much as the feed itself.
                    if item.sent_ns != 0 {
                        let now = shared.now_ns();
                        latency_ns.saturating_record(now.saturating_sub(item.sent_ns).max(1));
                    }
                    if items.is_multiple_of(ACK_EVERY) {
                        shared.received.store(items, Ordering::Release);
                    }
                }
                Kind::Last => break,
                Kind::Config | Kind::Warm => {}
            },
            Next::Pending => sub.wait().await,
            Next::Ended => panic!("the feed ended before the run did (shed? see the hub's log)"),
            Next::TooSlow { skips } => panic!(
                "the subscriber fell out of the mirror ring {skips} times: the publisher's window is larger than the ring"
            ),
        }
    }
    let last_arrival_ns = shared.now_ns();
    let cpu = cpu0.map_or(Duration::ZERO, |c| thread_cpu().total() - c);
    shared.done.store(true, Ordering::Release);
    ReceiverSide {
        items,
        last_arrival_ns,
        cpu,
        latency_ns,
    }
}

fn run(spec: &Spec, run_for: Duration) -> (SenderSide, ReceiverSide) {
    let dir = Arc::new(Directory::<String, ()>::new(0));
    let viewers = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        published: AtomicBool::new(false),
        received: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let config = HubConfig {
        feed_batch: spec.batch,
        feed_batch_items: spec.batch_items,
        reconnect_grace: Duration::from_millis(10),
        ..HubConfig::default()
    };
    let (tx, rx) = mpsc::channel::<Half>();
    let spec = spec.clone();
    run_shards::<_, _, _>(&[Some(0), Some(1)], Shutdown::default(), move |mut ctx| {
        let (dir, viewers, shared, config, tx, spec) = (
            Arc::clone(&dir),
            Arc::clone(&viewers),
            Arc::clone(&shared),
            config.clone(),
            tx.clone(),
            spec.clone(),
        );
        async move {
            let hub: Rc<BenchHub> = Hub::start(&mut ctx, dir, viewers, config, describe).await;
            let half = if ctx.id == 0 {
                Half::Sender(publish_side(hub, shared, spec, run_for).await)
            } else {
                Half::Receiver(subscribe_side(hub, shared).await)
            };
            tx.send(half).expect("main waits for both halves");
        }
    })
    .unwrap_or_else(|e| panic!("benchmark shards failed: {e}"));
    let (mut sender, mut receiver) = (None, None);
    for half in rx.try_iter() {
        match half {
            Half::Sender(s) => sender = Some(s),
            Half::Receiver(r) => receiver = Some(r),
        }
    }
    (
        sender.expect("shard 0 reports before it exits"),
        receiver.expect("shard 1 reports before it exits"),
    )
}

fn header() -> &'static str {
    "| batching | load | items | items/s | wall ns per item | shard 0 CPU ns per item | shard 1 CPU ns per item | items per batch | latency p50 µs | p99 µs | max µs |\n\
     |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

fn row(spec: &Spec, s: &SenderSide, r: &ReceiverSide) -> String {
    assert_eq!(s.shed, 0, "no feed may be shed during a run");
    assert_eq!(
        r.items, s.items,
        "the subscriber received every measured item"
    );
    let wall = Duration::from_nanos(r.last_arrival_ns - s.first_push_ns);
    let per_item = |d: Duration| d.as_nanos() as f64 / s.items as f64;
    let us = |q: f64| r.latency_ns.value_at_quantile(q) as f64 / 1000.0;
    let load = match spec.load {
        Load::Rate(r) => format!("{r}/s"),
        Load::Max { window } => format!("max (window {window})"),
    };
    format!(
        "| {} µs / {} items | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
        spec.batch.as_micros(),
        spec.batch_items,
        load,
        s.items,
        s.items as f64 / wall.as_secs_f64(),
        per_item(wall),
        per_item(s.cpu),
        per_item(r.cpu),
        s.items_sent as f64 / s.batches.max(1) as f64,
        us(0.5),
        us(0.99),
        r.latency_ns.max() as f64 / 1000.0,
    )
}

fn parse_args() -> Result<Duration, String> {
    let mut run_for = Duration::from_secs(1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--secs" => {
                let v = it.next().ok_or("--secs needs a value")?;
                let s: f64 = v.parse().map_err(|e| format!("--secs {v}: {e}"))?;
                run_for = Duration::try_from_secs_f64(s).map_err(|e| format!("--secs {v}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(run_for)
}

fn main() {
    let run_for = parse_args().unwrap_or_else(|e| {
        eprintln!("feeds: {e}\nusage: feeds [--secs S]");
        std::process::exit(2);
    });
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("feeds: needs 2 CPUs (shards pinned to CPUs 0 and 1)");
        std::process::exit(2);
    }
    // Half the default mirror ring (1024 slots): a burst the receiving hub pushes into
    // the mirror before the subscriber runs must not lap it.
    let window = shards::ring::RingConfig::default().slots as u64 / 2;
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    let specs = [
        (ms(1), 64, Load::Rate(1_000)),
        (ms(1), 64, Load::Rate(10_000)),
        (ms(1), 64, Load::Max { window }),
        (ms(1), 1, Load::Rate(10_000)),
        (ms(1), 1, Load::Max { window }),
        (us(100), 64, Load::Rate(10_000)),
        (us(100), 64, Load::Max { window }),
        (ms(1), 256, Load::Max { window }),
        (ms(5), 1024, Load::Rate(10_000)),
    ];
    println!("{}", header());
    for (batch, batch_items, load) in specs {
        let spec = Spec {
            batch,
            batch_items,
            load,
        };
        let (s, r) = {
            let spec = spec.clone();
            with_deadline(run_for + Duration::from_secs(30), "feeds", move || {
                run(&spec, run_for)
            })
        };
        println!("{}", row(&spec, &s, &r));
    }
}
