//! The one walk over uWSGI's structures that follows its pointers: the worker table, each
//! worker's cores and apps, `uwsgi.shared`, the mules, and the lists of caches, spoolers and
//! sockets. Done once, in the master before fork, when every one of them is set up and none
//! changes any more; it returns plain names and [`SharedSlice`]s, so that everything after it
//! (the live reader, the planner) is safe code.

use std::ffi::c_char;

use metrics_prometheus_engine::plan::SocketDesc;

use super::abi::server;
use super::uwsgi_shared::{field, SharedSlice};
use crate::ffi;

/// Lists longer than this are cut: they are acyclic by construction, but a corrupt one must not
/// hang the master.
const MAX_LIST: usize = 4096;

/// What the exporter needs of the instance, read once.
pub(crate) struct Instance {
    pub(crate) numproc: usize,
    pub(crate) cores_per_worker: usize,
    pub(crate) listen_backlog: i64,
    /// When the master started, µs since the epoch.
    pub(crate) start_us: i64,
    /// `--stats`, if given.
    pub(crate) stats: Option<String>,
    /// Worker ids 0..=numproc (0: the master's aggregate slot).
    pub(crate) workers: SharedSlice<ffi::uwsgi_worker>,
    /// Per worker id: its cores.
    pub(crate) cores: Vec<SharedSlice<ffi::uwsgi_core>>,
    /// Per worker id: its apps (`max_apps` entries; `apps_cnt` of them in use).
    pub(crate) apps: Vec<SharedSlice<ffi::uwsgi_app>>,
    pub(crate) shared: SharedSlice<ffi::uwsgi_shared>,
    pub(crate) mules: SharedSlice<ffi::uwsgi_mule>,
    /// Name ("default" when unnamed) and the cache itself.
    pub(crate) caches: Vec<(String, SharedSlice<ffi::uwsgi_cache>)>,
    /// Directory and the spooler itself.
    pub(crate) spoolers: Vec<(String, SharedSlice<ffi::uwsgi_spooler>)>,
    /// Each socket and its fd.
    pub(crate) sockets: Vec<(SocketDesc, i32)>,
}

fn cstr(p: *const c_char) -> String {
    // SAFETY: callers pass only pointers uWSGI keeps as NUL-terminated strings for the life of
    // the process (socket, protocol and cache names, the --stats address), or NULL.
    unsafe { super::c_string(p) }
}

/// A fixed-size C string field (NUL-terminated within it, or filling it), lossily.
pub(crate) fn fixed_cstr(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The worker table alone (`numproc + 1` rows, row 0 the master's), for the exit tracker.
/// Master, after `uwsgi_setup_workers`.
pub(crate) fn workers() -> SharedSlice<ffi::uwsgi_worker> {
    // SAFETY: ABI checked; `workers` and `numproc` are set before the plugin's postinit_apps
    // and never change.
    let srv = unsafe { &*server() };
    let numproc = usize::try_from(srv.numproc).unwrap_or(0);
    // SAFETY: init.c allocates numproc + 1 workers in shared memory before fork.
    unsafe { SharedSlice::new(srv.workers.cast_const(), numproc + 1) }
}

/// Reads the instance. Master, pre-fork, after `uwsgi_setup_workers` and the socket binding.
pub(crate) fn read() -> Instance {
    // SAFETY: the ABI check passed, so the struct has this build's layout; the master is
    // single-threaded here and these fields were set before postinit_apps, never to change.
    let srv = unsafe { &*server() };
    let numproc = usize::try_from(srv.numproc).unwrap_or(0);
    let ncores = usize::try_from(srv.cores).unwrap_or(0);
    let max_apps = usize::try_from(srv.max_apps).unwrap_or(0);
    let mules_cnt = usize::try_from(srv.mules_cnt).unwrap_or(0);
    // SAFETY: init.c allocates numproc + 1 workers in shared memory before fork.
    let workers = unsafe { SharedSlice::new(srv.workers.cast_const(), numproc + 1) };
    let mut inst = Instance {
        numproc,
        cores_per_worker: ncores,
        listen_backlog: i64::from(srv.listen_queue.max(0)),
        start_us: srv.start_tv.tv_sec * 1_000_000 + srv.start_tv.tv_usec,
        stats: (!srv.stats.is_null()).then(|| cstr(srv.stats)),
        cores: Vec::with_capacity(numproc + 1),
        apps: Vec::with_capacity(numproc + 1),
        workers,
        // SAFETY: `uwsgi.shared` is one struct in shared memory, allocated before fork.
        shared: unsafe { SharedSlice::new(srv.shared.cast_const(), 1) },
        // SAFETY: `uwsgi.mules` has mules_cnt entries in shared memory (NULL without mules).
        mules: unsafe { SharedSlice::new(srv.mules.cast_const(), mules_cnt) },
        caches: Vec::new(),
        spoolers: Vec::new(),
        sockets: Vec::new(),
    };
    for w in 0..=numproc {
        let c = inst.workers.read(w, field!(ffi::uwsgi_worker, cores));
        let a = inst.workers.read(w, field!(ffi::uwsgi_worker, apps));
        // SAFETY: each worker's cores array has `uwsgi.cores` entries and its apps array
        // `max_apps` entries, in shared memory allocated before fork (init.c); NULL gives an
        // empty slice.
        inst.cores.push(unsafe {
            SharedSlice::new(c.unwrap_or(std::ptr::null_mut()).cast_const(), ncores)
        });
        // SAFETY: as above.
        inst.apps.push(unsafe {
            SharedSlice::new(a.unwrap_or(std::ptr::null_mut()).cast_const(), max_apps)
        });
    }
    // Caches and spoolers live in shared memory (uwsgi_calloc_shared / malloc_shared); their
    // lists are built before fork and never change.
    let mut uc = srv.caches;
    while !uc.is_null() && inst.caches.len() < MAX_LIST {
        // SAFETY: a node of uwsgi.caches, immutable after setup.
        let cache = unsafe { &*uc };
        let name = if cache.name.is_null() {
            "default".to_string()
        } else {
            cstr(cache.name)
        };
        // SAFETY: the node itself, in shared memory for the life of the process.
        inst.caches
            .push((name, unsafe { SharedSlice::new(uc.cast_const(), 1) }));
        uc = cache.next;
    }
    let mut sp = srv.spoolers;
    while !sp.is_null() && inst.spoolers.len() < MAX_LIST {
        // SAFETY: a node of uwsgi.spoolers, immutable after setup.
        let spooler = unsafe { &*sp };
        // SAFETY: the node itself, in shared memory for the life of the process.
        let slice = unsafe { SharedSlice::new(sp.cast_const(), 1) };
        inst.spoolers.push((fixed_cstr(&spooler.dir), slice));
        sp = spooler.next;
    }
    let mut sock = srv.sockets;
    while !sock.is_null() && inst.sockets.len() < MAX_LIST {
        // SAFETY: a node of uwsgi.sockets, set up before postinit_apps and immutable after.
        let us = unsafe { &*sock };
        let desc = SocketDesc {
            name: cstr(us.name),
            proto: if us.proto_name.is_null() {
                "uwsgi".to_string()
            } else {
                cstr(us.proto_name)
            },
            shared: us.shared != 0,
            can_offload: us.can_offload != 0,
        };
        inst.sockets.push((desc, us.fd));
        sock = us.next;
    }
    inst
}
