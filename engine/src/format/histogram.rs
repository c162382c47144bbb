//! Histogram families computed by the host: layout (built once, every line prefix
//! preformatted) and rendering (per scrape, no allocation).
//!
//! The host passes, per histogram and per series, the non-cumulative bucket counts and the
//! sum (see [`Layout::render_all`]); the engine accumulates the counts, leaves out series
//! that saw no observation and families left without series, and attaches exemplars in
//! OpenMetrics.

use std::collections::HashSet;

use super::protobuf::HistPb;
use super::{
    push_head, push_scaled, Exemplar, Format, Histogram, Layout, Options, SkipReason, Skipped, Span,
};

/// Longest `u64 / 10^6`: `18446744073719.551615`.
const MAX_U64_LEN: usize = 21;

/// Longest exemplar suffix: ` # {trace_id="…"} <value> <timestamp>`.
const MAX_EXEMPLAR_LEN: usize = " # {trace_id=\"".len() + 32 + "\"} ".len() + MAX_U64_LEN + 1 + 22;

/// One laid-out histogram family.
#[derive(Clone, Debug)]
pub(super) struct HistFamily {
    /// With `Options::types`: one group, `[text, OpenMetrics]` head.
    /// Without: three groups (`_bucket`, `_sum`, `_count` samples, each a family of its own
    /// for the parsers), each with its `[text, OpenMetrics]` head (HELP or nothing).
    heads: [[Span; 2]; 3],
    /// Buckets per series, `+Inf` included.
    pub(super) buckets: usize,
    /// Range of `Layout::hist_series`.
    pub(super) first: usize,
    pub(super) end: usize,
    /// The protobuf layout.
    pub(super) pb: HistPb,
}

/// One series of a histogram family.
#[derive(Clone, Debug)]
pub(super) struct HistSeries {
    /// Index of its first slot in the `hist` values.
    pub(super) slot: usize,
    /// Index in `Layout::hist_spans` of its `buckets` bucket-line prefixes
    /// (`name_bucket{labels,le="b"} `), then `name_sum{labels} `, then `name_count{labels} `.
    spans: usize,
    /// Protobuf label pairs (in `Layout::pb`).
    pub(super) pb_labels: Span,
    /// Width of the `Metric` length slot.
    pub(super) pb_w_metric: usize,
    /// Largest protobuf `Metric` of the series, tag and length included.
    pub(super) pb_max: usize,
}

/// The histogram part of a [`Layout`].
#[derive(Clone, Debug, Default)]
pub(super) struct Hists {
    pub(super) families: Vec<HistFamily>,
    pub(super) series: Vec<HistSeries>,
    spans: Vec<Span>,
    /// Whether families are typed (one group per family) or not (three groups).
    typed: bool,
    /// Total `hist` slots expected.
    pub(super) slots: usize,
    /// Sample lines per scrape when every series is present and non-empty.
    pub(super) lines: usize,
}

impl Hists {
    /// Gives back the spare capacity of the construction.
    pub(super) fn shrink(&mut self) {
        self.families.shrink_to_fit();
        self.series.shrink_to_fit();
        self.spans.shrink_to_fit();
    }
}

/// Appends `name{labels,extra} ` (`extra` a preformatted `k="v"` or empty).
fn push_prefix(name: &str, labels: &[(String, String)], extra: &str, out: &mut String) {
    out.push_str(name);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        super::push_label_pairs(labels, out);
        if !extra.is_empty() {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str(extra);
        }
        out.push('}');
    }
    out.push(' ');
}

impl Layout {
    /// Lays out `histograms` after the other families: collision checks against `owned`,
    /// option filters, preformatted heads and line prefixes. `index` is the index the first
    /// histogram gets in [`Layout::skipped`].
    pub(super) fn add_histograms(
        &mut self,
        histograms: &[Histogram],
        prefix: &str,
        owned: &mut HashSet<String>,
        index: usize,
        constant: &[(String, String)],
        opts: &Options,
    ) {
        let h = &mut self.hists;
        h.typed = opts.types;
        let mut text = String::new();
        let base = self.bytes.len();
        let span = |text: &String, start: usize| Span {
            start: base + start,
            end: base + text.len(),
        };
        let mut slot = 0;
        for (i, hist) in histograms.iter().enumerate() {
            let first_slot = slot;
            slot += hist.series.len() * hist.slots_per_series();
            let mut name = String::with_capacity(prefix.len() + hist.family.len() + 1);
            name.push_str(prefix);
            name.push_str(hist.family);
            if name.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                name.insert(0, '_');
            }
            let names = ["", "_bucket", "_sum", "_count", "_created"].map(|s| name.clone() + s);
            if let Some(n) = names.iter().find(|n| owned.contains(*n)) {
                self.skipped.push(Skipped {
                    index: index + i,
                    name: hist.family.to_owned(),
                    reason: SkipReason::NameClash { name: n.clone() },
                });
                continue;
            }
            owned.extend(names);

            let mut heads = [[Span { start: 0, end: 0 }; 2]; 3];
            if opts.types {
                for (k, om) in [false, true].into_iter().enumerate() {
                    let start = text.len();
                    push_head(&mut text, &name, hist.help, "histogram", om, opts);
                    heads[0][k] = span(&text, start);
                }
            } else {
                for (part, suffix) in ["_bucket", "_sum", "_count"].into_iter().enumerate() {
                    let sample = name.clone() + suffix;
                    for (k, om) in [false, true].into_iter().enumerate() {
                        let start = text.len();
                        push_head(&mut text, &sample, hist.help, "", om, opts);
                        heads[part][k] = span(&text, start);
                    }
                }
            }
            let groups = if opts.types { 1 } else { 3 };
            let head_len =
                |k: usize| -> usize { heads[..groups].iter().map(|h| h[k].end - h[k].start).sum() };
            self.text_size += head_len(0);
            self.om_size += head_len(1);

            let les: Vec<String> = hist
                .bounds_us
                .iter()
                .map(|&b| {
                    let mut v = Vec::new();
                    push_scaled(&mut v, false, b, 6);
                    format!("le=\"{}\"", String::from_utf8_lossy(&v))
                })
                .chain(["le=\"+Inf\"".to_owned()])
                .collect();
            let (bucket, sum, count) = (
                name.clone() + "_bucket",
                name.clone() + "_sum",
                name.clone() + "_count",
            );
            let mut pb = HistPb::new(
                &mut self.pb,
                &name,
                hist.help,
                &hist.bounds_us,
                hist.native.as_ref(),
                opts,
            );
            let first = h.series.len();
            let mut seen: HashSet<Vec<&(String, String)>> = HashSet::new();
            for (j, labels) in hist.series.iter().enumerate() {
                let has = |l: &str| labels.iter().any(|(k, _)| k == l);
                if (!opts.workers && has("worker"))
                    || (!opts.cores && has("core"))
                    || has("le")
                    || super::labels::clash(labels, constant).is_some()
                {
                    continue;
                }
                let mut canon: Vec<&(String, String)> = labels.iter().collect();
                canon.sort();
                if !seen.insert(canon) {
                    continue;
                }
                let labels = &super::labels::with_constant(labels, constant);
                let spans = h.spans.len();
                let mut size = 0;
                for le in &les {
                    let start = text.len();
                    push_prefix(&bucket, labels, le, &mut text);
                    h.spans.push(span(&text, start));
                    size += text.len() - start + MAX_U64_LEN + 1;
                }
                for n in [&sum, &count] {
                    let start = text.len();
                    push_prefix(n, labels, "", &mut text);
                    h.spans.push(span(&text, start));
                    size += text.len() - start + MAX_U64_LEN + 1;
                }
                self.text_size += size;
                self.om_size += size + les.len() * MAX_EXEMPLAR_LEN;
                h.lines += les.len() + 2;
                let (pb_labels, pb_w_metric, pb_max) = pb.push_series(&mut self.pb, labels);
                h.series.push(HistSeries {
                    slot: first_slot + j * hist.slots_per_series(),
                    spans,
                    pb_labels,
                    pb_w_metric,
                    pb_max,
                });
            }
            self.pb_size += pb.max_size();
            h.families.push(HistFamily {
                heads,
                buckets: les.len(),
                first,
                end: h.series.len(),
                pb,
            });
        }
        h.slots = slot;
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// Appends the histogram families (see [`Layout::render_all`]).
    pub(super) fn render_histograms(
        &self,
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        fmt: Format,
        out: &mut Vec<u8>,
    ) {
        let h = &self.hists;
        let om = fmt == Format::OpenMetrics;
        let bytes = self.bytes.as_slice();
        let line = |out: &mut Vec<u8>, s: Span| out.extend_from_slice(&bytes[s.start..s.end]);
        let mut itoa = itoa::Buffer::new();
        for fam in &h.families {
            let nb = fam.buckets;
            let series = &h.series[fam.first..fam.end];
            for part in 0..if h.typed { 1 } else { 3 } {
                let mark = out.len();
                line(out, fam.heads[part][usize::from(om)]);
                let mut any = false;
                for s in series {
                    let Some(slots) = hist.get(s.slot..s.slot.saturating_add(nb + 1)) else {
                        continue;
                    };
                    let (counts, sum) = (&slots[..nb], slots[nb]);
                    let total = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
                    if total == 0 {
                        continue;
                    }
                    any = true;
                    let spans = &h.spans[s.spans..s.spans + nb + 2];
                    if !h.typed && part > 0 {
                        // Only the `_sum` (1) or `_count` (2) line.
                        line(out, spans[nb + part - 1]);
                        if part == 1 {
                            push_scaled(out, false, sum, 6);
                        } else {
                            out.extend_from_slice(itoa.format(total).as_bytes());
                        }
                        out.push(b'\n');
                        continue;
                    }
                    let mut cum = 0u64;
                    for (b, &c) in counts.iter().enumerate() {
                        cum = cum.saturating_add(c);
                        line(out, spans[b]);
                        out.extend_from_slice(itoa.format(cum).as_bytes());
                        if om && h.typed {
                            if let Some(Some(e)) = exemplars.get(s.slot + b) {
                                push_exemplar(out, e);
                            }
                        }
                        out.push(b'\n');
                    }
                    if h.typed {
                        line(out, spans[nb]);
                        push_scaled(out, false, sum, 6);
                        out.push(b'\n');
                        line(out, spans[nb + 1]);
                        out.extend_from_slice(itoa.format(total).as_bytes());
                        out.push(b'\n');
                    }
                }
                if !any {
                    out.truncate(mark);
                }
            }
        }
    }
}

/// Whether a trace id is 32 lowercase hex digits.
pub(super) fn valid_trace_id(id: &[u8; 32]) -> bool {
    // Branch-free (no early exit): measured cheaper than `all` here.
    let bad = id.iter().fold(0u8, |acc, &b| {
        acc | (u8::from(b.wrapping_sub(b'0') >= 10) & u8::from(b.wrapping_sub(b'a') >= 6))
    });
    bad == 0
}

/// Appends ` # {trace_id="…"} <value> <timestamp>`, or nothing if the trace id is not 32
/// lowercase hex digits.
fn push_exemplar(out: &mut Vec<u8>, e: &Exemplar) {
    if !valid_trace_id(&e.trace_id) {
        return;
    }
    out.extend_from_slice(b" # {trace_id=\"");
    out.extend_from_slice(&e.trace_id);
    out.extend_from_slice(b"\"} ");
    push_scaled(out, false, e.value_us, 6);
    out.push(b' ');
    push_scaled(out, e.timestamp_us < 0, e.timestamp_us.unsigned_abs(), 6);
}
