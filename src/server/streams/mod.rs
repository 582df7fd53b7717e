//! The shard's stream table: every piece of per-stream state this shard keeps beyond
//! the hub's rings, with one lifetime per stream.
//!
//! - **Owned streams** (this shard is the owner): the owner state that outlives any
//!   one publisher ([`OwnerState`]: timeline, HLS packagers, codec summary) and the
//!   live publisher's kick event. An entry is created by the first publish, reused by
//!   a publisher that reconnects within the grace (same directory claim), and freed
//!   at once when the hub reports the stream ended ([`StreamTable::ended`]).
//! - **Blocked HLS requests**, by stream, on any shard: an entry exists only while a
//!   request waits, only for a stream the directory knows, and at most
//!   [`MAX_WAITERS_PER_STREAM`] per stream and shard. Requests for unknown keys never
//!   reach the table, so they cannot grow it.
//!
//! Recordings are tasks subscribed to the stream's ring: they end with the ring (after
//! flushing their file), so they need no entry here; `shardcast_recordings` counts them.
//!
//! The table has no clock, no I/O and no reference to the shard: the shard context
//! owns it, and its gauges are the shard's `/metrics` counters.

mod owner;
pub mod packagers;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proto::media::StreamKey;
use shards::directory::ClaimId;
use shards::event::{LocalEvent, Notify};

use crate::server::media::StreamHub;
use crate::server::metrics::ShardMetrics;

pub use owner::OwnerState;

/// Blocked HLS requests one shard holds per stream; more are answered 503 with
/// Retry-After (a player retries; the table stays bounded).
pub const MAX_WAITERS_PER_STREAM: usize = 4096;

/// What the owner-side state needs from its shard: the hub (to tell every shard about
/// HLS updates) and the shard's counters.
pub struct OwnerCtx<'a> {
    pub hub: &'a StreamHub,
    pub shards: usize,
    pub metrics: &'a ShardMetrics,
}

struct Owned {
    claim: ClaimId,
    state: Rc<RefCell<OwnerState>>,
    /// The live publisher's kick event (`None` during the reconnect grace).
    publisher: Option<Rc<LocalEvent>>,
}

struct Waiters {
    notify: Rc<Notify>,
    count: usize,
}

/// A blocked request's registration: wait on the notify, call
/// [`StreamTable::unwait`] when done.
pub struct Waiting(pub Rc<Notify>);

/// The stream already has [`MAX_WAITERS_PER_STREAM`] blocked requests on this shard.
#[derive(Debug, PartialEq, Eq)]
pub struct WaitRefused;

pub struct StreamTable {
    owned: HashMap<StreamKey, Owned>,
    waiting: HashMap<StreamKey, Waiters>,
    waiters: usize,
    max_waiters_per_stream: usize,
    metrics: Arc<Vec<ShardMetrics>>,
    shard: usize,
}

impl StreamTable {
    /// `metrics[shard]` carries the table's gauges.
    pub fn new(metrics: Arc<Vec<ShardMetrics>>, shard: usize) -> StreamTable {
        StreamTable {
            owned: HashMap::new(),
            waiting: HashMap::new(),
            waiters: 0,
            max_waiters_per_stream: MAX_WAITERS_PER_STREAM,
            metrics,
            shard,
        }
    }

    fn gauges(&self) {
        let m = &self.metrics[self.shard];
        m.streams_owned
            .store(self.owned.len() as u64, Ordering::Relaxed);
        m.hls_waiting.store(self.waiters as u64, Ordering::Relaxed);
    }

    /// The owner state of `key` for a publisher holding directory claim `claim`:
    /// the existing one when the publisher resumes the same claim (reconnect within
    /// the grace), else a new one from `make` (replacing any stale entry). The bool is
    /// true when the state is new.
    pub fn owner(
        &mut self,
        key: &StreamKey,
        claim: ClaimId,
        make: impl FnOnce() -> OwnerState,
    ) -> (Rc<RefCell<OwnerState>>, bool) {
        if let Some(o) = self.owned.get(key).filter(|o| o.claim == claim) {
            return (Rc::clone(&o.state), false);
        }
        let state = Rc::new(RefCell::new(make()));
        self.owned.insert(
            key.clone(),
            Owned {
                claim,
                state: Rc::clone(&state),
                publisher: None,
            },
        );
        self.gauges();
        (state, true)
    }

    /// `kick` fires to disconnect `key`'s publisher (API kick).
    pub fn set_publisher(&mut self, key: &StreamKey, kick: Rc<LocalEvent>) {
        if let Some(o) = self.owned.get_mut(key) {
            o.publisher = Some(kick);
        }
    }

    /// The publisher with this kick event left (a newer one may have replaced it).
    pub fn clear_publisher(&mut self, key: &StreamKey, kick: &Rc<LocalEvent>) {
        if let Some(o) = self.owned.get_mut(key) {
            if o.publisher.as_ref().is_some_and(|k| Rc::ptr_eq(k, kick)) {
                o.publisher = None;
            }
        }
    }

    /// Disconnect `key`'s publisher if it is on this shard. True if there was one.
    pub fn kick(&self, key: &StreamKey) -> bool {
        match self.owned.get(key).and_then(|o| o.publisher.as_ref()) {
            Some(ev) => {
                ev.fire();
                true
            }
            None => false,
        }
    }

    /// The hub ended `key`'s stream (claim `claim`): free everything it held here and
    /// wake its blocked requests, which then answer 404.
    pub fn ended(&mut self, key: &StreamKey, claim: Option<ClaimId>) {
        if let Some(o) = self.owned.get(key) {
            if claim.is_none_or(|c| c == o.claim) {
                self.owned.remove(key);
                self.gauges();
            }
        }
        self.notify(key);
    }

    /// Register one blocked request for `key`, which the caller has checked exists.
    pub fn wait(&mut self, key: &StreamKey) -> Result<Waiting, WaitRefused> {
        let w = self.waiting.entry(key.clone()).or_insert_with(|| Waiters {
            notify: Rc::default(),
            count: 0,
        });
        if w.count >= self.max_waiters_per_stream {
            return Err(WaitRefused);
        }
        w.count += 1;
        let notify = Rc::clone(&w.notify);
        self.waiters += 1;
        self.gauges();
        Ok(Waiting(notify))
    }

    /// One blocked request for `key` finished; the last one frees the entry.
    pub fn unwait(&mut self, key: &StreamKey) {
        if let Some(w) = self.waiting.get_mut(key) {
            w.count -= 1;
            self.waiters -= 1;
            if w.count == 0 {
                self.waiting.remove(key);
            }
            self.gauges();
        }
    }

    /// `key` has a new HLS part or segment, or ended: wake its blocked requests.
    pub fn notify(&self, key: &StreamKey) {
        if let Some(w) = self.waiting.get(key) {
            w.notify.notify();
        }
    }

    pub fn owned_len(&self) -> usize {
        self.owned.len()
    }

    /// Blocked requests, and the streams they wait on.
    pub fn waiting_len(&self) -> (usize, usize) {
        (self.waiters, self.waiting.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::Config;

    fn table() -> StreamTable {
        StreamTable::new(Arc::new(vec![ShardMetrics::default()]), 0)
    }

    fn key(s: &str) -> StreamKey {
        StreamKey::new("live", s).unwrap()
    }

    fn state(k: &StreamKey) -> OwnerState {
        OwnerState::new(&Config::default(), k)
    }

    #[test]
    fn a_resumed_claim_keeps_its_state_and_a_new_claim_replaces_it() {
        let mut t = table();
        let k = key("a");
        let (first, new) = t.owner(&k, ClaimId(1), || state(&k));
        assert!(new);
        let (again, new) = t.owner(&k, ClaimId(1), || unreachable!("resume reuses"));
        assert!(!new && Rc::ptr_eq(&first, &again));
        let (other, new) = t.owner(&k, ClaimId(2), || state(&k));
        assert!(new && !Rc::ptr_eq(&first, &other));
        assert_eq!(t.owned_len(), 1);
        assert_eq!(t.metrics[0].streams_owned.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_ended_stream_frees_its_state_at_once_but_not_a_newer_claims() {
        let mut t = table();
        let k = key("a");
        let (st, _) = t.owner(&k, ClaimId(1), || state(&k));
        let weak = Rc::downgrade(&st);
        drop(st);
        t.owner(&k, ClaimId(2), || state(&k));
        assert!(weak.upgrade().is_none(), "the replaced state is freed");
        t.ended(&k, Some(ClaimId(1)));
        assert_eq!(t.owned_len(), 1, "a stale end leaves the new claim alone");
        t.ended(&k, Some(ClaimId(2)));
        assert_eq!(t.owned_len(), 0);
        assert_eq!(t.metrics[0].streams_owned.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn kick_reaches_only_the_current_publisher() {
        let mut t = table();
        let k = key("a");
        t.owner(&k, ClaimId(1), || state(&k));
        assert!(!t.kick(&k), "no publisher during the grace");
        let old = Rc::new(LocalEvent::default());
        let new = Rc::new(LocalEvent::default());
        t.set_publisher(&k, Rc::clone(&old));
        t.set_publisher(&k, Rc::clone(&new));
        t.clear_publisher(&k, &old);
        assert!(t.kick(&k));
        assert!(new.is_fired() && !old.is_fired());
        t.clear_publisher(&k, &new);
        assert!(!t.kick(&k));
        assert!(!t.kick(&key("unknown")));
    }

    #[test]
    fn waiters_are_bounded_per_stream_and_freed_with_the_last() {
        let mut t = table();
        t.max_waiters_per_stream = 3;
        let (a, b) = (key("a"), key("b"));
        let w: Vec<_> = (0..3).map(|_| t.wait(&a).unwrap()).collect();
        assert_eq!(t.wait(&a).err(), Some(WaitRefused));
        let _wb = t.wait(&b).unwrap();
        assert_eq!(t.waiting_len(), (4, 2));
        assert_eq!(t.metrics[0].hls_waiting.load(Ordering::Relaxed), 4);
        let seen = w[0].0.version();
        t.notify(&a);
        assert_ne!(
            w[0].0.version(),
            seen,
            "an update wakes the stream's waiters"
        );
        for _ in 0..3 {
            t.unwait(&a);
        }
        assert_eq!(t.waiting_len(), (1, 1), "the last waiter frees the entry");
        t.unwait(&b);
        assert_eq!(t.waiting_len(), (0, 0));
        t.unwait(&b); // a stray release is harmless
        assert_eq!(t.waiting_len(), (0, 0));
    }

    #[test]
    fn a_stream_end_wakes_its_waiters() {
        let mut t = table();
        let k = key("a");
        t.owner(&k, ClaimId(7), || state(&k));
        let Waiting(n) = t.wait(&k).unwrap();
        let seen = n.version();
        t.ended(&k, None);
        assert_ne!(n.version(), seen);
        assert_eq!(t.owned_len(), 0);
    }

    #[test]
    fn churn_leaves_the_table_empty() {
        let mut t = table();
        for i in 0..1000u64 {
            let k = key(&format!("s{}", i % 17));
            t.owner(&k, ClaimId(i), || state(&k));
            let _w = t.wait(&k).unwrap();
            t.unwait(&k);
            t.ended(&k, Some(ClaimId(i)));
        }
        assert_eq!((t.owned_len(), t.waiting_len()), (0, (0, 0)));
        assert!(t.owned.capacity() < 64, "no growth from churn");
    }
}
