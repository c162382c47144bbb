//! Constant labels (`Options::labels`, `--prometheus-label`) in every format, and the
//! uwsgi_exporter compat names (`--prometheus-compat`): literal expected texts (reviewed by
//! hand, checked with `promtool check metrics`), protobuf decoded by the independent reader.

mod check;

use check::protobuf::{check_protobuf, decode};
use metrics_prometheus_engine::catalogue::UP;
use metrics_prometheus_engine::compat::{self, CompatOptions};
use metrics_prometheus_engine::format::{
    Exemplar, Format, Histogram, Layout, MetricType, Options, SkipReason,
};
use metrics_prometheus_engine::plan::{SocketDesc, Topology};

fn labels(l: &[(&str, &str)]) -> Vec<(String, String)> {
    l.iter().map(|&(k, v)| (k.into(), v.into())).collect()
}

fn opts() -> Options {
    Options {
        help: false,
        labels: labels(&[("host", "web-1"), ("env", "a\"b\\c\nd\re")]),
        ..Options::default()
    }
}

const METRICS: [(&str, MetricType); 3] = [
    ("myapp.hits", MetricType::Counter),
    ("worker.1.avg_response_time", MetricType::Gauge),
    // Its generic label `host` clashes with a constant label: left out.
    ("db.host.3.queries", MetricType::Counter),
];

fn layout(o: &Options) -> Layout {
    let latency = Histogram {
        family: "request_duration_seconds",
        help: "Time.",
        bounds_us: vec![5_000],
        series: vec![labels(&[("method", "GET")]), labels(&[("host", "x")])],
        native: None,
    };
    Layout::with_histograms(&METRICS, &[UP.series(vec![])], &[latency], o)
}

fn render(o: &Options, fmt: Format) -> Vec<u8> {
    let mut ex = vec![None; 6];
    ex[0] = Some(Exemplar {
        trace_id: *b"4bf92f3577b34da6a3ce929d0e0e4736",
        value_us: 2_000,
        timestamp_us: 1_700_000_000_250_000,
    });
    let mut out = Vec::new();
    layout(o).render_all(
        &[7, 1_500, 9, 1],
        &[2, 1, 1_004_000, 5, 0, 9],
        &ex,
        fmt,
        &mut out,
    );
    out
}

fn text(o: &Options, fmt: Format) -> String {
    String::from_utf8(render(o, fmt)).expect("UTF-8")
}

const LABELS_TEXT: &str = concat!(
    "# TYPE uwsgi_myapp_hits_total counter\n",
    "uwsgi_myapp_hits_total{host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 7\n",
    "# TYPE uwsgi_worker_avg_response_time_seconds gauge\n",
    "uwsgi_worker_avg_response_time_seconds{worker=\"1\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 0.0015\n",
    "# TYPE uwsgi_up gauge\n",
    "uwsgi_up{host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 1\n",
    "# TYPE uwsgi_request_duration_seconds histogram\n",
    "uwsgi_request_duration_seconds_bucket{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\",le=\"0.005\"} 2\n",
    "uwsgi_request_duration_seconds_bucket{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\",le=\"+Inf\"} 3\n",
    "uwsgi_request_duration_seconds_sum{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 1.004\n",
    "uwsgi_request_duration_seconds_count{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 3\n",
);

const LABELS_OPENMETRICS: &str = concat!(
    "# TYPE uwsgi_myapp_hits counter\n",
    "uwsgi_myapp_hits_total{host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 7\n",
    "# TYPE uwsgi_worker_avg_response_time_seconds gauge\n",
    "# UNIT uwsgi_worker_avg_response_time_seconds seconds\n",
    "uwsgi_worker_avg_response_time_seconds{worker=\"1\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 0.0015\n",
    "# TYPE uwsgi_up gauge\n",
    "uwsgi_up{host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 1\n",
    "# TYPE uwsgi_request_duration_seconds histogram\n",
    "# UNIT uwsgi_request_duration_seconds seconds\n",
    "uwsgi_request_duration_seconds_bucket{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\",le=\"0.005\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.002 1700000000.25\n",
    "uwsgi_request_duration_seconds_bucket{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\",le=\"+Inf\"} 3\n",
    "uwsgi_request_duration_seconds_sum{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 1.004\n",
    "uwsgi_request_duration_seconds_count{method=\"GET\",host=\"web-1\",env=\"a\\\"b\\\\c\\nd e\"} 3\n",
    "# EOF\n",
);

#[test]
fn constant_labels_in_the_text_formats() {
    assert_eq!(text(&opts(), Format::Text), LABELS_TEXT);
    assert_eq!(text(&opts(), Format::OpenMetrics), LABELS_OPENMETRICS);
    // promlint applies to the text format only (as promtool).
    for (fmt, lint) in [(Format::Text, true), (Format::OpenMetrics, false)] {
        check::check(&text(&opts(), fmt), fmt, &opts(), lint).expect("valid exposition");
    }
}

#[test]
fn constant_labels_in_protobuf() {
    let fams = decode(&render(&opts(), Format::Protobuf)).expect("decodes");
    check_protobuf(&fams, &opts()).expect("valid protobuf");
    let constant = labels(&[("host", "web-1"), ("env", "a\"b\\c\nd e")]);
    let mut series = 0;
    for f in &fams {
        for m in &f.metrics {
            assert!(m.labels.ends_with(&constant), "{}: {:?}", f.name, m.labels);
            series += 1;
        }
    }
    let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "uwsgi_myapp_hits_total",
            "uwsgi_worker_avg_response_time_seconds",
            "uwsgi_up",
            "uwsgi_request_duration_seconds"
        ]
    );
    assert_eq!(series, 4);
    assert_eq!(fams[1].metrics[0].labels[0], ("worker".into(), "1".into()));
}

#[test]
fn a_series_with_a_constant_label_name_is_left_out() {
    let l = layout(&opts());
    let clashes: Vec<(usize, &SkipReason)> = l
        .skipped()
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::LabelClash { .. }))
        .map(|s| (s.index, &s.reason))
        .collect();
    assert_eq!(
        clashes,
        [(
            2,
            &SkipReason::LabelClash {
                label: "host".into()
            }
        )]
    );
    assert_eq!(
        l.skipped()[0].to_string(),
        "db.host.3.queries: its label host is also a constant label (--prometheus-label)"
    );
    // Without constant labels it is exported, and so is the histogram's second series.
    let plain = Options {
        labels: vec![],
        ..opts()
    };
    let t = text(&plain, Format::Text);
    assert!(
        t.contains("uwsgi_db_host_queries_total{host=\"3\"} 9\n"),
        "{t}"
    );
    assert!(
        t.contains("uwsgi_request_duration_seconds_count{host=\"x\"} 5\n"),
        "{t}"
    );
}

#[test]
fn invalid_constant_labels_are_ignored() {
    let bad = Options {
        labels: labels(&[("9x", "v"), ("__name__", "v"), ("worker", "2"), ("ok", "")]),
        ..opts()
    };
    let plain = Options {
        labels: vec![],
        ..opts()
    };
    for fmt in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
        assert_eq!(render(&bad, fmt), render(&plain, fmt), "{fmt:?}");
    }
}

/// One worker with one core, one socket, one cache, one app; no metrics list.
fn small_topology() -> Topology {
    Topology {
        workers: 1,
        cores: 1,
        uwsgi_version: "2.0.31".into(),
        plugin_version: "0.1.0".into(),
        plugin_commit: "0123456789ab".into(),
        caches: vec!["default".into()],
        sockets: vec![SocketDesc {
            name: "127.0.0.1:8080".into(),
            proto: "http".into(),
            shared: false,
            can_offload: true,
        }],
        apps: vec!["/app".into()],
        app_chdirs: vec!["".into()],
        ..Topology::default()
    }
}

/// The compat exposition of [`small_topology`] (value of series `i`: `i * 0.5` units, so the
/// scaled families show their decimals), help off, one constant label.
const COMPAT_TEXT: &str = include_str!("data/compat_uwsgi_exporter.txt");

fn compat_render(fmt: Format) -> Vec<u8> {
    let o = Options {
        help: false,
        labels: labels(&[("host", "h")]),
        ..Options::default()
    };
    let p = compat::plan(
        &small_topology(),
        &CompatOptions {
            stats_uri: "unix:///run/stats.sock".into(),
            workers: true,
            cores: true,
        },
    );
    let names: Vec<(&str, MetricType)> = p.names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let l = Layout::with_histograms(&names, &p.extras, &p.histograms, &o);
    assert!(l.skipped().is_empty(), "{:?}", l.skipped());
    // Value of series `i`: `i * 0.5` of its unit, so the scaled families show their decimals.
    let values: Vec<i64> = p
        .extras
        .iter()
        .enumerate()
        .map(|(i, e)| i as i64 * 5 * 10i64.pow(u32::from(e.scale)) / 10)
        .collect();
    let mut out = Vec::new();
    l.render(&values, fmt, &mut out);
    out
}

#[test]
fn compat_names_in_the_text_format() {
    let got = String::from_utf8(compat_render(Format::Text)).expect("UTF-8");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write("tests/data/compat_uwsgi_exporter.txt", &got).expect("write");
    }
    assert_eq!(got, COMPAT_TEXT);
    let o = Options {
        help: false,
        ..Options::default()
    };
    check::check(&got, Format::Text, &o, false).expect("valid exposition");
    let om = String::from_utf8(compat_render(Format::OpenMetrics)).expect("UTF-8");
    check::check(&om, Format::OpenMetrics, &o, false).expect("valid exposition");
    // The same families under the same names in protobuf (counters by their sample name).
    let fams = decode(&compat_render(Format::Protobuf)).expect("decodes");
    let text_families: Vec<&str> = got
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    let pb_families: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(pb_families, text_families);
}
