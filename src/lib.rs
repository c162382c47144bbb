//! metrics_prometheus: a uWSGI plugin that exports uWSGI's metrics in Prometheus text 0.0.4 and
//! OpenMetrics 1.0 format from inside uWSGI.
//!
//! Layout (dependencies point one way: `format` <- front ends <- `plugin`, `host` <- `plugin`):
//! - [`format`]: the pure exposition engine (no FFI, no I/O, `#![forbid(unsafe_code)]`);
//! - `config`: option values, parsed and validated (pure);
//! - `ffi`: bindgen output for the target binary's `uwsgi.h` plus the C shim's symbols;
//! - `host`: the only module besides `plugin` with `unsafe`: logging, the ABI guard, the metrics
//!   snapshot under uWSGI's lock;
//! - `live`: the rest of the host layer: worker, core, socket, app and process state read
//!   from uWSGI's shared memory and /proc at scrape time;
//! - `guard`: the panic boundary every `extern "C"` entry goes through;
//! - `plugin`: the exported `metrics_prometheus_plugin` struct, its options and hooks.

pub(crate) mod cflags;
pub mod config;
pub(crate) mod ffi;
pub mod format;
pub(crate) mod guard;
pub(crate) mod host;
pub mod http;
pub(crate) mod live;
pub(crate) mod plugin;
#[cfg(uwsgi_routing)]
pub(crate) mod router;
pub(crate) mod scrape;
pub(crate) mod server;
