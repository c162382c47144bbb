//! Name handling: sanitising uWSGI name segments, splitting dotted names into a
//! family name plus labels, and the deterministic rewrite that keeps every
//! generated family name clean under `promtool check metrics` (promlint).
//!
//! # Generic mapping of a dotted uWSGI name
//!
//! 1. The name is split on `.`. Empty segments (`a..b`, a leading or trailing
//!    dot) are ignored, as if absent.
//! 2. A segment made only of ASCII digits becomes a **label value** when the
//!    segment right before it is a word (not digits) that has not already named
//!    a label. The label is named after that word (see [`label_name`]) and the
//!    digits are dropped from the family name: `myapp.shard.3.hits` →
//!    `myapp_shard_hits{shard="3"}`.
//! 3. Digits that cannot become a label stay in the family name as a word:
//!    a numeric first segment (`1.x` → `1_x`), the second of two numeric
//!    segments in a row (`x.1.2.y` → `x_2_y{x="1"}`), and a repeated label name
//!    (`a.1.a.2` → `a_a_2{a="1"}`), as does a word whose label name would be
//!    empty (`-.1` → `__1`).
//! 4. Word segments are [sanitised](push_snake) and joined with `_`.
//! 5. The joined name is [rewritten](rewrite) token by token so that promlint
//!    finds nothing to report.

/// Appends `seg` sanitised for use in a metric or label name.
///
/// * camelCase becomes snake_case: `_` is inserted before an ASCII uppercase
///   letter that follows a lowercase letter or a digit, or that follows an
///   uppercase letter and precedes a lowercase one (`MyApp` → `my_app`,
///   `HTTPServer` → `http_server`, `getHTTP` → `get_http`, `Http2Server` →
///   `http2_server`);
/// * ASCII letters are lowercased;
/// * every byte outside `[a-zA-Z0-9_]` becomes `_` (one `_` per byte, so a
///   two-byte UTF-8 character gives `__`).
pub(crate) fn push_snake(seg: &str, out: &mut String) {
    let b = seg.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                let prev = b[i - 1];
                let next_lower = b.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
                if prev.is_ascii_lowercase()
                    || prev.is_ascii_digit()
                    || (prev.is_ascii_uppercase() && next_lower)
                {
                    out.push('_');
                }
            }
            out.push(c.to_ascii_lowercase() as char);
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            out.push(c as char);
        } else {
            out.push('_');
        }
    }
}

/// `push_snake` into a new string.
pub(crate) fn snake(seg: &str) -> String {
    let mut s = String::with_capacity(seg.len());
    push_snake(seg, &mut s);
    s
}

/// The label name derived from word segment `word`, or `None` when it cannot
/// name a label (the digits after it then stay in the family name).
///
/// The word is [sanitised](push_snake); leading `_` are removed (names starting
/// with `__` are reserved); an empty result gives `None`; a result starting with
/// a digit, or equal to `le` or `quantile` (reserved for histograms and
/// summaries), gets a leading `_`.
pub(crate) fn label_name(word: &str) -> Option<String> {
    let s = snake(word);
    let t = s.trim_start_matches('_');
    if t.is_empty() {
        return None;
    }
    if t.as_bytes()[0].is_ascii_digit() || t == "le" || t == "quantile" {
        Some(format!("_{t}"))
    } else {
        Some(t.to_owned())
    }
}

/// `true` for a non-empty segment made only of ASCII digits.
pub(crate) fn is_numeric(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
}

/// A dotted name split by the generic rules (module docs, steps 1–4).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// Sanitised word segments joined with `_`, before the promlint rewrite.
    pub joined: String,
    /// `(label name, label value)` in segment order.
    pub labels: Vec<(String, String)>,
    /// The original name with each label value replaced by `N`, for HELP text.
    pub pattern: String,
}

/// Splits a dotted uWSGI name by the generic rules.
pub(crate) fn split_generic(name: &str) -> Split {
    let mut words: Vec<String> = Vec::new();
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut pattern = String::with_capacity(name.len());
    // The previous non-empty segment, when it is a word that may name a label.
    let mut prev_word: Option<&str> = None;
    for (i, seg) in name.split('.').enumerate() {
        if i > 0 {
            pattern.push('.');
        }
        if seg.is_empty() {
            continue;
        }
        if is_numeric(seg) {
            let label = prev_word
                .and_then(label_name)
                .filter(|l| !labels.iter().any(|(n, _)| n == l));
            prev_word = None;
            if let Some(l) = label {
                labels.push((l, seg.to_owned()));
                pattern.push('N');
                continue;
            }
            words.push(seg.to_owned());
        } else {
            words.push(snake(seg));
            prev_word = Some(seg);
        }
        pattern.push_str(seg);
    }
    Split {
        joined: words.join("_"),
        labels,
        pattern,
    }
}

/// Metric type names promlint refuses inside a name (`_gauge_` or a `_gauge`
/// suffix), with the word that replaces them.
const TYPE_TOKENS: [(&str, &str); 4] = [
    ("counter", "counters"),
    ("gauge", "gauges"),
    ("summary", "summaries"),
    ("histogram", "histograms"),
];

/// Last tokens promlint refuses on a gauge (`_total`, and the histogram and
/// summary sample suffixes), with the word that replaces them.
const GAUGE_SUFFIXES: [(&str, &str); 4] = [
    ("total", "totals"),
    ("count", "counts"),
    ("sum", "sums"),
    ("bucket", "buckets"),
];

/// promlint's "abbreviated units".
const ABBREVIATIONS: [&str; 14] = [
    "s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d",
];

/// promlint's unit prefixes.
const UNIT_PREFIXES: [&str; 18] = [
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
    "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
];

/// promlint's units with their base unit (the newest list, a superset of the
/// one in promtool 2.42; flagging more tokens than needed is harmless).
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

/// Time tokens that convert exactly to seconds by a power of ten, with the
/// exponent and the unit's name for HELP text.
const TIME_CONVERSIONS: [(&str, u8, &str); 11] = [
    ("s", 0, "seconds"),
    ("sec", 0, "seconds"),
    ("ms", 3, "milliseconds"),
    ("us", 6, "microseconds"),
    ("ns", 9, "nanoseconds"),
    ("deciseconds", 1, "deciseconds"),
    ("centiseconds", 2, "centiseconds"),
    ("milliseconds", 3, "milliseconds"),
    ("microseconds", 6, "microseconds"),
    ("nanoseconds", 9, "nanoseconds"),
    ("picoseconds", 12, "picoseconds"),
];

/// `(unit, base unit)` when `tok` is a promlint unit with an optional promlint
/// prefix (`kilobytes` → `("bytes", "bytes")`, `hours` → `("hours", "seconds")`).
fn unit_of(tok: &str) -> Option<(&'static str, &'static str)> {
    for (unit, base) in UNITS {
        if tok == unit {
            return Some((unit, base));
        }
        if let Some(p) = tok.strip_suffix(unit) {
            if UNIT_PREFIXES.contains(&p) {
                return Some((unit, base));
            }
        }
    }
    None
}

/// `true` when promlint would report `tok` as a token of a metric name: an
/// abbreviated unit, or a unit that is not a base unit (`minutes`,
/// `kilobytes`, `milliseconds`...).
fn is_flagged_unit(tok: &str) -> bool {
    ABBREVIATIONS.contains(&tok) || unit_of(tok).is_some_and(|(_, base)| tok != base)
}

/// `true` for any token naming a unit of time.
fn is_time_token(tok: &str) -> bool {
    matches!(tok, "s" | "sec" | "ms" | "us" | "ns" | "h" | "d")
        || unit_of(tok).is_some_and(|(_, base)| base == "seconds")
}

/// Result of [`rewrite`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// The rewritten name (may be empty when every token was removed).
    pub name: String,
    /// Values are divided by `10^scale` (a time unit converted to seconds).
    pub scale: u8,
    /// The unit converted to seconds, for HELP text.
    pub converted_from: Option<&'static str>,
    /// Unit tokens removed from the name, for HELP text.
    pub removed: Vec<String>,
}

/// Rewrites the `_`-separated tokens of `joined` (already lowercase) so that
/// promlint reports nothing for `<prefix><name>` (gauge) or
/// `<prefix><name>_total` (counter):
///
/// 1. a metric type name (`counter`, `gauge`, `summary`, `histogram`) becomes
///    its plural (`gauges`...);
/// 2. if the name has exactly one time-unit token, no `per` token (a unit
///    after `per` is a denominator), and that token is `s`, `sec`, `ms`, `us`,
///    `ns` or `deci`/`centi`/`milli`/`micro`/`nano`/`pico` + `seconds`, the
///    token becomes `seconds` and values are divided by the matching power of
///    ten (`latency_ms` = 250 → `latency_seconds` = 0.25);
/// 3. every other abbreviated unit (`s ms us ns sec b kb mb gb tb pb m h d`)
///    or non-base unit (`minutes`, `kilobytes`, `bits`, prefixed units...) is
///    removed from the name (the HELP text still shows the original name);
/// 4. for a gauge, a last token `total`, `count`, `sum` or `bucket` becomes its
///    plural (`queue_count` → `queue_counts`). (For a counter the caller
///    removes trailing `_total`s from the full name, so that the sample name
///    gets exactly one.)
pub(crate) fn rewrite(joined: &str, counter: bool) -> Rewritten {
    let convertible = joined.split('_').filter(|t| is_time_token(t)).count() == 1
        && !joined.split('_').any(|t| t == "per");
    let mut scale = 0;
    let mut converted_from = None;
    let mut removed = Vec::new();
    let mut toks: Vec<&str> = Vec::new();
    for tok in joined.split('_') {
        if let Some(&(_, plural)) = TYPE_TOKENS.iter().find(|(t, _)| *t == tok) {
            toks.push(plural);
        } else if is_flagged_unit(tok) {
            let conv = TIME_CONVERSIONS.iter().find(|(t, _, _)| *t == tok);
            match conv {
                Some(&(_, k, from)) if convertible => {
                    scale = k;
                    if k > 0 {
                        converted_from = Some(from);
                    }
                    toks.push("seconds");
                }
                _ => removed.push(tok.to_owned()),
            }
        } else {
            toks.push(tok);
        }
    }
    if !counter {
        if let Some(last) = toks.last_mut() {
            if let Some(&(_, plural)) = GAUGE_SUFFIXES.iter().find(|(t, _)| t == last) {
                *last = plural;
            }
        }
    }
    Rewritten {
        name: toks.join("_"),
        scale,
        converted_from,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_cases() {
        let cases = [
            ("requests", "requests"),
            ("MyApp", "my_app"),
            ("Latency", "latency"),
            ("HTTPServer", "http_server"),
            ("getHTTP", "get_http"),
            ("Http2Server", "http2_server"),
            ("A1B", "a1_b"),
            ("ABC", "abc"),
            ("my-app", "my_app"),
            ("a b\"c\\d\ne", "a_b_c_d_e"),
            ("é", "__"),
            ("x_Y", "x_y"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(snake(input), want, "input {input:?}");
        }
    }

    #[test]
    fn label_names() {
        assert_eq!(label_name("shard").as_deref(), Some("shard"));
        assert_eq!(label_name("ShardId").as_deref(), Some("shard_id"));
        assert_eq!(label_name("__x").as_deref(), Some("x"));
        assert_eq!(label_name("2x").as_deref(), Some("_2x"));
        assert_eq!(label_name("le").as_deref(), Some("_le"));
        assert_eq!(label_name("quantile").as_deref(), Some("_quantile"));
        assert_eq!(label_name("-"), None);
        assert_eq!(label_name("__"), None);
    }

    fn split(name: &str) -> (String, Vec<(&'static str, &'static str)>, String) {
        let s = split_generic(name);
        let labels = s
            .labels
            .iter()
            .map(|(k, v)| -> (&'static str, &'static str) {
                (Box::leak(k.clone().into()), Box::leak(v.clone().into()))
            })
            .collect();
        (s.joined, labels, s.pattern)
    }

    #[test]
    fn generic_split() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "myapp.shard.3.hits",
                "myapp_shard_hits",
                &[("shard", "3")],
                "myapp.shard.N.hits",
            ),
            (
                "worker.1.core.2.requests",
                "worker_core_requests",
                &[("worker", "1"), ("core", "2")],
                "worker.N.core.N.requests",
            ),
            ("1.foo", "1_foo", &[], "1.foo"),
            ("x.1.2.y", "x_2_y", &[("x", "1")], "x.N.2.y"),
            ("a.1.a.2", "a_a_2", &[("a", "1")], "a.N.a.2"),
            ("a..b", "a_b", &[], "a..b"),
            ("a..1", "a", &[("a", "1")], "a..N"),
            ("a.", "a", &[], "a."),
            (".a", "a", &[], ".a"),
            ("", "", &[], ""),
            ("...", "", &[], "..."),
            ("7", "7", &[], "7"),
            ("-.1", "__1", &[], "-.1"),
            ("2x.1", "2x", &[("_2x", "1")], "2x.N"),
            ("le.1.q", "le_q", &[("_le", "1")], "le.N.q"),
            (
                "My-App.Shard.01",
                "my_app_shard",
                &[("shard", "01")],
                "My-App.Shard.N",
            ),
        ];
        for &(input, joined, labels, pattern) in cases {
            let (j, l, p) = split(input);
            assert_eq!(j, joined, "joined for {input:?}");
            assert_eq!(l, labels, "labels for {input:?}");
            assert_eq!(p, pattern, "pattern for {input:?}");
        }
    }

    fn rw(joined: &str, counter: bool) -> (String, u8, Option<&'static str>, Vec<String>) {
        let r = rewrite(joined, counter);
        (r.name, r.scale, r.converted_from, r.removed)
    }

    // A data table of (input, expected) cases, one `assert_eq!` each, ~128 lines: not split.
    #[test]
    fn rewrites() {
        let none: Vec<String> = vec![];
        assert_eq!(
            rw("my_app_hits", true),
            ("my_app_hits".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("my_app_latency_ms", false),
            (
                "my_app_latency_seconds".into(),
                3,
                Some("milliseconds"),
                none.clone()
            )
        );
        assert_eq!(
            rw("t_us", true),
            ("t_seconds".into(), 6, Some("microseconds"), none.clone())
        );
        assert_eq!(
            rw("t_nanoseconds", false),
            ("t_seconds".into(), 9, Some("nanoseconds"), none.clone())
        );
        assert_eq!(
            rw("uptime_s", false),
            ("uptime_seconds".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("uptime_seconds", false),
            ("uptime_seconds".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("x_ms_per_s", false),
            (
                "x_per".into(),
                0,
                None,
                vec!["ms".to_owned(), "s".to_owned()]
            )
        );
        assert_eq!(
            rw("x_seconds_ms", false),
            ("x_seconds".into(), 0, None, vec!["ms".to_owned()])
        );
        assert_eq!(
            rw("mem_kb", false),
            ("mem".into(), 0, None, vec!["kb".to_owned()])
        );
        assert_eq!(
            rw("a_b", false),
            ("a".into(), 0, None, vec!["b".to_owned()])
        );
        assert_eq!(
            rw("up_minutes", false),
            ("up".into(), 0, None, vec!["minutes".to_owned()])
        );
        assert_eq!(
            rw("size_kilobytes", false),
            ("size".into(), 0, None, vec!["kilobytes".to_owned()])
        );
        assert_eq!(
            rw("size_bytes", false),
            ("size_bytes".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("thermometers", false),
            ("thermometers".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("queue_gauge", false),
            ("queue_gauges".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("counter", true),
            ("counters".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("hist_histogram_x", false),
            ("hist_histograms_x".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("queue_count", false),
            ("queue_counts".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("queue_count", true),
            ("queue_count".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("jobs_total", false),
            ("jobs_totals".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("jobs_total", true),
            ("jobs_total".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("jobs_total_total", true),
            ("jobs_total_total".into(), 0, None, none.clone())
        );
        assert_eq!(rw("total", true), ("total".into(), 0, None, none.clone()));
        assert_eq!(rw("x_sum", false), ("x_sums".into(), 0, None, none.clone()));
        assert_eq!(
            rw("x_bucket", false),
            ("x_buckets".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("ms", false),
            ("seconds".into(), 3, Some("milliseconds"), none.clone())
        );
        assert_eq!(rw("kb", false), ("".into(), 0, None, vec!["kb".to_owned()]));
        assert_eq!(
            rw("a__b", false),
            ("a_".into(), 0, None, vec!["b".to_owned()])
        );
        assert_eq!(
            rw("requests_per_ms", false),
            ("requests_per".into(), 0, None, vec!["ms".to_owned()])
        );
        assert_eq!(
            rw("millisecond", false),
            ("millisecond".into(), 0, None, none.clone())
        );
        assert_eq!(
            rw("hour_count", false),
            ("hour_counts".into(), 0, None, none.clone())
        );
    }
}
