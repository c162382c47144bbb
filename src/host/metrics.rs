//! uWSGI's metrics list: its names (read once) and its shared value slots (read per scrape,
//! under uWSGI's metrics rwlock, held only for the copy).

use std::ffi::CStr;

use metrics_prometheus_engine::format::MetricType;

use super::abi::server;
use crate::ffi;

/// One metric of uWSGI's list: a pointer into the shared value mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot(*const i64);
// SAFETY: the pointer targets uWSGI's MAP_SHARED metrics mapping, created before fork and never
// unmapped; it is only ever read (volatile, aligned int64), so sharing it across threads is fine.
unsafe impl Send for Slot {}
// SAFETY: see Send.
unsafe impl Sync for Slot {}

impl Slot {
    /// Reads the value without the lock (uWSGI: "simple reading from a metric does not require
    /// locking"; the values are aligned int64s written whole).
    pub(crate) fn read(self) -> i64 {
        // SAFETY: `self.0` points at an aligned int64 in the shared metrics mapping (see Slot).
        unsafe { std::ptr::read_volatile(self.0) }
    }
}

/// uWSGI's metrics list, copied once: it never changes after `uwsgi_setup_metrics`.
pub(crate) struct MetricsList {
    pub(crate) names: Vec<(String, MetricType)>,
    pub(crate) slots: Vec<Slot>,
}

/// Reads the metric list. `None` when the metrics subsystem is off or not yet set up.
pub(crate) fn read_metrics_list() -> Option<MetricsList> {
    // SAFETY: ABI checked; a pointer field written once by the master in uwsgi_setup_metrics.
    let mut m = unsafe { (*server()).metrics };
    if m.is_null() {
        return None;
    }
    let mut list = MetricsList {
        names: Vec::new(),
        slots: Vec::new(),
    };
    // Bounded walk: the list is acyclic by construction, but a corrupt one must not hang us.
    let limit = 1usize << 22;
    while !m.is_null() && list.slots.len() < limit {
        // SAFETY: `m` is a node of uWSGI's metrics list (heap, immutable after setup).
        let node = unsafe { &*m };
        m = node.next;
        if node.name.is_null() || node.value.is_null() {
            continue;
        }
        // SAFETY: uWSGI stores names as NUL-terminated strings (uwsgi_str).
        let name = unsafe { CStr::from_ptr(node.name) }
            .to_string_lossy()
            .into_owned();
        let ty = MetricType::from_uwsgi(node.type_).unwrap_or(MetricType::Gauge);
        list.names.push((name, ty));
        list.slots.push(Slot(node.value));
    }
    Some(list)
}

/// How often a scrape tries uWSGI's metrics lock before it serves the values it read last: a
/// writer holds it for one store (`uwsgi_metric_set` and friends), so a busy lock is usually
/// free a few hundred nanoseconds later; one that stays busy is held by a stuck or dead process.
const TRIES: usize = 4;
/// Spins between two tries (about a microsecond in all).
const SPINS: usize = 64;

/// What [`MetricsReadLock::try_acquire`] got.
pub(crate) enum TryRead {
    /// The read lock, held until dropped.
    Held(MetricsReadLock),
    /// A writer held it through every try.
    Busy,
    /// This lock engine (ipcsem) has no try-lock: read without it, as uWSGI allows ("simple
    /// reading from a metric does not require locking": each value is an aligned int64).
    NoTryLock,
}

/// uWSGI's metrics rwlock, held for reading until dropped, so no path (panic included) leaves
/// it held: it is shared by every process of the instance. Never waited for: a worker killed
/// while holding the write lock leaves it held forever, and the master must not hang on it.
pub(crate) struct MetricsReadLock(());

impl MetricsReadLock {
    pub(crate) fn try_acquire() -> TryRead {
        for attempt in 0..TRIES {
            if attempt > 0 {
                for _ in 0..SPINS {
                    std::hint::spin_loop();
                }
            }
            // SAFETY: metrics_lock is initialised in uwsgi_setup_metrics before any metric
            // exists; callers only get here with a metrics list. A try-lock never waits; when it
            // succeeds the lock is released by Drop.
            match unsafe { ffi::metrics_tryrlock(server()) } {
                1 => return TryRead::Held(MetricsReadLock(())),
                0 => continue,
                _ => return TryRead::NoTryLock,
            }
        }
        TryRead::Busy
    }
}

impl Drop for MetricsReadLock {
    fn drop(&mut self) {
        // SAFETY: paired with the read lock taken in `try_acquire`.
        unsafe { ffi::metrics_rwunlock(server()) };
    }
}

/// Takes uWSGI's metrics write lock and exits without releasing it: the fault-injection build's
/// model of a worker killed inside `uwsgi.metric_inc`. A process-shared rwlock is not robust,
/// so the lock stays held for the life of the instance.
#[cfg(feature = "fault-injection")]
pub(crate) fn die_holding_write_lock() -> ! {
    // SAFETY: as in `try_acquire`; this may block until the lock is free, in a worker serving a
    // test request, never in the master.
    unsafe { ffi::metrics_wlock(server()) };
    // SAFETY: a plain process exit, skipping atexit handlers (which could try the lock).
    unsafe { libc::_exit(3) }
}
