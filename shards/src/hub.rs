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
//! Publisher reconnect grace: when a publisher goes, the stream stays (viewers stay
//! connected) for `reconnect_grace`; a new publisher of the same key on this shard
//! resumes it. A publisher that lands on another shard is told who the owner is
//! ([`PublishError::OwnedElsewhere`]) so the server can hand the connection over.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::directory::{ClaimError, Directory, Entry};
use crate::event::LocalEvent;
use crate::pace::{Pace, Pacer};
use crate::ring::{Ring, RingConfig, RingItem, Subscriber};
use crate::rt::{self, Queue};
use crate::ShardContext;

/// Identifies one feed; allocated by the subscribing shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeedId(u64);

/// A message between shards. `Run` carries work for the receiving shard (e.g. adopting
/// a publisher's connection).
pub enum Envelope<K, T> {
    OpenFeed { key: K, feed: FeedId, from: usize },
    CloseFeed { key: K, feed: FeedId, from: usize },
    Items { feed: FeedId, items: Vec<T> },
    FeedEnded { feed: FeedId },
    Run(Box<dyn FnOnce() + Send>),
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
    /// Subscribers of a stream are woken at most this often (0: at every item), so each
    /// writes everything that arrived meanwhile in one go: one timer per stream and
    /// shard, not per subscriber. Trades that much latency for fewer writes.
    pub wake_batch: Duration,
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
            wake_batch: Duration::ZERO,
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

struct Owned<K, T, S> {
    ring: Rc<Ring<T>>,
    entry: Arc<Entry<K, S>>,
    /// Remote shards subscribed to this stream.
    feeds: RefCell<Vec<(usize, FeedId)>>,
    /// Bumped by every publisher (first or resuming), so a stale grace timer knows.
    generation: Cell<u64>,
    publishing: Cell<bool>,
    video_frames: Cell<u64>,
    last_tick: Cell<(u64, u64)>,
    /// Write pacing of the ring's viewers (see `crate::pace`).
    pace: Rc<RefCell<RingPace>>,
}

/// A ring's write pacing: the pure policy and the instant its timer is armed for.
#[derive(Default)]
struct RingPace {
    pacer: Pacer,
    timer_at: Option<std::time::Instant>,
}

struct Mirror<K, T, S> {
    ring: Rc<Ring<T>>,
    pace: Rc<RefCell<RingPace>>,
    entry: Arc<Entry<K, S>>,
    feed: FeedId,
    owner: usize,
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

/// One shard's streams and feeds. Lives in an `Rc` on its shard.
pub struct Hub<K: Send + 'static, T: Send + 'static, S> {
    id: usize,
    dir: Arc<Directory<K, S>>,
    config: HubConfig,
    owned: RefCell<HashMap<K, Rc<Owned<K, T, S>>>>,
    mirrors: RefCell<HashMap<K, Rc<Mirror<K, T, S>>>>,
    mirror_by_feed: RefCell<HashMap<FeedId, K>>,
    next_feed: Cell<u64>,
    /// Pending envelopes per destination shard, and how many items they hold.
    out: RefCell<Vec<(Vec<Envelope<K, T>>, usize)>>,
    senders: Vec<Option<rt::channel::ConnectedSender<Vec<Envelope<K, T>>>>>,
    flush_armed: Cell<bool>,
    viewers_total: Arc<AtomicU64>,
    stats: RefCell<HubStats>,
    /// The write budget in force (starts at `config.wake_batch`; see `set_write_delay`).
    write_delay: Cell<Duration>,
}

type Batch<K, T> = Vec<Envelope<K, T>>;

impl<K, T, S> Hub<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    /// Connect this shard to the mesh and start serving feeds. Every shard must call this
    /// (the channel connections wait for both ends).
    pub async fn start(
        ctx: &mut ShardContext<Batch<K, T>>,
        dir: Arc<Directory<K, S>>,
        viewers_total: Arc<AtomicU64>,
        config: HubConfig,
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
                    for env in batch {
                        hub.handle(from, env);
                    }
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
        let hub = Rc::new(Hub {
            id: ctx.id,
            dir,
            owned: RefCell::default(),
            mirrors: RefCell::default(),
            mirror_by_feed: RefCell::default(),
            next_feed: Cell::new(0),
            out: RefCell::new((0..connected.len()).map(|_| (Vec::new(), 0)).collect()),
            senders: connected,
            flush_armed: Cell::new(false),
            viewers_total,
            stats: RefCell::default(),
            write_delay: Cell::new(config.wake_batch),
            config,
        });
        *hub_cell.borrow_mut() = Some(Rc::clone(&hub));
        ready.fire();
        let ticker = Rc::downgrade(&hub);
        rt::spawn(Queue::Control, async move {
            loop {
                rt::sleep(Duration::from_secs(1)).await;
                let Some(hub) = ticker.upgrade() else { break };
                hub.tick(Duration::from_secs(1));
            }
        });
        hub
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

    /// Change the viewer write budget (the server stretches it under load).
    pub fn set_write_delay(&self, d: Duration) {
        self.write_delay.set(d);
    }

    pub fn write_delay(&self) -> Duration {
        self.write_delay.get()
    }

    pub fn stats(&self) -> HubStats {
        let mut s = *self.stats.borrow();
        s.owned_streams = self.owned.borrow().len();
        s.mirrors = self.mirrors.borrow().len();
        s.feeds_out = self
            .owned
            .borrow()
            .values()
            .map(|o| o.feeds.borrow().len())
            .sum();
        s
    }

    /// Start publishing `key` on this shard, or resume it within its reconnect grace.
    pub fn publish(
        self: &Rc<Self>,
        key: &K,
        shared: impl FnOnce() -> S,
    ) -> Result<Publisher<K, T, S>, PublishError> {
        if let Some(stream) = self.owned.borrow().get(key).cloned() {
            if stream.publishing.get() {
                return Err(ClaimError::AlreadyLive {
                    key: key.to_string(),
                    owner: self.id,
                }
                .into());
            }
            stream.publishing.set(true);
            stream.generation.set(stream.generation.get() + 1);
            stream.entry.publishing.store(true, Ordering::Release);
            stream.entry.stats.resumes.fetch_add(1, Ordering::Relaxed);
            return Ok(Publisher {
                hub: Rc::clone(self),
                key: key.clone(),
                generation: stream.generation.get(),
                stream,
                resumed: true,
            });
        }
        let entry = match self.dir.claim(key, self.id, shared) {
            Ok(entry) => entry,
            Err(ClaimError::InGrace { owner, .. }) if owner != self.id => {
                return Err(PublishError::OwnedElsewhere { owner })
            }
            Err(e) => return Err(e.into()),
        };
        let stream = Rc::new(Owned {
            ring: Ring::new(self.config.ring.clone()),
            entry,
            feeds: RefCell::default(),
            generation: Cell::new(1),
            publishing: Cell::new(true),
            video_frames: Cell::new(0),
            last_tick: Cell::new((0, 0)),
            pace: Rc::default(),
        });
        self.owned
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&stream));
        Ok(Publisher {
            hub: Rc::clone(self),
            key: key.clone(),
            generation: 1,
            stream,
            resumed: false,
        })
    }

    /// Subscribe to `key`: locally if this shard owns it, else through this shard's
    /// mirror (opening the feed on the first subscriber).
    pub fn subscribe(self: &Rc<Self>, key: &K) -> Result<Subscription<K, T, S>, SubscribeError> {
        let (ring, entry, feed) = if let Some(s) = self.owned.borrow().get(key) {
            (Rc::clone(&s.ring), Arc::clone(&s.entry), None)
        } else if let Some(m) = self.mirrors.borrow().get(key) {
            (Rc::clone(&m.ring), Arc::clone(&m.entry), Some(m.feed))
        } else {
            let entry = self
                .dir
                .lookup(key)
                .ok_or_else(|| SubscribeError::NotFound {
                    key: key.to_string(),
                })?;
            if entry.owner == self.id {
                // The directory says ours but the stream is gone: it just ended.
                return Err(SubscribeError::NotFound {
                    key: key.to_string(),
                });
            }
            (Ring::new(self.config.ring.clone()), entry, None)
        };
        self.admit(key, &entry)?;
        let feed = match feed {
            Some(f) => Some(f),
            None if entry.owner != self.id => Some(self.open_feed(key, &entry, &ring)),
            None => None,
        };
        Ok(Subscription {
            sub: Some(ring.subscribe()),
            hub: Rc::clone(self),
            key: key.clone(),
            entry,
            feed,
        })
    }

    fn admit(&self, key: &K, entry: &Entry<K, S>) -> Result<(), SubscribeError> {
        let limit = self.config.max_viewers;
        if self.viewers_total.fetch_add(1, Ordering::AcqRel) >= limit && limit > 0 {
            self.viewers_total.fetch_sub(1, Ordering::AcqRel);
            return Err(SubscribeError::TooManyViewers { limit });
        }
        let limit = self.config.max_viewers_per_stream;
        if entry.stats.viewers.fetch_add(1, Ordering::AcqRel) >= limit && limit > 0 {
            entry.stats.viewers.fetch_sub(1, Ordering::AcqRel);
            self.viewers_total.fetch_sub(1, Ordering::AcqRel);
            return Err(SubscribeError::TooManyStreamViewers {
                key: key.to_string(),
                limit,
            });
        }
        Ok(())
    }

    fn open_feed(&self, key: &K, entry: &Arc<Entry<K, S>>, ring: &Rc<Ring<T>>) -> FeedId {
        let n = self.next_feed.get();
        self.next_feed.set(n + 1);
        let feed = FeedId(((self.id as u64) << 48) | n);
        let mirror = Rc::new(Mirror {
            ring: Rc::clone(ring),
            pace: Rc::default(),
            entry: Arc::clone(entry),
            feed,
            owner: entry.owner,
        });
        self.mirrors.borrow_mut().insert(key.clone(), mirror);
        self.mirror_by_feed.borrow_mut().insert(feed, key.clone());
        self.enqueue(
            entry.owner,
            Envelope::OpenFeed {
                key: key.clone(),
                feed,
                from: self.id,
            },
            0,
        );
        self.flush_now();
        feed
    }

    fn unsubscribed(&self, key: &K, feed: Option<FeedId>) {
        self.viewers_total.fetch_sub(1, Ordering::AcqRel);
        let Some(feed) = feed else { return };
        let mirror = self.mirrors.borrow().get(key).cloned();
        if let Some(m) = mirror.filter(|m| m.feed == feed && m.ring.subscriber_count() == 0) {
            self.mirrors.borrow_mut().remove(key);
            self.mirror_by_feed.borrow_mut().remove(&feed);
            self.enqueue(
                m.owner,
                Envelope::CloseFeed {
                    key: key.clone(),
                    feed,
                    from: self.id,
                },
                0,
            );
            self.flush_now();
        }
    }

    /// Shutdown: end every stream and mirror on this shard, so viewers drain what they
    /// have and finish; release this shard's keys.
    pub fn end_all(&self) {
        let owned: Vec<_> = self.owned.borrow_mut().drain().collect();
        for (key, stream) in owned {
            stream.generation.set(stream.generation.get() + 1);
            stream.ring.end();
            self.dir.release(&key, stream.entry.claim);
        }
        for (_, m) in self.mirrors.borrow_mut().drain() {
            m.ring.end();
        }
        self.mirror_by_feed.borrow_mut().clear();
    }

    /// Send `work` to run on shard `to` (this shard runs it at once).
    pub fn run_on(&self, to: usize, work: Box<dyn FnOnce() + Send>) {
        if to == self.id {
            work();
            return;
        }
        self.enqueue(to, Envelope::Run(work), 0);
        self.flush_now();
    }

    fn handle(&self, _from: usize, env: Envelope<K, T>) {
        match env {
            Envelope::OpenFeed { key, feed, from } => {
                let stream = self.owned.borrow().get(&key).cloned();
                match stream {
                    Some(s) => {
                        s.feeds.borrow_mut().push((from, feed));
                        let items: Vec<T> = s
                            .ring
                            .snapshot()
                            .into_iter()
                            .map(|(_, item)| item)
                            .collect();
                        let n = items.len();
                        self.enqueue(from, Envelope::Items { feed, items }, n);
                    }
                    None => self.enqueue(from, Envelope::FeedEnded { feed }, 0),
                }
                self.flush_now();
            }
            Envelope::CloseFeed { key, feed, from } => {
                if let Some(s) = self.owned.borrow().get(&key) {
                    s.feeds.borrow_mut().retain(|f| *f != (from, feed));
                }
            }
            Envelope::Items { feed, items } => {
                let key = self.mirror_by_feed.borrow().get(&feed).cloned();
                let mirror = key.and_then(|k| self.mirrors.borrow().get(&k).cloned());
                if let Some(m) = mirror {
                    // Paced like the owner's ring, once for the whole batch.
                    let mut video = false;
                    for item in items {
                        video |= item.is_video();
                        m.ring.push_quiet(item);
                    }
                    self.paced_wake(&m.ring, &m.pace, video);
                }
            }
            Envelope::FeedEnded { feed } => {
                if let Some(key) = self.mirror_by_feed.borrow_mut().remove(&feed) {
                    if let Some(m) = self.mirrors.borrow_mut().remove(&key) {
                        m.ring.end();
                    }
                }
            }
            Envelope::Run(work) => work(),
        }
    }

    /// Items were pushed quietly into `ring`: wake its subscribers now or arm its timer,
    /// as the pacer says (see `crate::pace`). One timer per ring at most.
    fn paced_wake(&self, ring: &Rc<Ring<T>>, pace: &Rc<RefCell<RingPace>>, video: bool) {
        let now = std::time::Instant::now();
        let mut p = pace.borrow_mut();
        match p.pacer.on_push(now, video, self.write_delay.get()) {
            Pace::WakeNow => {
                // A timer still armed is stale now; the next wait arms its own.
                p.timer_at = None;
                drop(p);
                ring.wake();
            }
            Pace::WakeAt(at) => {
                if p.timer_at.is_some_and(|t| t <= at) {
                    return;
                }
                p.timer_at = Some(at);
                let (ring, pace) = (Rc::downgrade(ring), Rc::clone(pace));
                rt::spawn(Queue::Media, async move {
                    let mut at = at;
                    loop {
                        rt::sleep(at.saturating_duration_since(std::time::Instant::now())).await;
                        let mut p = pace.borrow_mut();
                        if p.timer_at != Some(at) {
                            return; // superseded by a wake or an earlier timer
                        }
                        p.timer_at = None;
                        if p.pacer.on_timer(std::time::Instant::now()) {
                            drop(p);
                            if let Some(ring) = ring.upgrade() {
                                ring.wake();
                            }
                            return;
                        }
                        match p.pacer.deadline() {
                            Some(next) => {
                                p.timer_at = Some(next);
                                at = next;
                            }
                            None => return,
                        }
                    }
                });
            }
        }
    }

    fn enqueue(&self, to: usize, env: Envelope<K, T>, items: usize) {
        let mut out = self.out.borrow_mut();
        let (batch, count) = &mut out[to];
        batch.push(env);
        *count += items;
    }

    /// Queue one item for a feed, merged into the feed's open `Items` envelope.
    fn enqueue_item(&self, to: usize, feed: FeedId, item: T) {
        let mut out = self.out.borrow_mut();
        let (batch, count) = &mut out[to];
        *count += 1;
        if let Some(Envelope::Items { feed: f, items }) = batch.last_mut() {
            if *f == feed {
                items.push(item);
                return;
            }
        }
        batch.push(Envelope::Items {
            feed,
            items: vec![item],
        });
    }

    fn arm_flush(self: &Rc<Self>) {
        if self.flush_armed.replace(true) {
            return;
        }
        let hub = Rc::downgrade(self);
        let wait = self.config.feed_batch;
        rt::spawn(Queue::Media, async move {
            rt::sleep(wait).await;
            if let Some(hub) = hub.upgrade() {
                hub.flush_armed.set(false);
                hub.flush_now();
                if hub.out.borrow().iter().any(|(b, _)| !b.is_empty()) {
                    hub.arm_flush();
                }
            }
        });
    }

    /// Send every pending batch whose channel has room.
    fn flush_now(&self) {
        let mut shed = Vec::new();
        {
            let mut out = self.out.borrow_mut();
            let mut stats = self.stats.borrow_mut();
            for (to, (batch, count)) in out.iter_mut().enumerate() {
                if batch.is_empty() {
                    continue;
                }
                let Some(tx) = &self.senders[to] else {
                    continue;
                };
                let sending = std::mem::take(batch);
                match rt::channel::try_send(tx, sending) {
                    Ok(()) => {
                        stats.batches_sent += 1;
                        stats.items_sent += *count as u64;
                        *count = 0;
                    }
                    Err(unsent) => {
                        *batch = unsent;
                        if *count > self.config.feed_backlog_items {
                            shed.push(to);
                        }
                    }
                }
            }
        }
        for to in shed {
            self.shed_feeds_to(to);
        }
    }

    /// Shard `to` is not draining its channel: end every feed to it instead of
    /// buffering without bound. Its viewers get the end of stream and can reconnect.
    fn shed_feeds_to(&self, to: usize) {
        let mut out = self.out.borrow_mut();
        let (batch, count) = &mut out[to];
        batch.retain(|e| !matches!(e, Envelope::Items { .. }));
        *count = 0;
        for stream in self.owned.borrow().values() {
            let mut feeds = stream.feeds.borrow_mut();
            for (_, feed) in feeds.iter().filter(|(shard, _)| *shard == to) {
                batch.push(Envelope::FeedEnded { feed: *feed });
                self.stats.borrow_mut().feeds_shed += 1;
            }
            feeds.retain(|(shard, _)| *shard != to);
        }
        tracing::warn!(
            shard = self.id,
            to,
            "feeds to a shard that does not keep up were ended"
        );
    }

    fn publisher_gone(self: &Rc<Self>, key: &K, generation: u64) {
        let Some(stream) = self.owned.borrow().get(key).cloned() else {
            return;
        };
        if stream.generation.get() != generation {
            return;
        }
        stream.publishing.set(false);
        stream.entry.publishing.store(false, Ordering::Release);
        let hub = Rc::downgrade(self);
        let key = key.clone();
        let grace = self.config.reconnect_grace;
        rt::spawn(Queue::Control, async move {
            rt::sleep(grace).await;
            if let Some(hub) = hub.upgrade() {
                hub.end_if_still_gone(&key, generation);
            }
        });
    }

    fn end_if_still_gone(&self, key: &K, generation: u64) {
        let stream = self.owned.borrow().get(key).cloned();
        let Some(stream) =
            stream.filter(|s| s.generation.get() == generation && !s.publishing.get())
        else {
            return;
        };
        self.owned.borrow_mut().remove(key);
        stream.ring.end();
        for (to, feed) in stream.feeds.borrow_mut().drain(..) {
            self.enqueue(to, Envelope::FeedEnded { feed }, 0);
        }
        self.flush_now();
        self.dir.release(key, stream.entry.claim);
        tracing::info!(stream = %key, "stream ended: its publisher did not come back within the reconnect grace");
    }

    /// Once a second: rates and lag counters into the directory's stats.
    fn tick(&self, period: Duration) {
        for stream in self.owned.borrow().values() {
            let stats = &stream.entry.stats;
            let bytes = stats.bytes.load(Ordering::Relaxed);
            let frames = stream.video_frames.get();
            let (last_bytes, last_frames) = stream.last_tick.replace((bytes, frames));
            let secs = period.as_secs_f64();
            stats.bitrate_bps.store(
                ((bytes - last_bytes) as f64 * 8.0 / secs) as u64,
                Ordering::Relaxed,
            );
            stats.video_fps_milli.store(
                ((frames - last_frames) as f64 * 1000.0 / secs) as u64,
                Ordering::Relaxed,
            );
        }
        let rings = self
            .owned
            .borrow()
            .values()
            .map(|s| (Rc::clone(&s.ring), Arc::clone(&s.entry)))
            .chain(
                self.mirrors
                    .borrow()
                    .values()
                    .map(|m| (Rc::clone(&m.ring), Arc::clone(&m.entry))),
            )
            .collect::<Vec<_>>();
        for (ring, entry) in rings {
            let r = ring.stats();
            let reported = ring.reported();
            entry
                .stats
                .lag_skips
                .fetch_add(r.lag_skips - reported.lag_skips, Ordering::Relaxed);
            entry
                .stats
                .too_slow
                .fetch_add(r.too_slow - reported.too_slow, Ordering::Relaxed);
            ring.set_reported(r);
        }
    }
}

/// The publisher side of an owned stream. Dropping it starts the reconnect grace.
pub struct Publisher<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    hub: Rc<Hub<K, T, S>>,
    key: K,
    stream: Rc<Owned<K, T, S>>,
    generation: u64,
    resumed: bool,
}

impl<K, T, S> Publisher<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    /// Deliver one item to every subscriber: the local ring, and one copy per remote shard.
    pub fn push(&self, item: T) {
        let stats = &self.stream.entry.stats;
        stats.frames.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(item.byte_len() as u64, Ordering::Relaxed);
        if item.is_keyframe() {
            stats.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        if item.is_video() && item.config_slot().is_none() {
            self.stream
                .video_frames
                .set(self.stream.video_frames.get() + 1);
        }
        let feeds = self.stream.feeds.borrow();
        if !feeds.is_empty() {
            let mut flush = false;
            for &(to, feed) in feeds.iter() {
                self.hub.enqueue_item(to, feed, item.clone());
                flush |= self.hub.out.borrow()[to].1 >= self.hub.config.feed_batch_items;
            }
            if flush {
                self.hub.flush_now();
            }
            self.hub.arm_flush();
        }
        drop(feeds);
        let video = item.is_video();
        self.stream.ring.push_quiet(item);
        self.hub
            .paced_wake(&self.stream.ring, &self.stream.pace, video);
    }

    /// Send the feed batches pending on this shard now. The ingest driver calls this after
    /// handling one read of publisher input (which batches that read's frames), so
    /// remote viewers don't wait for the batch timer, which stays as the backstop.
    pub fn flush_feeds(&self) {
        if !self.stream.feeds.borrow().is_empty() {
            self.hub.flush_now();
        }
    }

    pub fn key(&self) -> &K {
        &self.key
    }

    pub fn entry(&self) -> &Arc<Entry<K, S>> {
        &self.stream.entry
    }

    pub fn ring(&self) -> &Rc<Ring<T>> {
        &self.stream.ring
    }

    /// True when this publisher continues a stream whose previous publisher left within
    /// the reconnect grace.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

impl<K, T, S> Drop for Publisher<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.hub.publisher_gone(&self.key, self.generation);
    }
}

/// A subscriber registered with the hub (viewer counts, feed lifetime). Derefs to the
/// ring [`Subscriber`].
pub struct Subscription<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    sub: Option<Subscriber<T>>,
    hub: Rc<Hub<K, T, S>>,
    key: K,
    entry: Arc<Entry<K, S>>,
    feed: Option<FeedId>,
}

impl<K, T, S> Subscription<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
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

impl<K, T, S> std::ops::Deref for Subscription<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    type Target = Subscriber<T>;
    fn deref(&self) -> &Subscriber<T> {
        self.sub.as_ref().expect("only taken in drop")
    }
}

impl<K, T, S> std::ops::DerefMut for Subscription<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    fn deref_mut(&mut self) -> &mut Subscriber<T> {
        self.sub.as_mut().expect("only taken in drop")
    }
}

impl<K, T, S> Drop for Subscription<K, T, S>
where
    K: Clone + Eq + Hash + std::fmt::Display + Send + 'static,
    T: RingItem + Send + 'static,
    S: Send + Sync + 'static,
{
    fn drop(&mut self) {
        // The ring subscriber goes first, so the mirror sees its true count.
        self.sub.take();
        self.entry.stats.viewers.fetch_sub(1, Ordering::AcqRel);
        self.hub.unsubscribed(&self.key, self.feed);
    }
}
