//! A one-shot, single-threaded event: tasks on one shard wait until it fires (e.g.
//! "stop accepting", "the mesh is connected"). For a handful of waiters; per-frame
//! wake-ups go through the rings.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct LocalEvent {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.fired.get() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// A repeatable notification for one shard's tasks: each `notify` wakes everyone
/// waiting at that moment (e.g. "a new HLS part exists").
#[derive(Default)]
pub struct Notify {
    version: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Resolves once `notify` has been called after the version `seen` was read.
    pub async fn changed(&self, seen: u64) {
        std::future::poll_fn(|cx| {
            if self.version.get() != seen {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
