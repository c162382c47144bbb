//! Fields of uWSGI's server struct that the plugin reads or sets, each behind a safe function.

use std::ffi::c_int;
#[cfg(uwsgi_routing)]
use std::ffi::CStr;
#[cfg(uwsgi_routing)]
use std::sync::OnceLock;

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

/// `uwsgi.status.is_cheap`: cheap mode (`--cheap`, or `--idle` after its timeout): the
/// workers are stopped and the master spawns them at the first connection on a socket.
pub(crate) fn is_cheap() -> bool {
    // SAFETY: ABI checked; an int the master sets and clears in its own loop, read there.
    unsafe { (*server()).status.is_cheap != 0 }
}

/// `uwsgi.mywid`: this process' worker id (0 in the master and other non-worker processes).
pub(crate) fn my_worker_id() -> usize {
    // SAFETY: ABI checked; an int each process sets for itself after fork.
    usize::try_from(unsafe { (*server()).mywid }).unwrap_or(0)
}

/// What this process is to uWSGI, for the application metrics' per-process slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Master,
    /// Worker id, 1-based.
    Worker(usize),
    /// Mule id, 1-based.
    Mule(usize),
    /// Position in uWSGI's spooler list, 0-based.
    Spooler(usize),
    /// Anything else: a process the application forked itself, an Emperor, a daemon.
    Foreign,
}

/// This process' role. uWSGI sets `mypid` in each process it forks (worker, mule, spooler),
/// before any application code runs there; a process the application forks inherits it, so
/// `mypid != getpid()` tells such a process apart. `master_pid` is the master's, captured at
/// startup.
pub(crate) fn role(master_pid: i32) -> Role {
    // SAFETY: ABI checked; ints and a pointer each process sets for itself after fork.
    let srv = unsafe { &*server() };
    let me = pid();
    if srv.mypid != me {
        return Role::Foreign;
    }
    if srv.mywid > 0 {
        return Role::Worker(srv.mywid as usize);
    }
    if srv.muleid > 0 {
        return Role::Mule(srv.muleid as usize);
    }
    if !srv.i_am_a_spooler.is_null() {
        let mut node = srv.spoolers;
        let mut i = 0;
        while !node.is_null() && i < 1024 {
            if node == srv.i_am_a_spooler {
                return Role::Spooler(i);
            }
            // SAFETY: a node of uwsgi.spoolers (shared memory, immutable after setup).
            node = unsafe { (*node).next };
            i += 1;
        }
        return Role::Foreign;
    }
    if me == master_pid {
        Role::Master
    } else {
        Role::Foreign
    }
}

/// `uwsgi.mules_cnt`: mules configured (0 until uWSGI sets them up, after `post_init`).
pub(crate) fn mules() -> usize {
    // SAFETY: ABI checked; an int set before any mule is forked.
    usize::try_from(unsafe { (*server()).mules_cnt }).unwrap_or(0)
}

/// The options that make uWSGI end a worker, as `uwsgi_close_request` and the master's checks
/// read them (bytes and seconds; 0 = off).
pub(crate) fn exit_limits() -> metrics_prometheus_engine::exits::Limits {
    // SAFETY: ABI checked; integers set during option parsing, read-only afterwards.
    let srv = unsafe { &*server() };
    metrics_prometheus_engine::exits::Limits {
        max_requests: srv.max_requests,
        #[cfg(uwsgi_max_requests_delta)]
        max_requests_delta: srv.max_requests_delta,
        // 2.0.21 has no --max-requests-delta.
        #[cfg(not(uwsgi_max_requests_delta))]
        max_requests_delta: 0,
        min_worker_lifetime: srv.min_worker_lifetime,
        reload_on_rss: srv.reload_on_rss,
        reload_on_as: srv.reload_on_as,
        evil_reload_on_rss: srv.evil_reload_on_rss,
        evil_reload_on_as: srv.evil_reload_on_as,
        max_worker_lifetime: srv.max_worker_lifetime,
        max_worker_lifetime_delta: srv.max_worker_lifetime_delta,
    }
}

/// Wall-clock seconds, as `uwsgi_now()`.
pub(crate) fn now_s() -> i64 {
    now_us() / 1_000_000
}

/// Ends the process during startup, as uWSGI itself does for a bad option.
pub(crate) fn exit_at_startup() -> ! {
    // SAFETY: plain process exit; uWSGI's atexit handlers run as on its own exit(1).
    unsafe { libc::exit(1) }
}

/// This process' id.
pub(crate) fn pid() -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::getpid() }
}

/// Whether process `pid` exists (signal 0).
pub(crate) fn pid_alive(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists (and may be signalled).
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

/// The value of the last `--name` option uWSGI applied (`uwsgi_configure` applies
/// `uwsgi.exported_opts` in order, so the last one wins for a plain setting): `Some(None)` for one
/// given without a value (a command-line flag), `None` when the option was not given. uWSGI
/// keeps the list and its strings for the life of the process.
#[cfg(uwsgi_routing)]
fn last_option(name: &[u8]) -> Option<Option<&'static [u8]>> {
    let s = server();
    // SAFETY: ABI checked; option parsing is over and the list is never written again in this
    // process (a reload execs a new one).
    let list = unsafe { (*s).exported_opts };
    // SAFETY: as above.
    let count = usize::try_from(unsafe { (*s).exported_opts_cnt }).unwrap_or(0);
    if list.is_null() {
        return None;
    }
    // SAFETY: the list holds `exported_opts_cnt` pointers (add_exported_option grows both
    // together), unchanged from here on (above).
    let opts = unsafe { std::slice::from_raw_parts(list, count) };
    let mut found = None;
    for &opt in opts {
        if opt.is_null() {
            continue;
        }
        // SAFETY: a live `struct uwsgi_opt` of that list.
        let opt = unsafe { &*opt };
        if opt.key.is_null() {
            continue;
        }
        // SAFETY: `key` is a NUL-terminated option name kept for the process' life.
        if unsafe { CStr::from_ptr(opt.key) }.to_bytes() != name {
            continue;
        }
        found = Some((!opt.value.is_null()).then(|| {
            // SAFETY: `value`, when set, is a NUL-terminated string kept for the process' life.
            unsafe { CStr::from_ptr(opt.value) }.to_bytes()
        }));
    }
    found
}

/// C's `atoi` on the option value, as `uwsgi_opt_set_int` reads it: optional blanks and sign,
/// then the leading digits (`"true"` is 0).
#[cfg(uwsgi_routing)]
fn atoi(v: &[u8]) -> i64 {
    let v = v.trim_ascii_start();
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let n = digits
        .iter()
        .take_while(|d| d.is_ascii_digit())
        .fold(0i64, |n, &d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if neg {
        -n
    } else {
        n
    }
}

/// Whether this instance's own `--http` router keeps client connections alive:
/// `--http-keepalive` (plugins/http/http.c, `uhttp.keepalive`, set by `uwsgi_opt_set_int`: 1
/// without a value, else the number). Read once per process.
#[cfg(uwsgi_routing)]
pub(crate) fn http_router_keepalive() -> bool {
    static KEEPALIVE: OnceLock<bool> = OnceLock::new();
    *KEEPALIVE.get_or_init(|| match last_option(b"http-keepalive") {
        None => false,
        Some(None) => true,
        Some(Some(v)) => atoi(v) != 0,
    })
}

/// `uwsgi.protocol` (`--protocol`): the protocol of sockets declared without one, if set.
#[cfg(uwsgi_routing)]
pub(crate) fn default_protocol() -> Option<&'static [u8]> {
    // SAFETY: ABI checked; a string set during option parsing and never freed.
    let p = unsafe { (*server()).protocol };
    // SAFETY: NULL or NUL-terminated, alive for the process.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

#[cfg(uwsgi_routing)]
#[cfg(test)]
mod tests {
    use super::atoi;

    #[test]
    fn atoi_like_c() {
        for (v, n) in [
            (&b"1"[..], 1),
            (b"0", 0),
            (b"  15s", 15),
            (b"+3", 3),
            (b"-2", -2),
            (b"true", 0),
            (b"", 0),
            (b"99999999999999999999999", i64::MAX),
        ] {
            assert_eq!(atoi(v), n, "{v:?}");
        }
    }
}
