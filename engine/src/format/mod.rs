//! The exposition engine: maps uWSGI's metric list to Prometheus families and
//! renders them in the Prometheus text format 0.0.4, OpenMetrics 1.0 or Prometheus'
//! protobuf format ([`Format::Protobuf`], `protobuf.rs`: the same families and values, plus
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

#![forbid(unsafe_code)]

mod escape;
mod histogram;
mod labels;
mod name;
mod native;
mod negotiate;
mod protobuf;
mod table;

pub use labels::{parse_label, validate_label, RESERVED as RESERVED_LABELS};
pub use native::{native_bucket_bounds, native_bucket_index, NativeSpec};
pub use negotiate::Offer;
// For the applications' families (`crate::app`), which share the escaping and varints.
pub(crate) use escape::{push_help, push_label_value};
pub(crate) use protobuf::{put_varint, varint_len};

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

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
    /// messages (`protobuf.rs`), the only one that carries native histograms.
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

/// [`negotiate`] restricted to the formats of `offer` (the text format is always offered: it
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

/// Rendering options, fixed when the [`Layout`] is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Prepended verbatim to every family name (default `uwsgi_`). Check it with
    /// [`validate_prefix`]; bytes outside `[a-zA-Z0-9_]` are replaced by `_`
    /// anyway. The prefix is not rewritten for promlint: choose one in
    /// snake_case ending in `_`.
    pub prefix: String,
    /// Emit `# HELP` lines (default true).
    pub help: bool,
    /// Emit `# TYPE` lines, and `# UNIT` lines in OpenMetrics (default true).
    /// Without them, counters are announced under their sample name
    /// (`…_total`) in both formats.
    pub types: bool,
    /// Emit per-worker series (those with a `worker` label: `uwsgi_worker_*`,
    /// `uwsgi_worker_core_*`, default true). Aggregates stay either way.
    pub workers: bool,
    /// Emit per-core series (those with a `core` label, default true). Async and
    /// gevent instances can have thousands of cores per worker.
    pub cores: bool,
    /// Constant labels added to every series of every family (histograms included), after
    /// the series' own labels, in every format (default none). Check each with
    /// [`validate_label`]; one that fails is left out. A series that already has one of these
    /// label names is left out ([`SkipReason::LabelClash`]).
    pub labels: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: crate::defaults::PREFIX.to_owned(),
            help: true,
            types: true,
            workers: true,
            cores: true,
            labels: Vec::new(),
        }
    }
}

/// Checks a family-name prefix: it must be empty or match
/// `[a-zA-Z_][a-zA-Z0-9_]*`. The error explains what is wrong.
pub fn validate_prefix(p: &str) -> Result<(), String> {
    let rule = "a metric prefix must be empty or start with an ASCII letter or '_' followed by ASCII letters, digits or '_' (for example \"uwsgi_\")";
    match p
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
    {
        None => Ok(()),
        Some((i, c)) => Err(format!(
            "invalid prefix {p:?}: character {c:?} at byte {i} is not allowed; {rule}"
        )),
    }
}

/// Why a metric of the input list is not exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// An ALIAS metric: it duplicates the metric it points to.
    Alias,
    /// `worker.N.failed_requests`: never incremented by uWSGI 2.0, always 0.
    AlwaysZero,
    /// A `worker.0.*` value other than `requests`: worker slot 0 is uWSGI's
    /// aggregate, for which only `requests` (the total over all workers) is
    /// maintained; the totals of the others come from `core.*`.
    AggregateSlot,
    /// A per-worker series (it has a `worker` label) while
    /// [`Options::workers`] is false.
    WorkersDisabled,
    /// A per-core series (it has a `core` label) while [`Options::cores`] is
    /// false.
    CoresDisabled,
    /// Nothing is left to name the family (an empty name, or only unit
    /// tokens, e.g. `...` or `kb`).
    EmptyName,
    /// The family already exists with the other type.
    TypeConflict {
        /// The family name.
        family: String,
    },
    /// One of the family's names (`x`, or for a counter `x_total`/`x_created`)
    /// is already used by another family.
    NameClash {
        /// The name already in use.
        name: String,
    },
    /// The same family and labels were already produced by an earlier metric.
    DuplicateSeries {
        /// The sample name.
        name: String,
    },
    /// The series has a label that [`Options::labels`] also sets.
    LabelClash {
        /// The label name.
        label: String,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Alias => f.write_str("alias of another metric"),
            SkipReason::AlwaysZero => f.write_str("never updated by uWSGI 2.0 (always 0)"),
            SkipReason::AggregateSlot => f.write_str(
                "worker 0 is uWSGI's aggregate slot; only its requests value is maintained",
            ),
            SkipReason::WorkersDisabled => f.write_str("per-worker metrics are disabled"),
            SkipReason::CoresDisabled => f.write_str("per-core metrics are disabled"),
            SkipReason::EmptyName => f.write_str("no usable name left after sanitising"),
            SkipReason::TypeConflict { family } => {
                write!(f, "family {family} already exists with another type")
            }
            SkipReason::NameClash { name } => {
                write!(f, "name {name} is already used by another family")
            }
            SkipReason::DuplicateSeries { name } => {
                write!(
                    f,
                    "duplicate series of {name} (same labels as an earlier metric)"
                )
            }
            SkipReason::LabelClash { label } => {
                write!(
                    f,
                    "its label {label} is also a constant label (--prometheus-label)"
                )
            }
        }
    }
}

/// A metric of the input list that is not exported, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its index in the list given to [`Layout::new`].
    pub index: usize,
    /// Its uWSGI name.
    pub name: String,
    /// Why it is not exported.
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
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

/// A byte range of `Layout::bytes`.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Clone, Debug)]
struct FamilyOut {
    text_head: Span,
    om_head: Span,
    /// Protobuf name, help and type (in `Layout::pb`).
    pb_head: Span,
    /// Protobuf unit field, or empty.
    pb_unit: Span,
    /// Protobuf family length when every series has a value.
    pb_len: usize,
    /// Range of `Layout::series`.
    first: usize,
    end: usize,
    /// Largest value index among the family's series.
    max_index: usize,
}

#[derive(Clone, Debug)]
struct SeriesOut {
    /// `name{labels} `.
    prefix: Span,
    /// Protobuf `Metric` up to the value's 8 bytes (in `Layout::pb`).
    pb_prefix: Span,
    /// Index into the values slice.
    index: usize,
    /// Divide by `10^scale`.
    scale: u8,
    /// Counter: render negative values as 0.
    clamp: bool,
}

/// The precomputed exposition of one metric list: family order, preformatted
/// HELP/TYPE/UNIT lines and `name{labels} ` sample prefixes.
#[derive(Clone, Debug)]
pub struct Layout {
    bytes: Vec<u8>,
    /// Precomputed protobuf bytes (`protobuf.rs`).
    pb: Vec<u8>,
    /// Upper bound of a protobuf rendering.
    pb_size: usize,
    families: Vec<FamilyOut>,
    series: Vec<SeriesOut>,
    skipped: Vec<Skipped>,
    text_size: usize,
    om_size: usize,
    hists: histogram::Hists,
}

/// Longest rendering of a value: `-9223372036854775808` or
/// `-9223372.036854775808`.
const MAX_VALUE_LEN: usize = 22;

const POW10: [u64; 13] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
];

/// One metric mapped to a family, before collision checks.
struct Candidate {
    family: String,
    kind: Kind,
    scale: u8,
    labels: Labels,
    help: Cow<'static, str>,
}

/// `(label name, label value)` pairs in output order.
type Labels = Vec<(String, String)>;

struct SeriesBuild {
    index: usize,
    labels: Labels,
    scale: u8,
}

struct FamilyBuild {
    name: String,
    kind: Kind,
    help: Cow<'static, str>,
    series: Vec<SeriesBuild>,
}

/// Maps one metric, or says why it is skipped.
fn candidate(name: &str, ty: MetricType, prefix: &str) -> Result<Candidate, SkipReason> {
    if ty == MetricType::Alias {
        return Err(SkipReason::Alias);
    }
    if let Some((entry, labels)) = table::lookup(name, ty) {
        return match &entry.rule {
            table::Rule::Skip(reason) => Err(reason.clone()),
            table::Rule::Emit {
                family,
                kind,
                scale,
                help,
            } => {
                let mut f = String::with_capacity(prefix.len() + family.len() + 1);
                f.push_str(prefix);
                f.push_str(family);
                if f.as_bytes()[0].is_ascii_digit() {
                    f.insert(0, '_');
                }
                Ok(Candidate {
                    family: f,
                    kind: *kind,
                    scale: *scale,
                    labels: labels
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    help: Cow::Borrowed(help),
                })
            }
        };
    }
    let kind = if ty == MetricType::Counter {
        Kind::Counter
    } else {
        Kind::Gauge
    };
    let split = name::split_generic(name);
    let rw = name::rewrite(&split.joined, kind == Kind::Counter);
    if rw.name.is_empty() {
        return Err(SkipReason::EmptyName);
    }
    let mut family = String::with_capacity(prefix.len() + rw.name.len() + 1);
    family.push_str(prefix);
    family.push_str(&rw.name);
    if kind == Kind::Counter {
        while let Some(base) = family.strip_suffix("_total") {
            family.truncate(base.len());
        }
        if family.is_empty() || family == "total" {
            return Err(SkipReason::EmptyName);
        }
    }
    if family.as_bytes()[0].is_ascii_digit() {
        family.insert(0, '_');
    }
    let mut help = format!(
        "uWSGI metric {} (custom, or not known to this exporter)",
        split.pattern
    );
    if let Some(unit) = rw.converted_from {
        help.push_str("; value converted from ");
        help.push_str(unit);
        help.push_str(" to seconds");
    }
    if !rw.removed.is_empty() {
        help.push_str("; unit tokens removed from the name: ");
        help.push_str(&rw.removed.join(", "));
    }
    help.push('.');
    Ok(Candidate {
        family,
        kind,
        scale: rw.scale,
        labels: split.labels,
        help: Cow::Owned(help),
    })
}

fn extra_candidate(e: &Extra, prefix: &str) -> Candidate {
    let mut family = String::with_capacity(prefix.len() + e.family.len() + 1);
    family.push_str(prefix);
    family.push_str(e.family);
    if family.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        family.insert(0, '_');
    }
    Candidate {
        family,
        kind: e.kind,
        scale: e.scale,
        labels: e.labels.clone(),
        help: Cow::Borrowed(e.help),
    }
}

/// Appends a family's metadata lines: `# HELP` (with [`Options::help`]), `# TYPE` and, in
/// OpenMetrics, `# UNIT` for `_seconds`/`_bytes` names (with [`Options::types`]).
fn push_head(text: &mut String, name: &str, help: &str, kind: &str, om: bool, opts: &Options) {
    if opts.help {
        text.push_str("# HELP ");
        text.push_str(name);
        text.push(' ');
        escape::push_help(help, om, text);
        text.push('\n');
    }
    if opts.types {
        text.push_str("# TYPE ");
        text.push_str(name);
        text.push(' ');
        text.push_str(kind);
        text.push('\n');
        if om {
            if let Some(unit) = unit_of(name) {
                text.push_str("# UNIT ");
                text.push_str(name);
                text.push(' ');
                text.push_str(unit);
                text.push('\n');
            }
        }
    }
}

/// The OpenMetrics unit of a family name: `seconds` or `bytes` when it ends in `_seconds` or
/// `_bytes`.
fn unit_of(name: &str) -> Option<&'static str> {
    ["seconds", "bytes"]
        .into_iter()
        .find(|u| name.strip_suffix(u).is_some_and(|b| b.ends_with('_')))
}

/// `{k="v",...}` (empty without labels), values escaped.
fn push_labels(labels: &[(String, String)], out: &mut String) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    push_label_pairs(labels, out);
    out.push('}');
}

/// `k="v",...` without braces, values escaped.
fn push_label_pairs(labels: &[(String, String)], out: &mut String) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape::push_label_value(v, out);
        out.push('"');
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

impl Layout {
    /// Builds the layout for uWSGI's metric list (`(name, type)` in list
    /// order). All parsing, sanitising, grouping and collision handling
    /// happens here, once.
    pub fn new(metrics: &[(&str, MetricType)], opts: &Options) -> Layout {
        Self::with_extras(metrics, &[], opts)
    }

    /// Like [`Layout::new`], plus series computed by the host ([`Extra`]), which follow the
    /// metrics list: `values[metrics.len() + i]` is the value of `extras[i]`. Extras go through
    /// the same checks (option filters, collisions) as metrics; a skipped extra is reported
    /// under its family name.
    pub fn with_extras(metrics: &[(&str, MetricType)], extras: &[Extra], opts: &Options) -> Layout {
        Self::with_histograms(metrics, extras, &[], opts)
    }

    /// Like [`Layout::with_extras`], plus histogram families ([`Histogram`]), rendered after
    /// every other family, in the order given. A histogram one of whose names (`x`,
    /// `x_bucket`, `x_sum`, `x_count`, `x_created`) is already owned by an earlier family is
    /// skipped whole ([`SkipReason::NameClash`], reported under its family name with index
    /// `metrics.len() + extras.len() + i`). Series dropped by [`Options::workers`] /
    /// [`Options::cores`], series with an `le` label or a label of [`Options::labels`] and
    /// repeated label sets are left out without a [`Skipped`] entry; their slots stay in the
    /// `hist` values.
    pub fn with_histograms(
        metrics: &[(&str, MetricType)],
        extras: &[Extra],
        histograms: &[Histogram],
        opts: &Options,
    ) -> Layout {
        let prefix: String = opts
            .prefix
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    b as char
                } else {
                    '_'
                }
            })
            .collect();
        let constant: Vec<(String, String)> = opts
            .labels
            .iter()
            .filter(|(k, v)| validate_label(k, v).is_ok())
            .cloned()
            .collect();
        let mut skipped = Vec::new();
        let mut fams: Vec<FamilyBuild> = Vec::new();
        // Family name → index in `fams`.
        let mut by_name: HashMap<String, usize> = HashMap::new();
        // Every family or sample name some family owns.
        let mut owned: HashSet<String> = HashSet::new();
        // (family index, canonical labels) of every series.
        let mut seen: HashSet<(usize, String)> = HashSet::new();

        let inputs = metrics
            .iter()
            .map(|&(name, ty)| (name, candidate(name, ty, &prefix)))
            .chain(
                extras
                    .iter()
                    .map(|e| (e.family, Ok(extra_candidate(e, &prefix)))),
            );
        for (index, (name, cand)) in inputs.enumerate() {
            let mut skip = |reason| {
                skipped.push(Skipped {
                    index,
                    name: name.to_owned(),
                    reason,
                })
            };
            let cand = match cand {
                Ok(c) => c,
                Err(reason) => {
                    skip(reason);
                    continue;
                }
            };
            if !opts.workers && cand.labels.iter().any(|(k, _)| k == "worker") {
                skip(SkipReason::WorkersDisabled);
                continue;
            }
            if !opts.cores && cand.labels.iter().any(|(k, _)| k == "core") {
                skip(SkipReason::CoresDisabled);
                continue;
            }
            if let Some(label) = labels::clash(&cand.labels, &constant) {
                skip(SkipReason::LabelClash {
                    label: label.to_owned(),
                });
                continue;
            }
            let fi = match by_name.get(&cand.family) {
                Some(&fi) if fams[fi].kind != cand.kind => {
                    skip(SkipReason::TypeConflict {
                        family: cand.family,
                    });
                    continue;
                }
                Some(&fi) => fi,
                None => {
                    let names = match cand.kind {
                        Kind::Counter => vec![
                            cand.family.clone(),
                            format!("{}_total", cand.family),
                            format!("{}_created", cand.family),
                        ],
                        Kind::Gauge => vec![cand.family.clone()],
                    };
                    if let Some(n) = names.iter().find(|n| owned.contains(*n)) {
                        skip(SkipReason::NameClash { name: n.clone() });
                        continue;
                    }
                    owned.extend(names);
                    by_name.insert(cand.family.clone(), fams.len());
                    fams.push(FamilyBuild {
                        name: cand.family.clone(),
                        kind: cand.kind,
                        help: cand.help.clone(),
                        series: Vec::new(),
                    });
                    fams.len() - 1
                }
            };
            let mut canon: Vec<&(String, String)> = cand.labels.iter().collect();
            canon.sort();
            let mut key = String::new();
            for (k, v) in canon {
                key.push_str(k);
                key.push('=');
                escape::push_label_value(v, &mut key);
                key.push('"');
            }
            if !seen.insert((fi, key)) {
                let name = match cand.kind {
                    Kind::Counter => format!("{}_total", cand.family),
                    Kind::Gauge => cand.family,
                };
                skip(SkipReason::DuplicateSeries { name });
                continue;
            }
            fams[fi].series.push(SeriesBuild {
                index,
                labels: labels::with_constant(&cand.labels, &constant),
                scale: cand.scale,
            });
        }
        let mut layout = Self::assemble(fams, skipped, opts);
        layout.add_histograms(
            histograms,
            &prefix,
            &mut owned,
            metrics.len() + extras.len(),
            &constant,
            opts,
        );
        layout.shrink();
        layout
    }

    /// Gives back the spare capacity of the construction (the layout lives as long as the
    /// process, in every process: at 16 × 32 the doubling of these buffers alone was 0.5 MB).
    fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
        self.pb.shrink_to_fit();
        self.families.shrink_to_fit();
        self.series.shrink_to_fit();
        self.skipped.shrink_to_fit();
        self.hists.shrink();
    }

    /// Lays the families out as bytes.
    fn assemble(fams: Vec<FamilyBuild>, skipped: Vec<Skipped>, opts: &Options) -> Layout {
        let mut text = String::new();
        let mut families = Vec::with_capacity(fams.len());
        let mut series = Vec::new();
        let (mut text_size, mut om_size) = (0, "# EOF\n".len());
        let (mut pb, mut pb_size) = (Vec::new(), 0);
        for fam in fams {
            let counter = fam.kind == Kind::Counter;
            let sample_name = if counter {
                format!("{}_total", fam.name)
            } else {
                fam.name.clone()
            };
            let om_name = if counter && opts.types {
                &fam.name
            } else {
                &sample_name
            };
            let head = |text: &mut String, name: &str, om: bool| {
                let start = text.len();
                push_head(text, name, &fam.help, fam.kind.as_str(), om, opts);
                Span {
                    start,
                    end: text.len(),
                }
            };
            let text_head = head(&mut text, &sample_name, false);
            let om_head = head(&mut text, om_name, true);
            let pb_ty = if counter {
                protobuf::TYPE_COUNTER
            } else {
                protobuf::TYPE_GAUGE
            };
            let pb_head =
                protobuf::push_family_head(&mut pb, &sample_name, &fam.help, pb_ty, opts.help);
            // The unit of typed OpenMetrics, whose counter family names have no `_total`.
            let pb_unit = protobuf::push_unit(&mut pb, unit_of(&fam.name));
            let mut pb_len = (pb_head.end - pb_head.start) + (pb_unit.end - pb_unit.start);
            text_size += text_head.end - text_head.start;
            om_size += om_head.end - om_head.start;
            let first = series.len();
            let mut max_index = 0;
            for SeriesBuild {
                index,
                labels,
                scale,
            } in &fam.series
            {
                let start = text.len();
                text.push_str(&sample_name);
                push_labels(labels, &mut text);
                text.push(' ');
                let prefix = Span {
                    start,
                    end: text.len(),
                };
                let line = prefix.end - prefix.start + MAX_VALUE_LEN + 1;
                text_size += line;
                om_size += line;
                max_index = max_index.max(*index);
                let pb_prefix = protobuf::push_scalar_prefix(&mut pb, labels, counter);
                pb_len += pb_prefix.end - pb_prefix.start + 8;
                series.push(SeriesOut {
                    prefix,
                    pb_prefix,
                    index: *index,
                    scale: *scale,
                    clamp: counter,
                });
            }
            pb_size += protobuf::varint_len(pb_len as u64) + pb_len;
            families.push(FamilyOut {
                text_head,
                om_head,
                pb_head,
                pb_unit,
                pb_len,
                first,
                end: series.len(),
                max_index,
            });
        }
        Layout {
            bytes: text.into_bytes(),
            pb,
            pb_size,
            families,
            series,
            skipped,
            text_size,
            om_size,
            hists: histogram::Hists::default(),
        }
    }

    /// Appends the exposition of `values` to `out` (the caller clears it).
    ///
    /// `values[i]` is the current value of the `i`-th metric given to
    /// [`Layout::new`]. If `values` is shorter than that list, series without
    /// a value are left out (and families left without series, entirely);
    /// extra values are ignored. Never panics.
    pub fn render(&self, values: &[i64], fmt: Format, out: &mut Vec<u8>) {
        self.render_all(values, &[], &[], fmt, out);
    }

    /// Total number of `u64` slots [`Layout::render_all`] expects in `hist`: the sum over
    /// *all* the histograms given to [`Layout::with_histograms`] (skipped ones included, so
    /// that the host's indexing never depends on collisions) of
    /// `series.len() * slots_per_series()`.
    pub fn histogram_slots(&self) -> usize {
        self.hists.slots
    }

    /// [`Layout::render`] plus the histogram families.
    ///
    /// `hist` holds, for each histogram in the order given to [`Layout::with_histograms`],
    /// for each of its series in order: the *non-cumulative* count of each bucket (bounds
    /// order, then `+Inf`), then the sum of the observed values in microseconds
    /// ([`Histogram::slots_per_series`] slots). A series whose slots are missing (`hist` too
    /// short) or whose total count is 0 is left out, and so is a family left without series
    /// (HELP and TYPE included). Cumulative counts saturate at `u64::MAX`.
    ///
    /// `exemplars` is empty (no exemplars) or parallel to `hist` (entries at sum positions
    /// are ignored, and so is a trace id that is not 32 lowercase hex digits): `Some`
    /// attaches an exemplar to that bucket's line in OpenMetrics, to that bucket in protobuf
    /// (the text format 0.0.4 has none). The host guarantees the exemplar value lies within
    /// its bucket. Never panics, whatever the lengths of `values`, `hist` and `exemplars`.
    ///
    /// With [`Histogram::native`], each series' slots go on with the zero bucket's count and
    /// the non-cumulative counts of the native buckets `first_index ..= first_index +
    /// buckets - 1` (see [`NativeSpec`]); the text formats ignore them, and `exemplars` at
    /// those positions are ignored too. A series is left out when its classic counts are all
    /// 0, whatever its native ones (the host counts every observation in both).
    ///
    /// [`Format::Protobuf`] renders the same families, series and values (`protobuf.rs`), and
    /// the native buckets: schema, zero threshold and count, spans and deltas, and the
    /// exemplars of the classic buckets again as native exemplars. If `hist` ends within a
    /// series' native slots, that series is rendered as a classic histogram.
    pub fn render_all(
        &self,
        values: &[i64],
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        fmt: Format,
        out: &mut Vec<u8>,
    ) {
        if fmt == Format::Protobuf {
            self.render_protobuf(values, hist, exemplars, out);
            return;
        }
        let om = fmt == Format::OpenMetrics;
        out.reserve(if om { self.om_size } else { self.text_size });
        let bytes = self.bytes.as_slice();
        for fam in &self.families {
            let series = &self.series[fam.first..fam.end];
            if fam.max_index >= values.len() && !series.iter().any(|s| s.index < values.len()) {
                continue;
            }
            let head = if om { fam.om_head } else { fam.text_head };
            out.extend_from_slice(&bytes[head.start..head.end]);
            for s in series {
                let Some(&v) = values.get(s.index) else {
                    continue;
                };
                out.extend_from_slice(&bytes[s.prefix.start..s.prefix.end]);
                let v = if s.clamp && v < 0 { 0 } else { v };
                // Most series are idle cores' zeros: no formatting for them.
                if v == 0 {
                    out.extend_from_slice(b"0\n");
                } else {
                    push_value(out, v, s.scale);
                    out.push(b'\n');
                }
            }
        }
        self.render_histograms(hist, exemplars, fmt, out);
        if om {
            out.extend_from_slice(b"# EOF\n");
        }
    }

    /// The metrics that are not exported, with the reason, in list order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Number of sample lines rendered per scrape when every value is present and every
    /// histogram series has observations: one per counter or gauge series, and
    /// `bounds + 3` per histogram series (its buckets, `+Inf` included, `_sum` and `_count`).
    pub fn series(&self) -> usize {
        self.series.len() + self.hists.lines
    }

    /// Number of families rendered per scrape (histogram families included, when they have
    /// observations).
    pub fn families(&self) -> usize {
        self.families.len() + self.hists.families.len()
    }
}

/// Appends `v / 10^scale` as an exact decimal (no exponent, no trailing zeros
/// after the point, no point for whole numbers).
fn push_value(out: &mut Vec<u8>, v: i64, scale: u8) {
    push_scaled(out, v < 0, v.unsigned_abs(), scale);
}

/// Appends `±u / 10^scale` (`-` when `neg` and `u != 0`) as [`push_value`] does.
// Once the histogram and protobuf writers called it too, LLVM stopped inlining it into the
// per-series loop of the text formats: a call per series made the 16 x 32 text render 12 %
// slower (b71d89a; bench/engine_baseline.py).
#[inline]
fn push_scaled(out: &mut Vec<u8>, neg: bool, u: u64, scale: u8) {
    let mut buf = itoa::Buffer::new();
    if neg && u != 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(buf.format(u).as_bytes());
        return;
    }
    let scale = usize::from(scale).min(POW10.len() - 1);
    let (int, mut frac) = (u / POW10[scale], u % POW10[scale]);
    out.extend_from_slice(buf.format(int).as_bytes());
    if frac != 0 {
        let mut digits = [b'0'; 12];
        for d in digits[..scale].iter_mut().rev() {
            *d = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        let mut n = scale;
        while digits[n - 1] == b'0' {
            n -= 1;
        }
        out.push(b'.');
        out.extend_from_slice(&digits[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: i64, scale: u8) -> String {
        let mut out = Vec::new();
        push_value(&mut out, v, scale);
        String::from_utf8(out).expect("UTF-8 output")
    }

    #[test]
    fn values() {
        let cases: &[(i64, u8, &str)] = &[
            (0, 0, "0"),
            (42, 0, "42"),
            (-42, 0, "-42"),
            (i64::MAX, 0, "9223372036854775807"),
            (i64::MIN, 0, "-9223372036854775808"),
            (0, 6, "0"),
            (1_500_000, 6, "1.5"),
            (7, 6, "0.000007"),
            (-7, 6, "-0.000007"),
            (-1_500_000, 6, "-1.5"),
            (2_000_000, 6, "2"),
            (-2_000_000, 6, "-2"),
            (123_456_789, 6, "123.456789"),
            (1_000_001, 6, "1.000001"),
            (250, 3, "0.25"),
            (i64::MAX, 6, "9223372036854.775807"),
            (i64::MIN, 6, "-9223372036854.775808"),
            (i64::MIN, 12, "-9223372.036854775808"),
            (1, 12, "0.000000000001"),
            (5, 1, "0.5"),
        ];
        for &(v, s, want) in cases {
            assert_eq!(value(v, s), want, "{v} / 10^{s}");
            assert!(value(v, s).len() <= MAX_VALUE_LEN);
        }
    }

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

    #[test]
    fn prefixes() {
        for ok in ["", "uwsgi_", "_", "a", "My_App2_", "__x"] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok:?}");
        }
        for bad in ["1x", "a-b", "a b", "é", "x:", "a.b", "9"] {
            let err = validate_prefix(bad).unwrap_err();
            assert!(err.contains("must be empty or start with"), "{err}");
        }
        assert_eq!(
            validate_prefix("ab-c").unwrap_err(),
            "invalid prefix \"ab-c\": character '-' at byte 2 is not allowed; a metric prefix must be empty or start with an ASCII letter or '_' followed by ASCII letters, digits or '_' (for example \"uwsgi_\")"
        );
    }

    fn render(
        metrics: &[(&str, MetricType)],
        values: &[i64],
        opts: &Options,
        fmt: Format,
    ) -> String {
        let mut out = Vec::new();
        Layout::new(metrics, opts).render(values, fmt, &mut out);
        String::from_utf8(out).expect("UTF-8 output")
    }

    #[test]
    fn short_and_long_values() {
        let m = [
            ("a", MetricType::Gauge),
            ("q.1", MetricType::Gauge),
            ("q.2", MetricType::Gauge),
        ];
        let o = Options {
            help: false,
            ..Options::default()
        };
        assert_eq!(render(&m, &[], &o, Format::Text), "");
        assert_eq!(render(&m, &[], &o, Format::OpenMetrics), "# EOF\n");
        assert_eq!(
            render(&m, &[1, 2], &o, Format::Text),
            "# TYPE uwsgi_a gauge\nuwsgi_a 1\n# TYPE uwsgi_q gauge\nuwsgi_q{q=\"1\"} 2\n"
        );
        assert_eq!(
            render(&m, &[1, 2, 3, 4], &o, Format::Text),
            "# TYPE uwsgi_a gauge\nuwsgi_a 1\n# TYPE uwsgi_q gauge\nuwsgi_q{q=\"1\"} 2\nuwsgi_q{q=\"2\"} 3\n"
        );
    }

    #[test]
    fn negative_counters_render_as_zero() {
        let m = [("c", MetricType::Counter), ("g", MetricType::Gauge)];
        let o = Options {
            help: false,
            ..Options::default()
        };
        assert_eq!(
            render(&m, &[-5, -5], &o, Format::OpenMetrics),
            "# TYPE uwsgi_c counter\nuwsgi_c_total 0\n# TYPE uwsgi_g gauge\nuwsgi_g -5\n# EOF\n"
        );
    }

    #[test]
    fn collisions() {
        use MetricType::{Counter as C, Gauge as G};
        let m = [
            ("x", C),         // uwsgi_x counter
            ("x", G),         // same family, other type
            ("x.total", C),   // same series as the first
            ("x.created", G), // clashes with uwsgi_x_created
            ("x.1", C),       // new series of uwsgi_x
            ("kb.1.y.2", G),  // uwsgi_y{kb,y}
            ("y.2.kb.1", G),  // same labelset in another order
            ("...", G),
            ("rss_size", MetricType::Alias),
        ];
        let l = Layout::new(&m, &Options::default());
        let reasons: Vec<String> = l
            .skipped()
            .iter()
            .map(|s| format!("{}#{s}", s.index))
            .collect();
        assert_eq!(
            reasons,
            [
                "1#x: family uwsgi_x already exists with another type",
                "2#x.total: duplicate series of uwsgi_x_total (same labels as an earlier metric)",
                "3#x.created: name uwsgi_x_created is already used by another family",
                "6#y.2.kb.1: duplicate series of uwsgi_y (same labels as an earlier metric)",
                "7#...: no usable name left after sanitising",
                "8#rss_size: alias of another metric",
            ]
        );
        assert_eq!(l.series(), 3);
        assert_eq!(l.families(), 2);
    }
}
