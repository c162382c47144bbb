//! Zeroed shared memory for counters that every process of the instance updates: mapped by the
//! master before fork (MAP_SHARED | MAP_ANONYMOUS), inherited by every worker, respawned ones
//! included, and never unmapped, so counters survive respawns and never go down while the
//! master lives.

use std::io;
use std::sync::atomic::AtomicU64;

/// `n` zeroed `AtomicU64`s in shared memory for the rest of the process' life, starting on a
/// cache line.
pub(crate) fn map(n: usize) -> io::Result<&'static [AtomicU64]> {
    if n == 0 {
        return Ok(&[]);
    }
    let bytes = n
        .checked_mul(std::mem::size_of::<AtomicU64>())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too large"))?;
    // SAFETY: an anonymous shared mapping of `bytes` bytes; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is page-aligned, zero-filled by the kernel (a valid AtomicU64 is any
    // bit pattern, zero included), `bytes` long, and never unmapped, so 'static; every access
    // goes through the atomics.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<AtomicU64>(), n) })
}

/// FNV-1a: a hash of keys in shared tables, the same in every process (no per-process seed,
/// unlike std's `RandomState`).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
