//! A connection's output buffer: what the protocols wrote, sent when the
//! connection task waits (`flush.rs`), and since when sending is stuck.
//!
//! Contract: pure and synchronous; the socket write and the clock come in
//! as functions (`write`, `now`), called only while there is output to send
//! and only when a send blocks, so the buffer is tested without sockets.
//! At most [`HIGH_WATER`] bytes are buffered: past it, writers wait until
//! some of it is sent, so a large body is never copied whole. An idle
//! connection keeps at most [`OUT_KEEP`] bytes of capacity.

use std::io::{self, IoSlice};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Output buffer capacity an idle connection may keep.
const OUT_KEEP: usize = 4 * 1024;

/// Buffered output above which writes go out before more is accepted.
pub(crate) const HIGH_WATER: usize = 64 * 1024;

/// One connection's output; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct SendBuffer {
    out: Vec<u8>,
    /// How much of `out` has been sent.
    sent: usize,
    /// Since when sending made no progress.
    blocked: Option<Instant>,
}

impl SendBuffer {
    /// Bytes written and not sent yet.
    pub(crate) fn buffered(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Whether writers must wait for some of the output to be sent.
    pub(crate) fn is_full(&self) -> bool {
        self.buffered() >= HIGH_WATER
    }

    /// The output, to append to.
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Appends what fits below [`HIGH_WATER`] of `bufs`; how many bytes.
    pub(crate) fn accept(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let mut room = HIGH_WATER.saturating_sub(self.buffered());
        let mut accepted = 0;
        for buf in bufs {
            let n = buf.len().min(room);
            self.out.extend_from_slice(&buf[..n]);
            accepted += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        accepted
    }

    /// Sends buffered output with `write` until all of it is gone or
    /// `write` is pending; a send that blocks after progress (or for the
    /// first time) restarts the stall clock at `now()`.
    pub(crate) fn poll_send(
        &mut self,
        mut write: impl FnMut(&[u8]) -> Poll<io::Result<usize>>,
        now: impl FnOnce() -> Instant,
    ) -> Poll<io::Result<()>> {
        let mut progressed = false;
        while self.sent < self.out.len() {
            match write(&self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    progressed = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    if progressed || self.blocked.is_none() {
                        self.blocked = Some(now());
                    }
                    return Poll::Pending;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        self.blocked = None;
        Poll::Ready(Ok(()))
    }

    /// When a stuck send gives up, given the send timeout.
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.blocked.map(|since| since + timeout)
    }

    /// Between requests: gives back capacity a large response grew.
    pub(crate) fn shrink(&mut self) {
        if self.out.capacity() > OUT_KEEP && self.buffered() == 0 {
            self.out = Vec::new();
            self.sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_taken_up_to_the_high_water_mark() {
        let mut send = SendBuffer::default();
        let big = vec![b'x'; HIGH_WATER - 10];
        assert_eq!(send.accept(&[IoSlice::new(&big)]), HIGH_WATER - 10);
        assert!(!send.is_full());
        let tail = [IoSlice::new(b"0123456789abc"), IoSlice::new(b"more")];
        assert_eq!(send.accept(&tail), 10);
        assert!(send.is_full());
        assert_eq!(send.accept(&tail), 0);
    }

    #[test]
    fn a_stuck_send_starts_the_clock_and_progress_restarts_it() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        let mut send = SendBuffer::default();
        send.out().extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(send.deadline(timeout), None);
        // The socket is full at once.
        let pending = send.poll_send(|_| Poll::Pending, || t0);
        assert!(pending.is_pending());
        assert_eq!(send.deadline(timeout), Some(t0 + timeout));
        // Still stuck: the clock keeps its start.
        let _ = send.poll_send(|_| Poll::Pending, || panic!("no progress"));
        assert_eq!(send.deadline(timeout), Some(t0 + timeout));
        // Five bytes go, then it blocks again: the clock restarts.
        let t1 = t0 + Duration::from_secs(1);
        let mut first = true;
        let mut write = |bytes: &[u8]| {
            if std::mem::take(&mut first) {
                Poll::Ready(Ok(bytes.len().min(5)))
            } else {
                Poll::Pending
            }
        };
        assert!(send.poll_send(&mut write, || t1).is_pending());
        assert_eq!(send.buffered(), 14);
        assert_eq!(send.deadline(timeout), Some(t1 + timeout));
        // All of it goes: nothing is stuck any more.
        let mut wire = Vec::new();
        let sent = send.poll_send(
            |bytes| {
                wire.extend_from_slice(bytes);
                Poll::Ready(Ok(bytes.len()))
            },
            || panic!("not blocked"),
        );
        assert!(matches!(sent, Poll::Ready(Ok(()))));
        assert_eq!(wire, b"1.1 200 OK\r\n\r\n");
        assert_eq!(send.buffered(), 0);
        assert_eq!(send.deadline(timeout), None);
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error() {
        let mut send = SendBuffer::default();
        send.out().push(b'x');
        let sent = send.poll_send(|_| Poll::Ready(Ok(0)), Instant::now);
        assert!(matches!(sent, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WriteZero));
    }
}
