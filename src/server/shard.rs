//! The shard context every driver takes: one per shard thread, holding the shard's hub,
//! its stream table, its config and counters. It imports no driver; the composition
//! root (`server::app`) builds it and wires the drivers to it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use proto::media::StreamKey;
use shards::event::LocalEvent;
use shards::Shutdown;

use crate::server::access::{Access, LogLimiter};
use crate::server::admission::Admission;
use crate::server::budget::InputBudget;
use crate::server::config::Config;
use crate::server::media::StreamHub;
use crate::server::metrics::ShardMetrics;
use crate::server::streams::{OwnerCtx, StreamTable};

/// Everything one shard's connections share. One per shard thread.
pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub hub: Rc<StreamHub>,
    pub config: Arc<Config>,
    /// Every shard's counters (this shard writes only its own).
    pub metrics: Arc<Vec<ShardMetrics>>,
    pub shutdown: Shutdown,
    /// Fired when this shard stops accepting.
    pub stopping: LocalEvent,
    pub started: Instant,
    /// Who may connect (`[limits]`); each connection task holds its admission.
    pub admission: Rc<Admission>,
    /// Per-stream state beyond the hub's rings (owner state, publishers' kick
    /// events, blocked HLS requests), one lifetime per stream.
    pub streams: RefCell<StreamTable>,
    /// Peer input all of this shard's connections hold (`limits.max_buffered_input_bytes_per_shard`).
    pub input_budget: RefCell<InputBudget>,
    /// Who may publish and play (`[auth]`, `[hooks]`, `[audit]`).
    pub access: Rc<Access>,
    /// Rate limit of the log lines of connections refused at accept.
    pub refusal_log: RefCell<LogLimiter>,
}

/// A raised gauge (see [`Shard::hold`]).
pub struct Held {
    shard: Rc<Shard>,
    gauge: fn(&ShardMetrics) -> &AtomicU64,
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.gauge)(self.shard.metrics()).fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Shard {
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics[self.id]
    }

    /// Raise one of this shard's gauges until the returned guard drops.
    pub fn hold(self: &Rc<Self>, gauge: fn(&ShardMetrics) -> &AtomicU64) -> Held {
        gauge(self.metrics()).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Held {
            shard: Rc::clone(self),
            gauge,
        }
    }

    /// Disconnect the publisher of `key` if it is on this shard (API kick).
    pub fn kick(&self, key: &StreamKey) {
        if self.streams.borrow().kick(key) {
            tracing::info!(stream = %key, "publisher kicked through the API");
        }
    }

    /// What the owner-side stream state needs from this shard.
    pub fn owner_ctx(&self) -> OwnerCtx<'_> {
        OwnerCtx {
            hub: &self.hub,
            shards: self.count,
            metrics: self.metrics(),
        }
    }
}
