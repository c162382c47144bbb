//! The applications' families against prometheus_client itself: the golden files of
//! `tests/data/app_golden.py` (random metrics registered in prometheus_client 0.26, printed by
//! its `generate_latest` in both text formats, and `floatToGoString` of thousands of doubles)
//! must come out of `render_app` byte for byte. Regenerate them with the command in the
//! script's docstring.

mod check;

use check::app::check_app;
use metrics_prometheus_engine::app::{
    push_float, render_app, AppFamily, AppKind, AppSeries, AppValue,
};
use metrics_prometheus_engine::format::{Format, Options};

fn unhex(s: &str) -> String {
    if s == "-" {
        return String::new();
    }
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect();
    String::from_utf8(bytes).expect("UTF-8")
}

fn float(s: &str) -> f64 {
    f64::from_bits(s.parse().expect("bits"))
}

/// Parses `app_input.txt` (format in the script's docstring).
fn input() -> Vec<AppFamily> {
    let mut fams: Vec<AppFamily> = Vec::new();
    for line in include_str!("data/app_input.txt").lines() {
        let mut w = line.split(' ');
        match w.next() {
            Some("F") => {
                let kind = match w.next() {
                    Some("counter") => AppKind::Counter,
                    Some("gauge") => AppKind::Gauge,
                    Some("histogram") => AppKind::Histogram,
                    Some("summary") => AppKind::Summary,
                    k => panic!("kind {k:?}"),
                };
                fams.push(AppFamily {
                    name: unhex(w.next().expect("name")),
                    help: unhex(w.next().expect("help")),
                    kind,
                    series: Vec::new(),
                });
            }
            Some("S") => {
                let fam = fams.last_mut().expect("family first");
                let n: usize = w.next().expect("n").parse().expect("n");
                let labels = (0..n)
                    .map(|_| (unhex(w.next().expect("k")), unhex(w.next().expect("v"))))
                    .collect();
                let mut next = || w.next().expect("value");
                let value = match fam.kind {
                    AppKind::Counter => AppValue::Counter(float(next())),
                    AppKind::Gauge => AppValue::Gauge(float(next())),
                    AppKind::Summary => AppValue::Summary {
                        count: float(next()),
                        sum: float(next()),
                    },
                    AppKind::Histogram => {
                        let sum = float(next());
                        let nb: usize = next().parse().expect("bucket count");
                        let buckets = (0..nb).map(|_| (float(next()), float(next()))).collect();
                        AppValue::Histogram { buckets, sum }
                    }
                };
                fam.series.push(AppSeries { labels, value });
            }
            l => panic!("line {l:?}"),
        }
    }
    fams
}

fn render(fmt: Format) -> String {
    let mut out = Vec::new();
    let stats = render_app(&input(), fmt, &Options::default(), &mut out);
    assert_eq!(
        stats.skipped_families + stats.skipped_series,
        0,
        "{stats:?}"
    );
    assert_eq!(stats.families, 40);
    let out = String::from_utf8(out).expect("UTF-8 output");
    check_app(&out, fmt, &Options::default()).expect("valid");
    out
}

/// Line by line first, for a readable failure.
fn same(got: &str, want: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got, want);
}

#[test]
fn text_matches_prometheus_client() {
    same(&render(Format::Text), include_str!("data/app_golden.txt"));
}

#[test]
fn openmetrics_matches_prometheus_client() {
    let got = render(Format::OpenMetrics) + "# EOF\n";
    same(&got, include_str!("data/app_golden.om"));
}

#[test]
fn floats_match_float_to_go_string() {
    let mut out = Vec::new();
    let mut n = 0;
    for line in include_str!("data/app_floats.txt").lines() {
        let (b, want) = line.split_once(' ').expect("bits and text");
        let v = float(b);
        out.clear();
        push_float(&mut out, v);
        assert_eq!(
            std::str::from_utf8(&out).expect("ASCII"),
            want,
            "{v:e} ({b})"
        );
        n += 1;
    }
    assert!(n > 2000, "{n} floats");
}
