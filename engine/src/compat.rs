//! `--prometheus-compat uwsgi_exporter`: the families of timonwong/uwsgi_exporter 1.3 under its
//! names, types and label names, from the same sources as the native families, so that
//! dashboards and alerts written for that exporter keep working.
//!
//! [`plan`] starts from the native [`plan::plan`], drops every native series whose datum the
//! exporter also has, and adds the exporter's families in its place. The plugin's own additions
//! (custom metrics, aggregates, spoolers, mules, process figures, histograms...) stay under
//! their native names beside them, so no datum is exported twice. `uwsgi_up` is the native one
//! (same name, type and labels). Every other compat series carries `stats_uri`.
//!
//! Two deliberate departures, documented in `docs/compat.md`:
//! - `uwsgi_cache_{hits,misses,full}` are gauges, not counters: a counter must end in `_total`
//!   in OpenMetrics (which Prometheus negotiates first) and promtool flags it in the text
//!   format, while the name is what queries use; `rate()` does not look at the type.
//! - the worker status gauges cover busy, idle and cheap as the exporter does; a paused or
//!   signal-handling worker shows 0 in all three.

use crate::catalogue::{self as cat, def, FamilyDef};
use crate::format::Kind::{Counter, Gauge};
use crate::plan::{
    self, labels, AppField, CoreField, Plan, SharedField, Source, Topology, WorkerField,
    WorkerStatus,
};

/// What the compat plan needs besides the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatOptions {
    /// Value of the `stats_uri` label.
    pub stats_uri: String,
    /// Per-worker families (`--prometheus-no-workers` turns them off).
    pub workers: bool,
    /// Per-core families (`--prometheus-no-cores` turns them off).
    pub cores: bool,
}

pub const LISTEN_QUEUE_LENGTH: FamilyDef = def("listen_queue_length", Gauge, 0, "Largest listen queue over uWSGI's sockets, sampled by the master about once a second (stats server: listen_queue).");
pub const LISTEN_QUEUE_ERRORS: FamilyDef = def("listen_queue_errors", Gauge, 0, "uWSGI's listen queue error count (stats server: listen_queue_errors; uWSGI 2.0 never increments it on Linux).");
pub const SIGNAL_QUEUE_LENGTH: FamilyDef = def("signal_queue_length", Gauge, 0, "Bytes of uWSGI signals waiting in the workers' shared signal queue (stats server: signal_queue).");
pub const WORKERS: FamilyDef = def(
    "workers",
    Gauge,
    0,
    "Worker processes configured, cheaped ones included.",
);

pub const SOCKET_QUEUE_LENGTH: FamilyDef = def(
    "socket_queue_length",
    Gauge,
    0,
    cat::SOCKET_LISTEN_QUEUE.help,
);
pub const SOCKET_MAX_QUEUE_LENGTH: FamilyDef = def(
    "socket_max_queue_length",
    Gauge,
    0,
    cat::SOCKET_LISTEN_QUEUE_MAX.help,
);
pub const SOCKET_SHARED: FamilyDef = def(
    "socket_shared",
    Gauge,
    0,
    "1 for a shared socket (--shared-socket).",
);
pub const SOCKET_CAN_OFFLOAD: FamilyDef = def(
    "socket_can_offload",
    Gauge,
    0,
    "1 when the socket's protocol can hand responses to the offload threads.",
);

pub const WORKER_ACCEPTING: FamilyDef =
    def("worker_accepting", Gauge, 0, cat::WORKER_ACCEPTING.help);
pub const WORKER_DELTA_REQUESTS: FamilyDef = def(
    "worker_delta_requests",
    Gauge,
    0,
    "Requests served by the worker since it was last spawned.",
);
pub const WORKER_SIGNAL_QUEUE_LENGTH: FamilyDef = def(
    "worker_signal_queue_length",
    Gauge,
    0,
    "Bytes of uWSGI signals waiting in the worker's own signal queue.",
);
pub const WORKER_RSS: FamilyDef = def("worker_rss_bytes", Gauge, 0, "Resident set size of the worker, measured after each request only with --memory-report (or similar); 0 otherwise.");
pub const WORKER_VSZ: FamilyDef = def("worker_vsz_bytes", Gauge, 0, "Virtual memory size of the worker, measured after each request only with --memory-report (or similar); 0 otherwise.");
pub const WORKER_RUNNING_TIME: FamilyDef = def(
    "worker_running_time_seconds",
    Gauge,
    6,
    "Time the worker spent serving requests, in seconds.",
);
pub const WORKER_LAST_SPAWN_TIME: FamilyDef = def(
    "worker_last_spawn_time_seconds",
    Gauge,
    6,
    cat::WORKER_LAST_SPAWN.help,
);
pub const WORKER_AVERAGE_RESPONSE_TIME: FamilyDef = def("worker_average_response_time_seconds", Gauge, 6, "uWSGI's running response-time figure for the worker (after each request (previous + last) / 2; not a mean), in seconds.");
pub const WORKER_APPS: FamilyDef = def(
    "worker_apps",
    Gauge,
    0,
    "Applications loaded in the worker.",
);
pub const WORKER_CORES: FamilyDef = def(
    "worker_cores",
    Gauge,
    0,
    "Cores (threads or async slots) of the worker.",
);
pub const WORKER_BUSY: FamilyDef = def(
    "worker_busy",
    Gauge,
    0,
    "1 while the worker is busy (stats server status busy).",
);
pub const WORKER_IDLE: FamilyDef = def(
    "worker_idle",
    Gauge,
    0,
    "1 while the worker is idle (stats server status idle).",
);
pub const WORKER_CHEAP: FamilyDef = def(
    "worker_cheap",
    Gauge,
    0,
    "1 while the worker is cheaped (stats server status cheap).",
);
pub const WORKER_REQUESTS: FamilyDef = def(
    "worker_requests",
    Counter,
    0,
    "Requests served by the worker, kept across respawns.",
);
pub const WORKER_EXCEPTIONS: FamilyDef =
    def("worker_exceptions", Counter, 0, cat::WORKER_EXCEPTIONS.help);
pub const WORKER_HARAKIRI_COUNT: FamilyDef = def(
    "worker_harakiri_count",
    Counter,
    0,
    cat::WORKER_HARAKIRI.help,
);
pub const WORKER_SIGNALS: FamilyDef = def("worker_signals", Counter, 0, cat::WORKER_SIGNALS.help);
pub const WORKER_RESPAWN_COUNT: FamilyDef = def(
    "worker_respawn_count",
    Counter,
    0,
    "Times the worker has been spawned, the first spawn included.",
);
pub const WORKER_TRANSMITTED_BYTES: FamilyDef = def(
    "worker_transmitted_bytes",
    Counter,
    0,
    "Bytes (headers and body) the worker sent in responses.",
);

pub const WORKER_APP_STARTUP_TIME: FamilyDef = def(
    "worker_app_startup_time_seconds",
    Gauge,
    0,
    "Seconds the application took to load (whole seconds).",
);
pub const WORKER_APP_REQUESTS: FamilyDef = def(
    "worker_app_requests",
    Counter,
    0,
    cat::WORKER_APP_REQUESTS.help,
);
pub const WORKER_APP_EXCEPTIONS: FamilyDef = def(
    "worker_app_exceptions",
    Counter,
    0,
    cat::WORKER_APP_EXCEPTIONS.help,
);

pub const WORKER_CORE_BUSY: FamilyDef = def(
    "worker_core_busy",
    Gauge,
    0,
    "1 while the core of the worker is handling a request.",
);
pub const WORKER_CORE_REQUESTS: FamilyDef = def(
    "worker_core_requests",
    Counter,
    0,
    "Requests served by this core of the worker.",
);
pub const WORKER_CORE_STATIC_REQUESTS: FamilyDef = def(
    "worker_core_static_requests",
    Counter,
    0,
    "Requests on this core of the worker served as static files.",
);
pub const WORKER_CORE_ROUTED_REQUESTS: FamilyDef = def(
    "worker_core_routed_requests",
    Counter,
    0,
    "Requests on this core of the worker completed by an internal routing rule.",
);
pub const WORKER_CORE_OFFLOADED_REQUESTS: FamilyDef = def(
    "worker_core_offloaded_requests",
    Counter,
    0,
    "Requests on this core of the worker handed to the offload threads.",
);
pub const WORKER_CORE_WRITE_ERRORS: FamilyDef = def(
    "worker_core_write_errors",
    Counter,
    0,
    "Errors writing responses to clients on this core of the worker.",
);
pub const WORKER_CORE_READ_ERRORS: FamilyDef = def(
    "worker_core_read_errors",
    Counter,
    0,
    "Errors reading requests from clients on this core of the worker.",
);

// Counters in uwsgi_exporter, named without `_total`: gauges here (see the module docs).
pub const CACHE_HITS: FamilyDef = def(
    "cache_hits",
    Gauge,
    0,
    "Lookups that found their key in the cache, since startup (a counter in value).",
);
pub const CACHE_MISSES: FamilyDef = def(
    "cache_misses",
    Gauge,
    0,
    "Lookups that did not find their key in the cache, since startup (a counter in value).",
);
pub const CACHE_FULL: FamilyDef = def(
    "cache_full",
    Gauge,
    0,
    "Writes refused because the cache was full, since startup (a counter in value).",
);
pub const CACHE_ITEMS: FamilyDef = def("cache_items", Gauge, 0, "Items in the cache.");
pub const CACHE_MAX_ITEMS: FamilyDef = def(
    "cache_max_items",
    Gauge,
    0,
    "Capacity of the cache, in items.",
);

/// Every compat family with its label names (`stats_uri` first), in output order; `up` is the
/// native family.
pub const FAMILIES: &[(&FamilyDef, &[&str])] = &[
    (&LISTEN_QUEUE_LENGTH, MAIN),
    (&LISTEN_QUEUE_ERRORS, MAIN),
    (&SIGNAL_QUEUE_LENGTH, MAIN),
    (&WORKERS, MAIN),
    (&SOCKET_QUEUE_LENGTH, SOCKET),
    (&SOCKET_MAX_QUEUE_LENGTH, SOCKET),
    (&SOCKET_SHARED, SOCKET),
    (&SOCKET_CAN_OFFLOAD, SOCKET),
    (&WORKER_ACCEPTING, WORKER),
    (&WORKER_DELTA_REQUESTS, WORKER),
    (&WORKER_SIGNAL_QUEUE_LENGTH, WORKER),
    (&WORKER_RSS, WORKER),
    (&WORKER_VSZ, WORKER),
    (&WORKER_RUNNING_TIME, WORKER),
    (&WORKER_LAST_SPAWN_TIME, WORKER),
    (&WORKER_AVERAGE_RESPONSE_TIME, WORKER),
    (&WORKER_BUSY, WORKER),
    (&WORKER_IDLE, WORKER),
    (&WORKER_CHEAP, WORKER),
    (&WORKER_REQUESTS, WORKER),
    (&WORKER_EXCEPTIONS, WORKER),
    (&WORKER_HARAKIRI_COUNT, WORKER),
    (&WORKER_SIGNALS, WORKER),
    (&WORKER_RESPAWN_COUNT, WORKER),
    (&WORKER_TRANSMITTED_BYTES, WORKER),
    (&WORKER_APPS, WORKER),
    (&WORKER_APP_STARTUP_TIME, APP),
    (&WORKER_APP_REQUESTS, APP),
    (&WORKER_APP_EXCEPTIONS, APP),
    (&WORKER_CORES, WORKER),
    (&WORKER_CORE_BUSY, CORE),
    (&WORKER_CORE_REQUESTS, CORE),
    (&WORKER_CORE_STATIC_REQUESTS, CORE),
    (&WORKER_CORE_ROUTED_REQUESTS, CORE),
    (&WORKER_CORE_OFFLOADED_REQUESTS, CORE),
    (&WORKER_CORE_WRITE_ERRORS, CORE),
    (&WORKER_CORE_READ_ERRORS, CORE),
    (&CACHE_HITS, CACHE),
    (&CACHE_MISSES, CACHE),
    (&CACHE_FULL, CACHE),
    (&CACHE_ITEMS, CACHE),
    (&CACHE_MAX_ITEMS, CACHE),
];

const MAIN: &[&str] = &["stats_uri"];
const SOCKET: &[&str] = &["stats_uri", "name", "proto"];
const WORKER: &[&str] = &["stats_uri", "worker_id"];
const APP: &[&str] = &["stats_uri", "worker_id", "app_id", "mountpoint", "chdir"];
const CORE: &[&str] = &["stats_uri", "worker_id", "core_id"];
const CACHE: &[&str] = &["stats_uri", "name"];

/// Native host-computed families whose data the compat families carry.
const REPLACED: &[&FamilyDef] = &[
    &cat::WORKERS,
    &cat::LISTEN_QUEUE,
    &cat::SIGNAL_QUEUE,
    &cat::CACHE_ITEMS,
    &cat::CACHE_MAX_ITEMS,
    &cat::CACHE_HITS,
    &cat::CACHE_MISSES,
    &cat::CACHE_FULL,
    &cat::SOCKET_LISTEN_QUEUE,
    &cat::SOCKET_LISTEN_QUEUE_MAX,
    &cat::WORKER_STATUS,
    &cat::WORKER_ACCEPTING,
    &cat::WORKER_HARAKIRI,
    &cat::WORKER_EXCEPTIONS,
    &cat::WORKER_SIGNALS,
    &cat::WORKER_LAST_SPAWN,
    &cat::WORKER_CORE_IN_REQUEST,
    &cat::WORKER_APP_REQUESTS,
    &cat::WORKER_APP_EXCEPTIONS,
];

/// A series of uWSGI's metrics list that a compat family carries: every per-worker value
/// (worker 0, uWSGI's aggregate, has no compat family) and every per-core one but exceptions.
fn replaced_metric(src: &Source) -> bool {
    match *src {
        Source::Worker(w, _) => w > 0,
        Source::Core(_, _, f) => f != CoreField::Exceptions,
        _ => false,
    }
}

fn bool_value(b: bool) -> Source {
    Source::Const(i64::from(b))
}

fn count(n: usize) -> Source {
    Source::Const(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The compat families under construction: each series gets the `stats_uri` label first.
struct Compat<'a> {
    p: Plan,
    uri: &'a str,
}

impl Compat<'_> {
    fn add(&mut self, def: &FamilyDef, more: &[(&str, &str)], src: Source) {
        let mut l = labels([("stats_uri", self.uri)]);
        l.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.p.extras.push(def.series(l));
        self.p.sources.push(src);
    }
}

/// The plan in uwsgi_exporter compat mode (see the module docs).
pub fn plan(t: &Topology, o: &CompatOptions) -> Plan {
    let mut c = Compat {
        p: native_kept(plan::plan(t)),
        uri: o.stats_uri.as_str(),
    };
    c.add(
        &LISTEN_QUEUE_LENGTH,
        &[],
        Source::Shared(SharedField::Backlog),
    );
    c.add(
        &LISTEN_QUEUE_ERRORS,
        &[],
        Source::Shared(SharedField::BacklogErrors),
    );
    c.add(&SIGNAL_QUEUE_LENGTH, &[], Source::SignalQueue);
    c.add(&WORKERS, &[], count(t.workers));
    for (k, s) in t.unique_sockets() {
        let metric = t
            .metrics
            .iter()
            .position(|(m, _)| plan::socket_metric(m) == Some(k));
        let l = [("name", s.name.as_str()), ("proto", s.proto.as_str())];
        c.add(
            &SOCKET_QUEUE_LENGTH,
            &l,
            Source::SocketQueue { socket: k, metric },
        );
        c.add(&SOCKET_MAX_QUEUE_LENGTH, &l, Source::SocketQueueMax(k));
        c.add(&SOCKET_SHARED, &l, bool_value(s.shared));
        c.add(&SOCKET_CAN_OFFLOAD, &l, bool_value(s.can_offload));
    }
    if o.workers {
        for w in 1..=t.workers {
            add_worker(&mut c, t, w, o.cores);
        }
    }
    for (ci, name) in t.caches.iter().enumerate() {
        use plan::CacheField as F;
        for (def, f) in [
            (&CACHE_HITS, F::Hits),
            (&CACHE_MISSES, F::Misses),
            (&CACHE_FULL, F::Full),
            (&CACHE_ITEMS, F::Items),
            (&CACHE_MAX_ITEMS, F::MaxItems),
        ] {
            c.add(def, &[("name", name.as_str())], Source::Cache(ci, f));
        }
    }
    c.p
}

/// The native plan without what the compat families replace.
fn native_kept(native: Plan) -> Plan {
    let n = native.names.len();
    let mut p = Plan {
        histograms: native.histograms,
        ..Plan::default()
    };
    for (name, src) in native.names.into_iter().zip(&native.sources[..n]) {
        if !replaced_metric(src) {
            p.names.push(name);
            p.sources.push(*src);
        }
    }
    for (e, src) in native.extras.into_iter().zip(&native.sources[n..]) {
        if !REPLACED.iter().any(|d| d.name == e.family) {
            p.extras.push(e);
            p.sources.push(*src);
        }
    }
    p
}

/// Worker `w`'s families, its apps' and (with `cores`) its cores'.
fn add_worker(c: &mut Compat, t: &Topology, w: usize, cores: bool) {
    let ws = w.to_string();
    let l = [("worker_id", ws.as_str())];
    for (def, f) in [
        (&WORKER_ACCEPTING, WorkerField::Accepting),
        (&WORKER_DELTA_REQUESTS, WorkerField::DeltaRequests),
        (&WORKER_SIGNAL_QUEUE_LENGTH, WorkerField::SignalQueue),
        (&WORKER_RSS, WorkerField::Rss),
        (&WORKER_VSZ, WorkerField::Vsz),
        (&WORKER_RUNNING_TIME, WorkerField::RunningTime),
        (&WORKER_LAST_SPAWN_TIME, WorkerField::LastSpawnUs),
        (&WORKER_AVERAGE_RESPONSE_TIME, WorkerField::AvgResponseTime),
    ] {
        c.add(def, &l, Source::Worker(w, f));
    }
    for (def, st) in [
        (&WORKER_BUSY, WorkerStatus::Busy),
        (&WORKER_IDLE, WorkerStatus::Idle),
        (&WORKER_CHEAP, WorkerStatus::Cheap),
    ] {
        c.add(def, &l, Source::Status(w, st));
    }
    for (def, f) in [
        (&WORKER_REQUESTS, WorkerField::Requests),
        (&WORKER_EXCEPTIONS, WorkerField::Exceptions),
        (&WORKER_HARAKIRI_COUNT, WorkerField::Harakiri),
        (&WORKER_SIGNALS, WorkerField::Signals),
        (&WORKER_RESPAWN_COUNT, WorkerField::Respawns),
        (&WORKER_TRANSMITTED_BYTES, WorkerField::Tx),
        (&WORKER_APPS, WorkerField::Apps),
    ] {
        c.add(def, &l, Source::Worker(w, f));
    }
    // Apps loaded before fork, as the native families (lazy-apps: none listed).
    for (a, mount) in t.apps.iter().enumerate() {
        let id = a.to_string();
        let chdir = t.app_chdirs.get(a).map_or("", String::as_str);
        let l = [
            ("worker_id", ws.as_str()),
            ("app_id", id.as_str()),
            ("mountpoint", mount.as_str()),
            ("chdir", chdir),
        ];
        for (def, f) in [
            (&WORKER_APP_STARTUP_TIME, AppField::StartupTime),
            (&WORKER_APP_REQUESTS, AppField::Requests),
            (&WORKER_APP_EXCEPTIONS, AppField::Exceptions),
        ] {
            c.add(def, &l, Source::App(w, a, f));
        }
    }
    c.add(&WORKER_CORES, &l, count(t.cores));
    if !cores {
        return;
    }
    for core in 0..t.cores {
        let cs = core.to_string();
        let l = [("worker_id", ws.as_str()), ("core_id", cs.as_str())];
        for (def, f) in [
            (&WORKER_CORE_BUSY, CoreField::InRequest),
            (&WORKER_CORE_REQUESTS, CoreField::Requests),
            (&WORKER_CORE_STATIC_REQUESTS, CoreField::StaticRequests),
            (&WORKER_CORE_ROUTED_REQUESTS, CoreField::RoutedRequests),
            (
                &WORKER_CORE_OFFLOADED_REQUESTS,
                CoreField::OffloadedRequests,
            ),
            (&WORKER_CORE_WRITE_ERRORS, CoreField::WriteErrors),
            (&WORKER_CORE_READ_ERRORS, CoreField::ReadErrors),
        ] {
            c.add(def, &l, Source::Core(w, core, f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, Layout, MetricType, Options};
    use crate::plan::tests::topo;

    fn opts() -> CompatOptions {
        CompatOptions {
            stats_uri: "127.0.0.1:1717".into(),
            workers: true,
            cores: true,
        }
    }

    fn render(p: &Plan) -> String {
        let names: Vec<(&str, MetricType)> =
            p.names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let layout = Layout::with_histograms(&names, &p.extras, &[], &Options::default());
        assert!(
            layout
                .skipped()
                .iter()
                .all(|s| !matches!(s.reason, crate::format::SkipReason::NameClash { .. })),
            "{:?}",
            layout.skipped()
        );
        let values = vec![0; p.sources.len()];
        let mut out = Vec::new();
        layout.render(&values, Format::Text, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn every_family_with_its_labels() {
        let p = plan(&topo(), &opts());
        assert_eq!(p.sources.len(), p.names.len() + p.extras.len());
        for (def, names) in FAMILIES {
            let series: Vec<_> = p.extras.iter().filter(|e| e.family == def.name).collect();
            assert!(!series.is_empty(), "{} missing", def.name);
            for e in series {
                let got: Vec<&str> = e.labels.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(&got, names, "{}", def.name);
                assert_eq!(e.labels[0].1, "127.0.0.1:1717");
            }
        }
        let text = render(&p);
        for sample in [
            "uwsgi_up 0\n",
            "uwsgi_workers{stats_uri=\"127.0.0.1:1717\"} 0\n",
            "uwsgi_worker_requests_total{stats_uri=\"127.0.0.1:1717\",worker_id=\"2\"} 0\n",
            "uwsgi_worker_harakiri_count_total{stats_uri=\"127.0.0.1:1717\",worker_id=\"1\"} 0\n",
            "uwsgi_socket_can_offload{stats_uri=\"127.0.0.1:1717\",name=\"127.0.0.1:8080\",proto=\"http\"} 0\n",
            "uwsgi_worker_app_requests_total{stats_uri=\"127.0.0.1:1717\",worker_id=\"1\",app_id=\"0\",mountpoint=\"\",chdir=\"/srv/app\"} 0\n",
            "uwsgi_worker_core_busy{stats_uri=\"127.0.0.1:1717\",worker_id=\"1\",core_id=\"0\"} 0\n",
            "# TYPE uwsgi_cache_hits gauge\n",
            "uwsgi_cache_hits{stats_uri=\"127.0.0.1:1717\",name=\"default\"} 0\n",
            // Extras keep their native names.
            "uwsgi_myapp_hits_total 0\n",
            "uwsgi_requests_total 0\n",
            "uwsgi_worker_oldest_request_seconds{worker=\"1\"} 0\n",
        ] {
            assert!(text.contains(sample), "{sample}");
        }
        for gone in [
            "uwsgi_worker_status",
            "uwsgi_socket_listen_queue",
            "uwsgi_cache_hits_total",
            "uwsgi_worker_core_requests_total{worker=",
            "uwsgi_worker_tx_bytes",
            "uwsgi_worker_respawns",
            "uwsgi_listen_queue ",
        ] {
            assert!(!text.contains(gone), "{gone}");
        }
    }

    #[test]
    fn sources_match_the_native_ones() {
        let p = plan(&topo(), &opts());
        let src = |family: &str| {
            p.extras
                .iter()
                .zip(&p.sources[p.names.len()..])
                .filter(|(e, _)| e.family == family)
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            src("socket_queue_length"),
            [
                Source::SocketQueue {
                    socket: 0,
                    metric: Some(3)
                },
                Source::SocketQueue {
                    socket: 2,
                    metric: None
                }
            ]
        );
        assert_eq!(
            src("socket_can_offload"),
            [Source::Const(1), Source::Const(0)]
        );
        assert_eq!(
            src("worker_requests"),
            [
                Source::Worker(1, WorkerField::Requests),
                Source::Worker(2, WorkerField::Requests)
            ]
        );
        assert_eq!(src("worker_cores"), [Source::Const(1), Source::Const(1)]);
        assert_eq!(src("workers"), [Source::Const(2)]);
    }

    #[test]
    fn workers_and_cores_can_be_left_out() {
        let p = plan(
            &topo(),
            &CompatOptions {
                cores: false,
                ..opts()
            },
        );
        assert!(p
            .extras
            .iter()
            .all(|e| !e.family.starts_with("worker_core_")));
        assert!(p.extras.iter().any(|e| e.family == "worker_requests"));
        let p = plan(
            &topo(),
            &CompatOptions {
                workers: false,
                ..opts()
            },
        );
        assert!(p
            .extras
            .iter()
            .all(|e| !e.labels.iter().any(|(k, _)| k == "worker_id")));
    }

    #[test]
    fn constant_labels_cannot_take_a_label_the_plugin_uses() {
        let native = plan::plan(&topo());
        let compat = plan(&topo(), &opts());
        let used = native
            .extras
            .iter()
            .chain(&compat.extras)
            .flat_map(|e| &e.labels)
            .chain(
                native
                    .histograms
                    .iter()
                    .flat_map(|h| h.series.iter().flatten()),
            )
            .map(|(k, _)| k.as_str());
        for k in used {
            assert!(
                crate::format::RESERVED_LABELS.contains(&k),
                "{k} not reserved"
            );
            assert!(crate::format::validate_label(k, "v").is_err(), "{k}");
        }
    }
}
