//! Fields of uWSGI's server struct that the plugin reads or sets, each behind a safe function.

use std::ffi::c_int;

use super::abi::{api, server};

/// Turns on uWSGI's metrics subsystem and the master (its collector thread runs there), as
/// `--enable-metrics` does. Called from `on_load`, during option parsing.
pub(crate) fn enable_metrics_and_master() {
    let s = server();
    // SAFETY: the ABI check passed, so `s` has this build's layout; option parsing is
    // single-threaded, and uWSGI's own option flags write these fields at the same stage.
    unsafe { (*s).has_metrics = 1 };
    // SAFETY: as above.
    unsafe { (*s).master_process = 1 };
}

/// True when uWSGI was started with the metrics subsystem on.
pub(crate) fn has_metrics() -> bool {
    // SAFETY: ABI checked; an int read by the process that owns it.
    unsafe { (*server()).has_metrics != 0 }
}

/// True when uWSGI runs a master (the metrics collector thread lives there).
pub(crate) fn has_master() -> bool {
    // SAFETY: ABI checked; an int set during option parsing, read-only afterwards.
    unsafe { (*server()).master_process != 0 }
}

/// `uwsgi.master_queue`: the master's event queue, -1 until master_loop creates it.
pub(crate) fn master_queue() -> c_int {
    // SAFETY: ABI checked; read in the master thread, which is the only writer.
    unsafe { (*server()).master_queue }
}

/// Adds `fd` for read events to uWSGI's event queue `queue`.
pub(crate) fn add_fd_read(queue: c_int, fd: c_int) -> bool {
    // SAFETY: both are open descriptors of this process; uWSGI only calls epoll_ctl.
    unsafe { (api().add_fd_read)(queue, fd) >= 0 }
}

/// `uwsgi_worker_is_busy(wid)`: the stats server's definition of a busy worker.
pub(crate) fn worker_is_busy(wid: usize) -> bool {
    let Ok(wid) = c_int::try_from(wid) else {
        return false;
    };
    // SAFETY: uwsgi_worker_is_busy(int wid) only reads the shared worker table; callers pass a
    // wid <= numproc.
    unsafe { (api().worker_is_busy)(wid) != 0 }
}

/// `uwsgi.mywid`: this process' worker id (0 in the master and other non-worker processes).
pub(crate) fn my_worker_id() -> usize {
    // SAFETY: ABI checked; an int each process sets for itself after fork.
    usize::try_from(unsafe { (*server()).mywid }).unwrap_or(0)
}

/// `uwsgi.numproc`: worker processes configured. Known from option parsing on.
pub(crate) fn numproc() -> usize {
    // SAFETY: ABI checked; an int set during option parsing.
    usize::try_from(unsafe { (*server()).numproc }).unwrap_or(0)
}

/// Wall-clock microseconds, as `uwsgi_micros()` measures request times.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
