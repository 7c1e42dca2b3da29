//! A client's bounded queue of frames to send.
//!
//! The room pushes without waiting; the client's writer takes frames as
//! fast as its socket accepts them. A client more than [`CAPACITY`] frames
//! behind is cut off: the push fails, the queue is emptied and the writer
//! learns it on its next wait, so one slow client never stalls a room.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::task::{Poll, Waker};

use tungstenite::Utf8Bytes;

/// Most frames a client may be behind before it is dropped.
pub(crate) const CAPACITY: usize = 256;

/// One client's queue; see the module docs.
#[derive(Default)]
pub(crate) struct Outbox {
    frames: RefCell<VecDeque<Utf8Bytes>>,
    overflowed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.frames.borrow().len())
            .field("overflowed", &self.overflowed.get())
            .finish()
    }
}

/// The client was too slow and is dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

impl Outbox {
    /// Queues `frame`; fails (and stays failed) once the client is
    /// [`CAPACITY`] frames behind.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> Result<(), Overflow> {
        if self.overflowed.get() {
            return Err(Overflow);
        }
        let mut frames = self.frames.borrow_mut();
        if frames.len() >= CAPACITY {
            frames.clear();
            self.overflowed.set(true);
            self.wake();
            return Err(Overflow);
        }
        frames.push_back(frame);
        self.wake();
        Ok(())
    }

    /// The queued frames (at least one), or `None` once overflowed.
    pub(crate) async fn next_batch(&self) -> Option<Vec<Utf8Bytes>> {
        std::future::poll_fn(|cx| {
            if self.overflowed.get() {
                return Poll::Ready(None);
            }
            let mut frames = self.frames.borrow_mut();
            if frames.is_empty() {
                self.waker.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            Poll::Ready(Some(frames.drain(..).collect()))
        })
        .await
    }

    /// Resolves once the client was dropped for being too slow.
    pub(crate) async fn overflowed(&self) {
        std::future::poll_fn(|cx| {
            if self.overflowed.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_overflows_for_good() {
        let outbox = Outbox::default();
        for i in 0..CAPACITY {
            assert_eq!(outbox.push(Utf8Bytes::from(i.to_string())), Ok(()));
        }
        assert_eq!(
            outbox.push(Utf8Bytes::from_static("one too many")),
            Err(Overflow)
        );
        assert_eq!(outbox.push(Utf8Bytes::from_static("later")), Err(Overflow));
        assert!(outbox.frames.borrow().is_empty());
        assert_eq!(futures::executor::block_on(outbox.next_batch()), None);
    }

    #[test]
    fn batches_keep_the_order() {
        let outbox = Outbox::default();
        for text in ["a", "b", "c"] {
            outbox.push(Utf8Bytes::from_static(text)).expect("room");
        }
        let batch = futures::executor::block_on(outbox.next_batch()).expect("frames");
        let texts: Vec<&str> = batch.iter().map(|f| f.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
    }
}
