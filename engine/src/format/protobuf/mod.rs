//! Prometheus' protobuf exposition: a sequence of `io.prometheus.client.MetricFamily`
//! messages, each preceded by its length as a varint (`encoding=delimited`), encoded by hand
//! (no protobuf library: a dozen field tags, varints and little-endian doubles).
//!
//! This module is the wire encoding only and knows nothing of the layout: `layout.rs` and
//! `../histogram.rs` lay their families out through it, `render.rs` and `../histogram.rs`
//! render them through it. Its own `histogram.rs` holds the `Histogram` message.
//!
//! Field numbers (prometheus/prometheus `prompb/io/prometheus/client/metrics.proto`, copied
//! for the tests to `engine/tests/data/metrics.proto`):
//!
//! | message | fields written |
//! |---|---|
//! | `MetricFamily` | name 1, help 2, type 3 (COUNTER 0, GAUGE 1, HISTOGRAM 4), metric 4, unit 5 |
//! | `Metric` | label 1, gauge 2, counter 3, histogram 7 |
//! | `LabelPair` | name 1, value 2 |
//! | `Counter`, `Gauge` | value 1 (double) |
//! | `Histogram` | sample_count 1, sample_sum 2, bucket 3, schema 5 (sint32), zero_threshold 6, zero_count 7, positive_span 12, positive_delta 13 (sint64, packed), exemplars 16 |
//! | `Bucket` | cumulative_count 1, upper_bound 2, exemplar 3 |
//! | `BucketSpan` | offset 1 (sint32), length 2 |
//! | `Exemplar` | label 1, value 2, timestamp 3 (`google.protobuf.Timestamp`: seconds 1, nanos 2) |
//!
//! Fields are written in field-number order. Zero values are written too (proto3 would omit
//! them; a decoder reads an explicit 0 the same way), so that a counter or gauge series has a
//! fixed size.
//!
//! # What is in it
//!
//! The same families as the text output, in the same order, with the same series and values:
//!
//! * the family name is the text format's: a counter's includes `_total`, as Prometheus
//!   ingests it from text and as client_golang exposes it;
//! * HELP (unless [`super::Options::help`] is off) is the raw text, with the control
//!   characters the text formats replace by a space replaced likewise; label values too;
//! * protobuf always carries types: [`super::Options::types`] only concerns the text lines
//!   (`# TYPE`, `# UNIT`), so a histogram is one family even without them, and `unit` is
//!   written for the `_seconds`/`_bytes` families that have a `# UNIT` in typed OpenMetrics;
//! * values are the doubles nearest to the decimals the text formats print ([`exact_f64`](super::value::exact_f64)),
//!   negative counters 0;
//! * histograms: `sample_count`, `sample_sum` (seconds), one cumulative bucket per finite
//!   bound (the `+Inf` bucket is implied by `sample_count`, as in client_golang, and written
//!   only when it carries an exemplar), exemplars on buckets (trace id label, value in
//!   seconds, timestamp). Series without observations, and families left without series, are
//!   left out, as in text;
//! * native buckets when the histogram has a [`NativeSpec`](super::NativeSpec) (see
//!   [`Layout::render_all`](super::Layout::render_all)): schema, zero threshold and count, spans and deltas from the
//!   dense counts, and the bucket exemplars again as native exemplars (field 16). A span
//!   covers a run of non-empty buckets; gaps of one or two empty buckets stay inside the
//!   span (as zero counts), a longer gap starts a new span, as client_golang does. A
//!   histogram with no non-empty native bucket, zero threshold 0 and zero count 0 gets the
//!   no-op span (offset 0, length 0), without which Prometheus would read it as classic.
//!
//! # Lengths
//!
//! A nested message is preceded by its length, which for a histogram depends on the values
//! (varint counts, exemplars, native spans). Rather than computing sizes in a first pass over
//! the values (and again for each series) or moving bytes around once they are known, each
//! variable-size length is written as a varint *padded to a fixed width*: the width that the
//! largest possible message of that family or series needs, computed when the layout is
//! built, with continuation bits set on the leading bytes (`3` in two bytes is `83 00`).
//! A padded varint is valid protobuf (the wire format does not require the shortest form)
//! and every decoder reads it: Go's (gogo's generated `Unmarshal`, `protowire`, Prometheus'
//! delimited reader, which accepts up to 5 bytes: a family would need to exceed 32 GiB for
//! more), Python's (checked by the tests), prost. So rendering is one pass with a few
//! patched bytes per message, and costs at most a byte or two per series.
//!
//! Everything whose size is fixed is minimal and precomputed: the family heads (name, help,
//! type) and units, each counter or gauge series' whole `Metric` but its 8 value bytes, each
//! histogram series' label pairs, the upper bounds as doubles, the length of a counter or
//! gauge family (exact, recomputed only when some values are missing), and the one-byte
//! lengths of buckets, spans, exemplars and timestamps (at most 96 bytes).
//!
//! Rendering copies these and formats varints and doubles into `out`; it allocates nothing
//! once `out` has grown to the size of a scrape. The classic part of a histogram series (and
//! the head of its native part) is written into a zeroed region of `out` sized for its
//! largest encoding, then cut to size: plain stores with the position in a register instead
//! of `Vec` pushes (this halved the cost of a bucket); the native deltas likewise, in a
//! region sized from the number of buckets they cover and the largest count.

use std::borrow::Cow;

use super::Span;

// Wire tags: (field number << 3) | wire type (0 varint, 1 64-bit, 2 length-delimited).
const FAMILY_NAME: u8 = 0x0a;
const FAMILY_HELP: u8 = 0x12;
const FAMILY_TYPE: u8 = 0x18;
const FAMILY_METRIC: u8 = 0x22;
const FAMILY_UNIT: u8 = 0x2a;
const METRIC_LABEL: u8 = 0x0a;
const METRIC_GAUGE: u8 = 0x12;
const METRIC_COUNTER: u8 = 0x1a;
const METRIC_HISTOGRAM: u8 = 0x3a;
const LABEL_NAME: u8 = 0x0a;
const LABEL_VALUE: u8 = 0x12;
/// `Counter.value` and `Gauge.value`: field 1, double.
const VALUE: u8 = 0x09;
/// `MetricType` values.
pub(super) const TYPE_COUNTER: u64 = 0;
pub(super) const TYPE_GAUGE: u64 = 1;
pub(super) const TYPE_HISTOGRAM: u64 = 4;

/// Bytes of the varint encoding of `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the varint encoding of `v`.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let mut buf = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.extend_from_slice(&buf[..=n]);
}

/// Writes `v` as a varint padded to exactly `slot.len()` bytes (continuation bits on all but
/// the last). The layout sizes every slot for the largest value it can receive.
fn put_padded(slot: &mut [u8], mut v: u64) {
    let last = slot.len() - 1;
    for b in &mut slot[..last] {
        *b = v as u8 | 0x80;
        v >>= 7;
    }
    debug_assert!(v < 0x80, "length slot too narrow");
    slot[last] = v as u8 & 0x7f;
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// `tag`, length, bytes.
fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `s` with the ASCII control characters other than TAB and LF replaced by a space, as the
/// text formats do (`escape.rs`), so that every format carries the same strings.
fn clean(s: &str) -> Cow<'_, str> {
    if s.bytes()
        .any(|b| b.is_ascii_control() && b != b'\t' && b != b'\n')
    {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_ascii_control() && c != '\t' && c != '\n' {
                        ' '
                    } else {
                        c
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// Appends a family's head: name, help (with [`super::Options::help`]), type.
pub(super) fn push_family_head(
    pb: &mut Vec<u8>,
    name: &str,
    help: &str,
    ty: u64,
    help_on: bool,
) -> Span {
    let start = pb.len();
    put_bytes(pb, FAMILY_NAME, name.as_bytes());
    if help_on {
        put_bytes(pb, FAMILY_HELP, clean(help).as_bytes());
    }
    pb.push(FAMILY_TYPE);
    put_varint(pb, ty);
    Span {
        start,
        end: pb.len(),
    }
}

/// Appends the `unit` field, if any.
pub(super) fn push_unit(pb: &mut Vec<u8>, unit: Option<&str>) -> Span {
    let start = pb.len();
    if let Some(u) = unit {
        put_bytes(pb, FAMILY_UNIT, u.as_bytes());
    }
    Span {
        start,
        end: pb.len(),
    }
}

/// The `label` fields of a `Metric`.
fn label_pairs(labels: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pair = Vec::new();
    for (k, v) in labels {
        pair.clear();
        put_bytes(&mut pair, LABEL_NAME, k.as_bytes());
        put_bytes(&mut pair, LABEL_VALUE, clean(v).as_bytes());
        put_bytes(&mut out, METRIC_LABEL, &pair);
    }
    out
}

/// Appends everything of a counter or gauge series but its value's 8 bytes:
/// `metric` tag and length, the labels, the `counter`/`gauge` tag, its length and the value's
/// tag. Its size plus 8 is the series' whole size.
pub(super) fn push_scalar_prefix(
    pb: &mut Vec<u8>,
    labels: &[(String, String)],
    counter: bool,
) -> Span {
    let start = pb.len();
    let l = label_pairs(labels);
    pb.push(FAMILY_METRIC);
    put_varint(pb, (l.len() + 11) as u64);
    pb.extend_from_slice(&l);
    pb.push(if counter {
        METRIC_COUNTER
    } else {
        METRIC_GAUGE
    });
    pb.push(9);
    pb.push(VALUE);
    Span {
        start,
        end: pb.len(),
    }
}

mod histogram;

pub(super) use histogram::{HistPb, HistSample, SeriesPb};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (v, want) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, want, "{v}");
            assert_eq!(varint_len(v), want.len(), "{v}");
        }
        let mut slot = [0u8; 3];
        put_padded(&mut slot, 3);
        assert_eq!(slot, [0x83, 0x80, 0x00]);
        put_padded(&mut slot, 300);
        assert_eq!(slot, [0xac, 0x82, 0x00]);
        put_padded(&mut slot, (1 << 21) - 1);
        assert_eq!(slot, [0xff, 0xff, 0x7f]);
        let mut one = [0u8; 1];
        put_padded(&mut one, 5);
        assert_eq!(one, [5]);
        assert_eq!(zigzag32(0), 0);
        assert_eq!(zigzag32(-1), 1);
        assert_eq!(zigzag32(1), 2);
        assert_eq!(zigzag32(i32::MIN), u64::from(u32::MAX));
        assert_eq!(zigzag64(-2), 3);
        assert_eq!(zigzag64(i64::MIN), u64::MAX);
    }

    #[test]
    fn cleaned_strings() {
        assert_eq!(clean("a\tb\nc"), "a\tb\nc");
        assert_eq!(clean("a\rb\u{7f}c\u{0}"), "a b c ");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }
}
