//! The built-in metric table: uWSGI 2.0's own metric names (uwsgi-internals.md
//! §3.3) and how each is exported.
//!
//! One entry per line. In a pattern, `N` and `M` match a segment of ASCII
//! digits and become a label named after the literal segment before them
//! (`worker.N` → `worker="N"`); `*` matches one or more remaining segments.
//! An entry applies only when the uWSGI type matches too (`None` = any type),
//! so a custom `--metric` that merely reuses a built-in shape with another
//! type falls through to the generic mapping. The first matching entry wins.

use super::{Kind, MetricType, SkipReason};

/// How a built-in metric is exported.
pub(crate) enum Rule {
    /// Export as `<prefix><family>` with the pattern's labels.
    Emit {
        /// Family name without the prefix (and, for counters, without `_total`).
        family: &'static str,
        /// Exported type.
        kind: Kind,
        /// Values are divided by `10^scale` (6: microseconds → seconds).
        scale: u8,
        /// HELP text.
        help: &'static str,
    },
    /// Do not export; report the reason in `Layout::skipped`.
    Skip(SkipReason),
}

/// One line of the table.
pub(crate) struct Builtin {
    pub pattern: &'static str,
    pub ty: Option<MetricType>,
    pub rule: Rule,
}

use Kind::{Counter as C, Gauge as G};
use MetricType::{Absolute as ABS, Counter as COUNTER, Gauge as GAUGE};

const fn emit(
    pattern: &'static str,
    ty: MetricType,
    family: &'static str,
    kind: Kind,
    scale: u8,
    help: &'static str,
) -> Builtin {
    Builtin {
        pattern,
        ty: Some(ty),
        rule: Rule::Emit {
            family,
            kind,
            scale,
            help,
        },
    }
}

const fn skip(pattern: &'static str, ty: Option<MetricType>, reason: SkipReason) -> Builtin {
    Builtin {
        pattern,
        ty,
        rule: Rule::Skip(reason),
    }
}

/// Microseconds → seconds.
const US: u8 = 6;

#[rustfmt::skip]
pub(crate) const BUILTINS: &[Builtin] = &[
    emit("core.routed_signals", COUNTER, "core_routed_signals", C, 0, "uWSGI signals delivered to a target's signal queue (a signal for all workers counts once per worker)."),
    emit("core.unrouted_signals", COUNTER, "core_unrouted_signals", C, 0, "uWSGI signal deliveries that failed, usually because the target's signal queue was full (see --signal-bufsize)."),
    emit("core.busy_workers", GAUGE, "core_busy_workers", G, 0, "Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted."),
    emit("core.idle_workers", GAUGE, "core_idle_workers", G, 0, "Workers not busy, as last sampled by the master (can lag about 2 s); cheaped workers are not counted."),
    emit("core.overloaded", COUNTER, "core_overloaded", C, 0, "Master-loop iterations in which every worker was busy. Not time-normalised: the count depends on how often the master loop runs."),
    emit("worker.0.requests", COUNTER, "requests", C, 0, "Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns."),
    skip("worker.0.*", None, SkipReason::AggregateSlot),
    emit("worker.N.requests", COUNTER, "worker_requests", C, 0, "Requests served by the worker, kept across respawns of the worker."),
    emit("worker.N.delta_requests", ABS, "worker_delta_requests", G, 0, "Requests served by the worker since it was last spawned (reset on respawn)."),
    skip("worker.N.failed_requests", Some(COUNTER), SkipReason::AlwaysZero),
    emit("worker.N.respawns", COUNTER, "worker_respawns", C, 0, "Times the worker has been spawned, the first spawn included (1 after startup)."),
    emit("worker.N.avg_response_time", GAUGE, "worker_avg_response_time_seconds", G, US, "uWSGI's running response-time figure for the worker, in seconds: after each request it becomes (previous + last) / 2, so it follows the last few requests and is not a mean (divide running time by requests for a mean)."),
    emit("worker.N.total_tx", COUNTER, "worker_tx_bytes", C, 0, "Bytes (headers and body) the worker sent in responses."),
    emit("worker.N.rss_size", GAUGE, "worker_rss_bytes", G, 0, "Resident set size of the worker in bytes, measured after each request only with --memory-report (or an option such as --reload-on-rss); 0 otherwise, and reset to 0 on respawn."),
    emit("worker.N.vsz_size", GAUGE, "worker_vsz_bytes", G, 0, "Virtual memory size of the worker in bytes, measured after each request only with --memory-report (or an option such as --reload-on-as); 0 otherwise, and reset to 0 on respawn."),
    emit("worker.N.running_time", COUNTER, "worker_running_time_seconds", C, US, "Time the worker spent serving requests, in seconds (microsecond resolution)."),
    emit("worker.N.core.M.requests", COUNTER, "worker_core_requests", C, 0, "Requests served by this core (thread or async slot) of the worker."),
    emit("worker.N.core.M.write_errors", COUNTER, "worker_core_write_errors", C, 0, "Errors writing responses to clients on this core of the worker."),
    emit("worker.N.core.M.routed_requests", COUNTER, "worker_core_routed_requests", C, 0, "Requests on this core of the worker completed by an internal routing rule (the route returned BREAK)."),
    emit("worker.N.core.M.static_requests", COUNTER, "worker_core_static_requests", C, 0, "Requests on this core of the worker served as static files."),
    emit("worker.N.core.M.offloaded_requests", COUNTER, "worker_core_offloaded_requests", C, 0, "Requests on this core of the worker whose response was handed to the offload threads."),
    emit("worker.N.core.M.exceptions", COUNTER, "worker_core_exceptions", C, 0, "Exceptions raised by the application on this core of the worker."),
    emit("worker.N.core.M.read_errors", COUNTER, "worker_core_read_errors", C, 0, "Errors reading requests from clients on this core of the worker."),
    emit("core.total_tx", COUNTER, "tx_bytes", C, 0, "Bytes (headers and body) all workers sent in responses."),
    emit("core.total_rss", GAUGE, "rss_bytes", G, 0, "Sum of the workers' resident set sizes in bytes (maintained only with --memory-report or similar; cheaped workers keep their last value)."),
    emit("core.total_vsz", GAUGE, "vsz_bytes", G, 0, "Sum of the workers' virtual memory sizes in bytes (maintained only with --memory-report or similar; cheaped workers keep their last value)."),
    emit("core.avg_response_time", GAUGE, "avg_response_time_seconds", G, US, "Average over all workers of their running response-time figure, in seconds; idle workers' zeros are included, so it is neither a mean nor request-weighted."),
    emit("core.total_running_time", COUNTER, "running_time_seconds", C, US, "Time all workers spent serving requests, in seconds (microsecond resolution)."),
    emit("socket.N.listen_queue", GAUGE, "socket_listen_queue", G, 0, "Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels."),
];

/// The first entry matching `name` and `ty`, with its labels
/// (`(label name, value)` in pattern order).
pub(crate) fn lookup(
    name: &str,
    ty: MetricType,
) -> Option<(&'static Builtin, Vec<(&'static str, &str)>)> {
    'entries: for entry in BUILTINS {
        if entry.ty.is_some_and(|t| t != ty) {
            continue;
        }
        let mut labels = Vec::new();
        let mut segs = name.split('.');
        let mut prev: &'static str = "";
        for pat in entry.pattern.split('.') {
            if pat == "*" {
                if segs.next().is_none() {
                    continue 'entries;
                }
                return Some((entry, labels));
            }
            let Some(seg) = segs.next() else {
                continue 'entries;
            };
            match pat {
                "N" | "M" if super::name::is_numeric(seg) => labels.push((prev, seg)),
                "N" | "M" => continue 'entries,
                lit if lit == seg => {}
                _ => continue 'entries,
            }
            prev = pat;
        }
        if segs.next().is_none() {
            return Some((entry, labels));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str, ty: MetricType) -> Option<(&'static str, Vec<(&'static str, String)>)> {
        let (entry, labels) = lookup(name, ty)?;
        let labels = labels.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        match entry.rule {
            Rule::Emit { family, .. } => Some((family, labels)),
            Rule::Skip(_) => Some(("<skip>", labels)),
        }
    }

    #[test]
    fn patterns() {
        let l = |v: &[(&'static str, &str)]| {
            v.iter()
                .map(|&(k, v)| (k, v.to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            family("worker.1.core.2.requests", COUNTER),
            Some(("worker_core_requests", l(&[("worker", "1"), ("core", "2")])))
        );
        assert_eq!(
            family("worker.12.requests", COUNTER),
            Some(("worker_requests", l(&[("worker", "12")])))
        );
        assert_eq!(
            family("worker.0.requests", COUNTER),
            Some(("requests", l(&[])))
        );
        assert_eq!(
            family("worker.0.total_tx", COUNTER),
            Some(("<skip>", l(&[])))
        );
        assert_eq!(family("worker.0.x.y", GAUGE), Some(("<skip>", l(&[]))));
        assert_eq!(family("worker.0", COUNTER), None);
        assert_eq!(
            family("socket.0.listen_queue", GAUGE),
            Some(("socket_listen_queue", l(&[("socket", "0")])))
        );
        assert_eq!(
            family("worker.1.delta_requests", ABS),
            Some(("worker_delta_requests", l(&[("worker", "1")])))
        );
        // Wrong type, extra or missing segments, non-numeric N: generic mapping.
        assert_eq!(family("worker.1.requests", GAUGE), None);
        assert_eq!(family("worker.1.requests.x", COUNTER), None);
        assert_eq!(family("worker.x.requests", COUNTER), None);
        assert_eq!(family("worker.1", COUNTER), None);
        assert_eq!(family("core.busy_workers", COUNTER), None);
        assert_eq!(family("rss_size", MetricType::Alias), None);
    }
}
