//! Golden tests: the exact exposition, in both formats, for uWSGI's built-in
//! metric list, for custom metrics with awkward names, for the empty list and
//! for every option turned off. The expected texts are literal (reviewed by
//! hand, checked with `promtool check metrics` and prometheus_client), not
//! derived from the engine.

use metrics_prometheus_engine::format::{
    negotiate, negotiate_among, FamilyFilter, Format, Layout, MetricType, Offer, Options,
    SkipReason, Skipped,
};

fn layout(list: &[(&str, u8, i64)], opts: &Options) -> Layout {
    let metrics: Vec<(&str, MetricType)> = list
        .iter()
        .map(|&(n, t, _)| (n, MetricType::from_uwsgi(t).expect("valid type")))
        .collect();
    Layout::new(&metrics, opts)
}

fn render(list: &[(&str, u8, i64)], opts: &Options, fmt: Format) -> String {
    let values: Vec<i64> = list.iter().map(|m| m.2).collect();
    let mut out = Vec::new();
    layout(list, opts).render(&values, fmt, &mut out);
    String::from_utf8(out).expect("UTF-8 output")
}

/// `assert_eq!` that points at the first differing line of a long text.
#[track_caller]
fn assert_text(got: &str, want: &str) {
    if got != want {
        let (g, w): (Vec<_>, Vec<_>) = (
            got.split_inclusive('\n').collect(),
            want.split_inclusive('\n').collect(),
        );
        let i = g
            .iter()
            .zip(&w)
            .position(|(a, b)| a != b)
            .unwrap_or(g.len().min(w.len()));
        panic!(
            "output differs at line {}:\n  got:  {:?}\n  want: {:?}\n--- full output ---\n{got}",
            i + 1,
            g.get(i),
            w.get(i)
        );
    }
}

fn skipped(list: &[(&str, u8, i64)], opts: &Options) -> Vec<(usize, String, String)> {
    layout(list, opts)
        .skipped()
        .iter()
        .map(|s: &Skipped| (s.index, s.name.clone(), s.reason.to_string()))
        .collect()
}

fn no_workers() -> Options {
    Options {
        workers: false,
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------
// (a) uWSGI's own list for `--workers 2 --threads 2` and one socket: the exact
// 68 names and types of uwsgi-internals.md §3.3, with realistic values.
// ---------------------------------------------------------------------------

#[rustfmt::skip]
const BUILTIN_68: &[(&str, u8, i64)] = &[
    ("core.routed_signals", 0, 12),
    ("core.unrouted_signals", 0, 0),
    ("core.busy_workers", 1, 1),
    ("core.idle_workers", 1, 1),
    ("core.overloaded", 0, 3),
    ("worker.0.requests", 0, 1523),
    ("worker.0.delta_requests", 2, 0),
    ("worker.0.failed_requests", 0, 0),
    ("worker.0.respawns", 0, 0),
    ("worker.0.avg_response_time", 1, 0),
    ("worker.0.total_tx", 0, 0),
    ("worker.0.rss_size", 1, 0),
    ("worker.0.vsz_size", 1, 0),
    ("worker.0.running_time", 0, 0),
    ("worker.1.requests", 0, 812),
    ("worker.1.delta_requests", 2, 812),
    ("worker.1.failed_requests", 0, 0),
    ("worker.1.respawns", 0, 1),
    ("worker.1.avg_response_time", 1, 1843),
    ("worker.1.total_tx", 0, 2457600),
    ("worker.1.rss_size", 1, 52428800),
    ("worker.1.vsz_size", 1, 268435456),
    ("worker.1.running_time", 0, 1496123),
    ("worker.1.core.0.requests", 0, 410),
    ("worker.1.core.0.write_errors", 0, 1),
    ("worker.1.core.0.routed_requests", 0, 0),
    ("worker.1.core.0.static_requests", 0, 12),
    ("worker.1.core.0.offloaded_requests", 0, 0),
    ("worker.1.core.0.exceptions", 0, 2),
    ("worker.1.core.0.read_errors", 0, 0),
    ("worker.1.core.1.requests", 0, 402),
    ("worker.1.core.1.write_errors", 0, 0),
    ("worker.1.core.1.routed_requests", 0, 0),
    ("worker.1.core.1.static_requests", 0, 9),
    ("worker.1.core.1.offloaded_requests", 0, 0),
    ("worker.1.core.1.exceptions", 0, 1),
    ("worker.1.core.1.read_errors", 0, 1),
    ("worker.2.requests", 0, 711),
    ("worker.2.delta_requests", 2, 25),
    ("worker.2.failed_requests", 0, 0),
    ("worker.2.respawns", 0, 2),
    ("worker.2.avg_response_time", 1, 2210),
    ("worker.2.total_tx", 0, 2150400),
    ("worker.2.rss_size", 1, 50331648),
    ("worker.2.vsz_size", 1, 268435456),
    ("worker.2.running_time", 0, 1300500),
    ("worker.2.core.0.requests", 0, 360),
    ("worker.2.core.0.write_errors", 0, 0),
    ("worker.2.core.0.routed_requests", 0, 3),
    ("worker.2.core.0.static_requests", 0, 8),
    ("worker.2.core.0.offloaded_requests", 0, 0),
    ("worker.2.core.0.exceptions", 0, 0),
    ("worker.2.core.0.read_errors", 0, 0),
    ("worker.2.core.1.requests", 0, 351),
    ("worker.2.core.1.write_errors", 0, 2),
    ("worker.2.core.1.routed_requests", 0, 0),
    ("worker.2.core.1.static_requests", 0, 7),
    ("worker.2.core.1.offloaded_requests", 0, 1),
    ("worker.2.core.1.exceptions", 0, 0),
    ("worker.2.core.1.read_errors", 0, 0),
    ("core.total_tx", 0, 4608000),
    ("core.total_rss", 1, 102760448),
    ("core.total_vsz", 1, 536870912),
    ("core.avg_response_time", 1, 2026),
    ("core.total_running_time", 0, 2796623),
    ("socket.0.listen_queue", 1, 4),
    ("rss_size", 3, 102760448),
    ("vsz_size", 3, 536870912),
];

#[test]
fn builtin_list_text() {
    assert_eq!(BUILTIN_68.len(), 68);
    assert_text(
        &render(BUILTIN_68, &Options::default(), Format::Text),
        BUILTIN_TEXT,
    );
}

#[test]
fn builtin_list_openmetrics() {
    assert_text(
        &render(BUILTIN_68, &Options::default(), Format::OpenMetrics),
        BUILTIN_OPENMETRICS,
    );
}

#[test]
fn builtin_list_counts_and_skips() {
    let l = layout(BUILTIN_68, &Options::default());
    assert_eq!(l.series(), 56);
    // 5 core.*, uwsgi_requests, 8 per worker, 7 per core, 5 parents, 1 socket.
    assert_eq!(l.families(), 27);
    let slot0 = "worker 0 is uWSGI's aggregate slot; only its requests value is maintained";
    let zero = "never updated by uWSGI 2.0 (always 0)";
    let alias = "alias of another metric";
    let want: Vec<(usize, String, String)> = [
        (6, "worker.0.delta_requests", slot0),
        (7, "worker.0.failed_requests", slot0),
        (8, "worker.0.respawns", slot0),
        (9, "worker.0.avg_response_time", slot0),
        (10, "worker.0.total_tx", slot0),
        (11, "worker.0.rss_size", slot0),
        (12, "worker.0.vsz_size", slot0),
        (13, "worker.0.running_time", slot0),
        (16, "worker.1.failed_requests", zero),
        (39, "worker.2.failed_requests", zero),
        (66, "rss_size", alias),
        (67, "vsz_size", alias),
    ]
    .into_iter()
    .map(|(i, n, r)| (i, n.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(skipped(BUILTIN_68, &Options::default()), want);
    let reasons: Vec<SkipReason> = layout(BUILTIN_68, &Options::default())
        .skipped()
        .iter()
        .map(|s| s.reason.clone())
        .collect();
    assert_eq!(reasons[0], SkipReason::AggregateSlot);
    assert_eq!(reasons[8], SkipReason::AlwaysZero);
    assert_eq!(reasons[10], SkipReason::Alias);
}

#[test]
fn builtin_list_without_workers() {
    let l = layout(BUILTIN_68, &no_workers());
    // Only the aggregates are left: 5 core.*, uwsgi_requests, 5 parents, 1 socket.
    assert_eq!(l.series(), 12);
    let per_worker = l
        .skipped()
        .iter()
        .filter(|s| s.reason == SkipReason::WorkersDisabled)
        .count();
    // 2 workers x (8 exported values + 14 core values).
    assert_eq!(per_worker, 44);
    let text = render(BUILTIN_68, &no_workers(), Format::Text);
    assert!(!text.contains("worker="));
    assert!(text.contains("\nuwsgi_requests_total 1523\n"));
}

const BUILTIN_TEXT: &str = r##"# HELP uwsgi_core_routed_signals_total uWSGI signals delivered to a target's signal queue (a signal for all workers counts once per worker).
# TYPE uwsgi_core_routed_signals_total counter
uwsgi_core_routed_signals_total 12
# HELP uwsgi_core_unrouted_signals_total uWSGI signal deliveries that failed, usually because the target's signal queue was full (see --signal-bufsize).
# TYPE uwsgi_core_unrouted_signals_total counter
uwsgi_core_unrouted_signals_total 0
# HELP uwsgi_core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
# TYPE uwsgi_core_busy_workers gauge
uwsgi_core_busy_workers 1
# HELP uwsgi_core_idle_workers Workers not busy, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
# TYPE uwsgi_core_idle_workers gauge
uwsgi_core_idle_workers 1
# HELP uwsgi_core_overloaded_total Master-loop iterations in which every worker was busy. Not time-normalised: the count depends on how often the master loop runs.
# TYPE uwsgi_core_overloaded_total counter
uwsgi_core_overloaded_total 3
# HELP uwsgi_requests_total Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns.
# TYPE uwsgi_requests_total counter
uwsgi_requests_total 1523
# HELP uwsgi_worker_requests_total Requests served by the worker, kept across respawns of the worker.
# TYPE uwsgi_worker_requests_total counter
uwsgi_worker_requests_total{worker="1"} 812
uwsgi_worker_requests_total{worker="2"} 711
# HELP uwsgi_worker_delta_requests Requests served by the worker since it was last spawned (reset on respawn).
# TYPE uwsgi_worker_delta_requests gauge
uwsgi_worker_delta_requests{worker="1"} 812
uwsgi_worker_delta_requests{worker="2"} 25
# HELP uwsgi_worker_respawns_total Times the worker has been spawned, the first spawn included (1 after startup).
# TYPE uwsgi_worker_respawns_total counter
uwsgi_worker_respawns_total{worker="1"} 1
uwsgi_worker_respawns_total{worker="2"} 2
# HELP uwsgi_worker_avg_response_time_seconds uWSGI's running response-time figure for the worker, in seconds: after each request it becomes (previous + last) / 2, so it follows the last few requests and is not a mean (divide running time by requests for a mean).
# TYPE uwsgi_worker_avg_response_time_seconds gauge
uwsgi_worker_avg_response_time_seconds{worker="1"} 0.001843
uwsgi_worker_avg_response_time_seconds{worker="2"} 0.00221
# HELP uwsgi_worker_tx_bytes_total Bytes (headers and body) the worker sent in responses.
# TYPE uwsgi_worker_tx_bytes_total counter
uwsgi_worker_tx_bytes_total{worker="1"} 2457600
uwsgi_worker_tx_bytes_total{worker="2"} 2150400
# HELP uwsgi_worker_rss_bytes Resident set size of the worker in bytes, measured after each request only with --memory-report (or an option such as --reload-on-rss); 0 otherwise, and reset to 0 on respawn.
# TYPE uwsgi_worker_rss_bytes gauge
uwsgi_worker_rss_bytes{worker="1"} 52428800
uwsgi_worker_rss_bytes{worker="2"} 50331648
# HELP uwsgi_worker_vsz_bytes Virtual memory size of the worker in bytes, measured after each request only with --memory-report (or an option such as --reload-on-as); 0 otherwise, and reset to 0 on respawn.
# TYPE uwsgi_worker_vsz_bytes gauge
uwsgi_worker_vsz_bytes{worker="1"} 268435456
uwsgi_worker_vsz_bytes{worker="2"} 268435456
# HELP uwsgi_worker_running_time_seconds_total Time the worker spent serving requests, in seconds (microsecond resolution).
# TYPE uwsgi_worker_running_time_seconds_total counter
uwsgi_worker_running_time_seconds_total{worker="1"} 1.496123
uwsgi_worker_running_time_seconds_total{worker="2"} 1.3005
# HELP uwsgi_worker_core_requests_total Requests served by this core (thread or async slot) of the worker.
# TYPE uwsgi_worker_core_requests_total counter
uwsgi_worker_core_requests_total{worker="1",core="0"} 410
uwsgi_worker_core_requests_total{worker="1",core="1"} 402
uwsgi_worker_core_requests_total{worker="2",core="0"} 360
uwsgi_worker_core_requests_total{worker="2",core="1"} 351
# HELP uwsgi_worker_core_write_errors_total Errors writing responses to clients on this core of the worker.
# TYPE uwsgi_worker_core_write_errors_total counter
uwsgi_worker_core_write_errors_total{worker="1",core="0"} 1
uwsgi_worker_core_write_errors_total{worker="1",core="1"} 0
uwsgi_worker_core_write_errors_total{worker="2",core="0"} 0
uwsgi_worker_core_write_errors_total{worker="2",core="1"} 2
# HELP uwsgi_worker_core_routed_requests_total Requests on this core of the worker completed by an internal routing rule (the route returned BREAK).
# TYPE uwsgi_worker_core_routed_requests_total counter
uwsgi_worker_core_routed_requests_total{worker="1",core="0"} 0
uwsgi_worker_core_routed_requests_total{worker="1",core="1"} 0
uwsgi_worker_core_routed_requests_total{worker="2",core="0"} 3
uwsgi_worker_core_routed_requests_total{worker="2",core="1"} 0
# HELP uwsgi_worker_core_static_requests_total Requests on this core of the worker served as static files.
# TYPE uwsgi_worker_core_static_requests_total counter
uwsgi_worker_core_static_requests_total{worker="1",core="0"} 12
uwsgi_worker_core_static_requests_total{worker="1",core="1"} 9
uwsgi_worker_core_static_requests_total{worker="2",core="0"} 8
uwsgi_worker_core_static_requests_total{worker="2",core="1"} 7
# HELP uwsgi_worker_core_offloaded_requests_total Requests on this core of the worker whose response was handed to the offload threads.
# TYPE uwsgi_worker_core_offloaded_requests_total counter
uwsgi_worker_core_offloaded_requests_total{worker="1",core="0"} 0
uwsgi_worker_core_offloaded_requests_total{worker="1",core="1"} 0
uwsgi_worker_core_offloaded_requests_total{worker="2",core="0"} 0
uwsgi_worker_core_offloaded_requests_total{worker="2",core="1"} 1
# HELP uwsgi_worker_core_exceptions_total Exceptions raised by the application on this core of the worker.
# TYPE uwsgi_worker_core_exceptions_total counter
uwsgi_worker_core_exceptions_total{worker="1",core="0"} 2
uwsgi_worker_core_exceptions_total{worker="1",core="1"} 1
uwsgi_worker_core_exceptions_total{worker="2",core="0"} 0
uwsgi_worker_core_exceptions_total{worker="2",core="1"} 0
# HELP uwsgi_worker_core_read_errors_total Errors reading requests from clients on this core of the worker.
# TYPE uwsgi_worker_core_read_errors_total counter
uwsgi_worker_core_read_errors_total{worker="1",core="0"} 0
uwsgi_worker_core_read_errors_total{worker="1",core="1"} 1
uwsgi_worker_core_read_errors_total{worker="2",core="0"} 0
uwsgi_worker_core_read_errors_total{worker="2",core="1"} 0
# HELP uwsgi_tx_bytes_total Bytes (headers and body) all workers sent in responses.
# TYPE uwsgi_tx_bytes_total counter
uwsgi_tx_bytes_total 4608000
# HELP uwsgi_rss_bytes Sum of the workers' resident set sizes in bytes (maintained only with --memory-report or similar; cheaped workers keep their last value).
# TYPE uwsgi_rss_bytes gauge
uwsgi_rss_bytes 102760448
# HELP uwsgi_vsz_bytes Sum of the workers' virtual memory sizes in bytes (maintained only with --memory-report or similar; cheaped workers keep their last value).
# TYPE uwsgi_vsz_bytes gauge
uwsgi_vsz_bytes 536870912
# HELP uwsgi_avg_response_time_seconds Average over all workers of their running response-time figure, in seconds; idle workers' zeros are included, so it is neither a mean nor request-weighted.
# TYPE uwsgi_avg_response_time_seconds gauge
uwsgi_avg_response_time_seconds 0.002026
# HELP uwsgi_running_time_seconds_total Time all workers spent serving requests, in seconds (microsecond resolution).
# TYPE uwsgi_running_time_seconds_total counter
uwsgi_running_time_seconds_total 2.796623
# HELP uwsgi_socket_listen_queue Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels.
# TYPE uwsgi_socket_listen_queue gauge
uwsgi_socket_listen_queue{socket="0"} 4
"##;

const BUILTIN_OPENMETRICS: &str = r##"# HELP uwsgi_core_routed_signals uWSGI signals delivered to a target's signal queue (a signal for all workers counts once per worker).
# TYPE uwsgi_core_routed_signals counter
uwsgi_core_routed_signals_total 12
# HELP uwsgi_core_unrouted_signals uWSGI signal deliveries that failed, usually because the target's signal queue was full (see --signal-bufsize).
# TYPE uwsgi_core_unrouted_signals counter
uwsgi_core_unrouted_signals_total 0
# HELP uwsgi_core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
# TYPE uwsgi_core_busy_workers gauge
uwsgi_core_busy_workers 1
# HELP uwsgi_core_idle_workers Workers not busy, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
# TYPE uwsgi_core_idle_workers gauge
uwsgi_core_idle_workers 1
# HELP uwsgi_core_overloaded Master-loop iterations in which every worker was busy. Not time-normalised: the count depends on how often the master loop runs.
# TYPE uwsgi_core_overloaded counter
uwsgi_core_overloaded_total 3
# HELP uwsgi_requests Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns.
# TYPE uwsgi_requests counter
uwsgi_requests_total 1523
# HELP uwsgi_worker_requests Requests served by the worker, kept across respawns of the worker.
# TYPE uwsgi_worker_requests counter
uwsgi_worker_requests_total{worker="1"} 812
uwsgi_worker_requests_total{worker="2"} 711
# HELP uwsgi_worker_delta_requests Requests served by the worker since it was last spawned (reset on respawn).
# TYPE uwsgi_worker_delta_requests gauge
uwsgi_worker_delta_requests{worker="1"} 812
uwsgi_worker_delta_requests{worker="2"} 25
# HELP uwsgi_worker_respawns Times the worker has been spawned, the first spawn included (1 after startup).
# TYPE uwsgi_worker_respawns counter
uwsgi_worker_respawns_total{worker="1"} 1
uwsgi_worker_respawns_total{worker="2"} 2
# HELP uwsgi_worker_avg_response_time_seconds uWSGI's running response-time figure for the worker, in seconds: after each request it becomes (previous + last) / 2, so it follows the last few requests and is not a mean (divide running time by requests for a mean).
# TYPE uwsgi_worker_avg_response_time_seconds gauge
# UNIT uwsgi_worker_avg_response_time_seconds seconds
uwsgi_worker_avg_response_time_seconds{worker="1"} 0.001843
uwsgi_worker_avg_response_time_seconds{worker="2"} 0.00221
# HELP uwsgi_worker_tx_bytes Bytes (headers and body) the worker sent in responses.
# TYPE uwsgi_worker_tx_bytes counter
# UNIT uwsgi_worker_tx_bytes bytes
uwsgi_worker_tx_bytes_total{worker="1"} 2457600
uwsgi_worker_tx_bytes_total{worker="2"} 2150400
# HELP uwsgi_worker_rss_bytes Resident set size of the worker in bytes, measured after each request only with --memory-report (or an option such as --reload-on-rss); 0 otherwise, and reset to 0 on respawn.
# TYPE uwsgi_worker_rss_bytes gauge
# UNIT uwsgi_worker_rss_bytes bytes
uwsgi_worker_rss_bytes{worker="1"} 52428800
uwsgi_worker_rss_bytes{worker="2"} 50331648
# HELP uwsgi_worker_vsz_bytes Virtual memory size of the worker in bytes, measured after each request only with --memory-report (or an option such as --reload-on-as); 0 otherwise, and reset to 0 on respawn.
# TYPE uwsgi_worker_vsz_bytes gauge
# UNIT uwsgi_worker_vsz_bytes bytes
uwsgi_worker_vsz_bytes{worker="1"} 268435456
uwsgi_worker_vsz_bytes{worker="2"} 268435456
# HELP uwsgi_worker_running_time_seconds Time the worker spent serving requests, in seconds (microsecond resolution).
# TYPE uwsgi_worker_running_time_seconds counter
# UNIT uwsgi_worker_running_time_seconds seconds
uwsgi_worker_running_time_seconds_total{worker="1"} 1.496123
uwsgi_worker_running_time_seconds_total{worker="2"} 1.3005
# HELP uwsgi_worker_core_requests Requests served by this core (thread or async slot) of the worker.
# TYPE uwsgi_worker_core_requests counter
uwsgi_worker_core_requests_total{worker="1",core="0"} 410
uwsgi_worker_core_requests_total{worker="1",core="1"} 402
uwsgi_worker_core_requests_total{worker="2",core="0"} 360
uwsgi_worker_core_requests_total{worker="2",core="1"} 351
# HELP uwsgi_worker_core_write_errors Errors writing responses to clients on this core of the worker.
# TYPE uwsgi_worker_core_write_errors counter
uwsgi_worker_core_write_errors_total{worker="1",core="0"} 1
uwsgi_worker_core_write_errors_total{worker="1",core="1"} 0
uwsgi_worker_core_write_errors_total{worker="2",core="0"} 0
uwsgi_worker_core_write_errors_total{worker="2",core="1"} 2
# HELP uwsgi_worker_core_routed_requests Requests on this core of the worker completed by an internal routing rule (the route returned BREAK).
# TYPE uwsgi_worker_core_routed_requests counter
uwsgi_worker_core_routed_requests_total{worker="1",core="0"} 0
uwsgi_worker_core_routed_requests_total{worker="1",core="1"} 0
uwsgi_worker_core_routed_requests_total{worker="2",core="0"} 3
uwsgi_worker_core_routed_requests_total{worker="2",core="1"} 0
# HELP uwsgi_worker_core_static_requests Requests on this core of the worker served as static files.
# TYPE uwsgi_worker_core_static_requests counter
uwsgi_worker_core_static_requests_total{worker="1",core="0"} 12
uwsgi_worker_core_static_requests_total{worker="1",core="1"} 9
uwsgi_worker_core_static_requests_total{worker="2",core="0"} 8
uwsgi_worker_core_static_requests_total{worker="2",core="1"} 7
# HELP uwsgi_worker_core_offloaded_requests Requests on this core of the worker whose response was handed to the offload threads.
# TYPE uwsgi_worker_core_offloaded_requests counter
uwsgi_worker_core_offloaded_requests_total{worker="1",core="0"} 0
uwsgi_worker_core_offloaded_requests_total{worker="1",core="1"} 0
uwsgi_worker_core_offloaded_requests_total{worker="2",core="0"} 0
uwsgi_worker_core_offloaded_requests_total{worker="2",core="1"} 1
# HELP uwsgi_worker_core_exceptions Exceptions raised by the application on this core of the worker.
# TYPE uwsgi_worker_core_exceptions counter
uwsgi_worker_core_exceptions_total{worker="1",core="0"} 2
uwsgi_worker_core_exceptions_total{worker="1",core="1"} 1
uwsgi_worker_core_exceptions_total{worker="2",core="0"} 0
uwsgi_worker_core_exceptions_total{worker="2",core="1"} 0
# HELP uwsgi_worker_core_read_errors Errors reading requests from clients on this core of the worker.
# TYPE uwsgi_worker_core_read_errors counter
uwsgi_worker_core_read_errors_total{worker="1",core="0"} 0
uwsgi_worker_core_read_errors_total{worker="1",core="1"} 1
uwsgi_worker_core_read_errors_total{worker="2",core="0"} 0
uwsgi_worker_core_read_errors_total{worker="2",core="1"} 0
# HELP uwsgi_tx_bytes Bytes (headers and body) all workers sent in responses.
# TYPE uwsgi_tx_bytes counter
# UNIT uwsgi_tx_bytes bytes
uwsgi_tx_bytes_total 4608000
# HELP uwsgi_rss_bytes Sum of the workers' resident set sizes in bytes (maintained only with --memory-report or similar; cheaped workers keep their last value).
# TYPE uwsgi_rss_bytes gauge
# UNIT uwsgi_rss_bytes bytes
uwsgi_rss_bytes 102760448
# HELP uwsgi_vsz_bytes Sum of the workers' virtual memory sizes in bytes (maintained only with --memory-report or similar; cheaped workers keep their last value).
# TYPE uwsgi_vsz_bytes gauge
# UNIT uwsgi_vsz_bytes bytes
uwsgi_vsz_bytes 536870912
# HELP uwsgi_avg_response_time_seconds Average over all workers of their running response-time figure, in seconds; idle workers' zeros are included, so it is neither a mean nor request-weighted.
# TYPE uwsgi_avg_response_time_seconds gauge
# UNIT uwsgi_avg_response_time_seconds seconds
uwsgi_avg_response_time_seconds 0.002026
# HELP uwsgi_running_time_seconds Time all workers spent serving requests, in seconds (microsecond resolution).
# TYPE uwsgi_running_time_seconds counter
# UNIT uwsgi_running_time_seconds seconds
uwsgi_running_time_seconds_total 2.796623
# HELP uwsgi_socket_listen_queue Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels.
# TYPE uwsgi_socket_listen_queue gauge
uwsgi_socket_listen_queue{socket="0"} 4
# EOF
"##;

// ---------------------------------------------------------------------------
// (b) Custom metrics with awkward names, collisions and negative counters.
// ---------------------------------------------------------------------------

#[rustfmt::skip]
const CUSTOM: &[(&str, u8, i64)] = &[
    ("my-app.hits", 0, 5),
    ("MyApp.Latency.ms", 1, 250),
    ("a..b", 1, 1),
    ("job..runs.", 0, 17),
    ("x.1.y.2", 1, 7),
    ("jobs.total", 0, 3),
    ("queue_count", 1, 4),
    ("say.\"hi\"", 1, 1),
    ("back\\slash.1", 1, 2),
    ("two\nlines", 0, 9),
    ("pending.total", 1, 6),
    ("Cache.HitCount", 0, 11),
    ("queue.gauge", 1, 2),
    ("mem.kb", 1, 2048),
    ("le.5.hits", 0, 1),
    ("1.x", 1, -1),
    ("x.1.2.y", 1, 8),
    ("a.1.a.2", 1, 9),
    ("myapp.shard.3.hits", 0, 42),
    ("myapp.shard.4.hits", 0, 40),
    ("myapp.shard.5.hits", 0, -3),
    ("jobs", 0, 1),
    ("jobs", 1, 1),
    ("jobs.created", 1, 1),
    ("...", 1, 1),
    ("kb", 1, 1),
    ("aliased", 3, 1),
    ("latency.us", 0, 1500000),
    ("uptime.s", 1, 12),
    ("__x.2", 1, 1),
    ("2x.7.y", 1, 3),
    ("café.1", 1, 5),
];

#[test]
fn custom_names_text() {
    assert_text(
        &render(CUSTOM, &Options::default(), Format::Text),
        CUSTOM_TEXT,
    );
}

#[test]
fn custom_names_openmetrics() {
    assert_text(
        &render(CUSTOM, &Options::default(), Format::OpenMetrics),
        CUSTOM_OPENMETRICS,
    );
}

#[test]
fn custom_names_skips() {
    let want: Vec<(usize, String, String)> = [
        (
            21,
            "jobs",
            "duplicate series of uwsgi_jobs_total (same labels as an earlier metric)",
        ),
        (
            22,
            "jobs",
            "family uwsgi_jobs already exists with another type",
        ),
        (
            23,
            "jobs.created",
            "name uwsgi_jobs_created is already used by another family",
        ),
        (24, "...", "no usable name left after sanitising"),
        (25, "kb", "no usable name left after sanitising"),
        (26, "aliased", "alias of another metric"),
    ]
    .into_iter()
    .map(|(i, n, r)| (i, n.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(skipped(CUSTOM, &Options::default()), want);
    assert_eq!(layout(CUSTOM, &Options::default()).series(), 26);
}

const CUSTOM_TEXT: &str = r##"# HELP uwsgi_my_app_hits_total uWSGI metric my-app.hits (custom, or not known to this exporter).
# TYPE uwsgi_my_app_hits_total counter
uwsgi_my_app_hits_total 5
# HELP uwsgi_my_app_latency_seconds uWSGI metric MyApp.Latency.ms (custom, or not known to this exporter); value converted from milliseconds to seconds.
# TYPE uwsgi_my_app_latency_seconds gauge
uwsgi_my_app_latency_seconds 0.25
# HELP uwsgi_a uWSGI metric a..b (custom, or not known to this exporter); unit tokens removed from the name: b.
# TYPE uwsgi_a gauge
uwsgi_a 1
# HELP uwsgi_job_runs_total uWSGI metric job..runs. (custom, or not known to this exporter).
# TYPE uwsgi_job_runs_total counter
uwsgi_job_runs_total 17
# HELP uwsgi_x_y uWSGI metric x.N.y.N (custom, or not known to this exporter).
# TYPE uwsgi_x_y gauge
uwsgi_x_y{x="1",y="2"} 7
# HELP uwsgi_jobs_total uWSGI metric jobs.total (custom, or not known to this exporter).
# TYPE uwsgi_jobs_total counter
uwsgi_jobs_total 3
# HELP uwsgi_queue_counts uWSGI metric queue_count (custom, or not known to this exporter).
# TYPE uwsgi_queue_counts gauge
uwsgi_queue_counts 4
# HELP uwsgi_say__hi_ uWSGI metric say."hi" (custom, or not known to this exporter).
# TYPE uwsgi_say__hi_ gauge
uwsgi_say__hi_ 1
# HELP uwsgi_back_slash uWSGI metric back\\slash.N (custom, or not known to this exporter).
# TYPE uwsgi_back_slash gauge
uwsgi_back_slash{back_slash="1"} 2
# HELP uwsgi_two_lines_total uWSGI metric two\nlines (custom, or not known to this exporter).
# TYPE uwsgi_two_lines_total counter
uwsgi_two_lines_total 9
# HELP uwsgi_pending_totals uWSGI metric pending.total (custom, or not known to this exporter).
# TYPE uwsgi_pending_totals gauge
uwsgi_pending_totals 6
# HELP uwsgi_cache_hit_count_total uWSGI metric Cache.HitCount (custom, or not known to this exporter).
# TYPE uwsgi_cache_hit_count_total counter
uwsgi_cache_hit_count_total 11
# HELP uwsgi_queue_gauges uWSGI metric queue.gauge (custom, or not known to this exporter).
# TYPE uwsgi_queue_gauges gauge
uwsgi_queue_gauges 2
# HELP uwsgi_mem uWSGI metric mem.kb (custom, or not known to this exporter); unit tokens removed from the name: kb.
# TYPE uwsgi_mem gauge
uwsgi_mem 2048
# HELP uwsgi_le_hits_total uWSGI metric le.N.hits (custom, or not known to this exporter).
# TYPE uwsgi_le_hits_total counter
uwsgi_le_hits_total{_le="5"} 1
# HELP uwsgi_1_x uWSGI metric 1.x (custom, or not known to this exporter).
# TYPE uwsgi_1_x gauge
uwsgi_1_x -1
# HELP uwsgi_x_2_y uWSGI metric x.N.2.y (custom, or not known to this exporter).
# TYPE uwsgi_x_2_y gauge
uwsgi_x_2_y{x="1"} 8
# HELP uwsgi_a_a_2 uWSGI metric a.N.a.2 (custom, or not known to this exporter).
# TYPE uwsgi_a_a_2 gauge
uwsgi_a_a_2{a="1"} 9
# HELP uwsgi_myapp_shard_hits_total uWSGI metric myapp.shard.N.hits (custom, or not known to this exporter).
# TYPE uwsgi_myapp_shard_hits_total counter
uwsgi_myapp_shard_hits_total{shard="3"} 42
uwsgi_myapp_shard_hits_total{shard="4"} 40
uwsgi_myapp_shard_hits_total{shard="5"} 0
# HELP uwsgi_latency_seconds_total uWSGI metric latency.us (custom, or not known to this exporter); value converted from microseconds to seconds.
# TYPE uwsgi_latency_seconds_total counter
uwsgi_latency_seconds_total 1.5
# HELP uwsgi_uptime_seconds uWSGI metric uptime.s (custom, or not known to this exporter).
# TYPE uwsgi_uptime_seconds gauge
uwsgi_uptime_seconds 12
# HELP uwsgi___x uWSGI metric __x.N (custom, or not known to this exporter).
# TYPE uwsgi___x gauge
uwsgi___x{x="2"} 1
# HELP uwsgi_2x_y uWSGI metric 2x.N.y (custom, or not known to this exporter).
# TYPE uwsgi_2x_y gauge
uwsgi_2x_y{_2x="7"} 3
# HELP uwsgi_caf__ uWSGI metric café.N (custom, or not known to this exporter).
# TYPE uwsgi_caf__ gauge
uwsgi_caf__{caf__="1"} 5
"##;

const CUSTOM_OPENMETRICS: &str = r##"# HELP uwsgi_my_app_hits uWSGI metric my-app.hits (custom, or not known to this exporter).
# TYPE uwsgi_my_app_hits counter
uwsgi_my_app_hits_total 5
# HELP uwsgi_my_app_latency_seconds uWSGI metric MyApp.Latency.ms (custom, or not known to this exporter); value converted from milliseconds to seconds.
# TYPE uwsgi_my_app_latency_seconds gauge
# UNIT uwsgi_my_app_latency_seconds seconds
uwsgi_my_app_latency_seconds 0.25
# HELP uwsgi_a uWSGI metric a..b (custom, or not known to this exporter); unit tokens removed from the name: b.
# TYPE uwsgi_a gauge
uwsgi_a 1
# HELP uwsgi_job_runs uWSGI metric job..runs. (custom, or not known to this exporter).
# TYPE uwsgi_job_runs counter
uwsgi_job_runs_total 17
# HELP uwsgi_x_y uWSGI metric x.N.y.N (custom, or not known to this exporter).
# TYPE uwsgi_x_y gauge
uwsgi_x_y{x="1",y="2"} 7
# HELP uwsgi_jobs uWSGI metric jobs.total (custom, or not known to this exporter).
# TYPE uwsgi_jobs counter
uwsgi_jobs_total 3
# HELP uwsgi_queue_counts uWSGI metric queue_count (custom, or not known to this exporter).
# TYPE uwsgi_queue_counts gauge
uwsgi_queue_counts 4
# HELP uwsgi_say__hi_ uWSGI metric say.\"hi\" (custom, or not known to this exporter).
# TYPE uwsgi_say__hi_ gauge
uwsgi_say__hi_ 1
# HELP uwsgi_back_slash uWSGI metric back\\slash.N (custom, or not known to this exporter).
# TYPE uwsgi_back_slash gauge
uwsgi_back_slash{back_slash="1"} 2
# HELP uwsgi_two_lines uWSGI metric two\nlines (custom, or not known to this exporter).
# TYPE uwsgi_two_lines counter
uwsgi_two_lines_total 9
# HELP uwsgi_pending_totals uWSGI metric pending.total (custom, or not known to this exporter).
# TYPE uwsgi_pending_totals gauge
uwsgi_pending_totals 6
# HELP uwsgi_cache_hit_count uWSGI metric Cache.HitCount (custom, or not known to this exporter).
# TYPE uwsgi_cache_hit_count counter
uwsgi_cache_hit_count_total 11
# HELP uwsgi_queue_gauges uWSGI metric queue.gauge (custom, or not known to this exporter).
# TYPE uwsgi_queue_gauges gauge
uwsgi_queue_gauges 2
# HELP uwsgi_mem uWSGI metric mem.kb (custom, or not known to this exporter); unit tokens removed from the name: kb.
# TYPE uwsgi_mem gauge
uwsgi_mem 2048
# HELP uwsgi_le_hits uWSGI metric le.N.hits (custom, or not known to this exporter).
# TYPE uwsgi_le_hits counter
uwsgi_le_hits_total{_le="5"} 1
# HELP uwsgi_1_x uWSGI metric 1.x (custom, or not known to this exporter).
# TYPE uwsgi_1_x gauge
uwsgi_1_x -1
# HELP uwsgi_x_2_y uWSGI metric x.N.2.y (custom, or not known to this exporter).
# TYPE uwsgi_x_2_y gauge
uwsgi_x_2_y{x="1"} 8
# HELP uwsgi_a_a_2 uWSGI metric a.N.a.2 (custom, or not known to this exporter).
# TYPE uwsgi_a_a_2 gauge
uwsgi_a_a_2{a="1"} 9
# HELP uwsgi_myapp_shard_hits uWSGI metric myapp.shard.N.hits (custom, or not known to this exporter).
# TYPE uwsgi_myapp_shard_hits counter
uwsgi_myapp_shard_hits_total{shard="3"} 42
uwsgi_myapp_shard_hits_total{shard="4"} 40
uwsgi_myapp_shard_hits_total{shard="5"} 0
# HELP uwsgi_latency_seconds uWSGI metric latency.us (custom, or not known to this exporter); value converted from microseconds to seconds.
# TYPE uwsgi_latency_seconds counter
# UNIT uwsgi_latency_seconds seconds
uwsgi_latency_seconds_total 1.5
# HELP uwsgi_uptime_seconds uWSGI metric uptime.s (custom, or not known to this exporter).
# TYPE uwsgi_uptime_seconds gauge
# UNIT uwsgi_uptime_seconds seconds
uwsgi_uptime_seconds 12
# HELP uwsgi___x uWSGI metric __x.N (custom, or not known to this exporter).
# TYPE uwsgi___x gauge
uwsgi___x{x="2"} 1
# HELP uwsgi_2x_y uWSGI metric 2x.N.y (custom, or not known to this exporter).
# TYPE uwsgi_2x_y gauge
uwsgi_2x_y{_2x="7"} 3
# HELP uwsgi_caf__ uWSGI metric café.N (custom, or not known to this exporter).
# TYPE uwsgi_caf__ gauge
uwsgi_caf__{caf__="1"} 5
# EOF
"##;

// ---------------------------------------------------------------------------
// (c) The empty list.
// ---------------------------------------------------------------------------

#[test]
fn empty_list() {
    let l = Layout::new(&[], &Options::default());
    assert_eq!(l.series(), 0);
    assert!(l.skipped().is_empty());
    assert_eq!(render(&[], &Options::default(), Format::Text), "");
    assert_eq!(
        render(&[], &Options::default(), Format::OpenMetrics),
        "# EOF\n"
    );
    let mut out = b"kept".to_vec();
    l.render(&[1, 2, 3], Format::OpenMetrics, &mut out);
    assert_eq!(out, b"kept# EOF\n");
}

// ---------------------------------------------------------------------------
// (d) Options: no HELP, no TYPE, no per-worker series, other prefixes.
// ---------------------------------------------------------------------------

#[rustfmt::skip]
const MIXED: &[(&str, u8, i64)] = &[
    ("core.busy_workers", 1, 2),
    ("worker.0.requests", 0, 30),
    ("worker.1.requests", 0, 18),
    ("worker.1.avg_response_time", 1, 1250),
    ("worker.1.core.0.requests", 0, 18),
    ("worker.2.custom_hits", 0, 4),
    ("socket.0.listen_queue", 1, 0),
    ("1.x", 1, 5),
    ("jobs", 0, -2),
    ("latency.us", 0, 7),
    ("core.total_tx", 0, 99),
];

#[test]
fn options_all_off() {
    let o = Options {
        prefix: "app_".to_owned(),
        help: false,
        types: false,
        workers: false,
        cores: true,
        labels: Vec::new(),
        families: FamilyFilter::default(),
    };
    assert_text(&render(MIXED, &o, Format::Text), ALL_OFF_TEXT);
    assert_text(&render(MIXED, &o, Format::OpenMetrics), ALL_OFF_OPENMETRICS);
}

#[test]
fn options_empty_prefix() {
    let o = Options {
        prefix: String::new(),
        ..Options::default()
    };
    assert_text(&render(MIXED, &o, Format::Text), EMPTY_PREFIX_TEXT);
    assert_text(
        &render(MIXED, &o, Format::OpenMetrics),
        EMPTY_PREFIX_OPENMETRICS,
    );
}

#[test]
fn options_no_help() {
    let o = Options {
        help: false,
        ..Options::default()
    };
    assert_text(&render(MIXED, &o, Format::Text), NO_HELP_TEXT);
    assert_text(&render(MIXED, &o, Format::OpenMetrics), NO_HELP_OPENMETRICS);
}

#[test]
fn options_no_type_no_workers() {
    let o = Options {
        types: false,
        workers: false,
        ..Options::default()
    };
    assert_text(&render(MIXED, &o, Format::Text), NO_TYPE_TEXT);
    assert_text(&render(MIXED, &o, Format::OpenMetrics), NO_TYPE_OPENMETRICS);
}

#[test]
fn option_defaults() {
    assert_eq!(
        Options::default(),
        Options {
            prefix: "uwsgi_".to_owned(),
            help: true,
            types: true,
            workers: true,
            cores: true,
            labels: Vec::new(),
            families: FamilyFilter::default(),
        }
    );
}

#[test]
fn accept_headers() {
    let om = [
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    ];
    let text = [
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "*/*",
        "",
        "text/html",
        "\u{1}garbage;;,",
    ];
    for h in om {
        assert_eq!(negotiate(Some(h.as_bytes())), Format::OpenMetrics, "{h}");
    }
    for h in text {
        assert_eq!(negotiate(Some(h.as_bytes())), Format::Text, "{h}");
    }
    assert_eq!(negotiate(None), Format::Text);
    // Native histograms on: Prometheus 2.42 (--enable-feature=native-histograms), 3.x
    // (scrape_native_histograms: true).
    let protobuf = [
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    ];
    for h in protobuf {
        assert_eq!(negotiate(Some(h.as_bytes())), Format::Protobuf, "{h}");
        let no_pb = Offer {
            protobuf: false,
            ..Offer::ALL
        };
        assert_eq!(
            negotiate_among(Some(h.as_bytes()), no_pb),
            Format::OpenMetrics,
            "{h}"
        );
    }
}

const ALL_OFF_TEXT: &str = r##"app_core_busy_workers 2
app_requests_total 30
app_socket_listen_queue{socket="0"} 0
app_1_x 5
app_jobs_total 0
app_latency_seconds_total 0.000007
app_tx_bytes_total 99
"##;

const ALL_OFF_OPENMETRICS: &str = r##"app_core_busy_workers 2
app_requests_total 30
app_socket_listen_queue{socket="0"} 0
app_1_x 5
app_jobs_total 0
app_latency_seconds_total 0.000007
app_tx_bytes_total 99
# EOF
"##;

const EMPTY_PREFIX_TEXT: &str = r##"# HELP core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
# TYPE core_busy_workers gauge
core_busy_workers 2
# HELP requests_total Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns.
# TYPE requests_total counter
requests_total 30
# HELP worker_requests_total Requests served by the worker, kept across respawns of the worker.
# TYPE worker_requests_total counter
worker_requests_total{worker="1"} 18
# HELP worker_avg_response_time_seconds uWSGI's running response-time figure for the worker, in seconds: after each request it becomes (previous + last) / 2, so it follows the last few requests and is not a mean (divide running time by requests for a mean).
# TYPE worker_avg_response_time_seconds gauge
worker_avg_response_time_seconds{worker="1"} 0.00125
# HELP worker_core_requests_total Requests served by this core (thread or async slot) of the worker.
# TYPE worker_core_requests_total counter
worker_core_requests_total{worker="1",core="0"} 18
# HELP worker_custom_hits_total uWSGI metric worker.N.custom_hits (custom, or not known to this exporter).
# TYPE worker_custom_hits_total counter
worker_custom_hits_total{worker="2"} 4
# HELP socket_listen_queue Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels.
# TYPE socket_listen_queue gauge
socket_listen_queue{socket="0"} 0
# HELP _1_x uWSGI metric 1.x (custom, or not known to this exporter).
# TYPE _1_x gauge
_1_x 5
# HELP jobs_total uWSGI metric jobs (custom, or not known to this exporter).
# TYPE jobs_total counter
jobs_total 0
# HELP latency_seconds_total uWSGI metric latency.us (custom, or not known to this exporter); value converted from microseconds to seconds.
# TYPE latency_seconds_total counter
latency_seconds_total 0.000007
# HELP tx_bytes_total Bytes (headers and body) all workers sent in responses.
# TYPE tx_bytes_total counter
tx_bytes_total 99
"##;

const EMPTY_PREFIX_OPENMETRICS: &str = r##"# HELP core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
# TYPE core_busy_workers gauge
core_busy_workers 2
# HELP requests Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns.
# TYPE requests counter
requests_total 30
# HELP worker_requests Requests served by the worker, kept across respawns of the worker.
# TYPE worker_requests counter
worker_requests_total{worker="1"} 18
# HELP worker_avg_response_time_seconds uWSGI's running response-time figure for the worker, in seconds: after each request it becomes (previous + last) / 2, so it follows the last few requests and is not a mean (divide running time by requests for a mean).
# TYPE worker_avg_response_time_seconds gauge
# UNIT worker_avg_response_time_seconds seconds
worker_avg_response_time_seconds{worker="1"} 0.00125
# HELP worker_core_requests Requests served by this core (thread or async slot) of the worker.
# TYPE worker_core_requests counter
worker_core_requests_total{worker="1",core="0"} 18
# HELP worker_custom_hits uWSGI metric worker.N.custom_hits (custom, or not known to this exporter).
# TYPE worker_custom_hits counter
worker_custom_hits_total{worker="2"} 4
# HELP socket_listen_queue Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels.
# TYPE socket_listen_queue gauge
socket_listen_queue{socket="0"} 0
# HELP _1_x uWSGI metric 1.x (custom, or not known to this exporter).
# TYPE _1_x gauge
_1_x 5
# HELP jobs uWSGI metric jobs (custom, or not known to this exporter).
# TYPE jobs counter
jobs_total 0
# HELP latency_seconds uWSGI metric latency.us (custom, or not known to this exporter); value converted from microseconds to seconds.
# TYPE latency_seconds counter
# UNIT latency_seconds seconds
latency_seconds_total 0.000007
# HELP tx_bytes Bytes (headers and body) all workers sent in responses.
# TYPE tx_bytes counter
# UNIT tx_bytes bytes
tx_bytes_total 99
# EOF
"##;

const NO_HELP_TEXT: &str = r##"# TYPE uwsgi_core_busy_workers gauge
uwsgi_core_busy_workers 2
# TYPE uwsgi_requests_total counter
uwsgi_requests_total 30
# TYPE uwsgi_worker_requests_total counter
uwsgi_worker_requests_total{worker="1"} 18
# TYPE uwsgi_worker_avg_response_time_seconds gauge
uwsgi_worker_avg_response_time_seconds{worker="1"} 0.00125
# TYPE uwsgi_worker_core_requests_total counter
uwsgi_worker_core_requests_total{worker="1",core="0"} 18
# TYPE uwsgi_worker_custom_hits_total counter
uwsgi_worker_custom_hits_total{worker="2"} 4
# TYPE uwsgi_socket_listen_queue gauge
uwsgi_socket_listen_queue{socket="0"} 0
# TYPE uwsgi_1_x gauge
uwsgi_1_x 5
# TYPE uwsgi_jobs_total counter
uwsgi_jobs_total 0
# TYPE uwsgi_latency_seconds_total counter
uwsgi_latency_seconds_total 0.000007
# TYPE uwsgi_tx_bytes_total counter
uwsgi_tx_bytes_total 99
"##;

const NO_HELP_OPENMETRICS: &str = r##"# TYPE uwsgi_core_busy_workers gauge
uwsgi_core_busy_workers 2
# TYPE uwsgi_requests counter
uwsgi_requests_total 30
# TYPE uwsgi_worker_requests counter
uwsgi_worker_requests_total{worker="1"} 18
# TYPE uwsgi_worker_avg_response_time_seconds gauge
# UNIT uwsgi_worker_avg_response_time_seconds seconds
uwsgi_worker_avg_response_time_seconds{worker="1"} 0.00125
# TYPE uwsgi_worker_core_requests counter
uwsgi_worker_core_requests_total{worker="1",core="0"} 18
# TYPE uwsgi_worker_custom_hits counter
uwsgi_worker_custom_hits_total{worker="2"} 4
# TYPE uwsgi_socket_listen_queue gauge
uwsgi_socket_listen_queue{socket="0"} 0
# TYPE uwsgi_1_x gauge
uwsgi_1_x 5
# TYPE uwsgi_jobs counter
uwsgi_jobs_total 0
# TYPE uwsgi_latency_seconds counter
# UNIT uwsgi_latency_seconds seconds
uwsgi_latency_seconds_total 0.000007
# TYPE uwsgi_tx_bytes counter
# UNIT uwsgi_tx_bytes bytes
uwsgi_tx_bytes_total 99
# EOF
"##;

const NO_TYPE_TEXT: &str = r##"# HELP uwsgi_core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
uwsgi_core_busy_workers 2
# HELP uwsgi_requests_total Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns.
uwsgi_requests_total 30
# HELP uwsgi_socket_listen_queue Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels.
uwsgi_socket_listen_queue{socket="0"} 0
# HELP uwsgi_1_x uWSGI metric 1.x (custom, or not known to this exporter).
uwsgi_1_x 5
# HELP uwsgi_jobs_total uWSGI metric jobs (custom, or not known to this exporter).
uwsgi_jobs_total 0
# HELP uwsgi_latency_seconds_total uWSGI metric latency.us (custom, or not known to this exporter); value converted from microseconds to seconds.
uwsgi_latency_seconds_total 0.000007
# HELP uwsgi_tx_bytes_total Bytes (headers and body) all workers sent in responses.
uwsgi_tx_bytes_total 99
"##;

const NO_TYPE_OPENMETRICS: &str = r##"# HELP uwsgi_core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.
uwsgi_core_busy_workers 2
# HELP uwsgi_requests_total Requests served by all workers (uWSGI's worker 0 aggregate slot), kept across worker respawns.
uwsgi_requests_total 30
# HELP uwsgi_socket_listen_queue Connections waiting in the listen queue of the socket (label: its index in uWSGI's socket list), sampled by the master about once per second. Only TCP is measured: UNIX sockets read 0 on stock Linux kernels.
uwsgi_socket_listen_queue{socket="0"} 0
# HELP uwsgi_1_x uWSGI metric 1.x (custom, or not known to this exporter).
uwsgi_1_x 5
# HELP uwsgi_jobs_total uWSGI metric jobs (custom, or not known to this exporter).
uwsgi_jobs_total 0
# HELP uwsgi_latency_seconds_total uWSGI metric latency.us (custom, or not known to this exporter); value converted from microseconds to seconds.
uwsgi_latency_seconds_total 0.000007
# HELP uwsgi_tx_bytes_total Bytes (headers and body) all workers sent in responses.
uwsgi_tx_bytes_total 99
# EOF
"##;

#[test]
fn extras_follow_the_metrics_list() {
    use metrics_prometheus_engine::format::{Extra, Kind};
    let socket = |name: &str| Extra {
        family: "socket_queue",
        kind: Kind::Gauge,
        scale: 0,
        help: "Connections waiting in the socket's listen queue.",
        labels: vec![("name".into(), name.into())],
    };
    let extras = vec![
        socket("127.0.0.1:8080"),
        socket("/run/a \"b\"\\c\nd.sock"),
        Extra {
            family: "worker_harakiri",
            kind: Kind::Counter,
            scale: 0,
            help: "Requests killed by harakiri.",
            labels: vec![("worker".into(), "1".into())],
        },
        // Same family as a metric of the list, other type: the metric wins.
        Extra {
            family: "core_busy_workers",
            kind: Kind::Counter,
            scale: 0,
            help: "x",
            labels: vec![],
        },
        // Same series as the first extra.
        socket("127.0.0.1:8080"),
    ];
    let metrics = [("core.busy_workers", MetricType::Gauge)];
    let layout = Layout::with_extras(&metrics, &extras, &Options::default());
    let mut out = Vec::new();
    layout.render(&[3, 7, 0, 2, 9, 1], Format::Text, &mut out);
    assert_text(
        &String::from_utf8(out).expect("UTF-8"),
        concat!(
            "# HELP uwsgi_core_busy_workers Workers busy with a request or a signal handler, as last sampled by the master (can lag about 2 s); cheaped workers are not counted.\n",
            "# TYPE uwsgi_core_busy_workers gauge\n",
            "uwsgi_core_busy_workers 3\n",
            "# HELP uwsgi_socket_queue Connections waiting in the socket's listen queue.\n",
            "# TYPE uwsgi_socket_queue gauge\n",
            "uwsgi_socket_queue{name=\"127.0.0.1:8080\"} 7\n",
            "uwsgi_socket_queue{name=\"/run/a \\\"b\\\"\\\\c\\nd.sock\"} 0\n",
            "# HELP uwsgi_worker_harakiri_total Requests killed by harakiri.\n",
            "# TYPE uwsgi_worker_harakiri_total counter\n",
            "uwsgi_worker_harakiri_total{worker=\"1\"} 2\n",
        ),
    );
    let reasons: Vec<(usize, String)> = layout
        .skipped()
        .iter()
        .map(|s| (s.index, s.reason.to_string()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, 4);
    assert_eq!(reasons[1].0, 5);
    let no_workers = Options {
        workers: false,
        ..Options::default()
    };
    let layout = Layout::with_extras(&metrics, &extras[..3], &no_workers);
    assert_eq!(layout.series(), 3);
}

#[test]
fn no_cores_drops_only_per_core_series() {
    let list = [
        ("worker.1.requests", MetricType::Counter),
        ("worker.1.core.0.requests", MetricType::Counter),
        ("worker.1.core.1.requests", MetricType::Counter),
    ];
    let o = Options {
        cores: false,
        help: false,
        ..Options::default()
    };
    let layout = Layout::new(&list, &o);
    let mut out = Vec::new();
    layout.render(&[5, 2, 3], Format::Text, &mut out);
    assert_text(
        &String::from_utf8(out).expect("UTF-8"),
        "# TYPE uwsgi_worker_requests_total counter\nuwsgi_worker_requests_total{worker=\"1\"} 5\n",
    );
    assert_eq!(layout.skipped().len(), 2);
    assert_eq!(layout.skipped()[0].reason, SkipReason::CoresDisabled);
}

// ---------------------------------------------------------------------------
// Histograms computed by the host, with exemplars in OpenMetrics.
// ---------------------------------------------------------------------------

mod histograms {
    use super::assert_text;
    use metrics_prometheus_engine::format::{
        Exemplar, Format, Histogram, Layout, MetricType, Options, SkipReason,
    };

    fn labels(l: &[(&str, &str)]) -> Vec<(String, String)> {
        l.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    /// 5 ms, 1 s, 2.5 s, +Inf; three series, the second without observations.
    fn latency() -> Histogram {
        Histogram {
            family: "request_duration_seconds",
            help: "Time to serve a request, \"end to end\".",
            bounds_us: vec![5_000, 1_000_000, 2_500_000],
            series: vec![
                labels(&[("method", "GET"), ("code", "2xx")]),
                labels(&[("method", "POST"), ("code", "5xx")]),
                labels(&[("method", "GET"), ("code", "4xx")]),
            ],
            native: None,
        }
    }

    #[rustfmt::skip]
    const LATENCY_VALUES: [u64; 15] = [
        3, 2, 0, 1, 4_009_123, // GET 2xx: 6 requests, 4.009123 s
        0, 0, 0, 0, 0,         // POST 5xx: none
        1, 0, 0, 0, 250,       // GET 4xx: 1 request, 250 µs
    ];

    const TRACE: &[u8; 32] = b"4bf92f3577b34da6a3ce929d0e0e4736";

    fn latency_exemplars() -> Vec<Option<Exemplar>> {
        let mut e = vec![None; LATENCY_VALUES.len()];
        e[0] = Some(Exemplar {
            trace_id: *TRACE,
            value_us: 3_000,
            timestamp_us: 1_700_000_000_123_456,
        });
        e[3] = Some(Exemplar {
            trace_id: *b"00f067aa0ba902b700f067aa0ba902b7",
            value_us: 3_000_000,
            timestamp_us: 1_700_000_001_000_000,
        });
        // At a sum position: ignored.
        e[4] = e[0];
        e[10] = Some(Exemplar {
            trace_id: *TRACE,
            value_us: 250,
            timestamp_us: 1_700_000_002_000_001,
        });
        e
    }

    fn render(
        metrics: &[(&str, MetricType)],
        values: &[i64],
        hists: &[Histogram],
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        opts: &Options,
        fmt: Format,
    ) -> String {
        let layout = Layout::with_histograms(metrics, &[], hists, opts);
        let mut out = Vec::new();
        layout.render_all(values, hist, exemplars, fmt, &mut out);
        String::from_utf8(out).expect("UTF-8 output")
    }

    const QUEUE: [(&str, MetricType); 1] = [("myapp.queue", MetricType::Gauge)];

    fn latency_render(opts: &Options, fmt: Format, exemplars: bool) -> String {
        let e = if exemplars {
            latency_exemplars()
        } else {
            Vec::new()
        };
        render(&QUEUE, &[7], &[latency()], &LATENCY_VALUES, &e, opts, fmt)
    }

    const LATENCY_TEXT: &str = r#"# HELP uwsgi_myapp_queue uWSGI metric myapp.queue (custom, or not known to this exporter).
# TYPE uwsgi_myapp_queue gauge
uwsgi_myapp_queue 7
# HELP uwsgi_request_duration_seconds Time to serve a request, "end to end".
# TYPE uwsgi_request_duration_seconds histogram
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6
uwsgi_request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
uwsgi_request_duration_seconds_count{method="GET",code="2xx"} 6
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="0.005"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="1"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="2.5"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="+Inf"} 1
uwsgi_request_duration_seconds_sum{method="GET",code="4xx"} 0.00025
uwsgi_request_duration_seconds_count{method="GET",code="4xx"} 1
"#;

    const LATENCY_OM_EXEMPLARS: &str = r#"# HELP uwsgi_myapp_queue uWSGI metric myapp.queue (custom, or not known to this exporter).
# TYPE uwsgi_myapp_queue gauge
uwsgi_myapp_queue 7
# HELP uwsgi_request_duration_seconds Time to serve a request, \"end to end\".
# TYPE uwsgi_request_duration_seconds histogram
# UNIT uwsgi_request_duration_seconds seconds
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.003 1700000000.123456
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6 # {trace_id="00f067aa0ba902b700f067aa0ba902b7"} 3 1700000001
uwsgi_request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
uwsgi_request_duration_seconds_count{method="GET",code="2xx"} 6
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="0.005"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.00025 1700000002.000001
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="1"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="2.5"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="+Inf"} 1
uwsgi_request_duration_seconds_sum{method="GET",code="4xx"} 0.00025
uwsgi_request_duration_seconds_count{method="GET",code="4xx"} 1
# EOF
"#;

    const LATENCY_OM: &str = r#"# HELP uwsgi_myapp_queue uWSGI metric myapp.queue (custom, or not known to this exporter).
# TYPE uwsgi_myapp_queue gauge
uwsgi_myapp_queue 7
# HELP uwsgi_request_duration_seconds Time to serve a request, \"end to end\".
# TYPE uwsgi_request_duration_seconds histogram
# UNIT uwsgi_request_duration_seconds seconds
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6
uwsgi_request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
uwsgi_request_duration_seconds_count{method="GET",code="2xx"} 6
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="0.005"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="1"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="2.5"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="+Inf"} 1
uwsgi_request_duration_seconds_sum{method="GET",code="4xx"} 0.00025
uwsgi_request_duration_seconds_count{method="GET",code="4xx"} 1
# EOF
"#;

    #[test]
    fn text_has_no_exemplars() {
        let o = Options::default();
        assert_text(&latency_render(&o, Format::Text, true), LATENCY_TEXT);
        assert_text(&latency_render(&o, Format::Text, false), LATENCY_TEXT);
    }

    #[test]
    fn openmetrics_with_and_without_exemplars() {
        let o = Options::default();
        assert_text(
            &latency_render(&o, Format::OpenMetrics, true),
            LATENCY_OM_EXEMPLARS,
        );
        assert_text(&latency_render(&o, Format::OpenMetrics, false), LATENCY_OM);
    }

    #[test]
    fn counts_slots_and_families() {
        let l = Layout::with_histograms(&QUEUE, &[], &[latency()], &Options::default());
        assert_eq!(latency().slots_per_series(), 5);
        assert_eq!(l.histogram_slots(), 15);
        // 1 gauge + 3 series x (4 buckets + sum + count).
        assert_eq!(l.series(), 1 + 3 * 6);
        assert_eq!(l.families(), 2);
        assert!(l.skipped().is_empty());
        // `render` is `render_all` without histograms.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        l.render(&[7], Format::Text, &mut a);
        l.render_all(&[7], &[], &[], Format::Text, &mut b);
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a).expect("UTF-8"),
            "# HELP uwsgi_myapp_queue uWSGI metric myapp.queue (custom, or not known to this exporter).\n# TYPE uwsgi_myapp_queue gauge\nuwsgi_myapp_queue 7\n"
        );
    }

    #[test]
    fn prefix_and_no_help() {
        let o = Options {
            prefix: "app_".into(),
            help: false,
            ..Options::default()
        };
        assert_text(
            &render(
                &[],
                &[],
                &[latency()],
                &LATENCY_VALUES[..5],
                &latency_exemplars(),
                &o,
                Format::OpenMetrics,
            ),
            r#"# TYPE app_request_duration_seconds histogram
# UNIT app_request_duration_seconds seconds
app_request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.003 1700000000.123456
app_request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
app_request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
app_request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6 # {trace_id="00f067aa0ba902b700f067aa0ba902b7"} 3 1700000001
app_request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
app_request_duration_seconds_count{method="GET",code="2xx"} 6
# EOF
"#,
        );
        let o = Options {
            prefix: String::new(),
            ..o
        };
        assert_text(
            &render(
                &[],
                &[],
                &[latency()],
                &LATENCY_VALUES[..5],
                &[],
                &o,
                Format::Text,
            ),
            r#"# TYPE request_duration_seconds histogram
request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3
request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6
request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
request_duration_seconds_count{method="GET",code="2xx"} 6
"#,
        );
    }

    /// Without TYPE lines the parsers read `_bucket`, `_sum` and `_count` as three untyped
    /// families, which must each be contiguous: they come in three groups, each with its HELP,
    /// and without exemplars.
    #[test]
    fn no_type_groups_by_sample_name() {
        let o = Options {
            types: false,
            ..Options::default()
        };
        let want = r#"# HELP uwsgi_request_duration_seconds_bucket Time to serve a request, "end to end".
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="0.005"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="1"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="2.5"} 1
uwsgi_request_duration_seconds_bucket{method="GET",code="4xx",le="+Inf"} 1
# HELP uwsgi_request_duration_seconds_sum Time to serve a request, "end to end".
uwsgi_request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
uwsgi_request_duration_seconds_sum{method="GET",code="4xx"} 0.00025
# HELP uwsgi_request_duration_seconds_count Time to serve a request, "end to end".
uwsgi_request_duration_seconds_count{method="GET",code="2xx"} 6
uwsgi_request_duration_seconds_count{method="GET",code="4xx"} 1
"#;
        let e = latency_exemplars();
        assert_text(
            &render(
                &[],
                &[],
                &[latency()],
                &LATENCY_VALUES,
                &e,
                &o,
                Format::Text,
            ),
            want,
        );
        let om = render(
            &[],
            &[],
            &[latency()],
            &LATENCY_VALUES,
            &e,
            &o,
            Format::OpenMetrics,
        );
        // No exemplars: OpenMetrics allows them only on counters and histogram buckets, and
        // these are `unknown` families.
        let want_om = want.replace("\"end to end\"", "\\\"end to end\\\"") + "# EOF\n";
        assert_text(&om, &want_om);
        let o = Options { help: false, ..o };
        assert_text(
            &render(
                &[],
                &[],
                &[latency()],
                &LATENCY_VALUES[..5],
                &[],
                &o,
                Format::OpenMetrics,
            ),
            r#"uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="0.005"} 3
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="1"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="2.5"} 5
uwsgi_request_duration_seconds_bucket{method="GET",code="2xx",le="+Inf"} 6
uwsgi_request_duration_seconds_sum{method="GET",code="2xx"} 4.009123
uwsgi_request_duration_seconds_count{method="GET",code="2xx"} 6
# EOF
"#,
        );
    }

    #[test]
    fn empty_histograms_are_left_out() {
        let only_inf = Histogram {
            family: "batch_size",
            help: "Items per batch.",
            bounds_us: vec![],
            series: vec![vec![], labels(&[("queue", "a")])],
            native: None,
        };
        let hists = [latency(), only_inf];
        let l = Layout::with_histograms(&[], &[], &hists, &Options::default());
        assert_eq!(l.histogram_slots(), 15 + 2 * 2);
        let mut zero = [0u64; 19];
        let mut out = Vec::new();
        l.render_all(&[], &zero, &[], Format::OpenMetrics, &mut out);
        assert_eq!(out, b"# EOF\n");
        out.clear();
        l.render_all(&[], &zero, &[], Format::Text, &mut out);
        assert_eq!(out, b"");
        // Only the second series of the second histogram; an empty-bounds histogram has
        // only `+Inf`. The sum may be 0 with observations.
        zero[17] = 2;
        let o = Options {
            help: false,
            ..Options::default()
        };
        let got = render(&[], &[], &hists, &zero, &[], &o, Format::Text);
        assert_text(
            &got,
            r#"# TYPE uwsgi_batch_size histogram
uwsgi_batch_size_bucket{queue="a",le="+Inf"} 2
uwsgi_batch_size_sum{queue="a"} 0
uwsgi_batch_size_count{queue="a"} 2
"#,
        );
        // A series without labels.
        let got = render(
            &[],
            &[],
            &hists[1..],
            &[4, 2_000_000],
            &[],
            &o,
            Format::Text,
        );
        assert_text(
            &got,
            "# TYPE uwsgi_batch_size histogram\nuwsgi_batch_size_bucket{le=\"+Inf\"} 4\nuwsgi_batch_size_sum 2\nuwsgi_batch_size_count 4\n",
        );
    }

    #[test]
    fn name_clashes_skip_the_histogram() {
        let metrics = [
            // A counter owns `x`, `x_total` and `x_created` (a gauge would become
            // `..._counts`).
            ("request.duration.seconds.count", MetricType::Counter),
            ("myapp.queue", MetricType::Gauge),
        ];
        let other = Histogram {
            family: "batch_size",
            help: "Items per batch.",
            bounds_us: vec![1_000_000],
            series: vec![vec![]],
            native: None,
        };
        // The clashing one, a fine one, then the fine one again (clashes with itself).
        let hists = [latency(), other.clone(), other];
        let l = Layout::with_histograms(&metrics, &[], &hists, &Options::default());
        let skipped: Vec<_> = l
            .skipped()
            .iter()
            .map(|s| (s.index, s.name.as_str(), &s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    2,
                    "request_duration_seconds",
                    &SkipReason::NameClash {
                        name: "uwsgi_request_duration_seconds_count".into()
                    }
                ),
                (
                    4,
                    "batch_size",
                    &SkipReason::NameClash {
                        name: "uwsgi_batch_size".into()
                    }
                ),
            ]
        );
        // Slots of the skipped histograms still count: the host's indexing is fixed.
        assert_eq!(l.histogram_slots(), 15 + 3 + 3);
        let mut hist = LATENCY_VALUES.to_vec();
        hist.extend([1, 1, 1_500_000, 9, 9, 9]);
        let mut out = Vec::new();
        l.render_all(&[5, 7], &hist, &[], Format::Text, &mut out);
        assert_text(
            &String::from_utf8(out).expect("UTF-8"),
            r#"# HELP uwsgi_request_duration_seconds_count_total uWSGI metric request.duration.seconds.count (custom, or not known to this exporter).
# TYPE uwsgi_request_duration_seconds_count_total counter
uwsgi_request_duration_seconds_count_total 5
# HELP uwsgi_myapp_queue uWSGI metric myapp.queue (custom, or not known to this exporter).
# TYPE uwsgi_myapp_queue gauge
uwsgi_myapp_queue 7
# HELP uwsgi_batch_size Items per batch.
# TYPE uwsgi_batch_size histogram
uwsgi_batch_size_bucket{le="1"} 1
uwsgi_batch_size_bucket{le="+Inf"} 2
uwsgi_batch_size_sum 1.5
uwsgi_batch_size_count 2
"#,
        );
        // A counter owns `x_created`: a histogram named `x` clashes with it too.
        let l = Layout::with_histograms(
            &[("request.duration.seconds.created", MetricType::Counter)],
            &[],
            &[latency()],
            &Options::default(),
        );
        assert_eq!(
            l.skipped()[0].reason,
            SkipReason::NameClash {
                name: "uwsgi_request_duration_seconds_created".into()
            }
        );
    }

    #[test]
    fn counts_above_i64_max() {
        let h = Histogram {
            family: "big",
            help: "Big.",
            bounds_us: vec![1],
            series: vec![vec![], labels(&[("x", "sat")])],
            native: None,
        };
        let hist = [
            u64::MAX - 5,
            3,
            u64::MAX,
            // Saturates at u64::MAX rather than wrapping.
            u64::MAX,
            1,
            123,
        ];
        let ex = [
            Some(Exemplar {
                trace_id: *TRACE,
                value_us: 1,
                timestamp_us: -1_500_000,
            }),
            // Not lowercase hex: ignored.
            Some(Exemplar {
                trace_id: *b"4BF92F3577B34DA6A3CE929D0E0E4736",
                value_us: 2,
                timestamp_us: 0,
            }),
        ];
        let o = Options {
            help: false,
            ..Options::default()
        };
        assert_text(
            &render(&[], &[], &[h], &hist, &ex, &o, Format::OpenMetrics),
            r#"# TYPE uwsgi_big histogram
uwsgi_big_bucket{le="0.000001"} 18446744073709551610 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.000001 -1.5
uwsgi_big_bucket{le="+Inf"} 18446744073709551613
uwsgi_big_sum 18446744073709.551615
uwsgi_big_count 18446744073709551613
uwsgi_big_bucket{x="sat",le="0.000001"} 18446744073709551615
uwsgi_big_bucket{x="sat",le="+Inf"} 18446744073709551615
uwsgi_big_sum{x="sat"} 0.000123
uwsgi_big_count{x="sat"} 18446744073709551615
# EOF
"#,
        );
    }

    #[test]
    fn short_input_and_filters() {
        let h = Histogram {
            family: "request_duration_seconds",
            help: "Latency.",
            bounds_us: vec![100_000],
            series: vec![
                labels(&[("worker", "1")]),
                labels(&[("core", "0")]),
                labels(&[("app", "a\"b")]),
                labels(&[("app", "c")]),
            ],
            native: None,
        };
        let o = Options {
            help: false,
            workers: false,
            ..Options::default()
        };
        let l = Layout::with_histograms(&[], &[], std::slice::from_ref(&h), &o);
        assert_eq!(l.histogram_slots(), 12);
        assert_eq!(l.series(), 3 * 4);
        // The last series is cut short: left out. Exemplars shorter than `hist`: fine.
        let hist = [1, 1, 1, 2, 0, 50_000, 0, 1, 1_000_000, 5, 5];
        let ex = [
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some(Exemplar {
                trace_id: *TRACE,
                value_us: 1,
                timestamp_us: 1,
            }),
        ];
        let mut out = Vec::new();
        l.render_all(&[1, 2, 3], &hist, &ex, Format::Text, &mut out);
        assert_text(
            &String::from_utf8(out).expect("UTF-8"),
            r#"# TYPE uwsgi_request_duration_seconds histogram
uwsgi_request_duration_seconds_bucket{core="0",le="0.1"} 2
uwsgi_request_duration_seconds_bucket{core="0",le="+Inf"} 2
uwsgi_request_duration_seconds_sum{core="0"} 0.05
uwsgi_request_duration_seconds_count{core="0"} 2
uwsgi_request_duration_seconds_bucket{app="a\"b",le="0.1"} 0
uwsgi_request_duration_seconds_bucket{app="a\"b",le="+Inf"} 1
uwsgi_request_duration_seconds_sum{app="a\"b"} 1
uwsgi_request_duration_seconds_count{app="a\"b"} 1
"#,
        );
        let o = Options { cores: false, ..o };
        let l = Layout::with_histograms(&[], &[], &[h], &o);
        assert_eq!(l.series(), 2 * 4);
        for fmt in [Format::Text, Format::OpenMetrics] {
            for n in 0..14 {
                let mut out = Vec::new();
                l.render_all(
                    &[],
                    &hist[..n.min(hist.len())],
                    &ex[..n.min(ex.len())],
                    fmt,
                    &mut out,
                );
            }
        }
    }
}
