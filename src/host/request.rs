//! Requests, and uWSGI's hooks around them: the `prometheus-metrics` routing action (the
//! action, its route and the request it answers, routing builds only) and the after-request
//! chain (every build). In the spirit of ngx-rust's `Request::from_ngx_http_request`.

use std::ffi::{c_char, CStr};
#[cfg(uwsgi_routing)]
use std::ffi::{c_int, c_void};

#[cfg(uwsgi_routing)]
use super::abi::dlsym_default;
use super::abi::{api, server};
use crate::ffi;

/// Adds `name`, an exported function `void name(struct wsgi_request *)` of this plugin, to
/// uWSGI's after-request chain, exactly as `--after-request-hook name` would: uWSGI resolves it
/// with dlsym (plugins are loaded RTLD_GLOBAL) after `postinit_apps`, logs "added ... to the
/// after-request chain", and calls it at the end of every request, in `uwsgi_close_request`,
/// whatever the request plugin. Master, before fork (`post_init`).
pub(crate) fn add_after_request_hook(name: &'static CStr) {
    // SAFETY: the ABI check passed, so this is the field of this build's layout; option parsing
    // is over and the master is single-threaded (no other reference to the field exists).
    let list = unsafe { &raw mut (*server()).after_request_hooks };
    // SAFETY: `list` is uWSGI's list head (above); uWSGI keeps the pointer as the new node's
    // value (a 'static string, never written).
    unsafe { (api().string_new_list)(list, name.as_ptr() as *mut c_char) };
}

#[cfg(uwsgi_routing)]
pub(crate) type RouteSetup = unsafe extern "C" fn(*mut ffi::uwsgi_route, *mut c_char) -> c_int;
#[cfg(uwsgi_routing)]
pub(crate) type RouteFunc =
    unsafe extern "C" fn(*mut ffi::wsgi_request, *mut ffi::uwsgi_route) -> c_int;
#[cfg(uwsgi_routing)]
type RegisterRouter =
    unsafe extern "C" fn(*mut c_char, Option<RouteSetup>) -> *mut ffi::uwsgi_router;

/// What a route action returns to stop the routing chain: the response is complete.
#[cfg(uwsgi_routing)]
pub(crate) const BREAK: c_int = ffi::UWSGI_ROUTE_BREAK as c_int;

/// Registers a routing action. `uwsgi_register_router` is looked up at run time rather than
/// linked, so a library that references it can never make dlopen fail on a binary without
/// routing.
#[cfg(uwsgi_routing)]
pub(crate) fn register_router(name: &'static CStr, setup: RouteSetup) -> bool {
    let sym = dlsym_default(c"uwsgi_register_router");
    if sym.is_null() {
        return false;
    }
    // SAFETY: the ABI check passed, so this is the routing build's
    // `struct uwsgi_router *uwsgi_register_router(char *, int (*)(struct uwsgi_route *, char *))`.
    let register: RegisterRouter = unsafe { std::mem::transmute(sym) };
    // SAFETY: uWSGI stores the name pointer (a 'static C string, never written).
    unsafe { register(name.as_ptr() as *mut c_char, Some(setup)) };
    true
}

/// A route uWSGI passes to an action's setup or run callback, valid for that call.
#[cfg(uwsgi_routing)]
pub(crate) struct Route(*mut ffi::uwsgi_route);

#[cfg(uwsgi_routing)]
impl Route {
    /// # Safety
    /// `ur` is NULL or the route uWSGI passed to the current callback.
    pub(crate) unsafe fn from_raw(ur: *mut ffi::uwsgi_route) -> Option<Route> {
        (!ur.is_null()).then_some(Route(ur))
    }

    /// Attaches the action: `func` runs for matching requests with `tag` at hand. The tag is
    /// stored in the route's `data` pointer as a plain integer, so there is nothing to free
    /// (uWSGI calls `free` only when set).
    pub(crate) fn attach(&mut self, func: RouteFunc, tag: usize) {
        // SAFETY: the route being set up is exclusively the action's during the setup call;
        // these fields are the action's to set.
        unsafe {
            let r = &mut *self.0;
            r.func = Some(func);
            r.data = tag as *mut c_void;
            r.free = None;
        }
    }

    /// The tag given to [`Route::attach`].
    pub(crate) fn tag(&self) -> usize {
        // SAFETY: a route set up by `attach`; `data` is read, never dereferenced.
        unsafe { (*self.0).data as usize }
    }
}

/// A request uWSGI is handling in this thread, valid for the duration of the callback it was
/// passed to (a route action, the after-request hook).
pub(crate) struct Request(*mut ffi::wsgi_request);

impl Request {
    /// # Safety
    /// `req` is NULL or the request uWSGI passed to the current callback.
    pub(crate) unsafe fn from_raw(req: *mut ffi::wsgi_request) -> Option<Request> {
        (!req.is_null()).then_some(Request(req))
    }

    pub(crate) fn method(&self) -> &[u8] {
        // SAFETY: `self.0` is the request this thread is handling (see `Request`).
        let r = unsafe { &*self.0 };
        let (p, len) = (r.method, r.method_len);
        if p.is_null() {
            return b"";
        }
        // SAFETY: uWSGI fills `method`/`method_len` while parsing; the bytes live in the
        // request buffer until the request ends, which outlives this borrow.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), usize::from(len)) }
    }

    /// A request variable (`HTTP_ACCEPT`, ...).
    pub(crate) fn var(&self, key: &'static [u8]) -> Option<&[u8]> {
        let mut len: u16 = 0;
        let klen = u16::try_from(key.len()).ok()?;
        // SAFETY: uwsgi_get_var only reads the request's variables; `key` is not written.
        let p = unsafe { (api().get_var)(self.0, key.as_ptr() as *mut c_char, klen, &mut len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: uWSGI returns a pointer into the request buffer with its length (not NUL
        // terminated), live until the request ends.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), usize::from(len)) })
    }

    /// The response status (0 when none was sent).
    pub(crate) fn status(&self) -> i64 {
        // SAFETY: see `method`.
        i64::from(unsafe { (*self.0).status })
    }

    /// `(start_of_request, end_of_request)` in µs since the epoch; `end` is set by
    /// `uwsgi_close_request` before the after-request chain runs.
    pub(crate) fn times_us(&self) -> (u64, u64) {
        // SAFETY: see `method`.
        let r = unsafe { &*self.0 };
        (r.start_of_request, r.end_of_request)
    }

    /// Sends a whole response. Errors (client gone, headers already sent) end the request,
    /// which is all the route can do about them.
    #[cfg(uwsgi_routing)]
    pub(crate) fn respond(
        &self,
        status: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        head: bool,
    ) {
        let Ok(slen) = u16::try_from(status.len()) else {
            return;
        };
        // SAFETY: the status bytes are copied by uWSGI into its header buffer and never written
        // through this pointer.
        let r = unsafe { (api().prepare_headers)(self.0, status.as_ptr() as *mut c_char, slen) };
        if r != 0 {
            return;
        }
        for (k, v) in headers {
            self.header(k, v);
        }
        // SAFETY: plain call on the live request.
        unsafe { (api().add_content_length)(self.0, body.len() as u64) };
        if head {
            // SAFETY: sends the prepared headers; blocking is bounded by uWSGI's socket-timeout.
            unsafe { (api().write_headers)(self.0) };
        } else {
            // SAFETY: `body` is live for the call; uWSGI copies or writes it before returning.
            unsafe { (api().write_body)(self.0, body.as_ptr() as *mut c_char, body.len()) };
        }
    }

    #[cfg(uwsgi_routing)]
    fn header(&self, k: &[u8], v: &[u8]) {
        let (Ok(kl), Ok(vl)) = (u16::try_from(k.len()), u16::try_from(v.len())) else {
            return;
        };
        // SAFETY: see `respond`: uWSGI copies both into its header buffer.
        unsafe {
            (api().add_header)(
                self.0,
                k.as_ptr() as *mut c_char,
                kl,
                v.as_ptr() as *mut c_char,
                vl,
            )
        };
    }
}
