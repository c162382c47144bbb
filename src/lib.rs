//! metrics_prometheus: a uWSGI plugin that exports uWSGI's metrics in Prometheus text 0.0.4,
//! OpenMetrics 1.0 and protobuf formats from inside uWSGI, request-latency histograms included.
//!
//! Layers, ground floor first; each module uses only the ones before it (`tests/layering.rs`
//! fails on a back edge):
//! 1. the pure engine, its own crate (`metrics_prometheus_engine`: exposition, the catalogue of
//!    host families, the planner, HTTP heads, options), plus [`ffi`] (bindgen's view of the
//!    target binary's `uwsgi.h` and the C shim) and `cflags`;
//! 2. [`host`]: every touch of uWSGI's memory and every raw syscall, behind typed wrappers;
//! 3. [`live`]: uWSGI's shape read once into a plain `Topology`, its values per scrape;
//!    [`latency`]: request durations recorded by the after-request hook in shared memory;
//!    [`app_metrics`]: the application's prometheus_client values, in shared memory;
//!    [`exits`]: worker deaths by reason, counted by the master;
//! 4. [`scrape`]: the exporter state and one scrape, shared by both front ends;
//! 5. the front ends: [`router`] (the `prometheus-metrics` route action) and [`server`]
//!    (`--prometheus-server`, and `emperor = prometheus://` in an Emperor, whose server also
//!    fetches its vassals' expositions);
//! 6. [`plugin`]: the struct uWSGI loads and every `extern "C"` entry, behind the panic guard.

pub(crate) mod app_metrics;
pub(crate) mod cflags;
pub(crate) mod exits;
pub(crate) mod ffi;
pub(crate) mod host;
pub(crate) mod latency;
pub(crate) mod live;
pub(crate) mod plugin;
#[cfg(uwsgi_routing)]
pub(crate) mod router;
pub(crate) mod routes;
pub(crate) mod scrape;
pub(crate) mod server;
