//! Descriptors that forked children must not keep: the dedicated server lives in the master
//! only, so every fork (workers, respawns, mules, spoolers) closes them in the child. The table
//! is a fixed array of atomics, because a fork handler may not take locks or allocate.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Slots in the table: the epoll fd, listeners, connections (see server/mod.rs).
pub(crate) const SLOTS: usize = 1 + 16 + 64 + 16;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// An fd listed in the table for as long as it lives: removed from it before it is closed, so
/// a child never closes a number that was reused meanwhile.
pub(crate) struct Tracked {
    fd: OwnedFd,
    slot: usize,
}

impl Tracked {
    pub(crate) fn new(fd: OwnedFd, slot: usize) -> Tracked {
        if let Some(s) = FDS.get(slot) {
            s.store(fd.as_raw_fd(), Ordering::Relaxed);
        }
        Tracked { fd, slot }
    }
}

impl AsRawFd for Tracked {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(s) = FDS.get(self.slot) {
            s.store(-1, Ordering::Relaxed);
        }
        // `fd` closes right after this.
    }
}

/// The child side of `pthread_atfork`: closes every listed fd. Async-signal-safe.
pub(crate) fn close_all_in_child() {
    for s in &FDS {
        let fd = s.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was opened by the server in the parent and is owned by nothing else
            // in the child; close() is async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
}

/// Registers `child` to run in the child of every fork, once per process.
pub(crate) fn install_atfork(child: unsafe extern "C" fn()) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only closes fds (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(child)) };
    });
}
