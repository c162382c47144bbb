//! The plugin's global allocator: the system allocator, plus two captures for the master's
//! one-off building of the exporter before fork.
//!
//! Why: data built before fork and then only read (the precomputed exposition) is shared with
//! every worker, and so is the heap around it. In the heap, the exposition and the temporaries
//! its building freed leave holes that the allocations made next (uWSGI's, Python's) settle
//! among; the heap cannot shrink back, and every worker spreads its own allocations over
//! those holes, each first write to a page copying it (measured at 16 x 32: +0.5 MB private
//! per worker).
//!
//! - [`freeze`] copies a value into a mapping of its own, then made read-only. No process ever
//!   writes a page of it: its pages stay shared by the master and every worker (fork copies
//!   the page tables of anonymous mappings), so each process' PSS counts 1/N of it. It clones
//!   the value twice: the first clone only measures what it allocates and is dropped; the
//!   second is placed, allocation by allocation, in a fresh mapping of that size (a bump
//!   allocator), then the value itself. The frozen value is never dropped; a `dealloc` of a
//!   pointer into a frozen region leaves it.
//! - [`with_scratch`] runs a closure with the calling thread's allocations in a scratch
//!   mapping (a bump allocator; the last block freed is given back), and unmaps it afterwards
//!   when every block was freed, which it counts: the temporaries never touch the heap. A
//!   block that outlives the closure keeps the region (correct, only not given back).
//!
//! Outside a capture, and on every other thread, allocations go to the system allocator
//! unchanged. In `fault-injection` builds (tests) it also counts allocations, so the tests can
//! assert that a steady scrape allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct PluginAlloc;

#[global_allocator]
static GLOBAL: PluginAlloc = PluginAlloc;

#[cfg(feature = "fault-injection")]
static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Allocations (and reallocations) by the plugin's Rust code since load, all threads.
#[cfg(feature = "fault-injection")]
pub(crate) fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

fn count() {
    #[cfg(feature = "fault-injection")]
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

/// What [`freeze`] is doing on the [`CAPTURE_THREAD`].
const FREEZE_NONE: usize = 0;
/// Adds each allocation's size and alignment to [`MEASURED`] (the allocation itself is made
/// as without).
const FREEZE_MEASURE: usize = 1;
/// Allocates from [`CURSOR`]..[`LIMIT`] (as without once that is full).
const FREEZE_PLACE: usize = 2;

static FREEZE: AtomicUsize = AtomicUsize::new(FREEZE_NONE);
/// [`with_scratch`] is running on the [`CAPTURE_THREAD`].
static SCRATCH_ON: AtomicBool = AtomicBool::new(false);
/// `pthread_self()` of the thread [`freeze`] or [`with_scratch`] runs on (0: none).
static CAPTURE_THREAD: AtomicUsize = AtomicUsize::new(0);
static MEASURED: AtomicUsize = AtomicUsize::new(0);
static CURSOR: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Frozen regions (start, end): at most this many `freeze` calls succeed per process.
const REGIONS: usize = 4;
static REGION_COUNT: AtomicUsize = AtomicUsize::new(0);
static REGION_START: [AtomicUsize; REGIONS] = [const { AtomicUsize::new(0) }; REGIONS];
static REGION_END: [AtomicUsize; REGIONS] = [const { AtomicUsize::new(0) }; REGIONS];

/// The scratch region of [`with_scratch`] (0, 0 when there is none), its bump pointer and the
/// bytes of it still allocated.
static SCRATCH_START: AtomicUsize = AtomicUsize::new(0);
static SCRATCH_END: AtomicUsize = AtomicUsize::new(0);
static SCRATCH_CURSOR: AtomicUsize = AtomicUsize::new(0);
static SCRATCH_LIVE: AtomicUsize = AtomicUsize::new(0);
/// Address space reserved for one [`with_scratch`] (only the pages used become memory).
const SCRATCH_RESERVE: usize = 256 << 20;

fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions and never fails.
    unsafe { libc::pthread_self() as usize }
}

/// Whether a capture applies to the calling thread.
fn captured() -> bool {
    (SCRATCH_ON.load(Ordering::Relaxed) || FREEZE.load(Ordering::Relaxed) != FREEZE_NONE)
        && CAPTURE_THREAD.load(Ordering::Relaxed) == this_thread()
}

/// Whether `p` points into a frozen region (then it is never freed).
fn frozen(p: *mut u8) -> bool {
    let n = REGION_COUNT.load(Ordering::Acquire);
    let a = p as usize;
    (0..n.min(REGIONS)).any(|i| {
        a >= REGION_START[i].load(Ordering::Relaxed) && a < REGION_END[i].load(Ordering::Relaxed)
    })
}

fn in_scratch(p: *mut u8) -> bool {
    let a = p as usize;
    a >= SCRATCH_START.load(Ordering::Relaxed) && a < SCRATCH_END.load(Ordering::Relaxed)
}

/// A bump allocation of `layout` at `cursor` below `limit`: (block, new cursor).
fn bump(cursor: usize, limit: usize, layout: Layout) -> Option<(usize, usize)> {
    let start = cursor.checked_next_multiple_of(layout.align())?;
    let end = start.checked_add(layout.size())?;
    (end <= limit).then_some((start, end))
}

/// A block of the frozen region being filled, or null when it has no room left.
fn place(layout: Layout) -> *mut u8 {
    match bump(
        CURSOR.load(Ordering::Relaxed),
        LIMIT.load(Ordering::Relaxed),
        layout,
    ) {
        Some((start, end)) => {
            CURSOR.store(end, Ordering::Relaxed);
            start as *mut u8
        }
        None => std::ptr::null_mut(),
    }
}

/// A block of the scratch region, or null when it has no room left.
fn scratch(layout: Layout) -> *mut u8 {
    match bump(
        SCRATCH_CURSOR.load(Ordering::Relaxed),
        SCRATCH_END.load(Ordering::Relaxed),
        layout,
    ) {
        Some((start, end)) => {
            SCRATCH_CURSOR.store(end, Ordering::Relaxed);
            SCRATCH_LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            start as *mut u8
        }
        None => std::ptr::null_mut(),
    }
}

/// Serves an allocation of the capturing thread; null: use the system allocator.
fn capture(layout: Layout) -> *mut u8 {
    if !captured() {
        return std::ptr::null_mut();
    }
    match FREEZE.load(Ordering::Relaxed) {
        FREEZE_PLACE => {
            let p = place(layout);
            if !p.is_null() {
                return p;
            }
        }
        FREEZE_MEASURE => {
            MEASURED.fetch_add(layout.size() + layout.align(), Ordering::Relaxed);
        }
        _ => {}
    }
    if SCRATCH_ON.load(Ordering::Relaxed) {
        return scratch(layout);
    }
    std::ptr::null_mut()
}

/// Frees a block of the scratch region: the last one is given back to the bump pointer.
fn scratch_free(p: *mut u8, size: usize) {
    SCRATCH_LIVE.fetch_sub(size, Ordering::Relaxed);
    let a = p as usize;
    let _ = SCRATCH_CURSOR.compare_exchange(a + size, a, Ordering::Relaxed, Ordering::Relaxed);
}

// SAFETY: outside a capture every call is forwarded unchanged to the system allocator. A
// capture (one thread: `freeze`, `with_scratch`) serves blocks from private mappings: each is
// a distinct, suitably aligned range (`bump`) of fresh, zero-filled pages, handed out once (a
// scratch block is handed out again only once freed, being the last). Pointers into a region
// never reach the system allocator; a frozen region is never unmapped, a scratch region only
// once no block of it is allocated.
unsafe impl GlobalAlloc for PluginAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        let p = capture(layout);
        if !p.is_null() {
            return p;
        }
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = capture(layout);
        if !p.is_null() {
            count();
            // A frozen block is on fresh pages; a scratch block may be one given back.
            // SAFETY: `p` is a block of `layout.size()` writable bytes.
            unsafe { p.write_bytes(0, layout.size()) };
            return p;
        }
        count();
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let in_scratch = in_scratch(ptr);
        if !in_scratch && !frozen(ptr) && !captured() {
            count();
            // SAFETY: the caller's contract is forwarded as is.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let a = ptr as usize;
        if in_scratch
            && FREEZE.load(Ordering::Relaxed) == FREEZE_NONE
            && captured()
            && SCRATCH_CURSOR.load(Ordering::Relaxed) == a + layout.size()
            && a.checked_add(new_size)
                .is_some_and(|end| end <= SCRATCH_END.load(Ordering::Relaxed))
        {
            // The last block of the scratch region grows (or shrinks) where it is.
            count();
            SCRATCH_CURSOR.store(a + new_size, Ordering::Relaxed);
            SCRATCH_LIVE.fetch_add(new_size, Ordering::Relaxed);
            SCRATCH_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return ptr;
        }
        // Into, out of or within a region: a new block, the bytes copied, the old one freed.
        // SAFETY: the caller guarantees `new_size` is non-zero and, rounded up to
        // `layout.align()`, does not overflow isize: a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid, non-zero-sized layout (above).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: `ptr` is valid for `layout.size()` bytes (the caller's contract), `new`
            // for `new_size`; distinct live blocks never overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            // SAFETY: `ptr` was allocated by this allocator with `layout` (the caller's
            // contract).
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_scratch(ptr) {
            scratch_free(ptr, layout.size());
            return;
        }
        if frozen(ptr) {
            return;
        }
        // SAFETY: not in a region, so the system allocator made it; the contract is forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Makes the calling thread the capturing one; false when another thread is.
fn claim_thread() -> bool {
    let me = this_thread();
    match CAPTURE_THREAD.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => true,
        Err(other) => other == me,
    }
}

/// Gives the capture up when neither `freeze` nor `with_scratch` still runs.
fn release_thread() {
    if !SCRATCH_ON.load(Ordering::Relaxed) && FREEZE.load(Ordering::Relaxed) == FREEZE_NONE {
        CAPTURE_THREAD.store(0, Ordering::Release);
    }
}

/// Sets [`FREEZE`] for its life (a panicking clone included).
struct Freezing;

impl Freezing {
    fn start(mode: usize) -> Freezing {
        FREEZE.store(mode, Ordering::Relaxed);
        Freezing
    }
}

impl Drop for Freezing {
    fn drop(&mut self) {
        FREEZE.store(FREEZE_NONE, Ordering::Relaxed);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A new private anonymous read-write mapping of `len` bytes (`MAP_NORESERVE` if `reserve`).
fn map(len: usize, reserve: bool) -> Option<usize> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a new anonymous mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            if reserve {
                flags | libc::MAP_NORESERVE
            } else {
                flags
            },
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// A copy of `value` in a read-only mapping of its own, for the rest of the process' life
/// (see the module's documentation). `None` when no mapping could be made (or every region
/// slot is taken, or another thread captures): the caller keeps `value` then. Meant for the
/// master before fork, where the process is single-threaded.
pub(crate) fn freeze<T: Clone + Sync>(value: &T) -> Option<&'static T> {
    let slot = REGION_COUNT.load(Ordering::Acquire);
    if slot >= REGIONS || FREEZE.load(Ordering::Relaxed) != FREEZE_NONE || !claim_thread() {
        return None;
    }
    let frozen = freeze_claimed(value, slot);
    release_thread();
    frozen
}

fn freeze_claimed<T: Clone + Sync>(value: &T, slot: usize) -> Option<&'static T> {
    MEASURED.store(0, Ordering::Relaxed);
    {
        let _freezing = Freezing::start(FREEZE_MEASURE);
        drop(value.clone());
    }
    let page = page_size();
    let need =
        MEASURED.load(Ordering::Relaxed) + std::mem::size_of::<T>() + std::mem::align_of::<T>();
    let len = need.checked_next_multiple_of(page)?;
    let start = map(len, false)?;
    CURSOR.store(start, Ordering::Relaxed);
    LIMIT.store(start + len, Ordering::Relaxed);
    // Registered before anything is placed in it, so that a free of a placed block never
    // reaches the system allocator.
    REGION_START[slot].store(start, Ordering::Relaxed);
    REGION_END[slot].store(start + len, Ordering::Relaxed);
    REGION_COUNT.store(slot + 1, Ordering::Release);
    let frozen: &'static T = {
        let _freezing = Freezing::start(FREEZE_PLACE);
        let copy = value.clone();
        let at = place(std::alloc::Layout::new::<T>()).cast::<T>();
        if at.is_null() {
            // Cannot happen (room for T was measured in); the copy is then simply kept where
            // it is, leaked, as the frozen value would be.
            Box::leak(Box::new(copy))
        } else {
            // SAFETY: `at` is a fresh, aligned, writable range of the region, size_of::<T>()
            // long, handed out once; the region is never unmapped, so a reference to it is
            // 'static and, the region being read-only from below on, never written again.
            unsafe { at.write(copy) };
            // SAFETY: just written, see above.
            unsafe { &*at }
        }
    };
    let used = (CURSOR.load(Ordering::Relaxed) - start).next_multiple_of(page);
    // Read-only from now on: a stray write faults instead of copying a shared page.
    // SAFETY: `start..start + used` is inside the mapping made above, page-aligned; nothing
    // in it is written after this point (the frozen value is only ever read).
    unsafe {
        libc::mprotect(start as *mut libc::c_void, used, libc::PROT_READ);
    }
    if used < len {
        // SAFETY: the tail past `used` is part of the mapping and holds nothing placed.
        unsafe {
            libc::munmap((start + used) as *mut libc::c_void, len - used);
        }
    }
    Some(frozen)
}

/// Clears `v` and gives the whole pages of its buffer back to the kernel (`MADV_DONTNEED`),
/// keeping the allocation: its next use faults zero-filled pages in again, without allocating.
/// For large buffers kept between rare uses (a scrape every 15 s or more).
pub(crate) fn release_pages<T>(v: &mut Vec<T>) {
    v.clear();
    let page = page_size();
    let base = v.as_mut_ptr() as usize;
    let Some(bytes) = v.capacity().checked_mul(std::mem::size_of::<T>()) else {
        return;
    };
    let start = base.next_multiple_of(page);
    let end = (base + bytes) / page * page;
    if end > start {
        // SAFETY: `start..end` is whole pages inside `v`'s buffer (the allocator's own data
        // lies outside it), all of it spare capacity now that `v` is empty: memory Rust treats
        // as uninitialised and nothing refers to (`v` is borrowed mutably). The pages of a
        // private anonymous mapping read back as zeros after MADV_DONTNEED.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// What [`with_scratch`] did with its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scratch {
    /// No region could be made (or another capture runs): `f` allocated as usual.
    Unused,
    /// `f` used this many bytes of address space, all freed: the region is gone.
    Unmapped(usize),
    /// Blocks of it outlived `f` (this many bytes): the region stays, correct but not freed.
    Kept(usize),
}

/// Runs `f` with the calling thread's allocations in a scratch mapping instead of the heap
/// (past its reserve, in the heap), then unmaps it if `f` freed all of them. Building the
/// exporter leaves megabytes of freed temporaries; in the heap, the allocations that come
/// after (uWSGI's, Python's) settle among them, the heap cannot shrink back, and every worker
/// forked later spreads its own allocations over those holes, each write copying a page it
/// shared with the master. Meant for the master before fork, where the process is
/// single-threaded.
pub(crate) fn with_scratch<R>(f: impl FnOnce() -> R) -> (R, Scratch) {
    if SCRATCH_ON.load(Ordering::Relaxed) || SCRATCH_END.load(Ordering::Relaxed) != 0 {
        return (f(), Scratch::Unused);
    }
    if !claim_thread() {
        return (f(), Scratch::Unused);
    }
    let Some(start) = map(SCRATCH_RESERVE, true) else {
        release_thread();
        return (f(), Scratch::Unused);
    };
    SCRATCH_CURSOR.store(start, Ordering::Relaxed);
    SCRATCH_LIVE.store(0, Ordering::Relaxed);
    SCRATCH_START.store(start, Ordering::Relaxed);
    SCRATCH_END.store(start + SCRATCH_RESERVE, Ordering::Relaxed);
    struct On;
    impl Drop for On {
        fn drop(&mut self) {
            SCRATCH_ON.store(false, Ordering::Relaxed);
            release_thread();
        }
    }
    let r = {
        let _on = On;
        SCRATCH_ON.store(true, Ordering::Relaxed);
        f()
    };
    let live = SCRATCH_LIVE.load(Ordering::Relaxed);
    if live != 0 {
        return (r, Scratch::Kept(live));
    }
    let used = SCRATCH_CURSOR.load(Ordering::Relaxed) - start;
    SCRATCH_START.store(0, Ordering::Relaxed);
    SCRATCH_END.store(0, Ordering::Relaxed);
    // SAFETY: the whole reservation made above; no block of it is allocated any more (every
    // one was freed), so nothing refers to it.
    unsafe {
        libc::munmap(start as *mut libc::c_void, SCRATCH_RESERVE);
    }
    (r, Scratch::Unmapped(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: captures are process-wide, one thread at a time.
    #[test]
    fn frozen_copies_and_scratch_building() {
        let value: Vec<String> = (0..1000).map(|i| format!("series {i}")).collect();
        let frozen = freeze(&value).expect("a mapping");
        assert_eq!(frozen, &value);
        assert!(super::frozen(frozen.as_ptr() as *mut u8));
        assert!(super::frozen(frozen[999].as_ptr() as *mut u8));
        assert!(!super::frozen(value.as_ptr() as *mut u8));
        // Freeing a copy of a frozen value's part is ordinary; the frozen one stays.
        drop(frozen.clone());
        assert_eq!(frozen[3], "series 3");

        // Built in scratch memory, kept frozen, the temporaries freed: the region goes.
        let (kept, scratch) = with_scratch(|| {
            let mut temp: Vec<String> = Vec::new();
            for i in 0..5000 {
                temp.push(format!("temporary {i}"));
            }
            assert!(in_scratch(temp.as_mut_ptr().cast()));
            let sum: Vec<String> = temp.iter().filter(|s| s.ends_with('7')).cloned().collect();
            freeze(&sum).expect("a mapping")
        });
        assert!(
            matches!(scratch, Scratch::Unmapped(n) if n > 5000 * 13),
            "{scratch:?}"
        );
        assert_eq!(kept.len(), 500);
        assert_eq!(kept[0], "temporary 7");
        assert!(super::frozen(kept[0].as_ptr() as *mut u8));

        // A block that outlives the closure keeps the region (and is freed like any other).
        let (survivor, scratch) = with_scratch(|| vec![7u8; 100]);
        assert_eq!(scratch, Scratch::Kept(100));
        assert!(in_scratch(survivor.as_ptr() as *mut u8));
        drop(survivor);
        assert_eq!(SCRATCH_LIVE.load(Ordering::Relaxed), 0);
        // The pages of a released buffer are gone; its capacity stays.
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        buf.resize(1 << 20, 1);
        let resident = |b: &Vec<u8>| {
            let page = page_size();
            let start = (b.as_ptr() as usize).next_multiple_of(page);
            let mut vec = vec![0u8; (1 << 20) / page];
            // SAFETY: a whole-page range inside `b`'s buffer, and one status byte per page.
            let rc = unsafe {
                libc::mincore(
                    start as *mut libc::c_void,
                    (1 << 20) - page,
                    vec.as_mut_ptr(),
                )
            };
            assert_eq!(rc, 0);
            vec.iter().filter(|&&v| v & 1 == 1).count()
        };
        assert!(resident(&buf) > 200);
        release_pages(&mut buf);
        assert_eq!((buf.len(), buf.capacity()), (0, 1 << 20));
        assert_eq!(resident(&buf), 0);
        buf.extend_from_slice(&[2; 4096]);
        assert_eq!(buf[4095], 2);

        // One scratch region per process: later calls run as usual.
        let (v, scratch) = with_scratch(|| vec![1u8; 10]);
        assert_eq!(scratch, Scratch::Unused);
        assert!(!in_scratch(v.as_ptr() as *mut u8));
    }
}
