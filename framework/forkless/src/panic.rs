//! Panics: logged through `tracing` (so they carry the shard tag) and
//! remembered per thread, so whoever catches one can say what it was.

use std::any::Any;
use std::cell::RefCell;
use std::panic::PanicHookInfo;
use std::sync::Once;

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the process-wide panic hook once.
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = describe(info);
            if tracing::dispatcher::has_been_set() {
                tracing::error!(target: "forkless::panic", "panic: {message}");
            } else {
                // Nobody listens to `tracing` (a test, an embedder): keep
                // the default report on stderr.
                previous(info);
            }
            LAST.with(|last| *last.borrow_mut() = Some(message));
        }));
    });
}

/// The last panic seen on this thread, taken.
pub(crate) fn take_last() -> Option<String> {
    LAST.with(|last| last.borrow_mut().take())
}

/// The message of a caught panic payload, preferring what the hook recorded
/// (it knows the location).
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    take_last().unwrap_or_else(|| payload_text(payload))
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let text = payload_text(info.payload());
    match info.location() {
        Some(at) => format!("{text} at {}:{}", at.file(), at.line()),
        None => text,
    }
}
