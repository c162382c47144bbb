//! Live uWSGI state beyond the metrics subsystem, read at scrape time (part of the host layer).
//!
//! Everything here lives in uWSGI's shared memory (`uwsgi.workers`, their `cores` and `apps`,
//! `uwsgi.shared`), so the master and every worker see the same values, to the microsecond.
//! The pointers to those arrays are captured once in the master before fork (uWSGI sets them up
//! then and never moves them); scrape-time reads are plain volatile loads of independent
//! integers. Torn reads across fields are possible and harmless; no lock a worker could hold is
//! ever taken, and no pointer a worker can change is followed.
//!
//! Per-worker and per-core values that uWSGI's metrics subsystem also has (requests, tx, ...)
//! are taken from here too, so they do not lag by the collector's second.

use std::ffi::CStr;
use std::os::raw::c_int;

use crate::ffi;
use crate::format::{Extra, Kind, MetricType};
use crate::host::{self, Slot};

/// Where a series' value comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// A slot of uWSGI's metrics list (read under the metrics lock).
    Metric(Slot),
    Worker(usize, WorkerField),
    Core(usize, usize, CoreField),
    Status(usize, Status),
    App(usize, usize, AppField),
    SocketQueue(usize),
    SocketQueueMax(usize),
    Shared(SharedField),
    SignalQueue,
    Cache(usize, CacheField),
    Spooler(usize, SpoolerField),
    Mule(usize, MuleField),
    Proc(Proc, ProcField),
    Const(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerField {
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CoreField {
    Requests,
    WriteErrors,
    RoutedRequests,
    StaticRequests,
    OffloadedRequests,
    Exceptions,
    ReadErrors,
    InRequest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Busy,
    Idle,
    Cheap,
    Pause,
    Sig,
}

const STATUSES: [(Status, &str); 5] = [
    (Status::Busy, "busy"),
    (Status::Idle, "idle"),
    (Status::Cheap, "cheap"),
    (Status::Pause, "pause"),
    (Status::Sig, "sig"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppField {
    Requests,
    Exceptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheField {
    Items,
    MaxItems,
    Hits,
    Misses,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpoolerField {
    Tasks,
    Respawns,
    Running,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MuleField {
    Running,
    Signals,
    InSignal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SharedField {
    Backlog,
    Load,
}

/// A process whose /proc entry is read: the master, or worker N (by its current pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proc {
    Master,
    Worker(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcField {
    CpuUs,
    RssBytes,
    OpenFds,
}

struct SocketInfo {
    fd: c_int,
    unix: bool,
    /// The `socket.K.listen_queue` metric slot, the fallback where TCP_INFO is not available.
    slot: Option<Slot>,
}

/// Pointers into uWSGI's shared memory, captured in the master before fork.
pub(crate) struct Live {
    workers: *mut ffi::uwsgi_worker,
    numproc: usize,
    cores: usize,
    worker_cores: Vec<*mut ffi::uwsgi_core>,
    worker_apps: Vec<*mut ffi::uwsgi_app>,
    shared: *mut ffi::uwsgi_shared,
    sockets: Vec<SocketInfo>,
    caches: Vec<*mut ffi::uwsgi_cache>,
    spoolers: Vec<*mut ffi::uwsgi_spooler>,
    mules: *mut ffi::uwsgi_mule,
    mules_cnt: usize,
    listen_backlog: u64,
    master_pid: i32,
}

// SAFETY: the pointers target uWSGI's shared mappings, which live for the whole process and are
// only read here (volatile loads of integers); reading them from any thread is fine.
unsafe impl Send for Live {}
// SAFETY: see Send.
unsafe impl Sync for Live {}

macro_rules! load {
    ($ptr:expr, $field:ident) => {{
        let p = $ptr;
        // SAFETY: `p` points into a shared array captured at startup (see `Live`), in bounds
        // by the caller's index check; the field is a plain integer, read whole.
        unsafe { std::ptr::read_volatile(&raw const (*p).$field) }
    }};
}

/// What the exporter renders: the metric names for the engine, the extra series, and where
/// each value comes from (same order: metrics first, then extras).
pub(crate) struct Plan {
    pub names: Vec<(String, MetricType)>,
    pub extras: Vec<Extra>,
    pub sources: Vec<Source>,
}

fn labels(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn extra(
    family: &'static str,
    kind: Kind,
    scale: u8,
    help: &'static str,
    l: Vec<(String, String)>,
) -> Extra {
    Extra {
        family,
        kind,
        scale,
        help,
        labels: l,
    }
}

/// Maps a metric of uWSGI's list to a live source, when the worker table has the same value.
fn live_source_for(name: &str, numproc: usize, cores: usize) -> Option<Source> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["worker", n, field] => {
            let w: usize = n.parse().ok()?;
            if w > numproc {
                return None;
            }
            let f = match *field {
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
        ["worker", n, "core", m, field] => {
            let w: usize = n.parse().ok()?;
            let c: usize = m.parse().ok()?;
            if w == 0 || w > numproc || c >= cores {
                return None;
            }
            let f = match *field {
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

fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: uWSGI keeps socket names and protocol names as NUL-terminated strings for the
    // life of the process.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn fixed_cstr(buf: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Live {
    /// Captures the shared-memory pointers and builds the plan. Master, pre-fork.
    pub(crate) fn build(list: &host::MetricsList) -> (Live, Plan) {
        let s = host::api().server;
        // SAFETY: ABI checked; the master is single-threaded here and these fields were set by
        // uwsgi_setup_workers/uwsgi_bind_sockets before postinit_apps.
        let srv = unsafe { &*s };
        let numproc = srv.numproc.max(0) as usize;
        let cores = srv.cores.max(0) as usize;
        let workers = srv.workers;
        let mut worker_cores = Vec::with_capacity(numproc + 1);
        let mut worker_apps = Vec::with_capacity(numproc + 1);
        for w in 0..=numproc {
            if workers.is_null() {
                worker_cores.push(std::ptr::null_mut());
                worker_apps.push(std::ptr::null_mut());
                continue;
            }
            // SAFETY: `workers` has numproc + 1 entries (init.c allocates them pre-fork).
            let wp = unsafe { workers.add(w) };
            worker_cores.push(load!(wp, cores));
            worker_apps.push(load!(wp, apps));
        }
        let mut live = Live {
            workers,
            numproc,
            cores,
            worker_cores,
            worker_apps,
            shared: srv.shared,
            sockets: Vec::new(),
            caches: Vec::new(),
            spoolers: Vec::new(),
            mules: srv.mules,
            mules_cnt: if srv.mules.is_null() {
                0
            } else {
                srv.mules_cnt.max(0) as usize
            },
            listen_backlog: srv.listen_queue.max(0) as u64,
            // SAFETY: plain syscall.
            master_pid: unsafe { libc::getpid() },
        };

        let mut plan = Plan {
            names: Vec::new(),
            extras: Vec::new(),
            sources: Vec::new(),
        };
        let mut socket_slots: Vec<(usize, Slot)> = Vec::new();
        for ((name, ty), slot) in list.names.iter().zip(&list.slots) {
            // socket.K.listen_queue is re-exported below with the socket's name and protocol.
            if let ["socket", k, "listen_queue"] = name.split('.').collect::<Vec<_>>().as_slice() {
                if let Ok(k) = k.parse::<usize>() {
                    socket_slots.push((k, *slot));
                    continue;
                }
            }
            plan.names.push((name.clone(), *ty));
            plan.sources
                .push(live_source_for(name, numproc, cores).unwrap_or(Source::Metric(*slot)));
        }

        let mut add = |e: Extra, src: Source| {
            plan.extras.push(e);
            plan.sources.push(src);
        };
        add(
            extra(
                "up",
                Kind::Gauge,
                0,
                "1: the exporter could read uWSGI's state.",
                vec![],
            ),
            Source::Const(1),
        );
        add(
            extra(
                "build_info",
                Kind::Gauge,
                0,
                "Always 1; labels: the uWSGI version and the metrics_prometheus plugin version.",
                labels(&[
                    ("version", ffi::BUILD_UWSGI_VERSION.to_string()),
                    ("plugin_version", crate::plugin::VERSION.to_string()),
                ]),
            ),
            Source::Const(1),
        );
        let start_us = srv.start_tv.tv_sec * 1_000_000 + srv.start_tv.tv_usec;
        add(
            extra(
                "start_time_seconds",
                Kind::Gauge,
                6,
                "When the uWSGI master started, in seconds since the Unix epoch.",
                vec![],
            ),
            Source::Const(start_us),
        );
        add(
            extra(
                "workers",
                Kind::Gauge,
                0,
                "Worker processes configured (--processes/--workers), cheaped ones included.",
                vec![],
            ),
            Source::Const(numproc as i64),
        );
        add(
            extra(
                "listen_queue",
                Kind::Gauge,
                0,
                "Largest listen queue over uWSGI's sockets, as sampled by the master about once a second (the stats server's listen_queue).",
                vec![],
            ),
            Source::Shared(SharedField::Backlog),
        );
        add(
            extra(
                "load",
                Kind::Gauge,
                0,
                "uWSGI's load figure (the stats server's load: the listen backlog seen by the master).",
                vec![],
            ),
            Source::Shared(SharedField::Load),
        );

        add(
            extra(
                "signal_queue",
                Kind::Gauge,
                0,
                "Bytes of uWSGI signals waiting in the workers' shared signal queue (the stats server's signal_queue).",
                vec![],
            ),
            Source::SignalQueue,
        );

        // Caches and spoolers live in shared memory (uwsgi_calloc_shared / malloc_shared); their
        // lists are built before fork and never change.
        let mut uc = srv.caches;
        while !uc.is_null() && live.caches.len() < 1024 {
            // SAFETY: a node of uwsgi.caches, immutable after setup.
            let cache = unsafe { &*uc };
            uc = cache.next;
            let name = if cache.name.is_null() {
                "default".to_string()
            } else {
                cstr(cache.name)
            };
            let ci = live.caches.len();
            live.caches
                .push(cache as *const ffi::uwsgi_cache as *mut ffi::uwsgi_cache);
            let cl = || labels(&[("name", name.clone())]);
            let fams: [(&'static str, Kind, &'static str, CacheField); 5] = [
                (
                    "cache_items",
                    Kind::Gauge,
                    "Items in the uWSGI cache.",
                    CacheField::Items,
                ),
                (
                    "cache_max_items",
                    Kind::Gauge,
                    "Capacity of the uWSGI cache, in items.",
                    CacheField::MaxItems,
                ),
                (
                    "cache_hits",
                    Kind::Counter,
                    "Lookups that found their key in the uWSGI cache.",
                    CacheField::Hits,
                ),
                (
                    "cache_misses",
                    Kind::Counter,
                    "Lookups that did not find their key in the uWSGI cache.",
                    CacheField::Misses,
                ),
                (
                    "cache_full",
                    Kind::Counter,
                    "Writes refused because the uWSGI cache was full.",
                    CacheField::Full,
                ),
            ];
            for (fam, kind, help, f) in fams {
                add(extra(fam, kind, 0, help, cl()), Source::Cache(ci, f));
            }
        }
        let mut sp = srv.spoolers;
        while !sp.is_null() && live.spoolers.len() < 1024 {
            // SAFETY: a node of uwsgi.spoolers, immutable after setup.
            let spooler = unsafe { &*sp };
            sp = spooler.next;
            let dir = fixed_cstr(&spooler.dir);
            let si = live.spoolers.len();
            live.spoolers
                .push(spooler as *const ffi::uwsgi_spooler as *mut ffi::uwsgi_spooler);
            let sl = || labels(&[("dir", dir.clone())]);
            let fams: [(&'static str, Kind, &'static str, SpoolerField); 3] = [
                (
                    "spooler_tasks",
                    Kind::Counter,
                    "Tasks run by the spooler.",
                    SpoolerField::Tasks,
                ),
                (
                    "spooler_respawns",
                    Kind::Counter,
                    "Times the spooler process was respawned.",
                    SpoolerField::Respawns,
                ),
                (
                    "spooler_running",
                    Kind::Gauge,
                    "1 while the spooler runs a task.",
                    SpoolerField::Running,
                ),
            ];
            for (fam, kind, help, f) in fams {
                add(extra(fam, kind, 0, help, sl()), Source::Spooler(si, f));
            }
        }

        // Mules: uwsgi.mules is a shared array of mules_cnt entries, allocated before fork.
        for m in 0..live.mules_cnt {
            let ml = || labels(&[("mule", (m + 1).to_string())]);
            // uWSGI 2.0 never updates a mule's respawn_count or last_spawn: not exported.
            let fams: [(&'static str, Kind, u8, &'static str, MuleField); 3] = [
                (
                    "mule_running",
                    Kind::Gauge,
                    0,
                    "1 while the mule process exists (its pid is set).",
                    MuleField::Running,
                ),
                (
                    "mule_signals",
                    Kind::Counter,
                    0,
                    "uWSGI signals handled by the mule.",
                    MuleField::Signals,
                ),
                (
                    "mule_in_signal",
                    Kind::Gauge,
                    0,
                    "1 while the mule runs a signal handler.",
                    MuleField::InSignal,
                ),
            ];
            for (fam, kind, scale, help, f) in fams {
                add(extra(fam, kind, scale, help, ml()), Source::Mule(m, f));
            }
        }

        // Sockets, de-duplicated by name and protocol (uWSGI can list one socket twice).
        let mut seen = Vec::<(String, String)>::new();
        let mut sock = srv.sockets;
        let mut k = 0usize;
        while !sock.is_null() && k < 4096 {
            // SAFETY: a node of uwsgi.sockets, set up before postinit_apps and immutable after.
            let us = unsafe { &*sock };
            sock = us.next;
            let name = cstr(us.name);
            let proto = if us.proto_name.is_null() {
                "uwsgi".to_string()
            } else {
                cstr(us.proto_name)
            };
            let idx = k;
            k += 1;
            let slot = socket_slots
                .iter()
                .find(|(i, _)| *i == idx)
                .map(|(_, s)| *s);
            if seen.contains(&(name.clone(), proto.clone())) {
                continue;
            }
            seen.push((name.clone(), proto.clone()));
            let si = live.sockets.len();
            live.sockets.push(SocketInfo {
                fd: us.fd,
                unix: name.contains('/') || name.starts_with('@'),
                slot,
            });
            let l = labels(&[
                ("socket", idx.to_string()),
                ("name", name),
                ("proto", proto),
            ]);
            add(
                extra(
                    "socket_listen_queue",
                    Kind::Gauge,
                    0,
                    "Connections waiting in the socket's listen queue (TCP only: UNIX sockets read 0 on stock Linux kernels).",
                    l.clone(),
                ),
                Source::SocketQueue(si),
            );
            add(
                extra(
                    "socket_listen_queue_max",
                    Kind::Gauge,
                    0,
                    "Size of the socket's listen queue (its backlog).",
                    l,
                ),
                Source::SocketQueueMax(si),
            );
        }

        for w in 1..=numproc {
            let wl = || labels(&[("worker", w.to_string())]);
            for (st, name) in STATUSES {
                add(
                    extra(
                        "worker_status",
                        Kind::Gauge,
                        0,
                        "1 for the worker's current state (busy, idle, cheap, pause or sig, as in uWSGI's stats server), 0 for the others.",
                        labels(&[("worker", w.to_string()), ("status", name.to_string())]),
                    ),
                    Source::Status(w, st),
                );
            }
            let per_worker: [(&'static str, Kind, u8, &'static str, WorkerField); 5] = [
                (
                    "worker_accepting",
                    Kind::Gauge,
                    0,
                    "1 when the worker accepts requests (0 while it starts or is being respawned).",
                    WorkerField::Accepting,
                ),
                (
                    "worker_harakiri",
                    Kind::Counter,
                    0,
                    "Times the worker was killed by harakiri.",
                    WorkerField::Harakiri,
                ),
                (
                    "worker_exceptions",
                    Kind::Counter,
                    0,
                    "Exceptions raised by the application in the worker (all cores).",
                    WorkerField::Exceptions,
                ),
                (
                    "worker_signals",
                    Kind::Counter,
                    0,
                    "uWSGI signals handled by the worker.",
                    WorkerField::Signals,
                ),
                (
                    "worker_last_spawn_timestamp_seconds",
                    Kind::Gauge,
                    6,
                    "When the worker was last spawned, in seconds since the Unix epoch.",
                    WorkerField::LastSpawnUs,
                ),
            ];
            for (fam, kind, scale, help, f) in per_worker {
                add(extra(fam, kind, scale, help, wl()), Source::Worker(w, f));
            }
            for c in 0..cores {
                add(
                    extra(
                        "worker_core_in_request",
                        Kind::Gauge,
                        0,
                        "1 while the core (thread or async slot) of the worker is handling a request.",
                        labels(&[("worker", w.to_string()), ("core", c.to_string())]),
                    ),
                    Source::Core(w, c, CoreField::InRequest),
                );
            }
        }

        // Applications loaded in the master before fork (every worker starts with a copy; with
        // lazy-apps they are loaded later, per worker, and are not listed).
        let apps0 = live
            .worker_apps
            .first()
            .copied()
            .unwrap_or(std::ptr::null_mut());
        let apps_cnt = if workers.is_null() {
            0
        } else {
            load!(workers, apps_cnt).max(0) as usize
        };
        let max_apps = srv.max_apps.max(0) as usize;
        for a in 0..apps_cnt.min(max_apps) {
            if apps0.is_null() {
                break;
            }
            // SAFETY: `apps0` has max_apps entries (init.c), a < max_apps.
            let app_ptr = unsafe { apps0.add(a) };
            // SAFETY: in bounds (above); the master loaded this app before fork and owns it.
            let app = unsafe { &*app_ptr };
            let mount = fixed_cstr(
                &app.mountpoint[..(app.mountpoint_len as usize).min(app.mountpoint.len())],
            );
            for w in 1..=numproc {
                let l = labels(&[
                    ("worker", w.to_string()),
                    ("app", a.to_string()),
                    ("mountpoint", mount.clone()),
                ]);
                add(
                    extra(
                        "worker_app_requests",
                        Kind::Counter,
                        0,
                        "Requests served by the application in the worker.",
                        l.clone(),
                    ),
                    Source::App(w, a, AppField::Requests),
                );
                add(
                    extra(
                        "worker_app_exceptions",
                        Kind::Counter,
                        0,
                        "Exceptions raised by the application in the worker.",
                        l,
                    ),
                    Source::App(w, a, AppField::Exceptions),
                );
            }
        }

        // Processes, from /proc.
        let procs = std::iter::once((Proc::Master, None))
            .chain((1..=numproc).map(|w| (Proc::Worker(w), Some(w))));
        for (p, w) in procs {
            let (cpu, rss, fds): (&'static str, &'static str, &'static str) = if w.is_some() {
                (
                    "worker_cpu_seconds",
                    "worker_resident_memory_bytes",
                    "worker_open_fds",
                )
            } else {
                (
                    "master_cpu_seconds",
                    "master_resident_memory_bytes",
                    "master_open_fds",
                )
            };
            let l = || {
                w.map(|w| labels(&[("worker", w.to_string())]))
                    .unwrap_or_default()
            };
            add(
                extra(
                    cpu,
                    Kind::Counter,
                    6,
                    "CPU time (user + system) of the process, from /proc.",
                    l(),
                ),
                Source::Proc(p, ProcField::CpuUs),
            );
            add(
                extra(
                    rss,
                    Kind::Gauge,
                    0,
                    "Resident memory of the process, from /proc.",
                    l(),
                ),
                Source::Proc(p, ProcField::RssBytes),
            );
            add(
                extra(
                    fds,
                    Kind::Gauge,
                    0,
                    "Open file descriptors of the process, from /proc.",
                    l(),
                ),
                Source::Proc(p, ProcField::OpenFds),
            );
        }
        (live, plan)
    }

    fn worker(&self, w: usize) -> Option<*mut ffi::uwsgi_worker> {
        if self.workers.is_null() || w > self.numproc {
            return None;
        }
        // SAFETY: w <= numproc, within the numproc + 1 entries.
        Some(unsafe { self.workers.add(w) })
    }

    fn core(&self, w: usize, c: usize) -> Option<*mut ffi::uwsgi_core> {
        let base = *self.worker_cores.get(w)?;
        if base.is_null() || c >= self.cores {
            return None;
        }
        // SAFETY: each worker's cores array has `uwsgi.cores` entries (init.c), c < cores.
        Some(unsafe { base.add(c) })
    }

    fn worker_field(&self, w: usize, f: WorkerField) -> i64 {
        let Some(p) = self.worker(w) else { return 0 };
        let v: u64 = match f {
            WorkerField::Requests => load!(p, requests),
            WorkerField::DeltaRequests => load!(p, delta_requests),
            WorkerField::Respawns => load!(p, respawn_count),
            WorkerField::AvgResponseTime => load!(p, avg_response_time),
            WorkerField::Tx => load!(p, tx),
            WorkerField::Rss => load!(p, rss_size),
            WorkerField::Vsz => load!(p, vsz_size),
            WorkerField::RunningTime => load!(p, running_time),
            WorkerField::Accepting => load!(p, accepting).max(0) as u64,
            WorkerField::Harakiri => load!(p, harakiri_count),
            WorkerField::Signals => load!(p, signals),
            WorkerField::LastSpawnUs => {
                (load!(p, last_spawn).max(0) as u64).saturating_mul(1_000_000)
            }
            WorkerField::Exceptions => (0..self.cores)
                .filter_map(|c| self.core(w, c))
                .map(|cp| load!(cp, exceptions))
                .fold(0u64, u64::wrapping_add),
        };
        v.min(i64::MAX as u64) as i64
    }

    fn core_field(&self, w: usize, c: usize, f: CoreField) -> i64 {
        let Some(p) = self.core(w, c) else { return 0 };
        let v: u64 = match f {
            CoreField::Requests => load!(p, requests),
            CoreField::WriteErrors => load!(p, write_errors),
            CoreField::RoutedRequests => load!(p, routed_requests),
            CoreField::StaticRequests => load!(p, static_requests),
            CoreField::OffloadedRequests => load!(p, offloaded_requests),
            CoreField::Exceptions => load!(p, exceptions),
            CoreField::ReadErrors => load!(p, read_errors),
            CoreField::InRequest => u64::from(load!(p, in_request) != 0),
        };
        v.min(i64::MAX as u64) as i64
    }

    /// The worker's state, decided as uWSGI's stats server does.
    fn status(&self, w: usize) -> Status {
        let Some(p) = self.worker(w) else {
            return Status::Idle;
        };
        // SAFETY: uwsgi_worker_is_busy(int wid) reads the shared worker table; wid <= numproc.
        let busy = unsafe { (host::api().worker_is_busy)(w as c_int) } != 0;
        if load!(p, cheaped) != 0 {
            Status::Cheap
        } else if load!(p, suspended) != 0 && !busy {
            Status::Pause
        } else if load!(p, sig) != 0 {
            Status::Sig
        } else if busy {
            Status::Busy
        } else {
            Status::Idle
        }
    }

    fn app_field(&self, w: usize, a: usize, f: AppField) -> i64 {
        let Some(wp) = self.worker(w) else { return 0 };
        let base = self
            .worker_apps
            .get(w)
            .copied()
            .unwrap_or(std::ptr::null_mut());
        if base.is_null() || a >= load!(wp, apps_cnt).max(0) as usize {
            return 0;
        }
        // SAFETY: a < apps_cnt <= max_apps entries of this worker's shared apps array.
        let p = unsafe { base.add(a) };
        let v = match f {
            AppField::Requests => load!(p, requests),
            AppField::Exceptions => load!(p, exceptions),
        };
        v.min(i64::MAX as u64) as i64
    }

    fn socket_queue(&self, si: usize, max: bool) -> i64 {
        let Some(s) = self.sockets.get(si) else {
            return 0;
        };
        if s.unix {
            // As uWSGI on stock kernels: no queue length for UNIX sockets; the limit is the
            // configured backlog.
            return if max { self.listen_backlog as i64 } else { 0 };
        }
        match tcp_queue(s.fd) {
            Some((queue, limit)) => i64::from(if max { limit } else { queue }),
            None if max => self.listen_backlog as i64,
            None => s.slot.map(host::read_slot).unwrap_or(0),
        }
    }

    fn shared_field(&self, f: SharedField) -> i64 {
        if self.shared.is_null() {
            return 0;
        }
        let v = match f {
            SharedField::Backlog => load!(self.shared, backlog),
            SharedField::Load => load!(self.shared, load),
        };
        v.min(i64::MAX as u64) as i64
    }

    fn cache_field(&self, ci: usize, f: CacheField) -> i64 {
        let Some(&p) = self.caches.get(ci) else {
            return 0;
        };
        let v = match f {
            CacheField::Items => load!(p, n_items),
            CacheField::MaxItems => load!(p, max_items),
            CacheField::Hits => load!(p, hits),
            CacheField::Misses => load!(p, miss),
            CacheField::Full => load!(p, full),
        };
        v.min(i64::MAX as u64) as i64
    }

    fn spooler_field(&self, si: usize, f: SpoolerField) -> i64 {
        let Some(&p) = self.spoolers.get(si) else {
            return 0;
        };
        let v = match f {
            SpoolerField::Tasks => load!(p, tasks),
            SpoolerField::Respawns => load!(p, respawned),
            SpoolerField::Running => load!(p, running).max(0) as u64,
        };
        v.min(i64::MAX as u64) as i64
    }

    fn mule_field(&self, m: usize, f: MuleField) -> i64 {
        if self.mules.is_null() || m >= self.mules_cnt {
            return 0;
        }
        // SAFETY: m < mules_cnt, the length of the shared mules array.
        let p = unsafe { self.mules.add(m) };
        let v: u64 = match f {
            MuleField::Running => u64::from(load!(p, pid) > 0),
            MuleField::Signals => load!(p, signals),
            MuleField::InSignal => u64::from(load!(p, sig) != 0),
        };
        v.min(i64::MAX as u64) as i64
    }

    /// FIONREAD on the workers' signal pipe, as the stats server computes `signal_queue`.
    fn signal_queue(&self) -> i64 {
        if self.shared.is_null() {
            return 0;
        }
        let fd = load!(self.shared, worker_signal_pipe)[1];
        let mut n: c_int = 0;
        // SAFETY: FIONREAD writes one int; a closed or invalid fd only makes ioctl fail.
        if fd < 0 || unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
            return 0;
        }
        i64::from(n)
    }

    fn pid_of(&self, p: Proc) -> Option<i32> {
        match p {
            Proc::Master => Some(self.master_pid),
            Proc::Worker(w) => {
                let wp = self.worker(w)?;
                let pid = load!(wp, pid);
                (pid > 0).then_some(pid)
            }
        }
    }

    /// Computes every non-metric value into `values` (whose metric positions are already set).
    pub(crate) fn fill(&self, sources: &[Source], values: &mut [i64]) {
        let mut procs: Vec<(Proc, ProcStat)> = Vec::new();
        for (v, src) in values.iter_mut().zip(sources) {
            *v = match *src {
                Source::Metric(_) => continue,
                Source::Const(c) => c,
                Source::Worker(w, f) => self.worker_field(w, f),
                Source::Core(w, c, f) => self.core_field(w, c, f),
                Source::Status(w, st) => i64::from(self.status(w) == st),
                Source::App(w, a, f) => self.app_field(w, a, f),
                Source::SocketQueue(si) => self.socket_queue(si, false),
                Source::SocketQueueMax(si) => self.socket_queue(si, true),
                Source::Shared(f) => self.shared_field(f),
                Source::SignalQueue => self.signal_queue(),
                Source::Cache(ci, f) => self.cache_field(ci, f),
                Source::Spooler(si, f) => self.spooler_field(si, f),
                Source::Mule(m, f) => self.mule_field(m, f),
                Source::Proc(p, f) => {
                    let st = match procs.iter().find(|(q, _)| *q == p) {
                        Some((_, st)) => *st,
                        None => {
                            let st = self.pid_of(p).map(proc_stat).unwrap_or_default();
                            procs.push((p, st));
                            st
                        }
                    };
                    match f {
                        ProcField::CpuUs => st.cpu_us,
                        ProcField::RssBytes => st.rss_bytes,
                        ProcField::OpenFds => st.fds,
                    }
                }
            };
        }
    }
}

/// `(queue, backlog limit)` of a listening TCP socket, as uWSGI's master reads them.
fn tcp_queue(fd: c_int) -> Option<(u32, u32)> {
    if fd < 0 {
        return None;
    }
    let mut ti: libc::tcp_info = unsafe_zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `ti` is writable for `len` bytes; a non-TCP fd just fails.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut ti).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // For a listening socket Linux reports the accept queue in tcpi_unacked and its limit in
    // tcpi_sacked (what uWSGI's master.c reads).
    Some((ti.tcpi_unacked, ti.tcpi_sacked))
}

fn unsafe_zeroed<T: Copy>() -> T {
    // SAFETY: only used for plain C structs (tcp_info), for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

#[derive(Clone, Copy, Default)]
struct ProcStat {
    cpu_us: i64,
    rss_bytes: i64,
    fds: i64,
}

fn proc_stat(pid: i32) -> ProcStat {
    let mut st = ProcStat::default();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some((cpu_us, rss_pages)) = parse_proc_stat(&text) {
            st.cpu_us = cpu_us;
            st.rss_bytes = rss_pages.saturating_mul(page_size());
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        st.fds = dir.count() as i64;
    }
    st
}

fn clock_ticks() -> i64 {
    // SAFETY: plain sysconf query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t
    } else {
        100
    }
}

fn page_size() -> i64 {
    // SAFETY: plain sysconf query.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p
    } else {
        4096
    }
}

/// `(utime + stime in µs, rss in pages)` from a /proc/PID/stat line.
fn parse_proc_stat(text: &str) -> Option<(i64, i64)> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15, rss 24.
    let utime: i64 = f.get(11)?.parse().ok()?;
    let stime: i64 = f.get(12)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    let ticks = utime.saturating_add(stime);
    Some((ticks.saturating_mul(1_000_000) / clock_ticks(), rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_line() {
        let line = "1234 (uwsgi (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    12345 123456789 789 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 17 1 0 0";
        let (cpu, rss) = parse_proc_stat(line).expect("a valid stat line");
        assert_eq!(cpu, 300 * 1_000_000 / clock_ticks());
        assert_eq!(rss, 789);
        assert!(parse_proc_stat("garbage").is_none());
    }

    #[test]
    fn live_sources_for_metric_names() {
        assert!(matches!(
            live_source_for("worker.2.requests", 4, 2),
            Some(Source::Worker(2, WorkerField::Requests))
        ));
        assert!(matches!(
            live_source_for("worker.0.requests", 4, 2),
            Some(Source::Worker(0, WorkerField::Requests))
        ));
        assert!(live_source_for("worker.0.total_tx", 4, 2).is_none());
        assert!(live_source_for("worker.5.requests", 4, 2).is_none());
        assert!(matches!(
            live_source_for("worker.1.core.1.exceptions", 4, 2),
            Some(Source::Core(1, 1, CoreField::Exceptions))
        ));
        assert!(live_source_for("worker.1.core.2.requests", 4, 2).is_none());
        assert!(live_source_for("worker.1.failed_requests", 4, 2).is_none());
        assert!(live_source_for("myapp.worker.1.requests", 4, 2).is_none());
    }
}
