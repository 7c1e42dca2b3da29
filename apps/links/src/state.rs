//! This shard's cache, in a `thread_local!` (a shard is one thread: no
//! lock), and the switch that turns it off for good when a rolling reload
//! replaces this incarnation (its successor receives the invalidations from
//! then on, so this one must not answer from a cache it can no longer keep
//! consistent).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::cache::Cache;

/// Codes each shard caches by default (`LINKS_CACHE_SIZE` sets another; 0
/// turns the cache off).
pub(crate) const DEFAULT_CACHE_SIZE: usize = 4096;

struct State {
    cache: RefCell<Cache>,
    off: Cell<bool>,
}

thread_local! {
    static STATE: State = State {
        cache: RefCell::new(Cache::new(cache_size())),
        off: Cell::new(false),
    };
}

fn cache_size() -> usize {
    std::env::var("LINKS_CACHE_SIZE")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_CACHE_SIZE)
}

/// The cached URL of `code`.
pub(crate) fn lookup(code: &str) -> Option<Rc<str>> {
    STATE.with(|state| {
        if state.off.get() {
            return None;
        }
        state.cache.borrow_mut().get(code)
    })
}

/// The generation a miss takes before it reads (see `cache.rs`).
pub(crate) fn generation() -> u64 {
    STATE.with(|state| state.cache.borrow().generation())
}

/// Caches what a miss read at `generation`, unless invalidated since.
pub(crate) fn fill(generation: u64, code: &str, url: Rc<str>) {
    STATE.with(|state| {
        if !state.off.get() {
            state.cache.borrow_mut().fill(generation, code, url);
        }
    });
}

/// Forgets `code` and fences off the fills in flight.
pub(crate) fn invalidate(code: &str) {
    STATE.with(|state| state.cache.borrow_mut().invalidate(code));
}

/// Empties the cache and stops using it (this incarnation is replaced).
pub(crate) fn switch_off() {
    STATE.with(|state| {
        state.off.set(true);
        state.cache.borrow_mut().clear();
    });
}
