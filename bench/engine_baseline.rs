//! The render cases of engine/benches/format.rs, rendered by two engines linked into one
//! criterion binary: `current` (this tree's engine/, or the one bench/engine_baseline.py was
//! asked to compare) and `baseline` (an older commit's engine, extracted by the script). Both
//! are compiled with the same profile and measured in the same run, so that a ratio between
//! them means something on a shared, noisy machine where absolute figures drift from run to
//! run. Not a cargo target of the workspace: bench/engine_baseline.py writes the manifest.
//!
//! Cases: `<list>/<format>/<engine>`, e.g. `builtin_16x32/Text/current`. The engine measured
//! first alternates with `MP_BASELINE_FIRST` (set: baseline first), so that a drift of the
//! machine's load within a run does not always favour the same one.
//!
//! With `MP_INTERLEAVED=SECONDS` (and `MP_CASES=list/format,...`) the binary skips criterion and
//! measures each case in paired rounds instead: current, baseline, baseline, current (a batch of
//! renders each, about 0.2 ms), one ratio per round. Criterion measures one engine for seconds,
//! then the other, and a neighbour's load that comes or goes in between lands on one side only
//! (ratios of 0.9 to 1.6 between runs of identical code were seen on 2 shared cores); within a
//! round both sides see nearly the same machine, and the median of many rounds' ratios hardly
//! moves. It prints one JSON object per case.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};

/// One engine's render closures, from the same lists (support/lists.rs) and the same calls
/// (`Layout::new` with default options, then `Layout::render` into a reused buffer), which
/// every engine version the baseline may name has.
macro_rules! engine {
    ($module:ident, $krate:ident) => {
        mod $module {
            use $krate::format::{Format, Layout, MetricType, Options};

            include!("../engine/benches/support/lists.rs");

            /// The list of a case name, `None` for an unknown one.
            fn list(case: &str) -> Option<Vec<(String, MetricType, i64)>> {
                Some(match case {
                    "builtin_16x32" => builtin_list(16, 32),
                    "builtin_64x64" => builtin_list(64, 64),
                    "escapable_4096" => escapable_list(4096),
                    _ => return None,
                })
            }

            /// Series per render and a closure rendering `case` in `om` (OpenMetrics) or
            /// text, returning the output's length.
            pub fn prepare(case: &str, om: bool) -> (usize, impl FnMut() -> usize) {
                let list = list(case).expect("known case");
                let (metrics, values) = split(&list);
                let layout = Layout::new(&metrics, &Options::default());
                let fmt = if om {
                    Format::OpenMetrics
                } else {
                    Format::Text
                };
                let mut out = Vec::new();
                (layout.series(), move || {
                    out.clear();
                    layout.render(std::hint::black_box(&values), fmt, &mut out);
                    out.len()
                })
            }
        }
    };
}

engine!(current, mp_engine_current);
engine!(baseline, mp_engine_baseline);

/// Seconds to spend on each case, when `MP_INTERLEAVED` asks for paired rounds.
fn interleaved() -> Option<f64> {
    std::env::var("MP_INTERLEAVED").ok()?.parse().ok()
}

/// Nanoseconds per call of `f`, over `n` calls.
fn per_call(f: &mut dyn FnMut() -> usize, n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The paired rounds of one case (see the crate docs), as a JSON object.
fn paired(case: &str, seconds: f64) -> String {
    let (list, fmt) = case.split_once('/').expect("LIST/FORMAT");
    let om = fmt == "OpenMetrics";
    let (_, mut cur) = current::prepare(list, om);
    let (_, mut base) = baseline::prepare(list, om);
    // Warm both (caches, allocator, the output buffers' capacity) before anything counts.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        per_call(&mut cur, 10);
        per_call(&mut base, 10);
    }
    let batch = ((200_000.0 / per_call(&mut cur, 20)).ceil() as u32).max(1);
    let (mut c, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let c1 = per_call(&mut cur, batch);
        let b1 = per_call(&mut base, batch);
        let b2 = per_call(&mut base, batch);
        let c2 = per_call(&mut cur, batch);
        let (cc, bb) = ((c1 + c2) / 2.0, (b1 + b2) / 2.0);
        c.push(cc);
        b.push(bb);
        r.push(cc / bb);
    }
    let (cmin, bmin) = (
        c.iter().copied().fold(f64::INFINITY, f64::min),
        b.iter().copied().fold(f64::INFINITY, f64::min),
    );
    format!(
        "{{\"case\": \"{case}\", \"rounds\": {}, \"batch\": {batch}, \"current_ns\": {:.1}, \
         \"baseline_ns\": {:.1}, \"ratio\": {:.4}, \"current_min_ns\": {cmin:.1}, \
         \"baseline_min_ns\": {bmin:.1}}}",
        r.len(),
        median(&mut c),
        median(&mut b),
        median(&mut r),
    )
}

fn bench(c: &mut Criterion) {
    if let Some(seconds) = interleaved() {
        let cases = std::env::var("MP_CASES").unwrap_or_else(|_| "builtin_16x32/Text".into());
        for case in cases.split(',') {
            println!("{}", paired(case, seconds));
        }
        return;
    }
    let baseline_first = std::env::var_os("MP_BASELINE_FIRST").is_some();
    let mut group = c.benchmark_group("engine_baseline");
    for case in ["builtin_16x32", "builtin_64x64", "escapable_4096"] {
        for (fmt, om) in [("Text", false), ("OpenMetrics", true)] {
            let (series, mut cur) = current::prepare(case, om);
            let (base_series, mut base) = baseline::prepare(case, om);
            // A ratio of two renders of different outputs would mean nothing.
            let (a, b) = (cur(), base());
            if a != b || series != base_series {
                eprintln!(
                    "{case}/{fmt}: the engines differ ({series} series, {a} bytes against \
                     {base_series} series, {b} bytes); the ratio compares different work"
                );
            }
            group.throughput(Throughput::Elements(series as u64));
            let mut run = |who: &str, f: &mut dyn FnMut() -> usize| {
                group.bench_function(format!("{case}/{fmt}/{who}"), |b| b.iter(|| black_box(f())));
            };
            if baseline_first {
                run("baseline", &mut base);
                run("current", &mut cur);
            } else {
                run("current", &mut cur);
                run("baseline", &mut base);
            }
        }
    }
    group.finish();
}

// `criterion_group!` expands to an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
