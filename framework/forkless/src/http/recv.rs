//! A connection's receive buffer: where socket reads land, and which of
//! those bytes have passed the framing gate.
//!
//! Contract: pure and synchronous (no I/O, no clocks); the connection's I/O
//! (`io.rs`) reads into [`RecvBuffer::spare`] and tells the buffer what
//! happened. The buffer is zeroed once, when the connection opens (and when
//! it grows), never per read, and holds three runs of bytes, in order:
//!
//! ```text
//! [..start)          handed on already (to hyper or the fast path); free
//! [start..released)  passed the gate, not yet handed to hyper
//! [released..end)    received, not yet passed (the rest of a head)
//! [end..)            room for the next read
//! ```
//!
//! Sizes: [`RECV_BUFFER`] to start with; a read that fills the buffer
//! doubles it before the next one, up to [`RECV_MAX`]; one partial head
//! that fills it grows it up to the head size limit plus [`RECV_BUFFER`]
//! (the gate refuses a head before it passes the limit, so this stays
//! bounded). [`RecvBuffer::shrink`] gives a grown buffer back once it is
//! empty, so an idle keep-alive connection holds [`RECV_BUFFER`] only.

/// First receive buffer of a connection: a request head, or a burst of
/// small pipelined ones. Most connections never need more, and an idle
/// keep-alive connection holds it for as long as it stays open.
pub(crate) const RECV_BUFFER: usize = 2 * 1024;

/// What a receive buffer doubles up to while reads keep filling it
/// (request bodies, long pipelined bursts); a head may need up to
/// `--max-header-size` on top.
pub(crate) const RECV_MAX: usize = 64 * 1024;

/// One connection's receive buffer; see the module docs.
#[derive(Debug)]
pub(crate) struct RecvBuffer {
    buf: Vec<u8>,
    start: usize,
    released: usize,
    end: usize,
    /// The last read filled the buffer: double it before the next one.
    grow: bool,
}

impl Default for RecvBuffer {
    fn default() -> Self {
        Self {
            buf: vec![0; RECV_BUFFER],
            start: 0,
            released: 0,
            end: 0,
            grow: false,
        }
    }
}

impl RecvBuffer {
    /// Received bytes the gate has not passed yet.
    pub(crate) fn unpassed(&self) -> &[u8] {
        &self.buf[self.released..self.end]
    }

    /// Whether any received bytes wait for the gate.
    pub(crate) fn has_unpassed(&self) -> bool {
        self.released < self.end
    }

    /// Passed bytes hyper has not been handed yet.
    pub(crate) fn passed(&self) -> &[u8] {
        &self.buf[self.start..self.released]
    }

    /// Everything received and not handed on: passed and unpassed bytes.
    pub(crate) fn held(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether nothing received is left to hand on.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The gate passed the next `n` unpassed bytes (for hyper).
    pub(crate) fn pass(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.released);
        self.released += n;
    }

    /// The fast path took the next `n` unpassed bytes (a whole head): they
    /// are consumed, with everything passed before them.
    pub(crate) fn take(&mut self, n: usize) {
        self.pass(n);
        self.start = self.released;
    }

    /// `n` passed bytes were handed to hyper.
    pub(crate) fn hand_on(&mut self, n: usize) {
        debug_assert!(n <= self.released - self.start);
        self.start += n;
    }

    /// Drops the unpassed bytes (a refused head and everything after it).
    pub(crate) fn drop_unpassed(&mut self) {
        self.end = self.released;
    }

    /// Room for the next read at the end of the buffer (never empty):
    /// grows the buffer after a read that filled it, moves held bytes to the
    /// front when they reach its end, and grows it for one long partial head
    /// (up to `max_head` plus [`RECV_BUFFER`]).
    pub(crate) fn spare(&mut self, max_head: usize) -> &mut [u8] {
        if std::mem::take(&mut self.grow) && self.buf.len() < RECV_MAX {
            let grown = (self.buf.len() * 2).min(RECV_MAX);
            self.buf.resize(grown, 0);
        }
        if self.start == self.end {
            (self.start, self.released, self.end) = (0, 0, 0);
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.released -= self.start;
                self.end -= self.start;
                self.start = 0;
            } else {
                // One partial head fills the buffer; the gate refuses it
                // before it passes the limit, so this stays bounded.
                let cap = max_head.saturating_add(RECV_BUFFER);
                let grown = (self.buf.len() * 2).min(cap).max(self.buf.len() + 1);
                self.buf.resize(grown, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// A read put `n` bytes into [`spare`](Self::spare).
    pub(crate) fn received(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.end);
        self.grow = self.end + n == self.buf.len();
        self.end += n;
    }

    /// The whole buffer, for reads whose bytes are discarded (a lingering
    /// close); what it held is lost.
    pub(crate) fn scratch(&mut self) -> &mut [u8] {
        (self.start, self.released, self.end) = (0, 0, 0);
        &mut self.buf[..]
    }

    /// Between requests: gives back a buffer a large body or pipelined
    /// burst grew, once it holds nothing.
    pub(crate) fn shrink(&mut self) {
        if self.buf.len() > RECV_BUFFER && self.start == self.end {
            *self = Self::default();
        }
    }

    /// The buffer's size.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
#[path = "recv_tests.rs"]
mod tests;
