//! `--prometheus-include` / `--prometheus-exclude` ([`FamilyFilter`]): which families a layout
//! keeps (decided when it is built: a left-out family lays out nothing), the patterns that
//! match nothing, histograms, and the application families filtered at render time. Golden
//! texts, every rendering also passes `check/`.

mod check;

use metrics_prometheus_engine::app::{render_app, AppFamily, AppKind, AppSeries, AppValue};
use metrics_prometheus_engine::format::{
    FamilyFilter, Format, Glob, Histogram, Layout, MetricType, Options, PatternRef, SkipReason,
};

fn globs(list: &[&str]) -> Vec<Glob> {
    list.iter()
        .map(|p| Glob::parse(p).expect("valid pattern"))
        .collect()
}

fn opts(include: &[&str], exclude: &[&str]) -> Options {
    Options {
        help: false,
        families: FamilyFilter {
            include: globs(include),
            exclude: globs(exclude),
        },
        ..Options::default()
    }
}

const LIST: &[(&str, MetricType)] = &[
    ("worker.1.requests", MetricType::Counter),
    ("worker.1.rss_size", MetricType::Gauge),
    ("core.busy_workers", MetricType::Gauge),
    ("myapp.hits", MetricType::Counter),
];

fn hist() -> Histogram {
    Histogram {
        family: "request_duration_seconds",
        help: "Time to serve a request.",
        bounds_us: vec![1_000_000],
        series: vec![vec![("code".into(), "2xx".into())]],
        native: None,
    }
}

fn layout(o: &Options) -> Layout {
    Layout::with_histograms(LIST, &[], &[hist()], o)
}

fn render(o: &Options, fmt: Format) -> String {
    let l = layout(o);
    let mut out = Vec::new();
    // Per histogram series: counts (<= 1 s, +Inf), then the sum in µs.
    l.render_all(
        &[3, 4096, 1, 7],
        &[2, 0, 500_000],
        &[None; 3],
        fmt,
        &mut out,
    );
    let text = String::from_utf8(out).expect("UTF-8");
    if fmt != Format::Protobuf {
        check::check(&text, fmt, o, false).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    text
}

/// The families of a text rendering, from its `# TYPE` lines.
fn families(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect()
}

#[test]
fn nothing_given_keeps_everything() {
    let text = render(&opts(&[], &[]), Format::Text);
    assert_eq!(
        families(&text),
        [
            "uwsgi_worker_requests_total",
            "uwsgi_worker_rss_bytes",
            "uwsgi_core_busy_workers",
            "uwsgi_myapp_hits_total",
            "uwsgi_request_duration_seconds",
        ]
    );
    assert!(layout(&opts(&[], &[])).unmatched_patterns().is_empty());
}

#[test]
fn exclude_drops_whole_families() {
    let o = opts(&[], &["uwsgi_worker_*", "uwsgi_request_duration_seconds"]);
    assert_eq!(
        render(&o, Format::Text),
        concat!(
            "# TYPE uwsgi_core_busy_workers gauge\n",
            "uwsgi_core_busy_workers 1\n",
            "# TYPE uwsgi_myapp_hits_total counter\n",
            "uwsgi_myapp_hits_total 7\n",
        )
    );
    assert_eq!(
        render(&o, Format::OpenMetrics),
        concat!(
            "# TYPE uwsgi_core_busy_workers gauge\n",
            "uwsgi_core_busy_workers 1\n",
            "# TYPE uwsgi_myapp_hits counter\n",
            "uwsgi_myapp_hits_total 7\n",
            "# EOF\n",
        )
    );
    let l = layout(&o);
    assert_eq!((l.families(), l.series()), (2, 2));
    let skipped: Vec<String> = l.skipped().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        skipped,
        [
            "worker.1.requests: family uwsgi_worker_requests_total is left out by --prometheus-include/--prometheus-exclude",
            "worker.1.rss_size: family uwsgi_worker_rss_bytes is left out by --prometheus-include/--prometheus-exclude",
            "request_duration_seconds: family uwsgi_request_duration_seconds is left out by --prometheus-include/--prometheus-exclude",
        ]
    );
    assert!(l.unmatched_patterns().is_empty());
    // The histogram's slots are still counted: the host's indexing never changes.
    assert_eq!(l.histogram_slots(), 3);
}

#[test]
fn include_keeps_only_what_it_matches_and_exclude_wins() {
    // A counter matches under its text name (`_total`) and its OpenMetrics name.
    let o = opts(
        &["uwsgi_worker_*", "uwsgi_myapp_hits", "*_seconds"],
        &["*_bytes"],
    );
    assert_eq!(
        render(&o, Format::Text),
        concat!(
            "# TYPE uwsgi_worker_requests_total counter\n",
            "uwsgi_worker_requests_total{worker=\"1\"} 3\n",
            "# TYPE uwsgi_myapp_hits_total counter\n",
            "uwsgi_myapp_hits_total 7\n",
            "# TYPE uwsgi_request_duration_seconds histogram\n",
            "uwsgi_request_duration_seconds_bucket{code=\"2xx\",le=\"1\"} 2\n",
            "uwsgi_request_duration_seconds_bucket{code=\"2xx\",le=\"+Inf\"} 2\n",
            "uwsgi_request_duration_seconds_sum{code=\"2xx\"} 0.5\n",
            "uwsgi_request_duration_seconds_count{code=\"2xx\"} 2\n",
        )
    );
    let pb = layout(&o);
    let mut out = Vec::new();
    pb.render_all(
        &[3, 4096, 1, 7],
        &[2, 0, 500_000],
        &[None; 3],
        Format::Protobuf,
        &mut out,
    );
    let names: Vec<String> = check::protobuf::decode(&out)
        .expect("decodes")
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        [
            "uwsgi_worker_requests_total",
            "uwsgi_myapp_hits_total",
            "uwsgi_request_duration_seconds"
        ]
    );
}

#[test]
fn patterns_that_match_nothing_are_named() {
    // `uwsgi_worker_*` matches a family that --prometheus-no-workers drops: it matched.
    let mut o = opts(
        &["uwsgi_worker_*", "uwsgi_nope_*"],
        &["uwsgi_request_*", "x?"],
    );
    o.workers = false;
    let l = layout(&o);
    assert_eq!(
        l.unmatched_patterns(),
        [PatternRef::Include(1), PatternRef::Exclude(1)]
    );
    let named: Vec<String> = l
        .unmatched_patterns()
        .iter()
        .map(|&r| format!("{r} {}", o.families.get(r).expect("exists").as_str()))
        .collect();
    assert_eq!(
        named,
        [
            "--prometheus-include uwsgi_nope_*",
            "--prometheus-exclude x?"
        ]
    );
    // With workers off and everything else excluded or not included, nothing is left.
    assert_eq!(render(&o, Format::Text), "");
    assert!(l.skipped().iter().all(|s| matches!(
        s.reason,
        SkipReason::Filtered { .. } | SkipReason::WorkersDisabled
    )));
}

#[test]
fn a_left_out_family_claims_no_name() {
    // `x` (counter: x, x_total, x_created) is excluded, so the later gauge `x_created` is
    // exported instead of clashing with it.
    let list = [("x", MetricType::Counter), ("x_created", MetricType::Gauge)];
    let o = opts(&[], &["uwsgi_x_total"]);
    let l = Layout::new(&list, &o);
    let mut out = Vec::new();
    l.render(&[1, 2], Format::Text, &mut out);
    assert_eq!(
        String::from_utf8(out).expect("UTF-8"),
        "# TYPE uwsgi_x_created gauge\nuwsgi_x_created 2\n"
    );
}

fn app_families() -> Vec<AppFamily> {
    let fam = |name: &str, kind, value| AppFamily {
        name: name.into(),
        help: String::new(),
        kind,
        series: vec![AppSeries {
            labels: vec![],
            value,
        }],
    };
    vec![
        fam("app_jobs", AppKind::Counter, AppValue::Counter(3.0)),
        fam("app_queue", AppKind::Gauge, AppValue::Gauge(2.0)),
        fam(
            "app_latency_seconds",
            AppKind::Histogram,
            AppValue::Histogram {
                buckets: vec![(1.0, 1.0)],
                sum: 0.5,
            },
        ),
    ]
}

#[test]
fn application_families_are_filtered_at_render_time() {
    let render = |o: &Options, fmt| {
        let mut out = Vec::new();
        let stats = render_app(&app_families(), fmt, o, &mut out);
        (String::from_utf8(out).expect("UTF-8"), stats)
    };
    let o = opts(&["app_*"], &["app_queue", "*_seconds"]);
    let (text, stats) = render(&o, Format::Text);
    assert_eq!(text, "# TYPE app_jobs_total counter\napp_jobs_total 3.0\n");
    assert_eq!(
        (stats.families, stats.filtered, stats.skipped_families),
        (1, 2, 0)
    );
    let (om, _) = render(&o, Format::OpenMetrics);
    assert_eq!(om, "# TYPE app_jobs counter\napp_jobs_total 3.0\n");
    // Included under its OpenMetrics name too; an include without app patterns drops them all.
    let (text, _) = render(&opts(&["app_jobs"], &[]), Format::Text);
    assert_eq!(families(&text), ["app_jobs_total"]);
    let (text, stats) = render(&opts(&["uwsgi_*"], &[]), Format::Text);
    assert_eq!((text.as_str(), stats.filtered), ("", 3));
    let (text, stats) = render(&opts(&[], &[]), Format::Text);
    assert_eq!((families(&text).len(), stats.filtered), (3, 0));
}
