//! `Accept` header negotiation between the output formats.
//!
//! Each format gets the q-value of the *most specific* media range that
//! matches it (RFC 9110 §12.5.1):
//!
//! | specificity | OpenMetrics matches | text matches |
//! |---|---|---|
//! | 3 | `application/openmetrics-text; version=1.0.0` or `0.0.1` | `text/plain; version=0.0.4` or `1.0.0` |
//! | 2 | `application/openmetrics-text` (no version) | `text/plain` (no version) |
//! | 1 | `application/*` | `text/*` |
//! | 0 | `*/*` | `*/*` |
//!
//! A range with another `version` does not match (we cannot produce it).
//! Other parameters (`escaping=...`, `charset=...`) are ignored: the output
//! uses only legacy names, valid under any escaping scheme. Among ranges of
//! equal specificity the highest q wins. A range with a malformed q is
//! ignored. Type names, parameter names and versions compare
//! case-insensitively.
//!
//! Protobuf (`application/vnd.google.protobuf`) matches only a range that names it
//! exactly: `proto=io.prometheus.client.MetricFamily` and `encoding=delimited` (the
//! values compare case-insensitively), as client_golang's `expfmt.Negotiate` requires. A
//! range without them, with another encoding (`text`, `compact-text`) or a wildcard
//! (`application/*`, `*/*`) never picks protobuf: a binary body goes only to a client that
//! asked for it by name. Prometheus sends it first when it scrapes native histograms:
//!
//! * 2.40–2.x with `--enable-feature=native-histograms`:
//!   `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,...`;
//! * 3.x with `scrape_native_histograms: true`:
//!   `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,...`.
//!
//! OpenMetrics is chosen only when its q is greater than the text format's and
//! greater than 0; protobuf only when its q is greater than 0 and than both the
//! others'; everything else (no header, an empty or unparsable one, `*/*`, a tie)
//! gives the text format. Ties between OpenMetrics and protobuf go to OpenMetrics.
//! A format the caller does not offer ([`Offer`]) is never chosen.

use super::Format;
use crate::header::{self, parse_q};

/// The formats negotiation may choose besides the text format, which is always offered
/// (it is the answer when nothing else is acceptable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Offer {
    /// OpenMetrics 1.0.0 may be chosen.
    pub openmetrics: bool,
    /// Prometheus' protobuf format may be chosen.
    pub protobuf: bool,
}

impl Offer {
    /// Every format.
    pub const ALL: Offer = Offer {
        openmetrics: true,
        protobuf: true,
    };
    /// The text format only.
    pub const TEXT: Offer = Offer {
        openmetrics: false,
        protobuf: false,
    };
}

#[derive(Clone, Copy)]
struct Best {
    specificity: i8,
    q: u16,
}

impl Best {
    const NONE: Best = Best {
        specificity: -1,
        q: 0,
    };

    fn offer(&mut self, specificity: i8, q: u16) {
        if specificity > self.specificity || (specificity == self.specificity && q > self.q) {
            *self = Best { specificity, q };
        }
    }
}

/// Specificity with which the range `ty/sub; version=...` matches the media
/// type `want_ty/want_sub` supporting `versions`, or `None`.
fn specificity(
    ty: &[u8],
    sub: &[u8],
    version: Option<&[u8]>,
    want_ty: &[u8],
    want_sub: &[u8],
    versions: &[&[u8]],
) -> Option<i8> {
    if ty == b"*" {
        return (sub == b"*").then_some(0);
    }
    if !ty.eq_ignore_ascii_case(want_ty) {
        return None;
    }
    if sub == b"*" {
        return Some(1);
    }
    if !sub.eq_ignore_ascii_case(want_sub) {
        return None;
    }
    match version {
        None => Some(2),
        Some(v) if versions.iter().any(|w| w.eq_ignore_ascii_case(v)) => Some(3),
        Some(_) => None,
    }
}

pub(crate) fn negotiate(accept: Option<&[u8]>, offer: Offer) -> Format {
    let Some(list) = accept else {
        return Format::Text;
    };
    let mut om = Best::NONE;
    let mut text = Best::NONE;
    // Highest q of an exact protobuf range.
    let mut pb: Option<u16> = None;
    'ranges: for (media, params) in header::elements(list) {
        let Some(slash) = media.iter().position(|&b| b == b'/') else {
            continue;
        };
        let (ty, sub) = (
            header::trim(&media[..slash]),
            header::trim(&media[slash + 1..]),
        );
        if ty.is_empty() || sub.is_empty() {
            continue;
        }
        let mut q = 1000;
        let mut version = None;
        let (mut proto, mut encoding) = (None, None);
        for param in params {
            let Some((key, value)) = header::parameter(param) else {
                continue;
            };
            if key.eq_ignore_ascii_case(b"q") {
                match parse_q(value) {
                    Some(v) => q = v,
                    None => continue 'ranges,
                }
            } else if key.eq_ignore_ascii_case(b"version") {
                version = Some(value);
            } else if key.eq_ignore_ascii_case(b"proto") {
                proto = Some(value);
            } else if key.eq_ignore_ascii_case(b"encoding") {
                encoding = Some(value);
            }
        }
        if ty.eq_ignore_ascii_case(b"application")
            && sub.eq_ignore_ascii_case(b"vnd.google.protobuf")
            && proto.is_some_and(|p| p.eq_ignore_ascii_case(b"io.prometheus.client.MetricFamily"))
            && encoding.is_some_and(|e| e.eq_ignore_ascii_case(b"delimited"))
        {
            pb = Some(pb.map_or(q, |p| p.max(q)));
        }
        let om_versions: &[&[u8]] = &[b"1.0.0", b"0.0.1"];
        let text_versions: &[&[u8]] = &[b"0.0.4", b"1.0.0"];
        if let Some(s) = specificity(
            ty,
            sub,
            version,
            b"application",
            b"openmetrics-text",
            om_versions,
        ) {
            om.offer(s, q);
        }
        if let Some(s) = specificity(ty, sub, version, b"text", b"plain", text_versions) {
            text.offer(s, q);
        }
    }
    let om_q = if offer.openmetrics { om.q } else { 0 };
    let pb_q = pb.filter(|_| offer.protobuf).unwrap_or(0);
    if pb_q > 0 && pb_q > text.q && pb_q > om_q {
        Format::Protobuf
    } else if om_q > 0 && om_q > text.q {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Format::{OpenMetrics as OM, Protobuf as Pb, Text};

    fn assert_cases(cases: &[(&str, Format)], offer: Offer) {
        for &(h, want) in cases {
            assert_eq!(negotiate(Some(h.as_bytes()), offer), want, "Accept: {h}");
        }
    }

    #[test]
    fn headers() {
        let cases: &[(&str, Format)] = &[
            // Prometheus 2.x
            ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OM),
            // Prometheus 3.x defaults
            ("application/openmetrics-text;version=1.0.0;escaping=allow-utf8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", OM),
            ("application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", OM),
            // Prometheus 3.x with scrape_protocols: [PrometheusText0.0.4]
            ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Text),
            // text preferred over OpenMetrics
            ("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5", Text),
            ("application/openmetrics-text; version=1.0.0", OM),
            ("application/openmetrics-text", OM),
            ("APPLICATION/OpenMetrics-Text; Version=\"1.0.0\"; Q=0.9", OM),
            ("application/openmetrics-text;version=2.0.0", Text),
            ("application/openmetrics-text;version=2.0.0,application/*;q=0.2", OM),
            ("application/openmetrics-text;q=0", Text),
            ("application/openmetrics-text;q=0.5,text/plain;q=0.5", Text),
            ("application/openmetrics-text;q=0.5,text/plain;q=0.4", OM),
            ("application/openmetrics-text;q=bogus", Text),
            ("application/*;q=0.9,text/plain;q=0.5", OM),
            ("application/openmetrics-text;q=0.1,application/*;q=0.9,text/plain;q=0.5", Text),
            ("text/*;q=0.2,application/openmetrics-text;q=0.1", Text),
            ("*/*", Text),
            ("*/*;q=0.8,application/openmetrics-text;q=0.9", OM),
            ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", Text),
            ("application/json", Text),
            ("", Text),
            (" , ,;;, ", Text),
            ("garbage", Text),
            ("/", Text),
            ("*/openmetrics-text", Text),
            ("application/openmetrics-text;version", OM),
            ("application/openmetrics-text;;q=0.3;", OM),
        ];
        assert_cases(cases, Offer::ALL);
        let no_pb = Offer {
            protobuf: false,
            ..Offer::ALL
        };
        assert_cases(cases, no_pb);
        assert_eq!(negotiate(None, Offer::ALL), Text);
        assert_eq!(negotiate(Some(b"\xff\xfe/\x00;q=\xff"), Offer::ALL), Text);
    }

    /// The default `Accept` headers of scrapers other than Prometheus itself, each as its source
    /// builds it. Never 406: whatever cannot be matched gets the text format.
    #[test]
    fn agents() {
        let cases: &[(&str, Format)] = &[
            // Prometheus 2.49-2.55 default scrape_protocols through scrape/scrape.go
            // acceptHeader() (weights from 5: four known protocols + 1); the OpenTelemetry
            // Collector's prometheus receiver and Grafana Agent / Alloy prometheus.scrape use
            // that function of the Prometheus module they embed.
            ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", OM),
            // Prometheus 3.x defaults: five known protocols, escaping on the 1.0.0 formats
            // (model.EscapingKey, "allow-utf-8").
            ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", OM),
            // VictoriaMetrics vmagent, lib/promscrape/client.go ("copied from Prometheus
            // sources"; no OpenMetrics on purpose).
            ("text/plain;version=0.0.4;q=1,*/*;q=0.1", Text),
            // Telegraf inputs.prometheus, plugins/inputs/prometheus/prometheus.go acceptHeader.
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1", Pb),
            // Datadog Agent OpenMetrics V2 (datadog_checks_base openmetrics/v2/scraper.py):
            // `text/plain` by default, this with `use_latest_spec`.
            ("text/plain", Text),
            ("application/openmetrics-text; version=0.0.1; charset=utf-8", OM),
            // curl and friends.
            ("*/*", Text),
            // q=0 everywhere: nothing acceptable, still the text format (never 406).
            ("text/plain;q=0,application/openmetrics-text;q=0,*/*;q=0", Text),
            ("application/openmetrics-text;q=0,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0", Text),
            ("image/png", Text),
        ];
        assert_cases(cases, Offer::ALL);
    }

    const PB: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

    #[test]
    fn protobuf() {
        let cases: &[(&str, Format)] = &[
            // Prometheus 2.42 with --enable-feature=native-histograms (seen on the wire).
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Pb),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", Pb),
            // Prometheus 3.x with scrape_native_histograms: true.
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1", Pb),
            // Prometheus 3.x with scrape_protocols: [PrometheusProto].
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.2,*/*;q=0.1", Pb),
            // Spacing, quoting and case.
            ("Application/Vnd.Google.Protobuf ; Proto=\"IO.prometheus.client.MetricFamily\" ; ENCODING=Delimited", Pb),
            (PB, Pb),
            // Not the delimited MetricFamily stream.
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text", Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.Metric;encoding=delimited", Text),
            ("application/vnd.google.protobuf;encoding=delimited", Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily", Text),
            ("application/vnd.google.protobuf", Text),
            ("application/*", OM),
            // q-values.
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0", Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,text/plain;q=0.5", Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;q=0.5", OM),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;q=0.6", OM),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,*/*", Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,*/*;q=0.4", Pb),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.1,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.9,text/plain;q=0.5", Pb),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=bogus", Text),
        ];
        assert_cases(cases, Offer::ALL);
    }

    #[test]
    fn offers() {
        let prom3 = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        let h = Some(prom3.as_bytes());
        let offer = |openmetrics, protobuf| Offer {
            openmetrics,
            protobuf,
        };
        assert_eq!(negotiate(h, offer(true, true)), Pb);
        assert_eq!(negotiate(h, offer(true, false)), OM);
        assert_eq!(negotiate(h, offer(false, true)), Pb);
        assert_eq!(negotiate(h, offer(false, false)), Text);
        assert_eq!(negotiate(h, Offer::TEXT), Text);
        let om_only = Some(&b"application/openmetrics-text"[..]);
        assert_eq!(negotiate(om_only, offer(false, true)), Text);
        let pb_only = Some(PB.as_bytes());
        assert_eq!(negotiate(pb_only, offer(true, false)), Text);
    }
}
