//! A strict checker of Prometheus text 0.0.4 and OpenMetrics 1.0 output, written independently
//! of the engine: exposition grammar, escaping, grouping, uniqueness, and the promlint rules
//! that `promtool check metrics` applies. Shared by the property tests (tests/format_prop.rs)
//! and the fuzz targets (fuzz/).
#![allow(dead_code)] // each user takes what it needs

use std::collections::HashSet;

use metrics_prometheus_engine::format::{Format, Options};

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
type Labels = Vec<(String, String)>;

/// Parses `name{l="v",...} value` into (name, labels, value).
fn parse_sample(line: &str) -> Result<(String, Labels, String), String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
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
                rest = r;
                break;
            } else {
                return Err(format!("bad label separator in {line:?}"));
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before value in {line:?}"))?;
    check_value(value)?;
    Ok((name.to_owned(), labels, value.to_owned()))
}

const ABBREVIATIONS: [&str; 14] = [
    "s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d",
];
const PREFIXES: [&str; 18] = [
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
    "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
];
const UNITS: [(&str, &str); 24] = [
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
    ("minutes", "seconds"),
    ("hours", "seconds"),
    ("days", "seconds"),
    ("weeks", "seconds"),
    ("kelvins", "kelvin"),
    ("fahrenheit", "celsius"),
    ("rankine", "celsius"),
    ("inches", "meters"),
    ("yards", "meters"),
    ("miles", "meters"),
    ("bits", "bytes"),
    ("calories", "joules"),
    ("pounds", "grams"),
    ("ounces", "grams"),
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
        for (unit, base) in UNITS {
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
    if ty.is_some() {
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
    let mut closed: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, Labels)> = HashSet::new();
    let mut cur: Option<Family> = None;
    let mut total = 0;

    let finish = |fam: Family, closed: &mut HashSet<String>| -> Result<(), String> {
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
        if lint {
            promlint(&fam.name, fam.ty.as_deref(), &fam.label_names)?;
        }
        if !closed.insert(fam.name.clone()) {
            return Err(format!("family {} is not contiguous", fam.name));
        }
        Ok(())
    };

    for line in body.lines() {
        if line.is_empty() {
            return Err("empty line".into());
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name, rest) = (parts.next().unwrap_or(""), parts.next(), parts.next());
            let name = name.ok_or_else(|| format!("bad metadata {line:?}"))?;
            if !is_metric_name(name) {
                return Err(format!("bad family name {name:?}"));
            }
            let rest = rest.ok_or_else(|| format!("bad metadata {line:?}"))?;
            if cur.as_ref().is_none_or(|f| f.name != name) {
                if let Some(f) = cur.take() {
                    finish(f, &mut closed)?;
                }
                if closed.contains(name) {
                    return Err(format!("family {name} is not contiguous"));
                }
                cur = Some(Family {
                    name: name.to_owned(),
                    ..Family::default()
                });
            }
            let fam = cur.as_mut().expect("current family");
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
                    if rest != "counter" && rest != "gauge" {
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
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("unexpected comment {line:?}"));
        }
        let (name, labels, value) = parse_sample(line)?;
        total += 1;
        // The family this sample must belong to.
        let belongs = |f: &Family| match (om, f.ty.as_deref()) {
            (true, Some("counter")) => name == format!("{}_total", f.name),
            _ => name == f.name,
        };
        if !cur.as_ref().is_some_and(belongs) {
            if opts.help || opts.types {
                return Err(format!("sample {name} outside its family's group"));
            }
            if let Some(f) = cur.take() {
                finish(f, &mut closed)?;
            }
            if closed.contains(&name) {
                return Err(format!("family {name} is not contiguous"));
            }
            cur = Some(Family {
                name: name.clone(),
                ..Family::default()
            });
        }
        let fam = cur.as_mut().expect("current family");
        fam.samples += 1;
        let is_counter = fam.ty.as_deref() == Some("counter");
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
        let mut key = labels.clone();
        key.sort();
        if !series.insert((name.clone(), key)) {
            return Err(format!("duplicate series {line:?}"));
        }
    }
    if let Some(f) = cur.take() {
        finish(f, &mut closed)?;
    }
    Ok(total)
}
