//! Rendering a [`Layout`] on every scrape: copies of its preformatted bytes and the values,
//! formatted exactly (`value.rs`), in the text format 0.0.4, OpenMetrics or protobuf; the
//! histogram families follow (`histogram.rs`).

use super::protobuf::put_varint;
use super::value::{exact_f64, push_value};
use super::{Exemplar, Format, Layout, Span};

#[cfg(doc)]
use super::{Histogram, NativeSpec};

impl Layout {
    /// Appends the exposition of `values` to `out` (the caller clears it).
    ///
    /// `values[i]` is the current value of the `i`-th metric given to
    /// [`Layout::new`]. If `values` is shorter than that list, series without
    /// a value are left out (and families left without series, entirely);
    /// extra values are ignored. Never panics.
    pub fn render(&self, values: &[i64], fmt: Format, out: &mut Vec<u8>) {
        self.render_all(values, &[], &[], fmt, out);
    }

    /// [`Layout::render`] plus the histogram families.
    ///
    /// `hist` holds, for each histogram in the order given to [`Layout::with_histograms`],
    /// for each of its series in order: the *non-cumulative* count of each bucket (bounds
    /// order, then `+Inf`), then the sum of the observed values in microseconds
    /// ([`Histogram::slots_per_series`] slots). A series whose slots are missing (`hist` too
    /// short) or whose total count is 0 is left out, and so is a family left without series
    /// (HELP and TYPE included). Cumulative counts saturate at `u64::MAX`.
    ///
    /// `exemplars` is empty (no exemplars) or parallel to `hist` (entries at sum positions
    /// are ignored, and so is a trace id that is not 32 lowercase hex digits): `Some`
    /// attaches an exemplar to that bucket's line in OpenMetrics, to that bucket in protobuf
    /// (the text format 0.0.4 has none). The host guarantees the exemplar value lies within
    /// its bucket. Never panics, whatever the lengths of `values`, `hist` and `exemplars`.
    ///
    /// With [`Histogram::native`], each series' slots go on with the zero bucket's count and
    /// the non-cumulative counts of the native buckets `first_index ..= first_index +
    /// buckets - 1` (see [`NativeSpec`]); the text formats ignore them, and `exemplars` at
    /// those positions are ignored too. A series is left out when its classic counts are all
    /// 0, whatever its native ones (the host counts every observation in both).
    ///
    /// [`Format::Protobuf`] renders the same families, series and values (`protobuf/`), and
    /// the native buckets: schema, zero threshold and count, spans and deltas, and the
    /// exemplars of the classic buckets again as native exemplars. If `hist` ends within a
    /// series' native slots, that series is rendered as a classic histogram.
    pub fn render_all(
        &self,
        values: &[i64],
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        fmt: Format,
        out: &mut Vec<u8>,
    ) {
        if fmt == Format::Protobuf {
            out.reserve(self.pb_size);
            self.render_protobuf(values, out);
            self.hists.render_protobuf(hist, exemplars, out);
            return;
        }
        let om = fmt == Format::OpenMetrics;
        out.reserve(if om { self.om_size } else { self.text_size });
        let bytes = self.bytes.as_slice();
        for fam in &self.families {
            let series = &self.series[fam.first..fam.end];
            if fam.max_index >= values.len() && !series.iter().any(|s| s.index < values.len()) {
                continue;
            }
            let head = if om { fam.om_head } else { fam.text_head };
            out.extend_from_slice(&bytes[head.start..head.end]);
            for s in series {
                let Some(&v) = values.get(s.index) else {
                    continue;
                };
                out.extend_from_slice(&bytes[s.prefix.start..s.prefix.end]);
                let v = if s.clamp && v < 0 { 0 } else { v };
                // Most series are idle cores' zeros: no formatting for them.
                if v == 0 {
                    out.extend_from_slice(b"0\n");
                } else {
                    push_value(out, v, s.scale);
                    out.push(b'\n');
                }
            }
        }
        self.hists.render_text(hist, exemplars, om, out);
        if om {
            out.extend_from_slice(b"# EOF\n");
        }
    }

    /// The counter and gauge families in the protobuf format.
    fn render_protobuf(&self, values: &[i64], out: &mut Vec<u8>) {
        let pb = self.pb.as_slice();
        let bytes = |s: Span| &pb[s.start..s.end];
        for fam in &self.families {
            let series = &self.series[fam.first..fam.end];
            let len = if fam.max_index < values.len() {
                fam.pb_len
            } else {
                let present = series
                    .iter()
                    .filter(|s| s.index < values.len())
                    .map(|s| s.pb_prefix.len() + 8);
                let mut n = 0;
                let mut any = false;
                for p in present {
                    n += p;
                    any = true;
                }
                if !any {
                    continue;
                }
                n + fam.pb_head.len() + fam.pb_unit.len()
            };
            put_varint(out, len as u64);
            out.extend_from_slice(bytes(fam.pb_head));
            for s in series {
                let Some(&v) = values.get(s.index) else {
                    continue;
                };
                let v = if s.clamp && v < 0 { 0 } else { v };
                out.extend_from_slice(bytes(s.pb_prefix));
                out.extend_from_slice(&exact_f64(v < 0, v.unsigned_abs(), s.scale).to_le_bytes());
            }
            out.extend_from_slice(bytes(fam.pb_unit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MetricType, Options};
    use super::*;

    fn render(
        metrics: &[(&str, MetricType)],
        values: &[i64],
        opts: &Options,
        fmt: Format,
    ) -> String {
        let mut out = Vec::new();
        Layout::new(metrics, opts).render(values, fmt, &mut out);
        String::from_utf8(out).expect("UTF-8 output")
    }

    #[test]
    fn short_and_long_values() {
        let m = [
            ("a", MetricType::Gauge),
            ("q.1", MetricType::Gauge),
            ("q.2", MetricType::Gauge),
        ];
        let o = Options {
            help: false,
            ..Options::default()
        };
        assert_eq!(render(&m, &[], &o, Format::Text), "");
        assert_eq!(render(&m, &[], &o, Format::OpenMetrics), "# EOF\n");
        assert_eq!(
            render(&m, &[1, 2], &o, Format::Text),
            "# TYPE uwsgi_a gauge\nuwsgi_a 1\n# TYPE uwsgi_q gauge\nuwsgi_q{q=\"1\"} 2\n"
        );
        assert_eq!(
            render(&m, &[1, 2, 3, 4], &o, Format::Text),
            "# TYPE uwsgi_a gauge\nuwsgi_a 1\n# TYPE uwsgi_q gauge\nuwsgi_q{q=\"1\"} 2\nuwsgi_q{q=\"2\"} 3\n"
        );
    }

    #[test]
    fn negative_counters_render_as_zero() {
        let m = [("c", MetricType::Counter), ("g", MetricType::Gauge)];
        let o = Options {
            help: false,
            ..Options::default()
        };
        assert_eq!(
            render(&m, &[-5, -5], &o, Format::OpenMetrics),
            "# TYPE uwsgi_c counter\nuwsgi_c_total 0\n# TYPE uwsgi_g gauge\nuwsgi_g -5\n# EOF\n"
        );
    }
}
