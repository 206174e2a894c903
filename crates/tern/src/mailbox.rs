//! A connection's outbound mailbox: the core pushes what the connection should send, the
//! connection takes everything queued at once.
//!
//! It stands in for an unbounded channel because of idle memory: a channel keeps a block of
//! slots allocated for as long as it lives (32 packets, about 13 KiB here), while an empty
//! mailbox holds no allocation at all. The connection takes the whole queue in one lock, so a
//! busy connection pays one lock per batch, not per packet.
//!
//! It also carries the connection's `ending` flag: the core asks a connection to close by
//! pushing the close request and raising the flag, which wakes the connection even while it
//! waits for its socket. Waiting is poll-based ([`Receiver::poll_ready`]) so that an idle
//! connection's task holds no wait future for it, only the waker kept here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The queue, the liveness of both ends and the receiver's waker, behind one lock.
#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    /// The sender was dropped: nothing more will arrive.
    sender_gone: bool,
    /// The receiver was dropped: pushing is pointless.
    receiver_gone: bool,
    /// The receiver waiting for the first item, the end, or the sender going away.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    /// Raised by [`Sender::end`]; never lowered.
    ending: AtomicBool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves a consistent queue (push and take are single
        // operations), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the receiver if it waits.
    fn wake(&self) {
        let waker = self.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The sending end: owned by the core's outlet for the connection.
#[derive(Debug)]
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving end: owned by the connection's task.
#[derive(Debug)]
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// What [`Receiver::try_take`] found.
#[derive(Debug)]
pub(crate) enum Taken<T> {
    /// Everything queued, in order (never empty).
    Items(VecDeque<T>),
    /// The queue is empty and the sender is gone.
    Closed,
}

/// A new, empty mailbox.
pub(crate) fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
            waker: None,
        }),
        ending: AtomicBool::new(false),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queue `item`; false (and `item` dropped) if the receiver is gone.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return false;
        }
        state.queue.push_back(item);
        // The receiver only waits on an empty queue, so only the first item finds a waker.
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Raise the ending flag and wake the receiver, whatever it waits for.
    pub(crate) fn end(&self) {
        self.0.ending.store(true, Ordering::Release);
        self.0.wake();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.wake();
    }
}

impl<T> Receiver<T> {
    /// Whether the sender raised the ending flag.
    pub(crate) fn is_ending(&self) -> bool {
        self.0.ending.load(Ordering::Acquire)
    }

    /// Ready once there is something to take, the sender is gone or the ending flag is up;
    /// otherwise keeps `cx`'s waker to be woken when that changes.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_ending() {
            return Poll::Ready(());
        }
        let mut state = self.0.lock();
        if !state.queue.is_empty() || state.sender_gone {
            return Poll::Ready(());
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        drop(state);
        // `end` raises the flag before it looks for a waker: check it again now that ours is
        // stored, or a raise in between would be missed.
        if self.is_ending() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Take everything queued without waiting; `None` if the queue is empty and the sender is
    /// still there.
    pub(crate) fn try_take(&mut self) -> Option<Taken<T>> {
        let mut state = self.0.lock();
        if !state.queue.is_empty() {
            // The mailbox is left with a fresh queue that holds no allocation.
            Some(Taken::Items(std::mem::take(&mut state.queue)))
        } else if state.sender_gone {
            Some(Taken::Closed)
        } else {
            None
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait for the mailbox and take what it has, as the connection does.
    async fn take(rx: &mut Receiver<i32>) -> Taken<i32> {
        loop {
            if let Some(taken) = rx.try_take() {
                return taken;
            }
            std::future::poll_fn(|cx| rx.poll_ready(cx)).await;
        }
    }

    #[tokio::test]
    async fn items_arrive_in_order_then_closed() {
        let (tx, mut rx) = mailbox();
        assert!(tx.push(1));
        assert!(tx.push(2));
        match take(&mut rx).await {
            Taken::Items(items) => assert_eq!(Vec::from(items), vec![1, 2]),
            Taken::Closed => panic!("closed too early"),
        }
        assert!(rx.try_take().is_none());
        assert!(tx.push(3));
        drop(tx);
        match take(&mut rx).await {
            Taken::Items(items) => assert_eq!(Vec::from(items), vec![3]),
            Taken::Closed => panic!("closed before the last item"),
        }
        assert!(matches!(take(&mut rx).await, Taken::Closed));
    }

    #[tokio::test]
    async fn waiting_receiver_is_woken() {
        let (tx, mut rx) = mailbox();
        let waiter = tokio::spawn(async move {
            match take(&mut rx).await {
                Taken::Items(items) => Vec::from(items),
                Taken::Closed => Vec::new(),
            }
        });
        tokio::task::yield_now().await;
        assert!(tx.push(7));
        assert_eq!(waiter.await.unwrap(), vec![7]);
    }

    #[tokio::test]
    async fn ending_wakes_a_waiting_receiver() {
        let (tx, rx) = mailbox::<i32>();
        let waiter = tokio::spawn(async move {
            std::future::poll_fn(|cx| rx.poll_ready(cx)).await;
            rx.is_ending()
        });
        tokio::task::yield_now().await;
        tx.end();
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn push_after_receiver_dropped_fails() {
        let (tx, rx) = mailbox();
        drop(rx);
        assert!(!tx.push(1));
    }
}
