//! The exposition engine: maps uWSGI's metric list to Prometheus families and
//! renders them in the Prometheus text format 0.0.4, OpenMetrics 1.0 or Prometheus'
//! protobuf format ([`Format::Protobuf`], `protobuf/`: the same families and values, plus
//! native histogram buckets).
//!
//! Pure code: no FFI, no I/O, no `unsafe`. The host builds a [`Layout`] once
//! from uWSGI's metric list (names and types never change after startup), then
//! calls [`Layout::render`] on every scrape with the current values, in list
//! order.
//!
//! ```
//! use metrics_prometheus_engine::format::{Format, Layout, MetricType, Options};
//!
//! let layout = Layout::new(
//!     &[
//!         ("worker.1.requests", MetricType::Counter),
//!         ("worker.1.avg_response_time", MetricType::Gauge),
//!         ("worker.2.requests", MetricType::Counter),
//!         ("worker.2.avg_response_time", MetricType::Gauge),
//!         ("rss_size", MetricType::Alias),
//!         ("myapp.shard.3.hits", MetricType::Counter),
//!     ],
//!     &Options::default(),
//! );
//! let mut out = Vec::new();
//! layout.render(&[10, 1500, 7, 250_000, 0, 42], Format::Text, &mut out);
//! assert_eq!(
//!     String::from_utf8(out).expect("UTF-8 output"),
//!     concat!(
//!         "# HELP uwsgi_worker_requests_total Requests served by the worker, kept across respawns of the worker.\n",
//!         "# TYPE uwsgi_worker_requests_total counter\n",
//!         "uwsgi_worker_requests_total{worker=\"1\"} 10\n",
//!         "uwsgi_worker_requests_total{worker=\"2\"} 7\n",
//!         "# HELP uwsgi_worker_avg_response_time_seconds uWSGI's running response-time figure for the worker, in seconds: after each request it becomes (previous + last) / 2, so it follows the last few requests and is not a mean (divide running time by requests for a mean).\n",
//!         "# TYPE uwsgi_worker_avg_response_time_seconds gauge\n",
//!         "uwsgi_worker_avg_response_time_seconds{worker=\"1\"} 0.0015\n",
//!         "uwsgi_worker_avg_response_time_seconds{worker=\"2\"} 0.25\n",
//!         "# HELP uwsgi_myapp_shard_hits_total uWSGI metric myapp.shard.N.hits (custom, or not known to this exporter).\n",
//!         "# TYPE uwsgi_myapp_shard_hits_total counter\n",
//!         "uwsgi_myapp_shard_hits_total{shard=\"3\"} 42\n",
//!     )
//! );
//! assert_eq!(layout.series(), 5);
//! assert_eq!(layout.skipped()[0].name, "rss_size");
//! ```
//!
//! # Mapping
//!
//! * uWSGI's own metrics are mapped by a table (`table.rs`): readable family
//!   names, base units (microseconds become seconds, rendered exactly with
//!   integer arithmetic), real HELP text. Worker slot 0 (uWSGI's aggregate)
//!   gives only `uwsgi_requests`; aliases, `failed_requests` (always 0) and the
//!   other worker-0 values are skipped.
//! * Any other name (custom `--metric`, future built-ins) is mapped
//!   generically: dotted segments of digits become labels named after the
//!   segment before them, the other segments are sanitised and joined with
//!   `_`, and tokens that `promtool check metrics` would report are rewritten
//!   (see `name.rs` for the exact rules). The HELP text names the original
//!   metric.
//! * COUNTER becomes a counter (samples end in exactly one `_total`), GAUGE and
//!   ABSOLUTE a gauge, ALIAS is skipped (it duplicates its target).
//! * Each family is one contiguous group (`# HELP`, `# TYPE`, in OpenMetrics
//!   `# UNIT` for `_seconds`/`_bytes` families, then its samples); families
//!   appear in order of first appearance in the list, samples in list order.
//! * When two metrics would produce the same family with different types,
//!   clashing sample names (a counter `x` owns `x`, `x_total` and `x_created`)
//!   or the same series, the first one wins and the later ones are reported by
//!   [`Layout::skipped`]. The output never has a duplicate series or a
//!   repeated HELP/TYPE.
//!
//! # Histograms
//!
//! The host can add histogram families it computes itself (request latency, say) with
//! [`Layout::with_histograms`] and render them with [`Layout::render_all`] (`histogram.rs`).
//! They come after every other family, in the order given, named prefix + [`Histogram::family`],
//! with `# TYPE … histogram` (and `# UNIT … seconds` in OpenMetrics for a `_seconds` name).
//! Per series: one `_bucket` line per finite bound and one for `le="+Inf"` (cumulative
//! counts), then `_sum` (microseconds rendered as exact seconds) and `_count`. Bounds are
//! rendered as exact decimals of seconds (`le="0.005"`, `le="1"`, `le="2.5"`); every line
//! prefix is preformatted at build time, so rendering only copies bytes and formats numbers.
//!
//! * A series without observations (total count 0) is left out, and so is a family left
//!   without series (HELP and TYPE included).
//! * In OpenMetrics, a bucket can carry an [`Exemplar`] (`# {trace_id="…"} value timestamp`);
//!   the text format 0.0.4 has no exemplars.
//! * A histogram whose names (`x`, `x_bucket`, `x_sum`, `x_count`, `x_created`) clash with an
//!   earlier family is skipped whole and reported by [`Layout::skipped`].
//! * Without `# TYPE` lines ([`Options::types`] false), the parsers would read `_bucket`,
//!   `_sum` and `_count` as three untyped families, which must each be contiguous: the
//!   family is then rendered as three groups (all `_bucket` lines, all `_sum` lines, all
//!   `_count` lines), each with its own HELP, and without exemplars (OpenMetrics allows them
//!   only on counters and histogram buckets).
//!
//! ```
//! use metrics_prometheus_engine::format::{Exemplar, Format, Histogram, Layout, Options};
//!
//! let latency = Histogram {
//!     family: "request_duration_seconds",
//!     help: "Time to serve a request.",
//!     bounds_us: vec![5_000, 1_000_000],
//!     series: vec![vec![("code".into(), "2xx".into())], vec![("code".into(), "5xx".into())]],
//!     native: None,
//! };
//! let opts = Options { help: false, ..Options::default() };
//! let layout = Layout::with_histograms(&[], &[], &[latency], &opts);
//! assert_eq!(layout.histogram_slots(), 2 * 4);
//! // Per series: non-cumulative counts (<= 5 ms, <= 1 s, +Inf), then the sum in µs.
//! let hist = [2, 1, 0, 1_004_000, 0, 0, 0, 0];
//! let mut exemplars = [None; 8];
//! exemplars[0] = Some(Exemplar {
//!     trace_id: *b"4bf92f3577b34da6a3ce929d0e0e4736",
//!     value_us: 2_000,
//!     timestamp_us: 1_700_000_000_250_000,
//! });
//! let mut out = Vec::new();
//! layout.render_all(&[], &hist, &exemplars, Format::OpenMetrics, &mut out);
//! assert_eq!(
//!     String::from_utf8(out).expect("UTF-8 output"),
//!     concat!(
//!         "# TYPE uwsgi_request_duration_seconds histogram\n",
//!         "# UNIT uwsgi_request_duration_seconds seconds\n",
//!         "uwsgi_request_duration_seconds_bucket{code=\"2xx\",le=\"0.005\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.002 1700000000.25\n",
//!         "uwsgi_request_duration_seconds_bucket{code=\"2xx\",le=\"1\"} 3\n",
//!         "uwsgi_request_duration_seconds_bucket{code=\"2xx\",le=\"+Inf\"} 3\n",
//!         "uwsgi_request_duration_seconds_sum{code=\"2xx\"} 1.004\n",
//!         "uwsgi_request_duration_seconds_count{code=\"2xx\"} 3\n",
//!         "# EOF\n",
//!     )
//! );
//! ```
//!
//! # Negative counters
//!
//! uWSGI lets an application decrement a custom COUNTER (`metric_dec`,
//! `metric_set`). Counters cannot be negative: the OpenMetrics parser of
//! `prometheus_client` rejects a negative `_total` sample ("Counter-like
//! samples cannot be negative"), and Prometheus would read a drop as a counter
//! reset anyway. A negative counter value is therefore rendered as `0`, in both
//! formats, so that both formats always carry the same numbers. Declare such a
//! metric with `type=gauge` to see negative values.
//!
//! # Files
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the vocabulary: [`MetricType`], [`Format`], [`Kind`], [`Extra`], [`Histogram`], [`Exemplar`] |
//! | `options.rs` | [`Options`], [`validate_prefix`] and the prefix as applied (`Prefix`: the one family-naming rule) |
//! | `filter.rs` | [`FamilyFilter`] and [`Glob`]: `--prometheus-include` / `--prometheus-exclude` |
//! | `skip.rs` | [`Skipped`] and [`SkipReason`] |
//! | `layout.rs` | the [`Layout`] and its construction (families, collisions, preformatted bytes) |
//! | `candidate.rs` | one metric or [`Extra`] mapped to a family (`table.rs`, then `name.rs`) |
//! | `lines.rs` | the preformatted pieces of the text formats: HELP/TYPE/UNIT lines, `{labels}` |
//! | `render.rs` | [`Layout::render`] and [`Layout::render_all`]: text, OpenMetrics, protobuf |
//! | `histogram.rs` | histogram families: layout and rendering in every format |
//! | `protobuf/` | the protobuf wire encoding (knows nothing of the layout); `protobuf/histogram.rs` the `Histogram` message |
//! | `value.rs` | integers scaled by powers of ten as exact decimals and as doubles |
//! | `name.rs`, `table.rs`, `labels.rs`, `escape.rs`, `native.rs`, `negotiate.rs` | names, the built-in table, constant labels, escaping, native buckets, `Accept` |

#![forbid(unsafe_code)]

mod candidate;
mod escape;
mod filter;
mod histogram;
mod labels;
mod layout;
mod lines;
mod name;
mod native;
mod negotiate;
mod options;
mod protobuf;
mod render;
mod skip;
mod table;
mod value;

pub use filter::{FamilyFilter, Glob, GlobError, PatternRef};
pub use histogram::HistogramLayout;
pub use labels::{parse_label, validate_label, LabelError, RESERVED as RESERVED_LABELS};
pub use layout::Layout;
pub use native::{native_bucket_bounds, native_bucket_index, NativeSpec};
pub use negotiate::Offer;
pub use options::{validate_prefix, Options, PrefixError};
pub use skip::{SkipReason, Skipped};
// For the applications' families (`crate::app`), which share the prefix rule, the escaping
// and the varints.
pub(crate) use escape::{push_help, push_label_value};
pub(crate) use options::Prefix;
pub(crate) use protobuf::{put_varint, varint_len};

/// A uWSGI metric type (`UWSGI_METRIC_*`, uwsgi.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `UWSGI_METRIC_COUNTER` (0): exported as a counter.
    Counter,
    /// `UWSGI_METRIC_GAUGE` (1): exported as a gauge.
    Gauge,
    /// `UWSGI_METRIC_ABSOLUTE` (2): exported as a gauge.
    Absolute,
    /// `UWSGI_METRIC_ALIAS` (3): not exported (it duplicates its target).
    Alias,
}

impl MetricType {
    /// The type for uWSGI's type number, `None` for an unknown number.
    pub fn from_uwsgi(t: u8) -> Option<MetricType> {
        match t {
            0 => Some(MetricType::Counter),
            1 => Some(MetricType::Gauge),
            2 => Some(MetricType::Absolute),
            3 => Some(MetricType::Alias),
            _ => None,
        }
    }
}

/// An output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    #[default]
    Text,
    /// OpenMetrics 1.0.0 text format.
    OpenMetrics,
    /// Prometheus' protobuf format: varint-delimited `io.prometheus.client.MetricFamily`
    /// messages (`protobuf/`), the only one that carries native histograms.
    Protobuf,
}

impl Format {
    /// The `Content-Type` header value for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }
}

/// Picks the format for a request's `Accept` header (raw bytes, `None` if
/// absent), among all three formats ([`Offer::ALL`]).
///
/// Each format gets the q-value of its most specific matching media range; OpenMetrics is
/// chosen only when its q is greater than the text format's and greater than 0, protobuf
/// only when a range names it exactly (`application/vnd.google.protobuf` with
/// `proto=io.prometheus.client.MetricFamily` and `encoding=delimited`: wildcards never pick
/// a binary format) with a q greater than both others'; otherwise (no header, garbage,
/// `*/*`, a tie...) the text format. Handles the headers Prometheus 2.x and 3.x send, with
/// and without native histograms. Details in `negotiate.rs`.
///
/// ```
/// use metrics_prometheus_engine::format::{negotiate, Format};
/// let prom2 = b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// assert_eq!(negotiate(Some(prom2)), Format::OpenMetrics);
/// let prom3_native = b"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
/// assert_eq!(negotiate(Some(prom3_native)), Format::Protobuf);
/// assert_eq!(negotiate(Some(b"*/*")), Format::Text);
/// assert_eq!(negotiate(None), Format::Text);
/// ```
pub fn negotiate(accept: Option<&[u8]>) -> Format {
    negotiate::negotiate(accept, Offer::ALL)
}

/// [`negotiate()`] restricted to the formats of `offer` (the text format is always offered: it
/// is the fallback). For a route or server that must not answer in some format.
///
/// ```
/// use metrics_prometheus_engine::format::{negotiate_among, Format, Offer};
/// let prom3_native = b"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
/// let no_protobuf = Offer { protobuf: false, ..Offer::ALL };
/// assert_eq!(negotiate_among(Some(prom3_native), no_protobuf), Format::OpenMetrics);
/// assert_eq!(negotiate_among(Some(prom3_native), Offer::TEXT), Format::Text);
/// ```
pub fn negotiate_among(accept: Option<&[u8]>, offer: Offer) -> Format {
    negotiate::negotiate(accept, offer)
}

/// Exported metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A counter (samples named `<family>_total`).
    Counter,
    /// A gauge.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A byte range of one of the layout's buffers.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    const EMPTY: Span = Span { start: 0, end: 0 };

    fn len(self) -> usize {
        self.end - self.start
    }
}

/// One series the host computes itself, from uWSGI state outside its metrics list (worker
/// status, sockets, caches, ...). Its value is given at render time right after the values of
/// the metrics list, in the order of the `extras` slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    /// Family name without the prefix (and, for a counter, without `_total`).
    pub family: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Values are divided by `10^scale` (6: microseconds to seconds).
    pub scale: u8,
    /// HELP text.
    pub help: &'static str,
    /// Label names and values (values are escaped on output).
    pub labels: Vec<(String, String)>,
}

/// A histogram family computed by the host (e.g. request latency), given to
/// [`Layout::with_histograms`]; its values are given to [`Layout::render_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Family name without the prefix, e.g. `"request_duration_seconds"`.
    pub family: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Finite upper bounds in microseconds, strictly increasing (may be empty: only `+Inf`).
    pub bounds_us: Vec<u64>,
    /// One label set per series, e.g. `[("method","GET"),("code","2xx")]`. Never contains
    /// `le`.
    pub series: Vec<Vec<(String, String)>>,
    /// Native (exponential) buckets besides the classic ones, exported in
    /// [`Format::Protobuf`] only; `None` for a classic histogram.
    pub native: Option<NativeSpec>,
}

impl Histogram {
    /// `u64` slots one series takes in the `hist` values: bounds + 1 (`+Inf`) bucket
    /// counts, then the sum; with [`Histogram::native`], then the zero bucket's count and
    /// the [`NativeSpec::buckets`] dense native counts.
    pub fn slots_per_series(&self) -> usize {
        self.bounds_us.len() + 2 + self.native.map_or(0, |n| 1 + n.buckets)
    }
}

/// The latest observation of a bucket that carried a trace id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exemplar {
    /// W3C trace id: 32 lowercase hex ASCII bytes.
    pub trace_id: [u8; 32],
    /// The observed value, microseconds.
    pub value_us: u64,
    /// Unix time of the observation, microseconds.
    pub timestamp_us: i64,
}

impl Exemplar {
    /// Whether the trace id is 32 lowercase hex digits; an exemplar without one is not
    /// rendered, in any format.
    fn has_valid_trace_id(&self) -> bool {
        // Branch-free (no early exit): measured cheaper than `all` here.
        let bad = self.trace_id.iter().fold(0u8, |acc, &b| {
            acc | (u8::from(b.wrapping_sub(b'0') >= 10) & u8::from(b.wrapping_sub(b'a') >= 6))
        });
        bad == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_types() {
        assert_eq!(MetricType::from_uwsgi(0), Some(MetricType::Counter));
        assert_eq!(MetricType::from_uwsgi(1), Some(MetricType::Gauge));
        assert_eq!(MetricType::from_uwsgi(2), Some(MetricType::Absolute));
        assert_eq!(MetricType::from_uwsgi(3), Some(MetricType::Alias));
        assert_eq!(MetricType::from_uwsgi(4), None);
        assert_eq!(MetricType::from_uwsgi(255), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }
}
