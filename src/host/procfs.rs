//! Process figures (CPU time, resident memory, open fds) without allocating, in three cheap
//! syscalls per process once warm:
//!
//! - CPU time: `clock_gettime` on the process' CPU-time clock (the clock id
//!   `clock_getcpuclockid` gives), the kernel's own total of user + system time of every
//!   thread, in nanoseconds; no /proc file to format and parse;
//! - resident memory: `/proc/<pid>/statm` (its second field, in pages), read with `pread`;
//! - open fds: `fstat` of `/proc/<pid>/fd`, whose size is its entry count since Linux 6.2;
//!   on older kernels (size 0) the directory is counted with `getdents64` (glibc's `opendir`
//!   would malloc).
//!
//! Opening the two /proc files costs more than reading them, so each process keeps them open
//! between scrapes in a table of slots (0: the master, N: worker N), reopened when a slot's pid
//! changes (a respawn). The table is allocated once ([`setup`], in the master before fork) and
//! bounded ([`MAX_CACHED`], and a share of `RLIMIT_NOFILE`); processes beyond it, and a
//! scraper that finds the table in use by another thread (the route action runs in every
//! worker thread), read by path. Forked children inherit the table, not its fds: the plugin's
//! fork handler calls [`forget_in_child`].

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// CPU time, resident memory and open fds of one process.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) cpu_us: i64,
    pub(crate) rss_bytes: i64,
    pub(crate) fds: i64,
}

/// At most this many processes keep their /proc files open (two fds each).
pub(crate) const MAX_CACHED: usize = 256;

/// One process' open /proc files; -1: none. Atomics, because the fork handler reads them.
struct Slot {
    pid: AtomicI32,
    statm: AtomicI32,
    fd_dir: AtomicI32,
}

static TABLE: OnceLock<Box<[Slot]>> = OnceLock::new();
/// Held by the one scraper using the table.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Allocates the table for `processes` slots (bounded). Once per process; before fork.
pub(crate) fn setup(processes: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    // At most an eighth of the fd limit goes to the table (two fds a slot).
    let share = if ok {
        usize::try_from(limit.rlim_cur / 16).unwrap_or(usize::MAX)
    } else {
        0
    };
    let n = processes.min(MAX_CACHED).min(share);
    let _ = TABLE.get_or_init(|| {
        (0..n)
            .map(|_| Slot {
                pid: AtomicI32::new(0),
                statm: AtomicI32::new(-1),
                fd_dir: AtomicI32::new(-1),
            })
            .collect()
    });
}

/// The child side of fork: closes the table's fds (the parent keeps its own) and frees the
/// table for this process' scrapers. Async-signal-safe: atomics and close() only.
pub(crate) fn forget_in_child() {
    if let Some(table) = TABLE.get() {
        for slot in table.iter() {
            slot.pid.store(0, Ordering::Relaxed);
            close_slot_fds(slot);
        }
    }
    // The thread that held it, if any, does not exist in the child.
    BUSY.store(false, Ordering::Release);
}

fn close_slot_fds(slot: &Slot) {
    for fd in [&slot.statm, &slot.fd_dir] {
        let fd = fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the table owned `fd` (opened by `reopen`) and has just given it up; close()
            // is async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
}

/// The table, for one scraper at a time.
struct Cache(&'static [Slot]);

impl Cache {
    fn lock() -> Option<Cache> {
        let table = TABLE.get()?;
        BUSY.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(Cache(table))
    }

    /// `(rss pages, fds)` through slot `i`'s open files, reopened for a new pid. None: no
    /// such slot, or the files cannot be opened or read (the slot is then emptied).
    fn read(&self, i: usize, pid: i32) -> Option<(i64, i64)> {
        let slot = self.0.get(i)?;
        if slot.pid.load(Ordering::Relaxed) != pid && !reopen(slot, pid) {
            return None;
        }
        let figures = read_statm(slot.statm.load(Ordering::Relaxed))
            .zip(fd_count(slot.fd_dir.load(Ordering::Relaxed), pid));
        if figures.is_none() {
            slot.pid.store(0, Ordering::Relaxed);
            close_slot_fds(slot);
        }
        figures
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// Points `slot` at `pid`'s files. Each fd is in the table as soon as it is open, so that a
/// fork in between closes it in the child.
fn reopen(slot: &Slot, pid: i32) -> bool {
    slot.pid.store(0, Ordering::Relaxed);
    close_slot_fds(slot);
    let mut pbuf = [0u8; 64];
    let Some(statm) = Fd::open(path(&mut pbuf, pid, b"/statm"), libc::O_RDONLY) else {
        return false;
    };
    slot.statm.store(statm.into_raw(), Ordering::Relaxed);
    let Some(dir) = Fd::open(path(&mut pbuf, pid, b"/fd"), libc::O_PATH) else {
        close_slot_fds(slot);
        return false;
    };
    slot.fd_dir.store(dir.into_raw(), Ordering::Relaxed);
    slot.pid.store(pid, Ordering::Relaxed);
    true
}

/// Figures of process `pid`, which uses table slot `slot` (0: master, N: worker N). Missing
/// processes give zeros.
pub(crate) fn proc_stat(slot: usize, pid: i32) -> ProcStat {
    if pid <= 0 {
        return ProcStat::default();
    }
    let (rss_pages, fds) = Cache::lock()
        .and_then(|c| c.read(slot, pid))
        .unwrap_or_else(|| by_path(pid));
    ProcStat {
        cpu_us: cpu_us(pid),
        rss_bytes: rss_pages.saturating_mul(page_size()),
        fds,
    }
}

/// `(rss pages, fds)` opening the files for this call only.
fn by_path(pid: i32) -> (i64, i64) {
    let mut pbuf = [0u8; 64];
    let rss = Fd::open(path(&mut pbuf, pid, b"/statm"), libc::O_RDONLY)
        .and_then(|fd| read_statm(fd.0))
        .unwrap_or(0);
    let fds = Fd::open(path(&mut pbuf, pid, b"/fd"), libc::O_PATH)
        .and_then(|fd| fd_count(fd.0, pid))
        .unwrap_or(0);
    (rss, fds)
}

/// Resident pages from an open `/proc/<pid>/statm`.
fn read_statm(fd: c_int) -> Option<i64> {
    let mut buf = [0u8; 128];
    // SAFETY: `buf` is writable for its whole length; a bad fd only makes pread fail.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    parse_statm(buf.get(..usize::try_from(n).ok()?)?)
}

/// The second field (resident pages) of a statm line.
fn parse_statm(text: &[u8]) -> Option<i64> {
    let field = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .nth(1)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Open fds of `pid`, whose `/proc/<pid>/fd` is open as `dir` (O_PATH).
fn fd_count(dir: c_int, pid: i32) -> Option<i64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `struct stat` into `st` when it succeeds.
    if unsafe { libc::fstat(dir, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so `st` is initialised.
    let size = unsafe { st.assume_init() }.st_size;
    if size > 0 {
        return Some(size);
    }
    // Before Linux 6.2 the size is 0: count the entries.
    let mut pbuf = [0u8; 64];
    let d = Fd::open(
        path(&mut pbuf, pid, b"/fd"),
        libc::O_RDONLY | libc::O_DIRECTORY,
    )?;
    Some(count_dir_entries(&d))
}

/// CPU time (user + system, every thread, live or exited) of `pid`, in µs; 0 if it is gone.
fn cpu_us(pid: i32) -> i64 {
    // MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) (linux/posix-timers.h): what
    // clock_getcpuclockid returns, without glibc's extra clock_getres call. Any process may
    // read another's CPU clock.
    let clock = (!(pid as u32) << 3 | 2) as libc::clockid_t;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; an unknown clock makes it fail.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec / 1000)
}

/// `/proc/<pid>/<leaf>` as a NUL-terminated path in `buf`.
fn path<'a>(buf: &'a mut [u8; 64], pid: i32, leaf: &[u8]) -> &'a [u8] {
    let mut n = 0;
    for part in [
        b"/proc/".as_slice(),
        itoa::Buffer::new().format(pid).as_bytes(),
    ] {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    buf[n..n + leaf.len()].copy_from_slice(leaf);
    n += leaf.len();
    buf[n] = 0;
    &buf[..=n]
}

/// An fd closed on drop.
struct Fd(c_int);

impl Fd {
    fn open(path: &[u8], flags: c_int) -> Option<Fd> {
        debug_assert_eq!(path.last(), Some(&0));
        // SAFETY: `path` is NUL-terminated (made by `path`); open only reads it.
        let fd = unsafe { libc::open(path.as_ptr().cast(), flags | libc::O_CLOEXEC) };
        (fd >= 0).then_some(Fd(fd))
    }

    /// Gives the fd up (to the table).
    fn into_raw(self) -> c_int {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: an fd this struct opened and nobody else holds.
        unsafe { libc::close(self.0) };
    }
}

/// linux_dirent64 records are 8-byte aligned.
#[repr(C, align(8))]
struct DirentBuf([u8; 8192]);

/// Entries of a directory except `.` and `..`.
fn count_dir_entries(dir: &Fd) -> i64 {
    let mut buf = DirentBuf([0; 8192]);
    let mut count = 0i64;
    loop {
        // SAFETY: getdents64 writes at most `buf.0.len()` bytes of records into `buf`.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, dir.0, buf.0.as_mut_ptr(), buf.0.len()) };
        let Some(data) = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| &buf.0[..n])
        else {
            return count;
        };
        // Each record: d_ino (8), d_off (8), d_reclen (2), d_type (1), then the name and its NUL.
        let mut off = 0usize;
        while let Some(rec) = data.get(off..off + 22) {
            let reclen = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
            let name = &rec[19..22];
            let dot = name[0] == b'.' && (name[1] == 0 || (name[1] == b'.' && name[2] == 0));
            if !dot {
                count += 1;
            }
            if reclen == 0 {
                return count;
            }
            off += reclen;
        }
    }
}

fn page_size() -> i64 {
    // SAFETY: plain sysconf query.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_line() {
        assert_eq!(parse_statm(b"12345 789 100 10 0 2000 0\n"), Some(789));
        assert_eq!(parse_statm(b"garbage"), None);
        assert_eq!(parse_statm(b""), None);
    }

    fn fds_of(pid: i32) -> i64 {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("readable /proc")
            .count() as i64
    }

    /// utime + stime from /proc/PID/stat, in µs (the figure the CPU clock replaces).
    fn stat_cpu_us(pid: i32) -> i64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let rest = &text[text.rfind(')').expect("comm") + 1..];
        let f: Vec<i64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().expect("number"))
            .collect();
        // SAFETY: plain sysconf query.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (f[0] + f[1]) * 1_000_000 / ticks
    }

    #[test]
    fn this_process() {
        // SAFETY: plain syscall.
        let pid = unsafe { libc::getpid() };
        // Burn some CPU so that the clock and /proc have something to agree on.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let st = proc_stat(usize::MAX, pid);
        assert!(st.rss_bytes > 0, "{st:?}");
        // read_dir itself holds one more fd while it counts; other tests open files too.
        assert!((st.fds - fds_of(pid)).abs() <= 3, "{st:?}");
        // /proc truncates to clock ticks and lags the clock by up to a tick.
        let proc_us = stat_cpu_us(pid);
        assert!(
            st.cpu_us > 0 && (st.cpu_us - proc_us).abs() < 100_000,
            "{st:?} vs {proc_us}"
        );
        assert_eq!(proc_stat(0, -1), ProcStat::default());
        assert_eq!(proc_stat(0, 0), ProcStat::default());
    }

    #[test]
    fn the_table_follows_pids() {
        setup(3);
        // SAFETY: plain syscall.
        let me = unsafe { libc::getpid() };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let other = i32::try_from(child.id()).expect("a pid");
        // this_process may hold the table for a moment.
        let cached = |slot, pid| loop {
            if let Some(c) = Cache::lock() {
                break c.read(slot, pid);
            }
        };
        let (rss, fds) = cached(1, me).expect("readable");
        assert!(rss > 0 && (fds - fds_of(me)).abs() <= 3);
        assert_eq!(
            TABLE.get().expect("set up")[1].pid.load(Ordering::Relaxed),
            me
        );
        // Another pid in the same slot (a respawn): reopened.
        let (rss2, fds2) = cached(1, other).expect("readable");
        assert!(rss2 > 0 && fds2 == fds_of(other), "{rss2} {fds2}");
        assert_eq!(
            TABLE.get().expect("set up")[1].pid.load(Ordering::Relaxed),
            other
        );
        // The process goes away: no figures, the slot is emptied.
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert_eq!(cached(1, other), None);
        assert_eq!(
            TABLE.get().expect("set up")[1].pid.load(Ordering::Relaxed),
            0
        );
        assert_eq!(proc_stat(1, other), ProcStat::default());
        // A slot past the table reads by path.
        assert_eq!(cached(7, me), None);
        assert!(proc_stat(7, me).rss_bytes > 0);
    }
}
