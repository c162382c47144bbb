//! The applications' families (`app.rs`): golden renderings of each kind in both text formats,
//! protobuf decoded by the independent reader, options (constant labels, HELP and TYPE off),
//! escaping, and what is skipped. Every rendering also passes `check/app.rs`.

mod check;

use check::app::{app_pb_matches_text, check_app, check_app_protobuf};
use check::protobuf::{decode, PbFamily};
use metrics_prometheus_engine::app::{
    render_app, AppFamily, AppKind, AppRenderStats, AppSeries, AppSkip, AppSkipReason, AppValue,
};
use metrics_prometheus_engine::format::{Format, Options};

fn labels(l: &[(&str, &str)]) -> Vec<(String, String)> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fam(name: &str, kind: AppKind, series: Vec<AppSeries>) -> AppFamily {
    AppFamily {
        name: name.into(),
        help: format!("Help of {name}."),
        kind,
        series,
    }
}

fn series(l: &[(&str, &str)], value: AppValue) -> AppSeries {
    AppSeries {
        labels: labels(l),
        value,
    }
}

/// Renders in all three formats, checks each (and protobuf against text), returns the text
/// and OpenMetrics renderings and the protobuf families.
fn render(fams: &[AppFamily], opts: &Options) -> (String, String, Vec<PbFamily>, AppRenderStats) {
    let mut outs = Vec::new();
    let mut stats = Vec::new();
    for fmt in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
        let mut out = Vec::new();
        stats.push(render_app(fams, fmt, opts, &mut out));
        outs.push(out);
    }
    assert!(stats.iter().all(|s| *s == stats[0]), "{stats:?}");
    let text = String::from_utf8(outs[0].clone()).expect("UTF-8");
    let om = String::from_utf8(outs[1].clone()).expect("UTF-8");
    check_app(&text, Format::Text, opts).unwrap_or_else(|e| panic!("{e}\n{text}"));
    check_app(&om, Format::OpenMetrics, opts).unwrap_or_else(|e| panic!("{e}\n{om}"));
    let pb = decode(&outs[2]).expect("decodes");
    check_app_protobuf(&pb, opts).expect("protobuf checks");
    app_pb_matches_text(&pb, &text, opts).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, om, pb, stats[0])
}

fn kinds() -> Vec<AppFamily> {
    vec![
        fam(
            "jobs",
            AppKind::Counter,
            vec![
                series(&[("queue", "mail")], AppValue::Counter(3.0)),
                series(&[("queue", "sms")], AppValue::Counter(0.5)),
            ],
        ),
        fam(
            "temperature_celsius",
            AppKind::Gauge,
            vec![series(&[], AppValue::Gauge(-1234567.0))],
        ),
        fam(
            "latency_seconds",
            AppKind::Histogram,
            vec![series(
                &[("path", "/a"), ("method", "GET")],
                AppValue::Histogram {
                    // Unsorted, non-cumulative, without +Inf.
                    buckets: vec![(1.0, 2.0), (0.005, 1.0), (2.5e7, 0.0), (0.1, 0.0)],
                    sum: 1.5,
                },
            )],
        ),
        fam(
            "payload_bytes",
            AppKind::Summary,
            vec![series(
                &[("zone", "b")],
                AppValue::Summary {
                    count: 4.0,
                    sum: 4096.0,
                },
            )],
        ),
    ]
}

#[test]
fn each_kind_in_text() {
    let (text, _, _, stats) = render(&kinds(), &Options::default());
    assert_eq!(
        text,
        concat!(
            "# HELP jobs_total Help of jobs.\n",
            "# TYPE jobs_total counter\n",
            "jobs_total{queue=\"mail\"} 3.0\n",
            "jobs_total{queue=\"sms\"} 0.5\n",
            "# HELP temperature_celsius Help of temperature_celsius.\n",
            "# TYPE temperature_celsius gauge\n",
            "temperature_celsius -1234567.0\n",
            "# HELP latency_seconds Help of latency_seconds.\n",
            "# TYPE latency_seconds histogram\n",
            "latency_seconds_bucket{le=\"0.005\",method=\"GET\",path=\"/a\"} 1.0\n",
            "latency_seconds_bucket{le=\"0.1\",method=\"GET\",path=\"/a\"} 1.0\n",
            "latency_seconds_bucket{le=\"1.0\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_bucket{le=\"2.5e+07\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_bucket{le=\"+Inf\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_count{method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_sum{method=\"GET\",path=\"/a\"} 1.5\n",
            "# HELP payload_bytes Help of payload_bytes.\n",
            "# TYPE payload_bytes summary\n",
            "payload_bytes_count{zone=\"b\"} 4.0\n",
            "payload_bytes_sum{zone=\"b\"} 4096.0\n",
        )
    );
    assert_eq!(
        stats,
        AppRenderStats {
            families: 4,
            series: 5,
            ..AppRenderStats::default()
        }
    );
}

#[test]
fn each_kind_in_openmetrics() {
    let (_, om, _, _) = render(&kinds(), &Options::default());
    assert_eq!(
        om,
        concat!(
            "# HELP jobs Help of jobs.\n",
            "# TYPE jobs counter\n",
            "jobs_total{queue=\"mail\"} 3.0\n",
            "jobs_total{queue=\"sms\"} 0.5\n",
            "# HELP temperature_celsius Help of temperature_celsius.\n",
            "# TYPE temperature_celsius gauge\n",
            "temperature_celsius -1234567.0\n",
            "# HELP latency_seconds Help of latency_seconds.\n",
            "# TYPE latency_seconds histogram\n",
            "latency_seconds_bucket{le=\"0.005\",method=\"GET\",path=\"/a\"} 1.0\n",
            "latency_seconds_bucket{le=\"0.1\",method=\"GET\",path=\"/a\"} 1.0\n",
            "latency_seconds_bucket{le=\"1.0\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_bucket{le=\"2.5e+07\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_bucket{le=\"+Inf\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_count{method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_sum{method=\"GET\",path=\"/a\"} 1.5\n",
            "# HELP payload_bytes Help of payload_bytes.\n",
            "# TYPE payload_bytes summary\n",
            "payload_bytes_count{zone=\"b\"} 4.0\n",
            "payload_bytes_sum{zone=\"b\"} 4096.0\n",
        )
    );
}

#[test]
fn each_kind_in_protobuf() {
    let (_, _, pb, _) = render(&kinds(), &Options::default());
    let names: Vec<(&str, Option<u64>, Option<&str>)> = pb
        .iter()
        .map(|f| (f.name.as_str(), f.ty, f.help.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("jobs_total", Some(0), Some("Help of jobs.")),
            (
                "temperature_celsius",
                Some(1),
                Some("Help of temperature_celsius.")
            ),
            ("latency_seconds", Some(4), Some("Help of latency_seconds.")),
            ("payload_bytes", Some(2), Some("Help of payload_bytes.")),
        ]
    );
    assert_eq!(pb[0].metrics[1].labels, labels(&[("queue", "sms")]));
    assert_eq!(pb[0].metrics[1].counter, Some(0.5));
    assert_eq!(pb[1].metrics[0].gauge, Some(-1234567.0));
    let h = pb[2].metrics[0].histogram.as_ref().expect("histogram");
    assert_eq!(
        pb[2].metrics[0].labels,
        labels(&[("method", "GET"), ("path", "/a")])
    );
    assert_eq!((h.count, h.sum), (Some(3), Some(1.5)));
    let buckets: Vec<(f64, u64)> = h.buckets.iter().map(|b| (b.upper, b.count)).collect();
    assert_eq!(buckets, [(0.005, 1), (0.1, 1), (1.0, 3), (2.5e7, 3)]);
    let s = pb[3].metrics[0].summary.as_ref().expect("summary");
    assert_eq!((s.count, s.sum, s.quantiles), (Some(4), Some(4096.0), 0));
}

#[test]
fn constant_labels_help_and_types_off() {
    let opts = Options {
        help: false,
        types: false,
        labels: labels(&[("host", "web-1"), ("dc", "x\"y")]),
        ..Options::default()
    };
    let (text, om, pb, _) = render(&kinds(), &opts);
    assert_eq!(
        text,
        concat!(
            "jobs_total{dc=\"x\\\"y\",host=\"web-1\",queue=\"mail\"} 3.0\n",
            "jobs_total{dc=\"x\\\"y\",host=\"web-1\",queue=\"sms\"} 0.5\n",
            "temperature_celsius{dc=\"x\\\"y\",host=\"web-1\"} -1234567.0\n",
            "latency_seconds_bucket{dc=\"x\\\"y\",host=\"web-1\",le=\"0.005\",method=\"GET\",path=\"/a\"} 1.0\n",
            "latency_seconds_bucket{dc=\"x\\\"y\",host=\"web-1\",le=\"0.1\",method=\"GET\",path=\"/a\"} 1.0\n",
            "latency_seconds_bucket{dc=\"x\\\"y\",host=\"web-1\",le=\"1.0\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_bucket{dc=\"x\\\"y\",host=\"web-1\",le=\"2.5e+07\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_bucket{dc=\"x\\\"y\",host=\"web-1\",le=\"+Inf\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_count{dc=\"x\\\"y\",host=\"web-1\",method=\"GET\",path=\"/a\"} 3.0\n",
            "latency_seconds_sum{dc=\"x\\\"y\",host=\"web-1\",method=\"GET\",path=\"/a\"} 1.5\n",
            "payload_bytes_count{dc=\"x\\\"y\",host=\"web-1\",zone=\"b\"} 4.0\n",
            "payload_bytes_sum{dc=\"x\\\"y\",host=\"web-1\",zone=\"b\"} 4096.0\n",
        )
    );
    assert_eq!(om, text);
    // Protobuf keeps its types and leaves HELP out.
    assert!(pb.iter().all(|f| f.help.is_none() && f.ty.is_some()));
    assert_eq!(
        pb[1].metrics[0].labels,
        labels(&[("dc", "x\"y"), ("host", "web-1")])
    );
}

#[test]
fn untyped_histograms_are_three_groups() {
    let opts = Options {
        types: false,
        ..Options::default()
    };
    let h = |l: &str| {
        series(
            &[("l", l)],
            AppValue::Histogram {
                buckets: vec![(1.0, 1.0), (f64::INFINITY, 1.0)],
                sum: 3.0,
            },
        )
    };
    let fams = [fam("h", AppKind::Histogram, vec![h("a"), h("b")])];
    let (text, _, _, _) = render(&fams, &opts);
    assert_eq!(
        text,
        concat!(
            "# HELP h_bucket Help of h.\n",
            "h_bucket{l=\"a\",le=\"1.0\"} 1.0\n",
            "h_bucket{l=\"a\",le=\"+Inf\"} 2.0\n",
            "h_bucket{l=\"b\",le=\"1.0\"} 1.0\n",
            "h_bucket{l=\"b\",le=\"+Inf\"} 2.0\n",
            "# HELP h_count Help of h.\n",
            "h_count{l=\"a\"} 2.0\n",
            "h_count{l=\"b\"} 2.0\n",
            "# HELP h_sum Help of h.\n",
            "h_sum{l=\"a\"} 3.0\n",
            "h_sum{l=\"b\"} 3.0\n",
        )
    );
}

#[test]
fn escaping_and_special_values() {
    let fams = [
        AppFamily {
            name: "esc".into(),
            help: "back\\slash \"quoted\"\nnew line\rcr".into(),
            kind: AppKind::Gauge,
            series: vec![
                series(&[("v", "a\\b\"c\nd\re\tf")], AppValue::Gauge(f64::NAN)),
                series(&[("v", "inf")], AppValue::Gauge(f64::INFINITY)),
                series(&[("v", "-inf")], AppValue::Gauge(f64::NEG_INFINITY)),
                series(&[("v", "tiny")], AppValue::Gauge(1e-5)),
                series(&[("v", "big")], AppValue::Gauge(1e22)),
                series(&[("v", "neg0")], AppValue::Gauge(-0.0)),
            ],
        },
        fam(
            "c",
            AppKind::Counter,
            vec![
                series(&[("v", "nan")], AppValue::Counter(f64::NAN)),
                series(&[("v", "neg")], AppValue::Counter(-3.0)),
            ],
        ),
        fam(
            "s",
            AppKind::Summary,
            vec![series(
                &[],
                AppValue::Summary {
                    count: 2.6,
                    sum: 1e300,
                },
            )],
        ),
    ];
    let (text, om, pb, _) = render(&fams, &Options::default());
    assert_eq!(
        text,
        concat!(
            "# HELP esc back\\\\slash \"quoted\"\\nnew line cr\n",
            "# TYPE esc gauge\n",
            "esc{v=\"a\\\\b\\\"c\\nd e\tf\"} NaN\n",
            "esc{v=\"inf\"} +Inf\n",
            "esc{v=\"-inf\"} -Inf\n",
            "esc{v=\"tiny\"} 1e-05\n",
            "esc{v=\"big\"} 1e+22\n",
            "esc{v=\"neg0\"} -0.0\n",
            "# HELP c_total Help of c.\n",
            "# TYPE c_total counter\n",
            "c_total{v=\"nan\"} 0.0\n",
            "c_total{v=\"neg\"} 0.0\n",
            "# HELP s Help of s.\n",
            "# TYPE s summary\n",
            "s_count 3.0\n",
            "s_sum 1e+300\n",
        )
    );
    assert!(om.starts_with("# HELP esc back\\\\slash \\\"quoted\\\"\\nnew line cr\n"));
    assert_eq!(
        pb[0].help.as_deref(),
        Some("back\\slash \"quoted\"\nnew line cr")
    );
    assert_eq!(pb[0].metrics[0].labels, labels(&[("v", "a\\b\"c\nd e\tf")]));
}

#[test]
fn skips_are_counted() {
    let g = |l: &[(&str, &str)]| series(l, AppValue::Gauge(1.0));
    let hist = |l: &[(&str, &str)], bound: f64, sum: f64| {
        series(
            l,
            AppValue::Histogram {
                buckets: vec![(bound, 1.0)],
                sum,
            },
        )
    };
    let fams = [
        fam("ok", AppKind::Gauge, vec![g(&[])]),
        fam("1bad", AppKind::Gauge, vec![g(&[])]),
        fam("ok", AppKind::Gauge, vec![g(&[])]),
        fam("ok", AppKind::Counter, vec![]),
        fam(
            "x",
            AppKind::Counter,
            vec![series(&[], AppValue::Counter(1.0))],
        ),
        fam("x_total", AppKind::Gauge, vec![g(&[])]),
        fam("x_created", AppKind::Gauge, vec![g(&[])]),
        fam("uwsgi_mine", AppKind::Gauge, vec![g(&[])]),
        fam(
            "lbl",
            AppKind::Gauge,
            vec![
                g(&[("a", "1")]),
                g(&[("a", "1")]),
                g(&[("a", "1"), ("b", "")]),
                g(&[("9x", "1")]),
                g(&[("__x", "1")]),
                g(&[("a", "2"), ("a", "3")]),
                g(&[("host", "h")]),
                series(&[("a", "4")], AppValue::Counter(1.0)),
                g(&[("le", "1"), ("quantile", "0.5")]),
            ],
        ),
        fam(
            "h",
            AppKind::Histogram,
            vec![
                hist(&[("le", "1")], 1.0, 1.0),
                hist(&[("a", "1")], f64::NAN, 1.0),
                hist(&[("a", "2")], -1.0, 1.0),
                hist(&[("a", "3")], 1.0, -1.0),
                hist(&[("a", "4")], 1.0, f64::NAN),
                hist(&[("a", "5")], 1.0, 0.0),
            ],
        ),
        fam("h_bucket", AppKind::Gauge, vec![g(&[])]),
        fam(
            "s",
            AppKind::Summary,
            vec![series(
                &[("quantile", "0.5")],
                AppValue::Summary {
                    count: 1.0,
                    sum: 1.0,
                },
            )],
        ),
    ];
    let opts = Options {
        labels: labels(&[("host", "web-1"), ("worker", "invalid constant label")]),
        ..Options::default()
    };
    let (text, _, _, stats) = render(&fams, &opts);
    use AppSkipReason as R;
    let by: Vec<(R, usize)> = R::ALL
        .iter()
        .map(|&r| (r, stats.skipped(r)))
        .filter(|&(_, n)| n > 0)
        .collect();
    assert_eq!(
        by,
        [
            (R::FamilyName, 1),
            (R::DuplicateFamily, 2),
            (R::NameClash, 3),
            (R::ReservedPrefix, 1),
            (R::WrongKind, 1),
            (R::LabelName, 2),
            (R::DuplicateLabel, 1),
            (R::ConstantLabel, 1),
            (R::ReservedLabel, 2),
            (R::DuplicateSeries, 2),
            (R::BadBound, 2),
            (R::BadSum, 2),
        ]
    );
    assert_eq!(
        (
            stats.families,
            stats.series,
            stats.skipped_families,
            stats.skipped_series
        ),
        (4, 5, 7, 13)
    );
    assert_eq!(
        stats.first_skip,
        Some(AppSkip {
            family: 1,
            series: None,
            reason: R::FamilyName
        })
    );
    assert!(R::NameClash.is_family() && !R::WrongKind.is_family());
    assert_eq!(
        R::ConstantLabel.to_string(),
        "a label also set as a constant label (--prometheus-label)"
    );
    // The family left without series (`s`) is not printed at all.
    assert!(!text.contains("# HELP s "), "{text}");
    assert!(text.contains("lbl{a=\"1\",host=\"web-1\"} 1.0\n"), "{text}");
    assert!(
        text.contains("h_bucket{a=\"5\",host=\"web-1\",le=\"1.0\"} 1.0\n"),
        "{text}"
    );
}

#[test]
fn empty_input_and_empty_prefix() {
    let mut out = b"before\n".to_vec();
    let stats = render_app(&[], Format::OpenMetrics, &Options::default(), &mut out);
    assert_eq!(
        (out.as_slice(), stats),
        (&b"before\n"[..], AppRenderStats::default())
    );
    let opts = Options {
        prefix: String::new(),
        ..Options::default()
    };
    let fams = [fam(
        "uwsgi_x",
        AppKind::Gauge,
        vec![series(&[], AppValue::Gauge(2.0))],
    )];
    let (text, _, _, stats) = render(&fams, &opts);
    assert_eq!(stats.families, 1);
    assert!(text.ends_with("uwsgi_x 2.0\n"));
}
