//! Lifecycle events of shards (Node's `fork`, `online`, `listening`,
//! `disconnect`, `exit`): recorded by the coordinator, logged, and streamed
//! to every subscriber.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::ShardId;

/// What happened to a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifecycleKind {
    /// Its thread was started (first start or restart).
    Fork,
    /// Its executor runs and its shard function started.
    Online,
    /// It accepts connections on every listen address.
    Listening,
    /// It was told to stop: it accepts no more connections and finishes
    /// what is in flight.
    Disconnect,
    /// Its thread ended.
    Exit(ExitReason),
}

/// Why a shard's thread ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Its function returned normally.
    Returned,
    /// Its function returned an error, or its executor could not start.
    Failed(String),
    /// It panicked outside any request guard (e.g. in a spawned task).
    Panicked(String),
}

/// One lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The shard.
    pub shard: ShardId,
    /// Which start of that shard: 1 for the first, +1 per restart.
    pub incarnation: u32,
    /// What happened.
    pub kind: LifecycleKind,
    /// When the coordinator saw it.
    pub at: SystemTime,
}

impl fmt::Display for LifecycleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecycleKind::Fork => f.write_str("fork"),
            LifecycleKind::Online => f.write_str("online"),
            LifecycleKind::Listening => f.write_str("listening"),
            LifecycleKind::Disconnect => f.write_str("disconnect"),
            LifecycleKind::Exit(ExitReason::Returned) => f.write_str("exit (returned)"),
            LifecycleKind::Exit(ExitReason::Failed(why)) => write!(f, "exit (failed: {why})"),
            LifecycleKind::Exit(ExitReason::Panicked(why)) => write!(f, "exit (panicked: {why})"),
        }
    }
}

/// A subscription to every shard's lifecycle events, from
/// [`Coordinator::events`](crate::Coordinator::events): first the latest
/// 1,024 already recorded, then each as it happens.
///
/// Unbounded: a subscriber that never reads keeps what it was sent. Works
/// from any thread; the blocking methods block the calling thread only.
///
/// ```no_run
/// # fn example(coordinator: forkless::Coordinator) {
/// use std::time::Duration;
///
/// let events = coordinator.events();
/// while let Some(event) = events.recv_timeout(Duration::from_secs(1)) {
///     println!("shard {} incarnation {}: {}", event.shard, event.incarnation, event.kind);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct LifecycleEvents {
    receiver: flume::Receiver<LifecycleEvent>,
}

impl LifecycleEvents {
    /// The next event; blocks until there is one, `None` once the runtime
    /// is gone.
    pub fn recv(&self) -> Option<LifecycleEvent> {
        self.receiver.recv().ok()
    }

    /// The next event, waiting at most `timeout`: `None` when none came in
    /// time (or the runtime is gone).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<LifecycleEvent> {
        self.receiver.recv_timeout(timeout).ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<LifecycleEvent> {
        self.receiver.try_recv().ok()
    }

    /// Like [`recv`](Self::recv), for async code.
    pub async fn recv_async(&self) -> Option<LifecycleEvent> {
        self.receiver.recv_async().await.ok()
    }
}

impl Iterator for LifecycleEvents {
    type Item = LifecycleEvent;

    /// Blocks for the next event, as [`recv`](LifecycleEvents::recv).
    fn next(&mut self) -> Option<LifecycleEvent> {
        self.recv()
    }
}

/// Events kept for late subscribers.
const HISTORY: usize = 1024;

/// The record of lifecycle events and their subscribers.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    senders: Vec<flume::Sender<LifecycleEvent>>,
    /// The latest events, oldest first.
    history: VecDeque<LifecycleEvent>,
}

impl Subscribers {
    /// A stream that starts with the recorded history, then follows.
    pub(crate) fn subscribe(&self) -> LifecycleEvents {
        let (sender, receiver) = flume::unbounded();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for event in &state.history {
            let _ = sender.send(event.clone());
        }
        state.senders.push(sender);
        LifecycleEvents { receiver }
    }

    /// Logs `event` and hands it to every live subscriber.
    pub(crate) fn publish(&self, event: LifecycleEvent) {
        let shard = event.shard.get();
        let incarnation = event.incarnation;
        match &event.kind {
            LifecycleKind::Exit(ExitReason::Panicked(_) | ExitReason::Failed(_)) => {
                tracing::error!(shard, incarnation, "shard {}", event.kind);
            }
            _ => tracing::info!(shard, incarnation, "shard {}", event.kind),
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .senders
            .retain(|sender| sender.send(event.clone()).is_ok());
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(event);
    }
}
