//! One scrape, shared by both front ends: copy the values under uWSGI's lock, then render.

use crate::format::Format;
use crate::host;
use crate::plugin::EXPORTER;

/// Why a scrape cannot be answered (the front ends send it as a 503 body).
pub(crate) const NO_METRICS: &str =
    "uWSGI's metrics subsystem is disabled (enable-metrics = false); metrics_prometheus has nothing to export\n";
pub(crate) const NO_MASTER: &str =
    "uWSGI runs without a master process, so its metrics are never collected; remove master = false\n";

/// Renders the exposition into `out` (cleared first). `values` is scratch space kept by the
/// caller so that a scrape allocates nothing once the buffers have grown.
pub(crate) fn render(
    fmt: Format,
    values: &mut Vec<i64>,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    out.clear();
    let Some(exp) = EXPORTER.get() else {
        return Err(NO_METRICS);
    };
    if !host::has_master() {
        return Err(NO_MASTER);
    }
    host::snapshot(&exp.sources, values);
    exp.live.fill(&exp.sources, values);
    exp.layout.render(values, fmt, out);
    Ok(())
}
