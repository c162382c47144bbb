//! Every option default, written once: as a macro expanding to a literal, so that the option
//! table's help texts (`config::OPTIONS`, built at compile time with `concat!`) and the typed
//! constants the code uses come from the same text.

/// `--prometheus-path`.
macro_rules! default_path {
    () => {
        "/metrics"
    };
}
/// `--prometheus-prefix`.
macro_rules! default_prefix {
    () => {
        "uwsgi_"
    };
}
/// `--prometheus-buckets`, in seconds: the client libraries' default buckets.
macro_rules! default_buckets {
    () => {
        "0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10"
    };
}
/// `--prometheus-native-schema`: buckets grow by 2^(2^-3), about 1.09.
macro_rules! default_native_schema {
    () => {
        3
    };
}
/// `--prometheus-vassal-timeout`, milliseconds, and its largest value.
macro_rules! default_vassal_timeout_ms {
    () => {
        1000
    };
}
macro_rules! max_vassal_timeout_ms {
    () => {
        10000
    };
}
/// Smallest body that is gzipped (smaller ones gain too little for the CPU).
macro_rules! gzip_min_size {
    () => {
        1024
    };
}

/// `--prometheus-ready-queue`: by default `/readyz` fails from a socket's backlog divided by
/// this, rounded up, connections waiting.
macro_rules! ready_queue_divisor {
    () => {
        2
    };
}

/// `--prometheus-app-series`: entries of the application metrics' table.
macro_rules! default_app_series {
    () => {
        4096
    };
}
/// Its largest value (the table's key lengths are u16, its indexes fit anywhere).
// Distinct routes of the request histogram's `route` label (`--prometheus-route-max`).
macro_rules! default_route_max {
    () => {
        100
    };
}
macro_rules! max_route_max {
    () => {
        1000
    };
}

macro_rules! max_app_series {
    () => {
        1048576
    };
}

pub const PATH: &str = default_path!();
pub const PREFIX: &str = default_prefix!();
pub const BUCKETS: &str = default_buckets!();
pub const NATIVE_SCHEMA: i8 = default_native_schema!();
pub const VASSAL_TIMEOUT_MS: u32 = default_vassal_timeout_ms!();
pub const MAX_VASSAL_TIMEOUT_MS: u32 = max_vassal_timeout_ms!();
pub const GZIP_MIN_SIZE: usize = gzip_min_size!();
pub const READY_QUEUE_DIVISOR: u32 = ready_queue_divisor!();
pub const APP_SERIES: usize = default_app_series!();
pub const MAX_APP_SERIES: usize = max_app_series!();
pub const ROUTE_MAX: usize = default_route_max!();
pub const MAX_ROUTE_MAX: usize = max_route_max!();
