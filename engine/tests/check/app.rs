//! A strict checker of the applications' families (`metrics_prometheus_engine::app`), written
//! independently of the renderer: prometheus_client's value grammar (`floatToGoString`) instead
//! of the engine's exact decimals, summaries, sorted labels, and prometheus_client's sample
//! order (`_bucket`…, `_count`, `_sum`). The rules that keep the output valid for Prometheus,
//! promtool and OpenMetrics parsers (prometheus_client's included) are those of the engine's
//! checker: grouping, uniqueness, escapes, counters and counts never negative nor NaN, and
//! histograms well formed.

use std::collections::HashSet;

use metrics_prometheus_engine::format::{Format, Options};

use super::protobuf::{text_helps, unescape, PbFamily};
use super::{check_escapes, is_label_name, parse_labels, Labels};

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_app_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// A `floatToGoString` value: `NaN`, `+Inf`, `-Inf`, or `-?D+(.D+)?(e[+-]DD+)?` with a point
/// or an exponent (Python's `repr` always has one). Returns the value.
pub fn check_float(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => return Ok(f64::NAN),
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let err = || Err(format!("bad value {v:?}"));
    let body = v.strip_prefix('-').unwrap_or(v);
    let (mantissa, exp) = match body.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        (e.starts_with('+') || e.starts_with('-')) && e.len() >= 3 && digits(&e[1..])
    });
    if !digits(int) || !frac.is_none_or(digits) || !exp_ok || (frac.is_none() && exp.is_none()) {
        return err();
    }
    v.parse().or_else(|_| err())
}

/// A count: an integer-valued, finite, non-negative value.
fn check_count(v: f64, what: &str) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 {
        Ok(())
    } else {
        Err(format!("{what}: count {v}"))
    }
}

/// A sum or counter value: neither NaN nor negative (`-0.0` is not negative).
fn check_non_negative(v: f64, what: &str) -> Result<(), String> {
    if v.is_nan() || v < 0.0 {
        Err(format!("{what}: value {v}"))
    } else {
        Ok(())
    }
}

/// Labels without those whose value is empty (Prometheus reads them as absent), sorted.
fn key(labels: &Labels) -> Labels {
    let mut k: Labels = labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    k.sort();
    k
}

/// One histogram or summary series being read: its buckets (le, count), `_count`, `_sum`.
#[derive(Default)]
struct Stat {
    key: Labels,
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
}

struct Family {
    name: String,
    ty: Option<String>,
    help: bool,
    samples: usize,
    /// Histogram and summary series, in order (each contiguous).
    stats: Vec<Stat>,
}

impl Family {
    fn new(name: &str) -> Family {
        Family {
            name: name.to_owned(),
            ty: None,
            help: false,
            samples: 0,
            stats: Vec::new(),
        }
    }

    /// The sample suffix `name` has in this family, or `None` if it does not belong to it.
    fn suffix<'a>(&self, name: &'a str, om: bool) -> Option<&'a str> {
        let rest = name.strip_prefix(self.name.as_str())?;
        let ok: &[&str] = match self.ty.as_deref() {
            Some("counter") if om => &["_total"],
            Some("histogram") => &["_bucket", "_count", "_sum"],
            Some("summary") => &["_count", "_sum"],
            _ => &[""],
        };
        ok.contains(&rest).then_some(rest)
    }

    fn finish(&self, opts: &Options, closed: &mut HashSet<String>) -> Result<(), String> {
        let err = |what: &str| Err(format!("family {}: {what}", self.name));
        if self.samples == 0 {
            return err("no samples");
        }
        if self.help != opts.help || self.ty.is_some() != opts.types {
            return err("HELP or TYPE presence");
        }
        for s in &self.stats {
            let what = format!("{}{:?}", self.name, s.key);
            let (Some(count), Some(sum)) = (s.count, s.sum) else {
                return Err(format!("{what}: _count or _sum missing"));
            };
            check_count(count, &what)?;
            check_non_negative(sum, &what)?;
            if self.ty.as_deref() == Some("histogram") {
                match s.buckets.last() {
                    Some(&(le, c)) if le == f64::INFINITY && c == count => {}
                    _ => return Err(format!("{what}: +Inf bucket missing or not the count")),
                }
                for w in s.buckets.windows(2) {
                    if w[0].0 >= w[1].0 || w[0].1 > w[1].1 {
                        return Err(format!("{what}: buckets {w:?}"));
                    }
                }
            }
        }
        if !closed.insert(self.name.clone()) {
            return err("not contiguous");
        }
        Ok(())
    }

    /// Records a sample of a typed histogram or summary.
    fn stat(&mut self, suffix: &str, labels: &Labels, v: f64) -> Result<(), String> {
        let what = format!("{}{suffix}{labels:?}", self.name);
        // A histogram's `le` is its own; a summary's `quantile` (none here).
        let special = if self.ty.as_deref() == Some("histogram") {
            "le"
        } else {
            "quantile"
        };
        let le = labels
            .iter()
            .find(|(k, _)| k == special)
            .map(|(_, v)| v.clone());
        if (suffix == "_bucket") != le.is_some() {
            return Err(format!(
                "{what}: {special} on a non-bucket sample, or missing"
            ));
        }
        let without: Labels = labels
            .iter()
            .filter(|(k, _)| k != special)
            .cloned()
            .collect();
        let k = key(&without);
        match self.stats.iter().position(|s| s.key == k) {
            Some(i) if i + 1 != self.stats.len() => return Err(format!("{what}: interleaved")),
            Some(_) => {}
            None => self.stats.push(Stat {
                key: k,
                ..Stat::default()
            }),
        }
        let s = self.stats.last_mut().expect("pushed");
        match suffix {
            "_bucket" if s.count.is_none() => {
                let le = check_float(&le.expect("checked"))?;
                if le.is_nan() || le < 0.0 {
                    return Err(format!("{what}: le {le}"));
                }
                check_count(v, &what)?;
                s.buckets.push((le, v));
            }
            "_count" if s.count.is_none() => s.count = Some(v),
            "_sum" if s.count.is_some() && s.sum.is_none() => s.sum = Some(v),
            _ => return Err(format!("{what}: out of order or repeated")),
        }
        Ok(())
    }
}

/// Parses a sample line: name, labels, value.
fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..end];
    if !is_app_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        (labels, rest) = parse_labels(rest, line)?;
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    let v = check_float(value)?;
    for w in labels.windows(2) {
        if w[0].0 >= w[1].0 {
            return Err(format!("labels not sorted or repeated in {line:?}"));
        }
    }
    Ok((name.to_owned(), labels, v))
}

/// Checks the applications' families rendered in `fmt` (without OpenMetrics' `# EOF`).
/// Returns the number of samples.
pub fn check_app(out: &str, fmt: Format, opts: &Options) -> Result<usize, String> {
    let om = fmt == Format::OpenMetrics;
    if !out.is_empty() && !out.ends_with('\n') {
        return Err("last line without newline".into());
    }
    if out.contains('\r') || out.contains("# EOF") {
        return Err("carriage return or # EOF".into());
    }
    let mut closed = HashSet::new();
    let mut series = HashSet::new();
    let mut cur: Option<Family> = None;
    let mut total = 0;
    for line in out.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(name), Some(rest)) = (name, rest) else {
                return Err(format!("bad metadata {line:?}"));
            };
            if !is_app_metric_name(name) {
                return Err(format!("bad family name {name:?}"));
            }
            if cur.as_ref().is_none_or(|f| f.name != name) {
                if let Some(f) = cur.take() {
                    f.finish(opts, &mut closed)?;
                }
                cur = Some(Family::new(name));
            }
            let fam = cur.as_mut().expect("current");
            if fam.samples > 0 {
                return Err(format!("metadata after samples: {line:?}"));
            }
            match kw {
                Some("HELP") if !fam.help => {
                    fam.help = true;
                    check_escapes(rest, if om { &['\\', '"', 'n'] } else { &['\\', 'n'] }, om)?;
                }
                Some("TYPE") if fam.ty.is_none() => {
                    if !["counter", "gauge", "histogram", "summary"].contains(&rest) {
                        return Err(format!("bad type {rest:?}"));
                    }
                    if rest == "counter" && !om && !name.ends_with("_total") {
                        return Err(format!("text counter family {name} without _total"));
                    }
                    fam.ty = Some(rest.to_owned());
                }
                _ => return Err(format!("unexpected or repeated metadata {line:?}")),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(format!("unexpected line {line:?}"));
        }
        let (name, labels, v) = parse_sample(line)?;
        total += 1;
        let belongs = cur.as_ref().and_then(|f| f.suffix(&name, om)).is_some();
        if !belongs {
            if opts.help || opts.types {
                return Err(format!("sample {name} outside its family's group"));
            }
            if let Some(f) = cur.take() {
                f.finish(opts, &mut closed)?;
            }
            cur = Some(Family::new(&name));
        }
        let fam = cur.as_mut().expect("current");
        let suffix = fam.suffix(&name, om).expect("belongs").to_owned();
        fam.samples += 1;
        match fam.ty.as_deref() {
            Some("histogram") | Some("summary") => fam.stat(&suffix, &labels, v)?,
            Some("counter") => check_non_negative(v, &name)?,
            // Untyped samples say nothing of their type (a gauge may be named `x_count`).
            _ => {}
        }
        if !series.insert((name.clone(), key(&labels))) {
            return Err(format!("duplicate series {line:?}"));
        }
    }
    if let Some(f) = cur.take() {
        f.finish(opts, &mut closed)?;
    }
    Ok(total)
}

/// Checks a decoded protobuf rendering of the applications' families. Returns the number of
/// metrics.
pub fn check_app_protobuf(fams: &[PbFamily], opts: &Options) -> Result<usize, String> {
    let mut names = HashSet::new();
    let mut n = 0;
    for f in fams {
        let err = |what: String| Err(format!("family {}: {what}", f.name));
        if !is_app_metric_name(&f.name) || !names.insert(f.name.clone()) {
            return err("bad or repeated name".into());
        }
        if f.help.is_some() != opts.help || f.unit.is_some() || f.metrics.is_empty() {
            return err("help or unit presence, or no metrics".into());
        }
        let ty = f.ty.ok_or("no type")?;
        if ty == 0 && !f.name.ends_with("_total") {
            return err("counter without _total".into());
        }
        let mut sets = HashSet::new();
        for m in &f.metrics {
            n += 1;
            for w in m.labels.windows(2) {
                if w[0].0 >= w[1].0 {
                    return err(format!("labels not sorted or repeated {:?}", m.labels));
                }
            }
            if m.labels.iter().any(|(k, _)| !is_label_name(k)) {
                return err(format!("label names {:?}", m.labels));
            }
            if !sets.insert(key(&m.labels)) {
                return err(format!("repeated label set {:?}", m.labels));
            }
            let what = format!("{}{:?}", f.name, m.labels);
            let fields = (
                m.counter.is_some(),
                m.gauge.is_some(),
                m.summary.is_some(),
                m.histogram.is_some(),
            );
            match (ty, fields) {
                (0, (true, false, false, false)) => {
                    check_non_negative(m.counter.expect("counter"), &what)?
                }
                (1, (false, true, false, false)) => {}
                (2, (false, false, true, false)) => {
                    let s = m.summary.as_ref().expect("summary");
                    let (Some(_), Some(sum), 0) = (s.count, s.sum, s.quantiles) else {
                        return err(format!("summary {s:?}"));
                    };
                    check_non_negative(sum, &what)?;
                }
                (4, (false, false, false, true)) => {
                    let h = m.histogram.as_ref().expect("histogram");
                    let (Some(count), Some(sum)) = (h.count, h.sum) else {
                        return err(format!("histogram {h:?}"));
                    };
                    check_non_negative(sum, &what)?;
                    if h.schema.is_some() || !h.spans.is_empty() || !h.exemplars.is_empty() {
                        return err("native fields".into());
                    }
                    let mut prev: Option<(f64, u64)> = None;
                    for b in &h.buckets {
                        let ok_bound = b.upper.is_finite() && b.upper >= 0.0;
                        let ordered = prev.is_none_or(|(u, c)| u < b.upper && c <= b.count);
                        if !ok_bound || !ordered || b.count > count || b.exemplar.is_some() {
                            return err(format!("bucket {b:?} after {prev:?}"));
                        }
                        prev = Some((b.upper, b.count));
                    }
                }
                _ => return err(format!("value fields {fields:?} for type {ty}")),
            }
        }
    }
    Ok(n)
}

/// A sample as both sides are compared: name, labels sorted by name (with `le` normalised as
/// `text_samples` does), value.
type Sample = (String, Labels, f64);

/// The `le` of a `_bucket` sample written as Rust's shortest rendering of its double when it
/// reads as a `floatToGoString` number (`1.0` → `1`), so that both sides compare the bound.
/// Applied to both sides alike (a gauge may have an `le` label of its own).
fn norm(name: &str, mut labels: Labels) -> Labels {
    if name.ends_with("_bucket") {
        for (k, v) in &mut labels {
            if k == "le" {
                if let Ok(f) = check_float(v) {
                    if f.is_finite() {
                        *v = format!("{f}");
                    }
                }
            }
        }
    }
    labels
}

/// The samples of a text rendering (checked by [`check_app`]): labels unescaped.
fn app_text_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, labels, v) = parse_sample(l).expect("checked");
            let labels = labels.into_iter().map(|(k, v)| (k, unescape(&v))).collect();
            (name.clone(), norm(&name, labels), v)
        })
        .collect()
}

/// The samples a decoded protobuf rendering stands for, in prometheus_client's order.
pub fn app_pb_samples(fams: &[PbFamily]) -> Vec<Sample> {
    let mut out = Vec::new();
    for f in fams {
        for m in &f.metrics {
            let with_le = |le: String| {
                let mut l = m.labels.clone();
                l.push(("le".into(), le));
                l.sort();
                l
            };
            if let Some(v) = m.counter.or(m.gauge) {
                out.push((f.name.clone(), norm(&f.name, m.labels.clone()), v));
            }
            let count_sum = match (&m.summary, &m.histogram) {
                (Some(s), _) => Some((s.count.unwrap_or(0), s.sum.unwrap_or(f64::NAN))),
                (_, Some(h)) => {
                    for b in &h.buckets {
                        let name = format!("{}_bucket", f.name);
                        out.push((name, with_le(format!("{}", b.upper)), b.count as f64));
                    }
                    let count = h.count.unwrap_or(0) as f64;
                    out.push((format!("{}_bucket", f.name), with_le("+Inf".into()), count));
                    Some((h.count.unwrap_or(0), h.sum.unwrap_or(f64::NAN)))
                }
                _ => None,
            };
            if let Some((count, sum)) = count_sum {
                out.push((format!("{}_count", f.name), m.labels.clone(), count as f64));
                out.push((format!("{}_sum", f.name), m.labels.clone(), sum));
            }
        }
    }
    out
}

/// The protobuf rendering carries the samples of the text rendering `text` (checked by
/// [`check_app`] in the text format 0.0.4): same names, labels and values (doubles bit for
/// bit, NaN as NaN), in the same order when typed (sorted otherwise), and the same HELP texts.
pub fn app_pb_matches_text(fams: &[PbFamily], text: &str, opts: &Options) -> Result<(), String> {
    let mut p = app_pb_samples(fams);
    let mut t = app_text_samples(text);
    if !opts.types {
        p.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        t.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    }
    if p.len() != t.len() {
        return Err(format!(
            "{} protobuf samples, {} text samples",
            p.len(),
            t.len()
        ));
    }
    for (x, y) in p.iter().zip(&t) {
        let same = x.2.to_bits() == y.2.to_bits() || (x.2.is_nan() && y.2.is_nan());
        if x.0 != y.0 || x.1 != y.1 || !same {
            return Err(format!("{x:?} vs {y:?}"));
        }
    }
    if opts.types && opts.help {
        let pb: Vec<(String, String)> = fams
            .iter()
            .map(|f| (f.name.clone(), f.help.clone().unwrap_or_default()))
            .collect();
        let text = text_helps(text);
        if pb != text {
            return Err(format!("helps {pb:?} vs {text:?}"));
        }
    }
    Ok(())
}
