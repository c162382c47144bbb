//! `http::parse` (request-head parser over httparse) on arbitrary bytes, plus
//! `http::validate_path`, `index_page` and the response writers.
//!
//! Input: the first byte picks the metrics path (low bits) and whether basic
//! auth is required (bit 0x80, `http::parse_with_auth`), the rest is what the
//! client sent. Properties: never panics; `Partial` only below `HEAD_LIMIT`;
//! bytes after a complete head (body, pipelined requests) do not change the
//! answer; requiring auth only ever turns a complete request's answer into
//! 401 (and never a probe's: `/healthz` and `/readyz` stay open), and the right
//! credentials restore it; every path `validate_path`
//! accepts is reachable by a GET; responses carry a correct `Content-Length`;
//! `traceparent_trace_id` (run on every request header in the after-request hook
//! with exemplars on) only returns 32 lowercase hex digits, not all zero, found
//! at their place in the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_prometheus_engine::format::Format;
use metrics_prometheus_engine::http::{
    index_page, parse, parse_with_auth, traceparent_trace_id, validate_path, write_error,
    write_response, Action, BasicAuth, Parsed, Status, HEAD_LIMIT,
};

/// `prom` / `s3cret` (sha256 of `s3cret`).
const AUTH: &str = "prom:sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
const AUTH_HEADER: &[u8] = b"Authorization: Basic cHJvbTpzM2NyZXQ=\r\n";

fn is_complete(a: Action) -> bool {
    matches!(
        a,
        Action::Metrics { .. }
            | Action::Index { .. }
            | Action::Probe { .. }
            | Action::Error(Status::NotFound | Status::MethodNotAllowed)
    )
}

const PATHS: [&str; 6] = ["/metrics", "/", "/m", "/metrics/", "/a/b.c", "/x%20y"];

fn check_response(out: &[u8], body_len: usize, head_only: bool) {
    let text = std::str::from_utf8(out).expect("response is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("response head ends with CRLFCRLF");
    let cl = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length present");
    assert_eq!(
        cl.parse::<usize>().expect("numeric Content-Length"),
        body_len
    );
    assert_eq!(body.len(), if head_only { 0 } else { body_len });
}

fuzz_target!(|data: &[u8]| {
    if let Some(id) = traceparent_trace_id(data) {
        assert!(id.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        assert!(id.iter().any(|&c| c != b'0'));
        assert_eq!(&data.trim_ascii()[3..35], &id[..]);
    }
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(sel & 0x7f) % PATHS.len()];
    let res = parse(buf, path);

    if sel & 0x80 != 0 {
        let auth = BasicAuth::parse(AUTH).expect("valid credentials");
        let with = parse_with_auth(buf, path, Some(&auth));
        match res {
            Parsed::Done(a) if is_complete(a) => {
                assert!(
                    with == res || with == Parsed::Done(Action::Error(Status::Unauthorized)),
                    "auth turned {res:?} into {with:?}"
                );
                if matches!(a, Action::Probe { .. }) {
                    assert_eq!(with, res, "auth changed a probe's answer");
                }
                // Add the right credentials after the request line: same answer as
                // without auth (or 431 if the head is now too large / has too many headers).
                if buf.starts_with(b"GET ") || buf.starts_with(b"HEAD ") {
                    if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                        let mut req = buf[..=nl].to_vec();
                        req.extend_from_slice(AUTH_HEADER);
                        req.extend_from_slice(&buf[nl + 1..]);
                        let got = parse_with_auth(&req, path, Some(&auth));
                        assert!(
                            got == res
                                || got == Parsed::Done(Action::Error(Status::HeadersTooLarge)),
                            "right credentials: {got:?}, without auth: {res:?}"
                        );
                    }
                }
            }
            _ => assert_eq!(
                with, res,
                "auth changed the answer to an incomplete/bad head"
            ),
        }
    }

    if res == Parsed::Partial {
        assert!(buf.len() < HEAD_LIMIT, "Partial at {} bytes", buf.len());
    }
    if let Parsed::Done(action) = res {
        // Answers that need a complete head: what follows the head is ignored.
        if is_complete(action) {
            let mut more = buf.to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n\x16\x03\x01\xff");
            assert_eq!(parse(&more, path), res, "trailing bytes changed the answer");
        }
        match action {
            Action::Error(s) => {
                for head_only in [false, true] {
                    let mut out = Vec::new();
                    write_error(&mut out, s, head_only);
                    let body_len = {
                        let mut full = Vec::new();
                        write_error(&mut full, s, false);
                        let t = std::str::from_utf8(&full).expect("UTF-8");
                        t.split_once("\r\n\r\n").expect("head").1.len()
                    };
                    check_response(&out, body_len, head_only);
                    assert!(out.starts_with(format!("HTTP/1.1 {}\r\n", s.line()).as_bytes()));
                }
            }
            Action::Metrics { fmt, head, .. } => {
                let body = b"x 1\n";
                let mut out = Vec::new();
                write_response(&mut out, Status::Ok, fmt.content_type(), "", body, head);
                check_response(&out, body.len(), head);
            }
            Action::Probe { probe, head } => {
                let body = b"ready\n";
                let mut out = Vec::new();
                write_response(&mut out, Status::Ok, "text/plain", "", body, head);
                check_response(&out, body.len(), head);
                assert!(buf.windows(probe.path().len()).any(|w| w == probe.path().as_bytes()));
            }
            Action::Index { head } => {
                let page = index_page(path);
                let mut out = Vec::new();
                write_response(&mut out, Status::Ok, "text/html", "", page.as_bytes(), head);
                check_response(&out, page.len(), head);
            }
        }
    }

    // The rest of the input as a configured path.
    if let Ok(p) = std::str::from_utf8(buf) {
        if validate_path(p).is_ok() {
            // Reachable: a plain GET (with and without a query) routes to it.
            for target in [p.to_owned(), format!("{p}?x=1")] {
                let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
                assert_eq!(
                    parse(req.as_bytes(), p),
                    Parsed::Done(Action::Metrics {
                        fmt: Format::Text,
                        head: false,
                gzip: false
                    }),
                    "validate_path accepts {p:?} but GET {target:?} does not reach it"
                );
            }
            // The index page escapes it: no markup comes from the path.
            let page = index_page(p);
            let empty = index_page("");
            for c in ['"', '<', '>'] {
                assert_eq!(
                    page.matches(c).count(),
                    empty.matches(c).count(),
                    "unescaped {c:?} from path {p:?}"
                );
            }
        }
    }
});
