//! The Emperor side of uWSGI (see docs/emperor-design.md): imperial monitors, their scanners,
//! and the Emperor's vassal list (`struct uwsgi_instance *ui`, a global of core/emperor.c that
//! uwsgi.h does not declare). Everything here runs in the Emperor's only thread, the one that
//! also edits the list.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::RawFd;

use metrics_prometheus_engine::emperor::Vassal;

use super::abi::{api, dlsym_default};
use crate::ffi;

/// `init`, `func` and `event_func` of a scanner.
pub(crate) type ScannerFn = unsafe extern "C" fn(*mut ffi::uwsgi_emperor_scanner);
type RegisterMonitor = unsafe extern "C" fn(*mut c_char, Option<ScannerFn>, Option<ScannerFn>);
// Compile-time proof that the type matches the binary's header.
const _: RegisterMonitor = ffi::uwsgi_register_imperial_monitor;

/// Vassals read per scrape at most; the rest of a longer list is left out.
pub(crate) const MAX_VASSALS: usize = 4096;

/// `uwsgi_register_imperial_monitor(scheme, init, func)`: every `--emperor scheme://...` value
/// becomes a scanner of it. False when the binary lacks the function.
pub(crate) fn register_monitor(scheme: &'static CStr, init: ScannerFn, func: ScannerFn) -> bool {
    let p = dlsym_default(c"uwsgi_register_imperial_monitor");
    if p.is_null() {
        return false;
    }
    // SAFETY: `p` is the binary's exported function of that name, whose type is checked above.
    let register = unsafe { std::mem::transmute::<*mut c_void, RegisterMonitor>(p) };
    // SAFETY: uWSGI keeps the scheme pointer (static here) and the two function pointers; it only
    // reads the string.
    unsafe { register(scheme.as_ptr() as *mut c_char, Some(init), Some(func)) };
    true
}

/// Whether an `emperor = prometheus://ADDR` value is configured (option parsing done).
pub(crate) fn prometheus_monitor_configured() -> bool {
    // SAFETY: ABI checked; `uwsgi.emperor` is the list option parsing built, never changed
    // after it.
    let mut node = unsafe { (*api().server).emperor };
    let mut seen = 0;
    while !node.is_null() && seen < 1024 {
        // SAFETY: a node of that list, heap-allocated by uwsgi_opt_add_string_list.
        let n = unsafe { &*node };
        if !n.value.is_null() {
            // SAFETY: option values are NUL-terminated strings that live as long as uWSGI.
            let v = unsafe { CStr::from_ptr(n.value) };
            if v.to_bytes().starts_with(b"prometheus://") {
                return true;
            }
        }
        node = n.next;
        seen += 1;
    }
    false
}

/// A scanner uWSGI created for one of our `--emperor` values; lives as long as the Emperor.
pub(crate) struct Scanner(*mut ffi::uwsgi_emperor_scanner);

impl Scanner {
    /// # Safety
    /// `p` is NULL or a scanner uWSGI passed to a monitor hook, valid for the process's life.
    pub(crate) unsafe fn from_raw(p: *mut ffi::uwsgi_emperor_scanner) -> Option<Scanner> {
        (!p.is_null()).then_some(Scanner(p))
    }

    /// The whole `--emperor` value (`prometheus://...`).
    pub(crate) fn arg(&self) -> String {
        // SAFETY: a live scanner (from_raw); `arg` is the option value, NUL-terminated or NULL.
        let arg = unsafe { (*self.0).arg };
        if arg.is_null() {
            return String::new();
        }
        // SAFETY: as above.
        unsafe { CStr::from_ptr(arg) }
            .to_string_lossy()
            .into_owned()
    }

    /// Makes `fd` the scanner's: when it is readable the Emperor loop calls `event`. Adds it to
    /// `uwsgi.emperor_queue` (which exists before any scanner is created).
    pub(crate) fn attach(&mut self, fd: RawFd, event: ScannerFn) -> bool {
        // SAFETY: ABI checked; emperor_queue is set by emperor_loop before it builds scanners,
        // in this thread.
        let queue = unsafe { (*api().server).emperor_queue };
        if queue < 0 {
            return false;
        }
        // SAFETY: a live scanner; uWSGI reads its fields only from this thread.
        let scanner = unsafe { &mut *self.0 };
        scanner.fd = fd;
        scanner.event_func = Some(event);
        // SAFETY: both are open descriptors of this process; uWSGI only calls epoll_ctl.
        unsafe { (api().add_fd_read)(queue, fd as c_int) >= 0 }
    }
}

/// Copies the Emperor's vassal list into `out` (cleared first; at most [`MAX_VASSALS`]).
/// Outside the Emperor loop (`ui` NULL) the list is empty.
pub(crate) fn read_vassals(out: &mut Vec<Vassal>) {
    out.clear();
    let head = dlsym_default(c"ui") as *mut *mut ffi::uwsgi_instance;
    if head.is_null() {
        return;
    }
    // SAFETY: `ui` is a pointer-sized global of the binary; emperor_loop points it at its
    // sentinel and only this thread changes it or the list.
    let sentinel = unsafe { *head };
    if sentinel.is_null() {
        return;
    }
    // SAFETY: the sentinel and every `ui_next` are live instances of the list (see above).
    let mut cur = unsafe { (*sentinel).ui_next };
    while !cur.is_null() && out.len() < MAX_VASSALS {
        // SAFETY: as above; a shared borrow for the copy only.
        let ui = unsafe { &*cur };
        let name = &ui.name;
        let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let bytes: Vec<u8> = name[..len].iter().map(|&c| c as u8).collect();
        out.push(Vassal {
            name: String::from_utf8_lossy(&bytes).into_owned(),
            running: ui.pid > 0 && super::uwsgi::pid_alive(ui.pid),
            respawns: ui.respawns,
            loyal: ui.loyal != 0,
            ready: ui.ready != 0,
            accepting: ui.accepting != 0,
            last_heartbeat: ui.last_heartbeat,
            on_demand: ui.pid <= 0 && ui.on_demand_fd > -1,
            scrape_up: None,
        });
        cur = ui.ui_next;
    }
}

/// Runs `f` when the process exits through `exit()` (the Emperor ends with `exit(0)` once its
/// vassals are gone; it never runs the plugins' `master_cleanup`).
pub(crate) fn at_exit(f: unsafe extern "C" fn()) {
    // SAFETY: the two pointer types differ only in `unsafe`; `f` is a plugin entry taking no
    // arguments, which is all atexit requires of it.
    let f = unsafe { std::mem::transmute::<unsafe extern "C" fn(), extern "C" fn()>(f) };
    // SAFETY: plain registration; libc calls `f` once, at exit, in this thread.
    unsafe { libc::atexit(f) };
}
