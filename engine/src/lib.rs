//! The pure half of metrics_prometheus: everything that needs neither uWSGI nor `unsafe`.
//!
//! - [`format`]: Prometheus text 0.0.4, OpenMetrics 1.0 and protobuf exposition from a precomputed
//!   [`format::Layout`];
//! - [`catalogue`]: every family the host computes itself (name, type, unit scale, HELP);
//! - [`compat`]: the same series under timonwong/uwsgi_exporter's names
//!   (`--prometheus-compat uwsgi_exporter`);
//! - [`plan`]: from a plain description of a uWSGI instance ([`plan::Topology`]) to the series
//!   to export and where each value comes from;
//! - [`http`]: request heads for the dedicated server (limits, RFC 9112 framing, basic auth);
//! - [`health`]: the readiness decision of its `/readyz` (workers accepting, listen queues);
//! - [`queue`]: the `X-Request-Start` / `X-Queue-Start` header of `--prometheus-queue-time`;
//! - [`routes`]: the `route` label's rules and values (`--prometheus-route`);
//! - [`config`]: every option, declared once, and its parsed value; [`defaults`]: their defaults;
//! - [`exits`]: why a worker died, from its wait status and its row of the worker table;
//! - [`emperor`]: the Emperor's own families, one series per vassal (`emperor = prometheus://`);
//! - [`merge`]: the vassals' expositions merged into the Emperor's (`--prometheus-vassal-socket`);
//! - `header`: HTTP header-value lists, parameters and q-values (`Accept`, `Accept-Encoding`);
//! - [`app`]: the Python applications' prometheus_client families, rendered after uWSGI's in
//!   every format, as prometheus_client prints them.
//!
//! Dependencies point one way: `config` → `http` → `format`; `compat` → `plan` → `catalogue` → `format`.
//! No build script and no FFI: `cargo test -p metrics_prometheus_engine`, the fuzz targets and
//! the criterion benches run on a machine without uWSGI or libclang.

#![forbid(unsafe_code)]

// First: its macros are used by the modules below.
#[macro_use]
pub mod defaults;

pub mod app;
pub mod catalogue;
pub mod compat;
pub mod compress;
pub mod config;
pub mod emperor;
pub mod exits;
pub mod format;
mod header;
pub mod health;
pub mod http;
pub mod merge;
pub mod plan;
pub mod queue;
pub mod routes;
