//! The per-shard fan-out ring of one stream.
//!
//! A publisher (or a cross-shard feed) pushes items; every subscriber on this shard reads
//! them by sequence number through its own cursor. One push is one slot write plus a wake
//! of the subscribers that are actually waiting. Nothing here is shared across threads:
//! each shard has its own ring per stream (the owner's ring, or a mirror fed from the
//! owner), so there are no atomics and no locks on the per-frame path.
//!
//! What the ring also does:
//! - **Serialize once**: a slot carries up to [`FORMATS`] per-format encodings of its
//!   item (RTMP chunks, FLV tag, ...), built on first use and shared by every subscriber
//!   of that format on this shard.
//! - **Instant start**: the latest item of each config slot (codec configs, metadata) is
//!   cached, and a joiner starts at the newest keyframe still in the ring, so a decoder
//!   gets configs + a complete GOP at once. The GOP handed to a joiner is bounded by
//!   `gop_budget_bytes`; when it is over budget, audio is dropped from the snapshot
//!   first (audio never evicts video), and if video alone is over, the joiner waits for
//!   the next keyframe.
//! - **Lag**: a subscriber whose cursor fell out of the ring is moved to the newest
//!   keyframe (a counted skip; it never receives a broken GOP), and one that keeps
//!   falling behind is told to go ([`Next::TooSlow`]).
//!
//! What it does not do: sockets, timers, protocols. Items are opaque apart from their
//! [`ItemMeta`], which the ring's describe function (given to [`Ring::new`]) tells it once
//! per push and which the slot keeps, so reading an item asks nothing of it.

use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How many per-format encodings a slot can cache.
pub const FORMATS: usize = 4;
/// How many config slots a ring caches (e.g. video config, audio config, metadata).
pub const CONFIG_SLOTS: usize = 4;

/// What the ring needs to know about an item, learned once when it is pushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemMeta {
    /// A decoder can start here: a video keyframe.
    pub keyframe: bool,
    pub video: bool,
    /// The config slot (< [`CONFIG_SLOTS`]) this item replaces, for codec configs and
    /// metadata that a late joiner needs before media.
    pub config_slot: Option<usize>,
    /// Bytes this item holds, for the ring's and the GOP snapshot's byte budgets.
    pub byte_len: usize,
}

/// How a ring learns an item's [`ItemMeta`]: a plain function given at construction and
/// called once per push. A function rather than a trait on the item, so the item type can
/// come from a crate that knows nothing of this one (the orphan rule would forbid the
/// application to implement our trait for it) and nobody wraps it in a newtype.
pub type Describe<T> = fn(&T) -> ItemMeta;

#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Slot count, a power of two.
    pub slots: usize,
    /// The ring evicts its oldest items when it holds more than this.
    pub max_bytes: usize,
    /// The most a joiner is handed as the current GOP.
    pub gop_budget_bytes: usize,
    /// A subscriber is told [`Next::TooSlow`] at this many lag skips within `lag_window`.
    pub max_lag_skips: u32,
    pub lag_window: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            slots: 1024,
            max_bytes: 64 << 20,
            gop_budget_bytes: 16 << 20,
            max_lag_skips: 3,
            lag_window: Duration::from_secs(30),
        }
    }
}

struct Slot<T> {
    seq: u64,
    item: Option<T>,
    /// The item's facts (valid while `item` is set).
    meta: ItemMeta,
    formats: [OnceCell<Bytes>; FORMATS],
}

impl<T> Slot<T> {
    fn empty() -> Self {
        Slot {
            seq: u64::MAX,
            item: None,
            meta: ItemMeta::default(),
            formats: Default::default(),
        }
    }
}

struct CachedConfig<T> {
    seq: u64,
    /// The config slot it fills (< [`CONFIG_SLOTS`]).
    slot: usize,
    item: T,
    formats: [OnceCell<Bytes>; FORMATS],
}

/// Counters of one ring, read by the stream's QoS reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub items: u64,
    pub bytes: u64,
    pub lag_skips: u64,
    pub too_slow: u64,
}

struct Inner<T> {
    slots: Box<[Slot<T>]>,
    mask: u64,
    /// Sequence number of the next push.
    head: u64,
    /// Oldest sequence number still held.
    tail: u64,
    bytes: usize,
    /// Newest keyframe's sequence number.
    last_key: Option<u64>,
    /// Bytes pushed since `last_key` (all items, and video only).
    gop_bytes: usize,
    gop_video_bytes: usize,
    has_video: bool,
    /// The newest config of each slot, and the ones in force at `last_key` (what a joiner
    /// starting at that keyframe needs first).
    configs: [Option<Rc<CachedConfig<T>>>; CONFIG_SLOTS],
    key_configs: [Option<Rc<CachedConfig<T>>>; CONFIG_SLOTS],
    ended: bool,
    stats: RingStats,
    /// Waker per subscriber id, and the ids that have one set.
    waiters: Vec<Option<Waker>>,
    waiting: Vec<usize>,
    free_ids: Vec<usize>,
    subscribers: usize,
    config: RingConfig,
}

/// One stream's ring on one shard. Cheap to share inside the shard (`Rc`).
pub struct Ring<T> {
    inner: RefCell<Inner<T>>,
    describe: Describe<T>,
    /// Stats already added to the stream's shared counters (see the hub's tick).
    reported: std::cell::Cell<RingStats>,
}

impl<T: Clone> Ring<T> {
    /// A ring that learns each pushed item's facts from `describe`.
    pub fn new(config: RingConfig, describe: Describe<T>) -> Rc<Self> {
        assert!(
            config.slots.is_power_of_two(),
            "ring slots are validated as a power of two by the config"
        );
        let slots = (0..config.slots)
            .map(|_| Slot::empty())
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Rc::new(Ring {
            inner: RefCell::new(Inner {
                mask: config.slots as u64 - 1,
                slots,
                head: 0,
                tail: 0,
                bytes: 0,
                last_key: None,
                gop_bytes: 0,
                gop_video_bytes: 0,
                has_video: false,
                configs: Default::default(),
                key_configs: Default::default(),
                ended: false,
                stats: RingStats::default(),
                waiters: Vec::new(),
                waiting: Vec::new(),
                free_ids: Vec::new(),
                subscribers: 0,
                config,
            }),
            describe,
            reported: Default::default(),
        })
    }

    /// The stats last added to shared counters.
    pub fn reported(&self) -> RingStats {
        self.reported.get()
    }

    pub fn set_reported(&self, stats: RingStats) {
        self.reported.set(stats);
    }

    /// Append an item and wake the subscribers waiting for one. Returns its sequence number.
    pub fn push(&self, item: T) -> u64 {
        let seq = self.push_quiet(item);
        self.wake();
        seq
    }

    /// Wake the subscribers waiting for an item.
    pub fn wake(&self) {
        self.inner.borrow_mut().wake_all();
    }

    /// Append an item without waking anyone: the caller wakes the ring later, once for
    /// several items (a feed batch, or a write-batching window), so each subscriber
    /// writes them all at once.
    pub fn push_quiet(&self, item: T) -> u64 {
        let meta = (self.describe)(&item);
        self.push_quiet_described(item, meta)
    }

    /// [`Ring::push_quiet`] with the item's facts already known: the hub describes each
    /// item once for its stats, its pacer and this ring.
    pub(crate) fn push_quiet_described(&self, item: T, meta: ItemMeta) -> u64 {
        debug_assert_eq!(
            meta,
            (self.describe)(&item),
            "described by this ring's function"
        );
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let seq = inner.head;
        let len = meta.byte_len;
        // Evict by slot count: the slot we are about to reuse.
        if seq >= inner.slots.len() as u64 {
            inner.evict_through(seq - inner.slots.len() as u64);
        }
        if meta.video {
            inner.has_video = true;
        }
        if meta.keyframe {
            inner.last_key = Some(seq);
            inner.gop_bytes = 0;
            inner.gop_video_bytes = 0;
            inner.key_configs = inner.configs.clone();
        }
        inner.gop_bytes += len;
        if meta.video {
            inner.gop_video_bytes += len;
        }
        if let Some(slot) = meta.config_slot {
            if slot < CONFIG_SLOTS {
                inner.configs[slot] = Some(Rc::new(CachedConfig {
                    seq,
                    slot,
                    item: item.clone(),
                    formats: Default::default(),
                }));
            }
        }
        let idx = (seq & inner.mask) as usize;
        let s = &mut inner.slots[idx];
        s.seq = seq;
        s.item = Some(item);
        s.meta = meta;
        for f in &mut s.formats {
            f.take();
        }
        inner.head = seq + 1;
        inner.bytes += len;
        inner.stats.items += 1;
        inner.stats.bytes += len as u64;
        // Evict by bytes, never the item just pushed.
        while inner.bytes > inner.config.max_bytes && inner.tail < seq {
            let t = inner.tail;
            inner.evict_through(t);
        }
        seq
    }

    /// The stream ended for good: subscribers drain what is left, then see [`Next::Ended`].
    pub fn end(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.ended = true;
        inner.wake_all();
    }

    pub fn is_ended(&self) -> bool {
        self.inner.borrow().ended
    }

    /// Sequence number of the next push.
    pub fn head(&self) -> u64 {
        self.inner.borrow().head
    }

    pub fn subscriber_count(&self) -> usize {
        self.inner.borrow().subscribers
    }

    pub fn stats(&self) -> RingStats {
        self.inner.borrow().stats
    }

    /// Bytes currently held by the ring's slots.
    pub fn held_bytes(&self) -> usize {
        self.inner.borrow().bytes
    }

    /// The per-format encoding of item `seq` (a ring slot or a cached config), built by
    /// `build` on first use and shared afterwards. `None` if the item is gone.
    pub fn serialized(
        &self,
        seq: u64,
        format: usize,
        build: impl FnOnce(&T) -> Bytes,
    ) -> Option<Bytes> {
        let inner = self.inner.borrow();
        let slot = &inner.slots[(seq & inner.mask) as usize];
        if slot.seq == seq && seq >= inner.tail {
            if let Some(item) = &slot.item {
                return Some(slot.formats[format].get_or_init(|| build(item)).clone());
            }
        }
        inner
            .configs
            .iter()
            .chain(inner.key_configs.iter())
            .flatten()
            .find(|c| c.seq == seq)
            .map(|c| c.formats[format].get_or_init(|| build(&c.item)).clone())
    }

    /// The items a new mirror of this ring needs to start its own joiners instantly:
    /// cached configs, then the current GOP (within budget), in sequence order.
    pub fn snapshot(&self) -> Vec<(u64, T)> {
        let inner = self.inner.borrow();
        let at = inner.join_point();
        let (start, audio_from) = (at.start, at.audio_from);
        let mut out: Vec<(u64, T)> = inner
            .configs_for(at)
            .iter()
            .flatten()
            .filter(|c| c.seq < start)
            .map(|c| (c.seq, c.item.clone()))
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        for seq in start..inner.head {
            let slot = &inner.slots[(seq & inner.mask) as usize];
            if let Some(item) = &slot.item {
                let meta = slot.meta;
                if slot.seq == seq
                    && (meta.video || meta.config_slot.is_some() || seq >= audio_from)
                {
                    out.push((seq, item.clone()));
                }
            }
        }
        out
    }

    /// A subscriber that starts with the cached configs and the current GOP.
    pub fn subscribe(self: &Rc<Self>) -> Subscriber<T> {
        let mut inner = self.inner.borrow_mut();
        let id = match inner.free_ids.pop() {
            Some(id) => id,
            None => {
                inner.waiters.push(None);
                inner.waiters.len() - 1
            }
        };
        inner.subscribers += 1;
        let mut sub = Subscriber {
            ring: Rc::clone(self),
            id,
            cursor: inner.head,
            audio_from: 0,
            await_keyframe: false,
            pending_configs: Vec::new(),
            delivered_configs: [None; CONFIG_SLOTS],
            skips: Vec::new(),
        };
        sub.start_at(&inner, inner.join_point());
        sub
    }
}

impl<T> Inner<T> {
    fn evict_through(&mut self, seq: u64) {
        while self.tail <= seq && self.tail < self.head {
            let idx = (self.tail & self.mask) as usize;
            let slot = &mut self.slots[idx];
            if slot.seq == self.tail {
                if slot.item.take().is_some() {
                    self.bytes -= slot.meta.byte_len;
                }
                for f in &mut slot.formats {
                    f.take();
                }
            }
            self.tail += 1;
        }
        if self.last_key.is_some_and(|k| k < self.tail) {
            self.last_key = None;
        }
    }

    /// The configs a subscriber starting at `at` needs first.
    fn configs_for(&self, at: JoinPoint) -> &[Option<Rc<CachedConfig<T>>>; CONFIG_SLOTS] {
        if Some(at.start) == self.last_key {
            &self.key_configs
        } else {
            &self.configs
        }
    }

    fn wake_all(&mut self) {
        for id in self.waiting.drain(..) {
            if let Some(w) = self.waiters[id].take() {
                w.wake();
            }
        }
    }

    /// Where a subscriber that fell out of the ring resumes: the newest keyframe (no GOP
    /// budget: it had the stream already), or the next one.
    fn skip_point(&self) -> JoinPoint {
        match self.last_key {
            Some(key) => JoinPoint {
                start: key,
                audio_from: key,
                await_keyframe: false,
            },
            None => JoinPoint {
                start: self.head,
                audio_from: self.head,
                await_keyframe: self.has_video,
            },
        }
    }

    /// Where a joiner starts: (first sequence number, audio before this is dropped),
    /// following the GOP budget rule in the module note.
    fn join_point(&self) -> JoinPoint {
        let budget = self.config.gop_budget_bytes;
        match self.last_key {
            Some(_) if self.gop_bytes <= budget => self.skip_point(),
            // Over budget: the GOP without its audio (audio never evicts video), or, if
            // the video alone is over, the next keyframe.
            Some(key) if self.gop_video_bytes <= budget => JoinPoint {
                start: key,
                audio_from: self.head,
                await_keyframe: false,
            },
            Some(_) => JoinPoint {
                start: self.head,
                audio_from: self.head,
                await_keyframe: self.has_video,
            },
            None => self.skip_point(),
        }
    }
}

#[derive(Clone, Copy)]
struct JoinPoint {
    start: u64,
    audio_from: u64,
    await_keyframe: bool,
}

/// What a subscriber reads next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// An item to deliver; `seq` identifies it for [`Subscriber::serialized`].
    Item { seq: u64, item: T },
    /// Nothing new yet: wait with [`Subscriber::wait`].
    Pending,
    /// The stream ended and everything was read.
    Ended,
    /// The subscriber fell out of the ring too often: disconnect it.
    TooSlow { skips: u32 },
}

/// An item as [`Subscriber::next_map`] hands it out, borrowed from its slot.
pub struct Entry<'a, T> {
    pub seq: u64,
    pub item: &'a T,
    ring: &'a Ring<T>,
}

impl<T: Clone> Entry<'_, T> {
    /// This item's shared encoding in `format` (see [`Ring::serialized`]).
    pub fn serialized(&self, format: usize, build: impl FnOnce(&T) -> Bytes) -> Option<Bytes> {
        self.ring.serialized(self.seq, format, build)
    }
}

/// One reader of a ring. Dropping it unregisters it.
pub struct Subscriber<T> {
    ring: Rc<Ring<T>>,
    id: usize,
    cursor: u64,
    /// Audio items before this sequence number are skipped (GOP over budget).
    audio_from: u64,
    /// Skip everything but configs until the next keyframe.
    await_keyframe: bool,
    /// Cached configs to deliver before `cursor` (sequence number, config slot, item),
    /// in order.
    pending_configs: Vec<(u64, usize, T)>,
    /// Sequence number of the config delivered for each slot.
    delivered_configs: [Option<u64>; CONFIG_SLOTS],
    skips: Vec<Instant>,
}

impl<T: Clone> Subscriber<T> {
    fn start_at(&mut self, inner: &Inner<T>, at: JoinPoint) {
        self.cursor = at.start;
        self.audio_from = at.audio_from;
        self.await_keyframe = at.await_keyframe;
        self.pending_configs.clear();
        for (slot, c) in inner.configs_for(at).iter().enumerate() {
            if let Some(c) = c {
                if c.seq < at.start && self.delivered_configs[slot] != Some(c.seq) {
                    self.pending_configs.push((c.seq, c.slot, c.item.clone()));
                }
            }
        }
        self.pending_configs
            .sort_by_key(|(seq, _, _)| std::cmp::Reverse(*seq));
    }

    /// The next item, skipping forward to the newest keyframe if this subscriber fell
    /// out of the ring.
    // Not an Iterator: `Next` has Pending/TooSlow/Ended states an Option cannot carry.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Next<T> {
        self.next_map(|e| e.item.clone())
    }

    /// Like [`Subscriber::next`], but hands the item to `map` by reference instead of
    /// cloning it: a viewer that only needs the item's serialized bytes
    /// ([`Entry::serialized`]) saves a clone and a drop per frame (two reference-count
    /// updates of its payload; bench/RESULTS.md, runtime micro-benchmarks).
    pub fn next_map<R>(&mut self, map: impl FnOnce(Entry<'_, T>) -> R) -> Next<R> {
        if let Some((seq, slot, item)) = self.pending_configs.pop() {
            self.note_config(seq, Some(slot));
            let ring = Rc::clone(&self.ring);
            return Next::Item {
                seq,
                item: map(Entry {
                    seq,
                    item: &item,
                    ring: &ring,
                }),
            };
        }
        let ring = Rc::clone(&self.ring);
        let inner = ring.inner.borrow();
        loop {
            if self.cursor < inner.tail {
                let now = Instant::now();
                let window = inner.config.lag_window;
                self.skips.retain(|t| now.duration_since(*t) < window);
                self.skips.push(now);
                drop(inner);
                let mut inner = ring.inner.borrow_mut();
                inner.stats.lag_skips += 1;
                if self.skips.len() as u32 > inner.config.max_lag_skips {
                    inner.stats.too_slow += 1;
                    return Next::TooSlow {
                        skips: self.skips.len() as u32,
                    };
                }
                let at = inner.skip_point();
                self.start_at(&inner, at);
                drop(inner);
                return self.next_map(map);
            }
            if self.cursor >= inner.head {
                return if inner.ended {
                    Next::Ended
                } else {
                    Next::Pending
                };
            }
            let seq = self.cursor;
            self.cursor += 1;
            let slot = &inner.slots[(seq & inner.mask) as usize];
            let Some(item) = slot.item.as_ref().filter(|_| slot.seq == seq) else {
                continue;
            };
            let meta = slot.meta;
            if meta.config_slot.is_some() {
                self.note_config(seq, meta.config_slot);
                return Next::Item {
                    seq,
                    item: map(Entry {
                        seq,
                        item,
                        ring: &ring,
                    }),
                };
            }
            if self.await_keyframe {
                if !meta.keyframe {
                    continue;
                }
                self.await_keyframe = false;
                self.audio_from = seq;
            }
            if seq < self.audio_from && !meta.video {
                continue;
            }
            return Next::Item {
                seq,
                item: map(Entry {
                    seq,
                    item,
                    ring: &ring,
                }),
            };
        }
    }

    fn note_config(&mut self, seq: u64, config_slot: Option<usize>) {
        if let Some(slot) = config_slot.filter(|s| *s < CONFIG_SLOTS) {
            self.delivered_configs[slot] = Some(seq);
        }
    }

    /// The per-format encoding of an item this subscriber just read (see [`Ring::serialized`]).
    pub fn serialized(
        &self,
        seq: u64,
        format: usize,
        build: impl FnOnce(&T) -> Bytes,
    ) -> Option<Bytes> {
        self.ring.serialized(seq, format, build)
    }

    /// Resolves when [`Subscriber::next`] may have something: a new item, the end of the
    /// stream, or configs to deliver.
    pub fn wait(&self) -> Wait<'_, T> {
        Wait { sub: self }
    }

    /// Items between this subscriber and the head of the ring.
    pub fn lag(&self) -> u64 {
        self.ring.head().saturating_sub(self.cursor)
    }

    pub fn ring(&self) -> &Rc<Ring<T>> {
        &self.ring
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        let mut inner = self.ring.inner.borrow_mut();
        inner.waiters[self.id] = None;
        inner.waiting.retain(|id| *id != self.id);
        inner.free_ids.push(self.id);
        inner.subscribers -= 1;
    }
}

/// Future of [`Subscriber::wait`].
pub struct Wait<'a, T> {
    sub: &'a Subscriber<T>,
}

impl<T: Clone> Future for Wait<'_, T> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let sub = self.sub;
        let mut inner = sub.ring.inner.borrow_mut();
        if !sub.pending_configs.is_empty() || sub.cursor < inner.head || inner.ended {
            return Poll::Ready(());
        }
        let slot = &mut inner.waiters[sub.id];
        let was_waiting = slot.is_some();
        *slot = Some(cx.waker().clone());
        if !was_waiting {
            inner.waiting.push(sub.id);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct It {
        n: u32,
        video: bool,
        key: bool,
        config: Option<usize>,
        len: usize,
    }

    fn v(n: u32, key: bool) -> It {
        It {
            n,
            video: true,
            key,
            config: None,
            len: 100,
        }
    }
    fn a(n: u32) -> It {
        It {
            n,
            video: false,
            key: false,
            config: None,
            len: 10,
        }
    }
    fn cfg(n: u32, slot: usize) -> It {
        It {
            n,
            video: slot == 0,
            key: false,
            config: Some(slot),
            len: 5,
        }
    }

    fn describe(it: &It) -> ItemMeta {
        ItemMeta {
            keyframe: it.key,
            video: it.video,
            config_slot: it.config,
            byte_len: it.len,
        }
    }

    fn small(slots: usize) -> RingConfig {
        RingConfig {
            slots,
            ..RingConfig::default()
        }
    }

    fn drain(sub: &mut Subscriber<It>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Next::Item { item, .. } = sub.next() {
            out.push(item.n);
        }
        out
    }

    #[test]
    fn delivers_in_order_across_wrap_around() {
        let ring = Ring::new(small(8), describe);
        ring.push(v(0, true));
        let mut sub = ring.subscribe();
        let mut got = drain(&mut sub);
        for n in 1..100 {
            ring.push(if n % 3 == 0 { a(n) } else { v(n, false) });
            got.extend(drain(&mut sub));
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(sub.next(), Next::Pending);
    }

    #[test]
    fn joiner_gets_configs_then_current_gop() {
        let ring = Ring::new(small(64), describe);
        ring.push(cfg(1, 0));
        ring.push(cfg(2, 1));
        ring.push(v(3, true));
        ring.push(a(4));
        ring.push(v(5, false));
        ring.push(v(6, true));
        ring.push(a(7));
        ring.push(v(8, false));
        let mut sub = ring.subscribe();
        assert_eq!(drain(&mut sub), vec![1, 2, 6, 7, 8]);
    }

    #[test]
    fn config_change_inside_gop_is_delivered_once_in_place() {
        let ring = Ring::new(small(64), describe);
        ring.push(cfg(1, 0));
        ring.push(v(2, true));
        ring.push(cfg(3, 0));
        ring.push(v(4, false));
        let mut sub = ring.subscribe();
        // The old config comes first (it precedes the GOP), the new one in its place.
        assert_eq!(drain(&mut sub), vec![1, 2, 3, 4]);
    }

    #[test]
    fn lagging_subscriber_skips_to_newest_keyframe_and_is_counted() {
        let ring = Ring::new(small(8), describe);
        ring.push(cfg(0, 0));
        ring.push(v(1, true));
        let mut sub = ring.subscribe();
        assert_eq!(drain(&mut sub), vec![0, 1]);
        for n in 2..20 {
            ring.push(v(n, n == 15));
        }
        // 2..14 fell out of the ring: resume at keyframe 15, never mid-GOP; the config is
        // not repeated because it did not change.
        assert_eq!(drain(&mut sub), vec![15, 16, 17, 18, 19]);
        assert_eq!(ring.stats().lag_skips, 1);
    }

    #[test]
    fn lagging_without_keyframe_in_ring_waits_for_next_keyframe() {
        let ring = Ring::new(small(4), describe);
        ring.push(v(0, true));
        let mut sub = ring.subscribe();
        assert_eq!(drain(&mut sub), vec![0]);
        for n in 1..10 {
            ring.push(v(n, false));
        }
        assert_eq!(drain(&mut sub), Vec::<u32>::new());
        ring.push(a(10));
        ring.push(v(11, true));
        ring.push(a(12));
        assert_eq!(drain(&mut sub), vec![11, 12]);
    }

    #[test]
    fn persistent_lag_is_too_slow() {
        let ring = Ring::new(
            RingConfig {
                slots: 4,
                max_lag_skips: 2,
                ..RingConfig::default()
            },
            describe,
        );
        let mut sub = ring.subscribe();
        let mut n = 0;
        let mut outcome = None;
        for _ in 0..3 {
            for _ in 0..10 {
                ring.push(v(n, n % 10 == 9));
                n += 1;
            }
            match sub.next() {
                Next::TooSlow { skips } => {
                    outcome = Some(skips);
                    break;
                }
                Next::Item { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(outcome, Some(3));
        assert_eq!(ring.stats().too_slow, 1);
    }

    #[test]
    fn evicts_by_bytes_and_keeps_newest() {
        let ring = Ring::new(
            RingConfig {
                slots: 64,
                max_bytes: 350,
                ..RingConfig::default()
            },
            describe,
        );
        for n in 0..10 {
            ring.push(v(n, n == 0));
        }
        assert!(ring.held_bytes() <= 350);
        // The keyframe was evicted: a joiner waits for the next one.
        let mut sub = ring.subscribe();
        assert_eq!(sub.next(), Next::Pending);
        ring.push(v(10, true));
        assert_eq!(drain(&mut sub), vec![10]);
    }

    #[test]
    fn gop_over_budget_drops_audio_before_video() {
        let ring = Ring::new(
            RingConfig {
                slots: 64,
                gop_budget_bytes: 250,
                ..RingConfig::default()
            },
            describe,
        );
        ring.push(v(0, true));
        ring.push(a(1));
        ring.push(v(1, false));
        ring.push(a(2)); // video 200 + audio 20 = 220: within budget
        let mut sub = ring.subscribe();
        assert_eq!(drain(&mut sub), vec![0, 1, 1, 2]);
        ring.push(a(3));
        ring.push(a(4));
        ring.push(a(5));
        ring.push(a(6)); // 260: over budget, video alone (200) is not
        let mut late = ring.subscribe();
        assert_eq!(drain(&mut late), vec![0, 1]);
        ring.push(a(7)); // live audio after the join flows again
        assert_eq!(drain(&mut late), vec![7]);
        ring.push(v(2, false)); // video alone is now 300: over budget
        let mut later = ring.subscribe();
        assert_eq!(drain(&mut later), Vec::<u32>::new());
        ring.push(a(8));
        ring.push(v(9, true));
        assert_eq!(drain(&mut later), vec![9]);
    }

    #[test]
    fn serialize_once_per_format() {
        let ring = Ring::new(small(8), describe);
        let seq = ring.push(v(7, true));
        let mut builds = 0;
        let mut build = |it: &It| {
            builds += 1;
            Bytes::from(format!("flv{}", it.n))
        };
        let a1 = ring.serialized(seq, 1, &mut build).unwrap();
        let a2 = ring.serialized(seq, 1, &mut build).unwrap();
        assert_eq!(a1, a2);
        assert_eq!(a1.as_ptr(), a2.as_ptr(), "the same bytes, not a copy");
        let b = ring.serialized(seq, 2, &mut build).unwrap();
        assert_eq!(b, Bytes::from_static(b"flv7"));
        assert_eq!(builds, 2);
        for n in 0..8 {
            ring.push(v(n, false));
        }
        assert!(
            ring.serialized(seq, 1, |_| Bytes::new()).is_none(),
            "evicted"
        );
    }

    #[test]
    fn snapshot_equals_what_a_joiner_reads() {
        let ring = Ring::new(small(64), describe);
        ring.push(cfg(1, 0));
        ring.push(v(2, true));
        ring.push(cfg(3, 1));
        ring.push(a(4));
        ring.push(v(5, true));
        ring.push(a(6));
        let snap: Vec<u32> = ring.snapshot().into_iter().map(|(_, it)| it.n).collect();
        let mut sub = ring.subscribe();
        assert_eq!(snap, drain(&mut sub));
        assert_eq!(snap, vec![1, 3, 5, 6]);
    }

    #[test]
    fn interleaved_publish_and_join_seam_has_no_gap_or_duplicate() {
        // Joiners arriving at every point of a publish sequence each read exactly the
        // suffix starting at the keyframe they joined in, then everything after.
        let ring = Ring::new(small(256), describe);
        let mut subs: Vec<(u32, Subscriber<It>, Vec<u32>)> = Vec::new();
        let mut key_of = Vec::new();
        let mut last_key = 0;
        for n in 0..120u32 {
            let key = n % 10 == 0;
            if key {
                last_key = n;
            }
            ring.push(if n % 4 == 3 { a(n) } else { v(n, key) });
            key_of.push(last_key);
            let sub = ring.subscribe();
            subs.push((n, sub, Vec::new()));
            for (_, sub, got) in &mut subs {
                got.extend(drain(sub));
            }
        }
        for (joined_after, _, got) in subs {
            let from = key_of[joined_after as usize];
            assert_eq!(
                got,
                (from..120).collect::<Vec<_>>(),
                "joined after item {joined_after}"
            );
        }
    }

    #[test]
    fn ended_after_drain_and_wait_wakes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ring = Ring::new(small(8), describe);
        let mut sub = ring.subscribe();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut w = Box::pin(sub.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        assert!(
            w.as_mut().poll(&mut cx).is_pending(),
            "re-polling registers once"
        );
        drop(w);
        ring.push(v(0, true));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(sub.next(), Next::Item { .. }));
        ring.end();
        assert_eq!(sub.next(), Next::Ended);
        drop(sub);
        assert_eq!(ring.subscriber_count(), 0);
    }
}
