//! The `route` label of the request histograms (`--prometheus-route-label`,
//! `--prometheus-route`): which route a request belongs to, and the table of routes every
//! process shares.
//!
//! A route is a small number, its *id*: 0 is `other`, 1..=max the distinct routes in order of
//! first appearance. The recorders (`latency.rs`) keep one histogram series per route, method
//! and status class, at a position fixed by the id, so a route costs no lookup at scrape time
//! and survives respawns like the counters do. The table (one shared mapping, made by the
//! master before fork) holds:
//! - a header: the next id to hand out, and a generation bumped whenever a series is first
//!   recorded (the scrapers rebuild their layout of the routed series when it moves);
//! - a hash index of the names: each slot empty, claimed by a registering pid, or pointing to
//!   its id (the scheme of `app_metrics.rs`);
//! - per id, its name (a length word, 0 until published, then the bytes);
//! - the *seen* bitmap: one bit per request series (id × method × status class) and, after
//!   them, per queue-time series (id), set the first time it is recorded, so that a scrape lays
//!   out and reads only the series in use;
//! - per worker, on a cache line of its own, the requests whose new route found the table full.
//!
//! The rules' names are registered by the master at setup, so the rules never register
//! anything at request time; only the application's logvar values do, once per new value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics_prometheus_engine::plan::REQUEST_SERIES;
use metrics_prometheus_engine::routes::{self as engine_routes, Rules, MAX_ROUTE_LEN, OTHER};

use crate::host;
use crate::host::request::Request;
use crate::host::shared_counters::stable_hash as hash;

const EMPTY: u64 = 0;
const CLAIMED: u64 = 1;
const READY: u64 = 2;

/// Words per name: the length word, then up to [`MAX_ROUTE_LEN`] bytes.
const NAME_WORDS: usize = 1 + MAX_ROUTE_LEN.div_ceil(8);
/// Header words (a cache line).
const HEADER_WORDS: usize = 8;
/// Words per worker's overflow count (a cache line each).
const OVERFLOW_STRIDE: usize = 8;

/// A registration that finds a slot claimed by a live process waits this many yields at most
/// (the claimant writes one name: a stall means it was stopped in those few hundred ns).
const WAIT_YIELDS: usize = 1_000;

/// The shared table: plain safe code over atomics in a mapping of `host::shared_counters`.
pub(crate) struct Table {
    /// Distinct routes kept, `other` not counted.
    max: usize,
    workers: usize,
    header: &'static [AtomicU64],
    /// Open addressing by the name's hash: 0 empty, `CLAIMED | pid << 2` being registered,
    /// `READY | id << 2` registered.
    index: &'static [AtomicU64],
    /// `max + 1` names of [`NAME_WORDS`] (id 0's unused: `other` is implicit).
    names: &'static [AtomicU64],
    seen: &'static [AtomicU64],
    overflow: &'static [AtomicU64],
}

/// Up to 8 bytes of a name as the word that holds them (zero-padded).
fn name_word(chunk: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..chunk.len()].copy_from_slice(chunk);
    u64::from_ne_bytes(b)
}

impl Table {
    fn index_len(max: usize) -> usize {
        (2 * max).next_power_of_two().max(8)
    }

    /// Bits of the seen bitmap: the request series, then the queue-time series.
    fn seen_bits(max: usize) -> usize {
        (max + 1) * (REQUEST_SERIES + 1)
    }

    /// Words of the mapping for `max` routes and `workers` workers.
    pub(crate) fn words(max: usize, workers: usize) -> usize {
        HEADER_WORDS
            + Self::index_len(max)
            + (max + 1) * NAME_WORDS
            + Self::seen_bits(max).div_ceil(64)
            + (workers + 1) * OVERFLOW_STRIDE
    }

    pub(crate) fn new(mem: &'static [AtomicU64], max: usize, workers: usize) -> Table {
        let (header, rest) = mem.split_at(HEADER_WORDS);
        let (index, rest) = rest.split_at(Self::index_len(max));
        let (names, rest) = rest.split_at((max + 1) * NAME_WORDS);
        let (seen, overflow) = rest.split_at(Self::seen_bits(max).div_ceil(64));
        Table {
            max,
            workers,
            header,
            index,
            names,
            seen,
            overflow,
        }
    }

    /// Routes per recorder dimension: `other` and the `max` others.
    pub(crate) fn ids(&self) -> usize {
        self.max + 1
    }

    fn name_words(&self, id: usize) -> &[AtomicU64] {
        &self.names[id * NAME_WORDS..(id + 1) * NAME_WORDS]
    }

    /// The name of `id` once published (`other` for 0).
    pub(crate) fn name(&self, id: usize) -> Option<Vec<u8>> {
        if id == 0 {
            return Some(OTHER.as_bytes().to_vec());
        }
        if id > self.max {
            return None;
        }
        let w = self.name_words(id);
        let len = usize::try_from(w[0].load(Ordering::Acquire))
            .ok()?
            .checked_sub(1)?;
        if len > MAX_ROUTE_LEN {
            return None;
        }
        let mut bytes = Vec::with_capacity(len.next_multiple_of(8));
        for word in &w[1..] {
            bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            if bytes.len() >= len {
                break;
            }
        }
        bytes.truncate(len);
        Some(bytes)
    }

    /// Whether `id`'s published name is `name`, compared word by word in place: this runs for
    /// every request whose route comes from a logvar, so it allocates nothing.
    fn name_is(&self, id: usize, name: &[u8]) -> bool {
        if id == 0 || id > self.max {
            return false;
        }
        let w = self.name_words(id);
        if w[0].load(Ordering::Acquire) != name.len() as u64 + 1 {
            return false;
        }
        w[1..]
            .iter()
            .zip(name.chunks(8))
            .all(|(word, chunk)| word.load(Ordering::Relaxed) == name_word(chunk))
    }

    fn publish(&self, id: usize, name: &[u8]) {
        let w = self.name_words(id);
        for (word, chunk) in w[1..].iter().zip(name.chunks(8)) {
            word.store(name_word(chunk), Ordering::Relaxed);
        }
        // Release: a reader that sees the length sees the bytes.
        w[0].store(name.len() as u64 + 1, Ordering::Release);
    }

    /// The id of `name` (cleaned, not `other`), registering it if new: `None` when the table
    /// is full (or a registration of the same slot stalled).
    pub(crate) fn id_of(
        &self,
        name: &[u8],
        pid: u32,
        alive: impl Fn(u32) -> bool,
    ) -> Option<usize> {
        let h = hash(name);
        let claim = u64::from(pid) << 2 | CLAIMED;
        let len = self.index.len();
        for probe in 0..len {
            let slot = &self.index[(h as usize).wrapping_add(probe) & (len - 1)];
            let mut yields = 0;
            loop {
                let v = slot.load(Ordering::Acquire);
                if v & 3 == READY {
                    let id = (v >> 2) as usize;
                    if self.name_is(id, name) {
                        return Some(id);
                    }
                    break;
                }
                if v == EMPTY {
                    // Full: no claim at all, so that a flood of new values costs one load.
                    if self.header[0].load(Ordering::Relaxed) as usize >= self.max {
                        return None;
                    }
                    if slot
                        .compare_exchange(EMPTY, claim, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        continue;
                    }
                    let id = self.header[0].fetch_add(1, Ordering::AcqRel) as usize + 1;
                    if id > self.max {
                        // Lost the race for the last id: free the slot for waiters.
                        slot.store(EMPTY, Ordering::Release);
                        return None;
                    }
                    self.publish(id, name);
                    slot.store((id as u64) << 2 | READY, Ordering::Release);
                    return Some(id);
                }
                // Claimed by another process (or thread): wait for its publish, unless it died
                // (then the slot stays claimed forever: look further).
                if !alive(u32::try_from(v >> 2).unwrap_or(0)) {
                    break;
                }
                yields += 1;
                if yields > WAIT_YIELDS {
                    return None;
                }
                std::thread::yield_now();
            }
        }
        None
    }

    /// Notes that request series `series` of route `id` (or, with `queue`, its queue-time
    /// series) has been recorded.
    pub(crate) fn mark(&self, id: usize, series: usize, queue: bool) {
        let bit = if queue {
            self.ids() * REQUEST_SERIES + id
        } else {
            id * REQUEST_SERIES + series
        };
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let Some(w) = self.seen.get(word) else {
            return;
        };
        // A load first: once set, a bit costs no write to a line every worker reads.
        if w.load(Ordering::Relaxed) & mask == 0 && w.fetch_or(mask, Ordering::Relaxed) & mask == 0
        {
            // Release: a scraper that sees the new generation sees the bit.
            self.header[1].fetch_add(1, Ordering::Release);
        }
    }

    /// The generation of the seen bitmap: it moves when a series appears.
    pub(crate) fn generation(&self) -> u64 {
        self.header[1].load(Ordering::Acquire)
    }

    /// The series recorded so far, as `(route id, request series)` and queue-time route ids.
    pub(crate) fn seen(&self, requests: &mut Vec<(usize, usize)>, queue: &mut Vec<usize>) {
        requests.clear();
        queue.clear();
        let split = self.ids() * REQUEST_SERIES;
        for (i, w) in self.seen.iter().enumerate() {
            let mut bits = w.load(Ordering::Relaxed);
            while bits != 0 {
                let bit = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if bit < split {
                    requests.push((bit / REQUEST_SERIES, bit % REQUEST_SERIES));
                } else if bit - split < self.ids() {
                    queue.push(bit - split);
                }
            }
        }
    }

    fn count_overflow(&self, wid: usize) {
        if let Some(c) = self.overflow.get(wid.min(self.workers) * OVERFLOW_STRIDE) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests whose new route was counted as `other`, over every process.
    pub(crate) fn overflowed(&self) -> u64 {
        (0..=self.workers).fold(0u64, |a, w| {
            a.wrapping_add(self.overflow[w * OVERFLOW_STRIDE].load(Ordering::Relaxed))
        })
    }
}

/// The route label's state: the table, and the rules with the id of each rule name.
struct Routes {
    table: Table,
    rules: Rules,
    /// Per name of `rules.names()`, its id.
    rule_ids: Vec<usize>,
}

static ROUTES: OnceLock<Routes> = OnceLock::new();

/// Maps the table for `max` routes and `workers` workers and registers the rules' names.
/// Master, before fork.
pub(crate) fn setup(
    rules: &[engine_routes::RouteRule],
    max: usize,
    workers: usize,
) -> Result<(), String> {
    let rules = Rules::new(rules).map_err(|e| e.to_string())?;
    let mem = host::shared_counters::map(Table::words(max, workers)).map_err(|e| e.to_string())?;
    let table = Table::new(mem, max, workers);
    let pid = u32::try_from(host::uwsgi::pid()).unwrap_or(0);
    let rule_ids = rules
        .names()
        .iter()
        .map(|n| {
            if n == OTHER {
                return Ok(0);
            }
            // The configuration check holds the distinct names to `max`.
            table
                .id_of(n.as_bytes(), pid, |_| true)
                .ok_or_else(|| format!("no room for the route {n:?}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let _ = ROUTES.set(Routes {
        table,
        rules,
        rule_ids,
    });
    Ok(())
}

/// The shared table, when the route label is on.
pub(crate) fn table() -> Option<&'static Table> {
    ROUTES.get().map(|r| &r.table)
}

/// The route of a finished request (see the module's doc): its logvar `route`, else the first
/// rule matching its `PATH_INFO`, else `other`. A new logvar value past the table's capacity
/// is `other`, and counted.
pub(crate) fn route_of(req: &Request, wid: usize) -> usize {
    let Some(r) = ROUTES.get() else {
        return 0;
    };
    if let Some(v) = req.logvar(b"route").and_then(engine_routes::clean) {
        return id_of_value(r, &v, wid);
    }
    r.rules
        .first_match(req.path_info())
        .and_then(|i| r.rule_ids.get(i).copied())
        .unwrap_or(0)
}

fn id_of_value(r: &Routes, v: &[u8], wid: usize) -> usize {
    if v == OTHER.as_bytes() {
        return 0;
    }
    let pid = u32::try_from(host::uwsgi::pid()).unwrap_or(0);
    match r.table.id_of(v, pid, |p| {
        host::uwsgi::pid_alive(i32::try_from(p).unwrap_or(0))
    }) {
        Some(id) => id,
        None => {
            r.table.count_overflow(wid);
            0
        }
    }
}

/// Requests counted as `other` because the table was full.
pub(crate) fn overflowed() -> u64 {
    table().map_or(0, Table::overflowed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn table(max: usize, workers: usize) -> &'static Table {
        let mem: &'static [AtomicU64] = Box::leak(
            (0..Table::words(max, workers))
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        Box::leak(Box::new(Table::new(mem, max, workers)))
    }

    #[test]
    fn ids_in_order_of_first_appearance_up_to_max() {
        let t = table(3, 1);
        let id = |n: &[u8]| t.id_of(n, 1, |_| true);
        assert_eq!(id(b"/a"), Some(1));
        assert_eq!(id(b"/b"), Some(2));
        assert_eq!(id(b"/a"), Some(1));
        assert_eq!(id(b"/c"), Some(3));
        assert_eq!(id(b"/d"), None, "full");
        assert_eq!(id(b"/b"), Some(2), "known names still found when full");
        assert_eq!(t.name(0).as_deref(), Some(&b"other"[..]));
        assert_eq!(t.name(3).as_deref(), Some(&b"/c"[..]));
        assert_eq!(t.name(4), None);
        let long = vec![b'x'; MAX_ROUTE_LEN];
        let t = table(2, 1);
        let i = t.id_of(&long, 1, |_| true).expect("id");
        assert_eq!(t.name(i), Some(long));
    }

    /// Threads registering the same names concurrently: each name gets one id, all ids are
    /// distinct and at most `max` are handed out.
    #[test]
    fn concurrent_registration() {
        let t = table(40, 1);
        let names: Arc<Vec<Vec<u8>>> =
            Arc::new((0..60).map(|i| format!("/r/{i}").into_bytes()).collect());
        let found: Vec<Vec<Option<usize>>> = (0..4)
            .map(|k| {
                let names = Arc::clone(&names);
                std::thread::spawn(move || {
                    (0..60)
                        .map(|i| t.id_of(&names[(i + k * 7) % 60], 1, |_| true))
                        .collect::<Vec<_>>()
                })
            })
            .map(|h| h.join().expect("thread"))
            .collect();
        let mut by_name = std::collections::HashMap::new();
        for (k, ids) in found.iter().enumerate() {
            for (i, id) in ids.iter().enumerate() {
                if let Some(id) = id {
                    let name = &names[(i + k * 7) % 60];
                    let prev = by_name.insert(name.clone(), *id);
                    assert!(prev.is_none_or(|p| p == *id), "two ids for one name");
                    assert_eq!(t.name(*id).as_ref(), Some(name));
                }
            }
        }
        let mut ids: Vec<usize> = by_name.values().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), by_name.len(), "one name per id");
        assert_eq!(ids.len(), 40);
    }

    #[test]
    fn a_dead_claimant_is_skipped_and_a_live_one_waited_for() {
        let t = table(4, 1);
        let h = hash(b"/x") as usize & (t.index.len() - 1);
        t.index[h].store(99 << 2 | CLAIMED, Ordering::Relaxed);
        assert_eq!(t.id_of(b"/x", 1, |p| p != 99), Some(1));
        let h = hash(b"/y") as usize & (t.index.len() - 1);
        t.index[h].store(98 << 2 | CLAIMED, Ordering::Relaxed);
        assert_eq!(t.id_of(b"/y", 1, |_| true), None, "stalled");
    }

    #[test]
    fn seen_series_and_generation() {
        let t = table(2, 2);
        let g0 = t.generation();
        t.mark(0, 7, false);
        t.mark(2, REQUEST_SERIES - 1, false);
        t.mark(1, 0, true);
        let g1 = t.generation();
        assert_eq!(g1, g0 + 3);
        t.mark(0, 7, false);
        assert_eq!(t.generation(), g1, "a series seen again moves nothing");
        let (mut r, mut q) = (Vec::new(), Vec::new());
        t.seen(&mut r, &mut q);
        assert_eq!(r, [(0, 7), (2, REQUEST_SERIES - 1)]);
        assert_eq!(q, [1]);
        t.count_overflow(1);
        t.count_overflow(2);
        t.count_overflow(9);
        assert_eq!(t.overflowed(), 3);
    }
}
