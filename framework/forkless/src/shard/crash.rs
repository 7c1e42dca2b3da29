//! Crash containment: a panic that escapes a task of a shard ends its
//! incarnation in order, instead of unwinding through the executor.
//!
//! Contract: every task started with [`spawn`](super::spawn) (and the
//! shard's body itself) is polled under `catch_unwind`. A panic that
//! escapes one is recorded here (the first one wins), the task is never
//! polled again, and the incarnation's crash latch is set: the shard thread
//! (`thread.rs`) then ends the executor's run as if the body had returned,
//! so the executor is dropped with every task it still holds, and their
//! sockets, rings, eventfds and memory are freed. Letting the panic unwind
//! through glommio instead kills the thread and leaks every task it leaves.
//!
//! Tasks get a last turn (`CRASH_GRACE`); then every task still alive is
//! dropped (`task.rs`, `drop_every_task`), which closes what it held. The
//! same teardown ends every incarnation, crashed or not.
//!
//! What clients see: a request whose handler has not answered yet is
//! answered `503` with `Connection: close` as soon as the latch is set (the
//! handler's future is dropped; `http/service.rs`), within the grace; a
//! response already under way and every idle connection are closed when
//! their task is dropped.

use std::cell::RefCell;
use std::time::Duration;

use super::latch::Latch;

/// How long the tasks of a crashed incarnation may still run (those already
/// woken finish what they were writing) before every task is dropped.
pub(crate) const CRASH_GRACE: Duration = Duration::from_millis(100);

thread_local! {
    static CRASH: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct State {
    latch: Latch,
    why: Option<String>,
}

/// Arms containment on this shard thread; the latch that a crash sets.
pub(crate) fn arm() -> Latch {
    let latch = Latch::new();
    CRASH.with(|crash| {
        *crash.borrow_mut() = Some(State {
            latch: latch.clone(),
            why: None,
        });
    });
    latch
}

/// The latch a crash of this shard's incarnation sets; `None` off a shard
/// (or before it is armed). Requests in flight wait on it: a crash answers
/// them `503` rather than dropping them unanswered (`http/service.rs`).
pub(crate) fn latch() -> Option<Latch> {
    CRASH.with(|crash| crash.borrow().as_ref().map(|state| state.latch.clone()))
}

/// Records a panic that escaped a task and sets the latch.
pub(crate) fn record(why: String) {
    CRASH.with(|crash| {
        if let Some(state) = crash.borrow_mut().as_mut() {
            state.why.get_or_insert(why);
            state.latch.set();
        }
    });
}

/// The first panic recorded, taken.
pub(crate) fn take_why() -> Option<String> {
    CRASH.with(|crash| {
        crash
            .borrow_mut()
            .as_mut()
            .and_then(|state| state.why.take())
    })
}
