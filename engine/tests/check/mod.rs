//! A strict checker of Prometheus text 0.0.4 and OpenMetrics 1.0 output, written independently
//! of the engine: exposition grammar, escaping, grouping, uniqueness, and the promlint rules
//! that `promtool check metrics` applies. Shared by the property tests (tests/format_prop.rs)
//! and the fuzz targets (fuzz/).
#![allow(dead_code)] // each user takes what it needs

use std::collections::HashSet;

use metrics_prometheus_engine::format::{Format, Options};

pub mod app;
pub mod protobuf;

// ---------------------------------------------------------------------------
// Checker
// ---------------------------------------------------------------------------

pub fn is_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

pub fn is_label_name(s: &str) -> bool {
    is_metric_name(s) && !s.starts_with("__")
}

fn is_camel(s: &str) -> bool {
    s.as_bytes()
        .windows(2)
        .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase())
}

/// Checks the escapes of a label value or HELP text: `\` may only be followed
/// by one of `allowed`; a bare `"` is an error when `quote_escaped`.
fn check_escapes(s: &str, allowed: &[char], quote_escaped: bool) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if allowed.contains(&e) => {}
                e => return Err(format!("invalid escape \\{e:?} in {s:?}")),
            },
            '"' if quote_escaped => return Err(format!("unescaped quote in {s:?}")),
            '\n' => return Err(format!("raw newline in {s:?}")),
            c if c.is_ascii_control() && c != '\t' => {
                return Err(format!("control character in {s:?}"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The value grammar the engine promises: an integer or an exact decimal
/// without trailing zeros.
pub fn check_value(v: &str) -> Result<(), String> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && frac.is_none_or(|f| {
            !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) && !f.ends_with('0')
        })
        && v != "-0";
    if ok {
        Ok(())
    } else {
        Err(format!("bad value {v:?}"))
    }
}

/// `(label name, label value)` pairs.
pub type Labels = Vec<(String, String)>;

/// Parses `{l="v",...}` at the start of `rest` (`line` for messages): the labels and what
/// follows the closing brace.
fn parse_labels<'a>(mut rest: &'a str, line: &str) -> Result<(Labels, &'a str), String> {
    rest = rest
        .strip_prefix('{')
        .ok_or_else(|| format!("no labels in {line:?}"))?;
    let mut labels = Vec::new();
    loop {
        let eq = rest
            .find("=\"")
            .ok_or_else(|| format!("bad labels in {line:?}"))?;
        let lname = &rest[..eq];
        if !is_label_name(lname) {
            return Err(format!("bad label name {lname:?} in {line:?}"));
        }
        rest = &rest[eq + 2..];
        // Find the closing quote, skipping escapes.
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        if i >= bytes.len() {
            return Err(format!("unterminated label value in {line:?}"));
        }
        let value = &rest[..i];
        check_escapes(value, &['\\', '"', 'n'], true)?;
        labels.push((lname.to_owned(), value.to_owned()));
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        } else {
            return Err(format!("bad label separator in {line:?}"));
        }
    }
}

/// An OpenMetrics exemplar: ` # {labels} value [timestamp]` after a sample's value.
#[derive(Debug)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: String,
    pub timestamp: Option<String>,
}

/// A parsed sample line.
struct Sample {
    name: String,
    labels: Labels,
    value: String,
    exemplar: Option<Exemplar>,
}

/// Parses `name{l="v",...} value[ # {l="v"} value[ timestamp]]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        (labels, rest) = parse_labels(rest, line)?;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before value in {line:?}"))?;
    let (value, exemplar) = match rest.split_once(' ') {
        None => (rest, None),
        Some((value, ex)) => {
            let ex = ex
                .strip_prefix("# ")
                .ok_or_else(|| format!("garbage after the value in {line:?}"))?;
            let (labels, ex) = parse_labels(ex, line)?;
            let ex = ex
                .strip_prefix(' ')
                .ok_or_else(|| format!("no exemplar value in {line:?}"))?;
            let (v, ts) = match ex.split_once(' ') {
                None => (ex, None),
                Some((v, ts)) => (v, Some(ts)),
            };
            check_value(v)?;
            if let Some(ts) = ts {
                check_value(ts)?;
            }
            (
                value,
                Some(Exemplar {
                    labels,
                    value: v.to_owned(),
                    timestamp: ts.map(str::to_owned),
                }),
            )
        }
    };
    check_value(value)?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: value.to_owned(),
        exemplar,
    })
}

/// Compares two non-negative exact decimals (`check_value` grammar) or `+Inf`, exactly.
pub fn cmp_decimal(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a == "+Inf", b == "+Inf") {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let split = |s: &str| -> (String, String) {
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        (i.to_owned(), f.to_owned())
    };
    let ((ai, af), (bi, bf)) = (split(a), split(b));
    ai.len()
        .cmp(&bi.len())
        .then_with(|| ai.cmp(&bi))
        .then_with(|| {
            let n = af.len().max(bf.len());
            format!("{af:0<n$}").cmp(&format!("{bf:0<n$}"))
        })
}

/// One series of a histogram family: its buckets in order, `_sum` and `_count`.
#[derive(Default)]
struct HistSeries {
    buckets: Vec<(String, String)>,
    sum: Option<String>,
    count: Option<String>,
}

/// Checks a histogram series: `le` strictly increasing up to `+Inf`, cumulative counts
/// non-decreasing, `+Inf` equal to `_count`, `_sum` and `_count` both present.
fn check_hist_series(fam: &str, key: &Labels, s: &HistSeries) -> Result<(), String> {
    let err = |what: &str| Err(format!("histogram {fam}{key:?}: {what}"));
    let Some(last) = s.buckets.last() else {
        return err("no buckets");
    };
    if last.0 != "+Inf" {
        return err("last bucket is not le=\"+Inf\"");
    }
    for w in s.buckets.windows(2) {
        if cmp_decimal(&w[0].0, &w[1].0) != std::cmp::Ordering::Less {
            return err("le values not increasing");
        }
        if cmp_decimal(&w[0].1, &w[1].1) == std::cmp::Ordering::Greater {
            return err("bucket counts not cumulative");
        }
    }
    match (&s.sum, &s.count) {
        (Some(_), Some(c)) if *c == last.1 => Ok(()),
        (Some(_), Some(_)) => err("_count differs from the +Inf bucket"),
        _ => err("_sum or _count missing"),
    }
}

// promlint's tables, transcribed from prometheus/client_golang
// `prometheus/testutil/promlint/validations/units.go` (unchanged since 60a8513, checked at
// 89c60c0), in its order: `units`, `unitPrefixes`, `unitAbbreviations`.
//
// Deliberately not shared with the engine's copy (engine/src/format/name.rs), although the
// data is the same: the engine's tables decide which tokens it rewrites, these decide what
// the checker reports. Were they one table, a unit missing from it (or a typo) would be
// missed by both at once and no test could notice; two copies each taken from upstream have
// to be wrong in the same way for that. A new promlint unit goes into both.

/// `units`: a unit and its base unit.
const UNITS: &[(&str, &str)] = &[
    // Base units.
    ("amperes", "amperes"),
    ("bytes", "bytes"),
    ("celsius", "celsius"),
    ("grams", "grams"),
    ("joules", "joules"),
    ("kelvin", "kelvin"),
    ("meters", "meters"),
    ("metres", "metres"),
    ("seconds", "seconds"),
    ("volts", "volts"),
    // Non base units. Time.
    ("minutes", "seconds"),
    ("hours", "seconds"),
    ("days", "seconds"),
    ("weeks", "seconds"),
    // Temperature.
    ("kelvins", "kelvin"),
    ("fahrenheit", "celsius"),
    ("rankine", "celsius"),
    // Length.
    ("inches", "meters"),
    ("yards", "meters"),
    ("miles", "meters"),
    // Bytes.
    ("bits", "bytes"),
    // Energy.
    ("calories", "joules"),
    // Mass.
    ("pounds", "grams"),
    ("ounces", "grams"),
];

/// `unitPrefixes`.
const PREFIXES: &[&str] = &[
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
    "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
];

/// `unitAbbreviations`: "common abbreviations that we'd like to discourage".
const ABBREVIATIONS: &[&str] = &[
    "s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d",
];

/// promlint (client_golang `testutil/promlint`) on one text-format family.
fn promlint(name: &str, ty: Option<&str>, labels: &[String]) -> Result<(), String> {
    let err = |what: &str| Err(format!("promlint: {name}: {what}"));
    let lower = name.to_ascii_lowercase();
    if name.contains(':') {
        return err("colon");
    }
    if is_camel(name) {
        return err("camelCase");
    }
    for tok in lower.split('_').skip(1) {
        if ["counter", "gauge", "summary", "histogram"].contains(&tok) {
            return err("type in name");
        }
        if ABBREVIATIONS.contains(&tok) {
            return err("abbreviated unit");
        }
    }
    for tok in name.split('_') {
        for &(unit, base) in UNITS {
            for p in PREFIXES.iter().copied().chain([""]) {
                if tok.strip_prefix(p) == Some(unit) && (p.to_owned() + unit) != base {
                    return err("non-base unit");
                }
            }
        }
    }
    match ty {
        Some("counter") if !name.ends_with("_total") => return err("counter without _total"),
        Some(t) if t != "counter" && name.ends_with("_total") => {
            return err("_total on non-counter")
        }
        _ => {}
    }
    if ty == Some("histogram") {
        if labels.iter().any(|l| l == "quantile") {
            return err("reserved label");
        }
    } else if ty.is_some() {
        for suffix in ["_bucket", "_count", "_sum"] {
            if name.ends_with(suffix) {
                return err(suffix);
            }
        }
        if labels.iter().any(|l| l == "le" || l == "quantile") {
            return err("reserved label");
        }
    }
    if labels.iter().any(|l| is_camel(l)) {
        return err("camelCase label");
    }
    Ok(())
}

#[derive(Default)]
struct Family {
    name: String,
    ty: Option<String>,
    help: bool,
    unit: bool,
    samples: usize,
    label_names: Vec<String>,
    /// Histogram series by labels without `le`, in order of appearance.
    hist: Vec<(Labels, HistSeries)>,
}

/// Checks one exposition. `lint` also applies the promlint rules (text only).
pub fn check(out: &str, fmt: Format, opts: &Options, lint: bool) -> Result<usize, String> {
    let om = fmt == Format::OpenMetrics;
    let body = if om {
        let b = out
            .strip_suffix("# EOF\n")
            .ok_or("OpenMetrics output does not end with # EOF")?;
        if b.contains("# EOF") {
            return Err("# EOF before the end".into());
        }
        if out.contains('\r') {
            return Err("carriage return in OpenMetrics".into());
        }
        b
    } else {
        out
    };
    if !body.is_empty() && !body.ends_with('\n') {
        return Err("last line without newline".into());
    }
    let mut c = Checker {
        om,
        opts,
        lint,
        closed: HashSet::new(),
        series: HashSet::new(),
        cur: None,
        total: 0,
    };
    for line in body.lines() {
        if line.is_empty() {
            return Err("empty line".into());
        }
        if let Some(meta) = line.strip_prefix("# ") {
            c.metadata(line, meta)?;
        } else if line.starts_with('#') {
            return Err(format!("unexpected comment {line:?}"));
        } else {
            c.sample(line)?;
        }
    }
    c.finish()?;
    Ok(c.total)
}

/// The state of one [`check`]: the family being read and what the earlier ones left.
struct Checker<'a> {
    om: bool,
    opts: &'a Options,
    lint: bool,
    /// Families already ended.
    closed: HashSet<String>,
    /// Every (sample name, sorted labels) seen.
    series: HashSet<(String, Labels)>,
    /// The family being read.
    cur: Option<Family>,
    /// Samples seen.
    total: usize,
}

impl Checker<'_> {
    /// Ends the current family, if any: its metadata, promlint, histogram series, and that it
    /// was not seen before.
    fn finish(&mut self) -> Result<(), String> {
        let Some(fam) = self.cur.take() else {
            return Ok(());
        };
        let (om, opts) = (self.om, self.opts);
        if fam.samples == 0 {
            return Err(format!("family {} without samples", fam.name));
        }
        if fam.help != opts.help {
            return Err(format!("family {}: HELP presence {}", fam.name, fam.help));
        }
        if fam.ty.is_some() != opts.types {
            return Err(format!("family {}: TYPE presence", fam.name));
        }
        if fam.unit && !om {
            return Err("UNIT in text format".into());
        }
        let unit_due =
            om && opts.types && (fam.name.ends_with("_seconds") || fam.name.ends_with("_bytes"));
        if fam.unit != unit_due {
            return Err(format!("family {}: UNIT presence {}", fam.name, fam.unit));
        }
        if self.lint {
            let names: Vec<String> = if fam.ty.as_deref() == Some("histogram") {
                fam.label_names
                    .iter()
                    .filter(|l| *l != "le")
                    .cloned()
                    .collect()
            } else {
                fam.label_names.clone()
            };
            promlint(&fam.name, fam.ty.as_deref(), &names)?;
        }
        for (key, s) in &fam.hist {
            check_hist_series(&fam.name, key, s)?;
        }
        if !self.closed.insert(fam.name.clone()) {
            return Err(format!("family {} is not contiguous", fam.name));
        }
        Ok(())
    }

    /// Ends the current family and starts `name`'s, which must not have been seen before.
    fn start(&mut self, name: &str) -> Result<(), String> {
        self.finish()?;
        if self.closed.contains(name) {
            return Err(format!("family {name} is not contiguous"));
        }
        self.cur = Some(Family {
            name: name.to_owned(),
            ..Family::default()
        });
        Ok(())
    }

    /// A `# HELP`, `# TYPE` or `# UNIT` line (`meta` after the `# `).
    fn metadata(&mut self, line: &str, meta: &str) -> Result<(), String> {
        let mut parts = meta.splitn(3, ' ');
        let (kw, name, rest) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        let name = name.ok_or_else(|| format!("bad metadata {line:?}"))?;
        if !is_metric_name(name) {
            return Err(format!("bad family name {name:?}"));
        }
        let rest = rest.ok_or_else(|| format!("bad metadata {line:?}"))?;
        if self.cur.as_ref().is_none_or(|f| f.name != name) {
            self.start(name)?;
        }
        let om = self.om;
        let fam = self.cur.as_mut().expect("current family");
        if fam.samples > 0 {
            return Err(format!("metadata after samples: {line:?}"));
        }
        match kw {
            "HELP" if !fam.help => {
                fam.help = true;
                if om {
                    check_escapes(rest, &['\\', '"', 'n'], true)?;
                } else {
                    check_escapes(rest, &['\\', 'n'], false)?;
                }
            }
            "TYPE" if fam.ty.is_none() => {
                if !["counter", "gauge", "histogram"].contains(&rest) {
                    return Err(format!("bad type {rest:?}"));
                }
                fam.ty = Some(rest.to_owned());
            }
            "UNIT" if om && !fam.unit => {
                if !name.ends_with(&format!("_{rest}")) {
                    return Err(format!("unit {rest} does not match {name}"));
                }
                fam.unit = true;
            }
            _ => return Err(format!("unexpected or repeated metadata {line:?}")),
        }
        Ok(())
    }

    /// A sample line: in its family's group, named and labelled as its type wants, not a
    /// repeated series.
    fn sample(&mut self, line: &str) -> Result<(), String> {
        let Sample {
            name,
            labels,
            value,
            exemplar,
        } = parse_sample(line)?;
        self.total += 1;
        let om = self.om;
        // The family this sample must belong to.
        let belongs = |f: &Family| match (om, f.ty.as_deref()) {
            (true, Some("counter")) => name == format!("{}_total", f.name),
            (_, Some("histogram")) => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{}{s}", f.name)),
            _ => name == f.name,
        };
        if !self.cur.as_ref().is_some_and(belongs) {
            if self.opts.help || self.opts.types {
                return Err(format!("sample {name} outside its family's group"));
            }
            self.start(&name)?;
        }
        let fam = self.cur.as_mut().expect("current family");
        fam.samples += 1;
        let is_counter = fam.ty.as_deref() == Some("counter");
        if fam.ty.as_deref() == Some("histogram") {
            check_hist_sample(fam, &name, &labels, &value, exemplar.as_ref(), om)?;
        } else if exemplar.is_some() {
            return Err(format!("exemplar outside a histogram bucket: {line:?}"));
        }
        if is_counter {
            if !name.ends_with("_total") || name.ends_with("_total_total") {
                return Err(format!("counter sample {name}"));
            }
            if value.starts_with('-') {
                return Err(format!("negative counter {line:?}"));
            }
        } else if fam.ty.is_some() && name.ends_with("_total") {
            return Err(format!("gauge sample {name} ends in _total"));
        }
        let mut seen_labels = HashSet::new();
        for (l, _) in &labels {
            if !seen_labels.insert(l.clone()) {
                return Err(format!("repeated label {l} in {line:?}"));
            }
            if !fam.label_names.contains(l) {
                fam.label_names.push(l.clone());
            }
        }
        let mut key = labels;
        key.sort();
        if !self.series.insert((name, key)) {
            return Err(format!("duplicate series {line:?}"));
        }
        Ok(())
    }
}

/// Checks one sample of a histogram family and records it in `fam.hist`.
fn check_hist_sample(
    fam: &mut Family,
    name: &str,
    labels: &Labels,
    value: &str,
    exemplar: Option<&Exemplar>,
    om: bool,
) -> Result<(), String> {
    let suffix = &name[fam.name.len()..];
    let mut key: Labels = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
    key.sort();
    let le = labels
        .iter()
        .find(|(k, _)| k == "le")
        .map(|(_, v)| v.clone());
    if (suffix == "_bucket") != le.is_some() {
        return Err(format!(
            "{name}: le label on a non-bucket sample or missing"
        ));
    }
    if value.starts_with('-') {
        return Err(format!("{name}: negative value {value}"));
    }
    if exemplar.is_some() && suffix != "_bucket" {
        return Err(format!("{name}: exemplar outside a bucket"));
    }
    if suffix != "_sum" && value.contains('.') {
        return Err(format!("{name}: count {value} is not an integer"));
    }
    // Series of a histogram are contiguous (OpenMetrics "metric grouping").
    match fam.hist.iter().position(|(k, _)| *k == key) {
        Some(i) if i + 1 != fam.hist.len() => {
            return Err(format!(
                "{name}{labels:?}: series of a histogram interleaved"
            ))
        }
        Some(_) => {}
        None => fam.hist.push((key, HistSeries::default())),
    }
    let s = &mut fam.hist.last_mut().expect("just pushed").1;
    if s.count.is_some() || (suffix == "_bucket" && s.sum.is_some()) {
        return Err(format!(
            "{name}{labels:?}: after the series' _count or _sum"
        ));
    }
    match suffix {
        "_bucket" => {
            let le = le.expect("checked");
            if le != "+Inf" {
                check_value(&le)?;
                if le.starts_with('-') {
                    return Err(format!("{name}: negative le {le}"));
                }
            }
            if let Some(e) = exemplar {
                if !om {
                    return Err(format!("{name}: exemplar in the text format"));
                }
                let [(k, v)] = e.labels.as_slice() else {
                    return Err(format!("{name}: exemplar labels {:?}", e.labels));
                };
                let hex = v.len() == 32
                    && v.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if k != "trace_id" || !hex {
                    return Err(format!("{name}: exemplar labels {:?}", e.labels));
                }
                if e.value.starts_with('-') || cmp_decimal(&e.value, &le).is_gt() {
                    return Err(format!("{name}: exemplar value {} above le {le}", e.value));
                }
                if let Some((prev, _)) = s.buckets.last() {
                    if cmp_decimal(&e.value, prev).is_le() {
                        return Err(format!(
                            "{name}: exemplar value {} not above the previous le {prev}",
                            e.value
                        ));
                    }
                }
                if e.timestamp.is_none() {
                    return Err(format!("{name}: exemplar without timestamp"));
                }
            }
            s.buckets.push((le, value.to_owned()));
        }
        "_sum" if s.sum.is_none() => s.sum = Some(value.to_owned()),
        "_count" if s.sum.is_some() => s.count = Some(value.to_owned()),
        _ => return Err(format!("{name}{labels:?}: unexpected or repeated sample")),
    }
    Ok(())
}
