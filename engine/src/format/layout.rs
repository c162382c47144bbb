//! The [`Layout`] and its construction: every metric mapped to a family (`candidate.rs`),
//! the option filters and collision checks, then the families laid out as preformatted bytes
//! for the text formats and protobuf. Rendering is in `render.rs`.

use std::collections::{HashMap, HashSet};

use super::candidate::{candidate, extra_candidate, Candidate, Labels};
use super::histogram::{Hists, NamesTaken};
use super::lines::{push_head, push_prefix, unit_of};
use super::value::MAX_VALUE_LEN;
use super::{
    escape, labels, protobuf, Extra, Histogram, Kind, MetricType, Options, PatternRef, Prefix,
    SkipReason, Skipped, Span,
};

#[derive(Clone, Debug)]
pub(super) struct FamilyOut {
    pub(super) text_head: Span,
    pub(super) om_head: Span,
    /// Protobuf name, help and type (in `Layout::pb`).
    pub(super) pb_head: Span,
    /// Protobuf unit field, or empty.
    pub(super) pb_unit: Span,
    /// Protobuf family length when every series has a value.
    pub(super) pb_len: usize,
    /// Range of `Layout::series`.
    pub(super) first: usize,
    pub(super) end: usize,
    /// Largest value index among the family's series.
    pub(super) max_index: usize,
}

#[derive(Clone, Debug)]
pub(super) struct SeriesOut {
    /// `name{labels} `.
    pub(super) prefix: Span,
    /// Protobuf `Metric` up to the value's 8 bytes (in `Layout::pb`).
    pub(super) pb_prefix: Span,
    /// Index into the values slice.
    pub(super) index: usize,
    /// Divide by `10^scale`.
    pub(super) scale: u8,
    /// Counter: render negative values as 0.
    pub(super) clamp: bool,
}

/// The precomputed exposition of one metric list: family order, preformatted
/// HELP/TYPE/UNIT lines and `name{labels} ` sample prefixes.
#[derive(Clone, Debug)]
pub struct Layout {
    pub(super) bytes: Vec<u8>,
    /// Precomputed protobuf bytes (`protobuf/`).
    pub(super) pb: Vec<u8>,
    /// Upper bound of a protobuf rendering.
    pub(super) pb_size: usize,
    pub(super) families: Vec<FamilyOut>,
    pub(super) series: Vec<SeriesOut>,
    skipped: Vec<Skipped>,
    pub(super) text_size: usize,
    pub(super) om_size: usize,
    pub(super) hists: Hists,
    /// The patterns of [`Options::families`] that matched no family name considered.
    unmatched: Vec<PatternRef>,
}

struct SeriesBuild {
    index: usize,
    labels: Labels,
    scale: u8,
}

struct FamilyBuild {
    name: String,
    kind: Kind,
    help: std::borrow::Cow<'static, str>,
    series: Vec<SeriesBuild>,
}

/// The families under construction, in order of first appearance, and what the collision
/// checks need.
#[derive(Default)]
struct Families {
    fams: Vec<FamilyBuild>,
    /// Family name → index in `fams`.
    by_name: HashMap<String, usize>,
    /// Every family or sample name some family owns.
    owned: HashSet<String>,
    /// (family index, canonical labels) of every series.
    seen: HashSet<(usize, String)>,
    /// Per pattern of [`Options::families`], whether it matched a family name.
    matched: Vec<bool>,
}

impl Families {
    /// Adds a candidate's series (the metric or extra `index`) to its family, or says why
    /// it is skipped.
    fn admit(
        &mut self,
        index: usize,
        cand: Candidate,
        constant: &[(String, String)],
        opts: &Options,
    ) -> Result<(), SkipReason> {
        self.by_name_filter(&cand, opts)?;
        filter(&cand.labels, constant, opts)?;
        let fi = self.family_of(&cand)?;
        if !self.seen.insert((fi, canonical(&cand.labels))) {
            let name = match cand.kind {
                Kind::Counter => format!("{}_total", cand.family),
                Kind::Gauge => cand.family,
            };
            return Err(SkipReason::DuplicateSeries { name });
        }
        self.fams[fi].series.push(SeriesBuild {
            index,
            labels: labels::with_constant(&cand.labels, constant),
            scale: cand.scale,
        });
        Ok(())
    }

    /// [`Options::families`]: a family left out claims no name.
    fn by_name_filter(&mut self, cand: &Candidate, opts: &Options) -> Result<(), SkipReason> {
        let filter = &opts.families;
        if filter.is_empty() {
            return Ok(());
        }
        match cand.kind {
            Kind::Counter => {
                let total = format!("{}_total", cand.family);
                filter
                    .admit(&total, Some(&cand.family), &mut self.matched)
                    .then_some(())
                    .ok_or(SkipReason::Filtered { family: total })
            }
            Kind::Gauge => filter
                .admit(&cand.family, None, &mut self.matched)
                .then_some(())
                .ok_or_else(|| SkipReason::Filtered {
                    family: cand.family.clone(),
                }),
        }
    }

    /// The index of the candidate's family, created (its names claimed) if new.
    fn family_of(&mut self, cand: &Candidate) -> Result<usize, SkipReason> {
        match self.by_name.get(&cand.family) {
            Some(&fi) if self.fams[fi].kind != cand.kind => Err(SkipReason::TypeConflict {
                family: cand.family.clone(),
            }),
            Some(&fi) => Ok(fi),
            None => {
                let names = match cand.kind {
                    Kind::Counter => vec![
                        cand.family.clone(),
                        format!("{}_total", cand.family),
                        format!("{}_created", cand.family),
                    ],
                    Kind::Gauge => vec![cand.family.clone()],
                };
                if let Some(n) = names.iter().find(|n| self.owned.contains(*n)) {
                    return Err(SkipReason::NameClash { name: n.clone() });
                }
                self.owned.extend(names);
                self.by_name.insert(cand.family.clone(), self.fams.len());
                self.fams.push(FamilyBuild {
                    name: cand.family.clone(),
                    kind: cand.kind,
                    help: cand.help.clone(),
                    series: Vec::new(),
                });
                Ok(self.fams.len() - 1)
            }
        }
    }
}

/// The option filters of a series: [`Options::workers`], [`Options::cores`] and a clash with
/// the constant labels.
fn filter(
    labels: &[(String, String)],
    constant: &[(String, String)],
    opts: &Options,
) -> Result<(), SkipReason> {
    if !opts.workers && labels.iter().any(|(k, _)| k == "worker") {
        return Err(SkipReason::WorkersDisabled);
    }
    if !opts.cores && labels.iter().any(|(k, _)| k == "core") {
        return Err(SkipReason::CoresDisabled);
    }
    if let Some(label) = labels::clash(labels, constant) {
        return Err(SkipReason::LabelClash {
            label: label.to_owned(),
        });
    }
    Ok(())
}

/// A label set in a canonical form (sorted by name, values escaped), to find repeated series.
fn canonical(labels: &[(String, String)]) -> String {
    let mut canon: Vec<&(String, String)> = labels.iter().collect();
    canon.sort();
    let mut key = String::new();
    for (k, v) in canon {
        key.push_str(k);
        key.push('=');
        escape::push_label_value(v, &mut key);
        key.push('"');
    }
    key
}

impl Layout {
    /// Builds the layout for uWSGI's metric list (`(name, type)` in list
    /// order). All parsing, sanitising, grouping and collision handling
    /// happens here, once.
    pub fn new(metrics: &[(&str, MetricType)], opts: &Options) -> Layout {
        Self::with_extras(metrics, &[], opts)
    }

    /// Like [`Layout::new`], plus series computed by the host ([`Extra`]), which follow the
    /// metrics list: `values[metrics.len() + i]` is the value of `extras[i]`. Extras go through
    /// the same checks (option filters, collisions) as metrics; a skipped extra is reported
    /// under its family name.
    pub fn with_extras(metrics: &[(&str, MetricType)], extras: &[Extra], opts: &Options) -> Layout {
        Self::with_histograms(metrics, extras, &[], opts)
    }

    /// Like [`Layout::with_extras`], plus histogram families ([`Histogram`]), rendered after
    /// every other family, in the order given. A histogram one of whose names (`x`,
    /// `x_bucket`, `x_sum`, `x_count`, `x_created`) is already owned by an earlier family is
    /// skipped whole ([`SkipReason::NameClash`], reported under its family name with index
    /// `metrics.len() + extras.len() + i`). Series dropped by [`Options::workers`] /
    /// [`Options::cores`], series with an `le` label or a label of [`Options::labels`] and
    /// repeated label sets are left out without a [`Skipped`] entry; their slots stay in the
    /// `hist` values.
    pub fn with_histograms(
        metrics: &[(&str, MetricType)],
        extras: &[Extra],
        histograms: &[Histogram],
        opts: &Options,
    ) -> Layout {
        let prefix = Prefix::new(&opts.prefix);
        let constant: Vec<(String, String)> = opts.valid_labels().cloned().collect();
        let mut skipped = Vec::new();
        let mut families = Families {
            matched: vec![false; opts.families.len()],
            ..Families::default()
        };
        let inputs = metrics
            .iter()
            .map(|&(name, ty)| (name, candidate(name, ty, &prefix)))
            .chain(
                extras
                    .iter()
                    .map(|e| (e.family, Ok(extra_candidate(e, &prefix)))),
            );
        for (index, (name, cand)) in inputs.enumerate() {
            if let Err(reason) = cand.and_then(|c| families.admit(index, c, &constant, opts)) {
                skipped.push(Skipped {
                    index,
                    name: name.to_owned(),
                    reason,
                });
            }
        }
        let hists = Hists::new(
            histograms,
            &prefix,
            NamesTaken {
                owned: &mut families.owned,
                matched: &mut families.matched,
            },
            metrics.len() + extras.len(),
            &mut skipped,
            &constant,
            opts,
        );
        let unmatched = opts.families.unmatched(&families.matched);
        let mut layout = Self::assemble(families.fams, skipped, hists, unmatched, opts);
        layout.shrink();
        layout
    }

    /// Gives back the spare capacity of the construction (the layout lives as long as the
    /// process, in every process: at 16 × 32 the doubling of these buffers alone was 0.5 MB).
    fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
        self.pb.shrink_to_fit();
        self.families.shrink_to_fit();
        self.series.shrink_to_fit();
        self.skipped.shrink_to_fit();
        self.hists.shrink();
    }

    /// Lays the families out as bytes, the histograms' sizes counted in.
    fn assemble(
        fams: Vec<FamilyBuild>,
        skipped: Vec<Skipped>,
        hists: Hists,
        unmatched: Vec<PatternRef>,
        opts: &Options,
    ) -> Layout {
        let mut layout = Layout {
            bytes: Vec::new(),
            pb: Vec::new(),
            pb_size: hists.pb_size,
            families: Vec::with_capacity(fams.len()),
            series: Vec::new(),
            skipped,
            text_size: hists.text_size,
            om_size: "# EOF\n".len() + hists.om_size,
            hists,
            unmatched,
        };
        let mut text = String::new();
        for fam in &fams {
            layout.push_family(&mut text, fam, opts);
        }
        layout.bytes = text.into_bytes();
        layout
    }

    /// Lays out one family: its heads (text, OpenMetrics, protobuf) and its series.
    fn push_family(&mut self, text: &mut String, fam: &FamilyBuild, opts: &Options) {
        let counter = fam.kind == Kind::Counter;
        let sample_name = if counter {
            format!("{}_total", fam.name)
        } else {
            fam.name.clone()
        };
        let om_name = if counter && opts.types {
            &fam.name
        } else {
            &sample_name
        };
        let head = |text: &mut String, name: &str, om: bool| {
            let start = text.len();
            push_head(text, name, &fam.help, fam.kind.as_str(), om, opts);
            Span {
                start,
                end: text.len(),
            }
        };
        let text_head = head(text, &sample_name, false);
        let om_head = head(text, om_name, true);
        let pb_ty = if counter {
            protobuf::TYPE_COUNTER
        } else {
            protobuf::TYPE_GAUGE
        };
        let pb_head =
            protobuf::push_family_head(&mut self.pb, &sample_name, &fam.help, pb_ty, opts.help);
        // The unit of typed OpenMetrics, whose counter family names have no `_total`.
        let pb_unit = protobuf::push_unit(&mut self.pb, unit_of(&fam.name));
        let mut pb_len = pb_head.len() + pb_unit.len();
        self.text_size += text_head.len();
        self.om_size += om_head.len();
        let first = self.series.len();
        let mut max_index = 0;
        for s in &fam.series {
            let start = text.len();
            push_prefix(&sample_name, &s.labels, "", text);
            let prefix = Span {
                start,
                end: text.len(),
            };
            let line = prefix.len() + MAX_VALUE_LEN + 1;
            self.text_size += line;
            self.om_size += line;
            max_index = max_index.max(s.index);
            let pb_prefix = protobuf::push_scalar_prefix(&mut self.pb, &s.labels, counter);
            pb_len += pb_prefix.len() + 8;
            self.series.push(SeriesOut {
                prefix,
                pb_prefix,
                index: s.index,
                scale: s.scale,
                clamp: counter,
            });
        }
        self.pb_size += protobuf::varint_len(pb_len as u64) + pb_len;
        self.families.push(FamilyOut {
            text_head,
            om_head,
            pb_head,
            pb_unit,
            pb_len,
            first,
            end: self.series.len(),
            max_index,
        });
    }

    /// Total number of `u64` slots [`Layout::render_all`] expects in `hist`: the sum over
    /// *all* the histograms given to [`Layout::with_histograms`] (skipped ones included, so
    /// that the host's indexing never depends on collisions) of
    /// `series.len() * slots_per_series()`.
    pub fn histogram_slots(&self) -> usize {
        self.hists.slots
    }

    /// Whether the `i`-th histogram given to [`Layout::with_histograms`] was laid out (not
    /// filtered out, no name clash): for the host to render it, with series known only at run
    /// time, through a [`super::HistogramLayout`].
    pub fn histogram_kept(&self, i: usize) -> bool {
        self.hists.kept(i)
    }

    /// The metrics that are not exported, with the reason, in list order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The patterns of [`Options::families`] that match no family this layout was built from
    /// (whether or not other options left the family out): for the host to log once.
    pub fn unmatched_patterns(&self) -> &[PatternRef] {
        &self.unmatched
    }

    /// Number of sample lines rendered per scrape when every value is present and every
    /// histogram series has observations: one per counter or gauge series, and
    /// `bounds + 3` per histogram series (its buckets, `+Inf` included, `_sum` and `_count`).
    pub fn series(&self) -> usize {
        self.series.len() + self.hists.lines
    }

    /// Number of families rendered per scrape (histogram families included, when they have
    /// observations).
    pub fn families(&self) -> usize {
        self.families.len() + self.hists.families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions() {
        use MetricType::{Counter as C, Gauge as G};
        let m = [
            ("x", C),         // uwsgi_x counter
            ("x", G),         // same family, other type
            ("x.total", C),   // same series as the first
            ("x.created", G), // clashes with uwsgi_x_created
            ("x.1", C),       // new series of uwsgi_x
            ("kb.1.y.2", G),  // uwsgi_y{kb,y}
            ("y.2.kb.1", G),  // same labelset in another order
            ("...", G),
            ("rss_size", MetricType::Alias),
        ];
        let l = Layout::new(&m, &Options::default());
        let reasons: Vec<String> = l
            .skipped()
            .iter()
            .map(|s| format!("{}#{s}", s.index))
            .collect();
        assert_eq!(
            reasons,
            [
                "1#x: family uwsgi_x already exists with another type",
                "2#x.total: duplicate series of uwsgi_x_total (same labels as an earlier metric)",
                "3#x.created: name uwsgi_x_created is already used by another family",
                "6#y.2.kb.1: duplicate series of uwsgi_y (same labels as an earlier metric)",
                "7#...: no usable name left after sanitising",
                "8#rss_size: alias of another metric",
            ]
        );
        assert_eq!(l.series(), 3);
        assert_eq!(l.families(), 2);
    }
}
