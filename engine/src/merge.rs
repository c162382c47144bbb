//! Merging the vassals' own expositions into the Emperor's (`--prometheus-vassal-socket`):
//! every sample gets a `vassal` label, each family comes once and contiguous across vassals
//! (its HELP/TYPE/UNIT from the first vassal that has it), and a vassal whose answer is not a
//! well-formed exposition of the expected format is left out whole ([`check`]), so it never
//! breaks the output for the others.

use std::collections::HashMap;

use crate::format::Format;

/// Largest body taken from one vassal; a longer answer counts as a failed scrape.
pub const VASSAL_BODY_LIMIT: usize = 16 << 20;

/// Suffixes a sample name may add to its family's name.
const SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum",
];

/// One family of a vassal's exposition: metadata lines and sample lines (without newlines).
struct Family<'a> {
    name: &'a str,
    kind: Option<&'a str>,
    meta: Vec<&'a [u8]>,
    samples: Vec<&'a [u8]>,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    is_name_start(b) || b.is_ascii_digit()
}

/// Length of the metric or label name at the start of `s` (0 if none).
fn name_len(s: &[u8]) -> usize {
    if s.first().is_none_or(|&b| !is_name_start(b)) {
        return 0;
    }
    s.iter().take_while(|&&b| is_name_char(b)).count()
}

/// One label of a label set: where it starts, where its name ends, where its value ends.
type LabelSpan = (usize, usize, usize);

/// The label set `{...}` at the start of `s`: its length and each label's byte range
/// (`name="value"`), or None when malformed.
fn labels(s: &[u8]) -> Option<(usize, Vec<LabelSpan>)> {
    let mut out = Vec::new();
    let mut i = 1; // after '{'
    loop {
        match s.get(i)? {
            b'}' => return Some((i + 1, out)),
            b',' if !out.is_empty() => i += 1,
            _ if !out.is_empty() => return None,
            _ => {}
        }
        if s.get(i) == Some(&b'}') {
            return Some((i + 1, out));
        }
        let start = i;
        let n = name_len(&s[i..]);
        if n == 0 || s.get(i + n) != Some(&b'=') || s.get(i + n + 1) != Some(&b'"') {
            return None;
        }
        let name_end = i + n;
        i += n + 2;
        loop {
            match s.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                b'\n' => return None,
                _ => i += 1,
            }
        }
        i += 1;
        out.push((start, name_end, i));
    }
}

/// `VALUE [TIMESTAMP]`, in OpenMetrics possibly followed by ` # {labels} VALUE [TIMESTAMP]`
/// (an exemplar).
fn value_ok(rest: &[u8], om: bool) -> bool {
    let Ok(rest) = std::str::from_utf8(rest) else {
        return false;
    };
    let (sample, exemplar) = match rest.split_once(" # ") {
        Some((s, e)) if om => (s, Some(e)),
        _ => (rest, None),
    };
    let numbers = |t: &str| {
        let parts: Vec<&str> = t.split(' ').collect();
        (1..=2).contains(&parts.len()) && parts.iter().all(|p| p.parse::<f64>().is_ok())
    };
    numbers(sample)
        && exemplar.is_none_or(|e| {
            e.starts_with('{')
                && labels(e.as_bytes())
                    .is_some_and(|(len, _)| e[len..].strip_prefix(' ').is_some_and(numbers))
        })
}

/// Why a vassal's answer is left out of the merge (its `uwsgi_vassal_scrape_up` is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VassalError {
    NotUtf8,
    /// A line (1-based) of the body that is not what `fmt` allows.
    Line(usize, BadLine),
    NoEof,
    NoHead,
    HeadNotUtf8,
    Status(String),
    BadContentLength,
    ContentEncoding(String),
    TransferEncoding(String),
    WrongContentType(&'static str),
    ShortBody,
}

/// What is wrong with a body line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    AfterEof,
    Empty,
    MetadataName,
    Comment,
    NotASample,
    Labels,
    Value,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadLine::AfterEof => "data after # EOF",
            BadLine::Empty => "empty line",
            BadLine::MetadataName => "bad metric name in metadata",
            BadLine::Comment => "comment in OpenMetrics",
            BadLine::NotASample => "not a sample",
            BadLine::Labels => "bad labels",
            BadLine::Value => "no valid value",
        })
    }
}

impl std::fmt::Display for VassalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VassalError::NotUtf8 => f.write_str("not UTF-8"),
            VassalError::Line(n, why) => write!(f, "line {n}: {why}"),
            VassalError::NoEof => f.write_str("no # EOF (cut short?)"),
            VassalError::NoHead => f.write_str("no complete response head"),
            VassalError::HeadNotUtf8 => f.write_str("response head not UTF-8"),
            VassalError::Status(s) => write!(f, "status line {s:?}"),
            VassalError::BadContentLength => f.write_str("bad Content-Length"),
            VassalError::ContentEncoding(v) => write!(f, "Content-Encoding {v}"),
            VassalError::TransferEncoding(v) => write!(f, "Transfer-Encoding {v}"),
            VassalError::WrongContentType(want) => write!(f, "not {want}"),
            VassalError::ShortBody => {
                f.write_str("body length differs from Content-Length (cut short?)")
            }
        }
    }
}

impl std::error::Error for VassalError {}

/// Splits and validates one vassal's body; Err says why it is left out.
fn parse(body: &[u8], fmt: Format) -> Result<Vec<Family<'_>>, VassalError> {
    let text = std::str::from_utf8(body).map_err(|_| VassalError::NotUtf8)?;
    let om = fmt == Format::OpenMetrics;
    let mut fams: Vec<Family<'_>> = Vec::new();
    let mut eof = false;
    for (n, line) in text.split('\n').enumerate() {
        let bad = |why| Err(VassalError::Line(n + 1, why));
        if eof {
            if !line.is_empty() {
                return bad(BadLine::AfterEof);
            }
            continue;
        }
        if line.is_empty() {
            // OpenMetrics has none before `# EOF` (the piece after its final newline is
            // handled above); text lines end in a newline, which leaves one empty piece.
            if om {
                return bad(BadLine::Empty);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if om && line == "# EOF" {
                eof = true;
                continue;
            }
            let mut parts = rest.trim_start().splitn(3, ' ');
            let (word, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if matches!(word, "HELP" | "TYPE" | "UNIT") && rest.starts_with(' ') {
                if name_len(name.as_bytes()) != name.len() || name.is_empty() {
                    return bad(BadLine::MetadataName);
                }
                if fams
                    .last()
                    .is_none_or(|f| f.name != name || !f.samples.is_empty())
                {
                    fams.push(Family {
                        name,
                        kind: None,
                        meta: Vec::new(),
                        samples: Vec::new(),
                    });
                }
                let f = fams.last_mut().expect("pushed above");
                if word == "TYPE" {
                    f.kind = Some(parts.next().unwrap_or("").trim());
                }
                f.meta.push(line.as_bytes());
                continue;
            }
            if om {
                return bad(BadLine::Comment);
            }
            continue; // a text-format comment
        }
        let b = line.as_bytes();
        let nl = name_len(b);
        if nl == 0 {
            return bad(BadLine::NotASample);
        }
        let mut rest = &b[nl..];
        if rest.first() == Some(&b'{') {
            let (len, _) = labels(rest).ok_or(VassalError::Line(n + 1, BadLine::Labels))?;
            rest = &rest[len..];
        }
        if rest.first() != Some(&b' ') || !value_ok(&rest[1..], om) {
            return bad(BadLine::Value);
        }
        let name = &line[..nl];
        let belongs = fams.last().is_some_and(|f| {
            name == f.name
                || name
                    .strip_prefix(f.name)
                    .is_some_and(|s| SUFFIXES.contains(&s))
        });
        if !belongs {
            // A sample without metadata: a family of its own (untyped).
            fams.push(Family {
                name,
                kind: None,
                meta: Vec::new(),
                samples: Vec::new(),
            });
        }
        fams.last_mut().expect("pushed above").samples.push(b);
    }
    if om && !eof {
        return Err(VassalError::NoEof);
    }
    Ok(fams)
}

/// The request the Emperor sends a vassal's metrics socket for `fmt` (identity encoding, the
/// connection closed after the answer).
pub fn vassal_request(path: &str, fmt: Format) -> Vec<u8> {
    let accept = match fmt {
        Format::OpenMetrics => "application/openmetrics-text; version=1.0.0",
        _ => "text/plain; version=0.0.4",
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nAccept-Encoding: identity\r\nConnection: close\r\nUser-Agent: metrics_prometheus-emperor\r\n\r\n"
    )
    .into_bytes()
}

/// Checks a vassal's whole answer (read until the server closed): `200`, the content type of
/// `fmt`, no content or transfer coding, the exact `Content-Length` when given, and a body
/// that [`check`] accepts. Ok: where the body starts.
pub fn vassal_response(resp: &[u8], fmt: Format) -> Result<usize, VassalError> {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(VassalError::NoHead)?
        + 4;
    let head = std::str::from_utf8(&resp[..end]).map_err(|_| VassalError::HeadNotUtf8)?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
        return Err(VassalError::Status(status.into()));
    }
    let want = match fmt {
        Format::OpenMetrics => "application/openmetrics-text",
        _ => "text/plain",
    };
    let (mut ct, mut len) = (false, None);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-type" => ct = v.to_ascii_lowercase().starts_with(want),
            "content-length" => {
                len = Some(
                    v.parse::<usize>()
                        .map_err(|_| VassalError::BadContentLength)?,
                )
            }
            "content-encoding" if !v.eq_ignore_ascii_case("identity") => {
                return Err(VassalError::ContentEncoding(v.into()))
            }
            "transfer-encoding" => return Err(VassalError::TransferEncoding(v.into())),
            _ => {}
        }
    }
    if !ct {
        return Err(VassalError::WrongContentType(want));
    }
    if len.is_some_and(|l| l != resp.len() - end) {
        return Err(VassalError::ShortBody);
    }
    if let Some(why) = check(&resp[end..], fmt) {
        return Err(why);
    }
    Ok(end)
}

/// Checks one vassal's body without keeping anything: None when it can be merged.
pub fn check(body: &[u8], fmt: Format) -> Option<VassalError> {
    parse(body, fmt).err()
}

fn escape_into(v: &str, out: &mut Vec<u8>) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// `name{vassal="label",...} rest`: the vassal label first, a `vassal` label of the sample
/// itself (e.g. `--prometheus-label vassal=%n` in the vassal) replaced.
fn relabel(sample: &[u8], label: &str, out: &mut Vec<u8>) {
    let nl = name_len(sample);
    out.extend_from_slice(&sample[..nl]);
    out.extend_from_slice(b"{vassal=\"");
    escape_into(label, out);
    out.push(b'"');
    let mut rest = &sample[nl..];
    if rest.first() == Some(&b'{') {
        if let Some((len, ls)) = labels(rest) {
            for (start, name_end, end) in ls {
                if &rest[start..name_end] != b"vassal" {
                    out.push(b',');
                    out.extend_from_slice(&rest[start..end]);
                }
            }
            rest = &rest[len..];
        }
    }
    out.push(b'}');
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// Families of the Emperor's own exposition (never taken from a vassal).
fn own_names(own: &[u8], fmt: Format) -> Vec<String> {
    parse(own, fmt)
        .map(|f| f.iter().map(|f| f.name.to_string()).collect())
        .unwrap_or_default()
}

/// Appends the merged families of `vassals` (label, body already accepted by [`check`]) to
/// `out`, which holds the Emperor's own exposition in `fmt` (its `# EOF` moves to the end).
/// A vassal family whose TYPE disagrees with the first vassal's, or that has the name of one of
/// the Emperor's own families, is left out for that vassal; returns how many were.
pub fn merge(vassals: &[(&str, &[u8])], fmt: Format, out: &mut Vec<u8>) -> usize {
    let om = fmt == Format::OpenMetrics;
    if om && out.ends_with(b"# EOF\n") {
        out.truncate(out.len() - b"# EOF\n".len());
    }
    let reserved = own_names(out, fmt);
    struct Merged<'a> {
        kind: Option<&'a str>,
        meta: Vec<&'a [u8]>,
        body: Vec<u8>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut merged: HashMap<&str, Merged<'_>> = HashMap::new();
    let mut dropped = 0;
    for &(label, body) in vassals {
        let Ok(fams) = parse(body, fmt) else {
            continue;
        };
        for f in fams {
            if reserved.iter().any(|r| r == f.name) {
                dropped += 1;
                continue;
            }
            let m = merged.entry(f.name).or_insert_with(|| {
                order.push(f.name);
                Merged {
                    kind: f.kind,
                    meta: f.meta.clone(),
                    body: Vec::new(),
                }
            });
            if m.kind != f.kind {
                dropped += 1;
                continue;
            }
            for s in &f.samples {
                relabel(s, label, &mut m.body);
            }
        }
    }
    for name in order {
        let m = &merged[name];
        for line in &m.meta {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(&m.body);
    }
    if om {
        out.extend_from_slice(b"# EOF\n");
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP uwsgi_requests Requests.\n# TYPE uwsgi_requests counter\nuwsgi_requests_total 3\n# HELP uwsgi_worker_busy Busy.\n# TYPE uwsgi_worker_busy gauge\nuwsgi_worker_busy{worker=\"1\",vassal=\"x\"} 1\n# EOF\n";
    const B: &str = "# HELP uwsgi_requests Requests.\n# TYPE uwsgi_requests counter\nuwsgi_requests_total 5\nuwsgi_requests_created 1.5\n# EOF\n";

    #[test]
    fn merges_families_contiguously_with_the_vassal_label() {
        let mut out =
            b"# TYPE uwsgi_emperor_vassals gauge\nuwsgi_emperor_vassals 2\n# EOF\n".to_vec();
        let dropped = merge(
            &[("a", A.as_bytes()), ("b", B.as_bytes())],
            Format::OpenMetrics,
            &mut out,
        );
        assert_eq!(dropped, 0);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "# TYPE uwsgi_emperor_vassals gauge\nuwsgi_emperor_vassals 2\n\
             # HELP uwsgi_requests Requests.\n# TYPE uwsgi_requests counter\n\
             uwsgi_requests_total{vassal=\"a\"} 3\nuwsgi_requests_total{vassal=\"b\"} 5\n\
             uwsgi_requests_created{vassal=\"b\"} 1.5\n\
             # HELP uwsgi_worker_busy Busy.\n# TYPE uwsgi_worker_busy gauge\n\
             uwsgi_worker_busy{vassal=\"a\",worker=\"1\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn vassal_answers() {
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\n\r\n{A}",
            A.len()
        );
        let f = Format::OpenMetrics;
        let start = vassal_response(ok.as_bytes(), f).unwrap();
        assert_eq!(&ok.as_bytes()[start..], A.as_bytes());
        assert!(vassal_response(&ok.as_bytes()[..ok.len() - 1], f).is_err());
        assert!(vassal_response(ok.as_bytes(), Format::Text).is_err());
        let e = ok.replace("200 OK", "503 Service Unavailable");
        assert!(vassal_response(e.as_bytes(), f).is_err());
        let gz = ok.replace("Content-Length", "Content-Encoding: gzip\r\nX");
        assert!(vassal_response(gz.as_bytes(), f).is_err());
        assert!(vassal_response(b"garbage", f).is_err());
        let req = String::from_utf8(vassal_request("/metrics", f)).unwrap();
        assert!(req.starts_with("GET /metrics HTTP/1.1\r\n") && req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn garbage_and_cut_bodies_are_refused() {
        let f = Format::OpenMetrics;
        assert!(check(A.as_bytes(), f).is_none());
        assert!(check(b"HTTP/1.1 200 OK\r\n", f).is_some());
        assert!(check(&A.as_bytes()[..40], f).is_some());
        assert!(check(b"x{a=\"1} 1\n# EOF\n", f).is_some());
        assert!(check(b"\xff\xfe\n", Format::Text).is_some());
        assert!(check(b"# a comment\nx 1\n", Format::Text).is_none());
        assert!(check(b"x{} \n", Format::Text).is_some());
        assert!(check(b"this is { not an exposition\n", Format::Text).is_some());
        assert!(check(b"x 1 2 3\n", Format::Text).is_some());
        assert!(check(b"x{a=\"1\"} +Inf 1700000000\n", Format::Text).is_none());
        let ex = b"# TYPE h histogram\nh_bucket{le=\"1\"} 2 # {trace_id=\"ab\"} 0.5 1.7\n# EOF\n";
        assert!(check(ex, f).is_none(), "{:?}", check(ex, f));
    }

    #[test]
    fn a_conflicting_type_or_an_own_name_is_left_out() {
        let a = "# TYPE m gauge\nm 1\n";
        let b = "# TYPE m counter\nm_total 1\n# TYPE uwsgi_emperor_vassals gauge\nuwsgi_emperor_vassals 9\n";
        let mut out = b"# TYPE uwsgi_emperor_vassals gauge\nuwsgi_emperor_vassals 2\n".to_vec();
        let dropped = merge(
            &[("a", a.as_bytes()), ("b", b.as_bytes())],
            Format::Text,
            &mut out,
        );
        assert_eq!(dropped, 2);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("m{vassal=\"a\"} 1\n"));
        assert!(!text.contains("vassal=\"b\""));
    }

    #[test]
    fn labels_with_quotes_and_braces_survive() {
        let mut out = Vec::new();
        merge(
            &[("q\"v", b"x{a=\"}, \\\"\"} 1\n".as_slice())],
            Format::Text,
            &mut out,
        );
        assert_eq!(out, b"x{vassal=\"q\\\"v\",a=\"}, \\\"\"} 1\n");
    }
}
