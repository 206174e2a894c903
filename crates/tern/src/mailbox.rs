//! A connection's outbound mailbox: the core pushes what the writer should send, the writer
//! takes everything queued at once.
//!
//! It stands in for an unbounded channel because of idle memory: a channel keeps a block of
//! slots allocated for as long as it lives (32 packets, about 13 KiB here), while an empty
//! mailbox holds no allocation at all. The writer takes the whole queue in one lock, so a busy
//! connection pays one lock per batch, not per packet.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The queue and the liveness of both ends, behind one lock.
#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    /// The sender was dropped: nothing more will arrive.
    sender_gone: bool,
    /// The receiver was dropped: pushing is pointless.
    receiver_gone: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves a consistent queue (push and take are single
        // operations), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending end: owned by the core's outlet for the connection.
#[derive(Debug)]
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving end: owned by the connection's writer.
#[derive(Debug)]
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// What [`Receiver::take`] found.
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
        }),
        notify: Notify::new(),
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
        let was_empty = state.queue.is_empty();
        state.queue.push_back(item);
        drop(state);
        // The receiver only waits on an empty queue, so only the first item needs a wake-up;
        // `notify_one` keeps a permit if the receiver is not waiting yet.
        if was_empty {
            self.0.notify.notify_one();
        }
        true
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.notify.notify_one();
    }
}

impl<T> Receiver<T> {
    /// Take everything queued, waiting for the first item if there is none.
    pub(crate) async fn take(&mut self) -> Taken<T> {
        loop {
            if let Some(taken) = self.try_take() {
                return taken;
            }
            self.0.notify.notified().await;
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

    #[tokio::test]
    async fn items_arrive_in_order_then_closed() {
        let (tx, mut rx) = mailbox();
        assert!(tx.push(1));
        assert!(tx.push(2));
        match rx.take().await {
            Taken::Items(items) => assert_eq!(Vec::from(items), vec![1, 2]),
            Taken::Closed => panic!("closed too early"),
        }
        assert!(rx.try_take().is_none());
        assert!(tx.push(3));
        drop(tx);
        match rx.take().await {
            Taken::Items(items) => assert_eq!(Vec::from(items), vec![3]),
            Taken::Closed => panic!("closed before the last item"),
        }
        assert!(matches!(rx.take().await, Taken::Closed));
    }

    #[tokio::test]
    async fn waiting_receiver_is_woken() {
        let (tx, mut rx) = mailbox();
        let waiter = tokio::spawn(async move {
            match rx.take().await {
                Taken::Items(items) => Vec::from(items),
                Taken::Closed => Vec::new(),
            }
        });
        tokio::task::yield_now().await;
        assert!(tx.push(7));
        assert_eq!(waiter.await.unwrap(), vec![7]);
    }

    #[test]
    fn push_after_receiver_dropped_fails() {
        let (tx, rx) = mailbox();
        drop(rx);
        assert!(!tx.push(1));
    }
}
