//! The name mapper and renderer (`format::Layout`): any metric list, extras,
//! options and value count must render, in both formats, an exposition that
//! passes the strict checker in `src/check.rs`; never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_prometheus_engine::format::{Format, Layout, MetricType};
use metrics_prometheus_fuzz::{check::check, render_input::RenderInput};

/// Prefixes for which the output must also be promlint-clean (as in
/// `engine/tests/format_prop.rs`).
const CLEAN_PREFIXES: [&str; 4] = ["uwsgi_", "", "_", "app_"];

fn samples(s: &str) -> Vec<&str> {
    s.split_terminator('\n')
        .filter(|l| !l.starts_with('#'))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 16 * 1024 {
        return;
    }
    let inp = RenderInput::decode(data);
    let list: Vec<(&str, MetricType)> = inp.metrics.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let layout = Layout::with_extras(&list, &inp.extras, &inp.opts);

    let mut text = Vec::new();
    layout.render(&inp.values, Format::Text, &mut text);
    let mut om = Vec::new();
    layout.render(&inp.values, Format::OpenMetrics, &mut om);
    let text = String::from_utf8(text).expect("text output is UTF-8");
    let om = String::from_utf8(om).expect("OpenMetrics output is UTF-8");

    let lint = inp.opts.help && CLEAN_PREFIXES.contains(&inp.opts.prefix.as_str());
    let n_text = check(&text, Format::Text, &inp.opts, lint).unwrap_or_else(|e| {
        panic!("invalid text exposition: {e}\n--- input: {inp:?}\n--- output:\n{text}")
    });
    let n_om = check(&om, Format::OpenMetrics, &inp.opts, false).unwrap_or_else(|e| {
        panic!("invalid OpenMetrics exposition: {e}\n--- input: {inp:?}\n--- output:\n{om}")
    });

    // Values are numbers.
    for l in samples(&text) {
        let v = l.rsplit(' ').next().unwrap_or("");
        assert!(
            v.parse::<f64>().is_ok(),
            "value {v:?} is not a number in {l:?}"
        );
    }
    // Both formats carry the same samples.
    assert_eq!(n_text, n_om);
    assert_eq!(samples(&text), samples(&om), "formats differ in samples");
    // Every metric and extra is either rendered or reported as skipped, once.
    let total = inp.metrics.len() + inp.extras.len();
    assert_eq!(
        layout.series() + layout.skipped().len(),
        total,
        "series + skipped != inputs"
    );
    let mut idx: Vec<usize> = layout.skipped().iter().map(|s| s.index).collect();
    let n = idx.len();
    idx.dedup();
    assert_eq!(idx.len(), n, "a metric is skipped twice");
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "skipped not in list order"
    );
    assert!(idx.iter().all(|&i| i < total), "skipped index out of range");
    if inp.all_values {
        assert_eq!(n_text, layout.series(), "not every series rendered");
    } else {
        assert!(n_text <= layout.series());
    }
    // Skip reasons render (Display) without panicking.
    for s in layout.skipped() {
        let _ = s.to_string();
    }
    // Deterministic.
    let mut again = Vec::new();
    layout.render(&inp.values, Format::Text, &mut again);
    assert_eq!(text.as_bytes(), &again[..], "render is not deterministic");
});
