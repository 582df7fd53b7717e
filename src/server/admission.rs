//! Connection admission: whether an accepted socket may become a connection.
//!
//! Three limits (`[limits]` in the config), checked in this order right after the
//! accept, before a task or a buffer exists:
//! - an accept rate per client IP: a GCRA token bucket (`accept_rate_per_ip`
//!   sustained, `accept_burst_per_ip` at once); every attempt that passes it takes a
//!   token, so an IP at its connection limit cannot make the shard accept at full speed;
//! - open connections per client IP (`max_connections_per_ip`);
//! - open connections over the whole process (`max_connections`).
//!
//! Allow-listed IPs skip the first two. A refused socket is closed with a reset at once
//! and counted by reason; the caller spawns nothing for it.
//!
//! Shared-nothing: the per-IP state is this shard's own, and the kernel's SO_REUSEPORT
//! hash (over the 4-tuple) spreads one client's connections over the shards, so the
//! per-IP limits hold per shard. Dividing them by the shard count instead would refuse
//! a client below its limit whenever the hash is uneven. The global limit is one atomic
//! shared by all shards (like `streams.max_viewers`): it is touched once per accept and
//! once per close, never per frame, and a split limit would refuse on one shard while
//! another has room.
//!
//! Bounded memory: an IP has an entry while it has open connections, and after its last
//! one closes only until its bucket refills (at most `accept_burst_per_ip /
//! accept_rate_per_ip` seconds), so that closing and reconnecting does not reset the
//! rate. Those idle entries are also capped at [`MAX_IDLE_IPS`] per shard, the oldest
//! evicted first; entries with open connections are bounded by the connection limits.
//! IPv6 clients count by their /64, which one subscriber usually holds whole.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::config::LimitsConfig;
use crate::server::metrics::{Refusal, ShardMetrics};

/// Idle per-IP entries (no open connection, bucket still refilling) kept per shard.
pub const MAX_IDLE_IPS: usize = 16_384;
/// Idle entries looked at per admit or release, so the cost per accept stays O(1).
const SWEEP_STEP: usize = 4;

/// Connections open over all shards, against the global limit. One per process.
#[derive(Debug)]
pub struct ConnectionBudget {
    open: AtomicU64,
    limit: u64,
}

impl ConnectionBudget {
    pub fn new(limit: u64) -> ConnectionBudget {
        ConnectionBudget {
            open: AtomicU64::new(0),
            limit,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn try_take(&self) -> bool {
        // Take first, give back when over: concurrent accepts on other shards can never
        // admit more than `limit` between them.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn take_anyway(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one IP has on this shard.
#[derive(Debug)]
struct Entry {
    open: u32,
    /// GCRA's theoretical arrival time: the bucket is full when it is not after now.
    tat: Instant,
    /// In the idle queue (at most once).
    queued: bool,
}

/// The per-IP limits and their state on one shard. Time comes in as an argument.
#[derive(Debug)]
pub struct IpTable {
    per_ip: u32,
    /// Time one token takes to refill; `None`: no rate limit.
    interval: Option<Duration>,
    /// How far ahead of now the bucket may run: `(burst - 1) * interval`.
    tolerance: Duration,
    max_idle: usize,
    entries: HashMap<IpAddr, Entry>,
    /// IPs whose last connection closed, oldest first (some may have reconnected).
    idle: VecDeque<IpAddr>,
}

impl IpTable {
    pub fn new(limits: &LimitsConfig, max_idle: usize) -> IpTable {
        let interval = (limits.accept_rate_per_ip > 0)
            .then(|| Duration::from_secs(1) / limits.accept_rate_per_ip);
        let tolerance = interval
            .map(|i| i * limits.accept_burst_per_ip.saturating_sub(1))
            .unwrap_or_default();
        IpTable {
            per_ip: limits.max_connections_per_ip,
            interval,
            tolerance,
            max_idle,
            entries: HashMap::new(),
            idle: VecDeque::new(),
        }
    }

    /// IPs with an entry (open connections or a refilling bucket).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Open connections of `ip` (by its key) on this shard.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.entries.get(&key(ip)).map_or(0, |e| e.open)
    }

    /// Check the rate and the per-IP limit for a new connection from `ip`. `Ok` counts
    /// it: call [`IpTable::release`] when it closes.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.sweep(now, SWEEP_STEP);
        let ip = key(ip);
        if !self.entries.contains_key(&ip) {
            // The queue can hold IPs that reconnected since; eviction skips those.
            if self.idle.len() >= self.max_idle {
                self.evict_idle();
            }
            self.entries.insert(
                ip,
                Entry {
                    open: 0,
                    tat: now,
                    queued: false,
                },
            );
        }
        let entry = self
            .entries
            .get_mut(&ip)
            .expect("the entry was just looked up or inserted");
        if let Some(interval) = self.interval {
            if entry.tat > now + self.tolerance {
                return Err(Refusal::RateLimit);
            }
            entry.tat = entry.tat.max(now) + interval;
        }
        if self.per_ip > 0 && entry.open >= self.per_ip {
            return Err(Refusal::IpLimit);
        }
        entry.open += 1;
        Ok(())
    }

    /// An admitted connection from `ip` closed, or the admission was taken back.
    pub fn release(&mut self, ip: IpAddr, now: Instant) {
        let ip = key(ip);
        if let Some(entry) = self.entries.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && !entry.queued {
                entry.queued = true;
                self.idle.push_back(ip);
            }
        }
        self.sweep(now, SWEEP_STEP);
    }

    /// Forget idle entries whose bucket is full again: look at up to `budget` of them.
    pub fn sweep(&mut self, now: Instant, budget: usize) {
        for _ in 0..budget.min(self.idle.len()) {
            let Some(&ip) = self.idle.front() else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&ip) else {
                self.idle.pop_front();
                continue;
            };
            if entry.open > 0 {
                entry.queued = false;
                self.idle.pop_front();
            } else if entry.tat <= now {
                self.entries.remove(&ip);
                self.idle.pop_front();
            } else {
                // Still refilling: to the back, so it cannot hold up ready ones.
                self.idle.rotate_left(1);
            }
        }
    }

    /// Make room: drop the oldest idle entry even if its bucket is not full yet.
    fn evict_idle(&mut self) {
        while let Some(ip) = self.idle.pop_front() {
            match self.entries.get_mut(&ip) {
                Some(e) if e.open > 0 => e.queued = false,
                Some(_) => {
                    self.entries.remove(&ip);
                    return;
                }
                None => {}
            }
        }
    }
}

/// The key an IP is counted under: IPv4 (also when mapped into IPv6) as itself, IPv6
/// by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// One shard's admission: its IP table, the process's budget, its counters.
pub struct Admission {
    limits: LimitsConfig,
    budget: Arc<ConnectionBudget>,
    ips: RefCell<IpTable>,
    metrics: Arc<Vec<ShardMetrics>>,
    shard: usize,
}

impl Admission {
    pub fn new(
        limits: &LimitsConfig,
        budget: Arc<ConnectionBudget>,
        metrics: Arc<Vec<ShardMetrics>>,
        shard: usize,
    ) -> Rc<Admission> {
        Rc::new(Admission {
            limits: limits.clone(),
            budget,
            ips: RefCell::new(IpTable::new(limits, MAX_IDLE_IPS)),
            metrics,
            shard,
        })
    }

    fn metrics(&self) -> &ShardMetrics {
        &self.metrics[self.shard]
    }

    /// Admit a connection from `peer`. On refusal the caller closes the socket; the
    /// refusal is already counted.
    pub fn admit(self: &Rc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let tracked = (!self.limits.allows(peer)).then_some(peer);
        let now = Instant::now();
        let result = (|| {
            if let Some(ip) = tracked {
                self.ips.borrow_mut().admit(ip, now)?;
            }
            if !self.budget.try_take() {
                if let Some(ip) = tracked {
                    self.ips.borrow_mut().release(ip, now);
                }
                return Err(Refusal::GlobalLimit);
            }
            Ok(())
        })();
        self.update_gauge();
        match result {
            Ok(()) => Ok(Admitted {
                admission: Rc::clone(self),
                ip: tracked,
            }),
            Err(why) => {
                self.metrics().refused(why);
                Err(why)
            }
        }
    }

    /// Count a connection that another shard admitted and handed to this one (a
    /// publisher moving to its stream's owner): never refused.
    pub fn adopt(self: &Rc<Self>) -> Admitted {
        self.budget.take_anyway();
        Admitted {
            admission: Rc::clone(self),
            ip: None,
        }
    }

    /// Free refilled entries once a second until `stop` fires, so an idle shard does not
    /// keep them until its next connection.
    pub async fn sweep_until(self: Rc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let tick = async {
                shards::rt::sleep(Duration::from_secs(1)).await;
                true
            };
            let stopped = async {
                stop.as_mut().await;
                false
            };
            if !shards::rt::or(tick, stopped).await {
                return;
            }
            self.ips.borrow_mut().sweep(Instant::now(), 1024);
            self.update_gauge();
        }
    }

    fn update_gauge(&self) {
        let n = self.ips.borrow().len() as u64;
        self.metrics().tracked_ips.store(n, Ordering::Relaxed);
    }
}

/// An admitted connection: held by its task, released when it drops.
pub struct Admitted {
    admission: Rc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let a = &self.admission;
        a.budget.give_back();
        if let Some(ip) = self.ip {
            a.ips.borrow_mut().release(ip, Instant::now());
        }
        a.update_gauge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, rate: u32, burst: u32) -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: per_ip,
            accept_rate_per_ip: rate,
            accept_burst_per_ip: burst,
            allow: vec![],
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_counts_open_connections() {
        let mut t = IpTable::new(&limits(3, 0, 0), 100);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            t.admit(a, now).unwrap();
        }
        assert_eq!(t.admit(a, now), Err(Refusal::IpLimit));
        // another IP is not affected
        t.admit(ip("192.0.2.2"), now).unwrap();
        t.release(a, now);
        t.admit(a, now).unwrap();
        assert_eq!(t.open(a), 3);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        // 10 per second, burst 5: one token every 100 ms.
        let mut t = IpTable::new(&limits(0, 10, 5), 100);
        let start = Instant::now();
        let a = ip("192.0.2.1");
        let allowed = (0..20).filter(|_| t.admit(a, start).is_ok()).count();
        assert_eq!(allowed, 5);
        assert_eq!(t.admit(a, start), Err(Refusal::RateLimit));
        // refused attempts took nothing: one token 100 ms later
        let later = start + Duration::from_millis(100);
        assert!(t.admit(a, later).is_ok());
        assert_eq!(t.admit(a, later), Err(Refusal::RateLimit));
        // a second of attempts every 10 ms gets the rate: 10 more
        let ok = (1..=100)
            .filter(|i| t.admit(a, later + Duration::from_millis(10 * i)).is_ok())
            .count();
        assert_eq!(ok, 10);
    }

    #[test]
    fn closing_and_reconnecting_does_not_reset_the_rate() {
        let mut t = IpTable::new(&limits(0, 10, 2), 100);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        t.admit(a, now).unwrap();
        t.release(a, now);
        t.admit(a, now).unwrap();
        t.release(a, now);
        assert_eq!(t.admit(a, now), Err(Refusal::RateLimit));
        assert_eq!(t.len(), 1, "the entry stays while the bucket refills");
    }

    #[test]
    fn entries_are_freed_once_idle_and_refilled() {
        let mut t = IpTable::new(&limits(64, 20, 40), 100);
        let now = Instant::now();
        for i in 0..50u8 {
            let a = IpAddr::from([10, 0, 0, i]);
            t.admit(a, now).unwrap();
            t.admit(a, now).unwrap();
        }
        assert_eq!(t.len(), 50);
        for i in 0..50u8 {
            let a = IpAddr::from([10, 0, 0, i]);
            t.release(a, now);
            t.release(a, now);
        }
        // Buckets are full 100 ms later (2 tokens at 20/s); later calls sweep them.
        let later = now + Duration::from_millis(100);
        for _ in 0..50 {
            t.release(ip("192.0.2.99"), later);
        }
        assert!(t.is_empty(), "{} entries left", t.len());
        assert!(t.idle.is_empty());
    }

    #[test]
    fn idle_entries_are_capped_and_open_ones_kept() {
        let mut t = IpTable::new(&limits(64, 1, 1000), 10);
        let now = Instant::now();
        let keep = ip("192.0.2.1");
        t.admit(keep, now).unwrap();
        // 1,000 IPs connect once and leave: their buckets take 1 s to refill.
        for i in 0..1000u32 {
            let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            t.admit(a, now).unwrap();
            t.release(a, now);
        }
        assert!(t.len() <= 10 + 1, "{} entries", t.len());
        assert_eq!(t.open(keep), 1);
        assert!(t.idle.len() <= t.len());
    }

    #[test]
    fn a_reconnecting_flood_from_one_ip_keeps_one_entry() {
        let mut t = IpTable::new(&limits(64, 20, 40), 100);
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..10_000u64 {
            let now = start + Duration::from_micros(i * 100);
            if t.admit(a, now).is_ok() {
                t.release(a, now);
            }
        }
        assert_eq!(t.len(), 1);
        assert!(t.idle.len() <= 1);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let mut t = IpTable::new(&limits(2, 0, 0), 100);
        let now = Instant::now();
        t.admit(ip("2001:db8:1:2::1"), now).unwrap();
        t.admit(ip("2001:db8:1:2:ffff::9"), now).unwrap();
        assert_eq!(t.admit(ip("2001:db8:1:2::3"), now), Err(Refusal::IpLimit));
        t.admit(ip("2001:db8:1:3::1"), now).unwrap();
        t.admit(ip("192.0.2.1"), now).unwrap();
        t.admit(ip("::ffff:192.0.2.1"), now).unwrap();
        assert_eq!(t.admit(ip("192.0.2.1"), now), Err(Refusal::IpLimit));
    }

    #[test]
    fn global_budget_never_admits_more_than_its_limit() {
        let budget = Arc::new(ConnectionBudget::new(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&budget);
                std::thread::spawn(move || (0..1000).filter(|_| b.try_take()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 100);
        assert_eq!(budget.open.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn admission_guards_release_on_drop_and_skip_allowed_ips() {
        let metrics = Arc::new(vec![ShardMetrics::default()]);
        let config = LimitsConfig {
            max_connections_per_ip: 1,
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..LimitsConfig::default()
        };
        let budget = Arc::new(ConnectionBudget::new(3));
        let a = Admission::new(&config, Arc::clone(&budget), Arc::clone(&metrics), 0);
        let first = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).err(), Some(Refusal::IpLimit));
        let allowed = [
            a.admit(ip("10.1.1.1")).unwrap(),
            a.admit(ip("10.1.1.1")).unwrap(),
        ];
        assert_eq!(a.admit(ip("10.1.1.1")).err(), Some(Refusal::GlobalLimit));
        let refused = |why: Refusal| metrics[0].refused[why as usize].load(Ordering::Relaxed);
        assert_eq!(
            (refused(Refusal::IpLimit), refused(Refusal::GlobalLimit)),
            (1, 1)
        );
        drop(first);
        drop(allowed);
        assert_eq!(budget.open.load(Ordering::Relaxed), 0);
        assert_eq!(a.ips.borrow().open(ip("192.0.2.1")), 0);
        // refused by the global limit: the per-IP count was given back
        let held: Vec<_> = (0..3).map(|_| a.adopt()).collect();
        assert_eq!(a.admit(ip("192.0.2.7")).err(), Some(Refusal::GlobalLimit));
        assert_eq!(a.ips.borrow().open(ip("192.0.2.7")), 0);
        drop(held);
        assert_eq!(budget.open.load(Ordering::Relaxed), 0);
    }
}
