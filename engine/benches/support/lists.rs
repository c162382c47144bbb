// The input lists of the render cases, `include!`d by engine/benches/format.rs and by
// bench/engine_baseline.rs (which expands it once per engine, each with its own `MetricType`
// in scope): it may use nothing of the engine but `MetricType`'s four variants, which every
// version of the engine has had since the first commit the baseline can name.

/// uWSGI's metric list, in uWSGI's order, for `workers` x `cores` and one
/// socket (uwsgi-internals.md §3.3), with plausible values.
fn builtin_list(workers: usize, cores: usize) -> Vec<(String, MetricType, i64)> {
    use MetricType::{Absolute as A, Alias, Counter as C, Gauge as G};
    let mut m = Vec::new();
    let mut push = |name: String, t: MetricType| {
        let v = (m.len() as i64 * 7_919) % 10_000_000;
        m.push((name, t, v));
    };
    for (n, t) in [
        ("routed_signals", C),
        ("unrouted_signals", C),
        ("busy_workers", G),
        ("idle_workers", G),
        ("overloaded", C),
    ] {
        push(format!("core.{n}"), t);
    }
    let per_worker = [
        ("requests", C),
        ("delta_requests", A),
        ("failed_requests", C),
        ("respawns", C),
        ("avg_response_time", G),
        ("total_tx", C),
        ("rss_size", G),
        ("vsz_size", G),
        ("running_time", C),
    ];
    let per_core = [
        "requests",
        "write_errors",
        "routed_requests",
        "static_requests",
        "offloaded_requests",
        "exceptions",
        "read_errors",
    ];
    for w in 0..=workers {
        for (n, t) in per_worker {
            push(format!("worker.{w}.{n}"), t);
        }
        if w > 0 {
            for c in 0..cores {
                for n in per_core {
                    push(format!("worker.{w}.core.{c}.{n}"), C);
                }
            }
        }
    }
    for (n, t) in [
        ("total_tx", C),
        ("total_rss", G),
        ("total_vsz", G),
        ("avg_response_time", G),
        ("total_running_time", C),
    ] {
        push(format!("core.{n}"), t);
    }
    push("socket.0.listen_queue".into(), G);
    push("rss_size".into(), Alias);
    push("vsz_size".into(), Alias);
    m
}

/// Custom metrics whose names need sanitising, camelCase splitting, unit
/// conversion and HELP escaping (`"`, `\`, LF), with negative values.
fn escapable_list(n: usize) -> Vec<(String, MetricType, i64)> {
    (0..n)
        .map(|i| {
            let name = match i % 4 {
                0 => format!("My-App.\"quoted\".shard.{i}.Hits"),
                1 => format!("back\\slash.{i}.LatencyMs.ms"),
                2 => format!("new\nline.queue.{i}.count"),
                _ => format!("Ünïcode.{i}.gauge.kb"),
            };
            let t = if i % 2 == 0 {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            (name, t, (i as i64 * 7_919) % 1_000_000 - 500_000)
        })
        .collect()
}

fn split(m: &[(String, MetricType, i64)]) -> (Vec<(&str, MetricType)>, Vec<i64>) {
    (
        m.iter().map(|(n, t, _)| (n.as_str(), *t)).collect(),
        m.iter().map(|x| x.2).collect(),
    )
}
