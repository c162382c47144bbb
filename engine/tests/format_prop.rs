//! Property tests: arbitrary metric lists never make the engine panic, and the
//! output always passes a strict structural checker written independently of
//! the engine (exposition grammar, escaping, grouping, uniqueness, and the
//! promlint rules that `promtool check metrics` applies).

mod check;

use check::check;
use check::protobuf::{
    check_protobuf, decode, native_counts, pb_samples, same_samples, text_helps, text_samples,
};
use metrics_prometheus_engine::format::{
    validate_label, Exemplar, FamilyFilter, Format, Glob, Histogram, Layout, MetricType,
    NativeSpec, Options,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

const TRICKY: &[&str] = &[
    "worker",
    "core",
    "socket",
    "requests",
    "ms",
    "us",
    "s",
    "sec",
    "b",
    "kb",
    "m",
    "h",
    "d",
    "per",
    "seconds",
    "bytes",
    "minutes",
    "milliseconds",
    "kilobytes",
    "total",
    "count",
    "sum",
    "bucket",
    "created",
    "gauge",
    "Counter",
    "histogram",
    "le",
    "quantile",
    "MyApp",
    "HTTPServer",
    "__x",
    "2x",
    "_",
    "-",
    "a:b",
    "q\"t",
    "back\\slash",
    "new\nline",
    "cr\rx",
    "é",
    "",
    "0",
    "1",
    "007",
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(TRICKY).prop_map(str::to_owned),
        "[a-z]{1,5}",
        "[0-9]{1,3}",
        any::<String>().prop_map(|s| s.chars().take(4).collect()),
    ]
}

fn metric_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(segment(), 0..6).prop_map(|v| v.join(".")),
        1 => any::<String>(),
    ]
}

fn metric_type() -> impl Strategy<Value = MetricType> {
    (0u8..4).prop_map(|t| MetricType::from_uwsgi(t).expect("0..4 is a uWSGI type"))
}

fn clean_options() -> impl Strategy<Value = Options> {
    (
        proptest::sample::select(&["uwsgi_", "", "_", "app_"][..]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        (constant_labels(), family_filter()),
    )
        .prop_map(
            |(prefix, help, types, workers, cores, (labels, families))| Options {
                prefix: prefix.to_owned(),
                help,
                types,
                workers,
                cores,
                labels,
                families,
            },
        )
}

fn any_options() -> impl Strategy<Value = Options> {
    (
        any::<String>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        (
            proptest::collection::vec((any::<String>(), any::<String>()), 0..3),
            family_filter(),
        ),
    )
        .prop_map(
            |(prefix, help, types, workers, cores, (labels, families))| Options {
                prefix,
                help,
                types,
                workers,
                cores,
                labels,
                families,
            },
        )
}

/// `--prometheus-include`/`--prometheus-exclude` sets: none (most of the time), or patterns
/// about the families the generators make.
fn family_filter() -> impl Strategy<Value = FamilyFilter> {
    const PATS: &[&str] = &[
        "*",
        "uwsgi_*",
        "*_total",
        "uwsgi_worker_*",
        "*_seconds",
        "?*[a-m]*",
        "x",
    ];
    let list = || proptest::collection::vec(proptest::sample::select(PATS), 0..3);
    let glob = |p: &&str| Glob::parse(p).expect("valid pattern");
    prop_oneof![
        3 => Just(FamilyFilter::default()),
        1 => (list(), list()).prop_map(move |(i, e)| FamilyFilter {
            include: i.iter().map(glob).collect(),
            exclude: e.iter().map(glob).collect(),
        }),
    ]
}

/// Valid constant label sets, one of whose names (`requests`) custom metrics also produce.
fn constant_labels() -> impl Strategy<Value = Vec<(String, String)>> {
    let sets: &[&[(&str, &str)]] = &[
        &[],
        &[("host", "web-1")],
        &[("host", "a\"b\\c\nd\r"), ("requests", "é")],
    ];
    proptest::sample::select(sets).prop_map(|set| {
        set.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

type Metrics = Vec<(String, MetricType, i64)>;

fn metrics() -> impl Strategy<Value = Metrics> {
    proptest::collection::vec((metric_name(), metric_type(), any::<i64>()), 0..40)
}

fn render(m: &Metrics, opts: &Options, values: &[i64], fmt: Format) -> (Layout, String) {
    let list: Vec<(&str, MetricType)> = m.iter().map(|(n, t, _)| (n.as_str(), *t)).collect();
    let layout = Layout::new(&list, opts);
    let mut out = Vec::new();
    layout.render(values, fmt, &mut out);
    (layout, String::from_utf8(out).expect("output is UTF-8"))
}

fn samples_of(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.starts_with('#')).collect()
}

// ---------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------

/// Family names: clean ones, and some that clash with built-in families or each other.
const HIST_FAMILIES: &[&str] = &[
    "request_duration_seconds",
    "batch_size",
    "payload_bytes",
    "requests",
    "worker_requests",
    "a",
    "x",
    "core_busy_workers",
];

const LABEL_NAMES: &[&str] = &["method", "code", "worker", "core", "app"];
const LABEL_VALUES: &[&str] = &[
    "GET",
    "2xx",
    "1",
    "",
    "q\"t",
    "back\\slash",
    "new\nline",
    "é",
];

/// A histogram, its `hist` values and its exemplars (parallel to the values).
#[derive(Clone, Debug)]
struct Hist {
    h: Histogram,
    values: Vec<u64>,
    exemplars: Vec<Option<Exemplar>>,
}

fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(LABEL_NAMES),
            proptest::sample::select(LABEL_VALUES),
        ),
        0..3,
    )
    .prop_map(|v| {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, val) in v {
            if !out.iter().any(|(n, _)| n == k) {
                out.push((k.to_owned(), val.to_owned()));
            }
        }
        out
    })
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        4 => 0u64..10,
        1 => any::<u64>(),
        1 => (u64::MAX - 3)..=u64::MAX,
    ]
}

fn trace_id() -> impl Strategy<Value = [u8; 32]> {
    prop_oneof![
        9 => proptest::collection::vec(proptest::sample::select(&b"0123456789abcdef"[..]), 32),
        // Not lowercase hex: the engine drops the exemplar.
        1 => proptest::collection::vec(proptest::sample::select(&b"0aF\"} #"[..]), 32),
    ]
    .prop_map(|v| v.try_into().expect("32 bytes"))
}

fn histogram() -> impl Strategy<Value = Hist> {
    let bounds = proptest::collection::vec(
        prop_oneof![0u64..2_000, 0u64..20_000_000, any::<u64>()],
        0..6,
    )
    .prop_map(|mut b| {
        b.sort_unstable();
        b.dedup();
        b
    });
    (
        proptest::sample::select(HIST_FAMILIES),
        bounds,
        proptest::collection::vec(label_set(), 0..5),
        proptest::option::weighted(0.5, native_spec()),
    )
        .prop_flat_map(|(family, bounds_us, series, native)| {
            let h = Histogram {
                family,
                help: "Latency \"of\" requests\\.",
                bounds_us,
                series,
                native,
            };
            let slots = h.series.len() * h.slots_per_series();
            let series = h.series.len();
            (
                Just(h),
                proptest::collection::vec(count(), slots),
                proptest::collection::vec(
                    proptest::option::weighted(0.3, (trace_id(), any::<u64>(), any::<i64>())),
                    slots,
                ),
                proptest::collection::vec(prop_oneof![3 => Just(0i64), 1 => -3i64..=3], series),
            )
        })
        .prop_map(|(h, mut values, raw, tears)| {
            let per = h.slots_per_series();
            let nb = h.bounds_us.len() + 1;
            let mut exemplars = vec![None; values.len()];
            for (i, r) in raw.into_iter().enumerate() {
                let b = i % per;
                if b == nb {
                    // The sum: any value.
                    values[i] = values[i].wrapping_mul(1_000_003);
                    continue;
                }
                if b > nb {
                    // Native counts (zero bucket, dense buckets): small, mostly 0; the
                    // exemplars there must be ignored.
                    values[i] %= 1_000;
                    exemplars[i] = r.map(|(trace_id, value_us, timestamp_us)| Exemplar {
                        trace_id,
                        value_us,
                        timestamp_us,
                    });
                    continue;
                }
                let Some((trace_id, r, timestamp_us)) = r else {
                    continue;
                };
                // The host only keeps exemplars of buckets that have observations,
                // with a value within the bucket.
                if values[i] == 0 {
                    continue;
                }
                let lo = if b == 0 { 0 } else { h.bounds_us[b - 1] + 1 };
                let hi = h.bounds_us.get(b).copied().unwrap_or(u64::MAX);
                let span = (hi - lo).wrapping_add(1);
                let value_us = if span == 0 { r } else { lo + r % span };
                exemplars[i] = Some(Exemplar {
                    trace_id,
                    value_us,
                    timestamp_us,
                });
            }
            // Every observation is counted in both the classic and the native buckets, so
            // the totals agree; then some series are torn as a scrape racing a request (or a
            // worker killed between its adds) reads them: a few observations on one side only.
            if h.native.is_some() {
                for (s, &tear) in values.chunks_mut(per).zip(&tears) {
                    let classic = s[..nb].iter().fold(0u64, |a, &c| a.saturating_add(c));
                    let native: u64 = s[nb + 1..].iter().sum();
                    s[nb - 1] = s[nb - 1].saturating_add(native.saturating_sub(classic));
                    s[nb + 1] = s[nb + 1].saturating_add(classic.saturating_sub(native));
                    if tear > 0 {
                        s[0] = s[0].saturating_add(tear.unsigned_abs());
                    } else {
                        s[nb + 1] = s[nb + 1].saturating_add(tear.unsigned_abs());
                    }
                }
            }
            Hist {
                h,
                values,
                exemplars,
            }
        })
}

/// `hist` as a consistent scrape would have read it, computed from the input alone: in each
/// series with native buckets (a valid spec and all its slots), the count is the smaller of
/// the classic and the native totals, the classic cumulative counts are capped at it and the
/// native buckets (zero bucket first) keep only that many observations, from the lowest up.
fn reconciled(hists: &[Hist], hist: &[u64]) -> Vec<u64> {
    let sat = |c: &[u64]| c.iter().fold(0u64, |a, &c| a.saturating_add(c));
    let mut out = hist.to_vec();
    let mut base = 0;
    for x in hists {
        let per = x.h.slots_per_series();
        let nb = x.h.bounds_us.len() + 1;
        for _ in &x.h.series {
            if x.h.native.is_some_and(|n| n.is_valid()) && base + per <= out.len() {
                let s = &mut out[base..base + per];
                let count = sat(&s[..nb]).min(sat(&s[nb + 1..]));
                let (mut cum, mut prev) = (0u64, 0u64);
                for c in &mut s[..nb] {
                    cum = cum.saturating_add(*c);
                    let capped = cum.min(count);
                    *c = capped - prev;
                    prev = capped;
                }
                let mut left = count;
                for c in &mut s[nb + 1..] {
                    *c = (*c).min(left);
                    left -= *c;
                }
            }
            base += per;
        }
    }
    out
}

/// Native layouts, a few of them invalid (schema out of range, indexes past `i32`).
fn native_spec() -> impl Strategy<Value = NativeSpec> {
    (
        prop_oneof![9 => -4i8..=8, 1 => prop_oneof![-8i8..-4, 9i8..12]],
        prop_oneof![Just(0u64), 0u64..2_000],
        prop_oneof![9 => -100i32..100, 1 => (i32::MAX - 20)..=i32::MAX],
        0usize..40,
    )
        .prop_map(
            |(schema, zero_threshold_us, first_index, buckets)| NativeSpec {
                schema,
                zero_threshold_us,
                first_index,
                buckets,
            },
        )
}

/// The native parts of the protobuf rendering `pb` against the input: for each rendered
/// series of a histogram with a valid spec and all its slots, the schema, zero bucket and the
/// counts that spans and deltas encode equal the dense input counts (empty buckets only
/// inside spans), the native exemplars are those of the classic buckets; no native part
/// otherwise.
fn natives_match(
    pb: &[u8],
    hists: &[Hist],
    hist: &[u64],
    ex: &[Option<Exemplar>],
    opts: &Options,
    skipped: &[usize],
) -> Result<(), TestCaseError> {
    let fams = decode(pb).map_err(TestCaseError::fail)?;
    let hex = |e: &Exemplar| {
        e.trace_id
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let mut base = 0;
    for (i, x) in hists.iter().enumerate() {
        let per = x.h.slots_per_series();
        let nb = x.h.bounds_us.len() + 1;
        if skipped.contains(&i) {
            base += x.h.series.len() * per;
            continue;
        }
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
        let mut name = prefix + x.h.family;
        if name.as_bytes()[0].is_ascii_digit() {
            name.insert(0, '_');
        }
        let fam = fams.iter().find(|f| f.name == name && f.ty == Some(4));
        for m in fam.iter().flat_map(|f| &f.metrics) {
            let h = m.histogram.as_ref().expect("histogram");
            // The series' own labels, then the constant ones (control characters but TAB
            // and LF become spaces, as in the text formats).
            let constant: Vec<(String, String)> = opts
                .labels
                .iter()
                .filter(|(k, v)| validate_label(k, v).is_ok())
                .map(|(k, v)| {
                    let v = v
                        .chars()
                        .map(|c| match c {
                            '\t' | '\n' => c,
                            c if c.is_ascii_control() => ' ',
                            c => c,
                        })
                        .collect();
                    (k.clone(), v)
                })
                .collect();
            let own = m
                .labels
                .len()
                .checked_sub(constant.len())
                .expect("constant labels");
            prop_assert_eq!(&m.labels[own..], &constant[..]);
            let j =
                x.h.series
                    .iter()
                    .position(|l| *l == m.labels[..own])
                    .expect("series");
            let at = base + j * per;
            let valid =
                x.h.native
                    .filter(|n| n.is_valid() && at + per <= hist.len());
            let Some(n) = valid else {
                prop_assert!(h.schema.is_none() && h.spans.is_empty() && h.exemplars.is_empty());
                continue;
            };
            prop_assert_eq!(h.schema, Some(i32::from(n.schema)));
            prop_assert_eq!(h.zero_threshold, Some(n.zero_threshold_us as f64 / 1e6));
            prop_assert_eq!(h.zero_count, Some(hist[at + nb + 1]));
            let dense = &hist[at + nb + 2..at + per];
            let counts = native_counts(h).map_err(TestCaseError::fail)?;
            for (&i, &c) in &counts {
                let k = i64::from(i) - i64::from(n.first_index);
                prop_assert!((0..dense.len() as i64).contains(&k), "index {} outside", i);
                prop_assert_eq!(dense[k as usize], c);
            }
            for (k, &c) in dense.iter().enumerate().filter(|(_, &c)| c != 0) {
                let i = (i64::from(n.first_index) + k as i64) as i32;
                prop_assert_eq!(counts.get(&i), Some(&c));
            }
            if counts.is_empty() {
                let noop = n.zero_threshold_us == 0 && hist[at + nb + 1] == 0;
                prop_assert_eq!(h.spans.clone(), if noop { vec![(0, 0)] } else { vec![] });
            }
            let classic_ex = (0..nb)
                .filter(|&b| matches!(ex.get(at + b), Some(Some(e)) if hex(e)))
                .count();
            prop_assert_eq!(h.exemplars.len(), classic_ex);
        }
        base += x.h.series.len() * per;
    }
    Ok(())
}

/// Sample lines the histogram renders (if not skipped), computed from the input alone.
fn expected_lines(x: &Hist, opts: &Options) -> (usize, usize) {
    let per = x.h.slots_per_series();
    let nb = x.h.bounds_us.len() + 1;
    let mut seen = Vec::new();
    let (mut laid_out, mut rendered) = (0, 0);
    for (j, labels) in x.h.series.iter().enumerate() {
        let has = |n: &str| labels.iter().any(|(k, _)| k == n);
        if (!opts.workers && has("worker")) || (!opts.cores && has("core")) {
            continue;
        }
        let mut key = labels.clone();
        key.sort();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        laid_out += nb + 2;
        if x.values[j * per..j * per + nb].iter().any(|&c| c != 0) {
            rendered += nb + 2;
        }
    }
    (laid_out, rendered)
}

/// The OpenMetrics sample lines without their exemplars.
fn without_exemplars(s: &str) -> Vec<&str> {
    samples_of(s)
        .into_iter()
        .map(|l| l.split_once(" # ").map_or(l, |(a, _)| a))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With a clean prefix the output is valid in both formats, promlint-clean
    /// (when HELP is on), the formats carry the same samples, and every
    /// metric is either rendered or reported as skipped.
    #[test]
    fn output_is_valid_and_lint_clean(m in metrics(), opts in clean_options()) {
        let values: Vec<i64> = m.iter().map(|x| x.2).collect();
        let (layout, text) = render(&m, &opts, &values, Format::Text);
        let (_, om) = render(&m, &opts, &values, Format::OpenMetrics);
        let n_text = check(&text, Format::Text, &opts, opts.help).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let n_om = check(&om, Format::OpenMetrics, &opts, false).map_err(|e| TestCaseError::fail(format!("{e}\n{om}")))?;
        prop_assert_eq!(n_text, layout.series());
        prop_assert_eq!(n_om, layout.series());
        prop_assert_eq!(samples_of(&text), samples_of(&om));
        prop_assert_eq!(layout.series() + layout.skipped().len(), m.len());
        let mut skipped: Vec<usize> = layout.skipped().iter().map(|s| s.index).collect();
        skipped.dedup();
        prop_assert_eq!(skipped.len(), layout.skipped().len());
        // Protobuf: valid, and the same families, help, samples and values as the text.
        let mut pb = Vec::new();
        layout.render(&values, Format::Protobuf, &mut pb);
        protobuf_matches_text(&pb, &text, &opts)?;
        // Deterministic.
        let (_, again) = render(&m, &opts, &values, Format::Text);
        prop_assert_eq!(text, again);
    }

    /// Any prefix (even invalid ones) and any number of values: no panic, and
    /// the output is still structurally valid.
    #[test]
    fn never_panics(m in metrics(), opts in any_options(), extra in -45i64..5) {
        let n = (m.len() as i64 + extra).max(0) as usize;
        let values: Vec<i64> = (0..n as i64).map(|i| i * 1_000_003 - 7).collect();
        for fmt in [Format::Text, Format::OpenMetrics] {
            let (_, out) = render(&m, &opts, &values, fmt);
            check(&out, fmt, &opts, false).map_err(|e| TestCaseError::fail(format!("{e}\n{out}")))?;
        }
        let metrics: Vec<(&str, MetricType)> = m.iter().map(|(n, t, _)| (n.as_str(), *t)).collect();
        let layout = Layout::new(&metrics, &opts);
        let (mut pb, mut text) = (Vec::new(), Vec::new());
        layout.render(&values, Format::Protobuf, &mut pb);
        layout.render(&values, Format::Text, &mut text);
        protobuf_matches_text(&pb, &String::from_utf8(text).expect("UTF-8"), &opts)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random histograms (bounds, label sets, counts up to u64::MAX, exemplars) after a
    /// random metric list: valid in both formats (histogram rules included), lint-clean,
    /// the other families unchanged, and the line counts follow from the input.
    #[test]
    fn histograms_are_valid(
        m in proptest::collection::vec((metric_name(), metric_type(), any::<i64>()), 0..12),
        hists in proptest::collection::vec(histogram(), 0..4),
        opts in clean_options(),
    ) {
        let list: Vec<(&str, MetricType)> = m.iter().map(|(n, t, _)| (n.as_str(), *t)).collect();
        let values: Vec<i64> = m.iter().map(|x| x.2).collect();
        let hs: Vec<Histogram> = hists.iter().map(|x| x.h.clone()).collect();
        let hist: Vec<u64> = hists.iter().flat_map(|x| x.values.iter().copied()).collect();
        let ex: Vec<Option<Exemplar>> = hists.iter().flat_map(|x| x.exemplars.iter().copied()).collect();
        let plain = Layout::new(&list, &opts);
        let layout = Layout::with_histograms(&list, &[], &hs, &opts);
        prop_assert_eq!(layout.histogram_slots(), hist.len());

        // Which histograms were skipped (only name clashes), by input order.
        let skipped: Vec<usize> = layout
            .skipped()
            .iter()
            .filter(|s| s.index >= m.len())
            .map(|s| s.index - m.len())
            .collect();
        prop_assert_eq!(&layout.skipped()[..plain.skipped().len()], plain.skipped());
        let (mut laid_out, mut rendered) = (0, 0);
        for (i, x) in hists.iter().enumerate() {
            if !skipped.contains(&i) {
                let (l, r) = expected_lines(x, &opts);
                laid_out += l;
                rendered += r;
            }
        }
        prop_assert_eq!(layout.series(), plain.series() + laid_out);

        for fmt in [Format::Text, Format::OpenMetrics] {
            let mut base = Vec::new();
            plain.render(&values, fmt, &mut base);
            let base = String::from_utf8(base).expect("UTF-8");
            let mut out = Vec::new();
            layout.render_all(&values, &hist, &ex, fmt, &mut out);
            let out = String::from_utf8(out).expect("UTF-8");
            let lint = opts.help && fmt == Format::Text;
            let n = check(&out, fmt, &opts, lint).map_err(|e| TestCaseError::fail(format!("{e}\n{out}")))?;
            let n_base = check(&base, fmt, &opts, lint).map_err(|e| TestCaseError::fail(format!("{e}\n{base}")))?;
            prop_assert_eq!(n, n_base + rendered, "{}", out);
            // The other families come first, unchanged.
            prop_assert!(out.starts_with(base.strip_suffix("# EOF\n").unwrap_or(&base)));
            if fmt == Format::Text {
                prop_assert!(!out.contains(" # {"), "exemplar in the text format");
            }
        }
        let (mut text, mut om) = (Vec::new(), Vec::new());
        layout.render_all(&values, &hist, &ex, Format::Text, &mut text);
        layout.render_all(&values, &hist, &ex, Format::OpenMetrics, &mut om);
        let (text, om) = (String::from_utf8(text).expect("UTF-8"), String::from_utf8(om).expect("UTF-8"));
        prop_assert_eq!(samples_of(&text), without_exemplars(&om));

        let mut pb = Vec::new();
        layout.render_all(&values, &hist, &ex, Format::Protobuf, &mut pb);
        // Torn series: the protobuf sample is the consistent one the input allows.
        let fixed = reconciled(&hists, &hist);
        let mut text = Vec::new();
        layout.render_all(&values, &fixed, &ex, Format::Text, &mut text);
        let text = String::from_utf8(text).expect("UTF-8");
        protobuf_matches_text(&pb, &text, &opts)?;
        natives_match(&pb, &hists, &fixed, &ex, &opts, &skipped)?;
        // The exemplars of the protobuf buckets are those of typed OpenMetrics (without
        // types, OpenMetrics has none; protobuf is always typed).
        let fams = decode(&pb).map_err(TestCaseError::fail)?;
        let pb_exemplars: usize = fams
            .iter()
            .flat_map(|f| &f.metrics)
            .filter_map(|m| m.histogram.as_ref())
            .map(|h| h.buckets.iter().filter(|b| b.exemplar.is_some()).count())
            .sum();
        if opts.types {
            prop_assert_eq!(pb_exemplars, om.matches(" # {").count());
        }
    }

    /// Short or odd `hist` and `exemplars`, any prefix: no panic, still valid.
    #[test]
    fn histograms_never_panic(
        hists in proptest::collection::vec(histogram(), 0..4),
        opts in any_options(),
        cut in 0usize..64,
        ex_len in 0usize..64,
    ) {
        let hs: Vec<Histogram> = hists.iter().map(|x| x.h.clone()).collect();
        let hist: Vec<u64> = hists.iter().flat_map(|x| x.values.iter().copied()).collect();
        let ex: Vec<Option<Exemplar>> = hists.iter().flat_map(|x| x.exemplars.iter().copied()).collect();
        let layout = Layout::with_histograms(&[], &[], &hs, &opts);
        let (hist, ex) = (&hist[..cut.min(hist.len())], &ex[..ex_len.min(ex.len())]);
        for fmt in [Format::Text, Format::OpenMetrics] {
            let mut out = Vec::new();
            layout.render_all(&[], hist, ex, fmt, &mut out);
            let out = String::from_utf8(out).expect("UTF-8");
            check(&out, fmt, &opts, false).map_err(|e| TestCaseError::fail(format!("{e}\n{out}")))?;
        }
        let (mut pb, mut text) = (Vec::new(), Vec::new());
        layout.render_all(&[], hist, ex, Format::Protobuf, &mut pb);
        let fixed = reconciled(&hists, hist);
        layout.render_all(&[], &fixed, ex, Format::Text, &mut text);
        protobuf_matches_text(&pb, &String::from_utf8(text).expect("UTF-8"), &opts)?;
        let skipped: Vec<usize> = layout.skipped().iter().map(|s| s.index).collect();
        natives_match(&pb, &hists, &fixed, ex, &opts, &skipped)?;
    }
}

/// The protobuf rendering decodes, passes the protobuf checks, and carries the samples of the
/// text rendering `text` of the same values: in the same order when typed (without types the
/// text splits histograms into `_bucket`, `_sum` and `_count` groups: compared sorted), the
/// same HELP texts (typed, with help).
fn protobuf_matches_text(pb: &[u8], text: &str, opts: &Options) -> Result<(), TestCaseError> {
    let fail = |e: String| TestCaseError::fail(format!("{e}\n{text}"));
    let fams = decode(pb).map_err(fail)?;
    check_protobuf(&fams, opts).map_err(fail)?;
    let mut p = pb_samples(&fams);
    let mut t = text_samples(text);
    if !opts.types {
        p.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        t.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    }
    same_samples(&p, &t).map_err(fail)?;
    if opts.types {
        let helps: Vec<(String, String)> = fams
            .iter()
            .filter_map(|f| Some((f.name.clone(), f.help.clone()?)))
            .collect();
        prop_assert_eq!(helps, text_helps(text));
    }
    Ok(())
}

/// The checker itself rejects what it must.
#[test]
fn checker_rejects_bad_output() {
    let o = Options::default();
    let t = Format::Text;
    let bad = [
        "# HELP x_total h\n# TYPE x_total counter\nx_total 1\n# HELP x_total h\n",
        "# HELP a h\n# TYPE a gauge\na 1\n# HELP b h\n# TYPE b gauge\nb 1\na 2\n",
        "# HELP a h\n# TYPE a gauge\na 1\na 1\n",
        "# HELP a h\n# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",
        "# HELP a h\n# TYPE a gauge\na{x=\"\\t\"} 1\n",
        "# HELP a h\\\"\n# TYPE a gauge\na 1\n",
        "# HELP a_total h\n# TYPE a_total gauge\na_total 1\n",
        "# HELP a h\n# TYPE a counter\na 1\n",
        "# HELP a_total h\n# TYPE a_total counter\na_total -1\n",
        "# HELP a_ms h\n# TYPE a_ms gauge\na_ms 1\n",
        "# HELP a_count h\n# TYPE a_count gauge\na_count 1\n",
        "# HELP a_gauge h\n# TYPE a_gauge gauge\na_gauge 1\n",
        "# HELP aB h\n# TYPE aB gauge\naB 1\n",
        "# HELP a_milliseconds h\n# TYPE a_milliseconds gauge\na_milliseconds 1\n",
        "# HELP a h\n# TYPE a gauge\na{le=\"1\"} 1\n",
        "# HELP a h\n# TYPE a gauge\na 1.50\n",
        "# HELP a h\n# TYPE a gauge\na 01\n",
        "# HELP a h\n# TYPE a gauge\n",
        "# HELP 1a h\n# TYPE 1a gauge\n1a 1\n",
        "# TYPE a gauge\na 1\n",
    ];
    for b in bad {
        assert!(check(b, t, &o, true).is_err(), "accepted {b:?}");
    }
    let good = "# HELP a h\\\\ \\n\n# TYPE a gauge\na{x=\"\\\"\\\\\\n\"} -1.5\n";
    assert_eq!(check(good, t, &o, true), Ok(1));
    let om_bad = [
        "# HELP a h\n# TYPE a counter\na_total 1\n",
        "# HELP a h\n# TYPE a gauge\na 1\n# EOF\n# EOF\n",
        "# HELP a \"h\n# TYPE a gauge\na 1\n# EOF\n",
        "# HELP a_seconds h\n# TYPE a_seconds gauge\na_seconds 1\n# EOF\n",
    ];
    for b in om_bad {
        assert!(
            check(b, Format::OpenMetrics, &o, false).is_err(),
            "accepted {b:?}"
        );
    }
    let om_good = "# HELP a h\n# TYPE a counter\na_total 1\n# HELP b_bytes h\\\"\n# TYPE b_bytes gauge\n# UNIT b_bytes bytes\nb_bytes 2\n# EOF\n";
    assert_eq!(check(om_good, Format::OpenMetrics, &o, false), Ok(2));
}

/// The checker's histogram rules reject what they must.
#[test]
fn checker_rejects_bad_histograms() {
    let o = Options::default();
    let head = "# HELP h x\n# TYPE h histogram\n";
    let good = "h_bucket{a=\"1\",le=\"0.5\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.25 1.5\nh_bucket{a=\"1\",le=\"+Inf\"} 2\nh_sum{a=\"1\"} 0.75\nh_count{a=\"1\"} 2\n";
    let om = |body: &str| format!("{head}{body}# EOF\n");
    assert_eq!(check(&om(good), Format::OpenMetrics, &o, false), Ok(4));
    let text_good = good.replace(
        " # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.25 1.5",
        "",
    );
    assert_eq!(
        check(&format!("{head}{text_good}"), Format::Text, &o, true),
        Ok(4)
    );
    let bad_om = [
        // Not cumulative.
        "h_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        // le not increasing.
        "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        // No +Inf.
        "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        // +Inf differs from _count.
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
        // _count without _sum, _sum without _count.
        "h_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\n",
        // Exemplar above le, at or below the previous le, on _sum, bad trace id.
        "h_bucket{le=\"1\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1.000001 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1 1\nh_sum 1\nh_count 2\n",
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1 1\nh_count 1\n",
        "h_bucket{le=\"+Inf\"} 1 # {trace_id=\"4BF92F3577B34DA6A3CE929D0E0E4736\"} 1 1\nh_sum 1\nh_count 1\n",
        // Interleaved series.
        "h_bucket{a=\"1\",le=\"+Inf\"} 1\nh_bucket{a=\"2\",le=\"+Inf\"} 1\nh_sum{a=\"1\"} 1\nh_count{a=\"1\"} 1\nh_sum{a=\"2\"} 1\nh_count{a=\"2\"} 1\n",
        // Fractional count, missing le, other sample name.
        "h_bucket{le=\"+Inf\"} 1.5\nh_sum 1\nh_count 1.5\n",
        "h_bucket 1\nh_sum 1\nh_count 1\n",
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\nh_created 1\n",
    ];
    for b in bad_om {
        assert!(
            check(&om(b), Format::OpenMetrics, &o, false).is_err(),
            "accepted {b:?}"
        );
    }
    // Exemplars are OpenMetrics only, and only on histogram buckets.
    assert!(check(&format!("{head}{good}"), Format::Text, &o, false).is_err());
    let gauge = "# HELP g x\n# TYPE g gauge\ng 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1 1\n# EOF\n";
    assert!(check(gauge, Format::OpenMetrics, &o, false).is_err());
}
