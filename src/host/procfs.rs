//! Process figures from /proc (CPU time, resident memory, open fds) without allocating: paths
//! are formatted on the stack, files are read with raw syscalls into stack buffers, and the fd
//! directory is counted with `getdents64` (glibc's `opendir` would malloc).

use std::ffi::c_int;

/// CPU time, resident memory and open fds of one process.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) cpu_us: i64,
    pub(crate) rss_bytes: i64,
    pub(crate) fds: i64,
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
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: an fd this struct opened and nobody else holds.
        unsafe { libc::close(self.0) };
    }
}

/// Reads `/proc/<pid>/stat` and counts `/proc/<pid>/fd`. Missing entries give zeros.
pub(crate) fn proc_stat(pid: i32) -> ProcStat {
    let mut st = ProcStat::default();
    let mut pbuf = [0u8; 64];
    if let Some(fd) = Fd::open(path(&mut pbuf, pid, b"/stat"), libc::O_RDONLY) {
        let mut buf = [0u8; 2048];
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            if let Some((cpu_us, rss_pages)) = parse_stat(&buf[..n as usize]) {
                st.cpu_us = cpu_us;
                st.rss_bytes = rss_pages.saturating_mul(page_size());
            }
        }
    }
    if let Some(fd) = Fd::open(
        path(&mut pbuf, pid, b"/fd"),
        libc::O_RDONLY | libc::O_DIRECTORY,
    ) {
        st.fds = count_dir_entries(&fd);
    }
    st
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

fn clock_ticks() -> i64 {
    // SAFETY: plain sysconf query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t
    } else {
        100
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

/// `(utime + stime in µs, rss in pages)` from a /proc/PID/stat line.
fn parse_stat(text: &[u8]) -> Option<(i64, i64)> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.iter().rposition(|&b| b == b')')? + 1..];
    // rest starts at field 3 (state): utime is field 14, stime 15, rss 24.
    let mut fields = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let num = |f: Option<&[u8]>| -> Option<i64> { std::str::from_utf8(f?).ok()?.parse().ok() };
    let utime = num(fields.nth(11))?;
    let stime = num(fields.next())?;
    let rss = num(fields.nth(8))?;
    let ticks = utime.saturating_add(stime);
    Some((ticks.saturating_mul(1_000_000) / clock_ticks(), rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line() {
        let line = b"1234 (uwsgi (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    12345 123456789 789 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 17 1 0 0";
        let (cpu, rss) = parse_stat(line).expect("a valid stat line");
        assert_eq!(cpu, 300 * 1_000_000 / clock_ticks());
        assert_eq!(rss, 789);
        assert!(parse_stat(b"garbage").is_none());
    }

    #[test]
    fn this_process() {
        // SAFETY: plain syscall.
        let pid = unsafe { libc::getpid() };
        let st = proc_stat(pid);
        assert!(st.rss_bytes > 0, "{st:?}");
        let want = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("readable /proc")
            .count() as i64;
        // read_dir itself holds one more fd while it counts.
        assert!((st.fds - want).abs() <= 1, "{st:?} vs {want}");
        assert_eq!(proc_stat(-1), ProcStat::default());
    }
}
