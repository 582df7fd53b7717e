//! The global stream directory: stream key → owner shard, claim, live stats and the
//! stream's shared snapshots.
//!
//! Read-mostly: every viewer join reads it (one `ArcSwap` load, no lock), while
//! publish and unpublish, which are rare, copy the map and swap it in under a writer
//! mutex. A claim carries a unique id, so a stale session can never release a newer
//! publisher's key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

/// Identifies one successful claim of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClaimId(pub u64);

/// Live counters of one stream. The owner shard is the only writer of the media
/// counters (relaxed stores, no contention); viewer counts change on join/leave from any
/// shard. Readers (API, metrics) load them from any shard without locks.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes: AtomicU64,
    /// Bits per second and frames per second (×1000) over the last second, computed by
    /// the owner's housekeeping tick.
    pub bitrate_bps: AtomicU64,
    pub video_fps_milli: AtomicU64,
    pub viewers: AtomicU64,
    pub lag_skips: AtomicU64,
    pub too_slow: AtomicU64,
    /// Publisher reconnects that resumed within the grace period.
    pub resumes: AtomicU64,
    /// Frames whose timestamps had to be clamped.
    pub timestamp_fixes: AtomicU64,
}

/// One stream's directory entry.
pub struct Entry<K, S> {
    pub key: K,
    pub owner: usize,
    pub claim: ClaimId,
    pub started: SystemTime,
    /// False while the publisher is gone and the stream waits out its reconnect grace.
    pub publishing: AtomicBool,
    pub stats: StreamStats,
    /// Protocol-level shared state (e.g. HLS playlist snapshots), defined by the server.
    pub shared: S,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("stream '{key}' is already being published (on shard {owner}); stop that publisher first or use another stream name")]
    AlreadyLive { key: String, owner: usize },
    #[error("stream '{key}' is waiting for its publisher to reconnect on shard {owner}")]
    InGrace { key: String, owner: usize },
    #[error("the server already has {limit} publishers, its configured maximum (streams.max_publishers)")]
    TooManyPublishers { limit: usize },
}

pub struct Directory<K, S> {
    map: ArcSwap<HashMap<K, Arc<Entry<K, S>>>>,
    writer: Mutex<()>,
    next_claim: AtomicU64,
    max_publishers: usize,
}

impl<K, S> Directory<K, S>
where
    K: Clone + Eq + Hash + std::fmt::Display,
{
    /// `max_publishers` 0 = unlimited.
    pub fn new(max_publishers: usize) -> Self {
        Directory {
            map: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
            next_claim: AtomicU64::new(1),
            max_publishers,
        }
    }

    /// Claim `key` for a publisher on shard `owner`. Exactly one of any number of
    /// concurrent claims of a free key wins.
    pub fn claim(
        &self,
        key: &K,
        owner: usize,
        shared: impl FnOnce() -> S,
    ) -> Result<Arc<Entry<K, S>>, ClaimError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load();
        if let Some(e) = current.get(key) {
            return Err(if e.publishing.load(Ordering::Acquire) {
                ClaimError::AlreadyLive {
                    key: key.to_string(),
                    owner: e.owner,
                }
            } else {
                ClaimError::InGrace {
                    key: key.to_string(),
                    owner: e.owner,
                }
            });
        }
        if self.max_publishers > 0 && current.len() >= self.max_publishers {
            return Err(ClaimError::TooManyPublishers {
                limit: self.max_publishers,
            });
        }
        let entry = Arc::new(Entry {
            key: key.clone(),
            owner,
            claim: ClaimId(self.next_claim.fetch_add(1, Ordering::Relaxed)),
            started: SystemTime::now(),
            publishing: AtomicBool::new(true),
            stats: StreamStats::default(),
            shared: shared(),
        });
        let mut next = HashMap::clone(&current);
        next.insert(key.clone(), Arc::clone(&entry));
        self.map.store(Arc::new(next));
        Ok(entry)
    }

    /// Release `key` if it is still held by `claim`. Returns whether it was released.
    pub fn release(&self, key: &K, claim: ClaimId) -> bool {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load();
        match current.get(key) {
            Some(e) if e.claim == claim => {
                let mut next = HashMap::clone(&current);
                next.remove(key);
                self.map.store(Arc::new(next));
                true
            }
            _ => false,
        }
    }

    pub fn lookup(&self, key: &K) -> Option<Arc<Entry<K, S>>> {
        self.map.load().get(key).cloned()
    }

    /// Every stream, as one consistent snapshot.
    pub fn all(&self) -> Arc<HashMap<K, Arc<Entry<K, S>>>> {
        self.map.load_full()
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_twice_is_refused_and_release_needs_the_claim() {
        let dir: Directory<String, ()> = Directory::new(0);
        let key = "live/a".to_string();
        let first = dir.claim(&key, 0, || ()).unwrap();
        assert_eq!(
            dir.claim(&key, 1, || ()).err(),
            Some(ClaimError::AlreadyLive {
                key: key.clone(),
                owner: 0
            })
        );
        first.publishing.store(false, Ordering::Release);
        assert_eq!(
            dir.claim(&key, 1, || ()).err(),
            Some(ClaimError::InGrace {
                key: key.clone(),
                owner: 0
            })
        );
        assert!(dir.release(&key, first.claim));
        let second = dir.claim(&key, 1, || ()).unwrap();
        // The first session, finishing late, cannot release the second publisher's key.
        assert!(!dir.release(&key, first.claim));
        assert_eq!(dir.lookup(&key).unwrap().claim, second.claim);
    }

    #[test]
    fn max_publishers() {
        let dir: Directory<String, ()> = Directory::new(1);
        dir.claim(&"a/1".to_string(), 0, || ()).unwrap();
        assert_eq!(
            dir.claim(&"a/2".to_string(), 0, || ()).err(),
            Some(ClaimError::TooManyPublishers { limit: 1 })
        );
    }

    #[test]
    fn concurrent_claims_from_two_shards_have_one_winner() {
        for round in 0..200 {
            let dir: Arc<Directory<String, ()>> = Arc::new(Directory::new(0));
            let key = format!("live/{round}");
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = (0..2)
                .map(|shard| {
                    let (dir, key, barrier) = (Arc::clone(&dir), key.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        dir.claim(&key, shard, || ()).is_ok()
                    })
                })
                .collect();
            let wins = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|w| *w)
                .count();
            assert_eq!(wins, 1, "round {round}");
        }
    }
}
