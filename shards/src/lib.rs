//! shardcast's thread-per-core runtime: one pinned executor per core (a *shard*), the
//! global stream directory, per-shard fan-out rings, and the cross-shard feeds that
//! serve a stream owned by one shard to subscribers on another.
//!
//! Nothing here knows a protocol: rings carry any item, told its facts
//! ([`ring::ItemMeta`]) by a function the application gives at construction.
//!
//! ```text
//! run_shards(cpus) ── shard 0 (pinned executor) ── Hub: owned streams, mirrors, feeds
//!                  ├─ shard 1 ...                   rings ──▶ subscribers
//!                  └─ mesh: one SPSC channel per ordered pair of shards (batches)
//! ```

pub mod directory;
pub mod event;
pub mod hub;
pub mod instance;
pub mod preflight;
pub mod ring;
pub mod rt;
pub mod topology;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Capacity of each mesh channel, in batches.
const MESH_CHANNEL_BATCHES: usize = 1024;

/// What one shard is handed at start: its identity and its ends of the mesh.
pub struct ShardContext<M: Send + 'static> {
    pub id: usize,
    pub count: usize,
    /// The CPU it is pinned to (None when unpinned) and that CPU's NUMA node.
    pub cpu: Option<usize>,
    pub node: usize,
    pub shutdown: Shutdown,
    /// `senders[j]`: to shard j (None for itself). Taken by the hub.
    pub senders: Vec<Option<rt::channel::SharedSender<M>>>,
    /// `receivers[j]`: from shard j (None for itself). Taken by the hub.
    pub receivers: Vec<Option<rt::channel::SharedReceiver<M>>>,
}

/// Process-wide shutdown request, observed by every shard.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Resolves once shutdown is requested (checked every 50 ms: a signal is rare, and
    /// this keeps the signal thread free of runtime calls).
    pub async fn requested(&self) {
        while !self.is_requested() {
            rt::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Start one shard per entry of `cpus` (None = unpinned), connect the mesh, run
/// `shard_main` on each, and wait for all of them to return. Returns the shards' panics
/// as errors.
pub fn run_shards<M, F, Fut>(
    cpus: &[Option<usize>],
    shutdown: Shutdown,
    shard_main: F,
) -> Result<(), String>
where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let n = cpus.len();
    let topo = topology::Topology::detect();
    let mut senders: Vec<Vec<Option<rt::channel::SharedSender<M>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<Option<rt::channel::SharedReceiver<M>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = rt::channel::new_bounded(MESH_CHANNEL_BATCHES);
                senders[from][to] = Some(tx);
                receivers[to][from] = Some(rx);
            }
        }
    }
    let mut handles = Vec::with_capacity(n);
    for (id, (tx, rx)) in senders.into_iter().zip(receivers).enumerate() {
        let cpu = cpus[id];
        let ctx = ShardContext {
            id,
            count: n,
            cpu,
            node: cpu.map_or(0, |c| topo.node_of(c)),
            shutdown: shutdown.clone(),
            senders: tx,
            receivers: rx,
        };
        let main = shard_main.clone();
        let handle = rt::start_executor(&format!("shard-{id}"), cpu, move || main(ctx))
            .map_err(|e| format!("cannot start shard {id}: {e}"))?;
        handles.push(handle);
    }
    let mut errors = Vec::new();
    for (id, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            errors.push(format!("shard {id} panicked"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Block SIGINT and SIGTERM in this thread (call before starting shards, so they inherit
/// the mask) and return a waiter for the main thread.
pub fn block_shutdown_signals() -> nix::Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}
