//! uWSGI's logger. Depends on nothing else in the crate, so every layer (and the load-time
//! constructor, before anything is resolved) can log.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

type UwsgiLogFn = unsafe extern "C" fn(fmt: *const c_char, ...);

/// `uwsgi_log`, resolved at run time so that code reachable from the load-time constructor and
/// from unit tests has no link-time dependency on the host.
fn uwsgi_log_fn() -> Option<UwsgiLogFn> {
    static LOG: OnceLock<usize> = OnceLock::new();
    let addr = *LOG.get_or_init(|| {
        // SAFETY: RTLD_DEFAULT with a NUL-terminated name only searches the loaded objects.
        let p: *mut c_void = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"uwsgi_log".as_ptr()) };
        p as usize
    });
    if addr == 0 {
        return None;
    }
    // SAFETY: `addr` is the address of uWSGI's exported `void uwsgi_log(const char *, ...)`.
    Some(unsafe { std::mem::transmute::<usize, UwsgiLogFn>(addr) })
}

/// Logs one line through uWSGI's logger, prefixed with the plugin name. Outside uWSGI (tests)
/// it goes to stderr.
pub(crate) fn log(msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    match uwsgi_log_fn() {
        // SAFETY: constant format; `%.*s` reads exactly `len` bytes from `msg`, which is live for
        // the call. No NUL terminator is needed with a precision.
        Some(f) => unsafe { f(c"[metrics_prometheus] %.*s\n".as_ptr(), len, msg.as_ptr()) },
        None => eprintln!("[metrics_prometheus] {msg}"),
    }
}
