//! The protobuf exposition: golden bytes for a small layout (checked field by field, by
//! hand), decoding by the independent reader of tests/check/protobuf.rs and by Python's
//! protobuf library (`python_decoder_agrees`, ignored by default: it needs Python with
//! `protobuf` and `grpcio-tools`), and rendering details.

mod check;

use std::fmt::Write as _;

use check::protobuf::{check_protobuf, decode, PbExemplar, PbFamily};
use metrics_prometheus_engine::format::{
    native_bucket_index, Exemplar, Format, Histogram, Layout, MetricType, NativeSpec, Options,
};

fn labels(l: &[(&str, &str)]) -> Vec<(String, String)> {
    l.iter().map(|&(k, v)| (k.into(), v.into())).collect()
}

const TRACE: [u8; 32] = *b"4bf92f3577b34da6a3ce929d0e0e4736";

fn no_help() -> Options {
    Options {
        help: false,
        ..Options::default()
    }
}

fn latency() -> Histogram {
    Histogram {
        family: "request_duration_seconds",
        help: "Time.",
        bounds_us: vec![5_000, 1_000_000],
        series: vec![labels(&[("method", "GET")])],
        native: None,
    }
}

const METRICS: [(&str, MetricType); 2] = [
    ("myapp.hits", MetricType::Counter),
    ("worker.1.avg_response_time", MetricType::Gauge),
];

/// A counter (negative: exported as 0), a gauge in seconds and a histogram (5 ms, 1 s,
/// +Inf) with one series and exemplars on its first and +Inf buckets.
fn small(opts: &Options) -> (Layout, Vec<i64>, Vec<u64>, Vec<Option<Exemplar>>) {
    let layout = Layout::with_histograms(&METRICS, &[], &[latency()], opts);
    let mut ex = vec![None; 4];
    ex[0] = Some(Exemplar {
        trace_id: TRACE,
        value_us: 2_000,
        timestamp_us: 1_700_000_000_250_000,
    });
    ex[2] = Some(Exemplar {
        trace_id: TRACE,
        value_us: 2_500_000,
        timestamp_us: 1_700_000_001_000_000,
    });
    (layout, vec![-3, 1_500], vec![2, 1, 1, 3_504_000], ex)
}

fn render(layout: &Layout, values: &[i64], hist: &[u64], ex: &[Option<Exemplar>]) -> Vec<u8> {
    let mut out = Vec::new();
    layout.render_all(values, hist, ex, Format::Protobuf, &mut out);
    out
}

/// Bytes from hex pairs and `"quoted ASCII"`, whitespace and `#` comments ignored.
fn bytes(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in spec.lines() {
        let line = line.split(" #").next().unwrap_or("");
        let mut rest = line.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('"') {
                let (s, r) = r.split_once('"').expect("closing quote");
                out.extend_from_slice(s.as_bytes());
                rest = r.trim_start();
            } else {
                let (tok, r) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push(u8::from_str_radix(tok, 16).expect("hex byte"));
                rest = r.trim_start();
            }
        }
    }
    out
}

/// The golden stream, without help. Lengths in parentheses, in decimal.
const SMALL: &str = r#"
27                                  # family (39)
  0a 16 "uwsgi_myapp_hits_total"    # name (22): the counter's sample name
  18 00                             # type COUNTER
  22 0b                             # metric (11), no labels
    1a 09                           # counter (9)
      09 00 00 00 00 00 00 00 00    # value 0.0 (-3 clamped)
4d                                  # family (77)
  0a 26 "uwsgi_worker_avg_response_time_seconds"
  18 01                             # type GAUGE
  22 18                             # metric (24)
    0a 0b 0a 06 "worker" 12 01 "1"  # label worker="1"
    12 09                           # gauge (9)
      09 fa 7e 6a bc 74 93 58 3f    # value 0.0015 (0x3f589374bc6a7efa)
  2a 07 "seconds"                   # unit
fb 01                               # family (251)
  0a 1e "uwsgi_request_duration_seconds"
  18 04                             # type HISTOGRAM
  22 cd 01                          # metric (205)
    0a 0d 0a 06 "method" 12 03 "GET"
    3a bb 01                        # histogram (187)
      08 04                         # sample_count 4
      11 d5 78 e9 26 31 08 0c 40    # sample_sum 3.504
      1a 51                         # bucket (81)
        08 02                       # cumulative_count 2
        11 7b 14 ae 47 e1 7a 74 3f  # upper_bound 0.005
        1a 44                       # exemplar (68)
          0a 2c 0a 08 "trace_id" 12 20 "4bf92f3577b34da6a3ce929d0e0e4736"
          11 fc a9 f1 d2 4d 62 60 3f  # value 0.002
          1a 0b                     # timestamp (11)
            08 80 e2 cf aa 06       # seconds 1700000000
            10 80 e5 9a 77          # nanos 250000000
      1a 0b                         # bucket (11)
        08 03                       # cumulative_count 3
        11 00 00 00 00 00 00 f0 3f  # upper_bound 1.0
      1a 4e                         # bucket (78): +Inf, only because of its exemplar
        08 04                       # cumulative_count 4 = sample_count
        11 00 00 00 00 00 00 f0 7f  # upper_bound +Inf
        1a 41                       # exemplar (65)
          0a 2c 0a 08 "trace_id" 12 20 "4bf92f3577b34da6a3ce929d0e0e4736"
          11 00 00 00 00 00 00 04 40  # value 2.5
          1a 08                     # timestamp (8)
            08 81 e2 cf aa 06       # seconds 1700000001
            10 00                   # nanos 0
  2a 07 "seconds"                   # unit
"#;

/// The histogram family without exemplars, with HELP: the lengths of the family (108),
/// metric (55) and histogram (37) are padded to the two bytes their largest possible values
/// need (`ec 00`, `b7 00`, `a5 00`).
const SMALL_HIST_PLAIN: &str = r#"
ec 00                               # family (108, padded)
  0a 1e "uwsgi_request_duration_seconds"
  12 05 "Time."                     # help
  18 04                             # type HISTOGRAM
  22 b7 00                          # metric (55, padded)
    0a 0d 0a 06 "method" 12 03 "GET"
    3a a5 00                        # histogram (37, padded)
      08 04                         # sample_count 4
      11 d5 78 e9 26 31 08 0c 40    # sample_sum 3.504
      1a 0b 08 02 11 7b 14 ae 47 e1 7a 74 3f   # bucket 2 <= 0.005
      1a 0b 08 03 11 00 00 00 00 00 00 f0 3f   # bucket 3 <= 1
  2a 07 "seconds"
"#;

#[test]
fn golden_bytes() {
    let (l, v, h, e) = small(&no_help());
    assert_eq!(render(&l, &v, &h, &e), bytes(SMALL));
    let plain = Layout::with_histograms(&[], &[], &[latency()], &Options::default());
    assert_eq!(render(&plain, &[], &h, &[]), bytes(SMALL_HIST_PLAIN));
    assert_eq!(
        Format::Protobuf.content_type(),
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
}

#[test]
fn golden_decodes() {
    let (l, v, h, e) = small(&no_help());
    let fams = decode(&render(&l, &v, &h, &e)).expect("decodes");
    assert_eq!(check_protobuf(&fams, &no_help()), Ok(3));
    let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "uwsgi_myapp_hits_total",
            "uwsgi_worker_avg_response_time_seconds",
            "uwsgi_request_duration_seconds"
        ]
    );
    let hist = fams[2].metrics[0].histogram.as_ref().expect("histogram");
    assert_eq!(hist.count, Some(4));
    assert_eq!(hist.sum, Some(3.504));
    let b: Vec<(u64, f64)> = hist.buckets.iter().map(|b| (b.count, b.upper)).collect();
    assert_eq!(b, [(2, 0.005), (3, 1.0), (4, f64::INFINITY)]);
    assert_eq!(
        hist.buckets[0].exemplar,
        Some(PbExemplar {
            labels: labels(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")]),
            value: 0.002,
            timestamp: Some((1_700_000_000, 250_000_000)),
        })
    );
    assert!(hist.schema.is_none() && hist.spans.is_empty() && hist.exemplars.is_empty());
}

/// HELP is the raw text (no escapes), with the control characters the text formats replace
/// by a space replaced likewise; label values too.
#[test]
fn help_and_labels_are_raw() {
    let h = Histogram {
        family: "x_seconds",
        help: "a \"b\" \\ c\nd\re",
        bounds_us: vec![],
        series: vec![labels(&[("path", "/a\"b\\c\nd\re")])],
        native: None,
    };
    let l = Layout::with_histograms(&[], &[], &[h], &Options::default());
    let fams = decode(&render(&l, &[], &[1, 5], &[])).expect("decodes");
    assert_eq!(check_protobuf(&fams, &Options::default()), Ok(1));
    assert_eq!(fams[0].help.as_deref(), Some("a \"b\" \\ c\nd e"));
    assert_eq!(
        fams[0].metrics[0].labels,
        labels(&[("path", "/a\"b\\c\nd e")])
    );
}

#[test]
fn missing_values_and_empty_series_are_left_out() {
    let (l, _, h, e) = small(&no_help());
    // No value for the gauge: its family is left out, the counter's length recomputed.
    let fams = decode(&render(&l, &[7], &h, &e)).expect("decodes");
    assert_eq!(fams.len(), 2);
    assert_eq!(fams[0].metrics[0].counter, Some(7.0));
    // No observation: no histogram family.
    let fams = decode(&render(&l, &[7, 8], &[0, 0, 0, 0], &e)).expect("decodes");
    assert_eq!(fams.len(), 2);
    // Nothing at all: an empty body.
    assert!(render(&l, &[], &[], &[]).is_empty());
    // Short hist: the series is left out.
    assert_eq!(
        decode(&render(&l, &[], &h[..3], &e))
            .expect("decodes")
            .len(),
        0
    );
}

/// `types: false` only removes text lines: protobuf stays typed, the histogram one family.
#[test]
fn always_typed() {
    let opts = Options {
        types: false,
        ..no_help()
    };
    let (l, v, h, e) = small(&opts);
    let (typed, ..) = small(&no_help());
    assert_eq!(render(&l, &v, &h, &e), render(&typed, &v, &h, &e));
}

/// Rendering into a buffer that already holds a scrape's worth of capacity allocates nothing.
#[test]
fn steady_state_keeps_the_buffer() {
    let (l, v, h, e) = small(&no_help());
    let mut out = Vec::new();
    l.render_all(&v, &h, &e, Format::Protobuf, &mut out);
    let (cap, ptr) = (out.capacity(), out.as_ptr());
    for _ in 0..3 {
        out.clear();
        l.render_all(&v, &h, &e, Format::Protobuf, &mut out);
        assert_eq!((out.capacity(), out.as_ptr()), (cap, ptr));
    }
}

/// client_golang's "factor 1.1 results in schema 3" case (`histogram_test.go`): observations
/// 0, 1, 2 and 3 s give zero count 1, spans (0, 1), (7, 1), (4, 1) and deltas 1, 0, 0. Here
/// with a classic bucket at 1 s too, and an exemplar on the +Inf bucket, repeated as a native
/// exemplar.
const NATIVE: &str = r#"
82 02                               # family (258, two bytes anyway)
  0a 1e "uwsgi_request_duration_seconds"
  18 04                             # type HISTOGRAM
  22 d4 01                          # metric (212), no labels
    3a d1 01                        # histogram (209)
      08 04                         # sample_count 4
      11 00 00 00 00 00 00 18 40    # sample_sum 6
      1a 0b 08 02 11 00 00 00 00 00 00 f0 3f   # bucket 2 <= 1
      1a 4e                         # bucket (78): +Inf with its exemplar
        08 04 11 00 00 00 00 00 00 f0 7f
        1a 41 0a 2c 0a 08 "trace_id" 12 20 "4bf92f3577b34da6a3ce929d0e0e4736"
          11 00 00 00 00 00 00 08 40  # value 3
          1a 08 08 80 e2 cf aa 06 10 00
      28 06                         # schema 3 (zigzag 6)
      31 00 00 00 00 00 00 00 00    # zero_threshold 0
      38 01                         # zero_count 1
      62 04 08 00 10 01             # span offset 0 length 1: index 0 (1 s)
      62 04 08 0e 10 01             # span offset 7 (zigzag 14) length 1: index 8 (2 s)
      62 04 08 08 10 01             # span offset 4 (zigzag 8) length 1: index 13 (3 s)
      6a 83 00 02 00 00             # deltas (3, padded): 1, 0, 0 (zigzag 2, 0, 0)
      82 01 41                      # exemplars (field 16), the +Inf bucket's again
        0a 2c 0a 08 "trace_id" 12 20 "4bf92f3577b34da6a3ce929d0e0e4736"
        11 00 00 00 00 00 00 08 40
        1a 08 08 80 e2 cf aa 06 10 00
  2a 07 "seconds"
"#;

fn native_hist(spec: NativeSpec) -> Histogram {
    Histogram {
        family: "request_duration_seconds",
        help: "Time.",
        bounds_us: vec![1_000_000],
        series: vec![vec![]],
        native: Some(spec),
    }
}

const SCHEMA3: NativeSpec = NativeSpec {
    schema: 3,
    zero_threshold_us: 0,
    first_index: -2,
    buckets: 16,
};

/// Observations in microseconds → the `hist` slots of one series of `h` (the host's job).
fn observe(h: &Histogram, obs: &[u64]) -> Vec<u64> {
    let n = h.native.expect("native");
    let nb = h.bounds_us.len() + 1;
    let mut slots = vec![0; h.slots_per_series()];
    for &v in obs {
        slots[h.bounds_us.partition_point(|&b| b < v)] += 1;
        slots[nb] += v;
        if v <= n.zero_threshold_us {
            slots[nb + 1] += 1;
        } else {
            let i = native_bucket_index(v as f64 / 1e6, n.schema);
            let k = (i64::from(i) - i64::from(n.first_index)).clamp(0, n.buckets as i64 - 1);
            slots[nb + 2 + k as usize] += 1;
        }
    }
    slots
}

#[test]
fn golden_native() {
    let h = native_hist(SCHEMA3);
    let slots = observe(&h, &[0, 1_000_000, 2_000_000, 3_000_000]);
    assert_eq!(slots.len(), 3 + 1 + 16);
    assert_eq!(
        &slots[3..],
        &[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    );
    let mut ex = vec![None; slots.len()];
    ex[1] = Some(Exemplar {
        trace_id: TRACE,
        value_us: 3_000_000,
        timestamp_us: 1_700_000_000_000_000,
    });
    // At a native position: ignored.
    ex[10] = ex[1];
    let l = Layout::with_histograms(&[], &[], &[h], &no_help());
    assert_eq!(l.histogram_slots(), 20);
    let out = render(&l, &[], &slots, &ex);
    assert_eq!(out, bytes(NATIVE));
    let fams = decode(&out).expect("decodes");
    assert_eq!(check_protobuf(&fams, &no_help()), Ok(1));
    // The text formats ignore the native part.
    let mut text = Vec::new();
    l.render_all(&[], &slots, &ex, Format::Text, &mut text);
    assert_eq!(
        String::from_utf8(text).expect("UTF-8"),
        "# TYPE uwsgi_request_duration_seconds histogram\n\
         uwsgi_request_duration_seconds_bucket{le=\"1\"} 2\n\
         uwsgi_request_duration_seconds_bucket{le=\"+Inf\"} 4\n\
         uwsgi_request_duration_seconds_sum 6\n\
         uwsgi_request_duration_seconds_count 4\n"
    );
}

/// Gaps of one or two empty buckets stay inside a span, a gap of three starts a new one;
/// deltas run across spans (client_golang's `makeBuckets`).
#[test]
fn native_spans_and_deltas() {
    let spec = NativeSpec {
        schema: 0,
        zero_threshold_us: 0,
        first_index: -3,
        buckets: 16,
    };
    let h = native_hist(spec);
    let mut slots = vec![0u64; h.slots_per_series()];
    // Indexes 0, 2, 5 and 9 (dense positions 3, 5, 8, 12) with counts 4, 1, 7, 2.
    for (k, c) in [(3, 4), (5, 1), (8, 7), (12, 2)] {
        slots[4 + k] = c;
    }
    slots[1] = 14;
    let l = Layout::with_histograms(&[], &[], &[h], &no_help());
    let fams = decode(&render(&l, &[], &slots, &[])).expect("decodes");
    assert_eq!(check_protobuf(&fams, &no_help()), Ok(1));
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert_eq!(hist.schema, Some(0));
    assert_eq!(hist.spans, [(0, 6), (3, 1)]);
    assert_eq!(hist.deltas, [4, -4, 1, -1, 0, 7, -5]);

    // Only the zero bucket: no span needed.
    let mut empty = vec![0u64; slots.len()];
    empty[0] = 1;
    empty[3] = 1;
    let fams = decode(&render(&l, &[], &empty, &[])).expect("decodes");
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert!(hist.spans.is_empty() && hist.zero_count == Some(1));
    // With a zero threshold too.
    let l = Layout::with_histograms(
        &[],
        &[],
        &[native_hist(NativeSpec {
            zero_threshold_us: 50,
            ..spec
        })],
        &no_help(),
    );
    let fams = decode(&render(&l, &[], &empty, &[])).expect("decodes");
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert!(hist.spans.is_empty() && hist.zero_threshold == Some(0.00005));
    assert_eq!(check_protobuf(&fams, &no_help()), Ok(1));
}

/// Counts past `i64::MAX` wrap in the deltas (as int64 counts would) without overflowing
/// the space reserved for them; a decoder adding the deltas with wrapping gets them back.
#[test]
fn native_huge_counts() {
    let h = native_hist(NativeSpec {
        schema: 1,
        zero_threshold_us: 0,
        first_index: 0,
        buckets: 6,
    });
    let dense = [i64::MAX as u64 + 5, 0, 0, 1, 7, i64::MAX as u64 - 20];
    let mut slots = vec![dense.iter().sum(), 0, 0, 0];
    slots.extend_from_slice(&dense);
    let l = Layout::with_histograms(&[], &[], &[h], &no_help());
    let fams = decode(&render(&l, &[], &slots, &[])).expect("decodes");
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert_eq!(hist.spans, [(0, 6)]);
    let counts = check::protobuf::native_counts(hist).expect("consistent");
    let got: Vec<u64> = counts.values().copied().collect();
    assert_eq!(got, dense);
}

/// A scrape that read a request in the classic buckets but not yet in the native ones (or the
/// other way round) still sends a consistent sample: the count is the smaller total, the
/// classic buckets are capped at it and the native ones trimmed from the top.
#[test]
fn torn_reads_give_a_consistent_sample() {
    let l = Layout::with_histograms(&[], &[], &[native_hist(SCHEMA3)], &no_help());
    // Classic: 2 in le=1, 1 in +Inf; native: the same 3 minus the +Inf one, plus nothing.
    let mut slots = observe(&native_hist(SCHEMA3), &[1, 1_000_000, 2_000_000]);
    slots[1] += 1;
    let fams = decode(&render(&l, &[], &slots, &[])).expect("decodes");
    assert_eq!(check_protobuf(&fams, &no_help()), Ok(1));
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert_eq!(hist.count, Some(3));
    assert_eq!(
        hist.buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
        [2]
    );
    // Native ahead: its highest bucket loses the extra observation.
    let mut slots = observe(&native_hist(SCHEMA3), &[1, 1_000_000, 2_000_000]);
    let top = slots
        .iter()
        .rposition(|&c| c != 0)
        .expect("a native bucket");
    slots[top] += 1;
    let fams = decode(&render(&l, &[], &slots, &[])).expect("decodes");
    assert_eq!(check_protobuf(&fams, &no_help()), Ok(1));
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert_eq!(hist.count, Some(3));
    let counts = check::protobuf::native_counts(hist).expect("consistent");
    assert_eq!(
        counts.values().sum::<u64>() + hist.zero_count.unwrap_or(0),
        3
    );
    // Nothing read on the native side yet: no sample at all (it comes in the next scrape).
    let mut slots = vec![0u64; l.histogram_slots()];
    slots[0] = 1;
    assert!(render(&l, &[], &slots, &[]).is_empty());
}

/// An invalid spec, or `hist` ending inside the native slots: a classic histogram.
#[test]
fn native_left_out() {
    let bad = native_hist(NativeSpec {
        schema: 9,
        ..SCHEMA3
    });
    let slots = observe(&native_hist(SCHEMA3), &[0, 1_000_000, 2_000_000]);
    let l = Layout::with_histograms(&[], &[], &[bad], &no_help());
    assert_eq!(l.histogram_slots(), 20);
    let fams = decode(&render(&l, &[], &slots, &[])).expect("decodes");
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert!(hist.schema.is_none() && hist.spans.is_empty());
    let l = Layout::with_histograms(&[], &[], &[native_hist(SCHEMA3)], &no_help());
    let fams = decode(&render(&l, &[], &slots[..10], &[])).expect("decodes");
    let hist = fams[0].metrics[0].histogram.as_ref().expect("histogram");
    assert!(hist.schema.is_none() && hist.count == Some(3));
}

/// The reader and the checks reject what they must.
#[test]
fn checker_rejects_bad_protobuf() {
    let o = no_help();
    let good = bytes(SMALL);
    assert!(check_protobuf(&decode(&good).expect("decodes"), &o).is_ok());
    let mutate = |at: usize, b: u8| {
        let mut v = good.clone();
        v[at] = b;
        v
    };
    // Offsets in SMALL: 0 family length, 25 type tag, 26 type, 29 counter tag, 32..40 value.
    let undecodable = [
        good[..good.len() - 1].to_vec(),     // truncated
        mutate(0, 0x28),                     // family longer than its fields
        mutate(25, 0x1b),                    // type field with wire type 3
        mutate(25, 0x30),                    // unknown field 6
        bytes("86 80 80 80 80 00"),          // delimiter of 6 bytes
        bytes("02 18 00 02 18 00"),          // family without name
        bytes("06 0a 01 \"x\" 0a 01 \"y\""), // name repeated
    ];
    for b in &undecodable {
        assert!(decode(b).is_err(), "decoded {b:02x?}");
    }
    let invalid = [
        mutate(26, 0x01),                          // counter typed GAUGE (and named _total)
        mutate(29, 0x12),                          // counter value in the gauge field
        mutate(39, 0xbf),                          // counter value -0.0078125
        bytes("07 0a 01 \"x\" 18 00 22 00"),       // counter name without _total, no value
        bytes("05 0a 01 \"x\" 18 01"),             // family without metrics
        bytes("09 0a 01 \"x\" 18 07 22 02 1a 00"), // type 7
    ];
    for b in &invalid {
        let r = decode(b).and_then(|f| check_protobuf(&f, &o));
        assert!(r.is_err(), "accepted {b:02x?}");
    }
    // Histogram rules, on decoded structures.
    let mut fams = decode(&good).expect("decodes");
    fn h(f: &mut [PbFamily]) -> &mut check::protobuf::PbHistogram {
        f[2].metrics[0].histogram.as_mut().expect("histogram")
    }
    let cases: [fn(&mut check::protobuf::PbHistogram); 9] = [
        |h| h.buckets.swap(0, 1),         // bounds decreasing
        |h| h.buckets[1].count = 1,       // not cumulative
        |h| h.buckets[2].count = 3,       // +Inf differs from the count
        |h| h.buckets[2].exemplar = None, // +Inf without exemplar
        |h| h.buckets[0].exemplar.as_mut().expect("ex").value = 0.5, // outside its bucket
        |h| {
            h.buckets[0].exemplar.as_mut().expect("ex").labels[0]
                .1
                .make_ascii_uppercase()
        },
        |h| h.schema = Some(3), // partial native fields
        |h| {
            (h.schema, h.zero_threshold, h.zero_count) = (Some(3), Some(0.0), Some(0));
            h.spans = vec![(0, 2), (1, 1)]; // gap of 1 between spans
            h.deltas = vec![1, 0, 0];
        },
        |h| {
            (h.schema, h.zero_threshold, h.zero_count) = (Some(3), Some(0.0), Some(0));
            h.spans = vec![(5, 3)]; // deltas do not match the spans
            h.deltas = vec![1, -1];
        },
    ];
    for (i, f) in cases.iter().enumerate() {
        let mut bad = fams.clone();
        f(h(&mut bad));
        assert!(check_protobuf(&bad, &o).is_err(), "case {i} accepted");
    }
    // A valid native part passes.
    let n = h(&mut fams);
    (n.schema, n.zero_threshold, n.zero_count) = (Some(3), Some(0.0), Some(1));
    n.spans = vec![(-2, 4), (3, 1)];
    n.deltas = vec![1, -1, 0, 1, 0];
    assert_eq!(check_protobuf(&fams, &o), Ok(3));
}

// ---------------------------------------------------------------------------
// Cross-check with Python's protobuf decoder.
// ---------------------------------------------------------------------------

fn bits(x: f64) -> u64 {
    x.to_bits()
}

fn json_str(s: &str) -> String {
    // Python's json.dumps with ensure_ascii (the default).
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    write!(out, "\\u{u:04x}").expect("write");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_labels(l: &[(String, String)]) -> String {
    let items: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("[{}, {}]", json_str(k), json_str(v)))
        .collect();
    format!("[{}]", items.join(", "))
}

fn exemplar_line(e: &PbExemplar) -> String {
    let (s, n) = e.timestamp.unwrap_or((0, 0));
    format!("ex {} {} {s} {n}", json_labels(&e.labels), bits(e.value))
}

/// The line form engine/tests/data/decode_delimited.py prints (proto3 defaults for absent
/// fields).
fn canonical(fams: &[PbFamily]) -> String {
    let mut lines = Vec::new();
    for f in fams {
        lines.push(format!(
            "family {} {} {} {}",
            f.name,
            f.ty.unwrap_or(0),
            json_str(f.help.as_deref().unwrap_or("")),
            json_str(f.unit.as_deref().unwrap_or(""))
        ));
        for m in &f.metrics {
            lines.push(format!("metric {}", json_labels(&m.labels)));
            if let Some(v) = m.counter {
                lines.push(format!("counter {}", bits(v)));
            }
            if let Some(v) = m.gauge {
                lines.push(format!("gauge {}", bits(v)));
            }
            if let Some(h) = &m.histogram {
                lines.push(format!(
                    "hist {} {}",
                    h.count.unwrap_or(0),
                    bits(h.sum.unwrap_or(0.0))
                ));
                for b in &h.buckets {
                    lines.push(format!("bucket {} {}", b.count, bits(b.upper)));
                    if let Some(e) = &b.exemplar {
                        lines.push(exemplar_line(e));
                    }
                }
                lines.push(format!(
                    "native {} {} {}",
                    h.schema.unwrap_or(0),
                    bits(h.zero_threshold.unwrap_or(0.0)),
                    h.zero_count.unwrap_or(0)
                ));
                for (o, l) in &h.spans {
                    lines.push(format!("span {o} {l}"));
                }
                let d: Vec<String> = h.deltas.iter().map(i64::to_string).collect();
                lines.push(format!("deltas [{}]", d.join(", ")));
                for e in &h.exemplars {
                    lines.push(exemplar_line(e));
                }
            }
        }
    }
    lines.join("\n") + "\n"
}

/// Streams for the cross-check: the golden layout, uWSGI-like families with escapes, and a
/// wide histogram with large counts and exemplars everywhere.
fn cross_check_streams() -> Vec<Vec<u8>> {
    let (l, v, h, e) = small(&no_help());
    let mut streams = vec![render(&l, &v, &h, &e)];
    let (l, ..) = small(&Options::default());
    streams.push(render(&l, &v, &h, &e));
    let metrics: Vec<(String, MetricType)> = (0..40)
        .map(|i| {
            let t = if i % 3 == 0 {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            (format!("my\"app\\{}.shard.{i}.Latency_ms", i % 4), t)
        })
        .collect();
    let list: Vec<(&str, MetricType)> = metrics.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let values: Vec<i64> = (0..40)
        .map(|i: i64| (i - 20) * 1_234_567_891_234_567 + i)
        .collect();
    let wide = Histogram {
        family: "wide_seconds",
        help: "Wide é\n\"histogram\".",
        bounds_us: (1..=30).map(|i| i * i * 1_000).collect(),
        series: (0..5)
            .map(|i| labels(&[("i", &i.to_string()), ("x", "é\n")]))
            .collect(),
        native: None,
    };
    let per = wide.slots_per_series();
    let hist: Vec<u64> = (0..5 * per as u64)
        .map(|i| if i % 7 == 0 { u64::MAX / 64 } else { i * 977 })
        .collect();
    let ex: Vec<Option<Exemplar>> = (0..5 * per)
        .map(|i| {
            let b = i % per;
            (b < 31).then(|| Exemplar {
                trace_id: TRACE,
                value_us: wide.bounds_us.get(b).copied().unwrap_or(u64::MAX / 2),
                timestamp_us: 1_700_000_000_000_000 - i as i64 * 999_999_937,
            })
        })
        .collect();
    let layout = Layout::with_histograms(&list, &[], &[wide], &Options::default());
    streams.push(render(&layout, &values, &hist, &ex));
    // Native buckets: the golden case, and schema 8 over 1 µs .. 1 h with large counts.
    streams.push(bytes(NATIVE));
    let fine = NativeSpec {
        schema: 8,
        zero_threshold_us: 1,
        first_index: native_bucket_index(2e-6, 8),
        buckets: (native_bucket_index(3600.0, 8) - native_bucket_index(2e-6, 8)) as usize + 1,
    };
    let h = Histogram {
        native: Some(fine),
        series: vec![labels(&[("a", "1")]), labels(&[("a", "2")])],
        ..native_hist(fine)
    };
    let obs: Vec<u64> = (0..5_000u64)
        .map(|i| (i * i * 7_919) % 4_000_000_000)
        .collect();
    let mut hist = observe(&h, &obs);
    hist.extend(observe(&h, &obs[..17]));
    hist[0] = u64::MAX / 3;
    let l = Layout::with_histograms(&[], &[], &[h], &Options::default());
    streams.push(render(&l, &[], &hist, &[]));
    streams
}

/// Python's protobuf library decodes every stream to what the checker's reader decodes.
/// Run with `MP_PYTHON=$MP_TOOLS/bin/python cargo test -p metrics_prometheus_engine --test
/// format_protobuf -- --ignored` after `$MP_TOOLS/bin/pip install protobuf grpcio-tools`.
#[test]
#[ignore = "needs Python with protobuf and grpcio-tools (MP_PYTHON)"]
fn python_decoder_agrees() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let python = std::env::var("MP_PYTHON").unwrap_or_else(|_| "python3".into());
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    for (i, stream) in cross_check_streams().iter().enumerate() {
        let fams = decode(stream).expect("decodes");
        let mut child = Command::new(&python)
            .arg(format!("{data}/decode_delimited.py"))
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stream)
            .expect("write");
        let out = child.wait_with_output().expect("python output");
        assert!(out.status.success(), "python failed on stream {i}");
        let py = String::from_utf8(out.stdout).expect("UTF-8");
        assert_eq!(py, canonical(&fams), "stream {i}");
        eprintln!(
            "stream {i}: {} bytes, {} families agree",
            stream.len(),
            fams.len()
        );
    }
}
