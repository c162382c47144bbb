//! Histogram families computed by the host: layout (built once, every line prefix
//! preformatted) and rendering (per scrape, no allocation) in every format.
//!
//! The host passes, per histogram and per series, the non-cumulative bucket counts and the
//! sum (see [`Layout::render_all`]); the engine accumulates the counts, leaves out series
//! that saw no observation and families left without series, and attaches exemplars in
//! OpenMetrics and protobuf. The protobuf bytes come from `protobuf/` ([`HistPb`]), which
//! knows nothing of this layout: this file picks each series' values out of `hist` once
//! ([`HistFamily::present`]) for both renderers.

use std::collections::HashSet;

use super::lines::{push_head, push_prefix, unit_of};
use super::protobuf::{HistPb, HistSample, SeriesPb};
use super::value::push_scaled;
use super::{labels, Exemplar, Histogram, Options, Prefix, SkipReason, Skipped, Span};

#[cfg(doc)]
use super::Layout;

/// Longest `u64 / 10^6`: `18446744073719.551615`.
const MAX_U64_LEN: usize = 21;

/// Longest exemplar suffix: ` # {trace_id="…"} <value> <timestamp>`.
const MAX_EXEMPLAR_LEN: usize = " # {trace_id=\"".len() + 32 + "\"} ".len() + MAX_U64_LEN + 1 + 22;

/// One laid-out histogram family.
#[derive(Clone, Debug)]
struct HistFamily {
    /// With `Options::types`: one group, `[text, OpenMetrics]` head.
    /// Without: three groups (`_bucket`, `_sum`, `_count` samples, each a family of its own
    /// for the parsers), each with its `[text, OpenMetrics]` head (HELP or nothing).
    heads: [[Span; 2]; 3],
    /// Buckets per series, `+Inf` included.
    buckets: usize,
    /// Range of `Hists::series`.
    first: usize,
    end: usize,
    /// The protobuf layout.
    pb: HistPb,
}

/// One series of a histogram family.
#[derive(Clone, Debug)]
struct HistSeries {
    /// Index of its first slot in the `hist` values.
    slot: usize,
    /// Index in `Hists::spans` of its `buckets` bucket-line prefixes
    /// (`name_bucket{labels,le="b"} `), then `name_sum{labels} `, then `name_count{labels} `.
    spans: usize,
    /// The protobuf layout.
    pb: SeriesPb,
}

/// One series' values: the non-cumulative bucket counts (`+Inf` included), the sum, and the
/// slots after them (the native ones, if any).
struct Slots<'a> {
    counts: &'a [u64],
    sum: u64,
    rest: &'a [u64],
}

impl HistFamily {
    /// The family's series whose classic slots are all in `hist`, with their values: the
    /// per-series slicing of every renderer.
    #[inline]
    fn present<'a>(
        &self,
        series: &'a [HistSeries],
        hist: &'a [u64],
    ) -> impl Iterator<Item = (&'a HistSeries, Slots<'a>)> {
        let nb = self.buckets;
        series[self.first..self.end].iter().filter_map(move |s| {
            let end = s.slot.saturating_add(nb + 1);
            let slots = hist.get(s.slot..end)?;
            let values = Slots {
                counts: &slots[..nb],
                sum: slots[nb],
                rest: &hist[end..],
            };
            Some((s, values))
        })
    }
}

/// The histogram part of a [`Layout`]: its own text and protobuf bytes, and its share of
/// the rendering's size.
#[derive(Clone, Debug, Default)]
pub(super) struct Hists {
    families: Vec<HistFamily>,
    series: Vec<HistSeries>,
    spans: Vec<Span>,
    /// Heads and line prefixes (`spans` and the heads index it).
    text: Vec<u8>,
    /// Protobuf heads, units and label pairs.
    pb: Vec<u8>,
    /// Whether families are typed (one group per family) or not (three groups).
    typed: bool,
    /// Per histogram given to [`Hists::new`], whether it was laid out (not filtered out nor
    /// clashing with an earlier family's names).
    kept: Vec<bool>,
    /// Total `hist` slots expected.
    pub(super) slots: usize,
    /// Sample lines per scrape when every series is present and non-empty.
    pub(super) lines: usize,
    /// Upper bounds of a rendering in the text format, OpenMetrics (without `# EOF`) and
    /// protobuf.
    pub(super) text_size: usize,
    pub(super) om_size: usize,
    pub(super) pb_size: usize,
}

/// What the families laid out before the histograms leave them: the names they own, and per
/// pattern of [`Options::families`] whether it matched one of them (the histograms mark it
/// too).
pub(super) struct NamesTaken<'a> {
    pub(super) owned: &'a mut HashSet<String>,
    pub(super) matched: &'a mut [bool],
}

/// The names of a histogram family's samples.
struct Names {
    bucket: String,
    sum: String,
    count: String,
}

impl Hists {
    /// Lays out `histograms`: the name filter ([`Options::families`], marking in
    /// `names.matched` the patterns that match), collision checks against `names.owned` (the
    /// skipped ones are
    /// appended to `skipped`, the first with index `index`), option filters, preformatted
    /// heads and line prefixes.
    pub(super) fn new(
        histograms: &[Histogram],
        prefix: &Prefix,
        names: NamesTaken<'_>,
        index: usize,
        skipped: &mut Vec<Skipped>,
        constant: &[(String, String)],
        opts: &Options,
    ) -> Hists {
        let NamesTaken { owned, matched } = names;
        let mut h = Hists {
            typed: opts.types,
            ..Hists::default()
        };
        let mut slot = 0;
        for (i, hist) in histograms.iter().enumerate() {
            let first_slot = slot;
            slot += hist.series.len() * hist.slots_per_series();
            let name = prefix.family(hist.family);
            h.kept.push(false);
            if !opts.families.admit(&name, None, matched) {
                skipped.push(Skipped {
                    index: index + i,
                    name: hist.family.to_owned(),
                    reason: SkipReason::Filtered { family: name },
                });
                continue;
            }
            if let Err(reason) = claim(&name, owned) {
                skipped.push(Skipped {
                    index: index + i,
                    name: hist.family.to_owned(),
                    reason,
                });
                continue;
            }
            h.add_family(hist, &name, first_slot, constant, opts);
            h.kept[i] = true;
        }
        h.slots = slot;
        h
    }

    /// Whether the `i`-th histogram given to [`Hists::new`] was laid out.
    pub(super) fn kept(&self, i: usize) -> bool {
        self.kept.get(i).copied().unwrap_or(false)
    }

    /// Gives back the spare capacity of the construction.
    pub(super) fn shrink(&mut self) {
        self.families.shrink_to_fit();
        self.series.shrink_to_fit();
        self.kept.shrink_to_fit();
        self.spans.shrink_to_fit();
        self.text.shrink_to_fit();
        self.pb.shrink_to_fit();
    }

    /// Number of families laid out.
    pub(super) fn families(&self) -> usize {
        self.families.len()
    }

    /// Lays out one family (its names already claimed) whose first slot is `first_slot`.
    fn add_family(
        &mut self,
        hist: &Histogram,
        name: &str,
        first_slot: usize,
        constant: &[(String, String)],
        opts: &Options,
    ) {
        let heads = self.push_heads(name, hist.help, opts);
        let les = les(&hist.bounds_us);
        let names = Names {
            bucket: name.to_owned() + "_bucket",
            sum: name.to_owned() + "_sum",
            count: name.to_owned() + "_count",
        };
        let mut pb = HistPb::new(
            &mut self.pb,
            name,
            hist.help,
            unit_of(name),
            &hist.bounds_us,
            hist.native.as_ref(),
            opts.help,
        );
        let first = self.series.len();
        let mut seen: HashSet<Vec<&(String, String)>> = HashSet::new();
        for (j, labels) in hist.series.iter().enumerate() {
            if !shown(labels, constant, opts, &mut seen) {
                continue;
            }
            let labels = &labels::with_constant(labels, constant);
            let spans = self.push_lines(&names, &les, labels);
            self.series.push(HistSeries {
                slot: first_slot + j * hist.slots_per_series(),
                spans,
                pb: pb.push_series(&mut self.pb, labels),
            });
        }
        self.pb_size += pb.max_size();
        self.families.push(HistFamily {
            heads,
            buckets: les.len(),
            first,
            end: self.series.len(),
            pb,
        });
    }

    /// Appends a family's heads, `[text, OpenMetrics]` for each group (one when typed, three
    /// otherwise), and counts them in the sizes.
    fn push_heads(&mut self, name: &str, help: &str, opts: &Options) -> [[Span; 2]; 3] {
        let mut text = String::new();
        let mut heads = [[Span::EMPTY; 2]; 3];
        let groups: &[(&str, &str)] = if opts.types {
            &[("", "histogram")]
        } else {
            &[("_bucket", ""), ("_sum", ""), ("_count", "")]
        };
        let base = self.text.len();
        for (part, &(suffix, kind)) in groups.iter().enumerate() {
            let sample = name.to_owned() + suffix;
            for (k, om) in [false, true].into_iter().enumerate() {
                let start = text.len();
                push_head(&mut text, &sample, help, kind, om, opts);
                heads[part][k] = Span {
                    start: base + start,
                    end: base + text.len(),
                };
            }
        }
        self.text.extend_from_slice(text.as_bytes());
        self.text_size += heads.iter().map(|h| h[0].len()).sum::<usize>();
        self.om_size += heads.iter().map(|h| h[1].len()).sum::<usize>();
        heads
    }

    /// Appends a series' line prefixes (buckets, `_sum`, `_count`) and counts its lines in
    /// the sizes. Returns the index of its first span.
    fn push_lines(&mut self, names: &Names, les: &[String], labels: &[(String, String)]) -> usize {
        let mut text = String::new();
        let base = self.text.len();
        let first = self.spans.len();
        let mut size = 0;
        let lines = les
            .iter()
            .map(|le| (&names.bucket, le.as_str()))
            .chain([(&names.sum, ""), (&names.count, "")]);
        for (name, le) in lines {
            let start = text.len();
            push_prefix(name, labels, le, &mut text);
            self.spans.push(Span {
                start: base + start,
                end: base + text.len(),
            });
            size += text.len() - start + MAX_U64_LEN + 1;
        }
        self.text.extend_from_slice(text.as_bytes());
        self.text_size += size;
        self.om_size += size + les.len() * MAX_EXEMPLAR_LEN;
        self.lines += les.len() + 2;
        first
    }

    /// Appends the histogram families in the text format or OpenMetrics (see
    /// [`Layout::render_all`]).
    pub(super) fn render_text(
        &self,
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        om: bool,
        out: &mut Vec<u8>,
    ) {
        let bytes = self.text.as_slice();
        let line = |out: &mut Vec<u8>, s: Span| out.extend_from_slice(&bytes[s.start..s.end]);
        let mut itoa = itoa::Buffer::new();
        for fam in &self.families {
            let nb = fam.buckets;
            for part in 0..if self.typed { 1 } else { 3 } {
                let mark = out.len();
                line(out, fam.heads[part][usize::from(om)]);
                let mut any = false;
                for (s, Slots { counts, sum, .. }) in fam.present(&self.series, hist) {
                    let total = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
                    if total == 0 {
                        continue;
                    }
                    any = true;
                    let spans = &self.spans[s.spans..s.spans + nb + 2];
                    if !self.typed && part > 0 {
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
                        if om && self.typed {
                            if let Some(Some(e)) = exemplars.get(s.slot + b) {
                                push_exemplar(out, e);
                            }
                        }
                        out.push(b'\n');
                    }
                    if self.typed {
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

    /// Appends the histogram families in the protobuf format (see [`Layout::render_all`]).
    pub(super) fn render_protobuf(
        &self,
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        out: &mut Vec<u8>,
    ) {
        let pb = self.pb.as_slice();
        for fam in &self.families {
            let f = &fam.pb;
            let family = f.begin(pb, out);
            let mut any = false;
            for (s, Slots { counts, sum, rest }) in fam.present(&self.series, hist) {
                let sample = HistSample {
                    counts,
                    sum,
                    rest,
                    exemplars: exemplars.get(s.slot..).unwrap_or_default(),
                };
                any |= f.put_series(pb, &s.pb, &sample, out);
            }
            if any {
                f.end(pb, family, out);
            } else {
                family.discard(out);
            }
        }
    }
}

/// Histogram families whose series are only known at run time (the request histograms with a
/// `route` label: a series appears with the first request of its route, method and status
/// class), laid out apart from the [`Layout`] and rendered after its histograms.
///
/// The host builds the [`Layout`] with the same families *without series*: that is where the
/// names are claimed and the family filter applies, once; [`Layout::histogram_kept`] then says
/// which families to give here, and the host builds a new `HistogramLayout` whenever series
/// appear (at most once per series over the instance's life). The values are laid out as for
/// [`Layout::render_all`]: per family, per series in the order given, its slots.
#[derive(Clone, Debug, Default)]
pub struct HistogramLayout {
    hists: Hists,
}

impl HistogramLayout {
    /// Lays out `histograms` (names already claimed, families already admitted by a
    /// [`Layout`]); series are treated as by [`Layout::with_histograms`].
    pub fn new(histograms: &[Histogram], opts: &Options) -> HistogramLayout {
        let constant: Vec<(String, String)> = opts.valid_labels().cloned().collect();
        let prefix = Prefix::new(&opts.prefix);
        let mut h = Hists {
            typed: opts.types,
            ..Hists::default()
        };
        let mut slot = 0;
        for hist in histograms {
            let name = prefix.family(hist.family);
            h.add_family(hist, &name, slot, &constant, opts);
            h.kept.push(true);
            slot += hist.series.len() * hist.slots_per_series();
        }
        h.slots = slot;
        h.shrink();
        HistogramLayout { hists: h }
    }

    /// Appends the families to `out` in `fmt` (no `# EOF`: the caller's [`Layout`] wrote it
    /// or will), series without observations left out as by [`Layout::render_all`].
    pub fn render(
        &self,
        hist: &[u64],
        exemplars: &[Option<Exemplar>],
        fmt: super::Format,
        out: &mut Vec<u8>,
    ) {
        match fmt {
            super::Format::Protobuf => {
                out.reserve(self.hists.pb_size);
                self.hists.render_protobuf(hist, exemplars, out);
            }
            super::Format::OpenMetrics => {
                out.reserve(self.hists.om_size);
                self.hists.render_text(hist, exemplars, true, out);
            }
            super::Format::Text => {
                out.reserve(self.hists.text_size);
                self.hists.render_text(hist, exemplars, false, out);
            }
        }
    }
}

/// Claims a histogram's names (`x`, `x_bucket`, `x_sum`, `x_count`, `x_created`) in `owned`,
/// or says which one an earlier family owns.
fn claim(name: &str, owned: &mut HashSet<String>) -> Result<(), SkipReason> {
    let names = ["", "_bucket", "_sum", "_count", "_created"].map(|s| name.to_owned() + s);
    if let Some(n) = names.iter().find(|n| owned.contains(*n)) {
        return Err(SkipReason::NameClash { name: n.clone() });
    }
    owned.extend(names);
    Ok(())
}

/// Whether a series is shown: not dropped by [`Options::workers`] / [`Options::cores`],
/// without `le` or a constant label, and the first with its label set (`seen`).
fn shown<'a>(
    labels: &'a [(String, String)],
    constant: &[(String, String)],
    opts: &Options,
    seen: &mut HashSet<Vec<&'a (String, String)>>,
) -> bool {
    let has = |l: &str| labels.iter().any(|(k, _)| k == l);
    if (!opts.workers && has("worker"))
        || (!opts.cores && has("core"))
        || has("le")
        || labels::clash(labels, constant).is_some()
    {
        return false;
    }
    let mut canon: Vec<&(String, String)> = labels.iter().collect();
    canon.sort();
    seen.insert(canon)
}

/// The `le="…"` label of each bucket: the bounds as exact decimals of seconds, then `+Inf`.
fn les(bounds_us: &[u64]) -> Vec<String> {
    bounds_us
        .iter()
        .map(|&b| {
            let mut v = Vec::new();
            push_scaled(&mut v, false, b, 6);
            format!("le=\"{}\"", String::from_utf8_lossy(&v))
        })
        .chain(["le=\"+Inf\"".to_owned()])
        .collect()
}

/// Appends ` # {trace_id="…"} <value> <timestamp>`, or nothing if the trace id is not 32
/// lowercase hex digits.
fn push_exemplar(out: &mut Vec<u8>, e: &Exemplar) {
    if !e.has_valid_trace_id() {
        return;
    }
    out.extend_from_slice(b" # {trace_id=\"");
    out.extend_from_slice(&e.trace_id);
    out.extend_from_slice(b"\"} ");
    push_scaled(out, false, e.value_us, 6);
    out.push(b' ');
    push_scaled(out, e.timestamp_us < 0, e.timestamp_us.unsigned_abs(), 6);
}
