//! A small, strict reader of Prometheus' delimited protobuf exposition, written from the
//! schema (engine/tests/data/metrics.proto) independently of the engine's encoder, and the
//! rules its output must follow. Any field, wire type or repetition the engine does not
//! promise is an error.

use std::collections::{BTreeMap, HashSet};

use metrics_prometheus_engine::format::Options;

use super::{is_label_name, is_metric_name, Labels};

/// One decoded field value.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A varint of at most 10 bytes (padded forms accepted, as by every decoder). Returns
    /// the value and its width.
    fn varint(&mut self) -> Result<(u64, usize), String> {
        let (mut v, mut shift, start) = (0u64, 0u32, self.pos);
        loop {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok((v, self.pos - start));
            }
            shift += 7;
            if shift > 63 {
                return Err("varint longer than 10 bytes".into());
            }
        }
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let (key, _) = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0".into());
        }
        let v = match wire {
            0 => Value::Varint(self.varint()?.0),
            1 => {
                let b = self
                    .buf
                    .get(self.pos..self.pos + 8)
                    .ok_or("truncated fixed64")?;
                self.pos += 8;
                Value::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let (len, _) = self.varint()?;
                let end = self
                    .pos
                    .checked_add(usize::try_from(len).map_err(|_| "huge length")?)
                    .filter(|&e| e <= self.buf.len())
                    .ok_or_else(|| format!("field {field}: length {len} past the end"))?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Value::Bytes(b)
            }
            w => return Err(format!("field {field}: unexpected wire type {w}")),
        };
        Ok((field, v))
    }
}

fn varint(field: u64, v: Value) -> Result<u64, String> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(format!("field {field}: expected a varint")),
    }
}

fn double(field: u64, v: Value) -> Result<f64, String> {
    match v {
        Value::Fixed64(x) => Ok(f64::from_bits(x)),
        _ => Err(format!("field {field}: expected a double")),
    }
}

fn bytes<'a>(field: u64, v: Value<'a>) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!("field {field}: expected bytes")),
    }
}

fn string(field: u64, v: Value) -> Result<String, String> {
    String::from_utf8(bytes(field, v)?.to_vec()).map_err(|_| format!("field {field}: not UTF-8"))
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Sets an optional field once.
fn once<T>(slot: &mut Option<T>, v: T, what: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{what} repeated"));
    }
    *slot = Some(v);
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub struct PbExemplar {
    pub labels: Labels,
    pub value: f64,
    /// (seconds, nanos)
    pub timestamp: Option<(i64, i32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PbBucket {
    pub count: u64,
    pub upper: f64,
    pub exemplar: Option<PbExemplar>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PbHistogram {
    pub count: Option<u64>,
    pub sum: Option<f64>,
    pub buckets: Vec<PbBucket>,
    pub schema: Option<i32>,
    pub zero_threshold: Option<f64>,
    pub zero_count: Option<u64>,
    /// (offset, length)
    pub spans: Vec<(i32, u32)>,
    pub deltas: Vec<i64>,
    pub exemplars: Vec<PbExemplar>,
}

/// A `Summary` (only the applications' families have them, without quantiles).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PbSummary {
    pub count: Option<u64>,
    pub sum: Option<f64>,
    pub quantiles: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PbMetric {
    pub labels: Labels,
    pub counter: Option<f64>,
    pub gauge: Option<f64>,
    pub histogram: Option<PbHistogram>,
    pub summary: Option<PbSummary>,
}

fn summary(b: &[u8]) -> Result<PbSummary, String> {
    let mut r = Reader::new(b);
    let mut s = PbSummary::default();
    while !r.done() {
        match r.field()? {
            (1, v) => once(&mut s.count, varint(1, v)?, "Summary.sample_count")?,
            (2, v) => once(&mut s.sum, double(2, v)?, "Summary.sample_sum")?,
            (3, v) => {
                bytes(3, v)?;
                s.quantiles += 1;
            }
            (f, _) => return Err(format!("Summary: unexpected field {f}")),
        }
    }
    Ok(s)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PbFamily {
    pub name: String,
    pub help: Option<String>,
    pub ty: Option<u64>,
    pub unit: Option<String>,
    pub metrics: Vec<PbMetric>,
}

fn label_pair(b: &[u8]) -> Result<(String, String), String> {
    let mut r = Reader::new(b);
    let (mut name, mut value) = (None, None);
    while !r.done() {
        match r.field()? {
            (1, v) => once(&mut name, string(1, v)?, "LabelPair.name")?,
            (2, v) => once(&mut value, string(2, v)?, "LabelPair.value")?,
            (f, _) => return Err(format!("LabelPair: unexpected field {f}")),
        }
    }
    Ok((
        name.ok_or("LabelPair without name")?,
        value.ok_or("LabelPair without value")?,
    ))
}

/// A `Counter` or `Gauge`: exactly one `value`.
fn scalar(b: &[u8], what: &str) -> Result<f64, String> {
    let mut r = Reader::new(b);
    let mut value = None;
    while !r.done() {
        match r.field()? {
            (1, v) => once(&mut value, double(1, v)?, "value")?,
            (f, _) => return Err(format!("{what}: unexpected field {f}")),
        }
    }
    value.ok_or_else(|| format!("{what} without value"))
}

fn exemplar(b: &[u8]) -> Result<PbExemplar, String> {
    let mut r = Reader::new(b);
    let (mut labels, mut value, mut timestamp) = (Vec::new(), None, None);
    while !r.done() {
        match r.field()? {
            (1, v) => labels.push(label_pair(bytes(1, v)?)?),
            (2, v) => once(&mut value, double(2, v)?, "Exemplar.value")?,
            (3, v) => {
                let mut t = Reader::new(bytes(3, v)?);
                let (mut s, mut n) = (None, None);
                while !t.done() {
                    match t.field()? {
                        (1, v) => once(&mut s, varint(1, v)? as i64, "Timestamp.seconds")?,
                        (2, v) => {
                            let n64 = varint(2, v)? as i64;
                            let n32 = i32::try_from(n64).map_err(|_| "nanos out of range")?;
                            once(&mut n, n32, "Timestamp.nanos")?
                        }
                        (f, _) => return Err(format!("Timestamp: unexpected field {f}")),
                    }
                }
                once(
                    &mut timestamp,
                    (s.unwrap_or(0), n.unwrap_or(0)),
                    "Exemplar.timestamp",
                )?;
            }
            (f, _) => return Err(format!("Exemplar: unexpected field {f}")),
        }
    }
    Ok(PbExemplar {
        labels,
        value: value.ok_or("Exemplar without value")?,
        timestamp,
    })
}

fn histogram(b: &[u8]) -> Result<PbHistogram, String> {
    let mut r = Reader::new(b);
    let mut h = PbHistogram::default();
    while !r.done() {
        match r.field()? {
            (1, v) => once(&mut h.count, varint(1, v)?, "sample_count")?,
            (2, v) => once(&mut h.sum, double(2, v)?, "sample_sum")?,
            (3, v) => {
                let mut br = Reader::new(bytes(3, v)?);
                let (mut count, mut upper, mut ex) = (None, None, None);
                while !br.done() {
                    match br.field()? {
                        (1, v) => once(&mut count, varint(1, v)?, "cumulative_count")?,
                        (2, v) => once(&mut upper, double(2, v)?, "upper_bound")?,
                        (3, v) => once(&mut ex, exemplar(bytes(3, v)?)?, "Bucket.exemplar")?,
                        (f, _) => return Err(format!("Bucket: unexpected field {f}")),
                    }
                }
                h.buckets.push(PbBucket {
                    count: count.ok_or("bucket without cumulative_count")?,
                    upper: upper.ok_or("bucket without upper_bound")?,
                    exemplar: ex,
                });
            }
            (5, v) => {
                let s = i32::try_from(unzigzag(varint(5, v)?)).map_err(|_| "schema range")?;
                once(&mut h.schema, s, "schema")?
            }
            (6, v) => once(&mut h.zero_threshold, double(6, v)?, "zero_threshold")?,
            (7, v) => once(&mut h.zero_count, varint(7, v)?, "zero_count")?,
            (12, v) => {
                let mut sr = Reader::new(bytes(12, v)?);
                let (mut off, mut len) = (None, None);
                while !sr.done() {
                    match sr.field()? {
                        (1, v) => {
                            let o = i32::try_from(unzigzag(varint(1, v)?))
                                .map_err(|_| "span offset range")?;
                            once(&mut off, o, "BucketSpan.offset")?
                        }
                        (2, v) => {
                            let l = u32::try_from(varint(2, v)?).map_err(|_| "span length")?;
                            once(&mut len, l, "BucketSpan.length")?
                        }
                        (f, _) => return Err(format!("BucketSpan: unexpected field {f}")),
                    }
                }
                h.spans.push((off.unwrap_or(0), len.unwrap_or(0)));
            }
            (13, v) => {
                // Packed only (what the engine promises).
                if !h.deltas.is_empty() {
                    return Err("positive_delta repeated".into());
                }
                let mut dr = Reader::new(bytes(13, v)?);
                while !dr.done() {
                    h.deltas.push(unzigzag(dr.varint()?.0));
                }
            }
            (16, v) => h.exemplars.push(exemplar(bytes(16, v)?)?),
            (f, _) => return Err(format!("Histogram: unexpected field {f}")),
        }
    }
    Ok(h)
}

fn metric(b: &[u8]) -> Result<PbMetric, String> {
    let mut r = Reader::new(b);
    let mut m = PbMetric::default();
    while !r.done() {
        match r.field()? {
            (1, v) => m.labels.push(label_pair(bytes(1, v)?)?),
            (2, v) => once(&mut m.gauge, scalar(bytes(2, v)?, "Gauge")?, "gauge")?,
            (3, v) => once(&mut m.counter, scalar(bytes(3, v)?, "Counter")?, "counter")?,
            (4, v) => once(&mut m.summary, summary(bytes(4, v)?)?, "summary")?,
            (7, v) => once(&mut m.histogram, histogram(bytes(7, v)?)?, "histogram")?,
            (f, _) => return Err(format!("Metric: unexpected field {f}")),
        }
    }
    Ok(m)
}

fn family(b: &[u8]) -> Result<PbFamily, String> {
    let mut r = Reader::new(b);
    let mut f = PbFamily::default();
    let (mut name, mut help, mut ty, mut unit) = (None, None, None, None);
    while !r.done() {
        match r.field()? {
            (1, v) => once(&mut name, string(1, v)?, "name")?,
            (2, v) => once(&mut help, string(2, v)?, "help")?,
            (3, v) => once(&mut ty, varint(3, v)?, "type")?,
            (4, v) => f.metrics.push(metric(bytes(4, v)?)?),
            (5, v) => once(&mut unit, string(5, v)?, "unit")?,
            (n, _) => return Err(format!("MetricFamily: unexpected field {n}")),
        }
    }
    f.name = name.ok_or("family without name")?;
    (f.help, f.ty, f.unit) = (help, ty, unit);
    Ok(f)
}

/// Splits a delimited stream into families. Delimiters may be padded varints, but no longer
/// than 5 bytes (Prometheus' limit).
pub fn decode(stream: &[u8]) -> Result<Vec<PbFamily>, String> {
    let mut r = Reader::new(stream);
    let mut out = Vec::new();
    while !r.done() {
        let (len, width) = r.varint()?;
        if width > 5 {
            return Err(format!("delimiter of {width} bytes"));
        }
        let end = r.pos + len as usize;
        let body = stream.get(r.pos..end).ok_or("family past the end")?;
        r.pos = end;
        out.push(family(body).map_err(|e| format!("family #{}: {e}", out.len()))?);
    }
    Ok(out)
}

/// The absolute counts of the native buckets, by index, that the spans and deltas encode.
pub fn native_counts(h: &PbHistogram) -> Result<BTreeMap<i32, u64>, String> {
    let total: u64 = h.spans.iter().map(|s| u64::from(s.1)).sum();
    if total != h.deltas.len() as u64 {
        return Err(format!(
            "spans cover {total} buckets, {} deltas",
            h.deltas.len()
        ));
    }
    let mut out = BTreeMap::new();
    let (mut idx, mut count, mut d) = (0i64, 0i64, h.deltas.iter());
    for (i, &(off, len)) in h.spans.iter().enumerate() {
        if i > 0 && off < 0 {
            return Err("negative offset after the first span".into());
        }
        idx += i64::from(off);
        for _ in 0..len {
            count = count.wrapping_add(*d.next().expect("counted"));
            let k = i32::try_from(idx).map_err(|_| "index out of range")?;
            out.insert(k, count as u64);
            idx += 1;
        }
    }
    Ok(out)
}

fn ok_trace_id(e: &PbExemplar) -> Result<(), String> {
    match e.labels.as_slice() {
        [(k, v)]
            if k == "trace_id"
                && v.len() == 32
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        l => Err(format!("exemplar labels {l:?}")),
    }
}

/// Checks a decoded exposition: names, types, help and unit presence, label sets, counters
/// not negative, histogram buckets (increasing bounds, cumulative counts, `+Inf` only last
/// and with an exemplar, equal to the count), exemplars (trace id, within their bucket,
/// timestamps), native parts (schema, spans/deltas consistent, no negative count, at most
/// `sample_count` observations, empty gaps inside spans of at most 2, a no-op span when
/// nothing else marks the histogram native). Returns the number of metrics.
pub fn check_protobuf(fams: &[PbFamily], opts: &Options) -> Result<usize, String> {
    let mut names = HashSet::new();
    let mut n = 0;
    for f in fams {
        let err = |what: String| Err(format!("family {}: {what}", f.name));
        if !is_metric_name(&f.name) || !names.insert(f.name.clone()) {
            return err("bad or repeated name".into());
        }
        if f.help.is_some() != opts.help {
            return err("help presence".into());
        }
        if f.metrics.is_empty() {
            return err("no metrics".into());
        }
        let ty = f.ty.ok_or("no type")?;
        let base = match ty {
            0 => match f.name.strip_suffix("_total") {
                Some(b) => b,
                None => return err("counter without _total".into()),
            },
            1 | 4 => f.name.as_str(),
            t => return err(format!("type {t}")),
        };
        let unit = ["seconds", "bytes"]
            .into_iter()
            .find(|u| base.strip_suffix(u).is_some_and(|b| b.ends_with('_')));
        if f.unit.as_deref() != unit {
            return err(format!("unit {:?}", f.unit));
        }
        let mut sets = HashSet::new();
        for m in &f.metrics {
            n += 1;
            let mut keys = HashSet::new();
            for (k, _) in &m.labels {
                if !is_label_name(k) || !keys.insert(k) || (ty == 4 && k == "le") {
                    return err(format!("label {k:?}"));
                }
            }
            let mut canon = m.labels.clone();
            canon.sort();
            if !sets.insert(canon) {
                return err(format!("repeated label set {:?}", m.labels));
            }
            let fields = (
                m.counter.is_some(),
                m.gauge.is_some(),
                m.histogram.is_some(),
            );
            match (ty, fields) {
                (0, (true, false, false)) => {
                    let v = m.counter.expect("counter");
                    if v.is_nan() || v < 0.0 {
                        return err(format!("counter value {v}"));
                    }
                }
                (1, (false, true, false)) => {}
                (4, (false, false, true)) => {
                    if let Err(e) = check_histogram(m.histogram.as_ref().expect("histogram")) {
                        return err(format!("{:?}: {e}", m.labels));
                    }
                }
                _ => return err(format!("value fields {fields:?} for type {ty}")),
            }
        }
    }
    Ok(n)
}

/// 2^53 µs in seconds: from there on, distinct microsecond values can share a double.
const HUGE: f64 = 9_007_199_254.740_992;

fn check_histogram(h: &PbHistogram) -> Result<(), String> {
    let count = h.count.ok_or("no sample_count")?;
    let sum = h.sum.ok_or("no sample_sum")?;
    if count == 0 || sum.is_nan() || sum < 0.0 {
        return Err(format!("count {count} sum {sum}"));
    }
    check_buckets(h, count)?;
    check_native(h, count)
}

/// The classic buckets: increasing bounds, cumulative counts up to `count`, exemplars within
/// their bucket; an `+Inf` bucket only last, with an exemplar.
fn check_buckets(h: &PbHistogram, count: u64) -> Result<(), String> {
    let mut prev: Option<&PbBucket> = None;
    for (i, b) in h.buckets.iter().enumerate() {
        if b.upper.is_infinite()
            && (i + 1 != h.buckets.len() || b.count != count || b.exemplar.is_none())
        {
            return Err("+Inf bucket not last, not the count, or without exemplar".into());
        }
        if let Some(p) = prev {
            // Bounds are microseconds: above 2^53 µs (285 years) two can round to one double.
            let increasing = p.upper < b.upper || (p.upper == b.upper && p.upper >= HUGE);
            if !increasing || p.count > b.count {
                return Err(format!("buckets {p:?} then {b:?}"));
            }
        }
        if b.count > count {
            return Err("bucket above the count".into());
        }
        if let Some(e) = &b.exemplar {
            ok_trace_id(e)?;
            let lo = prev.map_or(f64::NEG_INFINITY, |p| p.upper);
            let above = lo < e.value || (lo == e.value && lo >= HUGE);
            if !(above && e.value <= b.upper) || e.timestamp.is_none() {
                return Err(format!("exemplar {e:?} outside ({lo}, {}]", b.upper));
            }
        }
        prev = Some(b);
    }
    Ok(())
}

/// The native fields: all or none, a valid schema and zero bucket, the no-op span only when
/// needed, spans as client_golang groups them, exemplars with timestamps.
fn check_native(h: &PbHistogram, count: u64) -> Result<(), String> {
    let native = h.schema.is_some();
    if native != h.zero_threshold.is_some() || native != h.zero_count.is_some() {
        return Err("partial native fields".into());
    }
    if !native {
        if !h.spans.is_empty() || !h.deltas.is_empty() || !h.exemplars.is_empty() {
            return Err("native fields without schema".into());
        }
        return Ok(());
    }
    let schema = h.schema.expect("native");
    if !(-4..=8).contains(&schema) {
        return Err(format!("schema {schema}"));
    }
    let (zt, zc) = (
        h.zero_threshold.expect("native"),
        h.zero_count.expect("native"),
    );
    if zt.is_nan() || zt < 0.0 {
        return Err(format!("zero threshold {zt}"));
    }
    if h.spans == [(0, 0)] {
        if zt != 0.0 || zc != 0 || !h.deltas.is_empty() {
            return Err("no-op span on a histogram that needs none".into());
        }
    } else {
        if h.spans.is_empty() && zt == 0.0 && zc == 0 {
            return Err("native histogram without spans nor zero bucket".into());
        }
        if h.spans.iter().any(|s| s.1 == 0) {
            return Err("empty span".into());
        }
        if h.spans.iter().skip(1).any(|s| s.0 <= 2) {
            return Err("gap of 2 or fewer buckets between spans".into());
        }
        check_native_buckets(h, zc, count)?;
    }
    for e in &h.exemplars {
        ok_trace_id(e)?;
        if e.timestamp.is_none() {
            return Err("native exemplar without timestamp".into());
        }
    }
    Ok(())
}

/// The native buckets of a histogram with spans: they and the zero bucket hold exactly
/// `count`, and every span starts and ends with a non-empty bucket, with no run of 3 empty
/// ones inside.
fn check_native_buckets(h: &PbHistogram, zc: u64, count: u64) -> Result<(), String> {
    let counts = native_counts(h)?;
    let mut total = zc;
    for (&i, &c) in &counts {
        if c > i64::MAX as u64 {
            return Err(format!("negative count at {i}"));
        }
        total = total.checked_add(c).ok_or("native counts overflow")?;
    }
    // Prometheus' ErrHistogramCountMismatch (model/histogram), also enforced by Mimir and
    // Cortex: the zero bucket and the buckets hold exactly the count.
    if total != count {
        return Err(format!("native buckets hold {total}, the count is {count}"));
    }
    // First and last bucket of every span are non-empty; empty runs inside are short.
    let mut idx = 0i64;
    for (i, &(off, len)) in h.spans.iter().enumerate() {
        idx = if i == 0 {
            i64::from(off)
        } else {
            idx + i64::from(off)
        };
        let first = counts[&(idx as i32)];
        let last = counts[&((idx + i64::from(len) - 1) as i32)];
        if first == 0 || last == 0 {
            return Err("span starting or ending with an empty bucket".into());
        }
        let mut run = 0;
        for k in idx..idx + i64::from(len) {
            run = if counts[&(k as i32)] == 0 { run + 1 } else { 0 };
            if run > 2 {
                return Err("3 empty buckets inside a span".into());
            }
        }
        idx += i64::from(len);
    }
    Ok(())
}

/// A sample value: an exact integer (histogram counts) or a double.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleValue {
    Int(u64),
    Float(f64),
}

/// `(sample name, labels, value)`, labels unescaped; `le` normalised to Rust's shortest
/// rendering of the bound's double (`+Inf` as is).
pub type Sample = (String, Labels, SampleValue);

fn le(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// The samples a decoded exposition stands for, as the text format would list them
/// (buckets with `le`, `+Inf` from `sample_count`, `_sum`, `_count`), in order.
pub fn pb_samples(fams: &[PbFamily]) -> Vec<Sample> {
    let mut out = Vec::new();
    for f in fams {
        for m in &f.metrics {
            if let Some(v) = m.counter.or(m.gauge) {
                out.push((f.name.clone(), m.labels.clone(), SampleValue::Float(v)));
            }
            if let Some(h) = &m.histogram {
                let with_le = |l: String| {
                    let mut ls = m.labels.clone();
                    ls.push(("le".into(), l));
                    ls
                };
                for b in h.buckets.iter().filter(|b| b.upper.is_finite()) {
                    out.push((
                        format!("{}_bucket", f.name),
                        with_le(le(b.upper)),
                        SampleValue::Int(b.count),
                    ));
                }
                let count = h.count.unwrap_or(0);
                out.push((
                    format!("{}_bucket", f.name),
                    with_le("+Inf".into()),
                    SampleValue::Int(count),
                ));
                out.push((
                    format!("{}_sum", f.name),
                    m.labels.clone(),
                    SampleValue::Float(h.sum.unwrap_or(f64::NAN)),
                ));
                out.push((
                    format!("{}_count", f.name),
                    m.labels.clone(),
                    SampleValue::Int(count),
                ));
            }
        }
    }
    out
}

/// Undoes the text formats' escapes (`\\`, `\"`, `\n`).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The samples of a text-format exposition (already checked by [`super::check`]): name,
/// labels unescaped (`le` normalised as in [`pb_samples`]) and the value as printed.
pub fn text_samples(text: &str) -> Vec<(String, Labels, String)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (head, value) = line.rsplit_once(' ').expect("checked");
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').expect("checked");
                let mut labels = Vec::new();
                let mut r = rest;
                while !r.is_empty() {
                    let (k, v) = r.split_once("=\"").expect("checked");
                    let b = v.as_bytes();
                    let mut i = 0;
                    while b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    let value = unescape(&v[..i]);
                    let value = if k == "le" && value != "+Inf" {
                        le(value.parse().expect("le"))
                    } else {
                        value
                    };
                    labels.push((k.to_owned(), value));
                    r = v[i + 1..].strip_prefix(',').unwrap_or(&v[i + 1..]);
                }
                (n, labels)
            }
        };
        out.push((name.to_owned(), labels, value.to_owned()));
    }
    out
}

/// The `# HELP` texts of a text-format exposition, unescaped, by family.
pub fn text_helps(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| {
            let (name, help) = l.split_once(' ').expect("checked");
            (name.to_owned(), unescape(help))
        })
        .collect()
}

/// Compares the decoded samples with the text format's: same names and labels in the same
/// order; integers as printed, doubles bit for bit equal to the parsed decimal.
pub fn same_samples(pb: &[Sample], text: &[(String, Labels, String)]) -> Result<(), String> {
    if pb.len() != text.len() {
        return Err(format!("{} samples vs {}", pb.len(), text.len()));
    }
    for (x, y) in pb.iter().zip(text) {
        let same_value = match &x.2 {
            SampleValue::Int(u) => u.to_string() == y.2,
            SampleValue::Float(f) => y.2.parse::<f64>().is_ok_and(|t| t.to_bits() == f.to_bits()),
        };
        if x.0 != y.0 || x.1 != y.1 || !same_value {
            return Err(format!("{x:?} vs {y:?}"));
        }
    }
    Ok(())
}
