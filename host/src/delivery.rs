//! Delivery: each connection's queue towards its client, and the node's
//! pressure.
//!
//! A connection's frames wait in an [`Outbound`] queue that its writer
//! drains into the socket. The queue tells two situations apart, which
//! look the same to a bounded channel:
//!
//! - **The client does not read.** Its queue is past the soft capacity and
//!   its writer has not drained anything for [`STALL`], or its queue reached
//!   the hard capacity: the client is closed with 4008 and counted. Only a
//!   client whose own socket does not drain is closed.
//! - **The node is overloaded.** Many queues are *behind* at once: their
//!   oldest frame has waited longer than [`BEHIND`], or they are past their
//!   soft capacity (the writers lag because the node cannot keep up, not
//!   because their clients stopped reading): the node is under [`Pressure`],
//!   and every connection reads from its client more slowly until the
//!   queues catch up. TCP carries the push-back to the senders; nothing
//!   accepted is dropped, every reader is served, in order, and what waits
//!   in the queues stays a few tens of milliseconds' worth.
//!
//! Both are counted (`/metrics`: `pressure_active`, `pressure_waits_total`,
//! `queued_frames`), so an operator sees overload as overload.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_tungstenite::tungstenite::Message as WsMessage;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// A queue past its soft capacity whose writer has drained nothing for this
/// long belongs to a client that does not read.
pub const STALL: Duration = Duration::from_secs(5);

/// A queue whose oldest frame has waited this long is behind.
pub const BEHIND: Duration = Duration::from_millis(50);

/// The hard capacity is this many times the soft one: room for the frames
/// already on their way when the node comes under pressure.
pub const HARD_FACTOR: usize = 4;

/// The node's pressure: how many queues are past their soft capacity, and
/// how many frames wait in all of them.
pub struct Pressure {
    behind: AtomicUsize,
    queued: AtomicUsize,
    origin: Instant,
    eased: Notify,
    metrics: Arc<Metrics>,
}

impl Pressure {
    /// No pressure yet.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            behind: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            origin: Instant::now(),
            eased: Notify::new(),
            metrics,
        })
    }

    /// Whether the node is overloaded: more than one queue in ten (and at
    /// least two) is behind. One slow client is not overload; it is handled
    /// by closing it.
    pub fn active(&self) -> bool {
        let over = self.behind.load(Ordering::Relaxed);
        let open = usize::try_from(self.metrics.connections_open.get()).unwrap_or(0);
        over >= 2 && over * 10 >= open
    }

    /// Frames waiting in every queue of the node.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Waits, at most `limit`, while the node is under pressure; returns
    /// whether it waited. Called before reading a client's next message.
    pub async fn wait(&self, limit: Duration) -> bool {
        if !self.active() {
            return false;
        }
        self.metrics.pressure_waits.inc();
        let until = tokio::time::Instant::now() + limit;
        while self.active() {
            let eased = self.eased.notified();
            // Re-checked with the notification armed: no wake-up is missed.
            if !self.active() {
                break;
            }
            if tokio::time::timeout_at(until, eased).await.is_err() {
                break;
            }
        }
        true
    }

    fn millis(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn became_behind(&self, up: bool) {
        if up {
            self.behind.fetch_add(1, Ordering::Relaxed);
        } else if self.behind.fetch_sub(1, Ordering::Relaxed) == 1 || !self.active() {
            self.eased.notify_waiters();
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the writer.
    Queued,
    /// The queue is closed (the connection is ending): not queued.
    Closed,
    /// The client does not read: not queued; the caller closes it (4008).
    TooSlow,
}

struct Queue {
    frames: Mutex<VecDeque<WsMessage>>,
    soft: usize,
    hard: usize,
    /// Counted among the node's queues that are behind.
    behind: AtomicBool,
    closed: AtomicBool,
    /// When the writer last took frames, or the queue last went from empty
    /// to not (milliseconds of `Pressure::origin`): how long its oldest
    /// frame has waited, at most.
    drained_at: AtomicU64,
    /// Wakes the writer.
    ready: Notify,
    pressure: Arc<Pressure>,
}

/// The sending side of a connection's queue towards its client; cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    queue: Arc<Queue>,
}

/// The writer's side of the queue.
pub struct OutboundReceiver {
    queue: Arc<Queue>,
}

/// A queue holding about `soft` frames before it counts as behind (the
/// hard cap is [`HARD_FACTOR`] times that).
pub fn outbound(soft: usize, pressure: Arc<Pressure>) -> (Outbound, OutboundReceiver) {
    let soft = soft.max(1);
    let queue = Arc::new(Queue {
        frames: Mutex::new(VecDeque::new()),
        soft,
        hard: soft.saturating_mul(HARD_FACTOR),
        behind: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        drained_at: AtomicU64::new(pressure.millis()),
        ready: Notify::new(),
        pressure,
    });
    (
        Outbound {
            queue: queue.clone(),
        },
        OutboundReceiver { queue },
    )
}

impl Queue {
    fn set_behind(&self, behind: bool) {
        if self.behind.swap(behind, Ordering::Relaxed) != behind {
            self.pressure.became_behind(behind);
        }
    }
}

impl Outbound {
    /// Queues a frame for the client, or says why not.
    pub fn push(&self, frame: WsMessage) -> Push {
        let queue = &*self.queue;
        if queue.closed.load(Ordering::Relaxed) {
            return Push::Closed;
        }
        // A std lock: held to push one frame, never across an `.await`.
        let mut frames = queue.frames.lock().expect("not poisoned");
        let len = frames.len();
        if len == 0 {
            // An empty queue's writer has nothing to drain: not stalled.
            queue
                .drained_at
                .store(queue.pressure.millis(), Ordering::Relaxed);
        }
        if len >= queue.hard {
            return Push::TooSlow;
        }
        let waited = queue
            .pressure
            .millis()
            .saturating_sub(queue.drained_at.load(Ordering::Relaxed));
        if len >= queue.soft {
            if waited > STALL.as_millis() as u64 {
                return Push::TooSlow;
            }
            queue.set_behind(true);
        } else if len > 0 && waited > BEHIND.as_millis() as u64 {
            queue.set_behind(true);
        }
        frames.push_back(frame);
        drop(frames);
        queue.pressure.queued.fetch_add(1, Ordering::Relaxed);
        queue.ready.notify_one();
        Push::Queued
    }

    /// Puts a frame ahead of everything queued (a close frame for a client
    /// too slow to drain what is queued), and ends the queue after it.
    pub fn push_first_and_close(&self, frame: WsMessage) {
        let queue = &*self.queue;
        let mut frames = queue.frames.lock().expect("not poisoned");
        let dropped = frames.len();
        frames.clear();
        frames.push_back(frame);
        drop(frames);
        queue.pressure.queued.fetch_sub(dropped, Ordering::Relaxed);
        queue.pressure.queued.fetch_add(1, Ordering::Relaxed);
        queue.set_behind(false);
        queue.closed.store(true, Ordering::Relaxed);
        queue.ready.notify_one();
    }

    /// Ends the queue: the writer sends what is queued, then stops.
    pub fn close(&self) {
        self.queue.closed.store(true, Ordering::Relaxed);
        self.queue.ready.notify_one();
    }
}

impl OutboundReceiver {
    /// Waits for frames and moves all that are queued into `batch` (in
    /// order); `false` once the queue is closed and empty.
    pub async fn next_batch(&mut self, batch: &mut Vec<WsMessage>) -> bool {
        let queue = &*self.queue;
        loop {
            let ready = queue.ready.notified();
            {
                let mut frames = queue.frames.lock().expect("not poisoned");
                if !frames.is_empty() {
                    let taken = frames.len();
                    batch.extend(frames.drain(..));
                    drop(frames);
                    queue.pressure.queued.fetch_sub(taken, Ordering::Relaxed);
                    queue
                        .drained_at
                        .store(queue.pressure.millis(), Ordering::Relaxed);
                    queue.set_behind(false);
                    return true;
                }
                if queue.closed.load(Ordering::Relaxed) {
                    return false;
                }
            }
            ready.await;
        }
    }
}

impl OutboundReceiver {
    /// Takes every frame queued now (for tests that call a consumer with
    /// no socket).
    #[cfg(feature = "test-support")]
    pub fn take_all(&mut self) -> Vec<WsMessage> {
        let mut batch = Vec::new();
        let queue = &*self.queue;
        let mut frames = queue.frames.lock().expect("not poisoned");
        batch.extend(frames.drain(..));
        drop(frames);
        queue
            .pressure
            .queued
            .fetch_sub(batch.len(), Ordering::Relaxed);
        queue.set_behind(false);
        batch
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        // The writer is gone: nothing more is accepted, and what waits is
        // no longer counted as pressure.
        let queue = &*self.queue;
        queue.closed.store(true, Ordering::Relaxed);
        let mut frames = queue.frames.lock().expect("not poisoned");
        let left = frames.len();
        frames.clear();
        drop(frames);
        queue.pressure.queued.fetch_sub(left, Ordering::Relaxed);
        queue.set_behind(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> WsMessage {
        WsMessage::text(n.to_string())
    }

    #[tokio::test]
    async fn frames_leave_in_order_and_in_batches() {
        let metrics = Arc::new(Metrics::default());
        let pressure = Pressure::new(metrics);
        let (tx, mut rx) = outbound(4, pressure.clone());
        for n in 0..3 {
            assert_eq!(tx.push(frame(n)), Push::Queued);
        }
        assert_eq!(pressure.queued(), 3);
        let mut batch = Vec::new();
        assert!(rx.next_batch(&mut batch).await);
        assert_eq!(batch, (0..3).map(frame).collect::<Vec<_>>());
        assert_eq!(pressure.queued(), 0);
        tx.close();
        batch.clear();
        assert!(!rx.next_batch(&mut batch).await);
        assert_eq!(tx.push(frame(9)), Push::Closed);
    }

    #[tokio::test]
    async fn a_full_queue_is_a_slow_client_and_many_behind_is_pressure() {
        let metrics = Arc::new(Metrics::default());
        for _ in 0..4 {
            metrics.connections_open.inc();
        }
        let pressure = Pressure::new(metrics.clone());
        let (slow, _slow_rx) = outbound(2, pressure.clone());
        for n in 0..8 {
            assert_eq!(slow.push(frame(n)), Push::Queued, "up to the hard cap");
        }
        assert_eq!(slow.push(frame(8)), Push::TooSlow);
        assert!(!pressure.active(), "one client behind is not overload");
        let (other, mut other_rx) = outbound(2, pressure.clone());
        for n in 0..3 {
            other.push(frame(n));
        }
        assert!(pressure.active(), "two of four behind: overload");
        let mut batch = Vec::new();
        other_rx.next_batch(&mut batch).await;
        assert!(!pressure.active(), "drained: the pressure eases");
        let waited = pressure.wait(Duration::from_millis(10)).await;
        assert!(!waited);
    }
}
