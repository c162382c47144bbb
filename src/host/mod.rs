//! The host layer: everything that touches uWSGI's memory, calls into uWSGI or makes a raw
//! syscall, behind typed, safe functions. All of the crate's `unsafe` lives here (and in the
//! plugin's entry points), each block with its `// SAFETY:`; `tests/layering.rs` checks it. Depends only on `ffi`, `cflags` and the pure engine.
//!
//! - [`log`]: uWSGI's logger (depends on nothing);
//! - [`abi`]: the ABI check (a `Result`) and uWSGI's resolved API;
//! - [`uwsgi`]: fields of the server struct;
//! - [`metrics`]: uWSGI's metrics list and its rwlock;
//! - [`instance`]: the one walk over uWSGI's pointers (workers, cores, apps, caches, spoolers,
//!   sockets), before fork;
//! - [`uwsgi_shared`]: bounds-checked, typed reads of uWSGI's shared structures (the worker
//!   table and friends);
//! - [`procfs`]: allocation-free /proc figures;
//! - [`net`], [`epoll`], [`fork`]: the dedicated server's sockets, poller and fork hygiene;
//! - [`sock_diag`]: the accept queue of listening UNIX sockets, from netlink;
//! - [`request`]: requests, the after-request chain, and routes for the route action;
//! - [`shared_counters`]: zeroed shared memory the plugin maps before fork (the request
//!   histograms, the application metrics, the stale-read count);
//! - [`alloc`]: the global allocator, and read-only mappings for data built before fork;
//! - [`children`]: how a child process ended, seen without reaping it (the exit tracker);
//! - [`emperor`]: imperial monitors, their scanners and the Emperor's vassal list.

pub(crate) mod abi;
pub(crate) mod alloc;
pub(crate) mod children;
pub(crate) mod emperor;
pub(crate) mod epoll;
pub(crate) mod fork;
pub(crate) mod instance;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod procfs;
pub(crate) mod request;
pub(crate) mod shared_counters;
pub(crate) mod sock_diag;
pub(crate) mod uwsgi;
pub(crate) mod uwsgi_shared;

/// Writes `v` to `out` unless NULL.
///
/// # Safety
/// `out` is NULL or points to writable, aligned memory for a `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, v: T) {
    if !out.is_null() {
        // SAFETY: the caller's contract.
        unsafe { out.write(v) };
    }
}

/// `len` bytes at `p` (empty for NULL), for the C API the Python package calls.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes that stay valid and unchanged for `'a`.
pub(crate) unsafe fn c_bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// A C string from uWSGI, lossily as UTF-8; "" for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid for the call.
pub(crate) unsafe fn c_string(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

pub(crate) use log::log;

/// Returns the free pages of the heap to the kernel (glibc's `malloc_trim`): the master calls
/// it after building the exporter, and the dedicated server when it has been idle for a while
/// (the heap pages its buffers used while they grew).
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; no pointer is given.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The plugin's version (build_info, the startup line).
pub(crate) const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from, or `unknown` (build.rs).
pub(crate) const PLUGIN_COMMIT: &str = env!("MP_GIT_COMMIT");
