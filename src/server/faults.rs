//! The test-only hooks of the `fault-injection` build, in one place so that the server's main
//! path reads without them: a request that panics inside the server (proves that a panic
//! closes one connection only), the heap allocations of each render reported in an
//! `X-Scrape-Allocations` header (proves that steady scrapes allocate nothing), and a
//! connection deadline the tests can shorten (`MP_FAULT_DEADLINE_MS`, so that proving it costs
//! a second, not ten). Without the feature every hook is a no-op the compiler removes.

use std::borrow::Cow;
use std::time::Duration;

#[cfg(feature = "fault-injection")]
use crate::host;

/// Called with the bytes read so far of a request head.
#[cfg(feature = "fault-injection")]
pub(super) fn on_head(head: &[u8]) {
    if head.starts_with(b"GET /__panic ") {
        panic!("fault injection: GET /__panic");
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn on_head(_head: &[u8]) {}

/// Runs a render, counting the heap allocations it made.
#[cfg(feature = "fault-injection")]
pub(super) fn counting_allocations<T>(render: impl FnOnce() -> T) -> (T, u64) {
    let before = host::alloc::allocations();
    let out = render();
    (out, host::alloc::allocations() - before)
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn counting_allocations<T>(render: impl FnOnce() -> T) -> (T, u64) {
    (render(), 0)
}

/// The extra headers of a scrape's answer: the test header alone (for a gzip head, which
/// writes its own `Vary`), and `vary` followed by the test header.
#[cfg(feature = "fault-injection")]
pub(super) fn scrape_headers(
    vary: &'static str,
    allocations: u64,
) -> (Cow<'static, str>, Cow<'static, str>) {
    let fault = format!("X-Scrape-Allocations: {allocations}\r\n");
    let extra = format!("{vary}{fault}");
    (Cow::Owned(fault), Cow::Owned(extra))
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn scrape_headers(
    vary: &'static str,
    _allocations: u64,
) -> (Cow<'static, str>, Cow<'static, str>) {
    (Cow::Borrowed(""), Cow::Borrowed(vary))
}

/// How long a connection may take to send its request and read the answer.
#[cfg(feature = "fault-injection")]
pub(super) fn deadline(normal: Duration) -> Duration {
    static DEADLINE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DEADLINE.get_or_init(|| {
        std::env::var("MP_FAULT_DEADLINE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(normal, Duration::from_millis)
    })
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn deadline(normal: Duration) -> Duration {
    normal
}
