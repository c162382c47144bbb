//! Front end 1: the internal-routing action `prometheus-metrics`
//! (`route = ^/metrics$ prometheus-metrics:`), compiled only for uWSGI binaries with routing.
//! The plugin's entry points call [`setup`] and [`serve`]; this module is the glue between a
//! [`Request`] and a scrape.
//!
//! The action answers in the worker that took the request, so it needs a free worker core
//! (use `--prometheus-server` to scrape a saturated instance). It runs concurrently under
//! `--threads` and in async cores: it keeps no lock across a write, and its scratch buffers are
//! per thread, with a fresh buffer for a core that finds them in use.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics_prometheus_engine::format::{negotiate, Format};

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

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

const TEXT_PLAIN: &[u8] = b"text/plain; charset=utf-8";

/// Answers one request.
pub(crate) fn serve(req: &Request, forced: RouteFormat) {
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
    let send = |scratch: &mut Scratch| match scrape::render(fmt, scratch) {
        Ok(()) => req.respond(
            b"200 OK",
            &[(b"Content-Type", fmt.content_type().as_bytes())],
            &scratch.out,
            head,
        ),
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
            true
        }
        Err(_) => false,
    });
    if !reused {
        send(&mut Scratch::default());
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
