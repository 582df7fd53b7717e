//! The hub's logic as a state machine: stream registry, feed protocol, mesh batching
//! and shedding, publisher grace, admission limits, write pacing and the stats tick.
//!
//! No sockets, channels, timers or clock: the driver ([`super::Hub`]) feeds inputs
//! (`publish`, `push`, `subscribe`, [`HubCore::handle_envelope`], [`HubCore::handle_timeout`],
//! all with `now`), then drains [`HubCore::poll_transmit`] (batches to send to other
//! shards) and [`HubCore::poll_event`] (what the application must act on), and waits on
//! its channels or on [`HubCore::poll_timeout`]. The rings and the directory are plain
//! shared memory, so the core writes and wakes them directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pacer::{Pace, Pacer};
use super::{Envelope, FeedId, HubConfig, HubStats, PublishError, SubscribeError};
use crate::directory::{ClaimError, ClaimId, Directory, Entry};
use crate::ring::{Describe, Ring};

/// Identifies one owned stream for the lifetime of its ring (never reused on a shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u64);

/// What the application must act on. Drained with [`HubCore::poll_event`].
#[derive(Debug, PartialEq, Eq)]
pub enum HubEvent<K, C> {
    /// A command sent to this shard with [`HubCore::send_command`] by another shard.
    Command(C),
    /// An owned stream ended for good (its grace ran out, or shutdown): its ring is
    /// ended and its key released. Everything the owner keeps for it can go.
    StreamEnded { key: K, claim: ClaimId },
    /// This shard's mirror of a remote stream ended (the owner ended the feed, or the
    /// last local subscriber left).
    MirrorEnded { key: K },
}

/// One batch for one other shard. If the channel is full, give it back with
/// [`HubCore::handle_unsent`].
pub struct Transmit<K, T, C> {
    pub to: usize,
    pub batch: Vec<Envelope<K, T, C>>,
    pub items: usize,
}

/// What a successful publish hands the driver.
pub struct PublishGrant<K, T, S> {
    pub id: StreamId,
    pub generation: u64,
    pub ring: Rc<Ring<T>>,
    pub entry: Arc<Entry<K, S>>,
    pub resumed: bool,
}

/// What a successful subscribe hands the driver.
pub struct SubscribeGrant<K, T, S> {
    pub ring: Rc<Ring<T>>,
    pub entry: Arc<Entry<K, S>>,
    pub feed: Option<FeedId>,
}

struct Owned<K, T, S> {
    key: K,
    ring: Rc<Ring<T>>,
    entry: Arc<Entry<K, S>>,
    /// Remote shards subscribed to this stream.
    feeds: Vec<(usize, FeedId)>,
    /// Bumped by every publisher (first or resuming), so a stale grace timer knows.
    generation: u64,
    publishing: bool,
    video_frames: u64,
    last_tick: (u64, u64),
    pacer: Pacer,
}

struct Mirror<K, T, S> {
    ring: Rc<Ring<T>>,
    entry: Arc<Entry<K, S>>,
    feed: FeedId,
    owner: usize,
    pacer: Pacer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Grace { id: StreamId, generation: u64 },
    WakeOwned(StreamId),
    WakeMirror(FeedId),
}

/// A heap entry: ordered by time, then insertion. Stale entries are skipped when popped.
struct Due {
    at: Instant,
    seq: u64,
    timer: Timer,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Envelopes waiting for one destination shard, and how many items they hold.
type Pending<K, T, C> = (Vec<Envelope<K, T, C>>, usize);

const TICK: Duration = Duration::from_secs(1);

/// One shard's streams and feeds, without I/O.
pub struct HubCore<K, T, S, C> {
    id: usize,
    shards: usize,
    dir: Arc<Directory<K, S>>,
    config: HubConfig,
    /// What every ring of this hub learns about an item, called once per item here.
    describe: Describe<T>,
    write_delay: Duration,
    owned: HashMap<K, StreamId>,
    streams: HashMap<StreamId, Owned<K, T, S>>,
    next_stream: u64,
    mirrors: HashMap<K, Mirror<K, T, S>>,
    mirror_by_feed: HashMap<FeedId, K>,
    next_feed: u64,
    /// Pending envelopes per destination shard, and how many items they hold.
    out: Vec<Pending<K, T, C>>,
    /// Destinations to hand to the driver now (each at most once).
    ready: VecDeque<usize>,
    is_ready: Vec<bool>,
    /// The batch timer: pending items go out by then at the latest.
    flush_at: Option<Instant>,
    next_tick: Instant,
    timers: BinaryHeap<Reverse<Due>>,
    timer_seq: u64,
    events: VecDeque<HubEvent<K, C>>,
    viewers_total: Arc<AtomicU64>,
    stats: HubStats,
}

impl<K, T, S, C> HubCore<K, T, S, C>
where
    K: Clone + Eq + Hash + std::fmt::Display,
    T: Clone,
{
    /// The hub of shard `id` of `shards`, whose rings learn an item's facts from
    /// `describe`.
    pub fn new(
        now: Instant,
        id: usize,
        shards: usize,
        dir: Arc<Directory<K, S>>,
        viewers_total: Arc<AtomicU64>,
        config: HubConfig,
        describe: Describe<T>,
    ) -> Self {
        HubCore {
            id,
            shards,
            dir,
            write_delay: config.write_delay,
            config,
            describe,
            owned: HashMap::new(),
            streams: HashMap::new(),
            next_stream: 0,
            mirrors: HashMap::new(),
            mirror_by_feed: HashMap::new(),
            next_feed: 0,
            out: (0..shards).map(|_| (Vec::new(), 0)).collect(),
            ready: VecDeque::new(),
            is_ready: vec![false; shards],
            flush_at: None,
            next_tick: now + TICK,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            events: VecDeque::new(),
            viewers_total,
            stats: HubStats::default(),
        }
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

    /// The write pacing delay now in force (see [`super::pacer`]).
    pub fn write_delay(&self) -> Duration {
        self.write_delay
    }

    /// Change the write pacing delay; it applies from the next push (armed wakes keep
    /// their time).
    pub fn set_write_delay(&mut self, delay: Duration) {
        self.write_delay = delay;
    }

    pub fn stats(&self) -> HubStats {
        let mut s = self.stats;
        s.owned_streams = self.streams.len();
        s.mirrors = self.mirrors.len();
        s.feeds_out = self.streams.values().map(|o| o.feeds.len()).sum();
        s
    }

    // ---- publishers ----

    /// Start publishing `key` on this shard, or resume it within its reconnect grace.
    pub fn publish(
        &mut self,
        key: &K,
        shared: impl FnOnce() -> S,
    ) -> Result<PublishGrant<K, T, S>, PublishError> {
        if let Some(id) = self.owned.get(key) {
            let stream = self.streams.get_mut(id).expect("owned keys map to streams");
            if stream.publishing {
                return Err(ClaimError::AlreadyLive {
                    key: key.to_string(),
                    owner: self.id,
                }
                .into());
            }
            stream.publishing = true;
            stream.generation += 1;
            stream.entry.publishing.store(true, Ordering::Release);
            stream.entry.stats.resumes.fetch_add(1, Ordering::Relaxed);
            return Ok(PublishGrant {
                id: *id,
                generation: stream.generation,
                ring: Rc::clone(&stream.ring),
                entry: Arc::clone(&stream.entry),
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
        let id = StreamId(self.next_stream);
        self.next_stream += 1;
        let ring = Ring::new(self.config.ring.clone(), self.describe);
        self.streams.insert(
            id,
            Owned {
                key: key.clone(),
                ring: Rc::clone(&ring),
                entry: Arc::clone(&entry),
                feeds: Vec::new(),
                generation: 1,
                publishing: true,
                video_frames: 0,
                last_tick: (0, 0),
                pacer: Pacer::default(),
            },
        );
        self.owned.insert(key.clone(), id);
        Ok(PublishGrant {
            id,
            generation: 1,
            ring,
            entry,
            resumed: false,
        })
    }

    /// Deliver one item of stream `id` to every subscriber: the local ring (woken as the
    /// pacer says), and one copy per remote shard.
    pub fn push(&mut self, now: Instant, id: StreamId, item: T) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let meta = (self.describe)(&item);
        let stats = &stream.entry.stats;
        stats.frames.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(meta.byte_len as u64, Ordering::Relaxed);
        if meta.keyframe {
            stats.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        if meta.video && meta.config_slot.is_none() {
            stream.video_frames += 1;
        }
        if !stream.feeds.is_empty() {
            let mut flush = false;
            for &(to, feed) in &stream.feeds {
                let (batch, count) = &mut self.out[to];
                *count += 1;
                flush |= *count >= self.config.feed_batch_items;
                match batch.last_mut() {
                    Some(Envelope::Items { feed: f, items }) if *f == feed => {
                        items.push(item.clone())
                    }
                    _ => batch.push(Envelope::Items {
                        feed,
                        items: vec![item.clone()],
                    }),
                }
            }
            if flush {
                self.request_flush();
            }
            self.flush_at.get_or_insert(now + self.config.feed_batch);
        }
        let stream = self.streams.get_mut(&id).expect("looked up above");
        stream.ring.push_quiet_described(item, meta);
        match stream.pacer.on_push(now, meta.video, self.write_delay) {
            Pace::WakeNow => stream.ring.wake(),
            Pace::WakeAt(at) => self.arm(at, Timer::WakeOwned(id)),
            Pace::Armed => {}
        }
    }

    /// Send the feed batches pending on this shard now (if stream `id` has feeds).
    pub fn flush_feeds(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(|s| !s.feeds.is_empty()) {
            self.request_flush();
        }
    }

    /// The publisher of `generation` left: the stream waits out its reconnect grace.
    pub fn publisher_gone(&mut self, now: Instant, id: StreamId, generation: u64) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.generation != generation {
            return;
        }
        stream.publishing = false;
        stream.entry.publishing.store(false, Ordering::Release);
        // What the publisher sent last goes out now, not at its paced wake.
        stream.ring.wake();
        let at = now + self.config.reconnect_grace;
        self.arm(at, Timer::Grace { id, generation });
    }

    // ---- subscribers ----

    /// Subscribe to `key`: locally if this shard owns it, else through this shard's
    /// mirror (opening the feed on the first subscriber). Counts the viewer.
    pub fn subscribe(&mut self, key: &K) -> Result<SubscribeGrant<K, T, S>, SubscribeError> {
        let (ring, entry, feed) = if let Some(s) = self.owned.get(key).map(|id| &self.streams[id]) {
            (Rc::clone(&s.ring), Arc::clone(&s.entry), None)
        } else if let Some(m) = self.mirrors.get(key) {
            (Rc::clone(&m.ring), Arc::clone(&m.entry), Some(m.feed))
        } else {
            let not_found = || SubscribeError::NotFound {
                key: key.to_string(),
            };
            let entry = self.dir.lookup(key).ok_or_else(not_found)?;
            if entry.owner == self.id {
                // The directory says ours but the stream is gone: it just ended.
                return Err(not_found());
            }
            (
                Ring::new(self.config.ring.clone(), self.describe),
                entry,
                None,
            )
        };
        self.admit(key, &entry)?;
        let feed = match feed {
            Some(f) => Some(f),
            None if entry.owner != self.id => Some(self.open_feed(key, &entry, &ring)),
            None => None,
        };
        Ok(SubscribeGrant { ring, entry, feed })
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

    fn open_feed(&mut self, key: &K, entry: &Arc<Entry<K, S>>, ring: &Rc<Ring<T>>) -> FeedId {
        let feed = FeedId(((self.id as u64) << 48) | self.next_feed);
        self.next_feed += 1;
        self.mirrors.insert(
            key.clone(),
            Mirror {
                ring: Rc::clone(ring),
                entry: Arc::clone(entry),
                feed,
                owner: entry.owner,
                pacer: Pacer::default(),
            },
        );
        self.mirror_by_feed.insert(feed, key.clone());
        let open = Envelope::OpenFeed {
            key: key.clone(),
            feed,
            from: self.id,
        };
        self.enqueue(entry.owner, open, 0);
        self.request_flush();
        feed
    }

    /// A subscriber of `key` left (its ring subscriber and its per-stream viewer count
    /// are already gone). Closes the feed after the mirror's last subscriber.
    pub fn unsubscribed(&mut self, key: &K, feed: Option<FeedId>) {
        self.viewers_total.fetch_sub(1, Ordering::AcqRel);
        let Some(feed) = feed else { return };
        let last = self
            .mirrors
            .get(key)
            .is_some_and(|m| m.feed == feed && m.ring.subscriber_count() == 0);
        if !last {
            return;
        }
        let m = self.mirrors.remove(key).expect("checked above");
        self.mirror_by_feed.remove(&feed);
        let close = Envelope::CloseFeed {
            key: key.clone(),
            feed,
            from: self.id,
        };
        self.enqueue(m.owner, close, 0);
        self.request_flush();
        self.events
            .push_back(HubEvent::MirrorEnded { key: key.clone() });
    }

    // ---- commands and the mesh ----

    /// Queue `cmd` for shard `to` (another shard: the driver handles its own at once).
    pub fn send_command(&mut self, to: usize, cmd: C) {
        debug_assert_ne!(to, self.id, "same-shard commands never cross the mesh");
        self.enqueue(to, Envelope::Cmd(cmd), 0);
        self.request_flush();
    }

    /// One envelope from shard `from`.
    pub fn handle_envelope(&mut self, now: Instant, _from: usize, env: Envelope<K, T, C>) {
        match env {
            Envelope::OpenFeed { key, feed, from } => {
                match self.owned.get(&key).and_then(|id| self.streams.get_mut(id)) {
                    Some(s) => {
                        s.feeds.push((from, feed));
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
                self.request_flush();
            }
            Envelope::CloseFeed { key, feed, from } => {
                if let Some(s) = self.owned.get(&key).and_then(|id| self.streams.get_mut(id)) {
                    s.feeds.retain(|f| *f != (from, feed));
                }
            }
            Envelope::Items { feed, items } => {
                let describe = self.describe;
                let Some(m) = self
                    .mirror_by_feed
                    .get(&feed)
                    .and_then(|k| self.mirrors.get_mut(k))
                else {
                    return;
                };
                let mut wake = false;
                let mut arm = None;
                for item in items {
                    let meta = describe(&item);
                    m.ring.push_quiet_described(item, meta);
                    match m.pacer.on_push(now, meta.video, self.write_delay) {
                        Pace::WakeNow => wake = true,
                        Pace::WakeAt(at) => arm = Some(at),
                        Pace::Armed => {}
                    }
                }
                // One wake for the whole batch at most.
                if wake {
                    m.ring.wake();
                }
                if let Some(at) = arm.filter(|_| m.pacer.armed() == arm) {
                    self.arm(at, Timer::WakeMirror(feed));
                }
            }
            Envelope::FeedEnded { feed } => {
                if let Some(key) = self.mirror_by_feed.remove(&feed) {
                    if let Some(m) = self.mirrors.remove(&key) {
                        m.ring.end();
                        self.events.push_back(HubEvent::MirrorEnded { key });
                    }
                }
            }
            Envelope::Cmd(cmd) => self.events.push_back(HubEvent::Command(cmd)),
        }
    }

    fn enqueue(&mut self, to: usize, env: Envelope<K, T, C>, items: usize) {
        let (batch, count) = &mut self.out[to];
        batch.push(env);
        *count += items;
    }

    /// Hand every non-empty batch to the driver at the next `poll_transmit`.
    fn request_flush(&mut self) {
        for to in 0..self.shards {
            if !self.out[to].0.is_empty() && !self.is_ready[to] {
                self.is_ready[to] = true;
                self.ready.push_back(to);
            }
        }
    }

    /// The next batch to send. Each pending destination comes out once per flush.
    pub fn poll_transmit(&mut self) -> Option<Transmit<K, T, C>> {
        while let Some(to) = self.ready.pop_front() {
            self.is_ready[to] = false;
            let (batch, count) = &mut self.out[to];
            if batch.is_empty() {
                continue;
            }
            let items = std::mem::take(count);
            self.stats.batches_sent += 1;
            self.stats.items_sent += items as u64;
            return Some(Transmit {
                to,
                batch: std::mem::take(batch),
                items,
            });
        }
        None
    }

    /// Shard `t.to`'s channel was full: keep the batch for the next try. A shard that
    /// does not drain its channel gets its feeds ended once more than
    /// `feed_backlog_items` wait, instead of buffering without bound.
    pub fn handle_unsent(&mut self, now: Instant, t: Transmit<K, T, C>) {
        self.stats.batches_sent -= 1;
        self.stats.items_sent -= t.items as u64;
        let (batch, count) = &mut self.out[t.to];
        let mut batch_now = t.batch;
        batch_now.append(batch);
        *batch = batch_now;
        *count += t.items;
        if *count > self.config.feed_backlog_items {
            self.shed_feeds_to(t.to);
        }
        self.flush_at.get_or_insert(now + self.config.feed_batch);
    }

    fn shed_feeds_to(&mut self, to: usize) {
        let (batch, count) = &mut self.out[to];
        batch.retain(|e| !matches!(e, Envelope::Items { .. }));
        *count = 0;
        for stream in self.streams.values_mut() {
            for (_, feed) in stream.feeds.iter().filter(|(shard, _)| *shard == to) {
                batch.push(Envelope::FeedEnded { feed: *feed });
                self.stats.feeds_shed += 1;
            }
            stream.feeds.retain(|(shard, _)| *shard != to);
        }
        tracing::warn!(
            shard = self.id,
            to,
            "feeds to a shard that does not keep up were ended"
        );
    }

    // ---- time ----

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse(Due {
            at,
            seq: self.timer_seq,
            timer,
        }));
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heap = self.timers.peek().map(|Reverse(d)| d.at);
        [heap, self.flush_at, Some(self.next_tick)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Run everything due at `now`: batch flushes, paced wakes, grace expiries, the
    /// once-a-second stats tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush_at = None;
            self.request_flush();
        }
        while self.timers.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(due) = self.timers.pop().expect("peeked");
            match due.timer {
                Timer::WakeOwned(id) => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        if s.pacer.armed() == Some(due.at) && s.pacer.handle_timeout(now) {
                            s.ring.wake();
                        }
                    }
                }
                Timer::WakeMirror(feed) => {
                    if let Some(m) = self
                        .mirror_by_feed
                        .get(&feed)
                        .and_then(|k| self.mirrors.get_mut(k))
                    {
                        if m.pacer.armed() == Some(due.at) && m.pacer.handle_timeout(now) {
                            m.ring.wake();
                        }
                    }
                }
                Timer::Grace { id, generation } => self.end_if_still_gone(id, generation),
            }
        }
        if self.next_tick <= now {
            self.next_tick = now + TICK;
            self.tick(TICK);
        }
    }

    fn end_if_still_gone(&mut self, id: StreamId, generation: u64) {
        let gone = self
            .streams
            .get(&id)
            .is_some_and(|s| s.generation == generation && !s.publishing);
        if !gone {
            return;
        }
        let stream = self.streams.remove(&id).expect("checked above");
        tracing::info!(stream = %stream.key, "stream ended: its publisher did not come back within the reconnect grace");
        self.end_stream(stream);
        self.request_flush();
    }

    fn end_stream(&mut self, stream: Owned<K, T, S>) {
        self.owned.remove(&stream.key);
        stream.ring.end();
        for &(to, feed) in &stream.feeds {
            self.enqueue(to, Envelope::FeedEnded { feed }, 0);
        }
        self.dir.release(&stream.key, stream.entry.claim);
        self.events.push_back(HubEvent::StreamEnded {
            key: stream.key,
            claim: stream.entry.claim,
        });
    }

    /// Shutdown: end every stream and mirror on this shard, so viewers drain what they
    /// have and finish; release this shard's keys.
    pub fn end_all(&mut self) {
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            let stream = self.streams.remove(&id).expect("listed above");
            self.end_stream(stream);
        }
        for (key, m) in self.mirrors.drain() {
            m.ring.end();
            self.events.push_back(HubEvent::MirrorEnded { key });
        }
        self.mirror_by_feed.clear();
    }

    /// Once a second: rates and lag counters into the directory's stats.
    fn tick(&mut self, period: Duration) {
        let secs = period.as_secs_f64();
        for stream in self.streams.values_mut() {
            let stats = &stream.entry.stats;
            let bytes = stats.bytes.load(Ordering::Relaxed);
            let frames = stream.video_frames;
            let (last_bytes, last_frames) =
                std::mem::replace(&mut stream.last_tick, (bytes, frames));
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
            .streams
            .values()
            .map(|s| (&s.ring, &s.entry))
            .chain(self.mirrors.values().map(|m| (&m.ring, &m.entry)));
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

    /// The next thing the application must act on.
    pub fn poll_event(&mut self) -> Option<HubEvent<K, C>> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{ItemMeta, Next, RingConfig};
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake, Waker};

    /// `V(n)`: video (keyframe when n % 10 == 0), `A(n)`: audio.
    #[derive(Clone, Debug, PartialEq)]
    enum It {
        V(u32),
        A(u32),
    }

    fn describe(it: &It) -> ItemMeta {
        ItemMeta {
            keyframe: matches!(it, It::V(n) if n % 10 == 0),
            video: matches!(it, It::V(_)),
            config_slot: None,
            byte_len: 100,
        }
    }

    type Core = HubCore<String, It, (), &'static str>;
    const MS: Duration = Duration::from_millis(1);

    fn config() -> HubConfig {
        HubConfig {
            ring: RingConfig {
                slots: 64,
                ..RingConfig::default()
            },
            reconnect_grace: 100 * MS,
            ..HubConfig::default()
        }
    }

    fn mesh(n: usize, config: HubConfig, t0: Instant) -> Vec<Core> {
        let dir = Arc::new(Directory::new(0));
        let viewers = Arc::new(AtomicU64::new(0));
        (0..n)
            .map(|id| {
                HubCore::new(
                    t0,
                    id,
                    n,
                    Arc::clone(&dir),
                    Arc::clone(&viewers),
                    config.clone(),
                    describe,
                )
            })
            .collect()
    }

    /// Deliver every pending batch (lossless, in order) until the mesh is quiet.
    fn settle(cores: &mut [Core], now: Instant) {
        loop {
            let mut moved = false;
            for from in 0..cores.len() {
                while let Some(t) = cores[from].poll_transmit() {
                    moved = true;
                    for env in t.batch {
                        cores[t.to].handle_envelope(now, from, env);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn events(core: &mut Core) -> Vec<HubEvent<String, &'static str>> {
        std::iter::from_fn(|| core.poll_event()).collect()
    }

    fn drain(sub: &mut crate::ring::Subscriber<It>) -> Vec<It> {
        let mut got = Vec::new();
        while let Next::Item { item, .. } = sub.next() {
            got.push(item);
        }
        got
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Registers a waiting subscriber with a counting waker.
    fn park(sub: &crate::ring::Subscriber<It>, count: &Arc<Count>) {
        let waker = Waker::from(Arc::clone(count));
        let mut cx = Context::from_waker(&waker);
        let mut w = Box::pin(sub.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
    }

    fn wakes(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn grace_expiry_and_resume() {
        let t0 = Instant::now();
        let mut c = mesh(1, config(), t0).remove(0);
        let key = "live/a".to_string();
        let g = c.publish(&key, || ()).unwrap();
        assert!(!g.resumed);
        c.push(t0, g.id, It::V(0));
        c.publisher_gone(t0, g.id, g.generation);
        assert!(!g.entry.publishing.load(Ordering::Acquire));
        c.handle_timeout(t0 + 50 * MS);
        // Resumed within the grace: same stream, same ring.
        let r = c.publish(&key, || ()).unwrap();
        assert!(r.resumed && r.id == g.id && Rc::ptr_eq(&r.ring, &g.ring));
        assert_eq!(r.entry.stats.resumes.load(Ordering::Relaxed), 1);
        // The first publisher's grace timer is stale now.
        c.handle_timeout(t0 + 150 * MS);
        assert_eq!(c.stats().owned_streams, 1);
        assert!(events(&mut c).is_empty());
        // The second one leaves and does not come back.
        let t1 = t0 + 200 * MS;
        c.publisher_gone(t1, r.id, r.generation);
        c.handle_timeout(t1 + 99 * MS);
        assert_eq!(c.stats().owned_streams, 1, "still in grace");
        c.handle_timeout(t1 + 100 * MS);
        assert_eq!(c.stats().owned_streams, 0);
        assert!(g.ring.is_ended());
        assert!(c.directory().lookup(&key).is_none(), "key released");
        assert_eq!(
            events(&mut c),
            vec![HubEvent::StreamEnded {
                key: key.clone(),
                claim: g.entry.claim
            }]
        );
        // A new publisher starts a new stream.
        assert!(!c.publish(&key, || ()).unwrap().resumed);
    }

    #[test]
    fn publish_twice_is_refused() {
        let t0 = Instant::now();
        let mut c = mesh(2, config(), t0);
        let key = "live/a".to_string();
        let g = c[0].publish(&key, || ()).unwrap();
        assert!(matches!(
            c[0].publish(&key, || ()),
            Err(PublishError::Claim(ClaimError::AlreadyLive {
                owner: 0,
                ..
            }))
        ));
        c[0].publisher_gone(t0, g.id, g.generation);
        assert_eq!(
            c[1].publish(&key, || ()).err(),
            Some(PublishError::OwnedElsewhere { owner: 0 })
        );
    }

    #[test]
    fn feed_open_snapshot_live_and_close() {
        let t0 = Instant::now();
        let mut c = mesh(2, config(), t0);
        let key = "live/a".to_string();
        let g = c[0].publish(&key, || ()).unwrap();
        for n in 0..15 {
            c[0].push(t0, g.id, It::V(n));
        }
        let s = c[1].subscribe(&key).unwrap();
        let feed = s.feed.expect("remote stream: served through a feed");
        let mut sub = s.ring.subscribe();
        settle(&mut c, t0);
        assert_eq!(c[0].stats().feeds_out, 1);
        assert_eq!(c[1].stats().mirrors, 1);
        // The snapshot starts at the current GOP's keyframe.
        assert_eq!(drain(&mut sub), (10..15).map(It::V).collect::<Vec<_>>());
        // A second subscriber on shard 1 shares the mirror and the feed.
        let s2 = c[1].subscribe(&key).unwrap();
        assert_eq!(s2.feed, Some(feed));
        let sub2 = s2.ring.subscribe();
        assert!(c[1].poll_transmit().is_none(), "no second OpenFeed");
        // Live items follow without a gap, batched until the flush timer.
        c[0].push(t0, g.id, It::V(15));
        c[0].push(t0, g.id, It::A(15));
        settle(&mut c, t0);
        assert!(drain(&mut sub).is_empty(), "waits for the batch timer");
        assert_eq!(c[0].poll_timeout(), Some(t0 + config().feed_batch));
        c[0].handle_timeout(t0 + config().feed_batch);
        settle(&mut c, t0);
        assert_eq!(drain(&mut sub), vec![It::V(15), It::A(15)]);
        // Both leave: the feed closes after the last.
        drop(sub);
        c[1].unsubscribed(&key, s.feed);
        settle(&mut c, t0);
        assert_eq!(c[0].stats().feeds_out, 1, "one subscriber left");
        drop(sub2);
        c[1].unsubscribed(&key, s2.feed);
        settle(&mut c, t0);
        assert_eq!(c[0].stats().feeds_out, 0);
        assert_eq!(c[1].stats().mirrors, 0);
        assert_eq!(events(&mut c[1]), vec![HubEvent::MirrorEnded { key }]);
    }

    #[test]
    fn feed_ends_when_the_stream_ends() {
        let t0 = Instant::now();
        let mut c = mesh(2, config(), t0);
        let key = "live/a".to_string();
        let g = c[0].publish(&key, || ()).unwrap();
        c[0].push(t0, g.id, It::V(0));
        let s = c[1].subscribe(&key).unwrap();
        let mut sub = s.ring.subscribe();
        settle(&mut c, t0);
        c[0].publisher_gone(t0, g.id, g.generation);
        c[0].handle_timeout(t0 + 100 * MS);
        settle(&mut c, t0);
        assert_eq!(drain(&mut sub), vec![It::V(0)]);
        assert_eq!(sub.next(), Next::Ended);
        assert_eq!(c[1].stats().mirrors, 0);
        assert_eq!(
            events(&mut c[1]),
            vec![HubEvent::MirrorEnded { key: key.clone() }]
        );
        // A subscriber that asks the owner after the end gets the end at once.
        assert!(matches!(
            c[1].subscribe(&key).err(),
            Some(SubscribeError::NotFound { .. })
        ));
    }

    #[test]
    fn open_feed_for_a_stream_that_just_ended_is_ended() {
        let t0 = Instant::now();
        let mut c = mesh(2, config(), t0);
        let key = "live/a".to_string();
        let g = c[0].publish(&key, || ()).unwrap();
        let s = c[1].subscribe(&key).unwrap();
        // The stream ends before shard 0 reads the OpenFeed.
        c[0].publisher_gone(t0, g.id, g.generation);
        c[0].handle_timeout(t0 + 100 * MS);
        settle(&mut c, t0);
        assert!(s.ring.is_ended());
        assert_eq!(c[1].stats().mirrors, 0);
    }

    #[test]
    fn a_shard_that_does_not_drain_is_shed() {
        let t0 = Instant::now();
        let cfg = HubConfig {
            feed_backlog_items: 100,
            ..config()
        };
        let mut c = mesh(2, cfg, t0);
        let key = "live/a".to_string();
        let g = c[0].publish(&key, || ()).unwrap();
        let _s = c[1].subscribe(&key).unwrap();
        settle(&mut c, t0);
        assert_eq!(c[0].stats().feeds_out, 1);
        // Shard 1 stops reading: every transmit comes back.
        let mut now = t0;
        for n in 0..200 {
            c[0].push(now, g.id, It::V(n));
            now += MS;
            c[0].handle_timeout(now);
            while let Some(t) = c[0].poll_transmit() {
                c[0].handle_unsent(now, t);
            }
        }
        let stats = c[0].stats();
        assert_eq!(stats.feeds_shed, 1);
        assert_eq!(stats.feeds_out, 0);
        assert_eq!(stats.items_sent, 0);
        // What is left for shard 1 is the end of its feed, no items.
        c[0].handle_timeout(now + config().feed_batch);
        let t = c[0].poll_transmit().expect("the FeedEnded is pending");
        assert_eq!(t.items, 0);
        assert!(matches!(t.batch[..], [Envelope::FeedEnded { .. }]));
        // Once shard 1 reads again it sees its mirror end.
        for env in t.batch {
            c[1].handle_envelope(now, 0, env);
        }
        assert_eq!(c[1].stats().mirrors, 0);
        // The stream goes on for its local viewers.
        assert_eq!(c[0].stats().owned_streams, 1);
    }

    #[test]
    fn admission_limits() {
        let t0 = Instant::now();
        let cfg = HubConfig {
            max_viewers: 3,
            max_viewers_per_stream: 2,
            ..config()
        };
        let mut c = mesh(2, cfg, t0);
        let (a, b) = ("live/a".to_string(), "live/b".to_string());
        c[0].publish(&a, || ()).unwrap();
        c[0].publish(&b, || ()).unwrap();
        let a1 = c[0].subscribe(&a).unwrap();
        let _a2 = c[1].subscribe(&a).unwrap();
        assert_eq!(
            c[0].subscribe(&a).err(),
            Some(SubscribeError::TooManyStreamViewers {
                key: a.clone(),
                limit: 2
            })
        );
        let _b1 = c[0].subscribe(&b).unwrap();
        assert_eq!(
            c[1].subscribe(&b).err(),
            Some(SubscribeError::TooManyViewers { limit: 3 })
        );
        assert_eq!(a1.entry.stats.viewers.load(Ordering::Relaxed), 2);
        // One leaves: a place is free again.
        a1.entry.stats.viewers.fetch_sub(1, Ordering::AcqRel);
        c[0].unsubscribed(&a, None);
        assert!(c[0].subscribe(&a).is_ok());
        assert_eq!(
            c[0].subscribe(&"live/none".to_string()).err(),
            Some(SubscribeError::NotFound {
                key: "live/none".into()
            })
        );
    }

    #[test]
    fn owned_ring_is_woken_as_the_pacer_says() {
        let t0 = Instant::now();
        let cfg = HubConfig {
            write_delay: 20 * MS,
            ..config()
        };
        let mut c = mesh(1, cfg, t0).remove(0);
        let g = c.publish(&"live/a".to_string(), || ()).unwrap();
        let mut sub = g.ring.subscribe();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        park(&sub, &count);
        c.push(t0, g.id, It::V(0));
        assert_eq!(wakes(&count), 1, "first video frame at once");
        drain(&mut sub);
        park(&sub, &count);
        c.push(t0 + 5 * MS, g.id, It::A(0));
        c.push(t0 + 8 * MS, g.id, It::V(1));
        assert_eq!(wakes(&count), 1, "within half the budget: held");
        assert_eq!(c.poll_timeout(), Some(t0 + 10 * MS), "one wake armed");
        c.handle_timeout(t0 + 9 * MS);
        assert_eq!(wakes(&count), 1);
        c.handle_timeout(t0 + 10 * MS);
        assert_eq!(wakes(&count), 2);
        assert_eq!(drain(&mut sub), vec![It::A(0), It::V(1)]);
        // Delay 0: every push wakes.
        c.set_write_delay(Duration::ZERO);
        assert_eq!(c.write_delay(), Duration::ZERO);
        for n in 0..3 {
            park(&sub, &count);
            c.push(t0 + 21 * MS, g.id, It::A(n));
            drain(&mut sub);
        }
        assert_eq!(wakes(&count), 5);
    }

    #[test]
    fn mirror_ring_is_paced_too() {
        let t0 = Instant::now();
        let cfg = HubConfig {
            write_delay: 20 * MS,
            ..config()
        };
        let mut c = mesh(2, cfg, t0);
        let key = "live/a".to_string();
        let g = c[0].publish(&key, || ()).unwrap();
        let s = c[1].subscribe(&key).unwrap();
        let mut sub = s.ring.subscribe();
        settle(&mut c, t0);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        park(&sub, &count);
        // One batch of audio only: no wake until the delay has passed.
        c[0].push(t0, g.id, It::A(0));
        c[0].push(t0, g.id, It::A(1));
        c[0].flush_feeds(g.id);
        settle(&mut c, t0 + MS);
        assert_eq!(wakes(&count), 0);
        assert_eq!(c[1].poll_timeout(), Some(t0 + 21 * MS));
        c[1].handle_timeout(t0 + 21 * MS);
        assert_eq!(wakes(&count), 1);
        assert_eq!(drain(&mut sub), vec![It::A(0), It::A(1)]);
        // A batch with video, more than the delay after the last wake: at once, once.
        park(&sub, &count);
        c[0].push(t0 + 50 * MS, g.id, It::V(10));
        c[0].push(t0 + 50 * MS, g.id, It::A(2));
        c[0].flush_feeds(g.id);
        settle(&mut c, t0 + 50 * MS);
        assert_eq!(wakes(&count), 2);
    }

    #[test]
    fn commands_cross_in_order_with_feed_traffic() {
        let t0 = Instant::now();
        let mut c = mesh(2, config(), t0);
        c[0].send_command(1, "adopt");
        c[0].send_command(1, "kick");
        settle(&mut c, t0);
        assert_eq!(
            events(&mut c[1]),
            vec![HubEvent::Command("adopt"), HubEvent::Command("kick")]
        );
        assert!(events(&mut c[0]).is_empty());
    }
}
