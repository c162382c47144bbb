//! The panic boundary. Every function uWSGI (or libc, at fork or load time) calls into is
//! declared with [`entry!`], which runs its body through [`guard`]: a panic must never unwind
//! into C (undefined behaviour) nor abort the uWSGI master. No other way to write an
//! `extern "C"` function exists in the crate (the layering test checks it).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::host;

/// Runs `f`; a panic is logged through uWSGI's logger and turned into `on_panic`.
pub(crate) fn guard<R>(entry: &'static str, on_panic: R, f: impl FnOnce() -> R) -> R {
    // AssertUnwindSafe: after a panic we only log and return `on_panic`. Shared state lives behind
    // parking_lot locks (no poisoning) and is either immutable after startup or rebuilt per scrape.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            host::log(&format!("{entry}: caught a panic, failing closed"));
            on_panic
        }
    }
}

/// Declares an `extern "C"` entry point whose body runs inside [`guard`]:
///
/// ```ignore
/// entry! {
///     /// Docs.
///     fn name(arg: *mut T) -> c_int = -1 /* returned on panic */; { body }
/// }
/// ```
macro_rules! entry {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty = $on_panic:expr; $body:block) => {
        $(#[$m])*
        unsafe extern "C" fn $name($($a: $t),*) -> $r {
            $crate::plugin::guard::guard(stringify!($name), $on_panic, || $body)
        }
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        unsafe extern "C" fn $name($($a: $t),*) {
            $crate::plugin::guard::guard(stringify!($name), (), || $body)
        }
    };
}
pub(crate) use entry;

/// Routes panic messages (with their location) to uWSGI's log, where the operator sends uWSGI's
/// logs, then hands over to the hook that was there before (the host's or Rust's default).
/// Installed once, from `on_load`.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("<non-string panic payload>");
            match info.location() {
                Some(l) => host::log(&format!("panic at {}:{}: {msg}", l.file(), l.line())),
                None => host::log(&format!("panic: {msg}")),
            }
            previous(info);
        }));
    });
}
