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
    let hint = tokio_hint(&text, cfg!(feature = "tokio")).unwrap_or("");
    match info.location() {
        Some(at) => format!("{text} at {}:{}{hint}", at.file(), at.line()),
        None => format!("{text}{hint}"),
    }
}

/// What to enable when a tokio API panics for want of a runtime (a tokio
/// client, `tokio::spawn`, tower-http's `ServeDir` in an app built without
/// forkless's `tokio` feature).
fn tokio_hint(text: &str, tokio_enabled: bool) -> Option<&'static str> {
    let wants_runtime = text.contains("Tokio 1.x")
        || text.contains("Tokio feature flag")
        || text.contains("no reactor running");
    (wants_runtime && !tokio_enabled).then_some(
        " (tokio clients, tokio::spawn and tower-http's ServeDir need forkless's \
         `tokio` feature: forkless = { features = [\"tokio\"] } in Cargo.toml; \
         see docs/databases.md)",
    )
}

#[cfg(test)]
mod tests {
    use super::tokio_hint;

    #[test]
    fn a_tokio_runtime_panic_names_the_feature_to_enable() {
        for text in [
            "there is no reactor running, must be called from the context of a Tokio 1.x runtime",
            "A Tokio 1.x context was found, but IO is disabled.",
            "`spawn_blocking` requires the `rt` Tokio feature flag",
        ] {
            let hint = tokio_hint(text, false).expect("a hint");
            assert!(hint.contains("features = [\"tokio\"]"), "{hint}");
            assert_eq!(tokio_hint(text, true), None, "the feature is on already");
        }
        assert_eq!(tokio_hint("index out of bounds", false), None);
    }
}
