//! Application metrics (`--prometheus-app-metrics`): the values of the application's own
//! prometheus_client metrics, kept in one shared mapping the master makes before fork, written
//! by every process of the instance and read by the master at scrape time.
//!
//! Layout (all 64-bit words, so that every access is one aligned atomic or one f64):
//! - a header: the count of series refused because the table was full or a key too long, and
//!   the count of series registered;
//! - per slot, the pid of the process that owns it now (see [`Table::take_slot`]);
//! - a hash index of the keys: each slot empty, claimed by a registering pid, or pointing to
//!   its entry;
//! - `capacity` entries of [`ENTRY_WORDS`] words, handed out in registration order (so those in
//!   use are contiguous and readers touch only their pages): a state word, the key's hash, its
//!   kind, gauge mode and lengths, then the key itself (the metric name, the sample name, label
//!   names and values) and as much of the HELP text as fits;
//! - the values, slot-major (each process writes only its own slot's row, so no two processes
//!   ever write one cache line), as f64 bits;
//! - the same shape again for the time of each gauge's last write (0: never written by that
//!   slot), which gauge modes need (`min`, `max`, `mostrecent`, `all`).
//!
//! A series first seen in any process is registered once: the first process claims its slot of
//! the index with a compare-exchange, takes the next entry, writes the key, publishes it
//! (Release) and points the index at it; a process that finds the same key there uses it. Values are written by the Python side through a
//! memoryview of the values (one writer per cell: the process owning the slot, its threads
//! serialised by a lock there); the master only reads, and never trusts the table: an entry is
//! parsed only when ready, every length is checked against the entry's bounds, and a key that
//! does not parse is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics_prometheus_engine::app::{AppFamily, AppKind, AppSeries, AppValue};

use crate::host;
use crate::host::shared_counters::stable_hash as hash;
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
const CLAIMED: u64 = 1;
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
    /// Open addressing by the key's hash: 0 empty, `CLAIMED | pid << 2` being registered,
    /// `READY | (entry + 1) << 2` registered.
    index: &'static [AtomicU64],
    entries: &'static [AtomicU64],
    values: &'static [AtomicU64],
    stamps: &'static [AtomicU64],
}

fn meta(kind: u8, mode: u8, key_len: usize, help_len: usize) -> u64 {
    u64::from(kind) | u64::from(mode) << 8 | (key_len as u64) << 16 | (help_len as u64) << 32
}

impl Table {
    /// Words of the whole mapping for `capacity` series and `numproc` workers.
    pub(crate) fn words(capacity: usize, numproc: usize) -> usize {
        let slots = Self::slot_count(numproc);
        HEADER_WORDS + slots + 2 * capacity + capacity * ENTRY_WORDS + 2 * slots * capacity
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
        let (index, rest) = rest.split_at(2 * capacity);
        let (entries, rest) = rest.split_at(capacity * ENTRY_WORDS);
        let (values, stamps) = rest.split_at(slots * capacity);
        Table {
            capacity,
            numproc,
            slots,
            header,
            owners,
            index,
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
    ///
    /// Entries are handed out in registration order (a counter), so the ones in use are
    /// contiguous: readers touch only their pages, and a process' row of values only the
    /// first cells. The hash index finds an existing key; a process claims an index slot
    /// before it takes an entry, so that two processes never register one key twice.
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
        let claim = u64::from(pid) << 2 | CLAIMED;
        for probe in 0..self.index.len() {
            let slot = &self.index[(h as usize).wrapping_add(probe) % self.index.len()];
            let mut yields = 0;
            loop {
                let v = slot.load(Ordering::Acquire);
                if v & 3 == READY {
                    let e = (v >> 2) as usize;
                    match e.checked_sub(1).filter(|&e| e < self.capacity) {
                        Some(e) if self.key_matches(e, h, key) => return Ok(e),
                        _ => break,
                    }
                }
                if v == EMPTY {
                    if slot
                        .compare_exchange(EMPTY, claim, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        continue;
                    }
                    let e = self.header[1].fetch_add(1, Ordering::AcqRel) as usize;
                    if e >= self.capacity {
                        // Full: free the claim, so that waiters give up too.
                        slot.store(EMPTY, Ordering::Release);
                        return refuse(Refused::Full);
                    }
                    self.publish(e, h, key, help, kind, mode);
                    slot.store((e as u64 + 1) << 2 | READY, Ordering::Release);
                    return Ok(e);
                }
                // Claimed by another process: wait for it to publish, unless it died.
                if !alive(u32::try_from(v >> 2).unwrap_or(0)) {
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

    fn key_matches(&self, e: usize, h: u64, key: &[u8]) -> bool {
        let entry = self.entry(e);
        entry[1].load(Ordering::Relaxed) == h
            && self
                .bytes_of(entry)
                .is_some_and(|(bytes, len, ..)| &bytes[..len] == key)
    }

    fn publish(&self, e: usize, h: u64, key: &[u8], help: &[u8], kind: u8, mode: u8) {
        let e = self.entry(e);
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
    }

    /// Entries handed out so far (a few may not be published yet: their registrant is
    /// between its two stores, or died there).
    fn allocated(&self) -> usize {
        (self.header[1].load(Ordering::Acquire) as usize).min(self.capacity)
    }

    /// Kind and gauge mode of a published entry, from its meta word alone.
    fn kind_mode(&self, e: usize) -> Option<(Kind, Mode)> {
        let entry = self.entry(e);
        if entry[0].load(Ordering::Acquire) != READY {
            return None;
        }
        let m = entry[2].load(Ordering::Relaxed);
        let kind = Kind::from_u8(m as u8)?;
        let mode = match kind {
            Kind::Gauge => Mode::from_u8((m >> 8) as u8).unwrap_or(Mode::All),
            _ => Mode::Sum,
        };
        Some((kind, mode))
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
    /// gauges unset (the values its dead predecessor set must stop counting) and its `all`
    /// gauges too (they are exported with the owner's pid: the predecessor's value, say an
    /// in-progress count left at 1 by a killed worker, must not show under the new pid).
    /// Counters, histograms, summaries and the other gauges keep the predecessor's values.
    pub(crate) fn take_slot(&self, slot: usize, pid: u32) {
        if slot + 1 >= self.slots {
            return;
        }
        let previous = self.owners[slot].swap(u64::from(pid), Ordering::AcqRel);
        if previous == u64::from(pid) {
            return;
        }
        for i in 0..self.allocated() {
            if matches!(self.kind_mode(i), Some((Kind::Gauge, m)) if m.live() || m == Mode::All) {
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

/// Which part of its series a sample is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// A counter's `_total`, a gauge's value.
    Value,
    Bucket(f64),
    Sum,
    Count,
}

/// One registered sample, as the master understands it: parsed once (a published entry never
/// changes), with the family and series it belongs to resolved to positions.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    kind: Kind,
    mode: Mode,
    part: Part,
    family: usize,
    series: usize,
    /// The series' labels (`le` left out), for the `pid`-labelled series of `all` gauges.
    labels: Vec<(String, String)>,
}

/// A family as first registered (name, HELP, kind) and its series' label sets.
#[derive(Debug)]
struct FamilyInfo {
    name: String,
    help: String,
    kind: AppKind,
    series: Vec<Vec<(String, String)>>,
}

/// The master's (or a route scraper's) memory of the table: what it parsed of each entry, the
/// families and series they make, and its per-scrape scratch.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// By entry: `None` until published (and for one that does not parse).
    parsed: Vec<Option<Parsed>>,
    families: Vec<FamilyInfo>,
    by_name: HashMap<String, usize>,
    by_labels: HashMap<(usize, Vec<(String, String)>), usize>,
    /// By entry: the sum over the slots (counters, histograms, summaries).
    totals: Vec<f64>,
    /// By series of the scrape: which parts were seen (histograms need their `+Inf` bucket and
    /// `_sum`, summaries their `_count` and `_sum`, or the series is not exported).
    seen: Vec<Vec<u8>>,
}

const SEEN_SUM: u8 = 1;
const SEEN_INF_OR_COUNT: u8 = 2;
/// A gauge in an `all` mode: its series are the per-process ones.
const SEEN_REPLACED: u8 = 4;

impl Cache {
    /// Parses entry `e` and files it under its family and series.
    fn parse(&mut self, t: &Table, e: usize) -> Option<Parsed> {
        let (bytes, key_len, help_len, kind, mode) = t.bytes_of(t.entry(e))?;
        let kind = Kind::from_u8(kind)?;
        let mode = if kind == Kind::Gauge {
            Mode::from_u8(mode).unwrap_or(Mode::All)
        } else {
            Mode::Sum
        };
        let fields = parse_key(&bytes[..key_len])?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (family, sample) = (text(fields[0]), text(fields[1]));
        let mut labels: Vec<(String, String)> = fields[2..]
            .chunks_exact(2)
            .map(|p| (text(p[0]), text(p[1])))
            .collect();
        let part = match (kind, sample.strip_prefix(family.as_str())?) {
            (Kind::Counter, "_total") | (Kind::Gauge, "") => Part::Value,
            (Kind::Histogram | Kind::Summary, "_sum") => Part::Sum,
            (Kind::Summary, "_count") => Part::Count,
            (Kind::Histogram, "_bucket") => {
                let at = labels.iter().position(|(k, _)| k == "le")?;
                let (_, le) = labels.remove(at);
                Part::Bucket(match le.as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().ok()?,
                })
            }
            _ => return None,
        };
        let app_kind = match kind {
            Kind::Counter => AppKind::Counter,
            Kind::Gauge => AppKind::Gauge,
            Kind::Histogram => AppKind::Histogram,
            Kind::Summary => AppKind::Summary,
        };
        let fam = match self.by_name.get(&family) {
            Some(&f) => f,
            None => {
                self.families.push(FamilyInfo {
                    name: family.clone(),
                    help: text(&bytes[key_len..key_len + help_len]),
                    kind: app_kind,
                    series: Vec::new(),
                });
                self.by_name.insert(family, self.families.len() - 1);
                self.families.len() - 1
            }
        };
        // A name registered under two kinds: the first one wins.
        if self.families[fam].kind != app_kind {
            return None;
        }
        let key = (fam, labels);
        let series = match self.by_labels.get(&key) {
            Some(&s) => s,
            None => {
                let series = &mut self.families[fam].series;
                series.push(key.1.clone());
                let s = series.len() - 1;
                self.by_labels.insert(key.clone(), s);
                s
            }
        };
        Some(Parsed {
            kind,
            mode,
            part,
            family: fam,
            series,
            labels: key.1,
        })
    }
}

impl Table {
    /// The application's families for the engine, merged over the slots as prometheus_client's
    /// MultiProcessCollector merges its processes' files; `alive` tells whether a slot's owner
    /// still runs.
    pub(crate) fn collect(
        &self,
        cache: &mut Cache,
        alive: impl Fn(u32) -> bool,
        out: &mut Vec<AppFamily>,
    ) {
        let n = self.allocated();
        cache.parsed.resize(n, None);
        for e in 0..n {
            if cache.parsed[e].is_none() {
                cache.parsed[e] = cache.parse(self, e);
            }
        }
        let slots = self.slots - 1;
        let owners: Vec<u32> = self.owners[..slots]
            .iter()
            .map(|o| u32::try_from(o.load(Ordering::Relaxed)).unwrap_or(0))
            .collect();
        let live: Vec<Owner> = owners.iter().map(|&p| Owner::of(p, &alive)).collect();
        // Slot by slot, over each row's first `n` cells: the memory order of the values.
        cache.totals.clear();
        cache.totals.resize(n, 0.0);
        for s in (0..slots).filter(|&s| live[s] != Owner::None) {
            let row = &self.values[s * self.capacity..s * self.capacity + n];
            for ((t, v), p) in cache.totals.iter_mut().zip(row).zip(&cache.parsed) {
                if p.as_ref().is_some_and(|p| p.kind != Kind::Gauge) {
                    *t += f64::from_bits(v.load(Ordering::Relaxed));
                }
            }
        }
        out.clear();
        cache.seen.clear();
        for f in &cache.families {
            out.push(AppFamily {
                name: f.name.clone(),
                help: f.help.clone(),
                kind: f.kind,
                series: f
                    .series
                    .iter()
                    .map(|labels| AppSeries {
                        labels: labels.clone(),
                        value: empty(f.kind),
                    })
                    .collect(),
            });
            cache.seen.push(vec![0; f.series.len()]);
        }
        for (e, p) in cache.parsed.iter().enumerate() {
            if let Some(p) = p {
                let total = cache.totals[e];
                let seen = &mut cache.seen[p.family][p.series];
                self.merge(&mut out[p.family], e, p, total, seen, &owners, &live);
            }
        }
        // A histogram without its `+Inf` bucket or `_sum`, a summary without `_count` or
        // `_sum` (the table filled up in the middle of it): not exported, rather than wrong.
        // The per-process series of an `all` gauge come after its plain one, which goes.
        for (fam, seen) in out.iter_mut().zip(&cache.seen) {
            let whole = |k: usize| match fam.kind {
                AppKind::Histogram | AppKind::Summary => {
                    seen.get(k) == Some(&(SEEN_SUM | SEEN_INF_OR_COUNT))
                }
                _ => seen.get(k).is_none_or(|f| f & SEEN_REPLACED == 0),
            };
            let keep: Vec<bool> = (0..fam.series.len()).map(whole).collect();
            let mut k = 0;
            fam.series.retain(|_| {
                k += 1;
                keep[k - 1]
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn merge(
        &self,
        fam: &mut AppFamily,
        e: usize,
        p: &Parsed,
        total: f64,
        seen: &mut u8,
        owners: &[u32],
        live: &[Owner],
    ) {
        let value = &mut fam.series[p.series].value;
        match (value, p.part) {
            (AppValue::Counter(v), Part::Value) => *v = total,
            (AppValue::Gauge(v), Part::Value) => {
                if matches!(p.mode, Mode::All | Mode::LiveAll) {
                    for s in self.written(e, p.mode, live) {
                        let mut labels = p.labels.clone();
                        labels.push(("pid".to_string(), owners[s].to_string()));
                        fam.series.push(AppSeries {
                            labels,
                            value: AppValue::Gauge(self.value(s, e)),
                        });
                    }
                    // The per-process series replace the plain one.
                    *seen |= SEEN_REPLACED;
                } else {
                    *v = self.gauge_value(e, p.mode, live);
                }
            }
            (AppValue::Histogram { buckets, .. }, Part::Bucket(le)) => {
                buckets.push((le, total));
                if le == f64::INFINITY {
                    *seen |= SEEN_INF_OR_COUNT;
                }
            }
            (AppValue::Histogram { sum, .. }, Part::Sum) => {
                *sum = total;
                *seen |= SEEN_SUM;
            }
            (AppValue::Summary { sum, .. }, Part::Sum) => {
                *sum = total;
                *seen |= SEEN_SUM;
            }
            (AppValue::Summary { count, .. }, Part::Count) => {
                *count = total;
                *seen |= SEEN_INF_OR_COUNT;
            }
            _ => {}
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

    /// Gauge `i` merged as `mode` says; 0 when no process wrote it (prometheus_client shows a
    /// gauge nobody set as 0, in every mode).
    fn gauge_value(&self, i: usize, mode: Mode, live: &[Owner]) -> f64 {
        let values = self.written(i, mode, live).map(|s| self.value(s, i));
        let v = match mode {
            Mode::All | Mode::LiveAll => None,
            Mode::Min | Mode::LiveMin => values.reduce(f64::min),
            Mode::Max | Mode::LiveMax => values.reduce(f64::max),
            // A fold from +0.0: the float sum of nothing is -0.0, which would print as such.
            Mode::Sum | Mode::LiveSum => Some(values.fold(0.0, |a, v| a + v)),
            Mode::MostRecent | Mode::LiveMostRecent => self
                .written(i, mode, live)
                .max_by(|&a, &b| self.stamp(a, i).total_cmp(&self.stamp(b, i)))
                .map(|s| self.value(s, i)),
        };
        v.unwrap_or(0.0)
    }

    /// Series `i` merged over the processes as the master exports it, for prometheus_client's
    /// `get()` in any process (so that an application serving its own `/metrics` shows what the
    /// master shows). Gauges in an `all` mode have one value per process: this one's.
    pub(crate) fn merged(
        &self,
        i: usize,
        own_slot: Option<usize>,
        alive: impl Fn(u32) -> bool,
    ) -> f64 {
        let Some((kind, mode)) = (i < self.allocated()).then(|| self.kind_mode(i)).flatten() else {
            return 0.0;
        };
        let slots = self.slots - 1;
        let live: Vec<Owner> = self.owners[..slots]
            .iter()
            .map(|o| {
                let pid = u32::try_from(o.load(Ordering::Relaxed)).unwrap_or(0);
                // Liveness costs a syscall per slot: only live modes ask.
                Owner::of(pid, |pid| !mode.live() || alive(pid))
            })
            .collect();
        if kind != Kind::Gauge {
            return (0..slots)
                .filter(|&s| live[s] != Owner::None)
                .map(|s| self.value(s, i))
                .fold(0.0, |a, v| a + v);
        }
        if matches!(mode, Mode::All | Mode::LiveAll) {
            return own_slot
                .filter(|&s| s + 1 < self.slots)
                .map_or(0.0, |s| self.value(s, i));
        }
        self.gauge_value(i, mode, &live)
    }
}

/// A series' value before any sample of it is merged.
fn empty(kind: AppKind) -> AppValue {
    match kind {
        AppKind::Counter => AppValue::Counter(0.0),
        AppKind::Gauge => AppValue::Gauge(0.0),
        AppKind::Histogram => AppValue::Histogram {
            buckets: Vec::new(),
            sum: 0.0,
        },
        AppKind::Summary => AppValue::Summary {
            count: 0.0,
            sum: 0.0,
        },
    }
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
    // A process that has not written yet has no slot: nothing of its own (not the slot where
    // processes without one write).
    let own = usize::try_from(row).ok().map(|row| row / t.capacity());
    t.merged(i, own, |p| {
        host::uwsgi::pid_alive(i32::try_from(p).unwrap_or(0))
    })
}

/// Series registered so far.
pub(crate) fn registered() -> u64 {
    table().map_or(0, |t| t.allocated() as u64)
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
        let (mut cache, mut out) = (Cache::default(), Vec::new());
        t.collect(&mut cache, alive, &mut out);
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
        assert_eq!(t.allocated(), 40);
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
        let p = (hash(&k) as usize) % t.index.len();
        t.index[p].store(u64::from(777u32) << 2 | CLAIMED, Ordering::Relaxed);
        let j = t
            .register(&k, b"", 1, 0, 1, |pid| pid != 777)
            .expect("registered");
        assert_eq!(j, 0, "entries are handed out in order");
        assert_ne!(t.index[(p + 1) % t.index.len()].load(Ordering::Relaxed), 0);
        // The full table frees its claim: a waiter then finds nothing and is refused too.
        let t = table(1, 1);
        reg(t, &["a", "a_total"], Kind::Counter, Mode::Sum);
        assert_eq!(t.register(&k, b"", 1, 0, 1, |_| true), Err(Refused::Full));
        assert!(t
            .index
            .iter()
            .all(|w| w.load(Ordering::Relaxed) & 3 != CLAIMED));
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
        // Nor does its `all` gauge show under the new pid.
        let pids: Vec<&str> = f[0].series.iter().map(|s| s.labels[0].1.as_str()).collect();
        assert_eq!(pids, ["11"]);
    }

    /// The table filled up in the middle of a histogram: its series is left out rather than
    /// exported with buckets missing; gauges nobody set are 0 (not -0, not absent), as in
    /// prometheus_client.
    #[test]
    fn incomplete_series_and_unset_gauges() {
        let t = table(16, 1);
        let s = reg(t, &["lat", "lat_sum"], Kind::Histogram, Mode::Sum);
        let b = reg(
            t,
            &["lat", "lat_bucket", "le", "0.1"],
            Kind::Histogram,
            Mode::Sum,
        );
        let c = reg(t, &["sz", "sz_count"], Kind::Summary, Mode::Sum);
        reg(t, &["g", "g"], Kind::Gauge, Mode::Sum);
        reg(t, &["m", "m"], Kind::Gauge, Mode::Min);
        for i in [s, b, c] {
            write(t, 1, i, 3.0, 0.0);
        }
        let f = families(t, |_| true);
        assert!(f[0].series.is_empty(), "no +Inf bucket: {:?}", f[0]);
        assert!(f[1].series.is_empty(), "no _sum: {:?}", f[1]);
        assert_eq!(f[2].series[0].value, AppValue::Gauge(0.0));
        assert!(matches!(f[2].series[0].value, AppValue::Gauge(v) if v.to_bits() == 0));
        assert_eq!(f[3].series[0].value, AppValue::Gauge(0.0));
    }

    #[test]
    fn a_scribbled_entry_is_skipped() {
        let t = table(8, 1);
        let good = reg(t, &["ok", "ok_total"], Kind::Counter, Mode::Sum);
        let bad = reg(t, &["bad", "bad_total"], Kind::Counter, Mode::Sum);
        // A worker scribbles over the entry: impossible lengths, then a key that does not parse.
        t.entry(bad)[2].store(u64::MAX, Ordering::Relaxed);
        assert!(Cache::default().parse(t, bad).is_none());
        t.entry(bad)[2].store(meta(1, 0, 6, 0), Ordering::Relaxed);
        t.entry(bad)[3].store(u64::from_le_bytes(*b"\xff\xffabcdef"), Ordering::Relaxed);
        assert!(Cache::default().parse(t, bad).is_none());
        // Or over the index: a registration then finds no match and takes a new entry.
        for w in t.index {
            w.store(u64::MAX, Ordering::Relaxed);
        }
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
