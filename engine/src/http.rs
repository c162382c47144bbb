//! HTTP/1.x for the `--prometheus-server` front end: request-head parsing (httparse does the
//! parsing proper), routing and response heads. Pure: no I/O, no FFI.
#![forbid(unsafe_code)]

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::compress::accepts_gzip;
use crate::format::{negotiate, Format};

/// HTTP basic-auth credentials for the dedicated server: a user name and the SHA-256 digest of
/// the password (only the digest is kept; `Debug` hides both).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

/// A `--prometheus-basic-auth` value not of the form `USER:sha256:HEX`. Carries nothing of the
/// value: it holds a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFormError;

impl std::fmt::Display for AuthFormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "expected USER:sha256:HEX (HEX: the password's SHA-256 in hex, e.g. from \
             `printf %s \"$PASSWORD\" | sha256sum`)",
        )
    }
}

impl std::error::Error for AuthFormError {}

impl BasicAuth {
    /// Parses `USER:sha256:HEX` (HEX = the 64 hex digits of the password's SHA-256, e.g.
    /// `printf %s "$PASSWORD" | sha256sum`). Errors never echo the value.
    pub fn parse(v: &str) -> Result<BasicAuth, AuthFormError> {
        let (user, rest) = v.split_once(':').ok_or(AuthFormError)?;
        let hex = rest.strip_prefix("sha256:").ok_or(AuthFormError)?;
        if user.is_empty() || hex.len() != 64 {
            return Err(AuthFormError);
        }
        let mut sha256 = [0u8; 32];
        for (i, out) in sha256.iter_mut().enumerate() {
            let byte = hex.get(2 * i..2 * i + 2).ok_or(AuthFormError)?;
            *out = u8::from_str_radix(byte, 16).map_err(|_| AuthFormError)?;
        }
        Ok(BasicAuth {
            user: user.to_string(),
            sha256,
        })
    }
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), lowercase,
/// or `None` when the header is malformed or the id is all zeros (invalid per the spec).
/// Later versions may append fields after the flags; they are ignored.
pub fn traceparent_trace_id(v: &[u8]) -> Option<[u8; 32]> {
    // Runs in the after-request hook of every request that carries the header: one table
    // lookup per byte, no UTF-8 or iterator machinery.
    const HEX: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = b'0';
        while c <= b'9' {
            t[c as usize] = true;
            c += 1;
        }
        let mut c = b'a';
        while c <= b'f' {
            t[c as usize] = true;
            c += 1;
        }
        t
    };
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if (v[..2] == *b"00" && v.len() != 55) || (v.len() > 55 && v[55] != b'-') || v[..2] == *b"ff" {
        return None;
    }
    let (version, id, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    let hex = |s: &[u8]| s.iter().fold(true, |ok, &c| ok & HEX[usize::from(c)]);
    let nonzero = |s: &[u8]| s.iter().fold(0u8, |acc, &c| acc | (c ^ b'0')) != 0;
    // All-zero trace or parent ids are invalid per the spec.
    if !(hex(version) && hex(id) && hex(parent) && hex(flags) && nonzero(id) && nonzero(parent)) {
        return None;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&v[3..35]);
    Some(out)
}

/// Largest request head accepted; beyond it the answer is 431.
pub const HEAD_LIMIT: usize = 8 * 1024;
/// Most header lines accepted; beyond them the answer is 431 too.
pub const MAX_HEADERS: usize = 64;

/// The statuses this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
    Unavailable,
}

impl Status {
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::Unauthorized => "401 Unauthorized",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::Unavailable => "503 Service Unavailable",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::BadRequest => "bad request\n",
            Status::Unauthorized => "authentication required\n",
            Status::Forbidden => "forbidden\n",
            Status::NotFound => "not found\n",
            Status::MethodNotAllowed => "method not allowed: use GET or HEAD\n",
            Status::HeadersTooLarge => "request head too large\n",
            Status::Unavailable => "service unavailable\n",
        }
    }
}

/// What to answer, decided from the request head alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Render the exposition in this format; `head` = headers only; `gzip` = the client's
    /// `Accept-Encoding` allows gzip.
    Metrics { fmt: Format, head: bool, gzip: bool },
    /// The small HTML page at `/`.
    Index { head: bool },
    /// `/healthz` or `/readyz`: answered without credentials (see [`parse_with_auth`]).
    Probe { probe: Probe, head: bool },
    /// An error response with the status's own short body.
    Error(Status),
}

/// The health endpoints of the dedicated server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: 200 whenever it is answered (the master loop answers it).
    Live,
    /// `/readyz`: 200 when the instance can take requests, else 503 and the reason.
    Ready,
}

impl Probe {
    pub const ALL: [Probe; 2] = [Probe::Live, Probe::Ready];

    pub fn path(self) -> &'static str {
        match self {
            Probe::Live => "/healthz",
            Probe::Ready => "/readyz",
        }
    }
}

/// Result of looking at the bytes received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet (and within the limit): read more.
    Partial,
    /// The head is complete (or broken): answer with this.
    Done(Action),
}

/// Parses the request head in `buf` and decides the answer. Bytes after the head (a body,
/// pipelined requests) are ignored: every response closes the connection.
pub fn parse(buf: &[u8], metrics_path: &str) -> Parsed {
    parse_with_auth(buf, metrics_path, None)
}

/// [`parse`], and when `auth` is set, every request must carry those basic-auth credentials
/// (else 401), but a GET or HEAD of a [`Probe`] path: probes (a kubelet's) send no
/// credentials, and their answers carry no metrics. `--prometheus-allow` still applies to
/// them (it is checked when the connection is accepted).
pub fn parse_with_auth(buf: &[u8], metrics_path: &str, auth: Option<&BasicAuth>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= HEAD_LIMIT {
                Parsed::Done(Action::Error(Status::HeadersTooLarge))
            } else {
                Parsed::Partial
            }
        }
        Ok(httparse::Status::Complete(n)) if n > HEAD_LIMIT => {
            Parsed::Done(Action::Error(Status::HeadersTooLarge))
        }
        Ok(httparse::Status::Complete(_)) => {
            if !framing_ok(req.headers) {
                return Parsed::Done(Action::Error(Status::BadRequest));
            }
            let action = decide(&req, metrics_path);
            if let Some(auth) = auth.filter(|_| !matches!(action, Action::Probe { .. })) {
                let given = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value);
                if !authorized(given, auth) {
                    return Parsed::Done(Action::Error(Status::Unauthorized));
                }
            }
            Parsed::Done(action)
        }
        Err(httparse::Error::TooManyHeaders) => {
            Parsed::Done(Action::Error(Status::HeadersTooLarge))
        }
        Err(_) => Parsed::Done(Action::Error(Status::BadRequest)),
    }
}

/// RFC 9112 §6.3: a message with both `Transfer-Encoding` and `Content-Length`, or with a
/// `Content-Length` that is not one non-negative decimal number (after merging repeated headers
/// and comma-separated lists of identical values), cannot be framed and must be rejected with
/// 400 and the connection closed. The dedicated server never reads a body, but a request it
/// accepts must be one every intermediary would frame the same way.
fn framing_ok(headers: &[httparse::Header<'_>]) -> bool {
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                    return false;
                }
                let v = part.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
                match length {
                    Some(l) if l != v => return false,
                    _ => length = Some(v),
                }
            }
        }
    }
    !(transfer_encoding && length.is_some())
}

/// Checks an `Authorization: Basic ...` value. The user name and password are compared as
/// SHA-256 digests in constant time, so timing tells nothing about either.
fn authorized(header: Option<&[u8]>, auth: &BasicAuth) -> bool {
    let Some(value) = header else {
        return false;
    };
    let value = value.trim_ascii();
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value[6..].trim_ascii())
    else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let user_ok = ct_eq(
        &Sha256::digest(&decoded[..colon]),
        &Sha256::digest(auth.user.as_bytes()),
    );
    let pass_ok = ct_eq(&Sha256::digest(&decoded[colon + 1..]), &auth.sha256);
    user_ok & pass_ok
}

/// Constant-time equality of two equal-length digests.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn decide(req: &httparse::Request<'_, '_>, metrics_path: &str) -> Action {
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Action::Error(Status::MethodNotAllowed),
    };
    let target = req.path.unwrap_or("");
    // Query strings are tolerated and ignored (Prometheus adds none, but people do).
    let path = target.split(['?', '#']).next().unwrap_or("");
    if let Some(probe) = Probe::ALL.into_iter().find(|p| p.path() == path) {
        Action::Probe { probe, head }
    } else if path == metrics_path {
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        Action::Metrics {
            fmt: negotiate(header("accept")),
            head,
            gzip: accepts_gzip(header("accept-encoding")),
        }
    } else if path == "/" {
        Action::Index { head }
    } else {
        Action::Error(Status::NotFound)
    }
}

/// Appends a complete response (head and, unless `head_only`, the body) to `out`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    ctype: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(ctype.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\n");
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends the head of a 200 response whose body follows as a gzip stream of unknown length,
/// delimited by the end of the connection (RFC 9112 §6.3); the gzip trailer (CRC-32 and
/// length) lets the client tell a complete body from a cut one.
pub fn write_gzip_head(out: &mut Vec<u8>, ctype: &str, extra: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(Status::Ok.line().as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(ctype.as_bytes());
    out.extend_from_slice(b"\r\nContent-Encoding: gzip\r\n");
    out.extend_from_slice(VARY.as_bytes());
    out.extend_from_slice(b"Connection: close\r\n");
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The header line of every metrics answer when compression is on: caches must key on the
/// request's `Accept-Encoding`, whichever way this answer went.
pub const VARY: &str = "Vary: Accept-Encoding\r\n";

/// Appends the response for an error status.
pub fn write_error(out: &mut Vec<u8>, status: Status, head_only: bool) {
    let extra = match status {
        Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        Status::Unauthorized => "WWW-Authenticate: Basic realm=\"uWSGI metrics\"\r\n",
        _ => "",
    };
    write_response(
        out,
        status,
        "text/plain; charset=utf-8",
        extra,
        status.body().as_bytes(),
        head_only,
    );
}

/// The page at `/`, so a person who opens the address in a browser finds the metrics.
pub fn index_page(metrics_path: &str) -> String {
    let p = html_escape(metrics_path);
    format!(
        "<!DOCTYPE html>\n<html><head><title>uWSGI metrics</title></head><body>\
         <h1>uWSGI metrics</h1><p><a href=\"{p}\">{p}</a></p>\
         <p>Probes: <a href=\"/healthz\">/healthz</a>, <a href=\"/readyz\">/readyz</a></p>\
         </body></html>\n"
    )
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// Why a `--prometheus-path` value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    TooLong,
    NoLeadingSlash(String),
    ForbiddenByte(String),
    /// A path the server answers itself (`/healthz`, `/readyz`).
    Reserved(&'static str),
}

/// Far below HEAD_LIMIT, so a request for the path always fits in an accepted head.
const MAX_PATH: usize = 1024;

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::TooLong => write!(f, "longer than {MAX_PATH} bytes"),
            PathError::NoLeadingSlash(p) => write!(f, "'{p}' must start with '/'"),
            PathError::ForbiddenByte(p) => write!(
                f,
                "'{p}' may not contain spaces, control characters, '?' or '#'"
            ),
            PathError::Reserved(p) => write!(
                f,
                "'{p}' is a health endpoint of --prometheus-server (/healthz, /readyz); \
                 choose another path for the metrics"
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// Checks a `--prometheus-path` value.
pub fn validate_path(p: &str) -> Result<(), PathError> {
    if p.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if !p.starts_with('/') {
        return Err(PathError::NoLeadingSlash(p.into()));
    }
    if p.bytes()
        .any(|b| b <= b' ' || b == b'?' || b == b'#' || b >= 0x7f)
    {
        return Err(PathError::ForbiddenByte(p.into()));
    }
    if let Some(probe) = Probe::ALL.into_iter().find(|q| q.path() == p) {
        return Err(PathError::Reserved(probe.path()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(s.as_bytes(), "/metrics")
    }

    #[test]
    fn routes() {
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Done(Action::Metrics {
                fmt: Format::Text,
                head: false,
                gzip: false
            })
        );
        assert_eq!(
            p("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Parsed::Done(Action::Metrics {
                fmt: Format::Text,
                head: true,
                gzip: false
            })
        );
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"),
            Parsed::Done(Action::Metrics { fmt: Format::OpenMetrics, head: false, gzip: false })
        );
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\nAccept: */*\r\n\r\n"),
            Parsed::Done(Action::Metrics {
                fmt: Format::Text,
                head: false,
                gzip: true
            })
        );
        assert_eq!(
            p("HEAD /metrics HTTP/1.1\r\naccept-encoding: gzip;q=0, br\r\n\r\n"),
            Parsed::Done(Action::Metrics {
                fmt: Format::Text,
                head: true,
                gzip: false
            })
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\n\r\n"),
            Parsed::Done(Action::Index { head: false })
        );
        assert_eq!(
            p("GET /other HTTP/1.1\r\n\r\n"),
            Parsed::Done(Action::Error(Status::NotFound))
        );
        assert_eq!(
            p("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            Parsed::Done(Action::Error(Status::MethodNotAllowed))
        );
        assert_eq!(p("GET /metrics HTTP/1.1\r\nHost"), Parsed::Partial);
        assert_eq!(p(""), Parsed::Partial);
        assert_eq!(
            p("\x16\x03\x01\x02\x00"),
            Parsed::Done(Action::Error(Status::BadRequest))
        );
        assert_eq!(
            p("GET /metrics\r\n\r\n"),
            Parsed::Done(Action::Error(Status::BadRequest))
        );
    }

    #[test]
    fn probes() {
        let probe = |probe, head| Parsed::Done(Action::Probe { probe, head });
        assert_eq!(
            p("GET /healthz HTTP/1.1\r\n\r\n"),
            probe(Probe::Live, false)
        );
        assert_eq!(
            p("HEAD /healthz?x HTTP/1.0\r\n\r\n"),
            probe(Probe::Live, true)
        );
        assert_eq!(
            p("GET /readyz HTTP/1.1\r\n\r\n"),
            probe(Probe::Ready, false)
        );
        assert_eq!(
            p("HEAD /readyz HTTP/1.1\r\n\r\n"),
            probe(Probe::Ready, true)
        );
        assert_eq!(
            p("POST /readyz HTTP/1.1\r\n\r\n"),
            Parsed::Done(Action::Error(Status::MethodNotAllowed))
        );
        for other in ["/healthz/", "/readyz/x", "/HEALTHZ"] {
            assert_eq!(
                p(&format!("GET {other} HTTP/1.1\r\n\r\n")),
                Parsed::Done(Action::Error(Status::NotFound)),
                "{other}"
            );
        }
        // Exempt from basic auth (kubelet probes send no credentials), with or without a
        // header; everything else still needs it, a POST to a probe path too.
        let real = BasicAuth {
            user: "prom".into(),
            sha256: Sha256::digest(b"s3cret").into(),
        };
        let with = |req: &str| parse_with_auth(req.as_bytes(), "/metrics", Some(&real));
        assert_eq!(
            with("GET /healthz HTTP/1.1\r\n\r\n"),
            probe(Probe::Live, false)
        );
        assert_eq!(
            with("HEAD /readyz HTTP/1.1\r\nAuthorization: Basic eDp5\r\n\r\n"),
            probe(Probe::Ready, true)
        );
        let denied = Parsed::Done(Action::Error(Status::Unauthorized));
        for req in [
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /nope HTTP/1.1\r\n\r\n",
            "POST /healthz HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(with(req), denied, "{req:?}");
        }
        // Broken heads are still broken.
        assert_eq!(
            with("GET /healthz\r\n\r\n"),
            Parsed::Done(Action::Error(Status::BadRequest))
        );
        // The metrics path cannot take a probe's.
        for path in ["/healthz", "/readyz"] {
            assert!(matches!(validate_path(path), Err(PathError::Reserved(_))));
        }
        assert!(validate_path("/healthz/metrics").is_ok());
        assert!(index_page("/metrics").contains("href=\"/readyz\""));
    }

    #[test]
    fn traceparent() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(ok).as_ref().map(|id| &id[..]),
            Some(&b"4bf92f3577b34da6a3ce929d0e0e4736"[..])
        );
        assert!(
            traceparent_trace_id(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ")
                .is_some()
        );
        assert!(traceparent_trace_id(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"
        )
        .is_some());
        for bad in [
            &b""[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ] {
            assert!(traceparent_trace_id(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn framing() {
        let req = |extra: &str| p(&format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n"));
        let bad = Parsed::Done(Action::Error(Status::BadRequest));
        for h in [
            "Content-Length: -1\r\n",
            "Content-Length: abc\r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Content-Length: \r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(req(h), bad, "{h:?}");
        }
        for h in [
            "",
            "Content-Length: 0\r\n",
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            "Content-Length: 7, 7\r\n",
            "Content-Length: 9999999999999999999\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            assert!(
                matches!(req(h), Parsed::Done(Action::Metrics { .. })),
                "{h:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(HEAD_LIMIT));
        assert_eq!(
            p(&long),
            Parsed::Done(Action::Error(Status::HeadersTooLarge))
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        assert_eq!(
            p(&format!("GET /metrics HTTP/1.1\r\n{many}\r\n")),
            Parsed::Done(Action::Error(Status::HeadersTooLarge))
        );
    }

    #[test]
    fn basic_auth() {
        // A well-formed digest that is NOT sha256("s3cret"): the right password must not pass.
        let auth = BasicAuth::parse(
            "prom:sha256:3cbd9ab2b8f6b0a8b6f8a2b3c1e4d0c6d2f1f0e5b1a0c9d8e7f6a5b4c3d2e1f0",
        )
        .expect("valid");
        let real = BasicAuth {
            user: "prom".into(),
            sha256: Sha256::digest(b"s3cret").into(),
        };
        let req = |cred: &str| {
            format!(
                "GET /metrics HTTP/1.1\r\nAuthorization: Basic {}\r\n\r\n",
                base64::engine::general_purpose::STANDARD.encode(cred)
            )
        };
        let ok = Parsed::Done(Action::Metrics {
            fmt: Format::Text,
            head: false,
            gzip: false,
        });
        let denied = Parsed::Done(Action::Error(Status::Unauthorized));
        assert_eq!(
            parse_with_auth(req("prom:s3cret").as_bytes(), "/metrics", Some(&real)),
            ok
        );
        assert_eq!(
            parse_with_auth(req("prom:s3cret").as_bytes(), "/metrics", Some(&auth)),
            denied
        );
        assert_eq!(
            parse_with_auth(req("prom:wrong").as_bytes(), "/metrics", Some(&real)),
            denied
        );
        assert_eq!(
            parse_with_auth(req("other:s3cret").as_bytes(), "/metrics", Some(&real)),
            denied
        );
        assert_eq!(
            parse_with_auth(req("proms3cret").as_bytes(), "/metrics", Some(&real)),
            denied
        );
        let no_header = b"GET /metrics HTTP/1.1\r\n\r\n";
        assert_eq!(parse_with_auth(no_header, "/metrics", Some(&real)), denied);
        let garbage = b"GET /metrics HTTP/1.1\r\nAuthorization: Basic !!!\r\n\r\n";
        assert_eq!(parse_with_auth(garbage, "/metrics", Some(&real)), denied);
        assert_eq!(parse(no_header, "/metrics"), ok);
        let mut out = Vec::new();
        write_error(&mut out, Status::Unauthorized, false);
        assert!(String::from_utf8(out)
            .expect("UTF-8 output")
            .contains("WWW-Authenticate: Basic realm=\"uWSGI metrics\"\r\n"));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_error(&mut out, Status::MethodNotAllowed, false);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8 output"),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 36\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\n\
             method not allowed: use GET or HEAD\n"
        );
        let mut out = Vec::new();
        write_response(&mut out, Status::Ok, "text/plain", "", b"abc", true);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8 output"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        assert!(index_page("/m\"<").contains("href=\"/m&quot;&lt;\""));
        assert!(validate_path("/metrics").is_ok());
        assert!(validate_path("metrics").is_err());
        assert!(validate_path("/a b").is_err());
        assert!(validate_path(&format!("/{}", "a".repeat(1023))).is_ok());
        assert!(validate_path(&format!("/{}", "a".repeat(1024))).is_err());
    }
}
