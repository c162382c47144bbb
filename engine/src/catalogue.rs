//! Every family the host computes itself (from uWSGI state outside its metrics list), declared
//! once: name without the prefix, type, unit scale and HELP text. The planner ([`crate::plan`])
//! attaches labels and value sources; the engine ([`crate::format`]) renders them. The families
//! of uWSGI's own metrics list are in `format/table.rs`.

use crate::format::{Extra, Kind};

/// A host-computed family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyDef {
    /// Family name without the prefix (for a counter, without `_total`).
    pub name: &'static str,
    pub kind: Kind,
    /// Values are divided by `10^scale` (6: microseconds to seconds).
    pub scale: u8,
    pub help: &'static str,
}

impl FamilyDef {
    /// One series of this family.
    pub fn series(&self, labels: Vec<(String, String)>) -> Extra {
        Extra {
            family: self.name,
            kind: self.kind,
            scale: self.scale,
            help: self.help,
            labels,
        }
    }
}

pub(crate) const fn def(
    name: &'static str,
    kind: Kind,
    scale: u8,
    help: &'static str,
) -> FamilyDef {
    FamilyDef {
        name,
        kind,
        scale,
        help,
    }
}

use Kind::{Counter, Gauge};

pub const UP: FamilyDef = def("up", Gauge, 0, "1: the exporter could read uWSGI's state.");
pub const STALE_READS: FamilyDef = def(
    "exporter_stale_reads",
    Counter,
    0,
    "Scrapes that served the last values read from uWSGI's metrics list because a process held its lock (stuck or killed while updating a metric): the exporter never waits for it.",
);
pub const APP_SERIES: FamilyDef = def(
    "app_metrics_series",
    Gauge,
    0,
    "Application metric samples (a counter, a gauge, a histogram bucket) registered in the shared table of --prometheus-app-metrics.",
);
pub const APP_CAPACITY: FamilyDef = def(
    "app_metrics_capacity",
    Gauge,
    0,
    "Samples the shared table of --prometheus-app-metrics holds (--prometheus-app-series).",
);
pub const APP_DROPPED: FamilyDef = def(
    "app_metrics_dropped_series",
    Counter,
    0,
    "Application metric samples not stored because the shared table was full or their labels too long: prometheus_client keeps them in the process that made them, and they are not exported.",
);
pub const BUILD_INFO: FamilyDef = def(
    "build_info",
    Gauge,
    0,
    "Always 1; labels: the uWSGI version, the metrics_prometheus plugin version and the git commit it was built from.",
);
pub const START_TIME: FamilyDef = def(
    "start_time_seconds",
    Gauge,
    6,
    "When the uWSGI master started, in seconds since the Unix epoch.",
);
pub const WORKERS: FamilyDef = def(
    "workers",
    Gauge,
    0,
    "Worker processes configured (--processes/--workers), cheaped ones included.",
);
pub const LISTEN_QUEUE: FamilyDef = def(
    "listen_queue",
    Gauge,
    0,
    "Largest listen queue over uWSGI's sockets, as sampled by the master about once a second (the stats server's listen_queue).",
);
pub const LOAD: FamilyDef = def(
    "load",
    Gauge,
    0,
    "uWSGI's load figure (the stats server's load: the listen backlog seen by the master).",
);
pub const SIGNAL_QUEUE: FamilyDef = def(
    "signal_queue",
    Gauge,
    0,
    "Bytes of uWSGI signals waiting in the workers' shared signal queue (the stats server's signal_queue).",
);

pub const CACHE_ITEMS: FamilyDef = def("cache_items", Gauge, 0, "Items in the uWSGI cache.");
pub const CACHE_MAX_ITEMS: FamilyDef = def(
    "cache_max_items",
    Gauge,
    0,
    "Capacity of the uWSGI cache, in items.",
);
pub const CACHE_HITS: FamilyDef = def(
    "cache_hits",
    Counter,
    0,
    "Lookups that found their key in the uWSGI cache.",
);
pub const CACHE_MISSES: FamilyDef = def(
    "cache_misses",
    Counter,
    0,
    "Lookups that did not find their key in the uWSGI cache.",
);
pub const CACHE_FULL: FamilyDef = def(
    "cache_full",
    Counter,
    0,
    "Writes refused because the uWSGI cache was full.",
);

pub const SPOOLER_TASKS: FamilyDef = def("spooler_tasks", Counter, 0, "Tasks run by the spooler.");
pub const SPOOLER_RESPAWNS: FamilyDef = def(
    "spooler_respawns",
    Counter,
    0,
    "Times the spooler process was respawned.",
);
pub const SPOOLER_RUNNING: FamilyDef = def(
    "spooler_running",
    Gauge,
    0,
    "1 while the spooler runs a task.",
);

// uWSGI 2.0 never updates a mule's respawn_count or last_spawn: not exported.
pub const MULE_RUNNING: FamilyDef = def(
    "mule_running",
    Gauge,
    0,
    "1 while the mule process exists (its pid is set).",
);
pub const MULE_SIGNALS: FamilyDef = def(
    "mule_signals",
    Counter,
    0,
    "uWSGI signals handled by the mule.",
);
pub const MULE_IN_SIGNAL: FamilyDef = def(
    "mule_in_signal",
    Gauge,
    0,
    "1 while the mule runs a signal handler.",
);

pub const SOCKET_LISTEN_QUEUE: FamilyDef = def(
    "socket_listen_queue",
    Gauge,
    0,
    "Connections waiting in the socket's listen queue, from the kernel (TCP_INFO for TCP, netlink sock_diag for UNIX sockets, where uWSGI's own figure is always 0).",
);
pub const SOCKET_LISTEN_QUEUE_MAX: FamilyDef = def(
    "socket_listen_queue_max",
    Gauge,
    0,
    "Size of the socket's listen queue (its backlog).",
);

pub const WORKER_STATUS: FamilyDef = def(
    "worker_status",
    Gauge,
    0,
    "1 for the worker's current state (busy, idle, cheap, pause or sig, as in uWSGI's stats server), 0 for the others.",
);
pub const WORKER_ACCEPTING: FamilyDef = def(
    "worker_accepting",
    Gauge,
    0,
    "1 when the worker accepts requests (0 while it starts or is being respawned).",
);
pub const WORKER_HARAKIRI: FamilyDef = def(
    "worker_harakiri",
    Counter,
    0,
    "Times the worker was killed by harakiri.",
);
pub const WORKER_EXCEPTIONS: FamilyDef = def(
    "worker_exceptions",
    Counter,
    0,
    "Exceptions raised by the application in the worker (all cores).",
);
pub const WORKER_SIGNALS: FamilyDef = def(
    "worker_signals",
    Counter,
    0,
    "uWSGI signals handled by the worker.",
);
pub const WORKER_LAST_SPAWN: FamilyDef = def(
    "worker_last_spawn_timestamp_seconds",
    Gauge,
    6,
    "When the worker was last spawned, in seconds since the Unix epoch.",
);
pub const WORKER_EXITS: FamilyDef = def(
    "worker_exits",
    Counter,
    0,
    "Worker processes that ended, by reason: harakiri, max_requests, reload_on_rss, reload_on_as (--reload-on-* and --evil-reload-on-*), max_lifetime, reload (a workers', chain or graceful reload ordered by the master), cheaper (stopped by the cheaper subsystem or cheap mode), signal (killed by a signal the master did not send: OOM killer, kill, a native crash), exit (the worker exited by itself: sys.exit, os._exit), unknown (reaped before the plugin saw how it ended). Counted by the master since it started.",
);
pub const WORKER_CORE_IN_REQUEST: FamilyDef = def(
    "worker_core_in_request",
    Gauge,
    0,
    "1 while the core (thread or async slot) of the worker is handling a request.",
);
pub const WORKER_OLDEST_REQUEST: FamilyDef = def(
    "worker_oldest_request_seconds",
    Gauge,
    6,
    "Age of the longest-running request in the worker right now (0 when idle): what harakiri acts on.",
);
pub const WORKER_APP_REQUESTS: FamilyDef = def(
    "worker_app_requests",
    Counter,
    0,
    "Requests served by the application in the worker.",
);
pub const WORKER_APP_EXCEPTIONS: FamilyDef = def(
    "worker_app_exceptions",
    Counter,
    0,
    "Exceptions raised by the application in the worker.",
);

const PROC_CPU_HELP: &str = "CPU time (user + system) of the process, from its CPU-time clock.";
const PROC_RSS_HELP: &str = "Resident memory of the process, from /proc.";
const PROC_FDS_HELP: &str = "Open file descriptors of the process, from /proc.";
pub const MASTER_CPU: FamilyDef = def("master_cpu_seconds", Counter, 6, PROC_CPU_HELP);
pub const MASTER_RSS: FamilyDef = def("master_resident_memory_bytes", Gauge, 0, PROC_RSS_HELP);
pub const MASTER_FDS: FamilyDef = def("master_open_fds", Gauge, 0, PROC_FDS_HELP);
pub const WORKER_CPU: FamilyDef = def("worker_cpu_seconds", Counter, 6, PROC_CPU_HELP);
pub const WORKER_RSS: FamilyDef = def("worker_resident_memory_bytes", Gauge, 0, PROC_RSS_HELP);
pub const WORKER_FDS: FamilyDef = def("worker_open_fds", Gauge, 0, PROC_FDS_HELP);

/// The request-duration histogram (rendered by the engine's histogram support, fed by the
/// after-request hook).
pub const REQUEST_DURATION: &str = "request_duration_seconds";
pub const REQUEST_DURATION_HELP: &str = "Time from the start to the end of each request, as uWSGI measures it (end_of_request - start_of_request), over every worker, by method and status class.";

/// The queue-time histogram (`--prometheus-queue-time`, recorded by the same hook).
pub const REQUEST_QUEUE: &str = "request_queue_seconds";
pub const REQUEST_QUEUE_HELP: &str = "Time from the front proxy receiving each request (its X-Request-Start or X-Queue-Start header) to uWSGI starting it (start_of_request), over every worker; requests without a readable header are not counted, a header later than the start (clock skew) counts as 0.";
pub const REQUEST_QUEUE_SKEW: FamilyDef = def(
    "request_queue_skew",
    Counter,
    0,
    "Requests whose X-Request-Start or X-Queue-Start header named a time after uWSGI started them (the proxy's clock is ahead of this host's): counted as 0 in uwsgi_request_queue_seconds.",
);
pub const ROUTE_OVERFLOW: FamilyDef = def(
    "route_overflow",
    Counter,
    0,
    "Requests whose route was new after --prometheus-route-max distinct routes had been seen: counted under route=\"other\" in the request histograms.",
);

/// Every family above, for documentation and tests.
pub const ALL: &[FamilyDef] = &[
    UP,
    STALE_READS,
    APP_SERIES,
    APP_CAPACITY,
    APP_DROPPED,
    BUILD_INFO,
    START_TIME,
    WORKERS,
    LISTEN_QUEUE,
    LOAD,
    SIGNAL_QUEUE,
    REQUEST_QUEUE_SKEW,
    ROUTE_OVERFLOW,
    CACHE_ITEMS,
    CACHE_MAX_ITEMS,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_FULL,
    SPOOLER_TASKS,
    SPOOLER_RESPAWNS,
    SPOOLER_RUNNING,
    MULE_RUNNING,
    MULE_SIGNALS,
    MULE_IN_SIGNAL,
    SOCKET_LISTEN_QUEUE,
    SOCKET_LISTEN_QUEUE_MAX,
    WORKER_STATUS,
    WORKER_ACCEPTING,
    WORKER_HARAKIRI,
    WORKER_EXCEPTIONS,
    WORKER_SIGNALS,
    WORKER_LAST_SPAWN,
    WORKER_EXITS,
    WORKER_CORE_IN_REQUEST,
    WORKER_OLDEST_REQUEST,
    WORKER_APP_REQUESTS,
    WORKER_APP_EXCEPTIONS,
    MASTER_CPU,
    MASTER_RSS,
    MASTER_FDS,
    WORKER_CPU,
    WORKER_RSS,
    WORKER_FDS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for d in ALL {
            assert!(d.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!d.name.ends_with("_total"), "{}", d.name);
            assert!(d.help.ends_with('.'), "{}", d.name);
            // Scaled families carry their unit in the name.
            assert!(d.scale == 0 || d.name.ends_with("_seconds"), "{}", d.name);
        }
    }
}
