//! Front end 1: the internal-routing action `prometheus-metrics`
//! (`route = ^/metrics$ prometheus-metrics:`), compiled only for uWSGI binaries with routing.
//!
//! The action answers in the worker that took the request, so it needs a free worker core
//! (use `--prometheus-server` to scrape a saturated instance). It runs concurrently under
//! `--threads` and in async cores: it keeps no lock across a write, and its scratch buffers are
//! per thread, with a fresh buffer for a core that finds them in use.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ffi;
use crate::format::{negotiate, Format};
use crate::guard::guard;
use crate::host;
use crate::scrape;

/// What `prometheus-metrics:<args>` asked for, parsed once at configuration time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteFormat {
    /// `prometheus-metrics:` — by the request's `Accept` header.
    Negotiate,
    /// `prometheus-metrics:text`
    Text,
    /// `prometheus-metrics:openmetrics`
    OpenMetrics,
}

pub(crate) fn parse_args(args: &str) -> Result<RouteFormat, String> {
    match args.trim() {
        "" => Ok(RouteFormat::Negotiate),
        "text" => Ok(RouteFormat::Text),
        "openmetrics" => Ok(RouteFormat::OpenMetrics),
        other => Err(format!(
            "unknown argument '{other}' (expected nothing, 'text' or 'openmetrics')"
        )),
    }
}

/// Routes configured with this action (for the startup log line).
static ROUTES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn configured_routes() -> usize {
    ROUTES.load(Ordering::Relaxed)
}

type RouteSetup = unsafe extern "C" fn(*mut ffi::uwsgi_route, *mut c_char) -> c_int;
type RegisterRouter =
    unsafe extern "C" fn(*mut c_char, Option<RouteSetup>) -> *mut ffi::uwsgi_router;

/// Registers the action. `uwsgi_register_router` is looked up at run time rather than linked,
/// so a library that references it can never make dlopen fail on a binary without routing.
pub(crate) fn register() {
    let sym = host::dlsym_default(c"uwsgi_register_router");
    if sym.is_null() {
        host::log("this uWSGI has no uwsgi_register_router; route action unavailable");
        return;
    }
    // SAFETY: the ABI check passed, so this is the routing build's
    // `struct uwsgi_router *uwsgi_register_router(char *, int (*)(struct uwsgi_route *, char *))`.
    let register: RegisterRouter = unsafe { std::mem::transmute(sym) };
    // SAFETY: uWSGI stores the name pointer (a 'static C string literal, never written).
    unsafe {
        register(
            c"prometheus-metrics".as_ptr() as *mut c_char,
            Some(route_setup),
        )
    };
}

unsafe extern "C" fn route_setup(ur: *mut ffi::uwsgi_route, args: *mut c_char) -> c_int {
    guard("prometheus-metrics setup", -1, || {
        let args = if args.is_null() {
            String::new()
        } else {
            // SAFETY: uWSGI passes the NUL-terminated text after the action's colon.
            unsafe { CStr::from_ptr(args) }
                .to_string_lossy()
                .into_owned()
        };
        match parse_args(&args) {
            Err(e) => {
                host::log(&format!("route action prometheus-metrics:{args}: {e}"));
                -1
            }
            Ok(fmt) => {
                // Owned by the route. Config routes live as long as the process; virtual routes
                // (uwsgi.route()) call `free`, which drops it.
                let data = Box::into_raw(Box::new(fmt));
                // SAFETY: `ur` is the route uWSGI is initialising, exclusively ours during this
                // call; these fields are the action's to set.
                let route = unsafe { &mut *ur };
                route.func = Some(route_func);
                route.data = data.cast::<c_void>();
                route.free = Some(route_free);
                ROUTES.fetch_add(1, Ordering::Relaxed);
                0
            }
        }
    })
}

unsafe extern "C" fn route_free(ur: *mut ffi::uwsgi_route) {
    guard("prometheus-metrics free", (), || {
        // SAFETY: `ur` is a route set up by route_setup, being freed once by uWSGI.
        let data = unsafe { (*ur).data };
        if !data.is_null() {
            // SAFETY: `data` is the Box<RouteFormat> leaked in route_setup, freed only here.
            drop(unsafe { Box::from_raw(data.cast::<RouteFormat>()) });
            // SAFETY: as above; clears the dangling pointer.
            unsafe { (*ur).data = std::ptr::null_mut() };
        }
    })
}

const BREAK: c_int = ffi::UWSGI_ROUTE_BREAK as c_int;

unsafe extern "C" fn route_func(req: *mut ffi::wsgi_request, ur: *mut ffi::uwsgi_route) -> c_int {
    guard("prometheus-metrics", BREAK, || {
        // SAFETY: `ur` is a route set up by route_setup; `data` points to its RouteFormat.
        let data = unsafe { (*ur).data };
        let forced = if data.is_null() {
            RouteFormat::Negotiate
        } else {
            // SAFETY: see above; the value is Copy and never mutated.
            unsafe { *data.cast::<RouteFormat>() }
        };
        serve(Request(req), forced);
        BREAK
    })
}

/// A request uWSGI is handling in this thread, valid for the duration of the route call.
struct Request(*mut ffi::wsgi_request);

impl Request {
    fn method(&self) -> &[u8] {
        // SAFETY: `self.0` is the request this thread is handling (see `Request`).
        let r = unsafe { &*self.0 };
        // uWSGI fills `method`/`method_len` while parsing; the bytes live in the request buffer
        // until the request ends, which outlives this call.
        let (p, len) = (r.method, r.method_len);
        if p.is_null() {
            return b"";
        }
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }
    }

    fn var(&self, key: &'static [u8]) -> Option<&[u8]> {
        let mut len: u16 = 0;
        // SAFETY: uwsgi_get_var only reads the request's variables; `key` is not written.
        let p = unsafe {
            (host::api().get_var)(
                self.0,
                key.as_ptr() as *mut c_char,
                key.len() as u16,
                &mut len,
            )
        };
        if p.is_null() {
            return None;
        }
        // SAFETY: uWSGI returns a pointer into the request buffer with its length (not NUL
        // terminated), live until the request ends.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) })
    }

    /// Sends a whole response. Errors (client gone, headers already sent) end the request,
    /// which is all the route can do about them.
    fn respond(
        &self,
        status: &[u8],
        extra: &[(&[u8], &[u8])],
        ctype: &[u8],
        body: &[u8],
        head: bool,
    ) {
        // SAFETY: the status and header bytes are copied by uWSGI into its header buffer and
        // never written through these pointers.
        if unsafe {
            (host::api().prepare_headers)(
                self.0,
                status.as_ptr() as *mut c_char,
                status.len() as u16,
            )
        } != 0
        {
            return;
        }
        self.header(b"Content-Type", ctype);
        for (k, v) in extra {
            self.header(k, v);
        }
        // SAFETY: as above.
        unsafe { (host::api().add_content_length)(self.0, body.len() as u64) };
        if head {
            // SAFETY: sends the prepared headers; blocking is bounded by uWSGI's socket-timeout.
            unsafe { (host::api().write_headers)(self.0) };
        } else {
            // SAFETY: `body` is live for the call; uWSGI copies or writes it before returning.
            unsafe { (host::api().write_body)(self.0, body.as_ptr() as *mut c_char, body.len()) };
        }
    }

    fn header(&self, k: &[u8], v: &[u8]) {
        // SAFETY: see `respond`; both slices are shorter than 64 KiB.
        unsafe {
            (host::api().add_header)(
                self.0,
                k.as_ptr() as *mut c_char,
                k.len() as u16,
                v.as_ptr() as *mut c_char,
                v.len() as u16,
            )
        };
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<i64>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn serve(req: Request, forced: RouteFormat) {
    let head = match req.method() {
        b"GET" => false,
        b"HEAD" => true,
        _ => {
            req.respond(
                b"405 Method Not Allowed",
                &[(b"Allow", b"GET, HEAD")],
                b"text/plain; charset=utf-8",
                b"method not allowed: use GET or HEAD\n",
                false,
            );
            return;
        }
    };
    let fmt = match forced {
        RouteFormat::Text => Format::Text,
        RouteFormat::OpenMetrics => Format::OpenMetrics,
        RouteFormat::Negotiate => negotiate(req.var(b"HTTP_ACCEPT")),
    };
    let send = |values: &mut Vec<i64>, out: &mut Vec<u8>| match scrape::render(fmt, values, out) {
        Ok(()) => req.respond(b"200 OK", &[], fmt.content_type().as_bytes(), out, head),
        Err(msg) => req.respond(
            b"503 Service Unavailable",
            &[],
            b"text/plain; charset=utf-8",
            msg.as_bytes(),
            head,
        ),
    };
    // An async core can re-enter while another core of this thread waits in a write holding the
    // buffers; it then uses fresh ones.
    let reused = SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            let (values, out) = &mut *s;
            send(values, out);
            true
        }
        Err(_) => false,
    });
    if !reused {
        send(&mut Vec::new(), &mut Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_arguments() {
        assert_eq!(parse_args(""), Ok(RouteFormat::Negotiate));
        assert_eq!(parse_args(" text "), Ok(RouteFormat::Text));
        assert_eq!(parse_args("openmetrics"), Ok(RouteFormat::OpenMetrics));
        let e = parse_args("json").unwrap_err();
        assert!(e.contains("'json'"), "{e}");
    }
}
