//! Single-threaded events for the tasks of one shard: [`LocalEvent`] fires once ("stop
//! accepting", "this publisher was kicked"), [`Notify`] repeats ("a new HLS part
//! exists"). Per-frame wake-ups go through the rings, not these.
//!
//! A waiting future that is dropped before the event (the usual case when it races
//! another future) takes its waker out again, so the waiter list only ever holds the
//! tasks that are waiting now: a shard that sees a million short connections does not
//! keep a million stale wakers.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakers of the tasks waiting now, in slots that a dropped waiter frees.
/// A waiter's place: its slot, in the list of one epoch (a wake-all starts a new one).
#[derive(Clone, Copy)]
struct Place {
    epoch: u64,
    slot: usize,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
    epoch: u64,
}

impl Waiters {
    /// Register (or refresh) the waker at `place`; returns its place.
    fn register(&mut self, place: Option<Place>, waker: &Waker) -> Place {
        if let Some(p) = place.filter(|p| p.epoch == self.epoch) {
            match &mut self.slots[p.slot] {
                Some(w) if w.will_wake(waker) => {}
                s => *s = Some(waker.clone()),
            }
            return p;
        }
        let slot = self.insert(waker);
        Place {
            epoch: self.epoch,
            slot,
        }
    }

    fn insert(&mut self, waker: &Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(waker.clone());
                i
            }
            None => {
                self.slots.push(Some(waker.clone()));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, place: Place) {
        if place.epoch == self.epoch && self.slots[place.slot].take().is_some() {
            self.free.push(place.slot);
        }
    }

    /// Empty the list (a new epoch) and return the wakers to wake, so they are woken
    /// after the list's borrow ends.
    fn take_all(&mut self) -> Vec<Waker> {
        self.free.clear();
        self.epoch += 1;
        self.slots.drain(..).flatten().collect()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[derive(Default)]
pub struct LocalEvent {
    fired: Cell<bool>,
    waiters: RefCell<Waiters>,
}

impl LocalEvent {
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers = self.waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the event has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            waiters: &self.waiters,
            place: None,
            ready: Box::new(|| self.fired.get()),
        }
    }

    /// Tasks waiting now.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// A repeatable notification for one shard's tasks: each `notify` wakes everyone
/// waiting at that moment (e.g. "a new HLS part exists").
#[derive(Default)]
pub struct Notify {
    version: Cell<u64>,
    waiters: RefCell<Waiters>,
}

impl Notify {
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        let wakers = self.waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Resolves once `notify` has been called after the version `seen` was read.
    pub fn changed(&self, seen: u64) -> Wait<'_> {
        Wait {
            waiters: &self.waiters,
            place: None,
            ready: Box::new(move || self.version.get() != seen),
        }
    }

    /// Tasks waiting now.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// Future of [`LocalEvent::wait`] and [`Notify::changed`]; dropping it unregisters.
pub struct Wait<'a> {
    waiters: &'a RefCell<Waiters>,
    place: Option<Place>,
    ready: Box<dyn Fn() -> bool + 'a>,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.ready)() {
            if let Some(place) = self.place.take() {
                self.waiters.borrow_mut().remove(place);
            }
            return Poll::Ready(());
        }
        let place = self.waiters.borrow_mut().register(self.place, cx.waker());
        self.place = Some(place);
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place {
            self.waiters.borrow_mut().remove(place);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll(f: &mut Pin<&mut Wait<'_>>, waker: &Waker) -> Poll<()> {
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let ev = LocalEvent::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        for _ in 0..1000 {
            let mut w = std::pin::pin!(ev.wait());
            assert!(poll(&mut w, &waker).is_pending());
            assert!(
                poll(&mut w, &waker).is_pending(),
                "polling twice keeps one slot"
            );
            assert_eq!(ev.waiting(), 1);
        }
        assert_eq!(ev.waiting(), 0);
        let mut w = std::pin::pin!(ev.wait());
        assert!(poll(&mut w, &waker).is_pending());
        ev.fire();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(poll(&mut w, &waker).is_ready());
        assert!(poll(&mut std::pin::pin!(ev.wait()), &waker).is_ready());
        assert_eq!(ev.waiting(), 0);
    }

    #[test]
    fn notify_wakes_those_waiting_then_they_register_again() {
        let n = Notify::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let seen = n.version();
        let mut a = std::pin::pin!(n.changed(seen));
        let mut b = std::pin::pin!(n.changed(seen));
        assert!(poll(&mut a, &waker).is_pending());
        assert!(poll(&mut b, &waker).is_pending());
        assert_eq!(n.waiting(), 2);
        n.notify();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(poll(&mut a, &waker).is_ready());
        let seen = n.version();
        let mut c = std::pin::pin!(n.changed(seen));
        assert!(poll(&mut c, &waker).is_pending());
        assert_eq!(n.waiting(), 1);
        drop(b);
        assert_eq!(n.waiting(), 1);
    }
}
