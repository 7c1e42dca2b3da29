//! What a bus operation returns when it cannot deliver: always the value
//! that did not go, so nothing is lost silently.

use std::fmt;

use crate::ShardId;

/// A send failed because the receiving shard is not running (stopped, or
/// between incarnations); the message is returned.
#[derive(PartialEq, Eq)]
pub struct SendError<M>(pub M);

/// A `try_send` failed; the message is returned.
#[derive(PartialEq, Eq)]
pub enum TrySendError<M> {
    /// The queue to that shard is full; try later or use `send().await`.
    Full(M),
    /// The receiving shard is not running.
    Closed(M),
}

/// A `call` got no reply.
#[derive(PartialEq, Eq)]
pub enum CallError<M> {
    /// The request was not delivered: the receiving shard is not running.
    Closed(M),
    /// The request was delivered but dropped without a reply: the handler
    /// panicked, ignored the reply, or its shard stopped.
    NoReply,
    /// No reply came within the call's time limit
    /// ([`DEFAULT_CALL_TIMEOUT`](crate::bus::DEFAULT_CALL_TIMEOUT) for
    /// [`Bus::call`](crate::bus::Bus::call)): no task on the receiving shard
    /// receives this message type, or its receiver is stuck. The request
    /// may still be handled later; its reply is then dropped.
    TimedOut,
}

/// Some shards of a broadcast were not reached; their copies are returned.
#[derive(PartialEq, Eq)]
pub struct BroadcastError<M> {
    /// The shards not reached, each with the copy meant for it.
    pub undelivered: Vec<(ShardId, M)>,
}

/// `run_on` or `map_reduce` did not produce a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The target shard is not running.
    Closed(ShardId),
    /// The closure panicked, or its shard stopped before it finished.
    Lost(ShardId),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        self.0
    }
}

impl<M> TrySendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(m) | TrySendError::Closed(m) => m,
        }
    }

    /// Whether the queue was full (rather than the shard gone).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the receiving shard is not running; the message was returned")
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<M> fmt::Display for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the queue to that shard is full"),
            TrySendError::Closed(_) => f.write_str("the receiving shard is not running"),
        }
    }
}

impl<M> fmt::Debug for CallError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Closed(_) => f.write_str("Closed(..)"),
            CallError::NoReply => f.write_str("NoReply"),
            CallError::TimedOut => f.write_str("TimedOut"),
        }
    }
}

impl<M> fmt::Display for CallError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Closed(_) => f.write_str("the receiving shard is not running"),
            CallError::NoReply => f.write_str(
                "the request was dropped without a reply (handler panicked or its shard stopped)",
            ),
            CallError::TimedOut => f.write_str(
                "no reply in time: does a task on the receiving shard receive this message type?",
            ),
        }
    }
}

impl<M> fmt::Debug for BroadcastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shards: Vec<ShardId> = self.undelivered.iter().map(|(id, _)| *id).collect();
        f.debug_struct("BroadcastError")
            .field("undelivered", &shards)
            .finish()
    }
}

impl<M> fmt::Display for BroadcastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} shard(s) were not running", self.undelivered.len())
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Closed(id) => write!(f, "shard {id} is not running"),
            RunError::Lost(id) => {
                write!(f, "the closure on shard {id} panicked or its shard stopped")
            }
        }
    }
}

impl<M> std::error::Error for SendError<M> {}
impl<M> std::error::Error for TrySendError<M> {}
impl<M> std::error::Error for CallError<M> {}
impl<M> std::error::Error for BroadcastError<M> {}
impl std::error::Error for RunError {}
