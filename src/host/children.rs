//! How a child of this process ended, seen without reaping it (`waitid` with `WNOWAIT`): the
//! master's own `waitpid` still finds the zombie, so uWSGI's respawn logic is untouched. Both
//! calls are `WNOHANG`: they never wait.

use metrics_prometheus_engine::exits::WaitStatus;

/// `waitid(idtype, id, WEXITED | WNOHANG | WNOWAIT)`: the pid and status of an ended child
/// that nobody has reaped yet, if any.
fn peek(idtype: libc::idtype_t, id: libc::id_t) -> Option<(i32, WaitStatus)> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value (and what waitid leaves in
    // si_pid when no child has ended, as POSIX asks callers to check).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a writable siginfo_t; WNOHANG never blocks and WNOWAIT leaves the
    // child waitable.
    let r = unsafe {
        libc::waitid(
            idtype,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: waitid filled the SIGCHLD fields (si_pid stays 0 when nothing has ended).
    let pid = unsafe { info.si_pid() };
    // SAFETY: as above.
    let status = unsafe { info.si_status() };
    if pid <= 0 {
        return None;
    }
    let status = match info.si_code {
        libc::CLD_EXITED => WaitStatus::Exited(status),
        libc::CLD_KILLED | libc::CLD_DUMPED => WaitStatus::Signaled(status),
        _ => return None,
    };
    Some((pid, status))
}

/// Whether any child of this process has ended and is not reaped yet (one syscall).
pub(crate) fn any_ended() -> bool {
    peek(libc::P_ALL, 0).is_some()
}

/// How child `pid` ended, if it has and is not reaped yet.
pub(crate) fn ended(pid: i32) -> Option<WaitStatus> {
    let id = libc::id_t::try_from(pid).ok().filter(|&id| id > 0)?;
    peek(libc::P_PID, id).map(|(_, st)| st)
}

#[cfg(target_env = "gnu")]
extern "C" {
    /// glibc's `on_exit(3)`: like `atexit`, with the status given to `exit`.
    fn on_exit(
        f: unsafe extern "C" fn(std::ffi::c_int, *mut std::ffi::c_void),
        arg: *mut std::ffi::c_void,
    ) -> std::ffi::c_int;
}

/// Runs `f(status)` when this process calls `exit(status)` (not on `_exit` nor a signal).
/// False where the C library has no `on_exit`.
pub(crate) fn at_exit_with_status(
    f: unsafe extern "C" fn(std::ffi::c_int, *mut std::ffi::c_void),
) -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: registers a function pointer that lives as long as the program; no argument.
        unsafe { on_exit(f, std::ptr::null_mut()) == 0 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = f;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_an_ended_child_without_reaping_it() {
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: ends the forked child at once, running nothing of the parent's.
            unsafe { libc::_exit(7) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ended(pid).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(ended(pid), Some(WaitStatus::Exited(7)));
        assert!(any_ended());
        // Still there for the real reaper.
        let mut status = 0;
        // SAFETY: reaps our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7);
        assert_eq!(ended(pid), None);
    }

    #[test]
    fn a_killed_child_is_signaled() {
        // SAFETY: the child only pauses until killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            loop {
                // SAFETY: waits for the parent's SIGKILL.
                unsafe { libc::pause() };
            }
        }
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ended(pid).is_none() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(ended(pid), Some(WaitStatus::Signaled(libc::SIGKILL)));
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(ended(0), None);
    }
}
