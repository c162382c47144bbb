//! The panic boundary. Every `extern "C"` function uWSGI calls runs its body through [`guard`]:
//! a panic must never unwind into C (undefined behaviour) nor abort the uWSGI master.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic is logged through uWSGI's logger and turned into `on_panic`.
pub(crate) fn guard<R>(hook: &'static str, on_panic: R, f: impl FnOnce() -> R) -> R {
    // AssertUnwindSafe: after a panic we only log and return `on_panic`. Shared state lives behind
    // parking_lot locks (no poisoning) and is either immutable after startup or rebuilt per scrape.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::host::log(&format!("{hook}: caught a panic, failing closed"));
            on_panic
        }
    }
}

/// Routes panic messages (with their location) to uWSGI's log instead of raw stderr, so they
/// land wherever the operator sends uWSGI's logs. Installed from `on_load`, the first hook.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("<non-string panic payload>");
        match info.location() {
            Some(l) => crate::host::log(&format!("panic at {}:{}: {msg}", l.file(), l.line())),
            None => crate::host::log(&format!("panic: {msg}")),
        }
    }));
}
