//! The limits every connection is held to, and the clock that applies the
//! read-side ones.
//!
//! Which deadline applies depends on what the server is waiting for:
//!
//! | waiting for | limit | when it passes |
//! |---|---|---|
//! | the first request of a new connection | header read timeout, from accept | closed silently |
//! | the next request on a keep-alive connection | keep-alive timeout, from the end of the last response | closed silently |
//! | the rest of a request head | header read timeout, from its first byte | `408` and closed |
//! | request body bytes the handler asked for | body read timeout without progress, or below the minimum rate | the body read fails (`read_body` answers `408`), then closed |
//! | the client to take response bytes | send timeout without progress | closed |
//! | the handler | none: it decides | |
//! | HTTP/2: the connection preface or the first stream | header read timeout, from accept | closed |
//! | HTTP/2: a stream on a connection with none open | keep-alive timeout (checked once a period: idle 1-2 periods) | `GOAWAY`, closed |
//! | HTTP/2: the answer to a keep-alive `PING` | [`H2_PING_TIMEOUT`], one every [`H2_PING_INTERVAL`] | closed |
//!
//! The body rate counts only time the server spent waiting for body bytes
//! the handler asked for: a body sent at `rate` bytes/s or faster always
//! passes, one that trickles slower is cut off about `body read timeout`
//! after it starts, whatever its size.
//!
//! Which of those a blocked read waits for is [`Progress::waiting`]; the
//! [`ReadClock`] turns it into a deadline. Both are pure and synchronous:
//! time comes in as `now` (a value, or a function the clock calls only when
//! it needs the time), so they are tested without sockets or clocks. The
//! connection's I/O (`io.rs`) reads time only when a read would block (and
//! when a partial head first arrives), never per request.

use std::fmt;
use std::time::{Duration, Instant};

pub(crate) use crate::config::Limits;

/// HTTP/2 (`http2.rs`): most streams one connection may have open at once
/// (nginx's `http2_max_concurrent_streams`); a client may open no more
/// until one ends.
pub(crate) const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// HTTP/2: the initial flow-control window of each stream and of the
/// connection, 1 MiB (h2's defaults are 64 KiB, which caps one stream at
/// 64 KiB per round trip: ~6 MB/s over a 10 ms path). A window bounds what
/// a client may send ahead of the handler reading it.
pub(crate) const H2_WINDOW: u32 = 1024 * 1024;

/// HTTP/2: a keep-alive `PING` every 20 s; a connection whose peer does not
/// answer one within [`H2_PING_TIMEOUT`] is closed (a dead peer, or one
/// that stopped reading: its `PING` cannot even be sent).
pub(crate) const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// HTTP/2: how long a keep-alive `PING` may wait for its answer.
pub(crate) const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 rapid reset (CVE-2023-44487): streams a client may open and
/// reset before the server took them up. Past it the connection gets
/// `GOAWAY` with `ENHANCE_YOUR_CALM` (hyper's and h2's default).
pub(crate) const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// HTTP/2: streams the server may reset for a client's protocol errors on
/// one connection before it sends `GOAWAY` with `ENHANCE_YOUR_CALM`
/// ("MadeYouReset", CVE-2025-8671; hyper's default).
pub(crate) const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The error a body read gets when the body stalls or trickles in too slowly.
#[derive(Debug)]
pub(crate) struct BodyTimedOut;

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body stalled or arrived below the minimum rate")
    }
}

impl std::error::Error for BodyTimedOut {}

/// What a connection is waiting for when a read blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Nothing of the next request has arrived and no request is open.
    Idle { served_before: bool },
    /// Part of a request head has arrived and no earlier request is open.
    Head,
    /// Body bytes of the open request.
    Body,
    /// The handler or the response: not the client's time.
    Handler,
}

/// Where a connection's requests stand when a read blocks: what
/// [`Waiting`] is chosen from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The framing gate is inside a request body.
    pub(crate) in_body: bool,
    /// The framing gate waits for the next head (not inside a request, not
    /// paused after an upgrade, not closed).
    pub(crate) at_head: bool,
    /// Requests whose heads passed and whose responses are not done.
    pub(crate) open_requests: u64,
    /// Bytes of the next head arrived, not yet all of it.
    pub(crate) partial_head: bool,
    /// A response was already finished on this connection.
    pub(crate) served_before: bool,
}

impl Progress {
    /// What a blocked read waits for: the body first, then the handler
    /// (a request is open, or the gate is not at a head), then the rest of
    /// a head, else the next request.
    pub(crate) fn waiting(&self) -> Waiting {
        if self.in_body {
            Waiting::Body
        } else if !self.at_head || self.open_requests > 0 {
            Waiting::Handler
        } else if self.partial_head {
            Waiting::Head
        } else {
            Waiting::Idle {
                served_before: self.served_before,
            }
        }
    }
}

/// What to do about a blocked read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Wait, at most until this instant.
    Until(Instant),
    /// Wait without a deadline.
    Forever,
    /// The connection sat idle too long: close it silently.
    IdleExpired,
    /// The head did not arrive in time: answer `408`.
    HeadExpired,
    /// The body stalled or fell below the minimum rate.
    BodyExpired,
}

/// The read-side timing of one connection; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct ReadClock {
    /// When the connection last started waiting for a request.
    quiet_since: Option<Instant>,
    /// When the first byte of the current partial head arrived.
    head_started: Option<Instant>,
    body: BodyClock,
}

#[derive(Debug, Default)]
struct BodyClock {
    received: u64,
    /// Time spent waiting for body bytes before the current wait.
    waited: Duration,
    /// When the current wait began (a read blocked and was not retried yet).
    waiting_since: Option<Instant>,
    /// When the body last made no progress.
    stalled_since: Option<Instant>,
}

impl ReadClock {
    /// A read is about to be tried: closes the current wait, if any (`now`
    /// is called only then).
    pub(crate) fn on_retry(&mut self, now: impl FnOnce() -> Instant) {
        if let Some(since) = self.body.waiting_since.take() {
            self.body.waited += now().saturating_duration_since(since);
        }
    }

    /// Bytes of a partial head arrived (`now` is called for the first only).
    pub(crate) fn on_head_bytes(&mut self, now: impl FnOnce() -> Instant) {
        if self.head_started.is_none() {
            self.head_started = Some(now());
        }
    }

    /// A complete head passed: a new request (and maybe its body) begins.
    pub(crate) fn on_head(&mut self) {
        *self = Self::default();
    }

    /// Body bytes arrived.
    pub(crate) fn on_body_bytes(&mut self, n: usize) {
        self.body.received += n as u64;
        self.body.stalled_since = None;
    }

    /// A read blocked while `waiting`; decides whether to keep waiting.
    pub(crate) fn on_block(&mut self, waiting: Waiting, limits: &Limits, now: Instant) -> Verdict {
        match waiting {
            Waiting::Idle { served_before } => {
                let quiet = *self.quiet_since.get_or_insert(now);
                let limit = if served_before {
                    limits.keep_alive_timeout
                } else {
                    limits.header_read_timeout
                };
                expire_at(quiet + limit, now, Verdict::IdleExpired)
            }
            Waiting::Head => {
                let quiet = *self.quiet_since.get_or_insert(now);
                let started = self.head_started.unwrap_or(now).max(quiet);
                expire_at(
                    started + limits.header_read_timeout,
                    now,
                    Verdict::HeadExpired,
                )
            }
            Waiting::Body => {
                let body = &mut self.body;
                body.waiting_since = Some(now);
                let stalled = *body.stalled_since.get_or_insert(now);
                let mut deadline = stalled + limits.body_read_timeout;
                if limits.body_min_rate > 0 {
                    // Each byte buys 1/rate s of waiting beyond the grace.
                    let earned =
                        Duration::from_secs_f64(body.received as f64 / limits.body_min_rate as f64);
                    let allowance = (limits.body_read_timeout + earned).saturating_sub(body.waited);
                    deadline = deadline.min(now + allowance);
                }
                expire_at(deadline, now, Verdict::BodyExpired)
            }
            Waiting::Handler => {
                self.quiet_since = None;
                Verdict::Forever
            }
        }
    }
}

fn expire_at(deadline: Instant, now: Instant, expired: Verdict) -> Verdict {
    if now >= deadline {
        expired
    } else {
        Verdict::Until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn limits() -> Limits {
        Config::default()
            .header_read_timeout(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(5))
            .body_read_timeout(Duration::from_secs(1))
            .body_min_rate(100)
            .http
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_new_connection_gets_the_header_timeout_and_a_kept_one_the_keep_alive_timeout() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        let fresh = Waiting::Idle {
            served_before: false,
        };
        assert_eq!(
            clock.on_block(fresh, &l, t0),
            Verdict::Until(t0 + secs(2.0))
        );
        assert_eq!(
            clock.on_block(fresh, &l, t0 + secs(2.0)),
            Verdict::IdleExpired
        );

        let mut clock = ReadClock::default();
        let kept = Waiting::Idle {
            served_before: true,
        };
        assert_eq!(clock.on_block(kept, &l, t0), Verdict::Until(t0 + secs(5.0)));
        // Later blocks keep the first deadline.
        assert_eq!(
            clock.on_block(kept, &l, t0 + secs(1.0)),
            Verdict::Until(t0 + secs(5.0))
        );
    }

    #[test]
    fn a_partial_head_has_the_header_timeout_from_its_first_byte() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        let kept = Waiting::Idle {
            served_before: true,
        };
        clock.on_block(kept, &l, t0);
        clock.head_started = Some(t0 + secs(3.0));
        assert_eq!(
            clock.on_block(Waiting::Head, &l, t0 + secs(3.5)),
            Verdict::Until(t0 + secs(5.0))
        );
        assert_eq!(
            clock.on_block(Waiting::Head, &l, t0 + secs(5.0)),
            Verdict::HeadExpired
        );
    }

    #[test]
    fn handler_time_restarts_the_quiet_period() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        clock.on_block(Waiting::Head, &l, t0);
        assert_eq!(
            clock.on_block(Waiting::Handler, &l, t0 + secs(10.0)),
            Verdict::Forever
        );
        assert_eq!(
            clock.on_block(Waiting::Head, &l, t0 + secs(10.0)),
            Verdict::Until(t0 + secs(12.0))
        );
    }

    #[test]
    fn a_stalled_body_expires_after_the_body_timeout() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        clock.on_head();
        assert_eq!(
            clock.on_block(Waiting::Body, &l, t0),
            Verdict::Until(t0 + secs(1.0))
        );
        clock.body.waiting_since = None;
        clock.body.waited = secs(1.0);
        assert_eq!(
            clock.on_block(Waiting::Body, &l, t0 + secs(1.0)),
            Verdict::BodyExpired
        );
    }

    #[test]
    fn a_body_at_the_minimum_rate_earns_its_waiting_time() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        // 500 bytes received after 4 s of waiting: 1 s grace + 5 s earned.
        clock.on_body_bytes(500);
        clock.body.waited = secs(4.0);
        assert_eq!(
            clock.on_block(Waiting::Body, &l, t0),
            Verdict::Until(t0 + secs(1.0))
        );
        // Too slow: 50 bytes after 2 s leaves nothing.
        let mut slow = ReadClock::default();
        slow.on_body_bytes(50);
        slow.body.waited = secs(2.0);
        assert_eq!(slow.on_block(Waiting::Body, &l, t0), Verdict::BodyExpired);
    }

    #[test]
    fn a_blocked_read_waits_for_the_body_then_the_handler_then_a_head() {
        let at_head = Progress {
            at_head: true,
            ..Progress::default()
        };
        assert_eq!(
            at_head.waiting(),
            Waiting::Idle {
                served_before: false
            }
        );
        let kept = Progress {
            served_before: true,
            ..at_head
        };
        assert_eq!(
            kept.waiting(),
            Waiting::Idle {
                served_before: true
            }
        );
        let partial = Progress {
            partial_head: true,
            ..kept
        };
        assert_eq!(partial.waiting(), Waiting::Head);
        // A pipelined head behind an open request is the handler's time.
        let behind = Progress {
            open_requests: 1,
            ..partial
        };
        assert_eq!(behind.waiting(), Waiting::Handler);
        // Paused after an upgrade request, or closed after a refusal.
        let not_at_head = Progress {
            at_head: false,
            ..at_head
        };
        assert_eq!(not_at_head.waiting(), Waiting::Handler);
        let body = Progress {
            in_body: true,
            at_head: false,
            open_requests: 1,
            ..Progress::default()
        };
        assert_eq!(body.waiting(), Waiting::Body);
    }

    #[test]
    fn the_head_clock_starts_at_the_first_partial_bytes_only() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        clock.on_block(
            Waiting::Idle {
                served_before: true,
            },
            &l,
            t0,
        );
        clock.on_head_bytes(|| t0 + secs(1.0));
        clock.on_head_bytes(|| panic!("the head clock already started"));
        assert_eq!(
            clock.on_block(Waiting::Head, &l, t0 + secs(1.5)),
            Verdict::Until(t0 + secs(3.0))
        );
        // A whole head restarts everything.
        clock.on_head();
        assert_eq!(clock.head_started, None);
    }

    #[test]
    fn only_time_spent_waiting_for_body_bytes_counts_against_the_rate() {
        let (l, t0) = (limits(), Instant::now());
        let mut clock = ReadClock::default();
        clock.on_head();
        // No wait open: retrying reads no time.
        clock.on_retry(|| panic!("no wait to close"));
        // Wait 0.6 s, get 10 bytes (0.1 s earned), wait again.
        assert_eq!(
            clock.on_block(Waiting::Body, &l, t0),
            Verdict::Until(t0 + secs(1.0))
        );
        clock.on_retry(|| t0 + secs(0.6));
        clock.on_body_bytes(10);
        // Handler time between waits does not count.
        let again = t0 + secs(5.0);
        // 1 s grace + 0.1 s earned - 0.6 s waited = 0.5 s left.
        assert_eq!(
            clock.on_block(Waiting::Body, &l, again),
            Verdict::Until(again + secs(0.5))
        );
        clock.on_retry(|| again + secs(0.5));
        assert_eq!(
            clock.on_block(Waiting::Body, &l, again + secs(0.5)),
            Verdict::BodyExpired
        );
    }

    #[test]
    fn a_zero_rate_leaves_only_the_stall_timeout() {
        let l = Limits {
            body_min_rate: 0,
            ..limits()
        };
        let t0 = Instant::now();
        let mut clock = ReadClock::default();
        clock.body.waited = secs(100.0);
        assert_eq!(
            clock.on_block(Waiting::Body, &l, t0),
            Verdict::Until(t0 + secs(1.0))
        );
    }
}
