//! Why a uWSGI worker died, decided from what the master can see: the worker's wait status and
//! its row of uWSGI's worker table as it was when the process ended (before the master reaped
//! and respawned it). The host gathers both in the master (`src/exits.rs`); the rules are here,
//! pure, with the uWSGI source lines they rest on (docs/internals.md has the whole mechanism).
//! File:line references are to uWSGI's `uwsgi-2.0` branch (2.0.30/31); 2.0.21 differs where
//! noted.

/// The `reason` label of `uwsgi_worker_exits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    Harakiri,
    MaxRequests,
    ReloadOnRss,
    ReloadOnAs,
    MaxLifetime,
    Reload,
    Cheaper,
    Signal,
    Exit,
    /// Died with nothing in the worker table explaining it, in the few microseconds between the
    /// plugin's look and the master's `waitpid`, so its wait status was never seen.
    Unknown,
}

impl ExitReason {
    pub const ALL: [ExitReason; 10] = [
        ExitReason::Harakiri,
        ExitReason::MaxRequests,
        ExitReason::ReloadOnRss,
        ExitReason::ReloadOnAs,
        ExitReason::MaxLifetime,
        ExitReason::Reload,
        ExitReason::Cheaper,
        ExitReason::Signal,
        ExitReason::Exit,
        ExitReason::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Harakiri => "harakiri",
            ExitReason::MaxRequests => "max_requests",
            ExitReason::ReloadOnRss => "reload_on_rss",
            ExitReason::ReloadOnAs => "reload_on_as",
            ExitReason::MaxLifetime => "max_lifetime",
            ExitReason::Reload => "reload",
            ExitReason::Cheaper => "cheaper",
            ExitReason::Signal => "signal",
            ExitReason::Exit => "exit",
            ExitReason::Unknown => "unknown",
        }
    }

    /// Position in [`ExitReason::ALL`] (the counter's index).
    pub fn index(self) -> usize {
        ExitReason::ALL
            .iter()
            .position(|&r| r == self)
            .unwrap_or(ExitReason::ALL.len() - 1)
    }
}

/// How the process ended, from `waitid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

/// uWSGI's exit code of `end_me()` (uwsgi.h:931 `UWSGI_END_CODE`), the handler of SIGINT and
/// SIGTERM in a worker (uwsgi.c:3482-3483) and the end of a worker whose loop stopped.
pub const UWSGI_END_CODE: i32 = 30;
/// `UWSGI_RELOAD_CODE` (uwsgi.h:930): `gracefully_kill()`, the worker's SIGHUP handler, exits
/// with it when idle (uwsgi.c:1224-1253).
pub const UWSGI_RELOAD_CODE: i32 = 17;
const SIGKILL: i32 = 9;

/// The worker's row of `uwsgi.workers[]` (shared memory) as the master left it for the dead
/// process: `uwsgi_respawn_worker` resets most of it only when it forks the successor
/// (master_utils.c:660-681).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerRow {
    pub pending_harakiri: i64,
    pub harakiri_count: u64,
    pub cheaped: bool,
    pub cursed_at: i64,
    pub manage_next_request: bool,
    pub delta_requests: u64,
    pub rss_size: u64,
    pub vsz_size: u64,
    pub last_spawn: i64,
}

/// The options that make uWSGI end a worker (`struct uwsgi_server`; bytes and seconds, 0 =
/// off). `max_requests_delta` does not exist in 2.0.21 (0 there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_requests: u64,
    pub max_requests_delta: u64,
    pub min_worker_lifetime: u64,
    pub reload_on_rss: u64,
    pub reload_on_as: u64,
    pub evil_reload_on_rss: u64,
    pub evil_reload_on_as: u64,
    pub max_worker_lifetime: u64,
    pub max_worker_lifetime_delta: u64,
}

/// One death, as the plugin saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Death {
    /// Worker id (1-based).
    pub worker: usize,
    /// `None` when the master reaped the process before the plugin's look (the row is then the
    /// one read at the plugin's previous look, moments before).
    pub status: Option<WaitStatus>,
    /// The row at the end of the process' life.
    pub row: WorkerRow,
    /// The row at the plugin's previous look: evil reloads zero `rss_size`/`vsz_size` right
    /// after their SIGKILL (master_checks.c:237-252), so the figure they acted on is this one.
    pub before: WorkerRow,
    /// `harakiri_count` when the process was spawned (uWSGI never resets the counter).
    pub harakiri_at_spawn: u64,
    /// Wall-clock seconds now.
    pub now: i64,
}

fn exceeds(value: u64, limit: u64) -> bool {
    limit > 0 && value >= limit
}

/// Why the worker died. The rules, in order:
/// 1. **harakiri**: `trigger_harakiri` counts `harakiri_count` and `pending_harakiri` before its
///    kill (master_utils.c:1613-1623); only a respawn resets `pending_harakiri` (:672).
/// 2. **cheaper**: the cheaper subsystem, `--idle` and the fifo's cheap mode set `cheaped` before
///    stopping the worker (master_utils.c:208-212, :1764; master_checks.c:149) and the master
///    does not respawn a cheaped worker (master.c:1054-1057).
/// 3. `cursed_at` set: `uwsgi_curse` (master_utils.c:18-25) stamps it before the master's SIGHUP
///    of a workers' reload (master.c:1093-1102), a chain reload (master_checks.c:84), a graceful
///    or brutal reload (uwsgi.c:1308-1443); and the worker stamps it itself in
///    `goodbye_cruel_world` (uwsgi.c:1283-1292), called after a request when one of
///    `--max-requests`, `--reload-on-as`, `--reload-on-rss` is reached and the worker has lived
///    `--min-worker-lifetime` (utils.c:1192-1203). The worker's final row tells which: the first
///    of the three conditions that holds, else **reload**.
/// 4. `manage_next_request` cleared but not cursed: `--max-worker-lifetime` does exactly that
///    before its SIGWINCH (master_checks.c:254-261): **max_lifetime** when the worker outlived
///    it. Otherwise the worker stopped itself: a SIGHUP from outside (`gracefully_kill` exits
///    17) is **signal**, anything else (an app's touch-reload, utils.c:1674) **exit**.
/// 5. Nothing set: the master did not ask. A SIGKILL right after an evil reload's figure
///    crossed its limit is **reload_on_as/reload_on_rss**; any other signal is **signal**; exit
///    code 30 with nothing set is `end_me` run by a SIGINT/SIGTERM from outside (the master
///    curses first), so **signal**; any other exit is **exit** (`sys.exit`, `os._exit`,
///    `--reload-on-exception`). A native crash is a signal (SIGSEGV, SIGABRT): **signal**.
/// 6. Without the wait status (reaped before the plugin looked, and the worker left no last
///    words because it did not call `exit()`) and nothing set: **unknown**.
pub fn classify(d: &Death, l: &Limits) -> ExitReason {
    let r = &d.row;
    if r.pending_harakiri > 0 || r.harakiri_count > d.harakiri_at_spawn {
        return ExitReason::Harakiri;
    }
    if r.cheaped {
        return ExitReason::Cheaper;
    }
    if r.cursed_at > 0 {
        let lived = u64::try_from(r.cursed_at.saturating_sub(r.last_spawn)).unwrap_or(0);
        if lived >= l.min_worker_lifetime {
            let wid = u64::try_from(d.worker.saturating_sub(1)).unwrap_or(0);
            let max = l
                .max_requests
                .saturating_add(wid.saturating_mul(l.max_requests_delta));
            if l.max_requests > 0 && r.delta_requests >= max {
                return ExitReason::MaxRequests;
            }
            if exceeds(r.vsz_size, l.reload_on_as) {
                return ExitReason::ReloadOnAs;
            }
            if exceeds(r.rss_size, l.reload_on_rss) {
                return ExitReason::ReloadOnRss;
            }
        }
        return ExitReason::Reload;
    }
    if !r.manage_next_request {
        let lived = u64::try_from(d.now.saturating_sub(r.last_spawn)).unwrap_or(0);
        let wid = u64::try_from(d.worker.saturating_sub(1)).unwrap_or(0);
        let limit = l
            .max_worker_lifetime
            .saturating_add(wid.saturating_mul(l.max_worker_lifetime_delta));
        if l.max_worker_lifetime > 0 && lived > limit {
            return ExitReason::MaxLifetime;
        }
        return match d.status {
            Some(WaitStatus::Exited(UWSGI_RELOAD_CODE)) | Some(WaitStatus::Signaled(_)) => {
                ExitReason::Signal
            }
            Some(WaitStatus::Exited(_)) => ExitReason::Exit,
            None => ExitReason::Unknown,
        };
    }
    match d.status {
        Some(WaitStatus::Signaled(SIGKILL)) => {
            // The master zeroes the figure right after its kill: the one it acted on is the
            // larger of the two looks.
            let vsz = r.vsz_size.max(d.before.vsz_size);
            let rss = r.rss_size.max(d.before.rss_size);
            if exceeds(vsz, l.evil_reload_on_as) {
                ExitReason::ReloadOnAs
            } else if exceeds(rss, l.evil_reload_on_rss) {
                ExitReason::ReloadOnRss
            } else {
                ExitReason::Signal
            }
        }
        Some(WaitStatus::Signaled(_)) | Some(WaitStatus::Exited(UWSGI_END_CODE)) => {
            ExitReason::Signal
        }
        Some(WaitStatus::Exited(_)) => ExitReason::Exit,
        None => ExitReason::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> WorkerRow {
        WorkerRow {
            manage_next_request: true,
            last_spawn: 1_000,
            ..WorkerRow::default()
        }
    }

    fn death(row: WorkerRow, status: Option<WaitStatus>) -> Death {
        Death {
            worker: 2,
            status,
            row,
            before: row,
            harakiri_at_spawn: 0,
            now: 1_100,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_requests: 5,
            max_requests_delta: 2,
            reload_on_rss: 100 << 20,
            reload_on_as: 0,
            max_worker_lifetime: 30,
            max_worker_lifetime_delta: 10,
            ..Limits::default()
        }
    }

    const KILL: Option<WaitStatus> = Some(WaitStatus::Signaled(9));

    #[test]
    fn harakiri_before_anything_else() {
        let row = WorkerRow {
            pending_harakiri: 1,
            harakiri_count: 1,
            cursed_at: 1_050,
            ..live()
        };
        assert_eq!(classify(&death(row, KILL), &limits()), ExitReason::Harakiri);
        // Reaped unseen: the never-reset counter still tells.
        let mut d = death(
            WorkerRow {
                pending_harakiri: 0,
                ..row
            },
            None,
        );
        d.harakiri_at_spawn = 0;
        assert_eq!(classify(&d, &limits()), ExitReason::Harakiri);
        d.harakiri_at_spawn = 1;
        assert_eq!(classify(&d, &limits()), ExitReason::Reload);
    }

    #[test]
    fn cheaped_and_cursed() {
        let row = WorkerRow {
            cheaped: true,
            cursed_at: 1_050,
            manage_next_request: false,
            ..live()
        };
        let st = Some(WaitStatus::Exited(UWSGI_END_CODE));
        assert_eq!(classify(&death(row, st), &limits()), ExitReason::Cheaper);
        let row = WorkerRow {
            cheaped: false,
            ..row
        };
        assert_eq!(classify(&death(row, st), &limits()), ExitReason::Reload);
        // Mercy's SIGKILL of a cursed worker is still the master's reload.
        assert_eq!(classify(&death(row, KILL), &limits()), ExitReason::Reload);
    }

    #[test]
    fn goodbye_cruel_world_reasons() {
        let l = limits();
        // Worker 2: max_requests 5 + 1 * delta 2.
        let row = WorkerRow {
            cursed_at: 1_050,
            manage_next_request: false,
            delta_requests: 7,
            ..live()
        };
        let st = Some(WaitStatus::Exited(0));
        assert_eq!(classify(&death(row, st), &l), ExitReason::MaxRequests);
        let fewer = WorkerRow {
            delta_requests: 6,
            ..row
        };
        assert_eq!(classify(&death(fewer, st), &l), ExitReason::Reload);
        let big = WorkerRow {
            rss_size: 200 << 20,
            ..fewer
        };
        assert_eq!(classify(&death(big, st), &l), ExitReason::ReloadOnRss);
        let l_as = Limits {
            reload_on_as: 1 << 30,
            ..l
        };
        let wide = WorkerRow {
            vsz_size: 2 << 30,
            ..big
        };
        assert_eq!(classify(&death(wide, st), &l_as), ExitReason::ReloadOnAs);
        // Not yet min-worker-lifetime old: uWSGI would not have ended it for these.
        let l_min = Limits {
            min_worker_lifetime: 60,
            ..l
        };
        assert_eq!(classify(&death(row, st), &l_min), ExitReason::Reload);
    }

    #[test]
    fn lifetime_and_unprompted_stops() {
        let l = limits();
        let row = WorkerRow {
            manage_next_request: false,
            ..live()
        };
        // Worker 2 may live 30 + 10 s; it lived 100.
        let st = Some(WaitStatus::Exited(UWSGI_END_CODE));
        assert_eq!(classify(&death(row, st), &l), ExitReason::MaxLifetime);
        let young = WorkerRow {
            last_spawn: 1_090,
            ..row
        };
        assert_eq!(classify(&death(young, st), &l), ExitReason::Exit);
        let hup = Some(WaitStatus::Exited(UWSGI_RELOAD_CODE));
        assert_eq!(classify(&death(young, hup), &l), ExitReason::Signal);
        assert_eq!(classify(&death(young, None), &l), ExitReason::Unknown);
    }

    #[test]
    fn nothing_set_goes_by_the_status() {
        let l = limits();
        let row = live();
        assert_eq!(classify(&death(row, KILL), &l), ExitReason::Signal);
        let segv = Some(WaitStatus::Signaled(11));
        assert_eq!(classify(&death(row, segv), &l), ExitReason::Signal);
        let term = Some(WaitStatus::Exited(UWSGI_END_CODE));
        assert_eq!(classify(&death(row, term), &l), ExitReason::Signal);
        for code in [0, 1, 3, 5, 22] {
            let st = Some(WaitStatus::Exited(code));
            assert_eq!(classify(&death(row, st), &l), ExitReason::Exit, "{code}");
        }
        assert_eq!(classify(&death(row, None), &l), ExitReason::Unknown);
    }

    #[test]
    fn evil_reloads() {
        let l = Limits {
            evil_reload_on_rss: 100 << 20,
            evil_reload_on_as: 1 << 30,
            ..Limits::default()
        };
        // The master zeroed rss_size after its kill; the previous look saw 150 MB.
        let mut d = death(live(), KILL);
        d.before.rss_size = 150 << 20;
        assert_eq!(classify(&d, &l), ExitReason::ReloadOnRss);
        d.before.vsz_size = 2 << 30;
        assert_eq!(classify(&d, &l), ExitReason::ReloadOnAs);
        d.before = live();
        assert_eq!(classify(&d, &l), ExitReason::Signal);
        // Only SIGKILL is the evil reloads' signal.
        d.before.rss_size = 150 << 20;
        d.status = Some(WaitStatus::Signaled(15));
        assert_eq!(classify(&d, &l), ExitReason::Signal);
    }

    #[test]
    fn labels() {
        let names: Vec<&str> = ExitReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "harakiri",
                "max_requests",
                "reload_on_rss",
                "reload_on_as",
                "max_lifetime",
                "reload",
                "cheaper",
                "signal",
                "exit",
                "unknown"
            ]
        );
        for (i, r) in ExitReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
