//! Reading uWSGI: its shape once, its values per scrape.
//!
//! [`read`] is the one unsafe walk over uWSGI's structures (caches, spoolers, sockets, apps, the
//! worker table), done in the master before fork: it returns a plain
//! [`Topology`](metrics_prometheus_engine::plan::Topology), which the pure planner turns into
//! the series to export, and a [`Live`] of typed handles into the shared memory the values live
//! in. [`Live::fill`] evaluates each series' source at scrape time: uWSGI's metrics slots under
//! its lock (held only for that copy), then the worker table, sockets and /proc, without
//! allocating once its scratch space has grown.
//!
//! Everything read per scrape lives in uWSGI's shared memory (`uwsgi.workers`, their `cores` and
//! `apps`, `uwsgi.shared`, caches, spoolers, mules), so the master and every worker see the same
//! values, to the microsecond. Torn reads across fields are possible and harmless; no lock a
//! worker could hold is ever taken, and no pointer a worker can change is followed.

use metrics_prometheus_engine::health::{self, QueueLimit, Verdict};
use metrics_prometheus_engine::plan::{
    AppField, CacheField, CoreField, MuleField, Proc, ProcField, SharedField, Source, SpoolerField,
    Topology, WorkerField, WorkerStatus,
};

use crate::ffi;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::host::instance::fixed_cstr;
use crate::host::metrics::{MetricsList, MetricsReadLock, Slot, TryRead};
use crate::host::procfs::{proc_stat, ProcStat};
use crate::host::uwsgi_shared::{field, Int, SharedSlice};
use crate::host::{self, net};

#[derive(Clone)]
struct SocketFd {
    /// As uWSGI names it (the `name` label), for `/readyz`'s reason.
    name: String,
    fd: i32,
    unix: bool,
    /// Its inode, for sock_diag (UNIX sockets only).
    inode: Option<u64>,
}

/// Handles into uWSGI's shared memory, captured in the master before fork.
#[derive(Clone)]
pub(crate) struct Live {
    slots: Vec<Slot>,
    workers: SharedSlice<ffi::uwsgi_worker>,
    /// Per worker id (0..=numproc): its cores.
    cores: Vec<SharedSlice<ffi::uwsgi_core>>,
    /// Per worker id: its apps (`max_apps` entries; `apps_cnt` of them in use).
    apps: Vec<SharedSlice<ffi::uwsgi_app>>,
    shared: SharedSlice<ffi::uwsgi_shared>,
    sockets: Vec<SocketFd>,
    caches: Vec<SharedSlice<ffi::uwsgi_cache>>,
    spoolers: Vec<SharedSlice<ffi::uwsgi_spooler>>,
    mules: SharedSlice<ffi::uwsgi_mule>,
    numproc: usize,
    listen_backlog: i64,
    master_pid: i32,
    /// `uwsgi_worker_is_busy` (a seam for the unit tests).
    is_busy: fn(usize) -> bool,
    /// `uwsgi.status.is_cheap` (a seam for the unit tests).
    is_cheap: fn() -> bool,
    /// Scrapes of any process that found uWSGI's metrics lock held by a writer (one counter in
    /// shared memory; empty when it could not be mapped).
    stale: &'static [AtomicU64],
}

/// Scratch space of one scraper, reused so that a steady scrape allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Each worker's state, decided once per scrape (index: worker id).
    statuses: Vec<WorkerStatus>,
    /// /proc figures, read at most once per process per scrape (0: master, N: worker N).
    procs: Vec<Option<ProcStat>>,
    /// The values of uWSGI's metrics list as this scraper last read them, served again when a
    /// writer holds the lock.
    metrics: Vec<i64>,
    /// The UNIX sockets' inodes and their `(waiting, backlog)` from the kernel, read once per
    /// scrape (index: socket).
    inodes: Vec<u64>,
    unix_queues: Vec<Option<(u32, u32)>>,
    /// The netlink receive buffer of that read.
    diag_buf: Vec<u8>,
}

/// Reads uWSGI's shape. Master, pre-fork, after `uwsgi_setup_workers` and the socket binding.
pub(crate) fn read(list: MetricsList) -> (Topology, Live) {
    let inst = host::instance::read();
    // The master and each worker keep their /proc files open between scrapes.
    host::procfs::setup(inst.numproc + 1);
    let mut t = Topology {
        metrics: list.names,
        workers: inst.numproc,
        cores: inst.cores_per_worker,
        start_us: inst.start_us,
        uwsgi_version: ffi::BUILD_UWSGI_VERSION.to_string(),
        buckets_us: None,
        native_schema: None,
        plugin_version: host::PLUGIN_VERSION.to_string(),
        plugin_commit: host::PLUGIN_COMMIT.to_string(),
        mules: inst.mules.len(),
        stats: inst.stats,
        ..Topology::default()
    };
    let (names, caches): (Vec<_>, Vec<_>) = inst.caches.into_iter().unzip();
    t.caches = names;
    let (dirs, spoolers): (Vec<_>, Vec<_>) = inst.spoolers.into_iter().unzip();
    t.spoolers = dirs;
    let mut sockets = Vec::with_capacity(inst.sockets.len());
    for (desc, fd) in inst.sockets {
        let unix = desc.is_unix();
        sockets.push(SocketFd {
            name: desc.name.clone(),
            fd,
            unix,
            inode: if unix {
                host::sock_diag::socket_inode(fd)
            } else {
                None
            },
        });
        t.sockets.push(desc);
    }
    // Applications loaded in the master before fork (every worker starts with a copy).
    let apps_cnt = inst
        .workers
        .read(0, field!(ffi::uwsgi_worker, apps_cnt))
        .map_or(0, |n| usize::try_from(n).unwrap_or(0));
    if let Some(apps0) = inst.apps.first() {
        for a in 0..apps_cnt.min(apps0.len()) {
            let len = apps0
                .read(a, field!(ffi::uwsgi_app, mountpoint_len))
                .map_or(0, usize::from);
            let mount = apps0
                .read(a, field!(ffi::uwsgi_app, mountpoint))
                .unwrap_or([0; 255]);
            t.apps.push(fixed_cstr(&mount[..len.min(mount.len())]));
            let chdir = apps0
                .read(a, field!(ffi::uwsgi_app, chdir))
                .unwrap_or([0; 255]);
            t.app_chdirs.push(fixed_cstr(&chdir));
        }
    }
    let live = Live {
        slots: list.slots,
        workers: inst.workers,
        cores: inst.cores,
        apps: inst.apps,
        shared: inst.shared,
        sockets,
        caches,
        spoolers,
        mules: inst.mules,
        numproc: inst.numproc,
        listen_backlog: inst.listen_backlog,
        master_pid: host::uwsgi::pid(),
        is_busy: host::uwsgi::worker_is_busy,
        is_cheap: host::uwsgi::is_cheap,
        stale: host::shared_counters::map(1).unwrap_or_else(|e| {
            host::log(&format!("cannot map the stale-read counter: {e}"));
            &[]
        }),
    };
    (t, live)
}

impl Live {
    fn worker_field(&self, w: usize, f: WorkerField) -> i64 {
        let ws = &self.workers;
        let v = match f {
            WorkerField::Requests => ws.read(w, field!(ffi::uwsgi_worker, requests)),
            WorkerField::DeltaRequests => ws.read(w, field!(ffi::uwsgi_worker, delta_requests)),
            WorkerField::Respawns => ws.read(w, field!(ffi::uwsgi_worker, respawn_count)),
            WorkerField::AvgResponseTime => {
                ws.read(w, field!(ffi::uwsgi_worker, avg_response_time))
            }
            WorkerField::Tx => ws.read(w, field!(ffi::uwsgi_worker, tx)),
            WorkerField::Rss => ws.read(w, field!(ffi::uwsgi_worker, rss_size)),
            WorkerField::Vsz => ws.read(w, field!(ffi::uwsgi_worker, vsz_size)),
            WorkerField::RunningTime => ws.read(w, field!(ffi::uwsgi_worker, running_time)),
            WorkerField::Harakiri => ws.read(w, field!(ffi::uwsgi_worker, harakiri_count)),
            WorkerField::Signals => ws.read(w, field!(ffi::uwsgi_worker, signals)),
            WorkerField::Apps => {
                return ws
                    .read(w, field!(ffi::uwsgi_worker, apps_cnt))
                    .map_or(0, |n| i64::from(n.max(0)))
            }
            WorkerField::SignalQueue => {
                // A worker closes the other workers' pipe ends after fork (master_utils.c), so
                // their fd numbers may name something else there: only the master, which
                // holds them all, and a worker for its own pipe can measure.
                let master = host::uwsgi::pid() == self.master_pid;
                if !master && host::uwsgi::my_worker_id() != w {
                    return 0;
                }
                return ws
                    .read(w, field!(ffi::uwsgi_worker, signal_pipe))
                    .and_then(|pipe| net::bytes_readable(pipe[1]))
                    .unwrap_or(0);
            }
            WorkerField::Accepting => {
                return ws
                    .read(w, field!(ffi::uwsgi_worker, accepting))
                    .map_or(0, |v| v.saturating_i64().max(0))
            }
            WorkerField::LastSpawnUs => {
                return ws
                    .read(w, field!(ffi::uwsgi_worker, last_spawn))
                    .map_or(0, |v| v.saturating_i64().max(0).saturating_mul(1_000_000))
            }
            WorkerField::Exceptions => {
                let Some(cs) = self.cores.get(w) else {
                    return 0;
                };
                let sum = (0..cs.len())
                    .filter_map(|c| cs.read(c, field!(ffi::uwsgi_core, exceptions)))
                    .fold(0u64, u64::wrapping_add);
                return sum.saturating_i64();
            }
        };
        v.map_or(0, Int::saturating_i64)
    }

    fn core_field(&self, w: usize, c: usize, f: CoreField) -> i64 {
        let Some(cs) = self.cores.get(w) else {
            return 0;
        };
        let v = match f {
            CoreField::Requests => cs.read(c, field!(ffi::uwsgi_core, requests)),
            CoreField::WriteErrors => cs.read(c, field!(ffi::uwsgi_core, write_errors)),
            CoreField::RoutedRequests => cs.read(c, field!(ffi::uwsgi_core, routed_requests)),
            CoreField::StaticRequests => cs.read(c, field!(ffi::uwsgi_core, static_requests)),
            CoreField::OffloadedRequests => cs.read(c, field!(ffi::uwsgi_core, offloaded_requests)),
            CoreField::Exceptions => cs.read(c, field!(ffi::uwsgi_core, exceptions)),
            CoreField::ReadErrors => cs.read(c, field!(ffi::uwsgi_core, read_errors)),
            CoreField::InRequest => {
                return cs
                    .read(c, field!(ffi::uwsgi_core, in_request))
                    .map_or(0, |v| i64::from(v != 0))
            }
        };
        v.map_or(0, Int::saturating_i64)
    }

    /// The worker's state, decided as uWSGI's stats server does.
    fn status(&self, w: usize) -> WorkerStatus {
        if w == 0 || w > self.numproc {
            return WorkerStatus::Idle;
        }
        let ws = &self.workers;
        let flag = |v: Option<i32>| v.is_some_and(|v| v != 0);
        let busy = (self.is_busy)(w);
        WorkerStatus::decide(
            flag(ws.read(w, field!(ffi::uwsgi_worker, cheaped))),
            flag(ws.read(w, field!(ffi::uwsgi_worker, suspended))),
            flag(ws.read(w, field!(ffi::uwsgi_worker, sig))),
            busy,
        )
    }

    fn app_field(&self, w: usize, a: usize, f: AppField) -> i64 {
        let in_use = self
            .workers
            .read(w, field!(ffi::uwsgi_worker, apps_cnt))
            .map_or(0, |n| usize::try_from(n).unwrap_or(0));
        let Some(apps) = self.apps.get(w).filter(|_| a < in_use) else {
            return 0;
        };
        let v = match f {
            AppField::Requests => apps.read(a, field!(ffi::uwsgi_app, requests)),
            AppField::Exceptions => apps.read(a, field!(ffi::uwsgi_app, exceptions)),
            AppField::StartupTime => {
                return apps
                    .read(a, field!(ffi::uwsgi_app, startup_time))
                    .map_or(0, |t| t.saturating_i64().max(0))
            }
        };
        v.map_or(0, Int::saturating_i64)
    }

    fn socket_queue(&self, si: usize, metric: Option<usize>, max: bool, scratch: &Scratch) -> i64 {
        let Some(s) = self.sockets.get(si) else {
            return 0;
        };
        if s.unix {
            // From the kernel (sock_diag); where it cannot tell, as uWSGI: no queue length for
            // UNIX sockets, and the configured backlog as the limit.
            return match scratch.unix_queues.get(si).copied().flatten() {
                Some((queue, limit)) => i64::from(if max { limit } else { queue }),
                None if max => self.listen_backlog,
                None => 0,
            };
        }
        match net::tcp_listen_queue(s.fd) {
            Some((queue, limit)) => i64::from(if max { limit } else { queue }),
            None if max => self.listen_backlog,
            None => metric
                .and_then(|m| self.slots.get(m))
                .map_or(0, |s| s.read()),
        }
    }

    fn shared_field(&self, f: SharedField) -> i64 {
        let v = match f {
            SharedField::Backlog => self.shared.read(0, field!(ffi::uwsgi_shared, backlog)),
            SharedField::Load => self.shared.read(0, field!(ffi::uwsgi_shared, load)),
            SharedField::BacklogErrors => self
                .shared
                .read(0, field!(ffi::uwsgi_shared, backlog_errors)),
        };
        v.map_or(0, Int::saturating_i64)
    }

    fn cache_field(&self, ci: usize, f: CacheField) -> i64 {
        let Some(c) = self.caches.get(ci) else {
            return 0;
        };
        let v = match f {
            CacheField::Items => c.read(0, field!(ffi::uwsgi_cache, n_items)),
            CacheField::MaxItems => c.read(0, field!(ffi::uwsgi_cache, max_items)),
            CacheField::Hits => c.read(0, field!(ffi::uwsgi_cache, hits)),
            CacheField::Misses => c.read(0, field!(ffi::uwsgi_cache, miss)),
            CacheField::Full => c.read(0, field!(ffi::uwsgi_cache, full)),
        };
        v.map_or(0, Int::saturating_i64)
    }

    fn spooler_field(&self, si: usize, f: SpoolerField) -> i64 {
        let Some(s) = self.spoolers.get(si) else {
            return 0;
        };
        match f {
            SpoolerField::Tasks => s.read(0, field!(ffi::uwsgi_spooler, tasks)),
            SpoolerField::Respawns => s.read(0, field!(ffi::uwsgi_spooler, respawned)),
            SpoolerField::Running => {
                return s
                    .read(0, field!(ffi::uwsgi_spooler, running))
                    .map_or(0, |v| v.saturating_i64().max(0))
            }
        }
        .map_or(0, Int::saturating_i64)
    }

    fn mule_field(&self, m: usize, f: MuleField) -> i64 {
        let ms = &self.mules;
        match f {
            MuleField::Running => ms
                .read(m, field!(ffi::uwsgi_mule, pid))
                .map_or(0, |p| i64::from(p > 0)),
            MuleField::Signals => ms
                .read(m, field!(ffi::uwsgi_mule, signals))
                .map_or(0, Int::saturating_i64),
            MuleField::InSignal => ms
                .read(m, field!(ffi::uwsgi_mule, sig))
                .map_or(0, |s| i64::from(s != 0)),
        }
    }

    /// FIONREAD on the workers' signal pipe, as the stats server computes `signal_queue`.
    fn signal_queue(&self) -> i64 {
        self.shared
            .read(0, field!(ffi::uwsgi_shared, worker_signal_pipe))
            .and_then(|pipe| net::bytes_readable(pipe[1]))
            .unwrap_or(0)
    }

    /// Age of the worker's longest-running request, from its cores' `in_request` and
    /// `req.start_of_request` (the per-core request structs live in shared memory).
    fn oldest_request_us(&self, w: usize, now_us: i64) -> i64 {
        let Some(cs) = self.cores.get(w) else {
            return 0;
        };
        let oldest = (0..cs.len())
            .filter(|&c| {
                cs.read(c, field!(ffi::uwsgi_core, in_request))
                    .is_some_and(|v| v != 0)
            })
            .filter_map(|c| cs.read(c, field!(ffi::uwsgi_core, req.start_of_request)))
            .filter(|&start| start > 0)
            .min();
        oldest.map_or(0, |start| {
            now_us.saturating_sub(start.saturating_i64()).max(0)
        })
    }

    fn pid_of(&self, p: Proc) -> Option<i32> {
        match p {
            Proc::Master => Some(self.master_pid),
            Proc::Worker(w) => self
                .workers
                .read(w, field!(ffi::uwsgi_worker, pid))
                .filter(|&pid| pid > 0),
        }
    }

    fn proc_field(&self, p: Proc, f: ProcField, scratch: &mut Scratch) -> i64 {
        let i = match p {
            Proc::Master => 0,
            Proc::Worker(w) => w,
        };
        let Some(cached) = scratch.procs.get_mut(i) else {
            return 0;
        };
        let st = *cached.get_or_insert_with(|| {
            self.pid_of(p)
                .map(|pid| proc_stat(i, pid))
                .unwrap_or_default()
        });
        match f {
            ProcField::CpuUs => st.cpu_us,
            ProcField::RssBytes => st.rss_bytes,
            ProcField::OpenFds => st.fds,
        }
    }

    /// Copies uWSGI's metrics into `last` under their read lock, never waiting for it: when a
    /// writer holds it (a process stuck or killed inside `uwsgi_metric_*`), `last` keeps the
    /// values this scraper read before and the scrape counts as stale. A scraper with nothing
    /// read yet reads the values without the lock, as uWSGI allows (each is an aligned int64
    /// written whole): a counter served as 0 would look like a reset.
    fn read_metrics(&self, last: &mut Vec<i64>) {
        let read = |last: &mut Vec<i64>| {
            last.clear();
            last.extend(self.slots.iter().map(|s| s.read()));
        };
        match MetricsReadLock::try_acquire() {
            TryRead::Held(_lock) => read(last),
            TryRead::NoTryLock => read(last),
            TryRead::Busy => {
                if let Some(c) = self.stale.first() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                if last.len() != self.slots.len() {
                    read(last);
                }
            }
        }
    }

    /// The accept queues of the UNIX sockets, one netlink exchange for all of them (index:
    /// socket; `None` for TCP ones and where the kernel cannot tell).
    fn read_unix_queues(&self, scratch: &mut Scratch) {
        scratch.unix_queues.clear();
        if !self.sockets.iter().any(|s| s.inode.is_some()) {
            return;
        }
        scratch.inodes.clear();
        scratch
            .inodes
            .extend(self.sockets.iter().map(|s| s.inode.unwrap_or(0)));
        if let Err(e) = host::sock_diag::unix_listen_queues(
            &scratch.inodes,
            &mut scratch.unix_queues,
            &mut scratch.diag_buf,
        ) {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                host::log(&format!(
                    "cannot read UNIX sockets' listen queues from the kernel (netlink sock_diag: \
                     {e}); uwsgi_socket_listen_queue keeps uWSGI's figure for them (0)"
                ));
            }
        }
    }

    /// What `/readyz` decides on, read now: each worker's flags in the worker table (shared
    /// memory), uWSGI's cheap mode, and every socket's listen queue (TCP_INFO; one sock_diag
    /// exchange for the UNIX ones). Bounded and never blocking: the master calls it.
    pub(crate) fn readiness(&self, limit: QueueLimit, scratch: &mut Scratch) -> Verdict<'_> {
        let ws = &self.workers;
        let flag = |v: Option<i32>| v.is_some_and(|v| v != 0);
        let workers = (1..=self.numproc).map(|w| health::Worker {
            running: ws
                .read(w, field!(ffi::uwsgi_worker, pid))
                .is_some_and(|p| p > 0),
            accepting: flag(ws.read(w, field!(ffi::uwsgi_worker, accepting))),
            cheaped: flag(ws.read(w, field!(ffi::uwsgi_worker, cheaped))),
            suspended: flag(ws.read(w, field!(ffi::uwsgi_worker, suspended))),
            next_request: flag(ws.read(w, field!(ffi::uwsgi_worker, manage_next_request))),
        });
        if limit != QueueLimit::Off {
            self.read_unix_queues(scratch);
        }
        let queues = &scratch.unix_queues;
        let sockets = self
            .sockets
            .iter()
            .enumerate()
            .map(|(i, s)| health::Socket {
                name: &s.name,
                queue: match limit {
                    QueueLimit::Off => None,
                    _ if s.unix => queues.get(i).copied().flatten(),
                    _ => net::tcp_listen_queue(s.fd),
                },
            });
        health::decide(workers, (self.is_cheap)(), sockets, limit)
    }

    /// Sets `values` to one value per source.
    pub(crate) fn fill(&self, sources: &[Source], values: &mut Vec<i64>, scratch: &mut Scratch) {
        values.clear();
        values.resize(sources.len(), 0);
        if !self.slots.is_empty() {
            self.read_metrics(&mut scratch.metrics);
            for (v, src) in values.iter_mut().zip(sources) {
                if let Source::Metric(i) = *src {
                    *v = scratch.metrics.get(i).copied().unwrap_or(0);
                }
            }
        }
        // One decision per worker per scrape: exactly one status series of a worker is 1 even
        // when it changes state while the scrape runs.
        scratch.statuses.clear();
        scratch
            .statuses
            .extend((0..=self.numproc).map(|w| self.status(w)));
        scratch.procs.clear();
        scratch.procs.resize(self.numproc + 1, None);
        self.read_unix_queues(scratch);
        let now_us = host::uwsgi::now_us();
        for (v, src) in values.iter_mut().zip(sources) {
            *v = match *src {
                Source::Metric(_) => continue,
                Source::Const(c) => c,
                Source::Worker(w, f) => self.worker_field(w, f),
                Source::Core(w, c, f) => self.core_field(w, c, f),
                Source::Status(w, st) => {
                    i64::from(scratch.statuses.get(w).is_some_and(|&s| s == st))
                }
                Source::App(w, a, f) => self.app_field(w, a, f),
                Source::SocketQueue { socket, metric } => {
                    self.socket_queue(socket, metric, false, scratch)
                }
                Source::SocketQueueMax(si) => self.socket_queue(si, None, true, scratch),
                Source::Shared(f) => self.shared_field(f),
                Source::SignalQueue => self.signal_queue(),
                Source::Cache(ci, f) => self.cache_field(ci, f),
                Source::Spooler(si, f) => self.spooler_field(si, f),
                Source::Mule(m, f) => self.mule_field(m, f),
                Source::Proc(p, f) => self.proc_field(p, f, scratch),
                Source::OldestRequest(w) => self.oldest_request_us(w, now_us),
                Source::AppSeries => {
                    i64::try_from(crate::app_metrics::registered()).unwrap_or(i64::MAX)
                }
                Source::AppDropped => crate::app_metrics::table()
                    .map_or(0, |t| i64::try_from(t.dropped()).unwrap_or(i64::MAX)),
                Source::WorkerExits(reason) => crate::exits::count(reason),
                Source::QueueSkew => {
                    i64::try_from(crate::latency::queue_skew()).unwrap_or(i64::MAX)
                }
                Source::RouteOverflow => {
                    i64::try_from(crate::routes::overflowed()).unwrap_or(i64::MAX)
                }
                Source::StaleReads => self.stale.first().map_or(0, |c| {
                    i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
                }),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use metrics_prometheus_engine::plan::{plan, Topology};

    use super::*;

    /// A `Live` over a worker table in local memory.
    fn live_over(workers: &'static [ffi::uwsgi_worker], is_busy: fn(usize) -> bool) -> Live {
        Live {
            slots: Vec::new(),
            workers: SharedSlice::from_static(workers),
            cores: Vec::new(),
            apps: Vec::new(),
            shared: SharedSlice::empty(),
            sockets: Vec::new(),
            caches: Vec::new(),
            spoolers: Vec::new(),
            mules: SharedSlice::empty(),
            numproc: workers.len() - 1,
            listen_backlog: 100,
            master_pid: 0,
            is_busy,
            is_cheap: || false,
            stale: &[],
        }
    }

    fn zeroed_workers(n: usize) -> &'static mut [ffi::uwsgi_worker] {
        host::uwsgi_shared::zeroed_workers(n + 1).leak()
    }

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// A worker that flips between busy and idle on every look.
    fn flapping(_: usize) -> bool {
        CALLS.fetch_add(1, Ordering::Relaxed) % 2 == 0
    }

    #[test]
    fn each_worker_is_in_exactly_one_state_per_scrape() {
        let workers = zeroed_workers(3);
        let live = live_over(workers, flapping);
        let t = Topology {
            workers: 3,
            ..Topology::default()
        };
        let p = plan(&t);
        let mut values = Vec::new();
        let mut scratch = Scratch::default();
        for _ in 0..4 {
            let before = CALLS.load(Ordering::Relaxed);
            live.fill(&p.sources, &mut values, &mut scratch);
            // One look per worker per scrape.
            assert_eq!(CALLS.load(Ordering::Relaxed) - before, 3);
            for w in 1..=3 {
                let ones: i64 = p
                    .sources
                    .iter()
                    .zip(&values)
                    .filter(|(s, _)| matches!(s, Source::Status(x, _) if *x == w))
                    .map(|(_, v)| *v)
                    .sum();
                assert_eq!(ones, 1, "worker {w}");
            }
        }
    }

    #[test]
    fn worker_fields_and_flags() {
        let workers = zeroed_workers(2);
        workers[1].requests = 42;
        workers[1].last_spawn = 1_700_000_000;
        workers[2].cheaped = 1;
        workers[2].accepting = -1;
        let live = live_over(workers, |_| false);
        assert_eq!(live.worker_field(1, WorkerField::Requests), 42);
        assert_eq!(
            live.worker_field(1, WorkerField::LastSpawnUs),
            1_700_000_000_000_000
        );
        assert_eq!(live.worker_field(2, WorkerField::Accepting), 0);
        assert_eq!(live.worker_field(3, WorkerField::Requests), 0);
        assert_eq!(live.status(2), WorkerStatus::Cheap);
        assert_eq!(live.status(1), WorkerStatus::Idle);
        assert_eq!(live.core_field(1, 0, CoreField::Requests), 0);
        assert_eq!(live.socket_queue(0, None, true, &Scratch::default()), 0);
    }

    #[test]
    fn readiness_reads_the_worker_flags() {
        let mut scratch = Scratch::default();
        let verdict = |set: fn(&mut ffi::uwsgi_worker), cheap: bool, scratch: &mut Scratch| {
            let workers = zeroed_workers(2);
            // Worker 1 never started; worker 2 runs and accepts, then `set` changes it.
            workers[2].pid = 4242;
            workers[2].accepting = 1;
            workers[2].manage_next_request = 1;
            set(&mut workers[2]);
            let mut live = live_over(workers, |_| false);
            if cheap {
                live.is_cheap = || true;
            }
            live.readiness(QueueLimit::default(), scratch).to_string()
        };
        assert_eq!(verdict(|_| {}, false, &mut scratch), "ready");
        for set in [
            |w: &mut ffi::uwsgi_worker| w.cheaped = 1,
            |w: &mut ffi::uwsgi_worker| w.suspended = 1,
            |w: &mut ffi::uwsgi_worker| w.manage_next_request = 0,
            |w: &mut ffi::uwsgi_worker| w.accepting = 0,
            |w: &mut ffi::uwsgi_worker| w.pid = 0,
        ] {
            assert_eq!(verdict(set, false, &mut scratch), "no worker accepting");
            // In cheap mode the master spawns the workers at the first connection.
            assert_eq!(verdict(set, true, &mut scratch), "ready");
        }
    }
}
