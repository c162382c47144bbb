//! `uwsgi_worker_exits_total{reason}`: the master counts each worker death once, by reason.
//!
//! uWSGI 2.0 has no hook for a worker's death, and the wait status is a local of `master_loop`
//! (master.c:661). But every `master_cycle` call (master.c:626-630) comes right before that
//! `waitpid`, and each death is reaped by its own loop iteration, so a dead worker is a zombie,
//! with its row of the worker table as it left it, when the cycle runs. [`cycle`] peeks at it
//! (`waitid` with `WNOWAIT`, host::children), reads the row and lets the engine's
//! [`classify`] decide. A worker that died in the microseconds between the cycle and the
//! `waitpid` is noticed at the next cycle by its changed pid, and classified from the row it
//! left when it called `exit()` ([`last_words`], glibc's `on_exit`), or else from the row read
//! at the previous cycle, without the status (docs/internals.md, "Worker exits").
//!
//! The counters live in shared memory mapped before fork, so the route action in a worker reads
//! them too; the per-worker state is the master's. Work per cycle: one `waitid` when no child
//! has ended, plus one per live worker when one has; a read of each worker's row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics_prometheus_engine::exits::{
    classify, Death, ExitReason, Limits, WaitStatus, WorkerRow,
};
use parking_lot::Mutex;

use crate::ffi;
use crate::host::uwsgi_shared::{field, Int, SharedSlice};
use crate::host::{self, children};

/// One counter per reason (`ExitReason::ALL` order), in shared memory.
static COUNTS: OnceLock<&'static [AtomicU64]> = OnceLock::new();

/// Per worker id, [`LW`] words: the row a worker left when it called `exit()`, written by the
/// worker itself (`last_words`), for a death the master reaps before the plugin's look.
static LAST_WORDS: OnceLock<&'static [AtomicU64]> = OnceLock::new();
/// The worker table, for `last_words` in the workers.
static WORKERS: OnceLock<SharedSlice<ffi::uwsgi_worker>> = OnceLock::new();

/// A last-words record: pid (written last), exit status, then the row's fields.
const LW: usize = 8;

/// The master's view of each worker, between cycles.
static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);

#[derive(Clone, Copy, Default)]
struct Seen {
    pid: i32,
    respawns: u64,
    harakiri_at_spawn: u64,
    /// The row at the last cycle.
    row: WorkerRow,
    /// This pid's death is counted already (seen as a zombie).
    counted: bool,
}

struct Tracker {
    workers: SharedSlice<ffi::uwsgi_worker>,
    limits: Limits,
    /// Index: worker id (0 unused).
    seen: Vec<Seen>,
    started: bool,
}

/// Maps the counters and starts tracking. Master, before fork (the workers inherit the
/// mapping, so a route scrape in any of them reads the same counters).
pub(crate) fn setup() {
    if COUNTS.get().is_some() {
        return;
    }
    match host::shared_counters::map(ExitReason::ALL.len()) {
        Ok(c) => {
            let _ = COUNTS.set(c);
        }
        Err(e) => {
            host::log(&format!(
                "cannot map the worker exit counters: {e}; uwsgi_worker_exits_total stays 0"
            ));
            return;
        }
    }
    let workers = host::instance::workers();
    let _ = WORKERS.set(workers);
    match host::shared_counters::map(workers.len() * LW) {
        Ok(words) => {
            let _ = LAST_WORDS.set(words);
        }
        Err(e) => host::log(&format!(
            "cannot map the workers' last words: {e}; a worker reaped before the plugin's look \
             counts as unknown"
        )),
    }
    *TRACKER.lock() = Some(Tracker {
        workers,
        limits: host::uwsgi::exit_limits(),
        seen: vec![Seen::default(); workers.len()],
        started: false,
    });
}

/// Deaths counted for `reason` since the master started.
pub(crate) fn count(reason: ExitReason) -> i64 {
    COUNTS
        .get()
        .and_then(|c| c.get(reason.index()))
        .map_or(0, |c| {
            i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        })
}

/// In a worker calling `exit(status)` (glibc's `on_exit`, armed in `post_fork`): leaves its row
/// for the master. Only plain stores to this worker's own slot.
pub(crate) fn last_words(status: i32) {
    let (Some(words), Some(workers)) = (LAST_WORDS.get(), WORKERS.get()) else {
        return;
    };
    let w = host::uwsgi::my_worker_id();
    let Some(slot) = words.get(w * LW..(w + 1) * LW).filter(|_| w > 0) else {
        return;
    };
    let row = Tracker::row_of(workers, w);
    let fields = [
        u64::from(status as u32),
        row.cursed_at as u64,
        u64::from(row.manage_next_request),
        row.delta_requests,
        row.rss_size,
        row.vsz_size,
        u64::from(row.cheaped),
    ];
    for (word, v) in slot[1..].iter().zip(fields) {
        word.store(v, Ordering::Relaxed);
    }
    slot[0].store(u64::from(host::uwsgi::pid() as u32), Ordering::Release);
}

/// The exit status and row worker `w` left when process `pid` called `exit()`, if it did.
fn last_words_of(w: usize, pid: i32, mut row: WorkerRow) -> Option<(i32, WorkerRow)> {
    let slot = LAST_WORDS.get()?.get(w * LW..(w + 1) * LW)?;
    if pid <= 0 || slot[0].load(Ordering::Acquire) != u64::from(pid as u32) {
        return None;
    }
    let v = |i: usize| slot[i].load(Ordering::Relaxed);
    row.cursed_at = v(2) as i64;
    row.manage_next_request = v(3) != 0;
    row.delta_requests = v(4);
    row.rss_size = v(5);
    row.vsz_size = v(6);
    row.cheaped = row.cheaped || v(7) != 0;
    Some((v(1) as u32 as i32, row))
}

fn add(reason: ExitReason) {
    if let Some(c) = COUNTS.get().and_then(|c| c.get(reason.index())) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Once per master cycle (bounded, never waits).
pub(crate) fn cycle() {
    let mut guard = TRACKER.lock();
    if let Some(t) = guard.as_mut() {
        let any_ended = children::any_ended();
        t.cycle(any_ended, host::uwsgi::now_s(), children::ended, add);
    }
}

fn flag(v: Option<i32>) -> bool {
    v.is_some_and(|v| v != 0)
}

impl Tracker {
    fn row(&self, w: usize) -> WorkerRow {
        Self::row_of(&self.workers, w)
    }

    fn row_of(ws: &SharedSlice<ffi::uwsgi_worker>, w: usize) -> WorkerRow {
        WorkerRow {
            pending_harakiri: ws
                .read(w, field!(ffi::uwsgi_worker, pending_harakiri))
                .map_or(0, i64::from),
            harakiri_count: ws
                .read(w, field!(ffi::uwsgi_worker, harakiri_count))
                .unwrap_or(0),
            cheaped: flag(ws.read(w, field!(ffi::uwsgi_worker, cheaped))),
            cursed_at: ws
                .read(w, field!(ffi::uwsgi_worker, cursed_at))
                .map_or(0, Int::saturating_i64),
            manage_next_request: flag(ws.read(w, field!(ffi::uwsgi_worker, manage_next_request))),
            delta_requests: ws
                .read(w, field!(ffi::uwsgi_worker, delta_requests))
                .unwrap_or(0),
            rss_size: ws.read(w, field!(ffi::uwsgi_worker, rss_size)).unwrap_or(0),
            vsz_size: ws.read(w, field!(ffi::uwsgi_worker, vsz_size)).unwrap_or(0),
            last_spawn: ws
                .read(w, field!(ffi::uwsgi_worker, last_spawn))
                .map_or(0, Int::saturating_i64),
        }
    }

    /// One look at every worker. `ended(pid)` peeks at a dead child (host::children in the
    /// plugin, a table in the tests); `count` records a death.
    fn cycle(
        &mut self,
        any_ended: bool,
        now: i64,
        ended: impl Fn(i32) -> Option<WaitStatus>,
        mut count: impl FnMut(ExitReason),
    ) {
        let first = !self.started;
        self.started = true;
        for w in 1..self.seen.len() {
            let pid = self
                .workers
                .read(w, field!(ffi::uwsgi_worker, pid))
                .unwrap_or(0);
            let respawns = self
                .workers
                .read(w, field!(ffi::uwsgi_worker, respawn_count))
                .unwrap_or(0);
            let row = self.row(w);
            let before = self.seen[w];
            if pid != before.pid || respawns != before.respawns {
                if before.pid > 0 && !before.counted && !first {
                    // Reaped before a look (or by uWSGI's own cheap-mode loops, which wait for
                    // the workers they stop): the last row, what the master left since (a
                    // cheaped worker stays cheaped, harakiri_count is never reset), and the
                    // worker's last words if it called exit().
                    let last = WorkerRow {
                        cheaped: before.row.cheaped || (pid == 0 && row.cheaped),
                        harakiri_count: row.harakiri_count.max(before.row.harakiri_count),
                        ..before.row
                    };
                    let (status, last) = match last_words_of(w, before.pid, last) {
                        Some((code, row)) => (Some(WaitStatus::Exited(code)), row),
                        None => (None, last),
                    };
                    count(classify(
                        &Death {
                            worker: w,
                            status,
                            row: last,
                            before: before.row,
                            harakiri_at_spawn: before.harakiri_at_spawn,
                            now,
                        },
                        &self.limits,
                    ));
                }
                self.seen[w] = Seen {
                    pid,
                    respawns,
                    // uWSGI never resets the count; the new process' own harakiri comes later.
                    harakiri_at_spawn: row.harakiri_count,
                    row,
                    counted: false,
                };
            }
            let seen = &mut self.seen[w];
            if pid > 0 && !seen.counted && any_ended {
                if let Some(status) = ended(pid) {
                    seen.counted = true;
                    count(classify(
                        &Death {
                            worker: w,
                            status: Some(status),
                            row,
                            before: seen.row,
                            harakiri_at_spawn: seen.harakiri_at_spawn,
                            now,
                        },
                        &self.limits,
                    ));
                }
            }
            if pid > 0 {
                seen.row = row;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker table the test edits between cycles (each cycle sees a fresh copy).
    fn table(n: usize) -> Vec<ffi::uwsgi_worker> {
        let mut t = host::uwsgi_shared::zeroed_workers(n + 1);
        for (i, w) in t.iter_mut().enumerate().skip(1) {
            w.pid = 100 + i as i32;
            w.respawn_count = 1;
            w.manage_next_request = 1;
            w.last_spawn = 1_000;
        }
        t
    }

    fn tracker(n: usize, limits: Limits) -> Tracker {
        Tracker {
            workers: SharedSlice::empty(),
            limits,
            seen: vec![Seen::default(); n + 1],
            started: false,
        }
    }

    /// Runs one cycle over `ws`; returns the reasons counted.
    fn run(
        t: &mut Tracker,
        ws: &[ffi::uwsgi_worker],
        dead: &[(i32, WaitStatus)],
    ) -> Vec<ExitReason> {
        t.workers = SharedSlice::from_static(ws.to_vec().leak());
        let mut got = Vec::new();
        t.cycle(
            !dead.is_empty(),
            1_010,
            |pid| dead.iter().find(|(p, _)| *p == pid).map(|(_, s)| *s),
            |r| got.push(r),
        );
        got
    }

    /// What uwsgi_respawn_worker does to the row (master_utils.c:660-681), and the new pid.
    fn respawn(w: &mut ffi::uwsgi_worker, pid: i32) {
        w.pid = pid;
        w.respawn_count += 1;
        w.pending_harakiri = 0;
        w.cursed_at = 0;
        w.cheaped = 0;
        w.rss_size = 0;
        w.vsz_size = 0;
        w.delta_requests = 0;
        w.manage_next_request = 1;
    }

    #[test]
    fn a_zombie_is_counted_once_by_its_status() {
        let mut ws = table(2);
        let mut t = tracker(2, Limits::default());
        assert!(run(&mut t, &ws, &[]).is_empty());
        // Worker 2 killed by someone: a zombie at the next cycle.
        let kill = [(102, WaitStatus::Signaled(9))];
        assert_eq!(run(&mut t, &ws, &kill), [ExitReason::Signal]);
        // Not reaped yet (the master was busy): not counted twice.
        assert!(run(&mut t, &ws, &kill).is_empty());
        respawn(&mut ws[2], 202);
        assert!(run(&mut t, &ws, &[]).is_empty());
        // The new process exits by itself.
        let exit = [(202, WaitStatus::Exited(3))];
        assert_eq!(run(&mut t, &ws, &exit), [ExitReason::Exit]);
    }

    #[test]
    fn reaped_before_a_look_uses_the_last_row() {
        let mut ws = table(3);
        let limits = Limits {
            max_requests: 5,
            ..Limits::default()
        };
        let mut t = tracker(3, limits);
        run(&mut t, &ws, &[]);
        // Worker 1: goodbye_cruel_world after its 5th request, seen at a cycle, then reaped and
        // respawned before the next one.
        ws[1].delta_requests = 5;
        ws[1].cursed_at = 1_005;
        ws[1].manage_next_request = 0;
        // Worker 2: harakiri triggered (count and pending set).
        ws[2].harakiri_count = 1;
        ws[2].pending_harakiri = 1;
        assert!(run(&mut t, &ws, &[]).is_empty());
        respawn(&mut ws[1], 201);
        respawn(&mut ws[2], 202);
        // Worker 3: died unseen with nothing set.
        respawn(&mut ws[3], 203);
        let mut got = run(&mut t, &ws, &[]);
        got.sort_by_key(|r| r.index());
        assert_eq!(
            got,
            [
                ExitReason::Harakiri,
                ExitReason::MaxRequests,
                ExitReason::Unknown
            ]
        );
        assert!(run(&mut t, &ws, &[]).is_empty());
        // The respawned worker 2 keeps harakiri_count 1: its own death is not a harakiri.
        let exit = [(202, WaitStatus::Exited(1))];
        assert_eq!(run(&mut t, &ws, &exit), [ExitReason::Exit]);
    }

    #[test]
    fn cheaped_workers_are_not_respawned() {
        let mut ws = table(2);
        let mut t = tracker(2, Limits::default());
        run(&mut t, &ws, &[]);
        // uwsgi_calc_cheaper: cheaped, then SIGWINCH; the worker ends its loop (exit 30).
        ws[2].cheaped = 1;
        ws[2].manage_next_request = 0;
        ws[2].cursed_at = 1_005;
        let end = [(102, WaitStatus::Exited(30))];
        assert_eq!(run(&mut t, &ws, &end), [ExitReason::Cheaper]);
        // Reaped: pid 0, no respawn.
        ws[2].pid = 0;
        assert!(run(&mut t, &ws, &[]).is_empty());
        // Brought back by the cheaper: a new life, no death.
        respawn(&mut ws[2], 302);
        assert!(run(&mut t, &ws, &[]).is_empty());
        // --idle's cheap mode reaps the worker itself (pid 0, cheaped) between two cycles.
        ws[1].cheaped = 1;
        ws[1].pid = 0;
        assert_eq!(run(&mut t, &ws, &[]), [ExitReason::Cheaper]);
    }
}
