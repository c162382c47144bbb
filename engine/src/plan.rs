//! From a plain description of a uWSGI instance to what a scrape renders.
//!
//! The host reads uWSGI's memory once, before fork, into a [`Topology`] (strings and counts, no
//! pointers). [`plan`] turns it into the metric names for the engine, the host-computed series
//! ([`Extra`], from the [`catalogue`]) and, for every series, the [`Source`] of its value. At
//! scrape time the host only evaluates the sources. Everything here is pure and tested without
//! uWSGI.

use crate::catalogue::{self as cat, FamilyDef};
use crate::exits::ExitReason;
use crate::format::{native_bucket_index, Extra, Histogram, MetricType, NativeSpec};

/// A listening socket of uWSGI, in the order of `uwsgi.sockets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketDesc {
    pub name: String,
    /// `proto_name`, `uwsgi` when unset.
    pub proto: String,
    /// The socket is shared (`--shared-socket`), as the stats server's `shared`.
    pub shared: bool,
    /// The socket's protocol can offload responses, as the stats server's `can_offload`.
    pub can_offload: bool,
}

impl SocketDesc {
    /// UNIX sockets (a path or an abstract `@name`) have no TCP_INFO queue figures.
    pub fn is_unix(&self) -> bool {
        self.name.contains('/') || self.name.starts_with('@')
    }
}

/// What the host read of uWSGI at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// uWSGI's metrics list, in list order.
    pub metrics: Vec<(String, MetricType)>,
    /// `uwsgi.numproc`.
    pub workers: usize,
    /// `uwsgi.cores` (threads or async cores per worker).
    pub cores: usize,
    /// `uwsgi.start_tv` in microseconds since the epoch.
    pub start_us: i64,
    pub uwsgi_version: String,
    pub plugin_version: String,
    /// The git commit the plugin was built from (`unknown` when not known).
    pub plugin_commit: String,
    /// Cache names (`default` for the unnamed one), in `uwsgi.caches` order.
    pub caches: Vec<String>,
    /// Spooler directories, in `uwsgi.spoolers` order.
    pub spoolers: Vec<String>,
    /// `uwsgi.mules_cnt`.
    pub mules: usize,
    pub sockets: Vec<SocketDesc>,
    /// Mountpoints of the apps loaded before fork, by app id.
    pub apps: Vec<String>,
    /// Their `chdir` (empty when unset), parallel to `apps`.
    pub app_chdirs: Vec<String>,
    /// uWSGI's `--stats` address, as given, when set.
    pub stats: Option<String>,
    /// Request-duration bucket bounds in µs; `None` without histograms.
    pub buckets_us: Option<Vec<u64>>,
    /// Schema of the native request histogram (served in protobuf).
    pub native_schema: Option<i8>,
    /// The queue-time histogram is recorded (`--prometheus-queue-time`; with `buckets_us` only).
    pub queue_time: bool,
    /// Capacity of the application metrics' table (`--prometheus-app-metrics`), if on.
    pub app_series: Option<usize>,
    /// The request histograms have a `route` label (`--prometheus-route-label`; with
    /// `buckets_us` only).
    pub routes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerField {
    Requests,
    DeltaRequests,
    Respawns,
    AvgResponseTime,
    Tx,
    Rss,
    Vsz,
    RunningTime,
    Accepting,
    Harakiri,
    Exceptions,
    Signals,
    LastSpawnUs,
    /// Bytes waiting in the worker's own signal pipe (FIONREAD), as the stats server's
    /// per-worker `signal_queue`.
    SignalQueue,
    /// Applications loaded in the worker (`apps_cnt`).
    Apps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreField {
    Requests,
    WriteErrors,
    RoutedRequests,
    StaticRequests,
    OffloadedRequests,
    Exceptions,
    ReadErrors,
    InRequest,
}

/// A worker's state as uWSGI's stats server names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WorkerStatus {
    Busy,
    #[default]
    Idle,
    Cheap,
    Pause,
    Sig,
}

impl WorkerStatus {
    pub const ALL: [WorkerStatus; 5] = [
        WorkerStatus::Busy,
        WorkerStatus::Idle,
        WorkerStatus::Cheap,
        WorkerStatus::Pause,
        WorkerStatus::Sig,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Busy => "busy",
            WorkerStatus::Idle => "idle",
            WorkerStatus::Cheap => "cheap",
            WorkerStatus::Pause => "pause",
            WorkerStatus::Sig => "sig",
        }
    }

    /// Decides the state from the worker's flags, in the stats server's order.
    pub fn decide(cheaped: bool, suspended: bool, sig: bool, busy: bool) -> WorkerStatus {
        if cheaped {
            WorkerStatus::Cheap
        } else if suspended && !busy {
            WorkerStatus::Pause
        } else if sig {
            WorkerStatus::Sig
        } else if busy {
            WorkerStatus::Busy
        } else {
            WorkerStatus::Idle
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppField {
    Requests,
    Exceptions,
    /// Seconds the application took to load.
    StartupTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheField {
    Items,
    MaxItems,
    Hits,
    Misses,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoolerField {
    Tasks,
    Respawns,
    Running,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuleField {
    Running,
    Signals,
    InSignal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedField {
    Backlog,
    Load,
    /// `backlog_errors`: never incremented by uWSGI 2.0 on Linux (the stats server's
    /// `listen_queue_errors`).
    BacklogErrors,
}

/// A process whose /proc entry is read: the master, or worker N (by its current pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    Master,
    Worker(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcField {
    CpuUs,
    RssBytes,
    OpenFds,
}

/// Where a series' value comes from. Indexes refer to the [`Topology`] the plan was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `Topology::metrics[i]`, read from uWSGI's metrics list under its lock.
    Metric(usize),
    Worker(usize, WorkerField),
    Core(usize, usize, CoreField),
    Status(usize, WorkerStatus),
    App(usize, usize, AppField),
    /// `Topology::sockets[i]`; `metric` is its `socket.K.listen_queue`, the fallback where
    /// TCP_INFO is not available.
    SocketQueue {
        socket: usize,
        metric: Option<usize>,
    },
    SocketQueueMax(usize),
    Shared(SharedField),
    SignalQueue,
    Cache(usize, CacheField),
    Spooler(usize, SpoolerField),
    Mule(usize, MuleField),
    Proc(Proc, ProcField),
    Const(i64),
    /// Age in µs of the worker's longest-running request (0 when idle).
    OldestRequest(usize),
    /// Scrapes that found uWSGI's metrics lock held by a writer and served the last values.
    StaleReads,
    /// Application series registered in the shared table.
    AppSeries,
    /// Application series the table refused (full, or a key too long).
    AppDropped,
    /// Worker deaths the master saw, for one reason.
    WorkerExits(ExitReason),
    /// Requests whose queue-time header was later than their start.
    QueueSkew,
    /// Requests whose new route was counted as `other` (the route table was full).
    RouteOverflow,
}

/// What the exporter renders: metric names for the engine, the extra series, and where each
/// value comes from (same order: metrics first, then extras).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub names: Vec<(String, MetricType)>,
    pub extras: Vec<Extra>,
    pub sources: Vec<Source>,
    /// The request-duration histogram, series in [`series_index`] order, then (with
    /// [`Topology::queue_time`]) the queue-time histogram, one series.
    pub histograms: Vec<Histogram>,
}

impl Plan {
    fn add(&mut self, def: &FamilyDef, labels: Vec<(String, String)>, src: Source) {
        self.extras.push(def.series(labels));
        self.sources.push(src);
    }
}

pub(crate) fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Maps a metric of uWSGI's list to a live source, when the worker table has the same value
/// (read there, it does not lag by the collector's second).
pub fn live_source_for(name: &str, workers: usize, cores: usize) -> Option<Source> {
    let mut parts = name.split('.');
    let (a, b, c, d, e, rest) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    if a != Some("worker") || rest.is_some() {
        return None;
    }
    let w: usize = b?.parse().ok()?;
    if w > workers {
        return None;
    }
    match (c?, d, e) {
        (field, None, None) => {
            let f = match field {
                "requests" => WorkerField::Requests,
                "delta_requests" if w > 0 => WorkerField::DeltaRequests,
                "respawns" if w > 0 => WorkerField::Respawns,
                "avg_response_time" if w > 0 => WorkerField::AvgResponseTime,
                "total_tx" if w > 0 => WorkerField::Tx,
                "rss_size" if w > 0 => WorkerField::Rss,
                "vsz_size" if w > 0 => WorkerField::Vsz,
                "running_time" if w > 0 => WorkerField::RunningTime,
                _ => return None,
            };
            Some(Source::Worker(w, f))
        }
        ("core", Some(m), Some(field)) => {
            let c: usize = m.parse().ok()?;
            if w == 0 || c >= cores {
                return None;
            }
            let f = match field {
                "requests" => CoreField::Requests,
                "write_errors" => CoreField::WriteErrors,
                "routed_requests" => CoreField::RoutedRequests,
                "static_requests" => CoreField::StaticRequests,
                "offloaded_requests" => CoreField::OffloadedRequests,
                "exceptions" => CoreField::Exceptions,
                "read_errors" => CoreField::ReadErrors,
                _ => return None,
            };
            Some(Source::Core(w, c, f))
        }
        _ => None,
    }
}

/// The `method` label values of the request histogram, by index.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
/// The `code` label values (status classes), by index.
pub const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "unknown"];
/// Series of the request histogram: one per method and status class.
pub const REQUEST_SERIES: usize = METHODS.len() * CODES.len();

/// The `method` label of a request method: the common ones by name, the rest `other`, so
/// that a client cannot make series appear.
pub fn method_index(method: &[u8]) -> usize {
    METHODS[..7]
        .iter()
        .position(|m| m.as_bytes() == method)
        .unwrap_or(7)
}

/// The status class of an HTTP status; `unknown` when there is none (the client went away,
/// or the request ended before a response) or it is out of range.
pub fn code_index(status: i64) -> usize {
    match status {
        100..=599 => (status / 100 - 1) as usize,
        _ => 5,
    }
}

/// The series of the request histogram for a method and status class.
pub fn series_index(method: usize, code: usize) -> usize {
    method * CODES.len() + code
}

/// The labels of request-histogram series `series` ([`series_index`]) of `route`: those of
/// [`request_histogram`], then `route`.
pub fn routed_request_labels(series: usize, route: &str) -> Vec<(String, String)> {
    let m = METHODS[(series / CODES.len()) % METHODS.len()];
    let c = CODES[series % CODES.len()];
    labels([("method", m), ("code", c), ("route", route)])
}

/// The bucket of an observation: the first bound it does not exceed (Prometheus' `le`), or
/// `bounds.len()` for +Inf.
pub fn bucket_index(bounds_us: &[u64], value_us: u64) -> usize {
    bounds_us.partition_point(|&b| b < value_us)
}

/// Native buckets of the request histogram at `schema`, covering 1 µs to 1 h: a duration of 0
/// goes to the zero bucket (threshold 0), one above an hour to the last bucket. Dense counts for
/// this range cost `buckets` u64s per series (255 at schema 3).
pub fn native_spec(schema: i8) -> NativeSpec {
    let first = native_bucket_index(1e-6, schema);
    let last = native_bucket_index(3600.0, schema);
    NativeSpec {
        schema,
        zero_threshold_us: 0,
        first_index: first,
        buckets: usize::try_from(last - first + 1).unwrap_or(1),
    }
}

/// The native bucket slot (0-based, within `spec.buckets`) of a duration of at least 1 µs.
pub fn native_slot(spec: &NativeSpec, value_us: u64) -> usize {
    // µs to s as Prometheus' clients observe seconds: the same double, so a duration on a
    // bucket boundary lands where a client library would put it.
    let i = native_bucket_index(value_us as f64 / 1e6, spec.schema);
    let slot = i64::from(i) - i64::from(spec.first_index);
    usize::try_from(slot.max(0))
        .unwrap_or(0)
        .min(spec.buckets.saturating_sub(1))
}

/// The request-duration histogram over the given bounds.
pub fn request_histogram(bounds_us: &[u64], native: Option<NativeSpec>) -> Histogram {
    let mut series = Vec::with_capacity(REQUEST_SERIES);
    for m in METHODS {
        for c in CODES {
            series.push(labels([("method", m), ("code", c)]));
        }
    }
    Histogram {
        family: cat::REQUEST_DURATION,
        help: cat::REQUEST_DURATION_HELP,
        bounds_us: bounds_us.to_vec(),
        series,
        native,
    }
}

/// Series of the queue-time histogram: one, without labels. The wait before a worker picks a
/// request up says how saturated the instance is, not what the request is: its status does not
/// exist yet and its method changes nothing to it; one series is also 1/48 of the request
/// histogram's shared memory per worker and of its scrape work.
pub const QUEUE_SERIES: usize = 1;

/// The queue-time histogram over the request histogram's bounds and native buckets.
pub fn queue_histogram(bounds_us: &[u64], native: Option<NativeSpec>) -> Histogram {
    Histogram {
        family: cat::REQUEST_QUEUE,
        help: cat::REQUEST_QUEUE_HELP,
        bounds_us: bounds_us.to_vec(),
        series: vec![Vec::new(); QUEUE_SERIES],
        native,
    }
}

/// `socket.K.listen_queue` → K.
pub(crate) fn socket_metric(name: &str) -> Option<usize> {
    name.strip_prefix("socket.")?
        .strip_suffix(".listen_queue")?
        .parse()
        .ok()
}

impl Topology {
    /// The sockets to export, by index: uWSGI can list one socket twice, so they are
    /// de-duplicated by name and protocol, the first one winning (as uwsgi_exporter does).
    pub fn unique_sockets(&self) -> impl Iterator<Item = (usize, &SocketDesc)> {
        self.sockets.iter().enumerate().filter(|(k, s)| {
            !self.sockets[..*k]
                .iter()
                .any(|o| o.name == s.name && o.proto == s.proto)
        })
    }
}

/// The plan for one instance. Families come in a fixed order: uWSGI's list, then the
/// instance-wide families, caches, spoolers, mules, sockets, per-worker state, apps, processes.
pub fn plan(t: &Topology) -> Plan {
    let mut p = Plan::default();
    // socket.K.listen_queue is re-exported with the socket's name and protocol: (K, metric).
    let mut socket_slots: Vec<(usize, usize)> = Vec::new();
    for (i, (name, ty)) in t.metrics.iter().enumerate() {
        if let Some(k) = socket_metric(name) {
            socket_slots.push((k, i));
            continue;
        }
        p.names.push((name.clone(), *ty));
        p.sources
            .push(live_source_for(name, t.workers, t.cores).unwrap_or(Source::Metric(i)));
    }
    add_instance(&mut p, t);
    add_caches_spoolers_mules(&mut p, t);
    for (k, s) in t.unique_sockets() {
        let metric = socket_slots.iter().find(|(i, _)| *i == k).map(|(_, m)| *m);
        let l = labels([
            ("socket", &k.to_string()),
            ("name", &s.name),
            ("proto", &s.proto),
        ]);
        p.add(
            &cat::SOCKET_LISTEN_QUEUE,
            l.clone(),
            Source::SocketQueue { socket: k, metric },
        );
        p.add(&cat::SOCKET_LISTEN_QUEUE_MAX, l, Source::SocketQueueMax(k));
    }
    for w in 1..=t.workers {
        add_worker_state(&mut p, t, w);
    }
    add_apps(&mut p, t);
    add_processes(&mut p, t);
    p
}

/// Instance-wide families: the exporter's own, then uWSGI's.
fn add_instance(p: &mut Plan, t: &Topology) {
    p.add(&cat::UP, vec![], Source::Const(1));
    p.add(&cat::STALE_READS, vec![], Source::StaleReads);
    p.add(
        &cat::BUILD_INFO,
        labels([
            ("version", &t.uwsgi_version),
            ("plugin_version", &t.plugin_version),
            ("commit", &t.plugin_commit),
        ]),
        Source::Const(1),
    );
    p.add(&cat::START_TIME, vec![], Source::Const(t.start_us));
    p.add(
        &cat::WORKERS,
        vec![],
        Source::Const(i64::try_from(t.workers).unwrap_or(i64::MAX)),
    );
    p.add(
        &cat::LISTEN_QUEUE,
        vec![],
        Source::Shared(SharedField::Backlog),
    );
    p.add(&cat::LOAD, vec![], Source::Shared(SharedField::Load));
    p.add(&cat::SIGNAL_QUEUE, vec![], Source::SignalQueue);
    for r in ExitReason::ALL {
        p.add(
            &cat::WORKER_EXITS,
            labels([("reason", r.as_str())]),
            Source::WorkerExits(r),
        );
    }
    if t.queue_time && t.buckets_us.is_some() {
        p.add(&cat::REQUEST_QUEUE_SKEW, vec![], Source::QueueSkew);
    }
    if t.routes && t.buckets_us.is_some() {
        p.add(&cat::ROUTE_OVERFLOW, vec![], Source::RouteOverflow);
    }
    if let Some(capacity) = t.app_series {
        p.add(&cat::APP_SERIES, vec![], Source::AppSeries);
        p.add(
            &cat::APP_CAPACITY,
            vec![],
            Source::Const(i64::try_from(capacity).unwrap_or(i64::MAX)),
        );
        p.add(&cat::APP_DROPPED, vec![], Source::AppDropped);
    }
}

fn add_caches_spoolers_mules(p: &mut Plan, t: &Topology) {
    for (ci, name) in t.caches.iter().enumerate() {
        for (def, f) in [
            (&cat::CACHE_ITEMS, CacheField::Items),
            (&cat::CACHE_MAX_ITEMS, CacheField::MaxItems),
            (&cat::CACHE_HITS, CacheField::Hits),
            (&cat::CACHE_MISSES, CacheField::Misses),
            (&cat::CACHE_FULL, CacheField::Full),
        ] {
            p.add(def, labels([("name", name)]), Source::Cache(ci, f));
        }
    }
    for (si, dir) in t.spoolers.iter().enumerate() {
        for (def, f) in [
            (&cat::SPOOLER_TASKS, SpoolerField::Tasks),
            (&cat::SPOOLER_RESPAWNS, SpoolerField::Respawns),
            (&cat::SPOOLER_RUNNING, SpoolerField::Running),
        ] {
            p.add(def, labels([("dir", dir)]), Source::Spooler(si, f));
        }
    }
    for m in 0..t.mules {
        let id = (m + 1).to_string();
        for (def, f) in [
            (&cat::MULE_RUNNING, MuleField::Running),
            (&cat::MULE_SIGNALS, MuleField::Signals),
            (&cat::MULE_IN_SIGNAL, MuleField::InSignal),
        ] {
            p.add(def, labels([("mule", &id)]), Source::Mule(m, f));
        }
    }
}

/// Worker `w`'s state: status, counters, its cores' activity, its oldest request.
fn add_worker_state(p: &mut Plan, t: &Topology, w: usize) {
    let ws = w.to_string();
    for st in WorkerStatus::ALL {
        p.add(
            &cat::WORKER_STATUS,
            labels([("worker", &ws), ("status", st.as_str())]),
            Source::Status(w, st),
        );
    }
    for (def, f) in [
        (&cat::WORKER_ACCEPTING, WorkerField::Accepting),
        (&cat::WORKER_HARAKIRI, WorkerField::Harakiri),
        (&cat::WORKER_EXCEPTIONS, WorkerField::Exceptions),
        (&cat::WORKER_SIGNALS, WorkerField::Signals),
        (&cat::WORKER_LAST_SPAWN, WorkerField::LastSpawnUs),
    ] {
        p.add(def, labels([("worker", &ws)]), Source::Worker(w, f));
    }
    for c in 0..t.cores {
        p.add(
            &cat::WORKER_CORE_IN_REQUEST,
            labels([("worker", &ws), ("core", &c.to_string())]),
            Source::Core(w, c, CoreField::InRequest),
        );
    }
    p.add(
        &cat::WORKER_OLDEST_REQUEST,
        labels([("worker", &ws)]),
        Source::OldestRequest(w),
    );
}

/// Applications loaded in the master before fork (every worker starts with a copy; with
/// lazy-apps they are loaded later, per worker, and are not listed).
fn add_apps(p: &mut Plan, t: &Topology) {
    for (a, mount) in t.apps.iter().enumerate() {
        for w in 1..=t.workers {
            let l = labels([
                ("worker", &w.to_string()),
                ("app", &a.to_string()),
                ("mountpoint", mount),
            ]);
            p.add(
                &cat::WORKER_APP_REQUESTS,
                l.clone(),
                Source::App(w, a, AppField::Requests),
            );
            p.add(
                &cat::WORKER_APP_EXCEPTIONS,
                l,
                Source::App(w, a, AppField::Exceptions),
            );
        }
    }
}

/// The master's and the workers' process figures, with the request histogram between them.
fn add_processes(p: &mut Plan, t: &Topology) {
    for (def, f) in [
        (&cat::MASTER_CPU, ProcField::CpuUs),
        (&cat::MASTER_RSS, ProcField::RssBytes),
        (&cat::MASTER_FDS, ProcField::OpenFds),
    ] {
        p.add(def, vec![], Source::Proc(Proc::Master, f));
    }
    if let Some(bounds) = &t.buckets_us {
        let native = t.native_schema.map(native_spec);
        p.histograms.push(request_histogram(bounds, native));
        if t.queue_time {
            p.histograms.push(queue_histogram(bounds, native));
        }
    }
    for w in 1..=t.workers {
        let ws = w.to_string();
        for (def, f) in [
            (&cat::WORKER_CPU, ProcField::CpuUs),
            (&cat::WORKER_RSS, ProcField::RssBytes),
            (&cat::WORKER_FDS, ProcField::OpenFds),
        ] {
            p.add(
                def,
                labels([("worker", &ws)]),
                Source::Proc(Proc::Worker(w), f),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn topo() -> Topology {
        Topology {
            metrics: vec![
                ("worker.0.requests".into(), MetricType::Counter),
                ("worker.1.requests".into(), MetricType::Counter),
                ("worker.1.core.0.requests".into(), MetricType::Counter),
                ("socket.0.listen_queue".into(), MetricType::Gauge),
                ("socket.1.listen_queue".into(), MetricType::Gauge),
                ("myapp.hits".into(), MetricType::Counter),
            ],
            workers: 2,
            cores: 1,
            start_us: 1_700_000_000_123_456,
            uwsgi_version: "2.0.31".into(),
            plugin_version: "0.1.0".into(),
            plugin_commit: "0123456789ab".into(),
            caches: vec!["default".into()],
            spoolers: vec!["/tmp/spool".into()],
            mules: 1,
            sockets: vec![
                SocketDesc {
                    name: "127.0.0.1:8080".into(),
                    proto: "http".into(),
                    shared: false,
                    can_offload: true,
                },
                SocketDesc {
                    name: "127.0.0.1:8080".into(),
                    proto: "http".into(),
                    shared: false,
                    can_offload: true,
                },
                SocketDesc {
                    name: "/run/app.sock".into(),
                    proto: "uwsgi".into(),
                    shared: false,
                    can_offload: false,
                },
            ],
            apps: vec!["".into()],
            app_chdirs: vec!["/srv/app".into()],
            stats: Some("127.0.0.1:1717".into()),
            buckets_us: Some(vec![5_000, 100_000, 1_000_000]),
            native_schema: Some(3),
            queue_time: true,
            app_series: Some(64),
            routes: true,
        }
    }

    fn sources_of<'a>(p: &'a Plan, family: &str) -> Vec<(&'a Extra, Source)> {
        p.extras
            .iter()
            .zip(&p.sources[p.names.len()..])
            .filter(|(e, _)| e.family == family)
            .map(|(e, s)| (e, *s))
            .collect()
    }

    #[test]
    fn metrics_first_with_live_sources() {
        let p = plan(&topo());
        assert_eq!(p.sources.len(), p.names.len() + p.extras.len());
        let names: Vec<&str> = p.names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "worker.0.requests",
                "worker.1.requests",
                "worker.1.core.0.requests",
                "myapp.hits"
            ]
        );
        assert_eq!(
            &p.sources[..4],
            &[
                Source::Worker(0, WorkerField::Requests),
                Source::Worker(1, WorkerField::Requests),
                Source::Core(1, 0, CoreField::Requests),
                Source::Metric(5),
            ]
        );
    }

    #[test]
    fn sockets_deduplicated_with_their_metric() {
        let p = plan(&topo());
        let q = sources_of(&p, "socket_listen_queue");
        assert_eq!(q.len(), 2);
        assert_eq!(
            q[0].1,
            Source::SocketQueue {
                socket: 0,
                metric: Some(3)
            }
        );
        assert_eq!(
            q[1].1,
            Source::SocketQueue {
                socket: 2,
                metric: None
            }
        );
        assert_eq!(q[1].0.labels[0], ("socket".into(), "2".into()));
        assert!(topo().sockets[2].is_unix() && !topo().sockets[0].is_unix());
    }

    #[test]
    fn every_worker_has_all_five_statuses() {
        let p = plan(&topo());
        let st = sources_of(&p, "worker_status");
        assert_eq!(st.len(), 2 * 5);
        for (w, chunk) in st.chunks(5).enumerate() {
            for ((e, s), want) in chunk.iter().zip(WorkerStatus::ALL) {
                assert_eq!(*s, Source::Status(w + 1, want));
                assert_eq!(e.labels[1].1, want.as_str());
            }
        }
    }

    #[test]
    fn counts_per_family() {
        let p = plan(&topo());
        let count = |f: &str| sources_of(&p, f).len();
        assert_eq!(count("up"), 1);
        assert_eq!(count("worker_core_in_request"), 2);
        assert_eq!(count("worker_oldest_request_seconds"), 2);
        assert_eq!(count("worker_app_requests"), 2);
        assert_eq!(count("cache_hits"), 1);
        assert_eq!(count("spooler_tasks"), 1);
        assert_eq!(count("mule_signals"), 1);
        assert_eq!(count("master_cpu_seconds"), 1);
        assert_eq!(count("worker_open_fds"), 2);
        assert_eq!(count("app_metrics_dropped_series"), 1);
        let exits = sources_of(&p, "worker_exits");
        assert_eq!(exits.len(), ExitReason::ALL.len());
        assert_eq!(exits[0].0.labels, labels([("reason", "harakiri")]));
        assert_eq!(exits[8].1, Source::WorkerExits(ExitReason::Exit));
        assert_eq!(
            sources_of(&p, "app_metrics_capacity")[0].1,
            Source::Const(64)
        );
        let off = plan(&Topology {
            app_series: None,
            ..topo()
        });
        assert!(!off
            .extras
            .iter()
            .any(|e| e.family.starts_with("app_metrics")));
        assert_eq!(
            sources_of(&p, "start_time_seconds")[0].1,
            Source::Const(1_700_000_000_123_456)
        );
        let bi = &sources_of(&p, "build_info")[0].0.labels;
        assert_eq!(bi[0], ("version".into(), "2.0.31".into()));
        assert_eq!(bi[2], ("commit".into(), "0123456789ab".into()));
        // Every catalogued family the topology calls for is used.
        for def in cat::ALL {
            assert!(count(def.name) > 0, "{} unused", def.name);
        }
    }

    #[test]
    fn queue_histogram_and_skew() {
        let p = plan(&topo());
        assert_eq!(p.histograms.len(), 2);
        let q = &p.histograms[1];
        assert_eq!(q.family, "request_queue_seconds");
        assert_eq!(
            (q.bounds_us.as_slice(), q.native),
            (p.histograms[0].bounds_us.as_slice(), p.histograms[0].native)
        );
        assert_eq!(q.series, [Vec::<(String, String)>::new()]);
        assert_eq!(sources_of(&p, "request_queue_skew")[0].1, Source::QueueSkew);
        let off = plan(&Topology {
            queue_time: false,
            ..topo()
        });
        assert_eq!(off.histograms.len(), 1);
        assert!(sources_of(&off, "request_queue_skew").is_empty());
        // Without the request histograms (whose hook records it), no queue time either.
        let none = plan(&Topology {
            buckets_us: None,
            ..topo()
        });
        assert!(none.histograms.is_empty());
        assert!(sources_of(&none, "request_queue_skew").is_empty());
    }

    #[test]
    fn request_histogram_series() {
        let p = plan(&topo());
        assert_eq!(p.histograms.len(), 2);
        let h = &p.histograms[0];
        assert_eq!(h.bounds_us, [5_000, 100_000, 1_000_000]);
        assert_eq!(h.series.len(), REQUEST_SERIES);
        let s = &h.series[series_index(method_index(b"POST"), code_index(503))];
        assert_eq!(s, &labels([("method", "POST"), ("code", "5xx")]));
        let s = &h.series[series_index(method_index(b"BREW"), code_index(0))];
        assert_eq!(s, &labels([("method", "other"), ("code", "unknown")]));
        assert_eq!(method_index(b"get"), 7);
        assert_eq!(method_index(b"OPTIONS"), 6);
        for (status, want) in [
            (99, 5),
            (100, 0),
            (204, 1),
            (399, 2),
            (404, 3),
            (599, 4),
            (600, 5),
        ] {
            assert_eq!(code_index(status), want, "{status}");
        }
        let none = Topology {
            buckets_us: None,
            ..topo()
        };
        assert!(plan(&none).histograms.is_empty());
    }

    #[test]
    fn native_range() {
        let n = native_spec(3);
        assert_eq!((n.first_index, n.buckets), (-159, 255));
        assert_eq!(native_slot(&n, 1), 0);
        assert_eq!(native_slot(&n, 3_600_000_000), 254);
        assert_eq!(native_slot(&n, u64::MAX), 254);
        // 1 s is a boundary: it closes bucket 0 (upper-inclusive).
        assert_eq!(native_slot(&n, 1_000_000), 159);
        assert_eq!(native_slot(&n, 1_000_001), 160);
        let p = plan(&topo());
        assert_eq!(p.histograms[0].native, Some(n));
        for s in -4..=8 {
            let n = native_spec(s);
            assert!(n.is_valid() && n.buckets >= 3, "{s}: {n:?}");
        }
    }

    #[test]
    fn buckets_are_le() {
        let b = [5_000, 100_000, 1_000_000];
        assert_eq!(bucket_index(&b, 0), 0);
        assert_eq!(bucket_index(&b, 5_000), 0);
        assert_eq!(bucket_index(&b, 5_001), 1);
        assert_eq!(bucket_index(&b, 1_000_000), 2);
        assert_eq!(bucket_index(&b, 1_000_001), 3);
        assert_eq!(bucket_index(&[], 7), 0);
    }

    #[test]
    fn status_decision_order() {
        assert_eq!(
            WorkerStatus::decide(true, true, true, true),
            WorkerStatus::Cheap
        );
        assert_eq!(
            WorkerStatus::decide(false, true, false, false),
            WorkerStatus::Pause
        );
        assert_eq!(
            WorkerStatus::decide(false, true, false, true),
            WorkerStatus::Busy
        );
        assert_eq!(
            WorkerStatus::decide(false, false, true, true),
            WorkerStatus::Sig
        );
        assert_eq!(
            WorkerStatus::decide(false, false, false, false),
            WorkerStatus::Idle
        );
    }

    #[test]
    fn live_sources_for_metric_names() {
        assert_eq!(
            live_source_for("worker.2.requests", 4, 2),
            Some(Source::Worker(2, WorkerField::Requests))
        );
        assert_eq!(
            live_source_for("worker.0.requests", 4, 2),
            Some(Source::Worker(0, WorkerField::Requests))
        );
        assert!(live_source_for("worker.0.total_tx", 4, 2).is_none());
        assert!(live_source_for("worker.5.requests", 4, 2).is_none());
        assert_eq!(
            live_source_for("worker.1.core.1.exceptions", 4, 2),
            Some(Source::Core(1, 1, CoreField::Exceptions))
        );
        assert!(live_source_for("worker.1.core.2.requests", 4, 2).is_none());
        assert!(live_source_for("worker.1.core.1.requests.x", 4, 2).is_none());
        assert!(live_source_for("worker.1.failed_requests", 4, 2).is_none());
        assert!(live_source_for("myapp.worker.1.requests", 4, 2).is_none());
    }
}
