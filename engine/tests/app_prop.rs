//! Property tests of the applications' families (`app.rs`): random families (valid and
//! invalid names and labels, special values, random bucket sets) never make the renderer
//! panic; every format passes the independent checker (`check/app.rs`); protobuf carries the
//! samples and HELP of the text format; the three formats report the same stats, which add
//! up.

mod check;

use check::app::{app_pb_matches_text, check_app, check_app_protobuf};
use check::protobuf::decode;
use metrics_prometheus_engine::app::{
    render_app, AppFamily, AppKind, AppSeries, AppSkipReason, AppValue,
};
use metrics_prometheus_engine::format::{Format, Options};
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "x",
    "x_total",
    "x_bucket",
    "x_count",
    "x_sum",
    "x_created",
    "y",
    "a:b",
    "_",
    "uwsgi_app",
    "1x",
    "",
    "a-b",
    "é",
    "x y",
];
const LABELS: &[&str] = &[
    "a", "b", "method", "code", "le", "quantile", "host", "__x", "9", "a-b", "zz", "_",
];
const VALUES: &[&str] = &[
    "",
    "1",
    "GET",
    "q\"t",
    "back\\slash",
    "new\nline",
    "cr\rx",
    "tab\tx",
    "ünï",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(NAMES).prop_map(str::to_owned),
        "[a-z_][a-z0-9_]{0,5}",
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(
            &[
                0.0,
                -0.0,
                1.0,
                0.5,
                2.5,
                1e-5,
                1234567.0,
                1e16,
                1e22,
                -3.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MAX,
                5e-324,
                1.8446744073709552e19,
                671_661_949_449_316.0 + 0.25,
            ][..]
        ),
        (0u32..1_000_000).prop_map(f64::from),
        any::<f64>(),
    ]
}

fn kind() -> impl Strategy<Value = AppKind> {
    prop::sample::select(
        &[
            AppKind::Counter,
            AppKind::Gauge,
            AppKind::Histogram,
            AppKind::Summary,
        ][..],
    )
}

fn value(kind: AppKind) -> impl Strategy<Value = AppValue> {
    let bound = prop_oneof![
        prop::sample::select(&[0.005, 0.1, 1.0, 1.0, 2.5, 1e7, f64::INFINITY, 0.0, -0.0][..]),
        float(),
    ];
    let buckets = prop::collection::vec((bound, float()), 0..6);
    let sum = prop_oneof![(0u32..1000).prop_map(f64::from), float()];
    match kind {
        AppKind::Counter => float().prop_map(AppValue::Counter).boxed(),
        AppKind::Gauge => float().prop_map(AppValue::Gauge).boxed(),
        AppKind::Histogram => (buckets, sum)
            .prop_map(|(buckets, sum)| AppValue::Histogram { buckets, sum })
            .boxed(),
        AppKind::Summary => (float(), sum)
            .prop_map(|(count, sum)| AppValue::Summary { count, sum })
            .boxed(),
    }
}

fn series(k: AppKind) -> impl Strategy<Value = AppSeries> {
    let labels = prop::collection::vec(
        (
            prop::sample::select(LABELS).prop_map(str::to_owned),
            prop::sample::select(VALUES).prop_map(str::to_owned),
        ),
        0..3,
    );
    // Now and then a value of another kind than the family's.
    let v = prop_oneof![9 => value(k), 1 => kind().prop_flat_map(value)];
    (labels, v).prop_map(|(labels, value)| AppSeries { labels, value })
}

fn family() -> impl Strategy<Value = AppFamily> {
    (name(), prop::sample::select(VALUES), kind()).prop_flat_map(|(name, help, kind)| {
        prop::collection::vec(series(kind), 0..4).prop_map(move |series| AppFamily {
            name: name.clone(),
            help: help.to_owned(),
            kind,
            series,
        })
    })
}

fn options() -> impl Strategy<Value = Options> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(help, types, constant)| Options {
        help,
        types,
        labels: if constant {
            vec![("host".into(), "h\"1".into())]
        } else {
            Vec::new()
        },
        ..Options::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn every_format_is_valid_and_they_agree(
        fams in prop::collection::vec(family(), 0..8),
        opts in options(),
    ) {
        let mut outs = Vec::new();
        let mut stats = Vec::new();
        for fmt in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
            let mut out = Vec::new();
            stats.push(render_app(&fams, fmt, &opts, &mut out));
            outs.push(out);
        }
        prop_assert!(stats.iter().all(|s| *s == stats[0]), "{:?}", stats);
        let st = stats[0];
        let text = String::from_utf8(outs[0].clone()).expect("UTF-8");
        let om = String::from_utf8(outs[1].clone()).expect("UTF-8");
        check_app(&text, Format::Text, &opts).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        check_app(&om, Format::OpenMetrics, &opts).map_err(|e| TestCaseError::fail(format!("{e}\n{om}")))?;
        let pb = decode(&outs[2]).map_err(TestCaseError::fail)?;
        prop_assert_eq!(check_app_protobuf(&pb, &opts), Ok(st.series));
        app_pb_matches_text(&pb, &text, &opts).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        // The stats add up.
        prop_assert_eq!(pb.len(), st.families);
        let reasons: usize = st.by_reason.iter().sum();
        prop_assert_eq!(reasons, st.skipped_families + st.skipped_series);
        let family_skips: usize = AppSkipReason::ALL
            .iter()
            .filter(|r| r.is_family())
            .map(|&r| st.skipped(r))
            .sum();
        prop_assert_eq!(family_skips, st.skipped_families);
        prop_assert!(st.families + st.skipped_families <= fams.len());
        let all: usize = fams.iter().map(|f| f.series.len()).sum();
        prop_assert!(st.series + st.skipped_series <= all);
        prop_assert_eq!(st.first_skip.is_some(), reasons > 0);
        if let Some(first) = st.first_skip {
            prop_assert!(first.family < fams.len());
            prop_assert_eq!(first.series.is_none(), first.reason.is_family());
        }
        // Valid, distinct families of valid series always come out.
        if fams.iter().all(|f| f.name == "x" || f.name.is_empty()) {
            prop_assert!(st.families <= 1);
        }
    }
}
