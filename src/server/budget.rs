//! A shard-wide budget for peer input held in memory (RTMP partial messages).
//!
//! Each connection is capped on its own (`rtmp.max_message_bytes` per message, twice
//! that over all its chunk streams), but many connections each just under their cap
//! add up: 16 of them held 486 MB. The budget sums what every connection of the shard
//! holds; when a connection's growth takes the sum past the limit, the connections
//! holding the most are evicted (their event fires; the driver closes them) until the
//! sum fits again. A publisher whose partial message is one frame holds little, so it
//! is the last to go: a flood costs the flooders their connections.
//!
//! Connections register only while they hold something, so the map is bounded by the
//! shard's connections and stays empty when nobody is mid-message.

use std::collections::HashMap;
use std::rc::Rc;

use shards::event::LocalEvent;

/// A connection's place in the budget; `0` = not registered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holder(u64);

struct Held {
    bytes: usize,
    evict: Rc<LocalEvent>,
}

pub struct InputBudget {
    limit: usize,
    total: usize,
    held: HashMap<u64, Held>,
    next: u64,
    evictions: u64,
}

impl InputBudget {
    /// `limit` 0 = no shard-wide limit.
    pub fn new(limit: usize) -> InputBudget {
        InputBudget {
            limit,
            total: 0,
            held: HashMap::new(),
            next: 1,
            evictions: 0,
        }
    }

    /// Record that `holder`'s connection now holds `bytes`; `evict` fires if it must
    /// go. Returns the holder to pass next time. Evicts the largest holders (this one
    /// included, if it is among them) while the total is over the limit.
    pub fn update(&mut self, holder: Holder, bytes: usize, evict: &Rc<LocalEvent>) -> Holder {
        // An evicted connection is on its way out and holds no place.
        if self.limit == 0 || evict.is_fired() {
            return Holder::default();
        }
        let holder = match (holder.0, bytes) {
            (0, 0) => return holder,
            (0, _) => {
                let id = self.next;
                self.next += 1;
                self.held.insert(
                    id,
                    Held {
                        bytes: 0,
                        evict: Rc::clone(evict),
                    },
                );
                Holder(id)
            }
            _ => holder,
        };
        let Some(h) = self.held.get_mut(&holder.0) else {
            return Holder::default(); // evicted earlier
        };
        self.total = self.total - h.bytes + bytes;
        h.bytes = bytes;
        if bytes == 0 {
            self.held.remove(&holder.0);
            return Holder::default();
        }
        while self.total > self.limit {
            let Some((&id, _)) = self.held.iter().max_by_key(|(_, h)| h.bytes) else {
                break;
            };
            let h = self.held.remove(&id).expect("found above");
            self.total -= h.bytes;
            self.evictions += 1;
            h.evict.fire();
        }
        if self.held.contains_key(&holder.0) {
            holder
        } else {
            Holder::default()
        }
    }

    /// The connection closed.
    pub fn release(&mut self, holder: Holder) {
        if let Some(h) = self.held.remove(&holder.0) {
            self.total -= h.bytes;
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Connections evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_holders_go_first_and_the_small_stay() {
        let mut b = InputBudget::new(100);
        let ev: Vec<Rc<LocalEvent>> = (0..3).map(|_| Rc::default()).collect();
        let small = b.update(Holder::default(), 5, &ev[0]);
        let big = b.update(Holder::default(), 60, &ev[1]);
        assert_eq!(b.total(), 65);
        // The third connection's growth takes the sum over: the biggest (itself) goes.
        let third = b.update(Holder::default(), 70, &ev[2]);
        assert!(ev[2].is_fired() && !ev[1].is_fired() && !ev[0].is_fired());
        assert_eq!(third, Holder::default());
        assert_eq!(b.total(), 65);
        // The big one grows past the limit with the small one in: the big one goes.
        let big = b.update(big, 99, &ev[1]);
        assert!(ev[1].is_fired() && !ev[0].is_fired());
        assert_eq!(big, Holder::default());
        assert_eq!((b.total(), b.evictions()), (5, 2));
        // An evicted connection's later updates are ignored.
        b.update(big, 50, &ev[1]);
        assert_eq!(b.total(), 5);
        b.release(small);
        assert_eq!(b.total(), 0);
        assert!(b.held.is_empty());
    }

    #[test]
    fn a_drained_connection_leaves_the_map() {
        let mut b = InputBudget::new(1000);
        let ev = Rc::default();
        let h = b.update(Holder::default(), 10, &ev);
        assert_ne!(h, Holder::default());
        let h = b.update(h, 0, &ev);
        assert_eq!(h, Holder::default());
        assert!(b.held.is_empty() && b.total() == 0);
        assert_eq!(
            b.update(h, 0, &ev),
            Holder::default(),
            "nothing held, nothing registered"
        );
        assert!(b.held.is_empty());
    }

    #[test]
    fn zero_is_no_limit() {
        let mut b = InputBudget::new(0);
        let ev = Rc::default();
        assert_eq!(
            b.update(Holder::default(), usize::MAX / 2, &ev),
            Holder::default()
        );
        assert!(!ev.is_fired());
    }
}
