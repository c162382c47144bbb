//! Requests, and uWSGI's hooks around them: the `prometheus-metrics` routing action (the
//! action, its route and the request it answers, routing builds only) and the after-request
//! chain (every build). In the spirit of ngx-rust's `Request::from_ngx_http_request`.

use std::ffi::{c_char, CStr};
#[cfg(uwsgi_routing)]
use std::ffi::{c_int, c_void};

#[cfg(uwsgi_routing)]
use super::abi::dlsym_default;
use super::abi::{api, server};
#[cfg(uwsgi_routing)]
use super::uwsgi;
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

    /// `PATH_INFO`, from the field uWSGI's parser fills (no lookup among the variables).
    pub(crate) fn path_info(&self) -> &[u8] {
        // SAFETY: see `method`.
        let r = unsafe { &*self.0 };
        let (p, len) = (r.path_info, r.path_info_len);
        if p.is_null() {
            return b"";
        }
        // SAFETY: as `method`: bytes of the request buffer, live until the request ends.
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

    /// A logvar the application set on this request (`uwsgi.set_logvar(key, value)`): uWSGI
    /// frees them after the after-request chain (`uwsgi_close_request`, core/utils.c), so they
    /// are still there in the after-request hook.
    pub(crate) fn logvar(&self, key: &'static [u8]) -> Option<&[u8]> {
        let klen = u8::try_from(key.len()).ok()?;
        // SAFETY: uwsgi_logvar_get walks the request's logvar list and compares keys; `key` is
        // not written.
        let lv = unsafe { (api().logvar_get)(self.0, key.as_ptr() as *mut c_char, klen) };
        if lv.is_null() {
            return None;
        }
        // SAFETY: a node of the request's list, allocated by uWSGI and freed only after the
        // request's hooks, which outlive this borrow; `val` holds `vallen` bytes (a u8, within
        // the 256-byte array).
        let lv = unsafe { &*lv };
        let len = usize::from(lv.vallen).min(lv.val.len());
        // SAFETY: `val` is a `[c_char; 256]`; `len` is within it.
        Some(unsafe { std::slice::from_raw_parts(lv.val.as_ptr().cast::<u8>(), len) })
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
        if self.connection_closes() {
            self.header(b"Connection", b"close");
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

    /// Who holds the client's connection, from the socket the request came in on.
    #[cfg(uwsgi_routing)]
    fn front(&self) -> Front {
        // SAFETY: see `method`; `socket` is the uWSGI socket that accepted the request (NULL
        // for none), alive for the process.
        let sock = unsafe { (*self.0).socket };
        let proto = if sock.is_null() {
            None
        } else {
            // SAFETY: a live `struct uwsgi_socket`; `proto_name` is NULL or a static string.
            let p = unsafe { (*sock).proto_name };
            if p.is_null() {
                // As uwsgi_set_sockets_protocols: `--protocol`, else uwsgi.
                uwsgi::default_protocol()
            } else {
                // SAFETY: NUL-terminated, never freed.
                Some(unsafe { CStr::from_ptr(p) }.to_bytes())
            }
        };
        Front::of(
            proto,
            self.var(b"UWSGI_ROUTER"),
            uwsgi::http_router_keepalive,
        )
    }

    /// What of the request decides whether its connection can stay open.
    #[cfg(uwsgi_routing)]
    fn conn_facts(&self) -> ConnFacts {
        // SAFETY: see `method`.
        let r = unsafe { &*self.0 };
        let protocol = if r.protocol.is_null() {
            &b""[..]
        } else {
            // SAFETY: uWSGI's SERVER_PROTOCOL in the request buffer, live until the request ends.
            unsafe {
                std::slice::from_raw_parts(r.protocol.cast::<u8>(), usize::from(r.protocol_len))
            }
        };
        ConnFacts {
            http11: protocol == b"HTTP/1.1",
            client_close: self.var(b"HTTP_CONNECTION").is_some_and(asks_close),
            unread_body: r.post_pos < r.post_cl || self.var(b"HTTP_TRANSFER_ENCODING").is_some(),
            pipelined: r.proto_parser_remains > 0,
        }
    }

    /// True when the answer must say `Connection: close` (RFC 9112 §9.6): the connection to
    /// the client ends after this response.
    #[cfg(uwsgi_routing)]
    fn connection_closes(&self) -> bool {
        self.front().closes(&self.conn_facts())
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

/// Who holds the client's connection, and so decides whether it stays open after a response of
/// the route action. uWSGI 2.0 (2.0.21 and 2.0.31 alike):
/// - `--http-socket`/`--https-socket` (protocols `http`, `https`): the worker closes it after
///   every response (`uwsgi_proto_base_close`, proto/base.c), saying nothing;
/// - `--http11-socket` (`http11`): the worker keeps it (`uwsgi_proto_http11_close`,
///   proto/http.c) unless the request was HTTP/1.0, pipelined, or left body bytes unread; it
///   does not honour the client's `Connection: close`;
/// - uWSGI's `--http`/`--https` router (it adds `UWSGI_ROUTER=http` to the request, and passes
///   the response head through): it closes after every response unless `--http-keepalive`,
///   and then keeps only HTTP/1.1 requests without a body, without `Connection: close` or
///   `upgrade`, whose response carries a length and no `Connection: close`
///   (plugins/http/http.c, keepalive.c `http_response_parse`); it adds `Connection: close` only
///   to a keep-alive response without a length;
/// - anything else (uwsgi protocol behind nginx's `uwsgi_pass`, FastCGI, SCGI...): the
///   gateway owns the client connection, and a `Connection` header from the backend is
///   hop-by-hop to it (nginx drops it: `ngx_http_upstream_ignore_header_line`).
#[cfg(uwsgi_routing)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Front {
    HttpSocket,
    Http11Socket,
    HttpRouter { keepalive: bool },
    Gateway,
}

/// The request's side of keeping the connection.
#[cfg(uwsgi_routing)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnFacts {
    /// `SERVER_PROTOCOL` is `HTTP/1.1` (persistent by default).
    pub(crate) http11: bool,
    /// The client's `Connection` header has `close` (or `upgrade`).
    pub(crate) client_close: bool,
    /// The request has a body the route does not read.
    pub(crate) unread_body: bool,
    /// More request bytes came with this one (pipelining).
    pub(crate) pipelined: bool,
}

#[cfg(uwsgi_routing)]
impl Front {
    /// The front for a socket protocol (`None`: no socket), the request's `UWSGI_ROUTER` and
    /// this instance's `--http-keepalive` (asked only when the router is uWSGI's).
    pub(crate) fn of(
        proto: Option<&[u8]>,
        router: Option<&[u8]>,
        router_keepalive: impl FnOnce() -> bool,
    ) -> Front {
        match proto {
            Some(b"http" | b"https") => Front::HttpSocket,
            Some(b"http11") => Front::Http11Socket,
            _ if router == Some(b"http") => Front::HttpRouter {
                keepalive: router_keepalive(),
            },
            _ => Front::Gateway,
        }
    }

    /// Whether the connection ends after the response, so that the answer must say
    /// `Connection: close`. Also true where the client asked for it (it closes; RFC 9112 §9.6
    /// has the server answer in kind), and for a gateway never (not the backend's header).
    /// Behind uWSGI's router in another instance, `keepalive` is this instance's setting: the
    /// answer then says close, which that router honours.
    pub(crate) fn closes(self, f: &ConnFacts) -> bool {
        let keeps = match self {
            Front::HttpSocket => false,
            Front::Http11Socket => !f.pipelined,
            Front::HttpRouter { keepalive } => keepalive,
            Front::Gateway => return false,
        };
        !keeps || !f.http11 || f.client_close || f.unread_body
    }
}

/// True when a `Connection` header value lists `close` or `upgrade`.
#[cfg(uwsgi_routing)]
fn asks_close(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"upgrade")
    })
}

#[cfg(uwsgi_routing)]
#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ConnFacts {
        ConnFacts {
            http11: true,
            ..ConnFacts::default()
        }
    }

    #[test]
    fn front_of_socket_and_router() {
        let never = || -> bool { panic!("not asked") };
        assert_eq!(Front::of(Some(b"http"), None, never), Front::HttpSocket);
        assert_eq!(
            Front::of(Some(b"https"), Some(b"http"), never),
            Front::HttpSocket
        );
        assert_eq!(Front::of(Some(b"http11"), None, never), Front::Http11Socket);
        assert_eq!(Front::of(Some(b"uwsgi"), None, never), Front::Gateway);
        assert_eq!(Front::of(None, None, never), Front::Gateway);
        assert_eq!(
            Front::of(Some(b"fastcgi"), Some(b"nginx"), never),
            Front::Gateway
        );
        assert_eq!(
            Front::of(Some(b"uwsgi"), Some(b"http"), || true),
            Front::HttpRouter { keepalive: true }
        );
        assert_eq!(
            Front::of(None, Some(b"http"), || false),
            Front::HttpRouter { keepalive: false }
        );
    }

    #[test]
    fn when_the_connection_closes() {
        let plain = facts();
        assert!(Front::HttpSocket.closes(&plain));
        assert!(!Front::Http11Socket.closes(&plain));
        assert!(!Front::HttpRouter { keepalive: true }.closes(&plain));
        assert!(Front::HttpRouter { keepalive: false }.closes(&plain));
        assert!(!Front::Gateway.closes(&plain));
        let keeping = [Front::Http11Socket, Front::HttpRouter { keepalive: true }];
        for f in [
            ConnFacts {
                http11: false,
                ..plain
            },
            ConnFacts {
                client_close: true,
                ..plain
            },
            ConnFacts {
                unread_body: true,
                ..plain
            },
        ] {
            for front in keeping {
                assert!(front.closes(&f), "{front:?} {f:?}");
            }
            assert!(!Front::Gateway.closes(&f));
        }
        let pipelined = ConnFacts {
            pipelined: true,
            ..plain
        };
        assert!(Front::Http11Socket.closes(&pipelined));
        assert!(!Front::HttpRouter { keepalive: true }.closes(&pipelined));
    }

    #[test]
    fn connection_header_tokens() {
        assert!(asks_close(b"close"));
        assert!(asks_close(b"Keep-Alive, CLOSE"));
        assert!(asks_close(b" Upgrade "));
        assert!(!asks_close(b"keep-alive"));
        assert!(!asks_close(b"closed"));
        assert!(!asks_close(b""));
    }
}
