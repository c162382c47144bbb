//! The Python applications' own families (prometheus_client metrics whose values live in the
//! plugin's shared memory), rendered by the master after uWSGI's families in every format the
//! engine speaks.
//!
//! The host reads the shared table, merges the per-process values and hands plain owned data
//! ([`AppFamily`]) to [`render_app`]; this module only renders. The goal is that the master's
//! text output of a family is byte for byte what `prometheus_client.generate_latest()`
//! (0.26) prints for the same metric in one process (without `_created` series), so that
//! moving an application under the plugin changes nothing its dashboards see:
//!
//! * values and `le` bounds are printed as prometheus_client's `floatToGoString` does
//!   ([`push_float`]): Python's `repr` (`1.0`, `0.005`, `1e-05`), `+Inf`, `-Inf`, `NaN`, and Go's
//!   exponent form for positive numbers of 7 or more integer digits (`1.5e+06`);
//! * labels are sorted by name (the app's, `le` and the constant labels of
//!   [`Options::labels`]), as prometheus_client sorts them;
//! * a counter `x` is announced as `x_total` in the text format 0.0.4 and as `x` in OpenMetrics,
//!   its samples are `x_total` (the engine's own counters follow the same rule); in protobuf
//!   the family is `x_total`, as the engine's encoder names counters;
//! * a histogram prints its cumulative buckets sorted by bound (`le="+Inf"` always last, equal
//!   to the count), then `x_count`, then `x_sum`; a summary `x_count` then `x_sum` (no
//!   quantiles: prometheus_client has none): prometheus_client's order;
//! * a family without any series left is not printed (prometheus_client's multiprocess
//!   collector prints no such family either).
//!
//! Like the engine's families, HELP and label values are escaped by `format/escape.rs` (ASCII
//! control characters but TAB become a space), `# HELP` and `# TYPE` lines follow
//! [`Options::help`] and [`Options::types`] (without types, the `_bucket`, `_count` and `_sum`
//! samples of a histogram or summary are three contiguous groups, each with its HELP, since a
//! parser reads them as separate untyped families), and protobuf always carries types. No
//! `# UNIT` is written: prometheus_client's unit is not part of the data.
//!
//! # What is skipped
//!
//! Whatever would make the output invalid is left out and counted in [`AppRenderStats`], which
//! the host logs (the same data gives the same stats at every scrape):
//!
//! * a family whose name is not `[a-zA-Z_:][a-zA-Z0-9_:]*`, that repeats an earlier family's
//!   name, whose sample names (`x`, `x_total`, `x_bucket`, `x_count`, `x_sum`, `x_created`
//!   according to its type) clash with an earlier family's, or that starts with the plugin's
//!   prefix ([`Options::prefix`], the namespace of uWSGI's own families rendered before);
//! * a series whose value does not match its family's kind, with an invalid or repeated label
//!   name, a label named like a constant label, `le` on a histogram or `quantile` on a
//!   summary, or the same label set as an earlier series (an empty label value counts as no
//!   label, as in Prometheus);
//! * a histogram series with a NaN or negative bound, and a histogram or summary series whose
//!   sum is NaN or negative: OpenMetrics forbids a negative or NaN `_sum`, and a `_sum` next
//!   to negative buckets (prometheus_client's own parser rejects both).
//!
//! Values that are merely out of range are clamped, identically in every format so that they
//! all carry the same numbers: a NaN or negative counter is 0 (as the engine's counters); a
//! bucket count or a summary count NaN or negative is 0, and is rounded to an integer
//! and capped at 2^64 (OpenMetrics and protobuf counts are integers).
//!
//! # Cost
//!
//! This runs in the master at every scrape, for up to tens of thousands of series: apart from a
//! few scratch buffers per call (reused from series to series) and growing `out`, nothing is
//! allocated; numbers are formatted on the stack.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;

use crate::format::{push_help, push_label_value, put_varint, varint_len, Format, Options, Prefix};

/// The type of an application family (prometheus_client's four metric types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppKind {
    /// A counter: samples `<name>_total`.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram: `<name>_bucket`, `<name>_count`, `<name>_sum`.
    Histogram,
    /// A summary without quantiles: `<name>_count`, `<name>_sum`.
    Summary,
}

impl AppKind {
    fn type_name(self) -> &'static str {
        match self {
            AppKind::Counter => "counter",
            AppKind::Gauge => "gauge",
            AppKind::Histogram => "histogram",
            AppKind::Summary => "summary",
        }
    }

    /// The suffixes of the names a family of this kind owns (the empty one is the family name
    /// itself, which OpenMetrics and the `# TYPE` lines use).
    fn owned(self) -> &'static [&'static str] {
        match self {
            AppKind::Counter => &["", "_total", "_created"],
            AppKind::Gauge => &[""],
            AppKind::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
            AppKind::Summary => &["", "_count", "_sum", "_created"],
        }
    }

    /// `io.prometheus.client.MetricType`.
    fn pb_type(self) -> u64 {
        match self {
            AppKind::Counter => 0,
            AppKind::Gauge => 1,
            AppKind::Summary => 2,
            AppKind::Histogram => 4,
        }
    }
}

/// Every suffix some kind owns (see `AppKind::owned`).
const SUFFIXES: [&str; 6] = ["", "_total", "_created", "_bucket", "_count", "_sum"];

/// One application metric family, merged over the processes by the host.
#[derive(Clone, Debug, PartialEq)]
pub struct AppFamily {
    /// prometheus_client's metric name (for a counter without `_total`).
    pub name: String,
    /// The HELP text, raw (escaped on output).
    pub help: String,
    /// The family's type; every series' [`AppValue`] must be of it.
    pub kind: AppKind,
    /// The series, in output order.
    pub series: Vec<AppSeries>,
}

/// One series of an [`AppFamily`].
#[derive(Clone, Debug, PartialEq)]
pub struct AppSeries {
    /// The application's own labels, raw values (never `le` for a histogram, `quantile` for a
    /// summary). Constant labels are added on output.
    pub labels: Vec<(String, String)>,
    /// The value, of the family's kind.
    pub value: AppValue,
}

/// The value of an [`AppSeries`].
#[derive(Clone, Debug, PartialEq)]
pub enum AppValue {
    /// A counter's value.
    Counter(f64),
    /// A gauge's value.
    Gauge(f64),
    /// A histogram's buckets and sum.
    Histogram {
        /// `(upper bound, NON-cumulative count)` in any order; equal bounds are added up, and
        /// `+Inf` is added (with count 0) when missing.
        buckets: Vec<(f64, f64)>,
        /// The sum of the observations.
        sum: f64,
    },
    /// A summary's count and sum (prometheus_client's summaries have no quantiles).
    Summary {
        /// Number of observations.
        count: f64,
        /// Sum of the observations.
        sum: f64,
    },
}

/// Why a family or a series is not rendered (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppSkipReason {
    /// The family name is not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    FamilyName,
    /// An earlier family has the same name.
    DuplicateFamily,
    /// One of the family's sample names is owned by an earlier family.
    NameClash,
    /// The family name starts with the plugin's prefix ([`Options::prefix`]).
    ReservedPrefix,
    /// The series' value is not of the family's kind.
    WrongKind,
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`, or starts with `__`.
    LabelName,
    /// The series has the same label name twice.
    DuplicateLabel,
    /// The series has a label named like a constant label ([`Options::labels`]).
    ConstantLabel,
    /// `le` on a histogram series, `quantile` on a summary series.
    ReservedLabel,
    /// An earlier series of the family has the same labels.
    DuplicateSeries,
    /// A histogram bound is NaN or negative.
    BadBound,
    /// A histogram or summary sum is NaN or negative.
    BadSum,
}

impl AppSkipReason {
    /// Every reason, in the order of [`AppRenderStats::skipped`]'s counts.
    pub const ALL: [AppSkipReason; 12] = [
        AppSkipReason::FamilyName,
        AppSkipReason::DuplicateFamily,
        AppSkipReason::NameClash,
        AppSkipReason::ReservedPrefix,
        AppSkipReason::WrongKind,
        AppSkipReason::LabelName,
        AppSkipReason::DuplicateLabel,
        AppSkipReason::ConstantLabel,
        AppSkipReason::ReservedLabel,
        AppSkipReason::DuplicateSeries,
        AppSkipReason::BadBound,
        AppSkipReason::BadSum,
    ];

    /// True for the reasons that skip a whole family.
    pub fn is_family(self) -> bool {
        (self as usize) < AppSkipReason::WrongKind as usize
    }
}

impl fmt::Display for AppSkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AppSkipReason::FamilyName => "invalid metric name",
            AppSkipReason::DuplicateFamily => "an earlier family has the same name",
            AppSkipReason::NameClash => "its sample names clash with an earlier family's",
            AppSkipReason::ReservedPrefix => {
                "its name starts with the plugin's prefix (--prometheus-prefix)"
            }
            AppSkipReason::WrongKind => "a value of another type than its family",
            AppSkipReason::LabelName => "invalid label name",
            AppSkipReason::DuplicateLabel => "the same label twice",
            AppSkipReason::ConstantLabel => {
                "a label also set as a constant label (--prometheus-label)"
            }
            AppSkipReason::ReservedLabel => "label le on a histogram or quantile on a summary",
            AppSkipReason::DuplicateSeries => "the same labels as an earlier series",
            AppSkipReason::BadBound => "a histogram bucket bound that is NaN or negative",
            AppSkipReason::BadSum => "a sum that is NaN or negative",
        })
    }
}

/// The first thing [`render_app`] skipped: enough for the host to name it in a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppSkip {
    /// Index of the family in the input.
    pub family: usize,
    /// Index of the series in the family, `None` when the whole family is skipped.
    pub series: Option<usize>,
    /// Why.
    pub reason: AppSkipReason,
}

/// What [`render_app`] rendered and skipped, for the host to log (once per change: the same
/// input gives the same stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppRenderStats {
    /// Families rendered (with at least one series).
    pub families: usize,
    /// Series rendered.
    pub series: usize,
    /// Families skipped whole (their series are not counted below).
    pub skipped_families: usize,
    /// Series skipped within rendered families.
    pub skipped_series: usize,
    /// Skips by reason, indexed like [`AppSkipReason::ALL`].
    pub by_reason: [usize; 12],
    /// Families left out by [`Options::families`] (`--prometheus-include`,
    /// `--prometheus-exclude`): chosen, so not counted as skips.
    pub filtered: usize,
    /// The first skip, if any.
    pub first_skip: Option<AppSkip>,
}

impl AppRenderStats {
    /// How many families or series were skipped for `reason`.
    pub fn skipped(&self, reason: AppSkipReason) -> usize {
        self.by_reason[reason as usize]
    }

    fn skip(&mut self, family: usize, series: Option<usize>, reason: AppSkipReason) {
        if series.is_some() {
            self.skipped_series += 1;
        } else {
            self.skipped_families += 1;
        }
        self.by_reason[reason as usize] += 1;
        self.first_skip.get_or_insert(AppSkip {
            family,
            series,
            reason,
        });
    }
}

/// Appends the application families in `fmt`, after whatever `out` holds (uWSGI's families):
/// no `# EOF`, which the caller adds after all families in OpenMetrics. `opts` gives the
/// constant labels (those [`validate_label`](crate::format::validate_label) accepts, as for the engine's families), HELP and
/// TYPE lines, and the prefix that app families may not use. Never panics.
///
/// ```
/// use metrics_prometheus_engine::app::{render_app, AppFamily, AppKind, AppSeries, AppValue};
/// use metrics_prometheus_engine::format::{Format, Options};
///
/// let fams = [AppFamily {
///     name: "app_jobs".into(),
///     help: "Jobs run.".into(),
///     kind: AppKind::Counter,
///     series: vec![AppSeries {
///         labels: vec![("queue".into(), "mail".into())],
///         value: AppValue::Counter(3.0),
///     }],
/// }];
/// let mut out = Vec::new();
/// let stats = render_app(&fams, Format::Text, &Options::default(), &mut out);
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     "# HELP app_jobs_total Jobs run.\n# TYPE app_jobs_total counter\napp_jobs_total{queue=\"mail\"} 3.0\n"
/// );
/// assert_eq!((stats.families, stats.series, stats.skipped_series), (1, 1, 0));
/// ```
pub fn render_app(
    families: &[AppFamily],
    fmt: Format,
    opts: &Options,
    out: &mut Vec<u8>,
) -> AppRenderStats {
    let mut r = Renderer::new(fmt, opts);
    for (fi, fam) in families.iter().enumerate() {
        if !r.kept(fam) {
            r.stats.filtered += 1;
            continue;
        }
        if let Err(reason) = r.claim(fam) {
            r.stats.skip(fi, None, reason);
            continue;
        }
        r.accept_series(fi, fam);
        if r.accepted.is_empty() {
            continue;
        }
        r.stats.families += 1;
        r.stats.series += r.accepted.len();
        match fmt {
            Format::Protobuf => r.family_pb(fam, out),
            Format::Text | Format::OpenMetrics => r.family_text(fam, out),
        }
    }
    r.stats
}

/// The state of one [`render_app`] call: options resolved once, and scratch buffers reused
/// from series to series.
struct Renderer<'a> {
    om: bool,
    opts: &'a Options,
    /// The prefix as the engine applies it (bytes outside `[a-zA-Z0-9_]` replaced by `_`).
    prefix: Prefix,
    /// The valid constant labels.
    constant: Vec<(&'a str, &'a str)>,
    /// Rendered families: name → kind.
    names: HashMap<&'a str, AppKind>,
    /// Scratch: a family name plus a suffix.
    name_buf: String,
    /// Indices of the current family's series that are rendered.
    accepted: Vec<usize>,
    /// The current family's label sets: hash → index of the first series with it.
    seen: HashMap<u64, usize>,
    /// Scratch: the current series' labels, constant ones included, sorted by name.
    labels: Vec<(&'a str, &'a str)>,
    /// Scratch: `labels` escaped as `k="v",...`, and where `le` goes in it (the start of the
    /// first label after `le`, or its length).
    lbl: String,
    le_at: usize,
    /// Scratch: a histogram's buckets, sorted, as (bound, cumulative count).
    buckets: Vec<(f64, f64)>,
    stats: AppRenderStats,
}

impl<'a> Renderer<'a> {
    fn new(fmt: Format, opts: &'a Options) -> Self {
        Renderer {
            om: fmt == Format::OpenMetrics,
            opts,
            prefix: Prefix::new(&opts.prefix),
            constant: opts
                .valid_labels()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            names: HashMap::new(),
            name_buf: String::new(),
            accepted: Vec::new(),
            seen: HashMap::new(),
            labels: Vec::new(),
            lbl: String::new(),
            le_at: 0,
            buckets: Vec::new(),
            stats: AppRenderStats::default(),
        }
    }

    /// Whether [`Options::families`] keeps the family: matched on the name of its text
    /// `# TYPE` line (`x_total` for a counter, which also matches as `x`), as the engine's
    /// families are. A family left out claims no name. Nothing is allocated.
    fn kept(&mut self, fam: &AppFamily) -> bool {
        let opts: &'a Options = self.opts;
        let filter = &opts.families;
        if filter.is_empty() {
            return true;
        }
        if fam.kind == AppKind::Counter {
            let n = &mut self.name_buf;
            n.clear();
            n.push_str(&fam.name);
            n.push_str("_total");
            filter.keeps(n, Some(&fam.name))
        } else {
            filter.keeps(&fam.name, None)
        }
    }

    /// Checks a family's name against the rules and the earlier families, and claims it.
    fn claim(&mut self, fam: &'a AppFamily) -> Result<(), AppSkipReason> {
        if !is_metric_name(&fam.name) {
            return Err(AppSkipReason::FamilyName);
        }
        if self.names.contains_key(fam.name.as_str()) {
            return Err(AppSkipReason::DuplicateFamily);
        }
        for own in fam.kind.owned() {
            let n = &mut self.name_buf;
            n.clear();
            n.push_str(&fam.name);
            n.push_str(own);
            let prefix = self.prefix.as_str();
            if !prefix.is_empty() && n.starts_with(prefix) {
                return Err(AppSkipReason::ReservedPrefix);
            }
            // Another family `base` owns `n` if `n` is `base` plus one of its suffixes.
            for suffix in SUFFIXES {
                let Some(base) = n.strip_suffix(suffix) else {
                    continue;
                };
                if self
                    .names
                    .get(base)
                    .is_some_and(|k| k.owned().contains(&suffix))
                {
                    return Err(AppSkipReason::NameClash);
                }
            }
        }
        self.names.insert(&fam.name, fam.kind);
        Ok(())
    }

    /// Fills `accepted` with the series of `fam` to render, counting the others.
    fn accept_series(&mut self, fi: usize, fam: &'a AppFamily) {
        self.accepted.clear();
        self.seen.clear();
        for si in 0..fam.series.len() {
            match self.check_series(fam, si) {
                Ok(()) => self.accepted.push(si),
                Err(reason) => self.stats.skip(fi, Some(si), reason),
            }
        }
    }

    fn check_series(&mut self, fam: &'a AppFamily, si: usize) -> Result<(), AppSkipReason> {
        let s = &fam.series[si];
        let reserved = match (fam.kind, &s.value) {
            (AppKind::Counter, AppValue::Counter(_)) | (AppKind::Gauge, AppValue::Gauge(_)) => "",
            (AppKind::Histogram, AppValue::Histogram { .. }) => "le",
            (AppKind::Summary, AppValue::Summary { .. }) => "quantile",
            _ => return Err(AppSkipReason::WrongKind),
        };
        for (i, (k, _)) in s.labels.iter().enumerate() {
            if !is_label_name(k) {
                return Err(AppSkipReason::LabelName);
            }
            if s.labels[..i].iter().any(|(j, _)| j == k) {
                return Err(AppSkipReason::DuplicateLabel);
            }
            if self.constant.iter().any(|(c, _)| c == k) {
                return Err(AppSkipReason::ConstantLabel);
            }
            if k == reserved {
                return Err(AppSkipReason::ReservedLabel);
            }
        }
        match &s.value {
            AppValue::Histogram { buckets, sum } => {
                if buckets.iter().any(|&(b, _)| b.is_nan() || b < 0.0) {
                    return Err(AppSkipReason::BadBound);
                }
                if sum.is_nan() || *sum < 0.0 {
                    return Err(AppSkipReason::BadSum);
                }
            }
            AppValue::Summary { sum, .. } if sum.is_nan() || *sum < 0.0 => {
                return Err(AppSkipReason::BadSum)
            }
            _ => {}
        }
        let h = label_set_hash(&s.labels);
        match self.seen.get(&h) {
            None => {
                self.seen.insert(h, si);
                Ok(())
            }
            Some(&first) if same_label_set(&fam.series[first].labels, &s.labels) => {
                Err(AppSkipReason::DuplicateSeries)
            }
            // A hash collision between different label sets: compare with every series.
            Some(_) => {
                let dup = self
                    .accepted
                    .iter()
                    .any(|&a| same_label_set(&fam.series[a].labels, &s.labels));
                if dup {
                    Err(AppSkipReason::DuplicateSeries)
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl<'a> Renderer<'a> {
    /// The text formats: one group per family, or per sample suffix without `# TYPE`.
    fn family_text(&mut self, fam: &'a AppFamily, out: &mut Vec<u8>) {
        let name = fam.name.as_str();
        let typed = self.opts.types;
        match fam.kind {
            AppKind::Counter | AppKind::Gauge => {
                let sample = if fam.kind == AppKind::Counter {
                    "_total"
                } else {
                    ""
                };
                // Typed OpenMetrics names the counter family without `_total`.
                self.head(out, fam, if self.om && typed { "" } else { sample });
                for i in 0..self.accepted.len() {
                    let s = &fam.series[self.accepted[i]];
                    self.series_labels(s);
                    let v = match s.value {
                        AppValue::Counter(v) => non_negative(v),
                        AppValue::Gauge(v) => v,
                        _ => continue,
                    };
                    self.line(out, name, sample, v);
                }
            }
            AppKind::Histogram | AppKind::Summary if typed => {
                self.head(out, fam, "");
                for i in 0..self.accepted.len() {
                    let s = &fam.series[self.accepted[i]];
                    self.series_labels(s);
                    self.stat_lines(out, name, &s.value, Part::All);
                }
            }
            AppKind::Histogram | AppKind::Summary => {
                // Untyped, `_bucket`, `_count` and `_sum` are three families, each contiguous.
                let parts: &[(&str, Part)] = if fam.kind == AppKind::Histogram {
                    &[
                        ("_bucket", Part::Buckets),
                        ("_count", Part::Count),
                        ("_sum", Part::Sum),
                    ]
                } else {
                    &[("_count", Part::Count), ("_sum", Part::Sum)]
                };
                for &(suffix, part) in parts {
                    self.head(out, fam, suffix);
                    for i in 0..self.accepted.len() {
                        let s = &fam.series[self.accepted[i]];
                        self.series_labels(s);
                        self.stat_lines(out, name, &s.value, part);
                    }
                }
            }
        }
    }

    /// `# HELP` and `# TYPE` lines for `name` + `suffix`, as the options say.
    fn head(&mut self, out: &mut Vec<u8>, fam: &AppFamily, suffix: &str) {
        if self.opts.help {
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(fam.name.as_bytes());
            out.extend_from_slice(suffix.as_bytes());
            out.push(b' ');
            self.lbl.clear();
            push_help(&fam.help, self.om, &mut self.lbl);
            out.extend_from_slice(self.lbl.as_bytes());
            out.push(b'\n');
        }
        if self.opts.types {
            out.extend_from_slice(b"# TYPE ");
            out.extend_from_slice(fam.name.as_bytes());
            out.extend_from_slice(suffix.as_bytes());
            out.push(b' ');
            out.extend_from_slice(fam.kind.type_name().as_bytes());
            out.push(b'\n');
        }
    }

    /// The lines of a histogram or summary series (`part` of them): buckets, `_count`, `_sum`.
    fn stat_lines(&mut self, out: &mut Vec<u8>, name: &str, value: &AppValue, part: Part) {
        let (count, sum) = match value {
            AppValue::Histogram { buckets, sum } => {
                let total = self.prepare(buckets);
                if matches!(part, Part::All | Part::Buckets) {
                    for &(le, cum) in &self.buckets {
                        self.bucket_line(out, name, le, cum);
                    }
                }
                (total, *sum)
            }
            AppValue::Summary { count, sum } => (sanitize_count(*count), *sum),
            _ => return,
        };
        if matches!(part, Part::All | Part::Count) {
            self.line(out, name, "_count", count);
        }
        if matches!(part, Part::All | Part::Sum) {
            self.line(out, name, "_sum", sum);
        }
    }

    /// `name` + `suffix`, the labels, the value.
    fn line(&self, out: &mut Vec<u8>, name: &str, suffix: &str, v: f64) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        if !self.lbl.is_empty() {
            out.push(b'{');
            out.extend_from_slice(self.lbl.as_bytes());
            out.push(b'}');
        }
        out.push(b' ');
        push_float(out, v);
        out.push(b'\n');
    }

    /// `name_bucket{...,le="…",...} cum`, `le` at its place in the sorted labels.
    fn bucket_line(&self, out: &mut Vec<u8>, name: &str, le: f64, cum: f64) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"_bucket{");
        let (pre, post) = self.lbl.split_at(self.le_at);
        out.extend_from_slice(pre.as_bytes());
        if post.is_empty() && !pre.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"le=\"");
        push_float(out, le);
        out.push(b'"');
        if !post.is_empty() {
            out.push(b',');
            out.extend_from_slice(post.as_bytes());
        }
        out.extend_from_slice(b"} ");
        push_float(out, cum);
        out.push(b'\n');
    }

    /// Fills `labels` with the series' labels and the constant ones, sorted by name.
    fn sorted_labels(&mut self, s: &'a AppSeries) {
        self.labels.clear();
        self.labels
            .extend(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.labels.extend_from_slice(&self.constant);
        self.labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }

    /// [`Self::sorted_labels`], then `lbl` and `le_at`.
    fn series_labels(&mut self, s: &'a AppSeries) {
        self.sorted_labels(s);
        self.lbl.clear();
        self.le_at = usize::MAX;
        for (i, &(k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                self.lbl.push(',');
            }
            if self.le_at == usize::MAX && k > "le" {
                self.le_at = self.lbl.len();
            }
            self.lbl.push_str(k);
            self.lbl.push_str("=\"");
            push_label_value(v, &mut self.lbl);
            self.lbl.push('"');
        }
        self.le_at = self.le_at.min(self.lbl.len());
    }

    /// Fills `buckets` with the histogram's buckets sorted by bound, equal bounds merged,
    /// counts sanitised and made cumulative, `+Inf` last; returns the total count. Bounds are
    /// neither NaN nor negative (checked before).
    fn prepare(&mut self, buckets: &[(f64, f64)]) -> f64 {
        let b = &mut self.buckets;
        b.clear();
        b.extend(buckets.iter().map(|&(le, c)| (le, sanitize_count(c))));
        b.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
        let (mut w, mut cum) = (0, 0.0f64);
        for i in 0..b.len() {
            cum = (cum + b[i].1).min(TWO_64);
            if w > 0 && b[w - 1].0 == b[i].0 {
                b[w - 1].1 = cum;
            } else {
                b[w] = (b[i].0, cum);
                w += 1;
            }
        }
        b.truncate(w);
        if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
            b.push((f64::INFINITY, cum));
        }
        cum
    }
}

/// Which samples of a histogram or summary series [`Renderer::stat_lines`] writes.
#[derive(Clone, Copy)]
enum Part {
    All,
    Buckets,
    Count,
    Sum,
}

/// 2^64 as a double (`u64::MAX as f64`): the largest count a protobuf `uint64` holds, give or
/// take the rounding.
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

/// A counter value: NaN and negative values (and -0) become 0.
fn non_negative(v: f64) -> f64 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// A count: NaN and negative counts become 0, others are rounded and capped at 2^64.
fn sanitize_count(c: f64) -> f64 {
    if c > 0.0 {
        c.round().min(TWO_64)
    } else {
        0.0
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved by Prometheus).
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && !s.starts_with("__")
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A label value byte as every format carries it: ASCII control characters but TAB and LF
/// become a space (`format/escape.rs`; LF is escaped in text and kept in protobuf).
fn clean_byte(b: u8) -> u8 {
    if (b.is_ascii_control()) && b != b'\t' && b != b'\n' {
        b' '
    } else {
        b
    }
}

/// An order-independent hash of a label set as output (empty values left out, values
/// cleaned), so that two series that would print the same labels get the same hash.
fn label_set_hash(labels: &[(String, String)]) -> u64 {
    labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .fold(0u64, |acc, (k, v)| {
            let mut h = DefaultHasher::new();
            k.hash(&mut h);
            for b in v.bytes() {
                h.write_u8(clean_byte(b));
            }
            acc.wrapping_add(h.finish())
        })
}

/// Whether two label sets print the same (see [`label_set_hash`]); names are unique in each.
fn same_label_set(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let set = |l: &[(String, String)]| l.iter().filter(|(_, v)| !v.is_empty()).count();
    set(a) == set(b)
        && a.iter().filter(|(_, v)| !v.is_empty()).all(|(k, v)| {
            b.iter().any(|(k2, v2)| {
                k == k2
                    && v.len() == v2.len()
                    && v.bytes()
                        .zip(v2.bytes())
                        .all(|(x, y)| clean_byte(x) == clean_byte(y))
            })
        })
}

/// Appends `v` as prometheus_client's `floatToGoString` prints it: `+Inf`, `-Inf`, `NaN`,
/// otherwise Python's `repr` (shortest round-trip digits; fixed notation from 1e-4 up to
/// 1e16, else `1e-05`, `1.5e+16`), except that positive numbers with 7 to 16 integer digits
/// are written in Go's exponent form (`1234567.0` → `1.234567e+06`). Used for `le` values
/// and sample values alike.
pub fn push_float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        return out.extend_from_slice(b"NaN");
    }
    if v.is_infinite() {
        return out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    }
    if v.is_sign_negative() {
        out.push(b'-');
    }
    let a = v.abs();
    // Fast path for the common whole numbers (counts): repr is the digits and ".0".
    if a < 1e6 && a.fract() == 0.0 {
        out.extend_from_slice(itoa::Buffer::new().format(a as u64).as_bytes());
        return out.extend_from_slice(b".0");
    }
    // Shortest round-trip digits and exponent, from Rust's `{:e}` (`1.2345e-7`, `5e0`).
    let mut buf = [0u8; 32];
    let n = {
        let mut w = &mut buf[..];
        // At most 24 bytes (`2.2250738585072014e-308`): it fits.
        let _ = write!(w, "{a:e}");
        32 - w.len()
    };
    let s = &buf[..n];
    let e_at = s.iter().position(|&b| b == b'e').unwrap_or(n);
    let exp: i32 = std::str::from_utf8(&s[e_at + 1..])
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &b in s[..e_at].iter().filter(|b| b.is_ascii_digit()) {
        digits[nd] = b;
        nd += 1;
    }
    half_even(a, exp, &mut digits[..nd]);
    let digits = &digits[..nd];
    // Python's decimal point position: `digits` × 10^(decpt - nd).
    let decpt = exp + 1;
    let go_exponent = v > 0.0 && decpt >= 7;
    if decpt <= -4 || decpt > 16 || go_exponent {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(itoa::Buffer::new().format(e).as_bytes());
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else {
        let d = decpt as usize;
        if d < nd {
            out.extend_from_slice(&digits[..d]);
            out.push(b'.');
            out.extend_from_slice(&digits[d..]);
        } else {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', d - nd));
            out.extend_from_slice(b".0");
        }
    }
}

// Protobuf wire tags: (field number << 3) | wire type (0 varint, 1 64-bit, 2 length-delimited),
// from engine/tests/data/metrics.proto (`format/protobuf/` keeps its own private).
const FAMILY_NAME: u8 = 0x0a;
const FAMILY_HELP: u8 = 0x12;
const FAMILY_TYPE: u8 = 0x18;
const FAMILY_METRIC: u8 = 0x22;
const METRIC_LABEL: u8 = 0x0a;
const METRIC_GAUGE: u8 = 0x12;
const METRIC_COUNTER: u8 = 0x1a;
const METRIC_SUMMARY: u8 = 0x22;
const METRIC_HISTOGRAM: u8 = 0x3a;
const LABEL_NAME: u8 = 0x0a;
const LABEL_VALUE: u8 = 0x12;
/// `Counter.value`, `Gauge.value`.
const VALUE: u8 = 0x09;
/// `Summary` and `Histogram`: `sample_count` 1, `sample_sum` 2; `Histogram.bucket` 3.
const SAMPLE_COUNT: u8 = 0x08;
const SAMPLE_SUM: u8 = 0x11;
const HIST_BUCKET: u8 = 0x1a;
/// `Bucket`: `cumulative_count` 1, `upper_bound` 2.
const BUCKET_COUNT: u8 = 0x08;
const BUCKET_UPPER: u8 = 0x11;

/// Size of a `LabelPair` message.
fn pair_len(k: &str, v: &str) -> usize {
    2 + varint_len(k.len() as u64) + k.len() + varint_len(v.len() as u64) + v.len()
}

/// `tag`, the length of `s`, `s` with [`clean_byte`] applied (same length).
fn put_clean(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    put_varint(out, s.len() as u64);
    out.extend(s.bytes().map(clean_byte));
}

impl<'a> Renderer<'a> {
    /// One delimited `MetricFamily`: written in place, then its length is appended and
    /// rotated in front of it (one move of the family's bytes, no size pass over the series).
    fn family_pb(&mut self, fam: &'a AppFamily, out: &mut Vec<u8>) {
        let mark = out.len();
        let counter = fam.kind == AppKind::Counter;
        out.push(FAMILY_NAME);
        put_varint(out, (fam.name.len() + if counter { 6 } else { 0 }) as u64);
        out.extend_from_slice(fam.name.as_bytes());
        if counter {
            out.extend_from_slice(b"_total");
        }
        if self.opts.help {
            put_clean(out, FAMILY_HELP, &fam.help);
        }
        out.push(FAMILY_TYPE);
        put_varint(out, fam.kind.pb_type());
        for i in 0..self.accepted.len() {
            self.metric_pb(&fam.series[self.accepted[i]], out);
        }
        let len = out.len() - mark;
        put_varint(out, len as u64);
        let width = out.len() - mark - len;
        out[mark..].rotate_right(width);
    }

    /// One `Metric`, its exact length computed first (from the labels and, for a histogram,
    /// the prepared buckets). The `+Inf` bucket is implied by `sample_count`, as the engine's
    /// encoder and client_golang leave it out.
    fn metric_pb(&mut self, s: &'a AppSeries, out: &mut Vec<u8>) {
        self.sorted_labels(s);
        let labels_len: usize = self
            .labels
            .iter()
            .map(|&(k, v)| {
                let p = pair_len(k, v);
                1 + varint_len(p as u64) + p
            })
            .sum();
        let (tag, body_len, count) = match &s.value {
            AppValue::Counter(_) => (METRIC_COUNTER, 9, 0),
            AppValue::Gauge(_) => (METRIC_GAUGE, 9, 0),
            AppValue::Summary { count, .. } => {
                let c = sanitize_count(*count) as u64;
                (METRIC_SUMMARY, 1 + varint_len(c) + 9, c)
            }
            AppValue::Histogram { buckets, .. } => {
                let c = self.prepare(buckets) as u64;
                let b: usize = self
                    .buckets
                    .iter()
                    .filter(|b| b.0.is_finite())
                    .map(|&(_, cum)| 3 + varint_len(cum as u64) + 9)
                    .sum();
                (METRIC_HISTOGRAM, 1 + varint_len(c) + 9 + b, c)
            }
        };
        out.push(FAMILY_METRIC);
        put_varint(
            out,
            (labels_len + 1 + varint_len(body_len as u64) + body_len) as u64,
        );
        for &(k, v) in &self.labels {
            out.push(METRIC_LABEL);
            put_varint(out, pair_len(k, v) as u64);
            put_clean(out, LABEL_NAME, k);
            put_clean(out, LABEL_VALUE, v);
        }
        out.push(tag);
        put_varint(out, body_len as u64);
        match &s.value {
            AppValue::Counter(v) => {
                out.push(VALUE);
                out.extend_from_slice(&non_negative(*v).to_le_bytes());
            }
            AppValue::Gauge(v) => {
                out.push(VALUE);
                out.extend_from_slice(&v.to_le_bytes());
            }
            AppValue::Summary { sum, .. } => {
                out.push(SAMPLE_COUNT);
                put_varint(out, count);
                out.push(SAMPLE_SUM);
                out.extend_from_slice(&sum.to_le_bytes());
            }
            AppValue::Histogram { sum, .. } => {
                out.push(SAMPLE_COUNT);
                put_varint(out, count);
                out.push(SAMPLE_SUM);
                out.extend_from_slice(&sum.to_le_bytes());
                for &(le, cum) in self.buckets.iter().filter(|b| b.0.is_finite()) {
                    let cum = cum as u64;
                    out.push(HIST_BUCKET);
                    // At most 1 + 10 + 9 bytes: the length takes one byte.
                    out.push((1 + varint_len(cum) + 9) as u8);
                    out.push(BUCKET_COUNT);
                    put_varint(out, cum);
                    out.push(BUCKET_UPPER);
                    out.extend_from_slice(&le.to_le_bytes());
                }
            }
        }
    }
}

/// Makes the shortest digits `digits` (of `a` = `0.digits` × 10^(exp + 1)) break a tie as
/// Python's `repr` does. When `a` lies exactly halfway between the two shortest candidates,
/// Python (David Gay's dtoa) takes the one with an even last digit, Rust's shortest formatting
/// the upper one (`671661949449316.25` is `671661949449316.2` in Python, `…316.3` in Rust).
///
/// A tie needs the exact decimal expansion of `a` to have one digit more than `digits`, the
/// last a 5: `a` = m × 2^-k with m odd and k > 0 is m × 5^k / 10^k, whose digits are those of
/// m × 5^k, so only `a` with m × 5^k below 10^18 need a look, with integer arithmetic; the
/// even candidate is then checked to round-trip (it does unless `a` is at a binade boundary).
fn half_even(a: f64, exp: i32, digits: &mut [u8]) {
    const E18: u128 = 1_000_000_000_000_000_000;
    let bits = a.to_bits();
    let (biased, frac) = ((bits >> 52) & 0x7ff, bits & ((1 << 52) - 1));
    let (mut m, mut e2) = if biased == 0 {
        (frac, -1074i64)
    } else {
        (frac | 1 << 52, biased as i64 - 1075)
    };
    if m == 0 {
        return;
    }
    let tz = m.trailing_zeros();
    m >>= tz;
    e2 += i64::from(tz);
    if !(-30..0).contains(&e2) {
        return;
    }
    let exact = u128::from(m) * 5u128.pow((-e2) as u32);
    if exact >= E18 || exact.ilog10() as usize != digits.len() {
        return;
    }
    let shortest = digits
        .iter()
        .fold(0u128, |acc, &d| acc * 10 + u128::from(d - b'0'));
    let low = exact / 10;
    let even = if low % 2 == 0 { low } else { low + 1 };
    if shortest == even || (shortest != low && shortest != low + 1) || even.ilog10() != low.ilog10()
    {
        return;
    }
    // `even` × 10^(exp + 1 - n) must read back as `a`.
    let mut buf = [0u8; 48];
    let n = {
        let mut w = &mut buf[..];
        let _ = write!(w, "{even}e{}", i64::from(exp) + 1 - digits.len() as i64);
        48 - w.len()
    };
    let back: Option<f64> = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse().ok());
    if back == Some(a) {
        let mut v = even;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
}
