//! The `render` target's input: a small line-based text format, so that seeds
//! are readable uWSGI metric lists and libFuzzer's byte mutations land
//! directly in metric names. Every byte string decodes to *some* input.
//!
//! ```text
//! uwsgi_                         line 1: the prefix, verbatim (may be empty or invalid)
//! h t w c -3                     line 2: flags: `h` no HELP, `t` no TYPE, `w` no workers,
//!                                        `c` no cores, `l` constant labels, `i` include
//!                                        only `uwsgi_*`, `x` exclude `*_total`; `-N` drops the last N values,
//!                                        `+N` appends N extra values (N < 100)
//! c 10 worker.1.requests         then one metric per line: `<type> <value> <name>`
//! g 1500 worker.1.avg_response_time      type: c counter, g gauge, a absolute, A alias
//! A 0 rss_size                           (any other byte: derived from it)
//! E 5 worker_cpu_seconds worker=1        an extra series (E counter, e gauge):
//! e 1 build_info version=2.0.30,plugin_version=0.1.0
//!                                        `<family> [k=v,...]`; the family is one of
//!                                        [`EXTRA_FAMILIES`] (by name, else by hash), label
//!                                        names are one of [`LABEL_NAMES`] (same rule)
//! ```
//!
//! Values are any `i64` (unparsable: a hash of the token, so big and negative
//! values are reachable). In names and label values, `\n` `\r` `\t` `\0`
//! `\\` `\,` `\s` (space) are decoded; any other backslash is kept. The input
//! is decoded as UTF-8 lossily.
//!
//! Extras stay inside the host's contract (`Extra` docs, `live.rs`): static,
//! valid family names without `_total`, valid distinct label names; label
//! values are arbitrary (the host puts socket names, mountpoints, cache names
//! there).

use metrics_prometheus_engine::format::{Extra, FamilyFilter, Glob, Kind, MetricType, Options};

/// Family names the host uses for extras (`live.rs`), plus a few that collide
/// with the built-in table or with each other's sample names.
pub const EXTRA_FAMILIES: &[&str] = &[
    "up",
    "build_info",
    "start_time_seconds",
    "workers",
    "listen_queue",
    "load",
    "signal_queue",
    "cache_items",
    "cache_max_items",
    "cache_hits",
    "cache_misses",
    "cache_full",
    "spooler_tasks",
    "spooler_respawns",
    "spooler_running",
    "socket_listen_queue",
    "socket_listen_queue_max",
    "worker_status",
    "worker_accepting",
    "worker_harakiri",
    "worker_exceptions",
    "worker_signals",
    "worker_last_spawn_timestamp_seconds",
    "worker_core_in_request",
    "worker_app_requests",
    "worker_app_exceptions",
    "worker_cpu_seconds",
    "worker_resident_memory_bytes",
    "worker_open_fds",
    "master_cpu_seconds",
    "master_resident_memory_bytes",
    "master_open_fds",
    // Collisions with the table / generic mapping.
    "requests",
    "worker_requests",
    "worker_core_requests",
    "tx_bytes",
    "x",
    "x_created",
    "a",
    "_",
    "9lives",
];

/// HELP texts for extras, picked by the value's low bits: plain and hostile.
pub const EXTRA_HELPS: &[&str] = &[
    "Always 1.",
    "quote \" backslash \\ newline \n tab \t cr \r nul \0 del \x7f end",
    "",
    "unicode: é — ✓",
];

/// Label names the host uses for extras.
pub const LABEL_NAMES: &[&str] = &[
    "worker",
    "core",
    "status",
    "socket",
    "name",
    "proto",
    "app",
    "mountpoint",
    "version",
    "plugin_version",
    "dir",
    "cache",
];

/// One decoded `render` input.
#[derive(Debug)]
pub struct RenderInput {
    pub opts: Options,
    pub metrics: Vec<(String, MetricType)>,
    pub extras: Vec<Extra>,
    /// Values of `metrics` then `extras`, already cut or extended per the
    /// `-N`/`+N` flag.
    pub values: Vec<i64>,
    /// True when `values` has one value per metric and extra.
    pub all_values: bool,
}

fn fnv(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn pick<'a>(list: &[&'a str], tok: &str) -> &'a str {
    list.iter()
        .copied()
        .find(|&n| n == tok)
        .unwrap_or_else(|| list[(fnv(tok.as_bytes()) % list.len() as u64) as usize])
}

/// Decodes the backslash escapes described in the module docs.
pub fn unescape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            o.push(c);
            continue;
        }
        let d = match it.peek() {
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('0') => '\0',
            Some('\\') => '\\',
            Some(',') => ',',
            Some('s') => ' ',
            _ => {
                o.push('\\');
                continue;
            }
        };
        it.next();
        o.push(d);
    }
    o
}

fn value(tok: &str) -> i64 {
    tok.parse::<i64>()
        .unwrap_or_else(|_| fnv(tok.as_bytes()) as i64)
}

impl RenderInput {
    pub fn decode(data: &[u8]) -> RenderInput {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n');
        let prefix = lines.next().unwrap_or("").to_owned();
        let flags = lines.next().unwrap_or("");
        let opts = Options {
            prefix,
            help: !flags.contains('h'),
            types: !flags.contains('t'),
            workers: !flags.contains('w'),
            cores: !flags.contains('c'),
            // Constant labels, one of which (`requests`) generic names can also produce.
            labels: if flags.contains('l') {
                vec![
                    ("host".to_owned(), "web-1".to_owned()),
                    ("requests".to_owned(), "a\"b".to_owned()),
                ]
            } else {
                Vec::new()
            },
            // Some families left out by name (`--prometheus-exclude`/`--prometheus-include`).
            families: FamilyFilter {
                include: if flags.contains('i') {
                    vec![Glob::parse("uwsgi_*").expect("valid pattern")]
                } else {
                    Vec::new()
                },
                exclude: if flags.contains('x') {
                    vec![Glob::parse("*_total").expect("valid pattern")]
                } else {
                    Vec::new()
                },
            },
        };
        let count = |sign: char| {
            flags.find(sign).map(|i| {
                flags[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .take(2)
                    .fold(0usize, |n, d| n * 10 + (d as usize - '0' as usize))
            })
        };
        let (drop, add) = (count('-').unwrap_or(0), count('+').unwrap_or(0));

        let mut metrics = Vec::new();
        let mut metric_values = Vec::new();
        let mut extras = Vec::new();
        let mut extra_values = Vec::new();
        for line in lines {
            let mut parts = line.splitn(3, ' ');
            let ty = parts.next().unwrap_or("");
            let v = value(parts.next().unwrap_or(""));
            let rest = parts.next().unwrap_or("");
            match ty {
                "E" | "e" => {
                    let (fam, labels) = rest.split_once(' ').unwrap_or((rest, ""));
                    let family = pick(EXTRA_FAMILIES, fam);
                    let mut l: Vec<(String, String)> = Vec::new();
                    // Split on unescaped commas.
                    let mut parts = Vec::new();
                    let mut cur = String::new();
                    let mut esc = false;
                    for c in labels.chars() {
                        if c == ',' && !esc {
                            parts.push(std::mem::take(&mut cur));
                        } else {
                            cur.push(c);
                        }
                        esc = c == '\\' && !esc;
                    }
                    if !cur.is_empty() {
                        parts.push(cur);
                    }
                    for p in parts {
                        let (k, val) = p.split_once('=').unwrap_or((&p, ""));
                        let k = pick(LABEL_NAMES, k);
                        if l.iter().all(|(n, _)| n != k) {
                            l.push((k.to_owned(), unescape(val)));
                        }
                    }
                    extras.push(Extra {
                        family,
                        kind: if ty == "E" {
                            Kind::Counter
                        } else {
                            Kind::Gauge
                        },
                        scale: (v.unsigned_abs() % 13) as u8,
                        help: EXTRA_HELPS
                            [(v.unsigned_abs() / 13 % EXTRA_HELPS.len() as u64) as usize],
                        labels: l,
                    });
                    extra_values.push(v);
                }
                _ => {
                    let t = match ty.as_bytes().first() {
                        Some(b'c') => MetricType::Counter,
                        Some(b'g') => MetricType::Gauge,
                        Some(b'a') => MetricType::Absolute,
                        Some(b'A') => MetricType::Alias,
                        Some(&b) => MetricType::from_uwsgi(b % 4).expect("0..4"),
                        None => MetricType::Gauge,
                    };
                    metrics.push((unescape(rest), t));
                    metric_values.push(v);
                }
            }
        }
        let mut values = metric_values;
        values.extend(extra_values);
        let full = values.len();
        values.truncate(full.saturating_sub(drop));
        for i in 0..add {
            values.push(i as i64 * 1_000_003 - 7);
        }
        RenderInput {
            opts,
            metrics,
            extras,
            all_values: values.len() >= full,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use metrics_prometheus_engine::format::{Format, Layout};

    #[test]
    fn decodes() {
        let inp = RenderInput::decode(
            b"app_\nh c -1\nc 10 worker.1.requests\nA x rss_size\ng 5 new\\nline\nE 7 cache_hits name=a\\,b,nope=x\\sy,name=dup",
        );
        assert_eq!(inp.opts.prefix, "app_");
        assert!(!inp.opts.help && inp.opts.types && inp.opts.workers && !inp.opts.cores);
        assert_eq!(
            inp.metrics,
            [
                ("worker.1.requests".to_owned(), MetricType::Counter),
                ("rss_size".to_owned(), MetricType::Alias),
                ("new\nline".to_owned(), MetricType::Gauge),
            ]
        );
        assert_eq!(inp.extras.len(), 1);
        let e = &inp.extras[0];
        assert_eq!(
            (e.family, e.kind, e.scale),
            ("cache_hits", Kind::Counter, 7)
        );
        assert_eq!(e.labels[0], ("name".to_owned(), "a,b".to_owned()));
        assert_eq!(
            e.labels.len(),
            2,
            "duplicate label names are dropped: {:?}",
            e.labels
        );
        assert_eq!(inp.values.len(), 3, "4 values, the last one dropped");
        assert!(!inp.all_values);
        assert_eq!(inp.values[0], 10);
    }

    /// Host label values may hold raw control characters; the engine turns them into spaces
    /// (only `\` `"` LF are escaped; OpenMetrics forbids CR) and the checker accepts the result.
    #[test]
    fn raw_controls_in_extra_label_values() {
        let inp = RenderInput::decode(b"uwsgi_\n\ne 1 worker_app_requests mountpoint=/a\\rb\\0c");
        let layout = Layout::with_extras(&[], &inp.extras, &inp.opts);
        let mut out = Vec::new();
        layout.render(&inp.values, Format::OpenMetrics, &mut out);
        let out = String::from_utf8(out).expect("UTF-8");
        assert!(out.contains("mountpoint=\"/a b c\""), "{out:?}");
        assert_eq!(check(&out, Format::OpenMetrics, &inp.opts, false), Ok(1));
    }
}
