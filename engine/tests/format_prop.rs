//! Property tests: arbitrary metric lists never make the engine panic, and the
//! output always passes a strict structural checker written independently of
//! the engine (exposition grammar, escaping, grouping, uniqueness, and the
//! promlint rules that `promtool check metrics` applies).

mod check;

use check::check;
use metrics_prometheus_engine::format::{Format, Layout, MetricType, Options};
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
    )
        .prop_map(|(prefix, help, types, workers, cores)| Options {
            prefix: prefix.to_owned(),
            help,
            types,
            workers,
            cores,
        })
}

fn any_options() -> impl Strategy<Value = Options> {
    (
        any::<String>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(prefix, help, types, workers, cores)| Options {
            prefix,
            help,
            types,
            workers,
            cores,
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
    }
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
