//! The `Histogram` message of a series, classic and native: its layout per family and
//! series (sized for the largest encoding, see "Lengths" in `mod.rs`), and its encoding per
//! scrape through a [`Cursor`] over a zeroed region of `out`.

use super::{
    label_pairs, push_family_head, push_unit, put_padded, varint_len, zigzag32, zigzag64,
    FAMILY_METRIC, LABEL_NAME, LABEL_VALUE, METRIC_HISTOGRAM, TYPE_HISTOGRAM,
};
use crate::format::value::exact_f64;
use crate::format::{Exemplar, NativeSpec, Span};

const HIST_COUNT: u8 = 0x08;
const HIST_SUM: u8 = 0x11;
const HIST_BUCKET: u8 = 0x1a;
const HIST_SCHEMA: u8 = 0x28;
const HIST_ZERO_THRESHOLD: u8 = 0x31;
const HIST_ZERO_COUNT: u8 = 0x38;
const HIST_POSITIVE_SPAN: u8 = 0x62;
const HIST_POSITIVE_DELTA: u8 = 0x6a;
/// Field 16, length-delimited: the tag takes two bytes.
const HIST_EXEMPLARS: [u8; 2] = [0x82, 0x01];
const BUCKET_COUNT: u8 = 0x08;
const BUCKET_UPPER: u8 = 0x11;
const BUCKET_EXEMPLAR: u8 = 0x1a;
const SPAN_OFFSET: u8 = 0x08;
const SPAN_LENGTH: u8 = 0x10;
const EXEMPLAR_VALUE: u8 = 0x11;
const EXEMPLAR_TIMESTAMP: u8 = 0x1a;
const TIMESTAMP_SECONDS: u8 = 0x08;
const TIMESTAMP_NANOS: u8 = 0x10;

/// An exemplar's label: `LabelPair{name: "trace_id", value: <32 bytes>}` as field 1, up to
/// the trace id itself.
const EXEMPLAR_LABEL: [u8; 14] = [
    0x0a,
    44,
    LABEL_NAME,
    8,
    b't',
    b'r',
    b'a',
    b'c',
    b'e',
    b'_',
    b'i',
    b'd',
    LABEL_VALUE,
    32,
];

/// Largest exemplar message: label 46, value 9, timestamp 2 + (1 + 10) + (1 + 5).
const MAX_EXEMPLAR: usize = 46 + 9 + 2 + 17;
/// Largest bucket, tag and length included: count 11, bound 9, exemplar 2 + 74. Below 128, so
/// a bucket's length is one byte.
const MAX_BUCKET: usize = 2 + 11 + 9 + 2 + MAX_EXEMPLAR;
/// Largest span, tag and length included: offset 1 + 5, length 1 + 5.
const MAX_SPAN: usize = 2 + 12;
/// Largest native head: schema 1 + 1, zero threshold 1 + 8, zero count 1 + 10.
const MAX_NATIVE_HEAD: usize = 2 + 9 + 11;

/// The native part of a histogram family, resolved at build time.
#[derive(Clone, Debug)]
pub(in crate::format) struct NativePb {
    schema: i32,
    zero_threshold: [u8; 8],
    first_index: i64,
    buckets: usize,
    /// Width of the packed `positive_delta` length.
    w_deltas: usize,
}

/// The protobuf part of a histogram family.
#[derive(Clone, Debug)]
pub(in crate::format) struct HistPb {
    head: Span,
    unit: Span,
    /// Per finite bound, the upper bound in seconds as a little-endian double.
    bounds: Vec<[u8; 8]>,
    native: Option<NativePb>,
    /// Width of the family length (delimiter).
    w_family: usize,
    /// Width of each series' `Histogram` length.
    w_hist: usize,
    /// Largest `Histogram` message.
    max_hist: usize,
    /// Largest classic part of a `Histogram` message and native head (count, sum, buckets,
    /// schema, zero bucket): what a series writes through a [`Cursor`].
    max_cursor: usize,
    /// Largest family (without its delimiter) so far.
    max_family: usize,
}

/// The protobuf part of one histogram series, from [`HistPb::push_series`].
#[derive(Clone, Debug)]
pub(in crate::format) struct SeriesPb {
    /// Its label pairs (in the buffer given to [`HistPb::push_series`]).
    labels: Span,
    /// Width of the `Metric` length slot.
    w_metric: usize,
    /// Largest protobuf `Metric` of the series up to the native head, tag and length
    /// included: the region its [`Cursor`] writes.
    max: usize,
}

/// One histogram series' values at render time.
pub(in crate::format) struct HistSample<'a> {
    /// Non-cumulative classic bucket counts, `+Inf` included.
    pub(in crate::format) counts: &'a [u64],
    /// Sum of the observations, microseconds.
    pub(in crate::format) sum: u64,
    /// The `hist` slots after the sum: the zero bucket's count and the dense native counts
    /// when the family has a native part (ignored otherwise, or when too short).
    pub(in crate::format) rest: &'a [u64],
    /// The exemplars from the series' first slot on (index `b` for bucket `b`), possibly
    /// short or empty.
    pub(in crate::format) exemplars: &'a [Option<Exemplar>],
}

/// Where a histogram family started in `out`, from [`HistPb::begin`].
pub(in crate::format) struct FamilyMark {
    /// Its delimiter (a padded length slot).
    mark: usize,
    /// Its body (after the delimiter).
    body: usize,
}

impl FamilyMark {
    /// Takes back everything the family wrote (it had no series to show).
    pub(in crate::format) fn discard(self, out: &mut Vec<u8>) {
        out.truncate(self.mark);
    }
}

impl HistPb {
    /// Lays out a histogram family: head (help with `help_on`), `unit`, bounds and the native
    /// part (`native` is exported only when [`NativeSpec::is_valid`]); `buckets` counts
    /// `+Inf`.
    pub(in crate::format) fn new(
        pb: &mut Vec<u8>,
        name: &str,
        help: &str,
        unit: Option<&str>,
        bounds_us: &[u64],
        native: Option<&NativeSpec>,
        help_on: bool,
    ) -> HistPb {
        let head = push_family_head(pb, name, help, TYPE_HISTOGRAM, help_on);
        let unit = push_unit(pb, unit);
        let bounds = bounds_us
            .iter()
            .map(|&b| exact_f64(false, b, 6).to_le_bytes())
            .collect();
        let buckets = bounds_us.len() + 1;
        // count, sum, every bucket (the +Inf one with its exemplar) at its largest.
        let mut max_hist = 11 + 9 + buckets * MAX_BUCKET;
        let mut max_cursor = max_hist;
        let native = native.filter(|n| n.is_valid()).map(|n| {
            let deltas = 10 * n.buckets;
            let w_deltas = varint_len(deltas as u64);
            // Runs of non-empty buckets separated by 3+ empty ones: at most (n + 3) / 4
            // spans, or the no-op one.
            let spans = n.buckets.div_ceil(4) + 1;
            max_hist += MAX_NATIVE_HEAD + spans * MAX_SPAN + 1 + w_deltas + deltas;
            max_cursor += MAX_NATIVE_HEAD;
            max_hist += buckets * (2 + 1 + MAX_EXEMPLAR);
            NativePb {
                schema: i32::from(n.schema),
                zero_threshold: exact_f64(false, n.zero_threshold_us, 6).to_le_bytes(),
                first_index: i64::from(n.first_index),
                buckets: n.buckets,
                w_deltas,
            }
        });
        HistPb {
            max_family: head.len() + unit.len(),
            head,
            unit,
            bounds,
            native,
            w_family: 1,
            w_hist: varint_len(max_hist as u64),
            max_hist,
            max_cursor,
        }
    }

    /// Appends a series' label pairs to `pb` and sizes the series.
    pub(in crate::format) fn push_series(
        &mut self,
        pb: &mut Vec<u8>,
        labels: &[(String, String)],
    ) -> SeriesPb {
        let start = pb.len();
        pb.extend_from_slice(&label_pairs(labels));
        let l = pb.len() - start;
        let max_metric = l + 1 + self.w_hist + self.max_hist;
        let w_metric = varint_len(max_metric as u64);
        self.max_family += 1 + w_metric + max_metric;
        self.w_family = varint_len(self.max_family as u64);
        SeriesPb {
            labels: Span {
                start,
                end: pb.len(),
            },
            w_metric,
            max: 1 + w_metric + l + 1 + self.w_hist + self.max_cursor,
        }
    }

    /// Upper bound of the bytes the family renders, delimiter included.
    pub(in crate::format) fn max_size(&self) -> usize {
        self.w_family + self.max_family
    }

    /// Starts the family in `out`: its delimiter's slot and its head (`pb` is the buffer
    /// given to [`HistPb::new`]). Then [`HistPb::put_series`] for each series, and
    /// [`HistPb::end`] or [`FamilyMark::discard`].
    pub(in crate::format) fn begin(&self, pb: &[u8], out: &mut Vec<u8>) -> FamilyMark {
        let mark = out.len();
        out.resize(mark + self.w_family, 0);
        let body = out.len();
        out.extend_from_slice(&pb[self.head.start..self.head.end]);
        FamilyMark { mark, body }
    }

    /// Ends the family: its unit, then its length in the delimiter's slot.
    pub(in crate::format) fn end(&self, pb: &[u8], family: FamilyMark, out: &mut Vec<u8>) {
        out.extend_from_slice(&pb[self.unit.start..self.unit.end]);
        let len = out.len() - family.body;
        put_padded(&mut out[family.mark..family.body], len as u64);
    }

    /// The zero bucket's count and the dense native counts of a series, when the family has
    /// a native part and `rest` holds all of them.
    fn native_slots<'a>(&'a self, rest: &'a [u64]) -> Option<(&'a NativePb, &'a [u64])> {
        let n = self.native.as_ref()?;
        Some((n, rest.get(..1 + n.buckets)?))
    }

    /// Appends one series' `Metric` (`s` from [`HistPb::push_series`], its labels in `pb`),
    /// or nothing when its count ([`consistent_count`]) is 0. Returns whether it wrote it.
    #[inline]
    pub(in crate::format) fn put_series(
        &self,
        pb: &[u8],
        s: &SeriesPb,
        v: &HistSample<'_>,
        out: &mut Vec<u8>,
    ) -> bool {
        // f64::INFINITY, little-endian.
        const INF: [u8; 8] = [0, 0, 0, 0, 0, 0, 0xf0, 0x7f];
        let (counts, nb) = (v.counts, v.counts.len());
        let native = self.native_slots(v.rest);
        let total = consistent_count(counts, native.map(|(_, slots)| slots));
        if total == 0 {
            return false;
        }
        let exemplar = |b: usize| match v.exemplars.get(b) {
            Some(Some(e)) if e.has_valid_trace_id() => Some(e),
            _ => None,
        };
        let start = out.len();
        out.resize(start + s.max, 0);
        let mut w = Cursor {
            buf: &mut out[start..],
            pos: 0,
        };
        w.byte(FAMILY_METRIC);
        w.slot(s.w_metric);
        w.bytes(&pb[s.labels.start..s.labels.end]);
        w.byte(METRIC_HISTOGRAM);
        let h_slot = w.slot(self.w_hist);
        w.byte(HIST_COUNT);
        w.varint(total);
        w.byte(HIST_SUM);
        w.double(exact_f64(false, v.sum, 6));
        let mut cum = 0u64;
        for (b, (&c, upper)) in counts.iter().zip(&self.bounds).enumerate() {
            cum = cum.saturating_add(c);
            w.bucket(cum.min(total), upper, exemplar(b));
        }
        if let Some(e) = exemplar(nb - 1) {
            w.bucket(total, &INF, Some(e));
        }
        let zero = native.map_or(0, |(_, slots)| slots[0].min(total));
        if let Some((n, _)) = native {
            w.native_head(n, zero);
        }
        // The rest grows `out` directly: its size depends on the native buckets.
        let end = start + w.pos;
        out.truncate(end);
        if let Some((n, slots)) = native {
            put_native_buckets(out, n, &slots[1..], total - zero);
            for b in 0..nb {
                if let Some(e) = exemplar(b) {
                    out.extend_from_slice(&HIST_EXEMPLARS);
                    let at = out.len();
                    out.resize(at + 1 + MAX_EXEMPLAR, 0);
                    let end = exemplar_at(out, At(at), e).0;
                    out.truncate(end);
                }
            }
        }
        let (m_slot, h_slot) = (start + 1, start + h_slot);
        let len = out.len() - h_slot - self.w_hist;
        put_padded(&mut out[h_slot..h_slot + self.w_hist], len as u64);
        let len = out.len() - m_slot - s.w_metric;
        put_padded(&mut out[m_slot..m_slot + s.w_metric], len as u64);
        true
    }
}

/// A cursor over a zeroed region of `out` reserved for one series (sized for its largest
/// encoding when the layout is built): byte writes are plain stores with a bounds check,
/// not `Vec` pushes, and fixed-size copies compile to single moves. The hot writers work on
/// a local copy of the position ([`At`]) so that it stays in a register.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// A position in a [`Cursor`]'s buffer, threaded through the writes of one message.
#[derive(Clone, Copy)]
struct At(usize);

impl At {
    #[inline(always)]
    fn byte(self, buf: &mut [u8], b: u8) -> At {
        buf[self.0] = b;
        At(self.0 + 1)
    }

    #[inline(always)]
    fn bytes(self, buf: &mut [u8], s: &[u8]) -> At {
        buf[self.0..self.0 + s.len()].copy_from_slice(s);
        At(self.0 + s.len())
    }

    #[inline(always)]
    fn varint(self, buf: &mut [u8], mut v: u64) -> At {
        let mut p = self.0;
        // Most values (counts, deltas, lengths) take one to three bytes.
        if v < 0x80 {
            buf[p] = v as u8;
            return At(p + 1);
        }
        if v < 1 << 14 {
            buf[p] = v as u8 | 0x80;
            buf[p + 1] = (v >> 7) as u8;
            return At(p + 2);
        }
        if v < 1 << 21 {
            buf[p] = v as u8 | 0x80;
            buf[p + 1] = (v >> 7) as u8 | 0x80;
            buf[p + 2] = (v >> 14) as u8;
            return At(p + 3);
        }
        while v >= 0x80 {
            buf[p] = v as u8 | 0x80;
            v >>= 7;
            p += 1;
        }
        buf[p] = v as u8;
        At(p + 1)
    }
}

impl Cursor<'_> {
    #[inline]
    fn byte(&mut self, b: u8) {
        self.pos = At(self.pos).byte(self.buf, b).0;
    }

    #[inline]
    fn bytes(&mut self, s: &[u8]) {
        self.pos = At(self.pos).bytes(self.buf, s).0;
    }

    #[inline]
    fn varint(&mut self, v: u64) {
        self.pos = At(self.pos).varint(self.buf, v).0;
    }

    #[inline]
    fn double(&mut self, x: f64) {
        self.bytes(&x.to_le_bytes());
    }

    /// Reserves a length slot of `width` bytes; returns its position.
    #[inline]
    fn slot(&mut self, width: usize) -> usize {
        self.pos += width;
        self.pos - width
    }

    /// A `bucket` field (at most [`MAX_BUCKET`] bytes: its length takes one byte).
    #[inline]
    fn bucket(&mut self, cumulative: u64, upper: &[u8; 8], exemplar: Option<&Exemplar>) {
        let buf = &mut *self.buf;
        let len_at = self.pos + 1;
        let mut p = At(self.pos)
            .byte(buf, HIST_BUCKET)
            .byte(buf, 0)
            .byte(buf, BUCKET_COUNT)
            .varint(buf, cumulative)
            .byte(buf, BUCKET_UPPER)
            .bytes(buf, upper);
        if let Some(e) = exemplar {
            let ex = p.byte(buf, BUCKET_EXEMPLAR);
            p = exemplar_at(buf, ex, e);
        }
        buf[len_at] = (p.0 - len_at - 1) as u8;
        self.pos = p.0;
    }

    /// The fixed head of the native part: schema, zero threshold, zero count (at most
    /// [`MAX_NATIVE_HEAD`] bytes).
    fn native_head(&mut self, n: &NativePb, zero_count: u64) {
        self.byte(HIST_SCHEMA);
        self.varint(zigzag32(n.schema));
        self.byte(HIST_ZERO_THRESHOLD);
        self.bytes(&n.zero_threshold);
        self.byte(HIST_ZERO_COUNT);
        self.varint(zero_count);
    }
}

/// Appends a `positive_span` field (at most [`MAX_SPAN`] bytes).
fn put_span(out: &mut Vec<u8>, offset: i64, length: u64) {
    let mut b = [0u8; MAX_SPAN];
    let p = At(2)
        .byte(&mut b, SPAN_OFFSET)
        .varint(&mut b, zigzag32(offset as i32))
        .byte(&mut b, SPAN_LENGTH)
        .varint(&mut b, length);
    b[0] = HIST_POSITIVE_SPAN;
    b[1] = (p.0 - 2) as u8;
    out.extend_from_slice(&b[..p.0]);
}

/// The count of one histogram sample whose classic and native buckets were read while
/// requests were being recorded (or a worker died between its adds): the smaller of the two
/// totals, so that every part of the sample can agree with it. The classic cumulative counts
/// are then capped at it and the native buckets trimmed to it ([`within`]): the few
/// observations one side has and the other not yet appear in the next scrape. Prometheus,
/// Mimir and Cortex reject a native histogram whose zero + buckets differ from its count.
pub(crate) fn consistent_count(classic: &[u64], native: Option<&[u64]>) -> u64 {
    let sum = |c: &[u64]| c.iter().fold(0u64, |a, &c| a.saturating_add(c));
    let total = sum(classic);
    native.map_or(total, |n| total.min(sum(n)))
}

/// `dense` with the observations past `budget` dropped, from the highest bucket down.
pub(crate) fn within(dense: &[u64], mut budget: u64) -> impl Iterator<Item = u64> + '_ {
    dense.iter().map(move |&c| {
        let c = c.min(budget);
        budget -= c;
        c
    })
}

/// Appends the native buckets: spans and deltas from the dense counts (native index
/// `first_index + k` for `dense[k]`), grouped as client_golang's `makeBuckets` does: a span
/// covers a run of non-empty buckets, a gap of 1 or 2 empty buckets stays inside it (as zero
/// deltas), a longer gap starts a new span whose offset is the gap (the first span's offset
/// is its absolute index). Deltas are from the previous bucket's count (0 before the first),
/// across spans; counts above `i64::MAX` wrap, as int64 counts would. Only the first
/// `budget` observations of `dense` are written ([`within`]).
fn put_native_buckets(out: &mut Vec<u8>, n: &NativePb, dense: &[u64], budget: u64) {
    // Spans: the open one, and the index after the last non-empty bucket (-1: none yet).
    let (mut offset, mut length, mut next) = (0i64, 0u64, -1i64);
    // For the size of the deltas: the first non-empty bucket and the largest count.
    let (mut first, mut max) = (0i64, 0u64);
    for (k, c) in within(dense, budget).enumerate() {
        if c == 0 {
            continue;
        }
        let k = k as i64;
        max = max.max(c);
        if next < 0 {
            (offset, length) = (n.first_index + k, 1);
            first = k;
        } else if k - next <= 2 {
            length += (k - next) as u64 + 1;
        } else {
            put_span(out, offset, length);
            (offset, length) = (k - next, 1);
        }
        next = k + 1;
    }
    // No non-empty bucket: the sample's count is all in the zero bucket, which marks it
    // native (a sample with count 0 is not sent), so no no-op span is needed.
    if next < 0 {
        return;
    }
    put_span(out, offset, length);
    out.push(HIST_POSITIVE_DELTA);
    let slot = out.len();
    // Deltas are written into a zeroed region sized for the largest, then cut to size: one
    // per bucket from the first non-empty one to the last, each at most the varint of
    // 2 * max (zigzag(x) <= 2|x|, and |delta| <= max; wrapped counts saturate it to 10).
    let deltas = (next - first) as usize * varint_len(max.saturating_mul(2));
    out.resize(slot + n.w_deltas + deltas, 0);
    let buf = &mut out[slot..];
    let mut p = At(n.w_deltas);
    let (mut prev, mut next) = (0i64, -1i64);
    for (k, c) in within(dense, budget).enumerate() {
        if c == 0 {
            continue;
        }
        let k = k as i64;
        if next >= 0 && k - next <= 2 {
            for _ in next..k {
                p = p.varint(buf, zigzag64(prev.wrapping_neg()));
                prev = 0;
            }
        }
        let c = c as i64;
        p = p.varint(buf, zigzag64(c.wrapping_sub(prev)));
        prev = c;
        next = k + 1;
    }
    put_padded(&mut buf[..n.w_deltas], (p.0 - n.w_deltas) as u64);
    out.truncate(slot + p.0);
}

/// Writes an exemplar message's length and body at `at` (at most 1 + [`MAX_EXEMPLAR`] bytes:
/// both its length and its timestamp's take one byte).
fn exemplar_at(buf: &mut [u8], at: At, e: &Exemplar) -> At {
    let secs = e.timestamp_us.div_euclid(1_000_000) as u64;
    let nanos = e.timestamp_us.rem_euclid(1_000_000) as u64 * 1_000;
    let ts_at = at.0 + 1 + EXEMPLAR_LABEL.len() + 32 + 9 + 1;
    let p = at
        .byte(buf, 0)
        .bytes(buf, &EXEMPLAR_LABEL)
        .bytes(buf, &e.trace_id)
        .byte(buf, EXEMPLAR_VALUE)
        .bytes(buf, &exact_f64(false, e.value_us, 6).to_le_bytes())
        .byte(buf, EXEMPLAR_TIMESTAMP)
        .byte(buf, 0)
        .byte(buf, TIMESTAMP_SECONDS)
        .varint(buf, secs)
        .byte(buf, TIMESTAMP_NANOS)
        .varint(buf, nanos);
    buf[ts_at] = (p.0 - ts_at - 1) as u8;
    buf[at.0] = (p.0 - at.0 - 1) as u8;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_fit_in_one_byte() {
        assert_eq!(MAX_EXEMPLAR, 74);
        assert_eq!(MAX_BUCKET, 98);
        let e = Exemplar {
            trace_id: [b'f'; 32],
            value_us: u64::MAX,
            // Seconds -1 (10 bytes), nanos 999_999_000 (5 bytes).
            timestamp_us: -1,
        };
        let mut buf = [0u8; 128];
        let mut w = Cursor {
            buf: &mut buf,
            pos: 0,
        };
        w.bucket(u64::MAX, &[0; 8], Some(&e));
        assert_eq!(w.pos, MAX_BUCKET);
        assert_eq!(usize::from(buf[1]), MAX_BUCKET - 2);
        let mut out = Vec::new();
        put_span(&mut out, i64::from(i32::MIN), u64::from(u32::MAX));
        assert_eq!(out.len(), MAX_SPAN);
    }
}
