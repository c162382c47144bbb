//! The thin host layer: everything that touches uWSGI's memory or calls into uWSGI, except the
//! plugin struct and hooks themselves (plugin.rs). Every `unsafe` block states its invariant.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::cflags;
use crate::ffi;
use crate::format::MetricType;

/// Looks up a symbol of the process (the uWSGI executable exports all of its functions).
pub(crate) fn dlsym_default(name: &CStr) -> *mut c_void {
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name only searches the loaded objects; a
    // missing symbol gives NULL, which every caller checks.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

type UwsgiLogFn = unsafe extern "C" fn(fmt: *const c_char, ...);

/// `uwsgi_log`, resolved at run time so that code reachable from the load-time constructor and
/// from unit tests has no link-time dependency on the host.
fn uwsgi_log_fn() -> Option<UwsgiLogFn> {
    static LOG: OnceLock<usize> = OnceLock::new();
    let addr = *LOG.get_or_init(|| dlsym_default(c"uwsgi_log") as usize);
    if addr == 0 {
        return None;
    }
    // SAFETY: `addr` is the address of uWSGI's exported `void uwsgi_log(const char *, ...)`.
    Some(unsafe { std::mem::transmute::<usize, UwsgiLogFn>(addr) })
}

/// Logs one line through uWSGI's logger, prefixed with the plugin name. Outside uWSGI (tests)
/// it goes to stderr.
pub(crate) fn log(msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    match uwsgi_log_fn() {
        // SAFETY: constant format; `%.*s` reads exactly `len` bytes from `msg`, which is live for
        // the call. No NUL terminator is needed with a precision.
        Some(f) => unsafe { f(c"[metrics_prometheus] %.*s\n".as_ptr(), len, msg.as_ptr()) },
        None => eprintln!("[metrics_prometheus] {msg}"),
    }
}

/// Set once the load-time ABI check passed; every hook does nothing without it.
static ABI_OK: AtomicBool = AtomicBool::new(false);

pub(crate) fn abi_ok() -> bool {
    ABI_OK.load(Ordering::Relaxed)
}

/// Why the running uWSGI is not the one this plugin was built for.
#[derive(Debug)]
pub(crate) enum AbiMismatch {
    Cflags { running: String },
    ServerSize { running: usize, built: usize },
    NoSymbol(&'static str),
}

impl std::fmt::Display for AbiMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let built = ffi::BUILD_UWSGI_VERSION;
        match self {
            AbiMismatch::Cflags { running } => {
                let words = cflags::split_shell_words(running);
                let flags = cflags::layout_flags(&words);
                let rv = cflags::uwsgi_version(&flags).unwrap_or_else(|| "unknown".into());
                write!(
                    f,
                    "built for uWSGI {built} but loaded into uWSGI {rv} with different build flags \
                     (struct layouts differ)"
                )
            }
            AbiMismatch::ServerSize { running, built: b } => write!(
                f,
                "built for uWSGI {built}, but this binary's `uwsgi` struct is {running} bytes, \
                 not {b}"
            ),
            AbiMismatch::NoSymbol(s) => write!(f, "this uWSGI binary does not export `{s}`"),
        }
    }
}

/// Compares the running binary with the one this plugin was built against, reading nothing of
/// uWSGI's memory but the cflags string and the ELF size of the `uwsgi` symbol.
fn check_abi() -> Result<(), AbiMismatch> {
    let get_cflags = dlsym_default(c"uwsgi_get_cflags");
    if get_cflags.is_null() {
        return Err(AbiMismatch::NoSymbol("uwsgi_get_cflags"));
    }
    // SAFETY: uwsgi_get_cflags is `char *uwsgi_get_cflags(void)` in every uWSGI 2.0.
    let get_cflags: unsafe extern "C" fn() -> *mut c_char =
        unsafe { std::mem::transmute(get_cflags) };
    // SAFETY: it returns a malloc'd, NUL-terminated copy of the embedded cflags (or NULL).
    let raw = unsafe { get_cflags() };
    if raw.is_null() {
        return Err(AbiMismatch::NoSymbol("uwsgi_get_cflags"));
    }
    // SAFETY: `raw` is non-NULL and NUL-terminated (see above); copied before it is freed.
    let running = unsafe { CStr::from_ptr(raw) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `raw` came from malloc in uwsgi_get_cflags and is not used after this.
    unsafe { libc::free(raw.cast()) };
    if running.trim_end_matches('\n') != ffi::BUILD_CFLAGS {
        return Err(AbiMismatch::Cflags { running });
    }

    let sym = dlsym_default(c"uwsgi");
    if sym.is_null() {
        return Err(AbiMismatch::NoSymbol("uwsgi"));
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let mut elf_sym: *const libc::Elf64_Sym = std::ptr::null();
    // SAFETY: dladdr1 only inspects the loader's tables for `sym`; both out-pointers point to
    // writable storage of the right type (RTLD_DL_SYMENT writes an `ElfW(Sym) *`).
    let found = unsafe {
        dladdr1(
            sym,
            info.as_mut_ptr(),
            (&raw mut elf_sym).cast(),
            RTLD_DL_SYMENT,
        )
    };
    if found == 0 || elf_sym.is_null() {
        return Err(AbiMismatch::NoSymbol("uwsgi"));
    }
    // SAFETY: dladdr1 succeeded, so `elf_sym` points into the executable's dynamic symbol table.
    let running = unsafe { (*elf_sym).st_size } as usize;
    let built = std::mem::size_of::<ffi::uwsgi_server>();
    if running != built {
        return Err(AbiMismatch::ServerSize { running, built });
    }
    Ok(())
}

const RTLD_DL_SYMENT: c_int = 1;
extern "C" {
    fn dladdr1(
        addr: *const c_void,
        info: *mut libc::Dl_info,
        extra: *mut *mut c_void,
        flags: c_int,
    ) -> c_int;
}

/// Runs at `dlopen` time, before uWSGI looks at the plugin struct. On a mismatch the plugin
/// clears its own `name`, so uWSGI refuses it through its normal path ("has no .name
/// attribute", dlclose): `--plugin` continues without it and `--need-plugin` exits with an
/// error. Outside uWSGI (unit tests link this too) it does nothing.
extern "C" fn load_time_abi_check() {
    crate::guard::guard("load", (), || {
        if dlsym_default(c"uwsgi_get_cflags").is_null() {
            return;
        }
        match check_abi().and_then(|()| resolve_api()) {
            Ok(api) => {
                let _ = API.set(api);
                ABI_OK.store(true, Ordering::Relaxed);
            }
            Err(m) => {
                log(&format!(
                    "refusing to load: {m}. Rebuild the plugin against this binary: run \
                     `uwsgi --build-plugin <metrics_prometheus source dir>` with this uwsgi, or \
                     `UWSGI_BIN=$(command -v uwsgi) cargo build --release`"
                ));
                crate::plugin::disable();
            }
        }
    })
}

#[used]
#[link_section = ".init_array"]
static LOAD_TIME_ABI_CHECK: extern "C" fn() = load_time_abi_check;

/// Second opinion on the layout, from the C compiler: bindgen and the shim must agree.
pub(crate) fn shim_agrees_with_bindgen() -> bool {
    // SAFETY: a plain `const size_t` defined in src/shim.c.
    let c_size = unsafe { ffi::uwsgi_rs_sizeof_server };
    c_size == std::mem::size_of::<ffi::uwsgi_server>()
}

/// The `uwsgi` global. Only valid to dereference after the ABI check passed.
fn server() -> *mut ffi::uwsgi_server {
    api().server
}

type GetVar =
    unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u16, *mut u16) -> *mut c_char;
type PrepareHeaders = unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u16) -> c_int;
type AddHeader =
    unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u16, *mut c_char, u16) -> c_int;
type AddContentLength = unsafe extern "C" fn(*mut ffi::wsgi_request, u64) -> c_int;
type WriteBody = unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, usize) -> c_int;
type WriteHeaders = unsafe extern "C" fn(*mut ffi::wsgi_request) -> c_int;
type AddFdRead = unsafe extern "C" fn(c_int, c_int) -> c_int;
type WorkerIsBusy = unsafe extern "C" fn(c_int) -> c_int;

// Compile-time proof that the pointer types above match the binary's header (these constants
// are never emitted, so they add no link-time reference).
const _: GetVar = ffi::uwsgi_get_var;
const _: PrepareHeaders = ffi::uwsgi_response_prepare_headers;
const _: AddHeader = ffi::uwsgi_response_add_header;
const _: AddContentLength = ffi::uwsgi_response_add_content_length;
const _: WriteBody = ffi::uwsgi_response_write_body_do;
const _: WriteHeaders = ffi::uwsgi_response_write_headers_do;
const _: AddFdRead = ffi::event_queue_add_fd_read;
const _: WorkerIsBusy = ffi::uwsgi_worker_is_busy;

/// uWSGI's functions and its server struct, resolved once at load time. The request and
/// response functions exist in every build but only the route action uses them.
pub(crate) struct Api {
    pub server: *mut ffi::uwsgi_server,
    #[cfg(uwsgi_routing)]
    pub get_var: GetVar,
    #[cfg(uwsgi_routing)]
    pub prepare_headers: PrepareHeaders,
    #[cfg(uwsgi_routing)]
    pub add_header: AddHeader,
    #[cfg(uwsgi_routing)]
    pub add_content_length: AddContentLength,
    #[cfg(uwsgi_routing)]
    pub write_body: WriteBody,
    #[cfg(uwsgi_routing)]
    pub write_headers: WriteHeaders,
    pub add_fd_read: AddFdRead,
    /// `uwsgi_worker_is_busy(wid)`: the stats server's definition of a busy worker.
    pub worker_is_busy: WorkerIsBusy,
}

// SAFETY: function pointers and the address of uWSGI's process-global struct; which thread may
// touch which field is each caller's own invariant.
unsafe impl Send for Api {}
// SAFETY: see Send.
unsafe impl Sync for Api {}

static API: OnceLock<Api> = OnceLock::new();

/// The resolved API. Hooks run only after the load-time check stored it.
pub(crate) fn api() -> &'static Api {
    API.get()
        .expect("uWSGI API resolved by the load-time check before any hook runs")
}

fn resolve_api() -> Result<Api, AbiMismatch> {
    macro_rules! sym {
        ($name:literal, $ty:ty) => {{
            let p = dlsym_default($name);
            if p.is_null() {
                return Err(AbiMismatch::NoSymbol(
                    // c"x" -> "x" for the message
                    match $name.to_str() {
                        Ok(s) => s,
                        Err(_) => "?",
                    },
                ));
            }
            // SAFETY: `p` is the binary's exported function of that name; its type is checked
            // against the header by the `const _` items above.
            unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
        }};
    }
    let server = dlsym_default(c"uwsgi");
    if server.is_null() {
        return Err(AbiMismatch::NoSymbol("uwsgi"));
    }
    Ok(Api {
        server: server.cast(),
        #[cfg(uwsgi_routing)]
        get_var: sym!(c"uwsgi_get_var", GetVar),
        #[cfg(uwsgi_routing)]
        prepare_headers: sym!(c"uwsgi_response_prepare_headers", PrepareHeaders),
        #[cfg(uwsgi_routing)]
        add_header: sym!(c"uwsgi_response_add_header", AddHeader),
        #[cfg(uwsgi_routing)]
        add_content_length: sym!(c"uwsgi_response_add_content_length", AddContentLength),
        #[cfg(uwsgi_routing)]
        write_body: sym!(c"uwsgi_response_write_body_do", WriteBody),
        #[cfg(uwsgi_routing)]
        write_headers: sym!(c"uwsgi_response_write_headers_do", WriteHeaders),
        add_fd_read: sym!(c"event_queue_add_fd_read", AddFdRead),
        worker_is_busy: sym!(c"uwsgi_worker_is_busy", WorkerIsBusy),
    })
}

/// Turns on uWSGI's metrics subsystem and the master (its collector thread runs there), as
/// `--enable-metrics` does. Called from `on_load`, during option parsing.
pub(crate) fn enable_metrics_and_master() {
    let s = server();
    // SAFETY: the ABI check passed, so `s` has this build's layout; option parsing is
    // single-threaded, and uWSGI's own option flags write these fields at the same stage.
    unsafe { (*s).has_metrics = 1 };
    // SAFETY: as above.
    unsafe { (*s).master_process = 1 };
}

/// True when uWSGI was started with the metrics subsystem on.
pub(crate) fn has_metrics() -> bool {
    // SAFETY: ABI checked; an int read by the process that owns it.
    unsafe { (*server()).has_metrics != 0 }
}

/// True when uWSGI runs a master (the metrics collector thread lives there).
pub(crate) fn has_master() -> bool {
    // SAFETY: ABI checked; an int set during option parsing, read-only afterwards.
    unsafe { (*server()).master_process != 0 }
}

/// `uwsgi.master_queue`: the master's event queue, -1 until master_loop creates it.
pub(crate) fn master_queue() -> c_int {
    // SAFETY: ABI checked; read in the master thread, which is the only writer.
    unsafe { (*server()).master_queue }
}

/// Adds `fd` for read events to uWSGI's event queue `queue`.
pub(crate) fn add_fd_read(queue: c_int, fd: c_int) -> bool {
    // SAFETY: both are open descriptors of this process; uWSGI only calls epoll_ctl.
    unsafe { (api().add_fd_read)(queue, fd) >= 0 }
}

/// One metric of uWSGI's list, as needed per scrape: a pointer into the shared value mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot(*const i64);
// SAFETY: the pointer targets uWSGI's MAP_SHARED metrics mapping, created before fork and never
// unmapped; it is only ever read (volatile, aligned int64), so sharing it across threads is fine.
unsafe impl Send for Slot {}
// SAFETY: see Send.
unsafe impl Sync for Slot {}

/// uWSGI's metrics list, copied once: it never changes after `uwsgi_setup_metrics`.
pub(crate) struct MetricsList {
    pub names: Vec<(String, MetricType)>,
    pub slots: Vec<Slot>,
}

/// Reads the metric list. `None` when the metrics subsystem is off or not yet set up.
pub(crate) fn read_metrics_list() -> Option<MetricsList> {
    let s = server();
    // SAFETY: ABI checked; a pointer field written once by the master in uwsgi_setup_metrics.
    let mut m = unsafe { (*s).metrics };
    if m.is_null() {
        return None;
    }
    let mut list = MetricsList {
        names: Vec::new(),
        slots: Vec::new(),
    };
    // Bounded walk: the list is acyclic by construction, but a corrupt one must not hang us.
    let limit = 1usize << 22;
    while !m.is_null() && list.slots.len() < limit {
        // SAFETY: `m` is a node of uWSGI's metrics list (heap, immutable after setup).
        let node = unsafe { &*m };
        m = node.next;
        if node.name.is_null() || node.value.is_null() {
            continue;
        }
        // SAFETY: uWSGI stores names as NUL-terminated strings (uwsgi_str).
        let name = unsafe { CStr::from_ptr(node.name) }
            .to_string_lossy()
            .into_owned();
        let ty = MetricType::from_uwsgi(node.type_).unwrap_or(MetricType::Gauge);
        list.names.push((name, ty));
        list.slots.push(Slot(node.value));
    }
    Some(list)
}

/// Unlocks uWSGI's metrics rwlock on drop, so no path (panic included) leaves it held: it is
/// shared by every process of the instance.
struct MetricsReadLock;

impl MetricsReadLock {
    fn acquire() -> MetricsReadLock {
        // SAFETY: metrics_lock is initialised in uwsgi_setup_metrics before any metric exists;
        // callers only get here with a non-empty metrics list. Released by Drop.
        unsafe { ffi::metrics_rlock(server()) };
        MetricsReadLock
    }
}

impl Drop for MetricsReadLock {
    fn drop(&mut self) {
        // SAFETY: paired with the rlock taken in `acquire`.
        unsafe { ffi::metrics_rwunlock(server()) };
    }
}

/// Reads one metric slot without the lock (uWSGI: "simple reading from a metric does not
/// require locking"; the values are aligned int64s written whole).
pub(crate) fn read_slot(s: Slot) -> i64 {
    // SAFETY: `s.0` points at an aligned int64 in the shared metrics mapping (see Slot).
    unsafe { std::ptr::read_volatile(s.0) }
}

/// Sets `out` to one value per source: metric slots are copied under uWSGI's metrics read lock,
/// which is held only for that copy; the other positions are left for `Live::fill`.
pub(crate) fn snapshot(sources: &[crate::live::Source], out: &mut Vec<i64>) {
    out.clear();
    out.resize(sources.len(), 0);
    let _lock = MetricsReadLock::acquire();
    for (v, src) in out.iter_mut().zip(sources) {
        if let crate::live::Source::Metric(s) = src {
            *v = read_slot(*s);
        }
    }
}
