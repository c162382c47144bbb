//! The request-duration histogram: recorded at the end of every request by the after-request
//! hook, in shared memory, and summed at scrape time.
//!
//! Storage: one cache-line-aligned stripe of counters per worker id, in a shared mapping made by
//! the master before fork (`host::shm`), so no two workers ever write the same cache line and a
//! respawned worker continues its predecessor's counters (they never go down while the master
//! lives). The threads and async cores of one worker share its stripe through relaxed atomic
//! adds. A stripe holds two regions: first, for each of the 48 (method, status class) series,
//! one counter per classic bucket (non-cumulative, +Inf last) and the sum of durations in µs;
//! then, for each series, the native (exponential) buckets: the zero bucket and one counter per
//! native bucket from 1 µs to 1 h (`plan::native_spec`). [`collect`] puts them back in the order
//! the engine's `Layout::render_all` reads (per series: classic, sum, native). The native
//! counters are summed only for protobuf scrapes (the only format that carries them), and only
//! for the series a worker has recorded, so that scrapes read the classic region and the few
//! native pages in use: a few pages per worker instead of the whole stripe (the mapping is
//! shared memory: every page the master reads is a page it holds).
//!
//! Exemplars (`--prometheus-exemplars`): per worker, series and bucket, one 64-byte cell with
//! the latest trace id, duration and time, written under a per-cell sequence counter (odd while
//! a write is in progress; a thread that finds it odd drops its exemplar rather than wait), and
//! read with the classic seqlock check, so a reader never sees a torn exemplar. The scrape keeps,
//! for each bucket, the most recent one across workers.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics_prometheus_engine::format::{Exemplar, NativeSpec};
use metrics_prometheus_engine::http::traceparent_trace_id;
use metrics_prometheus_engine::plan::{
    bucket_index, code_index, method_index, native_slot, native_spec, series_index, REQUEST_SERIES,
};

use crate::host;
use crate::host::request::Request;

/// u64 words per exemplar cell: sequence, 4 words of trace id, value, timestamp, padding.
const CELL_WORDS: usize = 8;

struct Recorder {
    bounds_us: Vec<u64>,
    /// Classic buckets, +Inf included.
    classic: usize,
    native: NativeSpec,
    /// Classic buckets, the sum, the zero bucket and the native buckets: words per series.
    per_series: usize,
    /// Words of a stripe's classic region (then comes the native region).
    classic_region: usize,
    /// Words per worker stripe (a multiple of 8: 64 bytes).
    stride: usize,
    workers: usize,
    counts: &'static [AtomicU64],
    /// Per worker: REQUEST_SERIES × buckets cells of CELL_WORDS (empty without exemplars).
    cells: &'static [AtomicU64],
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

fn round_up_to_line(words: usize) -> usize {
    words.div_ceil(8) * 8
}

/// Maps the counters for `workers` worker ids (1..=workers; id 0 is unused). Master, before
/// fork. Returns the bytes mapped.
pub(crate) fn setup(
    bounds_us: &[u64],
    native_schema: i8,
    workers: usize,
    exemplars: bool,
) -> std::io::Result<usize> {
    let classic = bounds_us.len() + 1;
    let native = native_spec(native_schema);
    let per_series = classic + 1 + 1 + native.buckets;
    let stride = round_up_to_line(REQUEST_SERIES * per_series);
    let counts = host::shm::counters((workers + 1) * stride)?;
    let cells = if exemplars {
        host::shm::counters((workers + 1) * REQUEST_SERIES * classic * CELL_WORDS)?
    } else {
        &[]
    };
    let bytes = (counts.len() + cells.len()) * 8;
    let _ = RECORDER.set(Recorder {
        bounds_us: bounds_us.to_vec(),
        classic,
        native,
        per_series,
        classic_region: REQUEST_SERIES * (classic + 1),
        stride,
        workers,
        counts,
        cells,
    });
    Ok(bytes)
}

/// True once [`setup`] ran (histograms on).
pub(crate) fn enabled() -> bool {
    RECORDER.get().is_some()
}

/// Records one finished request. Runs in the worker, in the thread that served it.
pub(crate) fn observe(req: &Request) {
    let Some(r) = RECORDER.get() else {
        return;
    };
    let wid = host::uwsgi::my_worker_id();
    if wid == 0 || wid > r.workers {
        return;
    }
    let (start, end) = req.times_us();
    let duration = end.saturating_sub(start);
    let series = series_index(method_index(req.method()), code_index(req.status()));
    let bucket = bucket_index(&r.bounds_us, duration);
    let base = wid * r.stride + series * (r.classic + 1);
    r.counts[base + bucket].fetch_add(1, Ordering::Relaxed);
    r.counts[base + r.classic].fetch_add(duration, Ordering::Relaxed);
    let native = if duration == 0 {
        0
    } else {
        1 + native_slot(&r.native, duration)
    };
    let native_base = wid * r.stride + r.classic_region + series * (r.per_series - r.classic - 1);
    r.counts[native_base + native].fetch_add(1, Ordering::Relaxed);
    if r.cells.is_empty() {
        return;
    }
    let Some(trace_id) = req.var(b"HTTP_TRACEPARENT").and_then(traceparent_trace_id) else {
        return;
    };
    let cell = ((wid * REQUEST_SERIES + series) * r.classic + bucket) * CELL_WORDS;
    let c = &r.cells[cell..cell + CELL_WORDS];
    let seq = c[0].load(Ordering::Relaxed);
    // Odd: another thread of this worker is writing this cell; drop ours rather than wait.
    if seq % 2 == 1
        || c[0]
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    // Readers that see any of the writes below also see the odd sequence (seqlock).
    fence(Ordering::Release);
    for (w, chunk) in c[1..5].iter().zip(trace_id.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        w.store(u64::from_ne_bytes(word), Ordering::Relaxed);
    }
    c[5].store(duration, Ordering::Relaxed);
    c[6].store(end, Ordering::Relaxed);
    c[0].store(seq + 2, Ordering::Release);
}

/// One consistent read of a cell, or `None` when empty or being written.
fn read_cell(c: &[AtomicU64]) -> Option<Exemplar> {
    for _ in 0..4 {
        let s1 = c[0].load(Ordering::Acquire);
        if s1 == 0 {
            return None;
        }
        if s1 % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let mut trace_id = [0u8; 32];
        for (w, chunk) in c[1..5].iter().zip(trace_id.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        let value_us = c[5].load(Ordering::Relaxed);
        let ts = c[6].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if c[0].load(Ordering::Relaxed) == s1 {
            return Some(Exemplar {
                trace_id,
                value_us,
                timestamp_us: i64::try_from(ts).unwrap_or(i64::MAX),
            });
        }
    }
    None
}

/// The histogram's values for the engine: `hist` in `render_all`'s order (summed over workers;
/// the native part only when `native`, else left 0) and, with exemplars on, the latest
/// exemplar of each bucket (else left empty).
pub(crate) fn collect(hist: &mut Vec<u64>, exemplars: &mut Vec<Option<Exemplar>>, native: bool) {
    hist.clear();
    exemplars.clear();
    let Some(r) = RECORDER.get() else {
        return;
    };
    let words = REQUEST_SERIES * r.per_series;
    hist.resize(words, 0);
    let classic = r.classic + 1;
    // Adds `c` into `h`; true when any of `c` is non-zero.
    let add = |h: &mut [u64], c: &[AtomicU64]| {
        let mut seen = false;
        for (h, c) in h.iter_mut().zip(c) {
            let v = c.load(Ordering::Relaxed);
            seen |= v != 0;
            *h = h.wrapping_add(v);
        }
        seen
    };
    for w in 1..=r.workers {
        let stripe = &r.counts[w * r.stride..w * r.stride + words];
        let (classic_region, native_region) = stripe.split_at(r.classic_region);
        for ((hs, cs), ns) in hist
            .chunks_exact_mut(r.per_series)
            .zip(classic_region.chunks_exact(classic))
            .zip(native_region.chunks_exact(r.per_series - classic))
        {
            // A series this worker never recorded (its classic counts, which `observe` bumps
            // first, still 0) has native counters it never wrote: reading them would make
            // the master fault in, and hold, pages of shared memory only to add zeros.
            if add(&mut hs[..classic], cs) && native {
                add(&mut hs[classic..], ns);
            }
        }
    }
    if r.cells.is_empty() {
        return;
    }
    exemplars.resize(words, None);
    for series in 0..REQUEST_SERIES {
        for bucket in 0..r.classic {
            let best = (1..=r.workers)
                .filter_map(|w| {
                    let cell = ((w * REQUEST_SERIES + series) * r.classic + bucket) * CELL_WORDS;
                    read_cell(&r.cells[cell..cell + CELL_WORDS])
                })
                .max_by_key(|e| e.timestamp_us);
            exemplars[series * r.per_series + bucket] = best;
        }
    }
}
