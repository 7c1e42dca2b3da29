//! The future that drives a connection: it polls the protocol's future
//! (the fast path's or hyper's), and whenever that waits, sends the output
//! it buffered and sleeps until the connection's earliest deadline.
//!
//! Contract: all the responses produced in one wake-up of the connection
//! task (pipelined requests) leave in one `send`; the output is sent once
//! more when the future ends, and [`Ended::Done`] is returned only after it
//! went out. When a read deadline passes, the future is polled again so
//! its blocked read acts on it (closes an idle connection, refuses a late
//! head, fails a stalled body read: `io.rs`); a passed send deadline ends
//! the connection ([`Ended::SendTimedOut`]). The clock is read only while
//! a deadline is set, once per wait; the sleep is one entry on the shard's
//! timer, moved rather than re-made. Dropping a [`Flush`] drops the future
//! and leaves unsent output in the connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::io::{Conn, Waits};
use super::transport::Transport;
use crate::shard::timer::ShardSleep;

/// How a driven connection ended.
#[derive(Debug)]
pub(crate) enum Ended<T> {
    /// The connection future finished and its output was sent.
    Done(T),
    /// The client took no bytes for the send timeout.
    SendTimedOut,
}

/// Wraps the connection future: sends buffered output whenever the future
/// waits and once more when it ends, and wakes it when a deadline passes.
pub(crate) struct Flush<S, F: Future> {
    conn: Conn<S>,
    future: F,
    done: Option<F::Output>,
    sleep: Option<ShardSleep>,
}

/// Drives `future` over `conn`; see [`Flush`].
pub(crate) fn drive<S: Transport, F: Future>(conn: &Conn<S>, future: F) -> Flush<S, F> {
    Flush {
        conn: conn.share(),
        future,
        done: None,
        sleep: None,
    }
}

impl<S: Transport, F: Future + Unpin> Future for Flush<S, F>
where
    F::Output: Unpin,
{
    type Output = Ended<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // A passed read deadline polls the future again so the read can act on it.
        for _ in 0..3 {
            if this.done.is_none()
                && let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx)
            {
                this.done = Some(output);
            }
            match this.conn.after_poll(cx, this.done.is_some()) {
                Waits::Finished => {
                    if let Some(output) = this.done.take() {
                        return Poll::Ready(Ended::Done(output));
                    }
                }
                Waits::Wake => return Poll::Pending,
                Waits::SendTimedOut => return Poll::Ready(Ended::SendTimedOut),
                Waits::Until(deadline) => {
                    let sleep = match &mut this.sleep {
                        Some(sleep) => {
                            sleep.reset(deadline);
                            sleep
                        }
                        None => this.sleep.insert(ShardSleep::new(deadline)),
                    };
                    if Pin::new(sleep).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Waits::Passed => {}
            }
            this.conn.deadline_passed();
        }
        Poll::Pending
    }
}
