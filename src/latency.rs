//! The request-duration histogram: recorded at the end of every request by the after-request
//! hook, in shared memory, and summed at scrape time.
//!
//! Storage: one cache-line-aligned stripe of counters per worker id, in a shared mapping made by
//! the master before fork (`host::shared_counters`), so no two workers ever write the same cache line and a
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
//! The queue-time histogram (`--prometheus-queue-time`) is a second recorder of the same shape
//! in a mapping of its own: one series (no labels), the same buckets, and after it, in each
//! worker's stripe, the count of requests whose header was later than their start (clock skew).
//! The same hook feeds it, after the request histogram, from the request's `X-Request-Start` or
//! `X-Queue-Start` header (parsed by the engine's `queue` module); without the option the
//! recorder does not exist and the headers are never looked up.
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
    bucket_index, code_index, method_index, native_slot, native_spec, series_index, QUEUE_SERIES,
    REQUEST_SERIES,
};
use metrics_prometheus_engine::queue::{queue_time, QueueTime};

use crate::host;
use crate::host::request::Request;
use crate::routes;

/// u64 words per exemplar cell: sequence, 4 words of trace id, value, timestamp, padding.
const CELL_WORDS: usize = 8;

/// What a recorder records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Request durations, by method and status class.
    Requests,
    /// Queue times, one series, with the skew count after it.
    Queue,
}

impl Kind {
    fn series(self) -> usize {
        match self {
            Kind::Requests => REQUEST_SERIES,
            Kind::Queue => QUEUE_SERIES,
        }
    }

    /// Counter words of a stripe after its series.
    fn tail(self) -> usize {
        match self {
            Kind::Requests => 0,
            Kind::Queue => 1,
        }
    }
}

struct Recorder {
    /// Series per stripe.
    series: usize,
    bounds_us: Vec<u64>,
    /// Classic buckets, +Inf included.
    classic: usize,
    native: NativeSpec,
    /// Classic buckets, the sum, the zero bucket and the native buckets: words per series.
    per_series: usize,
    /// Words of a stripe's classic region (then comes the native region).
    classic_region: usize,
    /// Offset in a stripe of its tail words (after the native region), and how many: the skew
    /// count of the queue recorder.
    tail_at: usize,
    tail: usize,
    /// Words per worker stripe (a multiple of 8: 64 bytes).
    stride: usize,
    workers: usize,
    counts: &'static [AtomicU64],
    /// Per worker: series × buckets cells of CELL_WORDS (empty without exemplars).
    cells: &'static [AtomicU64],
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();
/// The queue-time recorder: only with `--prometheus-queue-time` (and [`RECORDER`]).
static QUEUE: OnceLock<Recorder> = OnceLock::new();

fn round_up_to_line(words: usize) -> usize {
    words.div_ceil(8) * 8
}

/// Maps the counters for `workers` worker ids (1..=workers; id 0 is unused), and with
/// `queue_time` those of the queue-time histogram, each series repeated for `routes` routes
/// (1 without the route label; see `routes.rs`). Master, before fork. Returns the bytes
/// mapped.
pub(crate) fn setup(
    bounds_us: &[u64],
    native_schema: i8,
    workers: usize,
    exemplars: bool,
    queue_time: bool,
    routes: usize,
) -> std::io::Result<usize> {
    let mut bytes = 0;
    for kind in [Kind::Requests, Kind::Queue] {
        if kind == Kind::Queue && !queue_time {
            continue;
        }
        // Exemplars are the request histogram's only.
        let exemplars = exemplars && kind == Kind::Requests;
        let series = kind.series() * routes;
        let shape = Recorder::shape(kind, series, bounds_us, native_schema, workers, exemplars);
        let counts = host::shared_counters::map(shape.0)?;
        let cells = if exemplars {
            host::shared_counters::map(shape.1)?
        } else {
            &[]
        };
        bytes += (counts.len() + cells.len()) * 8;
        let r = Recorder::new(
            kind,
            series,
            bounds_us,
            native_schema,
            workers,
            counts,
            cells,
        );
        let _ = match kind {
            Kind::Requests => RECORDER.set(r),
            Kind::Queue => QUEUE.set(r),
        };
    }
    Ok(bytes)
}

/// True once [`setup`] ran (histograms on).
pub(crate) fn enabled() -> bool {
    RECORDER.get().is_some()
}

/// True once [`setup`] ran with the queue-time histogram.
pub(crate) fn queue_enabled() -> bool {
    QUEUE.get().is_some()
}

/// Records one finished request. Runs in the worker, in the thread that served it.
pub(crate) fn observe(req: &Request) {
    let Some(r) = RECORDER.get() else {
        return;
    };
    if let Some(routes) = routes::table() {
        return observe_routed(r, routes, req);
    }
    let (start, end) = req.times_us();
    let wid = host::uwsgi::my_worker_id();
    let trace = || req.var(b"HTTP_TRACEPARENT").and_then(traceparent_trace_id);
    let k = series_index(method_index(req.method()), code_index(req.status()));
    r.record(wid, k, start, end, trace);
    observe_queue(QUEUE.get(), wid, 0, || queue_time_of(req, start));
}

/// [`observe`] with the route label: the request's series of its route, noted as seen. Out of
/// line, so that the hook without the label is today's code plus one `OnceLock` test.
#[inline(never)]
fn observe_routed(r: &Recorder, routes: &routes::Table, req: &Request) {
    let (start, end) = req.times_us();
    let wid = host::uwsgi::my_worker_id();
    let trace = || req.var(b"HTTP_TRACEPARENT").and_then(traceparent_trace_id);
    let k = series_index(method_index(req.method()), code_index(req.status()));
    let route = routes::route_of(req, wid);
    r.record(wid, route * REQUEST_SERIES + k, start, end, trace);
    routes.mark(route, k, false);
    if observe_queue(QUEUE.get(), wid, route, || queue_time_of(req, start)) {
        routes.mark(route, 0, true);
    }
}

/// The request's queue time: from `X-Request-Start`, else (absent or not an accepted form)
/// from `X-Queue-Start`, as New Relic's agents look them up.
fn queue_time_of(req: &Request, start_us: u64) -> Option<QueueTime> {
    req.var(b"HTTP_X_REQUEST_START")
        .and_then(|v| queue_time(v, start_us))
        .or_else(|| {
            req.var(b"HTTP_X_QUEUE_START")
                .and_then(|v| queue_time(v, start_us))
        })
}

/// Records a queue time in series `series` of `q` when there is a queue recorder: `read`
/// (which looks the headers up) is called only then. Says whether a time was recorded.
fn observe_queue(
    q: Option<&Recorder>,
    wid: usize,
    series: usize,
    read: impl FnOnce() -> Option<QueueTime>,
) -> bool {
    if let Some(q) = q {
        if let Some(t) = read() {
            q.record_queue(wid, series, t);
            return true;
        }
    }
    false
}

/// Requests whose queue-time header was later than their start, over every worker.
pub(crate) fn queue_skew() -> u64 {
    QUEUE.get().map_or(0, Recorder::skew)
}

/// In a new worker, before it serves anything: see [`Recorder::heal`].
pub(crate) fn heal_after_respawn() {
    if let Some(r) = RECORDER.get() {
        let healed = r.heal(host::uwsgi::my_worker_id());
        if healed > 0 {
            host::log(&format!(
                "worker {}: {healed} exemplar cell(s) left half-written by its predecessor reset",
                host::uwsgi::my_worker_id()
            ));
        }
    }
}

/// The histograms' values for the engine, in the plan's order (request durations, then queue
/// times): see [`Recorder::collect`]. `picks`: with the route label, the request series and
/// the queue-time series to collect, in this order (see `routes.rs`), else every series.
pub(crate) fn collect(
    hist: &mut Vec<u64>,
    exemplars: &mut Vec<Option<Exemplar>>,
    native: bool,
    picks: Option<(&[usize], &[usize])>,
) {
    hist.clear();
    exemplars.clear();
    for (r, pick) in [
        (RECORDER.get(), picks.map(|p| p.0)),
        (QUEUE.get(), picks.map(|p| p.1)),
    ] {
        if let Some(r) = r {
            r.collect(hist, exemplars, native, pick);
        }
    }
}

impl Recorder {
    /// Words of the counters and of the exemplar cells for this configuration.
    fn shape(
        kind: Kind,
        series: usize,
        bounds_us: &[u64],
        native_schema: i8,
        workers: usize,
        exemplars: bool,
    ) -> (usize, usize) {
        let classic = bounds_us.len() + 1;
        let per_series = classic + 1 + 1 + native_spec(native_schema).buckets;
        let stride = round_up_to_line(series * per_series + kind.tail());
        let cells = (workers + 1) * series * classic * CELL_WORDS;
        ((workers + 1) * stride, if exemplars { cells } else { 0 })
    }

    fn new(
        kind: Kind,
        series: usize,
        bounds_us: &[u64],
        native_schema: i8,
        workers: usize,
        counts: &'static [AtomicU64],
        cells: &'static [AtomicU64],
    ) -> Recorder {
        let classic = bounds_us.len() + 1;
        let native = native_spec(native_schema);
        let per_series = classic + 1 + 1 + native.buckets;
        Recorder {
            series,
            bounds_us: bounds_us.to_vec(),
            classic,
            native,
            per_series,
            classic_region: series * (classic + 1),
            tail_at: series * per_series,
            tail: kind.tail(),
            stride: round_up_to_line(series * per_series + kind.tail()),
            workers,
            counts,
            cells,
        }
    }

    /// Records one request of worker `wid` in `series`; `trace` is asked for the trace id only
    /// when exemplars are on.
    fn record(
        &self,
        wid: usize,
        series: usize,
        start: u64,
        end: u64,
        trace: impl FnOnce() -> Option<[u8; 32]>,
    ) {
        let r = self;
        if wid == 0 || wid > r.workers || series >= r.series {
            return;
        }
        let duration = end.saturating_sub(start);
        let bucket = bucket_index(&r.bounds_us, duration);
        let base = wid * r.stride + series * (r.classic + 1);
        r.counts[base + bucket].fetch_add(1, Ordering::Relaxed);
        r.counts[base + r.classic].fetch_add(duration, Ordering::Relaxed);
        let native = if duration == 0 {
            0
        } else {
            1 + native_slot(&r.native, duration)
        };
        let native_base =
            wid * r.stride + r.classic_region + series * (r.per_series - r.classic - 1);
        // Release, last: a scrape that reads the native buckets first (Acquire) then finds this
        // request in the classic ones too, so it never sees more native than classic counts.
        r.counts[native_base + native].fetch_add(1, Ordering::Release);
        if r.cells.is_empty() {
            return;
        }
        let Some(trace_id) = trace() else {
            return;
        };
        let c = r.cell(wid, series, bucket);
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

    /// Records a queue time of worker `wid` in `series` (the queue recorder: one per route):
    /// in the histogram, and when the header was later than the start, in the skew count.
    fn record_queue(&self, wid: usize, series: usize, t: QueueTime) {
        if wid == 0 || wid > self.workers || self.tail == 0 {
            return;
        }
        self.record(wid, series, 0, t.wait_us, || None);
        if t.skew {
            self.counts[wid * self.stride + self.tail_at].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The skew counts of every worker (the queue recorder).
    fn skew(&self) -> u64 {
        if self.tail == 0 {
            return 0;
        }
        (1..=self.workers).fold(0u64, |a, w| {
            a.wrapping_add(self.counts[w * self.stride + self.tail_at].load(Ordering::Relaxed))
        })
    }

    fn cell(&self, wid: usize, series: usize, bucket: usize) -> &[AtomicU64] {
        let at = ((wid * self.series + series) * self.classic + bucket) * CELL_WORDS;
        &self.cells[at..at + CELL_WORDS]
    }

    /// Empties the exemplar cells of worker `wid` that a killed predecessor left odd (killed
    /// between its compare-exchange and its closing store): every later writer would drop its
    /// exemplar there for good. Only sound while nothing else writes this stripe: in the new
    /// worker before its threads and apps start (uWSGI's `post_fork`). Returns how many.
    fn heal(&self, wid: usize) -> usize {
        if self.cells.is_empty() || wid == 0 || wid > self.workers {
            return 0;
        }
        let mut healed = 0;
        for series in 0..self.series {
            for bucket in 0..self.classic {
                let c = self.cell(wid, series, bucket);
                if c[0].load(Ordering::Relaxed) % 2 == 1 {
                    for w in &c[1..] {
                        w.store(0, Ordering::Relaxed);
                    }
                    // 0 is "empty" to readers; Release orders the cleared words before it.
                    c[0].store(0, Ordering::Release);
                    healed += 1;
                }
            }
        }
        healed
    }

    /// Appends to `hist` this histogram's values in `render_all`'s order (summed over workers;
    /// the native part only when `native`, else left 0) for the series of `pick` in its order
    /// (`None`: every series) and, with exemplars on, to `exemplars` the latest exemplar of
    /// each bucket, at the same indexes (else it is left as it is).
    fn collect(
        &self,
        hist: &mut Vec<u64>,
        exemplars: &mut Vec<Option<Exemplar>>,
        native: bool,
        pick: Option<&[usize]>,
    ) {
        let r = self;
        let picked = || Pick::new(pick, r.series);
        let first = hist.len();
        let n = pick.map_or(r.series, <[usize]>::len);
        hist.resize(first + n * r.per_series, 0);
        let hist = &mut hist[first..];
        let classic = r.classic + 1;
        let add = |h: &mut [u64], c: &[AtomicU64], order: Ordering| {
            for (h, c) in h.iter_mut().zip(c) {
                *h = h.wrapping_add(c.load(order));
            }
        };
        let native_words = r.per_series - classic;
        for w in 1..=r.workers {
            let stripe = &r.counts[w * r.stride..w * r.stride + r.series * r.per_series];
            let (classic_region, native_region) = stripe.split_at(r.classic_region);
            for (hs, s) in hist.chunks_exact_mut(r.per_series).zip(picked()) {
                // Never out of range (the picks come from this recorder's routes); left 0 if so.
                if s >= r.series {
                    continue;
                }
                let cs = &classic_region[s * classic..(s + 1) * classic];
                if native {
                    // A series this worker never recorded (its classic counts, which `record`
                    // bumps first, still 0) has native counters it never wrote: reading them
                    // would make the master fault in, and hold, pages of shared memory only
                    // to add zeros. (One that starts meanwhile shows in the next scrape.)
                    if cs.iter().all(|c| c.load(Ordering::Relaxed) == 0) {
                        continue;
                    }
                    // Native first, classic second (the reverse of `record`'s order): every
                    // request found in the native buckets is in the classic ones too, and the
                    // engine leaves out the few found in the classic ones only (requests
                    // ending between the two reads), so that the sample's parts agree
                    // (`consistent_count`).
                    let ns = &native_region[s * native_words..(s + 1) * native_words];
                    add(&mut hs[classic..], ns, Ordering::Acquire);
                }
                add(&mut hs[..classic], cs, Ordering::Relaxed);
            }
        }
        if r.cells.is_empty() {
            return;
        }
        exemplars.resize(first + n * r.per_series, None);
        for (j, series) in picked().enumerate() {
            if series >= r.series {
                continue;
            }
            for bucket in 0..r.classic {
                let best = (1..=r.workers)
                    .filter_map(|w| read_cell(r.cell(w, series, bucket)))
                    .max_by_key(|e| e.timestamp_us);
                exemplars[first + j * r.per_series + bucket] = best;
            }
        }
    }
}

/// The series a collection reads: every one, or those picked (without allocating).
enum Pick<'a> {
    All(std::ops::Range<usize>),
    Some(std::slice::Iter<'a, usize>),
}

impl<'a> Pick<'a> {
    fn new(pick: Option<&'a [usize]>, series: usize) -> Pick<'a> {
        match pick {
            Some(p) => Pick::Some(p.iter()),
            None => Pick::All(0..series),
        }
    }
}

impl Iterator for Pick<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Pick::All(r) => r.next(),
            Pick::Some(i) => i.next().copied(),
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    const BOUNDS: [u64; 3] = [1_000, 100_000, 1_000_000];

    /// A recorder over leaked local memory, as `setup` makes one over shared memory.
    fn recorder(workers: usize, exemplars: bool) -> &'static Recorder {
        recorder_of(Kind::Requests, workers, exemplars)
    }

    fn recorder_of(kind: Kind, workers: usize, exemplars: bool) -> &'static Recorder {
        let (counts, cells) = Recorder::shape(kind, kind.series(), &BOUNDS, 3, workers, exemplars);
        let leak = |n: usize| -> &'static [AtomicU64] {
            Box::leak((0..n).map(|_| AtomicU64::new(0)).collect())
        };
        Box::leak(Box::new(Recorder::new(
            kind,
            kind.series(),
            &BOUNDS,
            3,
            workers,
            leak(counts),
            leak(cells),
        )))
    }

    /// Per series: (classic total, native total).
    fn totals(r: &Recorder, hist: &[u64]) -> Vec<(u64, u64)> {
        hist.chunks_exact(r.per_series)
            .map(|s| {
                let classic: u64 = s[..r.classic].iter().sum();
                (classic, s[r.classic + 1..].iter().sum())
            })
            .collect()
    }

    /// Threads of one worker record into the same stripe while a scraper collects: no scrape
    /// ever finds a request in the native buckets that it does not find in the classic ones
    /// (the engine relies on it to make each sample agree), counts never go down, and at the
    /// end both totals are every request.
    #[test]
    fn concurrent_writers_and_a_reader() {
        let r = recorder(2, false);
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..200_000u64 {
                        let d = (i * 7919 + t * 104_729) % 2_000_000;
                        r.record(1 + (t as usize % 2), (i % 3) as usize, 5, 5 + d, || None);
                    }
                })
            })
            .collect();
        let reader = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let (mut hist, mut ex) = (Vec::new(), Vec::new());
                let mut last = vec![(0, 0); REQUEST_SERIES];
                let mut scrapes = 0;
                while !done.load(Ordering::Relaxed) || scrapes == 0 {
                    hist.clear();
                    r.collect(&mut hist, &mut ex, true, None);
                    let now = totals(r, &hist);
                    for (s, (&(c, n), &(lc, ln))) in now.iter().zip(&last).enumerate() {
                        assert!(n <= c, "series {s}: native {n} > classic {c}");
                        assert!(c >= lc && n >= ln, "series {s} went down");
                    }
                    last = now;
                    scrapes += 1;
                }
                scrapes
            })
        };
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader") > 0);
        let (mut hist, mut ex) = (Vec::new(), Vec::new());
        r.collect(&mut hist, &mut ex, true, None);
        let t = totals(r, &hist);
        assert_eq!(t.iter().map(|x| x.0).sum::<u64>(), 600_000);
        assert!(t.iter().all(|&(c, n)| c == n), "{t:?}");
        assert!(ex.is_empty());
    }

    /// A trace id whose 32 bytes all say which write it came from, with that write's value:
    /// a torn read would mix them.
    fn trace(k: u64) -> [u8; 32] {
        [b"0123456789abcdef"[(k % 16) as usize]; 32]
    }

    /// Concurrent writers of the same exemplar cell and a reader: every exemplar read is one
    /// writer's whole write.
    #[test]
    fn exemplar_cells_are_never_torn() {
        let r = recorder(1, true);
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        // 16..=31 µs: one classic bucket, one cell; the value names the write.
                        let k = (i + t) % 16;
                        r.record(1, 0, 100, 116 + k, || Some(trace(k)));
                    }
                })
            })
            .collect();
        let reader = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let (mut hist, mut ex) = (Vec::new(), Vec::new());
                let mut seen = 0;
                while !done.load(Ordering::Relaxed) {
                    hist.clear();
                    ex.clear();
                    r.collect(&mut hist, &mut ex, false, None);
                    if let Some(e) = ex[0] {
                        assert_eq!(e.trace_id, trace(e.value_us - 16), "torn exemplar");
                        assert_eq!(e.timestamp_us as u64, 100 + e.value_us);
                        seen += 1;
                    }
                }
                seen
            })
        };
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        let (mut hist, mut ex) = (Vec::new(), Vec::new());
        r.collect(&mut hist, &mut ex, false, None);
        let e = ex[0].expect("an exemplar");
        assert_eq!(e.trace_id, trace(e.value_us - 16));
    }

    /// A cell left odd by a killed writer drops every later exemplar until the new worker of
    /// that id heals it; healing leaves good cells and other workers' cells alone.
    #[test]
    fn a_cell_left_odd_is_healed() {
        let r = recorder(2, true);
        r.record(2, 0, 0, 20, || Some(trace(4)));
        // Worker 1 killed mid-write: its cell's sequence stays odd.
        let c = r.cell(1, 0, 0);
        c[0].store(7, Ordering::Relaxed);
        c[1].store(u64::MAX, Ordering::Relaxed);
        let latest = |r: &Recorder| {
            let (mut hist, mut ex) = (Vec::new(), Vec::new());
            r.collect(&mut hist, &mut ex, false, None);
            ex[0]
        };
        // Newer than worker 2's, but dropped.
        r.record(1, 0, 100, 110, || Some(trace(3)));
        assert_eq!(latest(r).map(|e| e.value_us), Some(20));
        assert_eq!(r.heal(1), 1);
        assert_eq!(r.heal(1), 0);
        assert_eq!(r.heal(2), 0);
        assert_eq!(latest(r).map(|e| e.value_us), Some(20));
        r.record(1, 0, 100, 110, || Some(trace(5)));
        assert_eq!(
            latest(r).map(|e| (e.value_us, e.trace_id)),
            Some((10, trace(5)))
        );
    }

    /// Queue times land in their classic and native buckets, the sum and (for a header later
    /// than the start) the skew count, per worker stripe, summed at collection; the queue
    /// recorder's values come after the request recorder's, as the plan lays the families out.
    #[test]
    fn queue_times_and_skew() {
        use metrics_prometheus_engine::plan::{queue_histogram, request_histogram};
        let q = recorder_of(Kind::Queue, 2, false);
        let t = |wait_us, skew| QueueTime { wait_us, skew };
        q.record_queue(1, 0, t(300_000, false));
        q.record_queue(2, 0, t(300_000, false));
        q.record_queue(2, 0, t(0, true));
        q.record_queue(1, 0, t(0, false));
        q.record_queue(3, 0, t(5, true)); // no such worker
        assert_eq!(q.skew(), 1);
        let r = recorder(2, true);
        r.record(1, 0, 0, 20, || Some(trace(1)));
        let (mut hist, mut ex) = (Vec::new(), Vec::new());
        r.collect(&mut hist, &mut ex, true, None);
        q.collect(&mut hist, &mut ex, true, None);
        let native = Some(native_spec(3));
        let slots =
            |h: metrics_prometheus_engine::format::Histogram| h.series.len() * h.slots_per_series();
        let (rs, qs) = (
            slots(request_histogram(&BOUNDS, native)),
            slots(queue_histogram(&BOUNDS, native)),
        );
        assert_eq!(hist.len(), rs + qs);
        assert_eq!(ex.len(), rs, "exemplars are the request histogram's only");
        let qh = &hist[rs..];
        // BOUNDS: 1 ms, 100 ms, 1 s: two in (0.1, 1], two in [0, 1 ms], none above.
        assert_eq!(&qh[..q.classic], &[2, 0, 2, 0]);
        assert_eq!(qh[q.classic], 600_000);
        let (zero, buckets) = (qh[q.classic + 1], &qh[q.classic + 2..]);
        assert_eq!(zero, 2);
        assert_eq!(buckets[native_slot(&q.native, 300_000)], 2);
        assert_eq!(buckets.iter().sum::<u64>(), 2);
        // Without native (text scrapes), the native part stays 0.
        hist.clear();
        q.collect(&mut hist, &mut ex, false, None);
        assert_eq!(hist[q.classic + 1..].iter().sum::<u64>(), 0);
        // A request recorder has no skew count.
        r.record_queue(1, 0, t(0, true));
        assert_eq!(r.skew(), 0);
    }

    /// Without a queue recorder (`--prometheus-queue-time` off), the headers are never read.
    #[test]
    fn queue_headers_are_not_read_when_off() {
        observe_queue(None, 1, 0, || panic!("header read with queue time off"));
        let q = recorder_of(Kind::Queue, 1, false);
        let mut read = false;
        observe_queue(Some(q), 1, 0, || {
            read = true;
            queue_time(b"t=1700000000.000", 1_700_000_000_300_000)
        });
        assert!(read);
        let (mut hist, mut ex) = (Vec::new(), Vec::new());
        q.collect(&mut hist, &mut ex, false, None);
        assert_eq!(&hist[..q.classic + 1], &[0, 0, 1, 0, 300_000]);
    }

    /// Threads of one worker record queue times (some skewed) while a scraper collects: never
    /// more native than classic counts, and every observation and skew counted at the end.
    #[test]
    fn concurrent_queue_writers_and_a_reader() {
        let q = recorder_of(Kind::Queue, 1, false);
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..100_000u64 {
                        let skew = (i + t) % 5 == 0;
                        let wait_us = if skew { 0 } else { (i * 7919) % 2_000_000 };
                        q.record_queue(1, 0, QueueTime { wait_us, skew });
                    }
                })
            })
            .collect();
        let reader = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let (mut hist, mut ex) = (Vec::new(), Vec::new());
                while !done.load(Ordering::Relaxed) {
                    hist.clear();
                    q.collect(&mut hist, &mut ex, true, None);
                    let t = totals(q, &hist);
                    assert!(t[0].1 <= t[0].0, "{t:?}");
                }
            })
        };
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        let (mut hist, mut ex) = (Vec::new(), Vec::new());
        q.collect(&mut hist, &mut ex, true, None);
        assert_eq!(totals(q, &hist), [(200_000, 200_000)]);
        assert_eq!(q.skew(), 40_000);
    }
}
