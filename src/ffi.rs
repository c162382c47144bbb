//! Raw bindings: bindgen's view of the target binary's `uwsgi.h` (generated with that binary's
//! `uwsgi --cflags`, so struct layouts match it) and the symbols of `src/shim.c`. No logic here.
//!
//! The functions bindgen declares are never called through these declarations (that would make
//! every binary linking this crate, tests included, need uWSGI's symbols at link time): the host
//! layer resolves them with dlsym at load and uses these declarations only to check its function
//! pointer types at compile time.

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    improper_ctypes,
    unnecessary_transmutes,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
pub(crate) use bindings::*;

extern "C" {
    /// `sizeof(struct uwsgi_server)` as the C compiler saw it with the build-time flags.
    pub(crate) static uwsgi_rs_sizeof_server: usize;
    /// `pthread_rwlock_tryrdlock` on `uwsgi.metrics_lock`: 1 taken, 0 held by a writer, -1 no
    /// try-lock with this lock engine.
    #[link_name = "uwsgi_rs_metrics_tryrlock"]
    pub(crate) fn metrics_tryrlock(server: *mut uwsgi_server) -> std::ffi::c_int;
    /// `uwsgi_wlock(uwsgi.metrics_lock)` (a macro over `uwsgi.lock_ops`).
    #[cfg(feature = "fault-injection")]
    #[link_name = "uwsgi_rs_metrics_wlock"]
    pub(crate) fn metrics_wlock(server: *mut uwsgi_server);
    /// `uwsgi_rwunlock(uwsgi.metrics_lock)`.
    #[link_name = "uwsgi_rs_metrics_rwunlock"]
    pub(crate) fn metrics_rwunlock(server: *mut uwsgi_server);
}

/// `uwsgi --cflags` of the binary this plugin was built against, exactly as
/// `uwsgi_get_cflags()` returns it there.
pub(crate) const BUILD_CFLAGS: &str = include_str!(concat!(env!("OUT_DIR"), "/uwsgi_cflags.txt"));
/// `UWSGI_VERSION` of that binary.
pub(crate) const BUILD_UWSGI_VERSION: &str =
    include_str!(concat!(env!("OUT_DIR"), "/uwsgi_version.txt"));
