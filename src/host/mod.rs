//! The host layer: everything that touches uWSGI's memory, calls into uWSGI or makes a raw
//! syscall, behind typed, safe functions. Almost all of the crate's `unsafe` lives here, each
//! block with its `// SAFETY:`. Depends only on `ffi`, `cflags` and the pure engine.
//!
//! - [`log`]: uWSGI's logger (depends on nothing);
//! - [`abi`]: the ABI check (a `Result`) and uWSGI's resolved API;
//! - [`uwsgi`]: fields of the server struct;
//! - [`metrics`]: uWSGI's metrics list and its rwlock;
//! - [`shared`]: bounds-checked, typed reads of the shared worker table and friends;
//! - [`procfs`]: allocation-free /proc figures;
//! - [`net`], [`epoll`], [`fork`]: the dedicated server's sockets, poller and fork hygiene;
//! - [`request`]: requests, the after-request chain, and routes for the route action;
//! - [`shm`]: zeroed shared memory mapped before fork (the request histograms);
//! - [`alloc`]: the global allocator, and read-only mappings for data built before fork;
//! - [`emperor`]: imperial monitors, their scanners and the Emperor's vassal list.

pub(crate) mod abi;
pub(crate) mod alloc;
pub(crate) mod emperor;
pub(crate) mod epoll;
pub(crate) mod fork;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod procfs;
pub(crate) mod request;
pub(crate) mod shared;
pub(crate) mod shm;
pub(crate) mod uwsgi;

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
