//! Application metrics (`--prometheus-app-metrics`): the values of the application's own
//! prometheus_client metrics, kept in one shared mapping the master makes before fork, written
//! by every process of the instance and read by the master at scrape time.
//!
//! Layout (all 64-bit words, so that every access is one aligned atomic or one f64):
//! - a header: the count of series refused because the table was full or a key too long, and
//!   the count of series registered;
//! - per slot, the pid of the process that owns it now (see [`Table::take_slot`]);
//! - the registered entries' indexes, in registration order (plus one, 0: not written yet), so
//!   that readers touch only the entries in use, not the pages of the whole table;
//! - `capacity` entries of [`ENTRY_WORDS`] words: a state word (empty, being written by a pid,
//!   ready), the key's hash, its kind, gauge mode and lengths, then the key itself (the metric
//!   name, the sample name, label names and values) and as much of the HELP text as fits;
//! - the values, slot-major (each process writes only its own slot's row, so no two processes
//!   ever write one cache line), as f64 bits;
//! - the same shape again for the time of each gauge's last write (0: never written by that
//!   slot), which gauge modes need (`min`, `max`, `mostrecent`, `all`).
//!
//! A series first seen in any process is registered once: the first process claims an empty
//! entry with a compare-exchange, writes the key and publishes it (Release); a process that
//! finds the same key ready uses its index. Values are written by the Python side through a
//! memoryview of the values (one writer per cell: the process owning the slot, its threads
//! serialised by a lock there); the master only reads, and never trusts the table: an entry is
//! parsed only when ready, every length is checked against the entry's bounds, and a key that
//! does not parse is skipped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics_prometheus_engine::app::{AppFamily, AppKind, AppSeries, AppValue};

use crate::host;
use crate::host::uwsgi::Role;

/// Words per entry: state, hash, meta, then the key and HELP bytes.
pub(crate) const ENTRY_WORDS: usize = 64;
/// Bytes for the key and the HELP text of one entry.
const KEY_BYTES: usize = (ENTRY_WORDS - 3) * 8;
/// Slots for mules, then spoolers, after the workers'.
pub(crate) const EXTRA_SLOTS: usize = 64;
/// Header words.
const HEADER_WORDS: usize = 8;

const EMPTY: u64 = 0;
const READY: u64 = 2;

/// A waiting registration gives up after this many yields (a writer dies or stalls between
/// its claim and its publish only if it is killed in those few hundred nanoseconds).
const WAIT_YIELDS: usize = 10_000;

/// prometheus_client's `typ` of the value's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Summary = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Counter,
            2 => Kind::Gauge,
            3 => Kind::Histogram,
            4 => Kind::Summary,
            _ => return None,
        })
    }
}

/// A gauge's `multiprocess_mode`, as prometheus_client defines them; `live` ones count only the
/// processes alive now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    All = 1,
    LiveAll,
    Min,
    LiveMin,
    Max,
    LiveMax,
    Sum,
    LiveSum,
    MostRecent,
    LiveMostRecent,
}

impl Mode {
    const NAMES: [(&'static str, Mode); 10] = [
        ("all", Mode::All),
        ("liveall", Mode::LiveAll),
        ("min", Mode::Min),
        ("livemin", Mode::LiveMin),
        ("max", Mode::Max),
        ("livemax", Mode::LiveMax),
        ("sum", Mode::Sum),
        ("livesum", Mode::LiveSum),
        ("mostrecent", Mode::MostRecent),
        ("livemostrecent", Mode::LiveMostRecent),
    ];

    fn from_u8(v: u8) -> Option<Mode> {
        Mode::NAMES.iter().map(|&(_, m)| m).find(|&m| m as u8 == v)
    }

    fn live(self) -> bool {
        matches!(
            self,
            Mode::LiveAll | Mode::LiveMin | Mode::LiveMax | Mode::LiveSum | Mode::LiveMostRecent
        )
    }
}

/// Why a series was not stored (prometheus_client keeps working for it in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    TooLong,
    Invalid,
    /// Another process claimed the entry and never published it.
    Stalled,
}

/// The shared table. Plain safe code over atomics in a mapping made by `host::shared_counters`.
pub(crate) struct Table {
    capacity: usize,
    numproc: usize,
    slots: usize,
    header: &'static [AtomicU64],
    owners: &'static [AtomicU64],
    order: &'static [AtomicU64],
    entries: &'static [AtomicU64],
    values: &'static [AtomicU64],
    stamps: &'static [AtomicU64],
}

/// FNV-1a: the same in every process, with no per-process seed.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn meta(kind: u8, mode: u8, key_len: usize, help_len: usize) -> u64 {
    u64::from(kind) | u64::from(mode) << 8 | (key_len as u64) << 16 | (help_len as u64) << 32
}

impl Table {
    /// Words of the whole mapping for `capacity` series and `numproc` workers.
    pub(crate) fn words(capacity: usize, numproc: usize) -> usize {
        let slots = Self::slot_count(numproc);
        HEADER_WORDS + slots + capacity + capacity * ENTRY_WORDS + 2 * slots * capacity
    }

    /// The master (0), the workers, mules and spoolers, and a last slot where processes that
    /// have none write (their values are never exported).
    fn slot_count(numproc: usize) -> usize {
        1 + numproc + EXTRA_SLOTS + 1
    }

    /// Over `mem`, [`Table::words`] long and zeroed.
    pub(crate) fn new(mem: &'static [AtomicU64], capacity: usize, numproc: usize) -> Table {
        let slots = Self::slot_count(numproc);
        let (header, rest) = mem.split_at(HEADER_WORDS);
        let (owners, rest) = rest.split_at(slots);
        let (order, rest) = rest.split_at(capacity);
        let (entries, rest) = rest.split_at(capacity * ENTRY_WORDS);
        let (values, stamps) = rest.split_at(slots * capacity);
        Table {
            capacity,
            numproc,
            slots,
            header,
            owners,
            order,
            entries,
            values,
            stamps,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Where the Python side maps its memoryviews.
    pub(crate) fn values_addr(&self) -> usize {
        self.values.as_ptr() as usize
    }

    pub(crate) fn stamps_addr(&self) -> usize {
        self.stamps.as_ptr() as usize
    }

    /// Series refused so far (table full, key too long, stalled claim).
    pub(crate) fn dropped(&self) -> u64 {
        self.header[0].load(Ordering::Relaxed)
    }

    fn entry(&self, i: usize) -> &[AtomicU64] {
        &self.entries[i * ENTRY_WORDS..(i + 1) * ENTRY_WORDS]
    }

    /// The index of the series `key` (`[u16 length, bytes]` fields: metric name, sample name,
    /// then label name and value pairs), registering it if no process has yet.
    pub(crate) fn register(
        &self,
        key: &[u8],
        help: &[u8],
        kind: u8,
        mode: u8,
        pid: u32,
        alive: impl Fn(u32) -> bool,
    ) -> Result<usize, Refused> {
        let refuse = |r| {
            self.header[0].fetch_add(1, Ordering::Relaxed);
            Err(r)
        };
        if parse_key(key).is_none() || Kind::from_u8(kind).is_none() {
            return Err(Refused::Invalid);
        }
        if key.len() > KEY_BYTES {
            return refuse(Refused::TooLong);
        }
        let help = &help[..help.len().min(KEY_BYTES - key.len())];
        let h = hash(key);
        let claim = u64::from(pid) << 2 | 1;
        for probe in 0..self.capacity {
            let i = (h as usize).wrapping_add(probe) % self.capacity;
            let e = self.entry(i);
            let mut yields = 0;
            loop {
                let state = e[0].load(Ordering::Acquire);
                if state == READY {
                    if e[1].load(Ordering::Relaxed) == h && self.key_of(e).as_deref() == Some(key) {
                        return Ok(i);
                    }
                    break;
                }
                if state == EMPTY {
                    if e[0]
                        .compare_exchange(EMPTY, claim, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.publish(e, h, key, help, kind, mode);
                        return Ok(i);
                    }
                    continue;
                }
                // Claimed by another process: wait for it to publish, unless it died.
                let owner = u32::try_from(state >> 2).unwrap_or(0);
                if !alive(owner) {
                    break;
                }
                yields += 1;
                if yields > WAIT_YIELDS {
                    return refuse(Refused::Stalled);
                }
                std::thread::yield_now();
            }
        }
        refuse(Refused::Full)
    }

    fn publish(&self, e: &[AtomicU64], h: u64, key: &[u8], help: &[u8], kind: u8, mode: u8) {
        e[1].store(h, Ordering::Relaxed);
        e[2].store(meta(kind, mode, key.len(), help.len()), Ordering::Relaxed);
        let mut bytes = [0u8; KEY_BYTES];
        bytes[..key.len()].copy_from_slice(key);
        bytes[key.len()..key.len() + help.len()].copy_from_slice(help);
        for (w, chunk) in e[3..].iter().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        e[0].store(READY, Ordering::Release);
        let i = (e.as_ptr() as usize - self.entries.as_ptr() as usize) / (ENTRY_WORDS * 8);
        let k = self.header[1].fetch_add(1, Ordering::AcqRel) as usize;
        if let Some(o) = self.order.get(k) {
            o.store(i as u64 + 1, Ordering::Release);
        }
    }

    /// The indexes of the entries registered so far, in order, from the `from`-th on (`None`
    /// for a position a process scribbled over); stops at one not written yet (its registrant
    /// is between its two stores).
    fn registered(&self, from: usize) -> impl Iterator<Item = Option<usize>> + '_ {
        let n = (self.header[1].load(Ordering::Acquire) as usize).min(self.capacity);
        self.order[from.min(n)..n]
            .iter()
            .map(|o| o.load(Ordering::Acquire) as usize)
            .take_while(|&o| o != 0)
            .map(|o| (o - 1 < self.capacity).then_some(o - 1))
    }

    /// The entry's bytes (key then HELP), bounds-checked; `None` unless ready and sane.
    fn bytes_of(&self, e: &[AtomicU64]) -> Option<([u8; KEY_BYTES], usize, usize, u8, u8)> {
        if e[0].load(Ordering::Acquire) != READY {
            return None;
        }
        let m = e[2].load(Ordering::Relaxed);
        let (kind, mode) = (m as u8, (m >> 8) as u8);
        let (key_len, help_len) = ((m >> 16) as u16 as usize, (m >> 32) as u16 as usize);
        if key_len + help_len > KEY_BYTES {
            return None;
        }
        let mut bytes = [0u8; KEY_BYTES];
        for (w, chunk) in e[3..].iter().zip(bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        Some((bytes, key_len, help_len, kind, mode))
    }

    fn key_of(&self, e: &[AtomicU64]) -> Option<Vec<u8>> {
        let (bytes, key_len, ..) = self.bytes_of(e)?;
        Some(bytes[..key_len].to_vec())
    }

    /// The slot a process of `role` writes in.
    pub(crate) fn slot_of(&self, role: Role) -> usize {
        let discard = self.slots - 1;
        let extra = |k: usize| {
            if k < EXTRA_SLOTS {
                1 + self.numproc + k
            } else {
                discard
            }
        };
        match role {
            Role::Master => 0,
            Role::Worker(w) if w <= self.numproc => w,
            Role::Mule(m) if m >= 1 => extra(m - 1),
            Role::Spooler(s) => extra(host::uwsgi::mules() + s),
            _ => discard,
        }
    }

    /// Makes `pid` the owner of `slot`. A new owner (a respawned worker) starts with its live
    /// gauges unset: the values its dead predecessor set must stop counting. Counters,
    /// histograms, summaries and the other gauges keep the predecessor's values.
    pub(crate) fn take_slot(&self, slot: usize, pid: u32) {
        if slot + 1 >= self.slots {
            return;
        }
        let previous = self.owners[slot].swap(u64::from(pid), Ordering::AcqRel);
        if previous == u64::from(pid) {
            return;
        }
        for i in self.registered(0).flatten() {
            let m = self.entry(i)[2].load(Ordering::Relaxed);
            let live = self.entry(i)[0].load(Ordering::Acquire) == READY
                && Kind::from_u8(m as u8) == Some(Kind::Gauge)
                && Mode::from_u8((m >> 8) as u8).is_some_and(Mode::live);
            if live {
                self.values[slot * self.capacity + i].store(0, Ordering::Relaxed);
                self.stamps[slot * self.capacity + i].store(0, Ordering::Relaxed);
            }
        }
    }

    fn value(&self, slot: usize, i: usize) -> f64 {
        f64::from_bits(self.values[slot * self.capacity + i].load(Ordering::Relaxed))
    }

    fn stamp(&self, slot: usize, i: usize) -> f64 {
        f64::from_bits(self.stamps[slot * self.capacity + i].load(Ordering::Relaxed))
    }

    /// Parses entry `i` (for the master's cache: a ready entry never changes).
    pub(crate) fn parse(&self, i: usize) -> Option<Parsed> {
        let (bytes, key_len, help_len, kind, mode) = self.bytes_of(self.entry(i))?;
        let kind = Kind::from_u8(kind)?;
        let mode = if kind == Kind::Gauge {
            Mode::from_u8(mode).unwrap_or(Mode::All)
        } else {
            Mode::Sum
        };
        let fields = parse_key(&bytes[..key_len])?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let labels = fields[2..]
            .chunks_exact(2)
            .map(|p| (text(p[0]), text(p[1])))
            .collect();
        Some(Parsed {
            index: i,
            kind,
            mode,
            family: text(fields[0]),
            sample: text(fields[1]),
            labels,
            help: text(&bytes[key_len..key_len + help_len]),
        })
    }
}

/// `[u16 little-endian length, bytes]` fields; `None` unless they fill `key` exactly and come
/// as a metric name, a sample name and label pairs.
fn parse_key(key: &[u8]) -> Option<Vec<&[u8]>> {
    let mut fields = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        if tail.len() < len {
            return None;
        }
        fields.push(&tail[..len]);
        rest = &tail[len..];
    }
    (fields.len() >= 2 && fields.len() % 2 == 0).then_some(fields)
}

/// A slot's owner at merge time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// No process ever took the slot: it holds nothing, and its pages are not read.
    None,
    Dead,
    Alive,
}

impl Owner {
    fn of(pid: u32, alive: impl Fn(u32) -> bool) -> Owner {
        match pid {
            0 => Owner::None,
            p if alive(p) => Owner::Alive,
            _ => Owner::Dead,
        }
    }
}

/// One registered series, as the master understands it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub(crate) index: usize,
    pub(crate) kind: Kind,
    pub(crate) mode: Mode,
    /// prometheus_client's metric name (counters without `_total`).
    pub(crate) family: String,
    /// The sample's name: `family`, or with `_total`, `_bucket`, `_sum`, `_count`.
    pub(crate) sample: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) help: String,
}

impl Table {
    /// The application's families for the engine, merged over the slots as prometheus_client's
    /// MultiProcessCollector merges its processes' files. `parsed` caches what was parsed of
    /// the entries registered so far, in registration order; `alive` tells whether a slot's
    /// owner still runs.
    pub(crate) fn collect(
        &self,
        parsed: &mut Vec<Option<Parsed>>,
        alive: impl Fn(u32) -> bool,
        out: &mut Vec<AppFamily>,
    ) {
        out.clear();
        let from = parsed.len();
        let mut fresh = self
            .registered(from)
            .map(|i| i.and_then(|i| self.parse(i)))
            .collect::<Vec<_>>();
        // A ready entry never changes: parse each once. One that does not parse stays `None`.
        parsed.append(&mut fresh);
        let slots = self.slots - 1;
        let owners: Vec<u32> = self.owners[..slots]
            .iter()
            .map(|o| u32::try_from(o.load(Ordering::Relaxed)).unwrap_or(0))
            .collect();
        let live: Vec<Owner> = owners.iter().map(|&p| Owner::of(p, &alive)).collect();
        for p in parsed.iter().flatten() {
            let fam = match out.iter().position(|f| f.name == p.family) {
                Some(f) => &mut out[f],
                None => {
                    out.push(AppFamily {
                        name: p.family.clone(),
                        help: p.help.clone(),
                        kind: match p.kind {
                            Kind::Counter => AppKind::Counter,
                            Kind::Gauge => AppKind::Gauge,
                            Kind::Histogram => AppKind::Histogram,
                            Kind::Summary => AppKind::Summary,
                        },
                        series: Vec::new(),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            self.merge_into(fam, p, &owners, &live);
        }
    }

    fn merge_into(&self, fam: &mut AppFamily, p: &Parsed, owners: &[u32], live: &[Owner]) {
        let i = p.index;
        // A slot no process ever took holds nothing: its pages are not even read.
        let total = || {
            (0..owners.len())
                .filter(|&s| owners[s] != 0)
                .map(|s| self.value(s, i))
                .sum::<f64>()
        };
        let suffix = p.sample.strip_prefix(p.family.as_str()).unwrap_or("");
        match (p.kind, fam.kind, suffix) {
            (Kind::Counter, AppKind::Counter, "_total") => {
                if let AppValue::Counter(v) = series(fam, &p.labels, AppValue::Counter(0.0)) {
                    *v += total();
                }
            }
            (Kind::Gauge, AppKind::Gauge, "") => self.merge_gauge(fam, p, owners, live),
            (Kind::Histogram, AppKind::Histogram, "_sum" | "_bucket") => {
                let (labels, le) = split_le(&p.labels);
                let empty = AppValue::Histogram {
                    buckets: Vec::new(),
                    sum: 0.0,
                };
                if let AppValue::Histogram { buckets, sum } = series(fam, &labels, empty) {
                    match le {
                        None if suffix == "_sum" => *sum += total(),
                        Some(le) if suffix == "_bucket" => buckets.push((le, total())),
                        _ => {}
                    }
                }
            }
            (Kind::Summary, AppKind::Summary, "_sum" | "_count") => {
                let empty = AppValue::Summary {
                    count: 0.0,
                    sum: 0.0,
                };
                if let AppValue::Summary { count, sum } = series(fam, &p.labels, empty) {
                    *if suffix == "_sum" { sum } else { count } += total();
                }
            }
            // A name registered with two kinds, or an unknown sample: the first kind wins.
            _ => {}
        }
    }

    fn merge_gauge(&self, fam: &mut AppFamily, p: &Parsed, owners: &[u32], live: &[Owner]) {
        let i = p.index;
        if matches!(p.mode, Mode::All | Mode::LiveAll) {
            for s in self.written(i, p.mode, live) {
                let mut labels = p.labels.clone();
                labels.push(("pid".to_string(), owners[s].to_string()));
                fam.series.push(AppSeries {
                    labels,
                    value: AppValue::Gauge(self.value(s, i)),
                });
            }
            return;
        }
        if let Some(v) = self.gauge_value(i, p.mode, live) {
            fam.series.push(AppSeries {
                labels: p.labels.clone(),
                value: AppValue::Gauge(v),
            });
        }
    }

    /// The slots that wrote gauge `i` (and, for live modes, whose process runs).
    fn written<'a>(
        &'a self,
        i: usize,
        mode: Mode,
        live: &'a [Owner],
    ) -> impl Iterator<Item = usize> + 'a {
        (0..live.len()).filter(move |&s| {
            live[s] != Owner::None
                && (!mode.live() || live[s] == Owner::Alive)
                && self.stamp(s, i) > 0.0
        })
    }

    /// Gauge `i` merged as `mode` says (`None`: no process wrote it; `all` modes have one
    /// value per process and are merged by the caller).
    fn gauge_value(&self, i: usize, mode: Mode, live: &[Owner]) -> Option<f64> {
        let values = self.written(i, mode, live).map(|s| self.value(s, i));
        match mode {
            Mode::All | Mode::LiveAll => None,
            Mode::Min | Mode::LiveMin => values.reduce(f64::min),
            Mode::Max | Mode::LiveMax => values.reduce(f64::max),
            Mode::Sum | Mode::LiveSum => Some(values.sum()),
            Mode::MostRecent | Mode::LiveMostRecent => self
                .written(i, mode, live)
                .max_by(|&a, &b| self.stamp(a, i).total_cmp(&self.stamp(b, i)))
                .map(|s| self.value(s, i)),
        }
    }

    /// Series `i` merged over the processes as the master exports it, for prometheus_client's
    /// `get()` in any process (so that an application serving its own `/metrics` shows what the
    /// master shows). Gauges in an `all` mode have one value per process: this one's.
    pub(crate) fn merged(&self, i: usize, own_slot: usize, alive: impl Fn(u32) -> bool) -> f64 {
        if i >= self.capacity {
            return 0.0;
        }
        let slots = self.slots - 1;
        let Some(p) = self.parse(i) else {
            return 0.0;
        };
        if p.kind != Kind::Gauge {
            return (0..slots)
                .filter(|&s| self.owners[s].load(Ordering::Relaxed) != 0)
                .map(|s| self.value(s, i))
                .sum();
        }
        if matches!(p.mode, Mode::All | Mode::LiveAll) {
            return self.value(own_slot.min(self.slots - 1), i);
        }
        let live: Vec<Owner> = self.owners[..slots]
            .iter()
            .map(|o| {
                let pid = u32::try_from(o.load(Ordering::Relaxed)).unwrap_or(0);
                // Liveness costs a syscall per slot: only live modes ask.
                Owner::of(pid, |pid| !p.mode.live() || alive(pid))
            })
            .collect();
        self.gauge_value(i, p.mode, &live).unwrap_or(0.0)
    }
}

/// The value of the series of `fam` with `labels`, added as `empty` if new.
fn series<'f>(
    fam: &'f mut AppFamily,
    labels: &[(String, String)],
    empty: AppValue,
) -> &'f mut AppValue {
    let at = match fam.series.iter().position(|s| s.labels == labels) {
        Some(at) => at,
        None => {
            fam.series.push(AppSeries {
                labels: labels.to_vec(),
                value: empty,
            });
            fam.series.len() - 1
        }
    };
    &mut fam.series[at].value
}

/// The labels without `le`, and `le` as a number.
fn split_le(labels: &[(String, String)]) -> (Vec<(String, String)>, Option<f64>) {
    let mut le = None;
    let rest = labels
        .iter()
        .filter(|(k, v)| {
            if k == "le" {
                le = match v.as_str() {
                    "+Inf" => Some(f64::INFINITY),
                    v => v.parse().ok(),
                };
                false
            } else {
                true
            }
        })
        .cloned()
        .collect();
    (rest, le)
}

/// This process' row in the values, in f64 units from their start (`slot * capacity`), or -1
/// until the process has looked up its slot. Read by the Python side before every write; a
/// fork handler sets it back to -1 in every child. Process-private (ordinary data: copied,
/// not shared, by fork).
#[no_mangle]
pub static metrics_prometheus_app_base: AtomicI64 = AtomicI64::new(-1);

/// The child side of `pthread_atfork`: a forked process must look up its own slot.
/// Async-signal-safe.
pub(crate) fn forget_slot_in_child() {
    metrics_prometheus_app_base.store(-1, Ordering::Relaxed);
}

static TABLE: OnceLock<Table> = OnceLock::new();
/// The master's pid, to tell it from processes the application forks (see `host::uwsgi::role`).
static MASTER_PID: AtomicI64 = AtomicI64::new(0);

/// Maps the table for `capacity` series and `numproc` workers. Master, before fork (and before
/// any application code: `post_init`). Returns the bytes mapped.
pub(crate) fn setup(capacity: usize, numproc: usize) -> std::io::Result<usize> {
    let mem = host::shared_counters::map(Table::words(capacity, numproc))?;
    MASTER_PID.store(i64::from(host::uwsgi::pid()), Ordering::Relaxed);
    let _ = TABLE.set(Table::new(mem, capacity, numproc));
    Ok(mem.len() * 8)
}

pub(crate) fn table() -> Option<&'static Table> {
    TABLE.get()
}

/// What the Python package needs to map its memoryviews (`metrics_prometheus_app_info`).
#[repr(C)]
pub(crate) struct Info {
    /// Of this struct, so that an older package refuses a newer plugin rather than misread it.
    pub(crate) version: u64,
    pub(crate) values: u64,
    pub(crate) stamps: u64,
    pub(crate) capacity: u64,
    pub(crate) slots: u64,
    /// Address of [`metrics_prometheus_app_base`].
    pub(crate) base: u64,
}

pub(crate) const INFO_VERSION: u64 = 1;

/// `None` when `--prometheus-app-metrics` is off.
pub(crate) fn info() -> Option<Info> {
    let t = table()?;
    Some(Info {
        version: INFO_VERSION,
        values: t.values_addr() as u64,
        stamps: t.stamps_addr() as u64,
        capacity: t.capacity() as u64,
        slots: t.slots() as u64,
        base: &metrics_prometheus_app_base as *const AtomicI64 as u64,
    })
}

/// The first refusal of each kind is logged; the rest are only counted.
static LOGGED: [std::sync::atomic::AtomicBool; 4] =
    [const { std::sync::atomic::AtomicBool::new(false) }; 4];

/// Registers a series for the calling process (see [`Table::register`]): its index, or -1.
pub(crate) fn register(key: &[u8], help: &[u8], kind: u8, mode: u8) -> i64 {
    let Some(t) = table() else {
        return -1;
    };
    let pid = u32::try_from(host::uwsgi::pid()).unwrap_or(0);
    match t.register(key, help, kind, mode, pid, |p| {
        host::uwsgi::pid_alive(i32::try_from(p).unwrap_or(0))
    }) {
        Ok(i) => i as i64,
        Err(r) => {
            let name = parse_key(key)
                .and_then(|f| f.into_iter().next())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            if !LOGGED[r as usize].swap(true, Ordering::Relaxed) {
                host::log(&format!(
                    "--prometheus-app-metrics: a sample of {name:?} is not stored ({}); \
                     prometheus_client keeps it in its process, unexported; counted in \
                     uwsgi_app_metrics_dropped_series_total (logged once)",
                    match r {
                        Refused::Full => "the table is full: raise --prometheus-app-series",
                        Refused::TooLong =>
                            "its name, labels and values take more than an entry holds",
                        Refused::Invalid => "the key does not parse",
                        Refused::Stalled =>
                            "another process claimed its entry and never finished it",
                    }
                ));
            }
            -1
        }
    }
}

/// Looks up the calling process' slot, takes it over (see [`Table::take_slot`]) and publishes
/// its row in [`metrics_prometheus_app_base`]. Returns the row, or -1 without a table.
pub(crate) fn resolve_slot() -> i64 {
    let Some(t) = table() else {
        return -1;
    };
    let master = i32::try_from(MASTER_PID.load(Ordering::Relaxed)).unwrap_or(0);
    let role = host::uwsgi::role(master);
    let slot = t.slot_of(role);
    let pid = u32::try_from(host::uwsgi::pid()).unwrap_or(0);
    t.take_slot(slot, pid);
    if role == Role::Foreign {
        static FOREIGN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !FOREIGN.swap(true, Ordering::Relaxed) {
            host::log(&format!(
                "--prometheus-app-metrics: process {pid} is not a uWSGI worker, mule or spooler \
                 (forked by the application?): its metric values are not exported"
            ));
        }
    }
    let base = (slot * t.capacity()) as i64;
    metrics_prometheus_app_base.store(base, Ordering::Relaxed);
    base
}

/// Series `i` merged over the processes (see [`Table::merged`]); 0 without a table.
pub(crate) fn merged(i: usize) -> f64 {
    let Some(t) = table() else {
        return 0.0;
    };
    let row = metrics_prometheus_app_base.load(Ordering::Relaxed);
    let own = if row < 0 {
        usize::MAX
    } else {
        row as usize / t.capacity()
    };
    t.merged(i, own, |p| {
        host::uwsgi::pid_alive(i32::try_from(p).unwrap_or(0))
    })
}

/// Series registered so far.
pub(crate) fn registered() -> u64 {
    table().map_or(0, |t| t.header[1].load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(capacity: usize, numproc: usize) -> &'static Table {
        let words = Table::words(capacity, numproc);
        let mem: &'static [AtomicU64] = Box::leak((0..words).map(|_| AtomicU64::new(0)).collect());
        Box::leak(Box::new(Table::new(mem, capacity, numproc)))
    }

    /// The Python side's key encoding.
    fn key(fields: &[&str]) -> Vec<u8> {
        let mut k = Vec::new();
        for f in fields {
            k.extend_from_slice(&(f.len() as u16).to_le_bytes());
            k.extend_from_slice(f.as_bytes());
        }
        k
    }

    fn reg(t: &Table, fields: &[&str], kind: Kind, mode: Mode) -> usize {
        t.register(&key(fields), b"Help.", kind as u8, mode as u8, 1, |_| true)
            .expect("registered")
    }

    /// A write of the process owning `slot` (one that never took it takes it first).
    fn write(t: &Table, slot: usize, i: usize, v: f64, stamp: f64) {
        let _ = t.owners[slot].compare_exchange(
            0,
            1000 + slot as u64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        t.values[slot * t.capacity + i].store(v.to_bits(), Ordering::Relaxed);
        t.stamps[slot * t.capacity + i].store(stamp.to_bits(), Ordering::Relaxed);
    }

    fn families(t: &Table, alive: impl Fn(u32) -> bool) -> Vec<AppFamily> {
        let (mut parsed, mut out) = (Vec::new(), Vec::new());
        t.collect(&mut parsed, alive, &mut out);
        out
    }

    #[test]
    fn a_key_gets_one_entry_across_processes() {
        let t = table(64, 2);
        let keys: Vec<Vec<u8>> = (0..40)
            .map(|n| key(&["jobs", "jobs_total", "queue", &format!("q{n}")]))
            .collect();
        let keys: &'static [Vec<u8>] = Box::leak(keys.into_boxed_slice());
        let threads: Vec<_> = (0..4u32)
            .map(|pid| {
                std::thread::spawn(move || {
                    keys.iter()
                        .map(|k| {
                            t.register(k, b"Jobs.", Kind::Counter as u8, 0, 100 + pid, |_| true)
                                .expect("room")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let got: Vec<Vec<usize>> = threads
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
        let mut distinct = got[0].clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 40);
        assert_eq!(t.registered(0).flatten().count(), 40);
        assert_eq!(t.dropped(), 0);
    }

    #[test]
    fn refusals_are_counted() {
        let t = table(2, 1);
        reg(t, &["a", "a_total"], Kind::Counter, Mode::Sum);
        reg(t, &["b", "b_total"], Kind::Counter, Mode::Sum);
        let c = key(&["c", "c_total"]);
        assert_eq!(t.register(&c, b"", 1, 0, 1, |_| true), Err(Refused::Full));
        let long = key(&["d", "d_total", "l", &"x".repeat(KEY_BYTES)]);
        assert_eq!(
            t.register(&long, b"", 1, 0, 1, |_| true),
            Err(Refused::TooLong)
        );
        assert_eq!(t.dropped(), 2);
        // Not a key at all: refused without counting (the Python side's bug, not the table's).
        assert_eq!(
            t.register(b"\x05\x00ab", b"", 1, 0, 1, |_| true),
            Err(Refused::Invalid)
        );
        // A claim whose process died is passed over.
        let t = table(4, 1);
        let k = key(&["e", "e_total"]);
        let i = (hash(&k) as usize) % 4;
        t.entry(i)[0].store(u64::from(777u32) << 2 | 1, Ordering::Relaxed);
        let j = t
            .register(&k, b"", 1, 0, 1, |pid| pid != 777)
            .expect("another entry");
        assert_ne!(i, j);
    }

    #[test]
    fn counters_histograms_and_summaries_sum_every_slot() {
        let t = table(16, 2);
        let c = reg(
            t,
            &["jobs", "jobs_total", "q", "a"],
            Kind::Counter,
            Mode::Sum,
        );
        let s = reg(t, &["lat", "lat_sum"], Kind::Histogram, Mode::Sum);
        let b1 = reg(
            t,
            &["lat", "lat_bucket", "le", "0.1"],
            Kind::Histogram,
            Mode::Sum,
        );
        let b2 = reg(
            t,
            &["lat", "lat_bucket", "le", "+Inf"],
            Kind::Histogram,
            Mode::Sum,
        );
        let sc = reg(t, &["sz", "sz_count"], Kind::Summary, Mode::Sum);
        let ss = reg(t, &["sz", "sz_sum"], Kind::Summary, Mode::Sum);
        for slot in [0, 1, 2] {
            write(t, slot, c, 1.5, 0.0);
            write(t, slot, s, 0.25, 0.0);
            write(t, slot, b1, 2.0, 0.0);
            write(t, slot, b2, 1.0, 0.0);
            write(t, slot, sc, 3.0, 0.0);
            write(t, slot, ss, 7.0, 0.0);
        }
        // A slot no process took is not read (what is there is nobody's).
        t.values[(t.slots - 2) * t.capacity + c].store(100f64.to_bits(), Ordering::Relaxed);
        let f = families(t, |_| false);
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].name.as_str(), f[0].kind), ("jobs", AppKind::Counter));
        assert_eq!(f[0].series[0].labels, [("q".to_string(), "a".to_string())]);
        assert_eq!(f[0].series[0].value, AppValue::Counter(4.5));
        assert_eq!(
            f[1].series[0].value,
            AppValue::Histogram {
                buckets: vec![(0.1, 6.0), (f64::INFINITY, 3.0)],
                sum: 0.75
            }
        );
        assert_eq!(
            f[2].series[0].value,
            AppValue::Summary {
                count: 9.0,
                sum: 21.0
            }
        );
        assert_eq!(f[0].help, "Help.");
    }

    #[test]
    fn gauge_modes_merge_like_multiprocess_mode() {
        let t = table(16, 3);
        let modes = [
            Mode::All,
            Mode::LiveAll,
            Mode::Min,
            Mode::LiveMax,
            Mode::Sum,
            Mode::LiveSum,
            Mode::MostRecent,
        ];
        let idx: Vec<usize> = modes
            .iter()
            .map(|&m| {
                reg(
                    t,
                    &[&format!("g{}", m as u8), &format!("g{}", m as u8)],
                    Kind::Gauge,
                    m,
                )
            })
            .collect();
        for (slot, pid) in [(1, 11u32), (2, 12), (3, 13)] {
            t.take_slot(slot, pid);
        }
        // Slot 3 never writes; slot 2's process is dead; slot 1 wrote last.
        for &i in &idx {
            write(t, 1, i, 5.0, 200.0);
            write(t, 2, i, 9.0, 100.0);
        }
        let f = families(t, |pid| pid != 12);
        let one = |n: usize| match &f[n].series[..] {
            [s] => s.value.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            f[0].series.len(),
            2,
            "all: one series per process that wrote"
        );
        assert_eq!(
            f[0].series[1].labels,
            [("pid".to_string(), "12".to_string())]
        );
        assert_eq!(
            f[1].series.len(),
            1,
            "liveall: the dead process is left out"
        );
        assert_eq!(one(2), AppValue::Gauge(5.0));
        assert_eq!(one(3), AppValue::Gauge(5.0));
        assert_eq!(one(4), AppValue::Gauge(14.0));
        assert_eq!(one(5), AppValue::Gauge(5.0));
        assert_eq!(one(6), AppValue::Gauge(5.0));
        // The respawned worker 2 starts without its predecessor's live gauges, keeps the rest.
        t.take_slot(2, 22);
        let f = families(t, |_| true);
        assert_eq!(f[4].series[0].value, AppValue::Gauge(14.0));
        assert_eq!(f[5].series[0].value, AppValue::Gauge(5.0));
        assert_eq!(f[1].series.len(), 1);
    }

    #[test]
    fn a_scribbled_entry_is_skipped() {
        let t = table(8, 1);
        let good = reg(t, &["ok", "ok_total"], Kind::Counter, Mode::Sum);
        let bad = reg(t, &["bad", "bad_total"], Kind::Counter, Mode::Sum);
        // A worker scribbles over the entry: impossible lengths, then a key that does not parse.
        t.entry(bad)[2].store(u64::MAX, Ordering::Relaxed);
        assert!(t.parse(bad).is_none());
        t.entry(bad)[2].store(meta(1, 0, 6, 0), Ordering::Relaxed);
        t.entry(bad)[3].store(u64::from_le_bytes(*b"\xff\xffabcdef"), Ordering::Relaxed);
        assert!(t.parse(bad).is_none());
        // Or over the order list.
        t.order[1].store(u64::MAX, Ordering::Relaxed);
        write(t, 0, good, 1.0, 0.0);
        let f = families(t, |_| true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].series[0].value, AppValue::Counter(1.0));
    }

    #[test]
    fn slots() {
        let t = table(4, 3);
        assert_eq!(t.slot_of(Role::Master), 0);
        assert_eq!(t.slot_of(Role::Worker(3)), 3);
        assert_eq!(t.slot_of(Role::Worker(4)), t.slots - 1);
        assert_eq!(t.slot_of(Role::Mule(1)), 4);
        assert_eq!(t.slot_of(Role::Mule(EXTRA_SLOTS + 1)), t.slots - 1);
        assert_eq!(t.slot_of(Role::Foreign), t.slots - 1);
    }
}
