//! The streams of one shard, and the feeds that connect them to other shards.
//!
//! A stream is *owned* by the shard its publisher is on: the owner's ring is where the
//! publisher's items go, once. A subscriber on another shard is served from a *mirror*
//! ring on its own shard, fed by the owner through one feed per (stream, remote
//! shard), never one per viewer:
//!
//! ```text
//! owner A: Publisher::push ──▶ ring ──▶ local subscribers
//!                               └──▶ batch for shard B ──(SPSC, every feed_batch)──▶ mirror ring on B ──▶ B's subscribers
//! ```
//!
//! Feed protocol (messages travel in batches over the shard mesh, in order per pair of
//! shards):
//! - B opens a feed on its first subscriber: `OpenFeed` to the owner. The owner answers
//!   with the stream's snapshot (configs + current GOP) followed by live items on the
//!   same ordered channel, so there is no gap or duplicate at the seam.
//! - B closes it after its last subscriber leaves: `CloseFeed`.
//! - The owner ends it when the stream ends: `FeedEnded`.
//!
//! Write pacing: a ring's subscribers are woken as its [`pacer`] says (video at once
//! unless the last wake is less than the write delay ago, audio and data with the next
//! video frame within the delay), one timer per ring at most.
//!
//! Cross-shard commands: the application's own command type `C` travels over the same
//! mesh ([`Hub::send`]); on its own shard a command is handled at once.
//!
//! The logic lives in [`core::HubCore`] (sans-IO, tested with a fake clock); this module
//! is its driver: it owns the mesh channels and the one timer, feeds the core and drains
//! its outputs.
//!
//! Publisher reconnect grace: when a publisher goes, the stream stays (viewers stay
//! connected) for `reconnect_grace`; a new publisher of the same key on this shard
//! resumes it. A publisher that lands on another shard is told who the owner is
//! ([`PublishError::OwnedElsewhere`]) so the server can hand the connection over.

use std::cell::{Cell, RefCell};
use std::hash::Hash;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::directory::{ClaimError, Directory, Entry};
use crate::event::{LocalEvent, Notify};
use crate::ring::{Describe, Ring, RingConfig, Subscriber};
use crate::rt::{self, Queue};
use crate::ShardContext;

pub mod core;
pub mod pacer;

pub use self::core::{HubCore, HubEvent, StreamId};

/// Identifies one feed; allocated by the subscribing shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeedId(u64);

/// A message between shards. `Cmd` carries one of the application's commands (e.g.
/// "adopt this publisher's connection").
pub enum Envelope<K, T, C> {
    OpenFeed { key: K, feed: FeedId, from: usize },
    CloseFeed { key: K, feed: FeedId, from: usize },
    Items { feed: FeedId, items: Vec<T> },
    FeedEnded { feed: FeedId },
    Cmd(C),
}

#[derive(Clone, Debug)]
pub struct HubConfig {
    pub ring: RingConfig,
    pub reconnect_grace: Duration,
    /// How long items for another shard may wait to be sent as one batch.
    pub feed_batch: Duration,
    /// A batch is sent at once when it holds this many items.
    pub feed_batch_items: usize,
    /// A feed whose shard cannot keep up (channel full) is ended after this many
    /// unsent items; its viewers reconnect.
    pub feed_backlog_items: usize,
    /// The write pacing delay at start (see [`pacer`]; 0: wake at every item). Changed
    /// at run time with [`Hub::set_write_delay`].
    pub write_delay: Duration,
    /// 0 = unlimited.
    pub max_viewers: u64,
    pub max_viewers_per_stream: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ring: RingConfig::default(),
            reconnect_grace: Duration::from_secs(5),
            feed_batch: Duration::from_millis(1),
            feed_batch_items: 64,
            feed_backlog_items: 16_384,
            write_delay: Duration::ZERO,
            max_viewers: 0,
            max_viewers_per_stream: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The key waits for its publisher on another shard: hand the connection there.
    #[error("stream is owned by shard {owner}")]
    OwnedElsewhere { owner: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("stream '{key}' is not being published")]
    NotFound { key: String },
    #[error("the server has {limit} viewers, its configured maximum (streams.max_viewers)")]
    TooManyViewers { limit: u64 },
    #[error("stream '{key}' has {limit} viewers, its configured maximum (streams.max_viewers_per_stream)")]
    TooManyStreamViewers { key: String, limit: u64 },
}

/// Counters of one shard's hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub owned_streams: usize,
    pub mirrors: usize,
    pub feeds_out: usize,
    pub batches_sent: u64,
    pub items_sent: u64,
    pub feeds_shed: u64,
}

type Batch<K, T, C> = Vec<Envelope<K, T, C>>;

/// What the application does with the hub's events: commands from other shards (and
/// its own), streams and mirrors that ended.
pub type EventHandler<K, C> = Box<dyn Fn(HubEvent<K, C>)>;

/// One shard's streams and feeds: the driver of a [`HubCore`]. Lives in an `Rc` on its
/// shard. `C` is the application's cross-shard command type.
pub struct Hub<K: Send + 'static, T: Send + 'static, S, C: Send + 'static = ()> {
    core: RefCell<HubCore<K, T, S, C>>,
    senders: Vec<Option<rt::channel::ConnectedSender<Batch<K, T, C>>>>,
    handler: RefCell<Option<Rc<EventHandler<K, C>>>>,
    /// Wakes the timer task when the core's next deadline moved earlier.
    timer_changed: Rc<Notify>,
    /// What the timer task sleeps until now.
    timer_at: Rc<Cell<Option<Instant>>>,
    id: usize,
    dir: Arc<Directory<K, S>>,
    config: HubConfig,
}

impl<K, T, S, C> Hub<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    /// Connect this shard to the mesh and start serving feeds. Every shard must call this
    /// (the channel connections wait for both ends). The hub's rings learn what they need
    /// to know about an item (keyframe, config slot, video, bytes) from `describe`, once
    /// per item.
    pub async fn start(
        ctx: &mut ShardContext<Batch<K, T, C>>,
        dir: Arc<Directory<K, S>>,
        viewers_total: Arc<AtomicU64>,
        config: HubConfig,
        describe: Describe<T>,
    ) -> Rc<Self> {
        let receivers = std::mem::take(&mut ctx.receivers);
        let senders = std::mem::take(&mut ctx.senders);
        let hub_cell: Rc<RefCell<Option<Rc<Self>>>> = Rc::new(RefCell::new(None));
        let ready = Rc::new(LocalEvent::default());
        for (from, rx) in receivers.into_iter().enumerate() {
            let Some(rx) = rx else { continue };
            let hub_cell = Rc::clone(&hub_cell);
            let ready = Rc::clone(&ready);
            rt::spawn(Queue::Media, async move {
                let rx = rx.connect().await;
                ready.wait().await;
                let hub = hub_cell.borrow().clone().expect("set before ready fires");
                while let Some(batch) = rx.recv().await {
                    let now = Instant::now();
                    {
                        let mut core = hub.core.borrow_mut();
                        for env in batch {
                            core.handle_envelope(now, from, env);
                        }
                    }
                    hub.drain(now);
                }
            });
        }
        let mut connected = Vec::with_capacity(senders.len());
        for tx in senders {
            connected.push(match tx {
                Some(tx) => Some(tx.connect().await),
                None => None,
            });
        }
        let core = HubCore::new(
            Instant::now(),
            ctx.id,
            connected.len(),
            Arc::clone(&dir),
            viewers_total,
            config.clone(),
            describe,
        );
        let hub = Rc::new(Hub {
            core: RefCell::new(core),
            senders: connected,
            handler: RefCell::new(None),
            timer_changed: Rc::default(),
            timer_at: Rc::default(),
            id: ctx.id,
            dir,
            config,
        });
        *hub_cell.borrow_mut() = Some(Rc::clone(&hub));
        ready.fire();
        rt::spawn(Queue::Control, Self::timer_task(Rc::downgrade(&hub)));
        hub
    }

    /// The hub's one timer: sleeps until the core's next deadline (or until that moves
    /// earlier), then runs what is due.
    async fn timer_task(hub: Weak<Self>) {
        let (changed, timer_at) = match hub.upgrade() {
            Some(h) => (Rc::clone(&h.timer_changed), Rc::clone(&h.timer_at)),
            None => return,
        };
        loop {
            let seen = changed.version();
            let deadline = match hub.upgrade() {
                Some(h) => h.core.borrow().poll_timeout(),
                None => return,
            };
            timer_at.set(deadline);
            let now = Instant::now();
            match deadline {
                Some(at) if at <= now => {}
                Some(at) => {
                    let _ = rt::timeout(at - now, changed.changed(seen)).await;
                }
                None => changed.changed(seen).await,
            }
            let Some(h) = hub.upgrade() else { return };
            let now = Instant::now();
            h.core.borrow_mut().handle_timeout(now);
            h.drain(now);
            rt::yield_if_needed().await;
        }
    }

    /// Drain the core's outputs: batches to the mesh, events to the handler; re-arm the
    /// timer if the next deadline moved earlier.
    fn drain(&self, now: Instant) {
        loop {
            let t = self.core.borrow_mut().poll_transmit();
            let Some(t) = t else { break };
            let tx = self.senders[t.to]
                .as_ref()
                .expect("the core sends only to other shards");
            let (to, items) = (t.to, t.items);
            if let Err(batch) = tx.try_send(t.batch) {
                self.core
                    .borrow_mut()
                    .handle_unsent(now, core::Transmit { to, batch, items });
            }
        }
        let handler = self.handler.borrow().clone();
        if let Some(handler) = handler {
            loop {
                let ev = self.core.borrow_mut().poll_event();
                let Some(ev) = ev else { break };
                handler(ev);
            }
        }
        let next = self.core.borrow().poll_timeout();
        let sleeping = self.timer_at.get();
        if next.is_some() && (sleeping.is_none() || next < sleeping) {
            self.timer_at.set(next);
            self.timer_changed.notify();
        }
    }

    /// Register what handles commands and stream ends on this shard (events that came
    /// before are handled now).
    pub fn set_handler(&self, handler: impl Fn(HubEvent<K, C>) + 'static) {
        *self.handler.borrow_mut() = Some(Rc::new(Box::new(handler)));
        self.drain(Instant::now());
    }

    /// Send `cmd` to shard `to`. This shard's own commands are handled at once, never
    /// through the mesh (a handler must be registered).
    pub fn send(&self, to: usize, cmd: C) {
        if to == self.id {
            let handler = self.handler.borrow().clone();
            match handler {
                Some(h) => h(HubEvent::Command(cmd)),
                None => tracing::error!(
                    shard = self.id,
                    "bug: command before the handler was set; dropped"
                ),
            }
            return;
        }
        self.core.borrow_mut().send_command(to, cmd);
        self.drain(Instant::now());
    }

    pub fn shard_id(&self) -> usize {
        self.id
    }

    pub fn directory(&self) -> &Arc<Directory<K, S>> {
        &self.dir
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    pub fn stats(&self) -> HubStats {
        self.core.borrow().stats()
    }

    /// The write pacing delay now in force.
    pub fn write_delay(&self) -> Duration {
        self.core.borrow().write_delay()
    }

    /// Change the write pacing delay (e.g. stretched under load); applies from the next
    /// item pushed.
    pub fn set_write_delay(&self, delay: Duration) {
        self.core.borrow_mut().set_write_delay(delay);
    }

    /// Start publishing `key` on this shard, or resume it within its reconnect grace.
    pub fn publish(
        self: &Rc<Self>,
        key: &K,
        shared: impl FnOnce() -> S,
    ) -> Result<Publisher<K, T, S, C>, PublishError> {
        let g = self.core.borrow_mut().publish(key, shared)?;
        Ok(Publisher {
            hub: Rc::clone(self),
            key: key.clone(),
            id: g.id,
            generation: g.generation,
            ring: g.ring,
            entry: g.entry,
            resumed: g.resumed,
        })
    }

    /// Subscribe to `key`: locally if this shard owns it, else through this shard's
    /// mirror (opening the feed on the first subscriber).
    pub fn subscribe(self: &Rc<Self>, key: &K) -> Result<Subscription<K, T, S, C>, SubscribeError> {
        let g = self.core.borrow_mut().subscribe(key)?;
        self.drain(Instant::now());
        Ok(Subscription {
            sub: Some(g.ring.subscribe()),
            hub: Rc::clone(self),
            key: key.clone(),
            entry: g.entry,
            feed: g.feed,
        })
    }

    /// Shutdown: end every stream and mirror on this shard, so viewers drain what they
    /// have and finish; release this shard's keys.
    pub fn end_all(&self) {
        self.core.borrow_mut().end_all();
        self.drain(Instant::now());
    }
}

/// The publisher side of an owned stream. Dropping it starts the reconnect grace.
pub struct Publisher<K, T, S, C = ()>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    hub: Rc<Hub<K, T, S, C>>,
    key: K,
    id: StreamId,
    generation: u64,
    ring: Rc<Ring<T>>,
    entry: Arc<Entry<K, S>>,
    resumed: bool,
}

impl<K, T, S, C> Publisher<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    /// Deliver one item to every subscriber: the local ring (woken as the write pacer
    /// says), and one copy per remote shard.
    pub fn push(&self, item: T) {
        let now = Instant::now();
        self.hub.core.borrow_mut().push(now, self.id, item);
        self.hub.drain(now);
    }

    /// Send the feed batches pending on this shard now. The ingest driver calls this after
    /// handling one read of publisher input (which batches that read's frames), so
    /// remote viewers don't wait for the batch timer, which stays as the backstop.
    pub fn flush_feeds(&self) {
        self.hub.core.borrow_mut().flush_feeds(self.id);
        self.hub.drain(Instant::now());
    }

    pub fn key(&self) -> &K {
        &self.key
    }

    pub fn entry(&self) -> &Arc<Entry<K, S>> {
        &self.entry
    }

    pub fn ring(&self) -> &Rc<Ring<T>> {
        &self.ring
    }

    /// True when this publisher continues a stream whose previous publisher left within
    /// the reconnect grace.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

impl<K, T, S, C> Drop for Publisher<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    fn drop(&mut self) {
        let now = Instant::now();
        self.hub
            .core
            .borrow_mut()
            .publisher_gone(now, self.id, self.generation);
        self.hub.drain(now);
    }
}

/// A subscriber registered with the hub (viewer counts, feed lifetime). Derefs to the
/// ring [`Subscriber`].
pub struct Subscription<K, T, S, C = ()>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    sub: Option<Subscriber<T>>,
    hub: Rc<Hub<K, T, S, C>>,
    key: K,
    entry: Arc<Entry<K, S>>,
    feed: Option<FeedId>,
}

impl<K, T, S, C> Subscription<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    pub fn entry(&self) -> &Arc<Entry<K, S>> {
        &self.entry
    }

    pub fn key(&self) -> &K {
        &self.key
    }

    /// Served through a feed from another shard.
    pub fn is_remote(&self) -> bool {
        self.feed.is_some()
    }
}

impl<K, T, S, C> std::ops::Deref for Subscription<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    type Target = Subscriber<T>;
    fn deref(&self) -> &Subscriber<T> {
        self.sub.as_ref().expect("only taken in drop")
    }
}

impl<K, T, S, C> std::ops::DerefMut for Subscription<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    fn deref_mut(&mut self) -> &mut Subscriber<T> {
        self.sub.as_mut().expect("only taken in drop")
    }
}

impl<K, T, S, C> Drop for Subscription<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + 'static,
{
    fn drop(&mut self) {
        // The ring subscriber goes first, so the mirror sees its true count.
        self.sub.take();
        self.entry.stats.viewers.fetch_sub(1, Ordering::AcqRel);
        self.hub
            .core
            .borrow_mut()
            .unsubscribed(&self.key, self.feed);
        self.hub.drain(Instant::now());
    }
}
