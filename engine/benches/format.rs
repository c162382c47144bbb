//! Benchmarks of the exposition engine: `Layout::render` per scrape and
//! `Layout::new` once at startup, on uWSGI's built-in list for 16 workers x 32
//! cores and 64 workers x 64 cores (one socket), and on a list of custom
//! metrics whose names need escaping and rewriting.
//!
//! `render_histogram_48x12` renders one histogram family of 48 series (4 methods x 12
//! status codes) with 12 finite bounds, every series non-empty, with an exemplar on every
//! fourth bucket (OpenMetrics and protobuf), and no other family.
//!
//! Every render case runs in the three formats: text, OpenMetrics and protobuf.
//! `render_histogram_48x12_native` adds native buckets (schema 3, 100 µs .. 60 s, 155
//! buckets, observations spread over about 60 of them per series) to the same histogram,
//! in protobuf (the text formats ignore them).
//!
//! `queue_time` parses the `X-Request-Start` header values of `--prometheus-queue-time`.
//!
//! Criterion reports throughput in series per second; ns per series is the
//! reciprocal (the median time divided by `Layout::series()`).
//!
//! ```text
//! cargo bench --bench format
//! ```

use std::hint::black_box;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use metrics_prometheus_engine::compress::Gzip;
use metrics_prometheus_engine::format::{
    native_bucket_index, Exemplar, Format, Histogram, Layout, MetricType, NativeSpec, Options,
};

// The metric lists are shared with bench/engine_baseline.rs, which renders them with a baseline
// commit's engine too: one definition, so both always measure the same input.
include!("support/lists.rs");

/// 48 series x 12 finite bounds (+Inf), counts and exemplars.
fn histogram_48x12() -> (Histogram, Vec<u64>, Vec<Option<Exemplar>>) {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let codes = [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 500, 503];
    let h = Histogram {
        family: "request_duration_seconds",
        help: "Time to serve a request.",
        bounds_us: vec![
            1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
            2_500_000, 10_000_000,
        ],
        series: methods
            .iter()
            .flat_map(|m| {
                codes.iter().map(move |c| {
                    vec![
                        ("method".into(), (*m).into()),
                        ("code".into(), c.to_string()),
                    ]
                })
            })
            .collect(),
        native: None,
    };
    let per = h.slots_per_series();
    let mut hist = Vec::with_capacity(h.series.len() * per);
    let mut exemplars = Vec::with_capacity(h.series.len() * per);
    for s in 0..h.series.len() as u64 {
        for b in 0..per as u64 - 1 {
            hist.push((s * 7_919 + b * 104_729) % 100_000);
            exemplars.push((b % 4 == 0).then(|| Exemplar {
                trace_id: *b"4bf92f3577b34da6a3ce929d0e0e4736",
                value_us: h.bounds_us.get(b as usize).copied().unwrap_or(20_000_000),
                timestamp_us: 1_700_000_000_123_456 + (s * 1_000 + b) as i64,
            }));
        }
        hist.push(s * 123_456_789);
        exemplars.push(None);
    }
    (h, hist, exemplars)
}

/// [`histogram_48x12`] with native buckets: schema 3 from 100 µs to 60 s; per series, the
/// classic observations spread over the native buckets of their classic bucket.
fn histogram_48x12_native() -> (Histogram, Vec<u64>, Vec<Option<Exemplar>>) {
    let (mut h, classic, classic_ex) = histogram_48x12();
    let first = native_bucket_index(1e-4, 3);
    let spec = NativeSpec {
        schema: 3,
        zero_threshold_us: 0,
        first_index: first,
        buckets: (native_bucket_index(60.0, 3) - first) as usize + 1,
    };
    h.native = Some(spec);
    let per_classic = h.bounds_us.len() + 2;
    let mut hist = Vec::new();
    let mut exemplars = Vec::new();
    for (s, series) in classic.chunks(per_classic).enumerate() {
        hist.extend_from_slice(series);
        exemplars.extend_from_slice(&classic_ex[s * per_classic..(s + 1) * per_classic]);
        let mut dense = vec![0u64; 1 + spec.buckets];
        for (b, &c) in series[..per_classic - 1].iter().enumerate() {
            // Spread the bucket's count over 5 native buckets below its bound.
            let bound = h.bounds_us.get(b).copied().unwrap_or(20_000_000);
            let top = native_bucket_index(bound as f64 / 1e6, 3) - first;
            for j in 0..5 {
                let k = (top - j * 2).clamp(0, spec.buckets as i32 - 1) as usize;
                dense[1 + k] += c / 5 + u64::from(j == 0) * (c % 5);
            }
        }
        hist.extend_from_slice(&dense);
        exemplars.extend(std::iter::repeat_n(None, dense.len()));
    }
    (h, hist, exemplars)
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("builtin_16x32", builtin_list(16, 32)),
        ("builtin_64x64", builtin_list(64, 64)),
        ("escapable_4096", escapable_list(4096)),
    ];
    // MP_BENCH_LABELS=N adds N constant labels (`--prometheus-label`) to every series.
    let constant = std::env::var("MP_BENCH_LABELS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let opts = Options {
        labels: (0..constant)
            .map(|i| (format!("label{i}"), format!("instance-{i}")))
            .collect(),
        ..Options::default()
    };

    let mut render = c.benchmark_group("render");
    for (name, list) in &cases {
        let (metrics, values) = split(list);
        let layout = Layout::new(&metrics, &opts);
        render.throughput(Throughput::Elements(layout.series() as u64));
        for fmt in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
            let id = BenchmarkId::new(*name, format!("{fmt:?}"));
            let mut out = Vec::new();
            render.bench_function(id, |b| {
                b.iter(|| {
                    out.clear();
                    layout.render(black_box(&values), fmt, &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    render.finish();

    let mut hist = c.benchmark_group("render_histogram_48x12");
    let (h, values, exemplars) = histogram_48x12();
    let layout = Layout::with_histograms(&[], &[], &[h], &opts);
    hist.throughput(Throughput::Elements(layout.series() as u64));
    for fmt in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
        let mut out = Vec::new();
        hist.bench_function(format!("{fmt:?}"), |b| {
            b.iter(|| {
                out.clear();
                layout.render_all(
                    &[],
                    black_box(&values),
                    black_box(&exemplars),
                    fmt,
                    &mut out,
                );
                black_box(out.len())
            })
        });
    }
    hist.finish();

    let mut native = c.benchmark_group("render_histogram_48x12_native");
    let (h, values, exemplars) = histogram_48x12_native();
    let layout = Layout::with_histograms(&[], &[], &[h], &opts);
    native.throughput(Throughput::Elements(layout.series() as u64));
    let mut out = Vec::new();
    native.bench_function("Protobuf", |b| {
        b.iter(|| {
            out.clear();
            layout.render_all(
                &[],
                black_box(&values),
                black_box(&exemplars),
                Format::Protobuf,
                &mut out,
            );
            black_box(out.len())
        })
    });
    native.finish();

    // gzip as the front ends do it (level 1, one reused compressor), on the rendered text:
    // what compression costs per scrape and how much it saves.
    let mut gz = c.benchmark_group("gzip");
    for (name, list) in &cases[..2] {
        let (metrics, values) = split(list);
        let mut body = Vec::new();
        Layout::new(&metrics, &opts).render(&values, Format::Text, &mut body);
        gz.throughput(Throughput::Bytes(body.len() as u64));
        let mut gzip = Gzip::new();
        let mut out = Vec::new();
        gzip.compress(&body, &mut out);
        eprintln!(
            "gzip {name}: {} -> {} bytes ({:.1}x)",
            body.len(),
            out.len(),
            body.len() as f64 / out.len() as f64
        );
        gz.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                gzip.compress(black_box(&body), &mut out);
                black_box(out.len())
            })
        });
    }
    gz.finish();

    // The header parser of --prometheus-queue-time, once per request in the after-request
    // hook: each form the proxies send, and a value it ignores.
    let mut queue = c.benchmark_group("queue_time");
    for (name, v) in [
        ("nginx_t_seconds_millis", &b"t=1700000000.123"[..]),
        ("haproxy_t_millis", b"t=1700000000123"),
        ("apache_t_micros", b"t=1700000000123456"),
        ("heroku_millis", b"1700000000123"),
        ("garbage", b"web1 t=1700000000.123"),
    ] {
        queue.bench_function(name, |b| {
            b.iter(|| {
                metrics_prometheus_engine::queue::queue_time(
                    black_box(v),
                    black_box(1_700_000_000_500_000),
                )
            })
        });
    }
    queue.finish();

    let mut new = c.benchmark_group("layout_new");
    new.sample_size(20);
    for (name, list) in &cases {
        let (metrics, _) = split(list);
        new.throughput(Throughput::Elements(metrics.len() as u64));
        new.bench_function(*name, |b| {
            b.iter(|| black_box(Layout::new(black_box(&metrics), &opts)).series())
        });
    }
    new.finish();
}

// `criterion_group!` expands to an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
