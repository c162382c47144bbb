//! Front end 1: the internal-routing action `prometheus-metrics`
//! (`route = ^/metrics$ prometheus-metrics:`), compiled only for uWSGI binaries with routing.
//! The plugin's entry points call [`setup`] and [`serve`]; this module is the glue between a
//! [`Request`] and a scrape.
//!
//! The action answers in the worker that took the request, so it needs a free worker core
//! (use `--prometheus-server` to scrape a saturated instance). It runs concurrently under
//! `--threads` and in async cores: it keeps no lock across a write, and its scratch buffers are
//! per thread (their pages given back after each answer), with a fresh buffer for a core that
//! finds them in use; the gzip compressor is one per worker.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics_prometheus_engine::compress::{self, accepts_gzip, Gzip};
use metrics_prometheus_engine::format::{negotiate, Format};
use parking_lot::Mutex;

use crate::host::request::Request;
use crate::scrape::{self, Scratch};

/// What `prometheus-metrics:<args>` asked for, parsed once at configuration time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteFormat {
    /// `prometheus-metrics:` — by the request's `Accept` header.
    Negotiate = 0,
    /// `prometheus-metrics:text`
    Text = 1,
    /// `prometheus-metrics:openmetrics`
    OpenMetrics = 2,
    /// `prometheus-metrics:protobuf`
    Protobuf = 3,
}

impl RouteFormat {
    /// The value kept in the route (see `host::request::Route::attach`).
    pub(crate) fn tag(self) -> usize {
        self as usize
    }

    pub(crate) fn from_tag(tag: usize) -> RouteFormat {
        match tag {
            1 => RouteFormat::Text,
            2 => RouteFormat::OpenMetrics,
            3 => RouteFormat::Protobuf,
            _ => RouteFormat::Negotiate,
        }
    }
}

pub(crate) fn parse_args(args: &str) -> Result<RouteFormat, String> {
    match args.trim() {
        "" => Ok(RouteFormat::Negotiate),
        "text" => Ok(RouteFormat::Text),
        "openmetrics" => Ok(RouteFormat::OpenMetrics),
        "protobuf" => Ok(RouteFormat::Protobuf),
        other => Err(format!(
            "unknown argument '{other}' (expected nothing, 'text', 'openmetrics' or 'protobuf')"
        )),
    }
}

/// Routes configured with this action (for the startup log line).
static ROUTES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn configured_routes() -> usize {
    ROUTES.load(Ordering::Relaxed)
}

/// A route using the action is being configured with `args`.
pub(crate) fn setup(args: &str) -> Result<RouteFormat, String> {
    let fmt = parse_args(args)?;
    ROUTES.fetch_add(1, Ordering::Relaxed);
    Ok(fmt)
}

/// One thread's buffers: the scrape's and, for gzip, the compressed body. Their pages go back
/// to the kernel after every answer (their capacity stays, so a scrape still allocates
/// nothing): a worker's threads take scrapes in turn, and each would otherwise keep a whole
/// exposition's worth of pages (about 0.4 MB at 16 x 32) between them.
#[derive(Default)]
struct RouteScratch {
    scrape: Scratch,
    gz_out: Vec<u8>,
}

/// The worker's compressor (made at its first gzip answer, so a worker that is never asked
/// for gzip never pays its memory), shared by its threads rather than one per thread: a
/// thread that finds it busy compresses with a compressor of its own, dropped afterwards.
static GZIP: Mutex<Option<Gzip>> = Mutex::new(None);

thread_local! {
    static SCRATCH: RefCell<RouteScratch> = RefCell::new(RouteScratch::default());
}

const TEXT_PLAIN: &[u8] = b"text/plain; charset=utf-8";

/// Answers one request.
pub(crate) fn serve(req: &Request, forced: RouteFormat) {
    #[cfg(feature = "fault-injection")]
    if req.var(b"PATH_INFO") == Some(b"/__die_holding_metrics_lock") {
        crate::host::metrics::die_holding_write_lock();
    }
    let head = match req.method() {
        b"GET" => false,
        b"HEAD" => true,
        _ => {
            req.respond(
                b"405 Method Not Allowed",
                &[(b"Content-Type", TEXT_PLAIN), (b"Allow", b"GET, HEAD")],
                b"method not allowed: use GET or HEAD\n",
                false,
            );
            return;
        }
    };
    let fmt = match forced {
        RouteFormat::Text => Format::Text,
        RouteFormat::OpenMetrics => Format::OpenMetrics,
        RouteFormat::Protobuf => Format::Protobuf,
        RouteFormat::Negotiate => negotiate(req.var(b"HTTP_ACCEPT")),
    };
    let gzip = scrape::gzip_enabled();
    let wants_gzip = gzip && accepts_gzip(req.var(b"HTTP_ACCEPT_ENCODING"));
    // Whichever way this answer goes, caches must key it on the request's Accept-Encoding.
    let vary: &[u8] = b"Accept-Encoding";
    let send = |s: &mut RouteScratch| match scrape::render(fmt, &mut s.scrape) {
        Ok(()) if wants_gzip && s.scrape.out.len() >= compress::MIN_SIZE => {
            s.gz_out.clear();
            // HEAD gets the headers GET would get, Content-Length included.
            let mut own = None;
            let mut shared = GZIP.try_lock();
            let gz = match shared.as_deref_mut() {
                Some(slot) => slot.get_or_insert_with(Gzip::new),
                None => own.insert(Gzip::new()),
            };
            gz.compress(&s.scrape.out, &mut s.gz_out);
            drop(shared);
            req.respond(
                b"200 OK",
                &[
                    (b"Content-Type", fmt.content_type().as_bytes()),
                    (b"Content-Encoding", b"gzip"),
                    (b"Vary", vary),
                ],
                &s.gz_out,
                head,
            )
        }
        Ok(()) => {
            let headers: &[(&[u8], &[u8])] = &[
                (b"Content-Type", fmt.content_type().as_bytes()),
                (b"Vary", vary),
            ];
            req.respond(
                b"200 OK",
                &headers[..if gzip { 2 } else { 1 }],
                &s.scrape.out,
                head,
            )
        }
        Err(e) => req.respond(
            b"503 Service Unavailable",
            &[(b"Content-Type", TEXT_PLAIN)],
            e.body().as_bytes(),
            head,
        ),
    };
    // An async core can re-enter while another core of this thread waits in a write holding the
    // buffers; it then uses fresh ones.
    let reused = SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            send(&mut s);
            s.scrape.release_pages();
            crate::host::alloc::release_pages(&mut s.gz_out);
            true
        }
        Err(_) => false,
    });
    if !reused {
        send(&mut RouteScratch::default());
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
        for f in [
            RouteFormat::Negotiate,
            RouteFormat::Text,
            RouteFormat::OpenMetrics,
            RouteFormat::Protobuf,
        ] {
            assert_eq!(RouteFormat::from_tag(f.tag()), f);
        }
    }
}
