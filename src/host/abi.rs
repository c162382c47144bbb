//! The ABI gate and uWSGI's API: is the running binary the one this plugin was built for, and
//! if so, its functions and server struct, resolved once. The check returns a `Result`; the
//! load-time constructor that acts on it is an entry point and lives with the plugin.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::cflags;
use crate::ffi;

/// Looks up a symbol of the process (the uWSGI executable exports all of its functions).
pub(crate) fn dlsym_default(name: &CStr) -> *mut c_void {
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name only searches the loaded objects; a
    // missing symbol gives NULL, which every caller checks.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
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

/// What the load-time check found.
pub(crate) enum LoadCheck {
    /// Not loaded by uWSGI (a test binary linking the rlib): nothing to do.
    NotInUwsgi,
    /// The binary matches; the API is resolved and every hook may run.
    Ok,
    Mismatch(AbiMismatch),
}

/// Compares the running binary with the build and resolves the API. Reads nothing of uWSGI's
/// memory before the comparison succeeded.
pub(crate) fn load_check() -> LoadCheck {
    if dlsym_default(c"uwsgi_get_cflags").is_null() {
        return LoadCheck::NotInUwsgi;
    }
    match check_abi().and_then(|()| resolve_api()) {
        Ok(api) => {
            let _ = API.set(api);
            ABI_OK.store(true, Ordering::Relaxed);
            LoadCheck::Ok
        }
        Err(m) => LoadCheck::Mismatch(m),
    }
}

/// Second opinion on the layout, from the C compiler: bindgen and the shim must agree.
pub(crate) fn shim_agrees_with_bindgen() -> bool {
    // SAFETY: a plain `const size_t` defined in src/shim.c.
    let c_size = unsafe { ffi::uwsgi_rs_sizeof_server };
    c_size == std::mem::size_of::<ffi::uwsgi_server>()
}

/// The `uwsgi` global. Only valid to dereference after the ABI check passed.
pub(crate) fn server() -> *mut ffi::uwsgi_server {
    api().server
}

type GetVar =
    unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u16, *mut u16) -> *mut c_char;
type LogvarGet =
    unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u8) -> *mut ffi::uwsgi_logvar;
type PrepareHeaders = unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u16) -> c_int;
type AddHeader =
    unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, u16, *mut c_char, u16) -> c_int;
type AddContentLength = unsafe extern "C" fn(*mut ffi::wsgi_request, u64) -> c_int;
type WriteBody = unsafe extern "C" fn(*mut ffi::wsgi_request, *mut c_char, usize) -> c_int;
type WriteHeaders = unsafe extern "C" fn(*mut ffi::wsgi_request) -> c_int;
type AddFdRead = unsafe extern "C" fn(c_int, c_int) -> c_int;
type WorkerIsBusy = unsafe extern "C" fn(c_int) -> c_int;
type StringNewList = unsafe extern "C" fn(
    *mut *mut ffi::uwsgi_string_list,
    *mut c_char,
) -> *mut ffi::uwsgi_string_list;

// Compile-time proof that the pointer types above match the binary's header (these constants
// are never emitted, so they add no link-time reference).
const _: GetVar = ffi::uwsgi_get_var;
const _: LogvarGet = ffi::uwsgi_logvar_get;
const _: PrepareHeaders = ffi::uwsgi_response_prepare_headers;
const _: AddHeader = ffi::uwsgi_response_add_header;
const _: AddContentLength = ffi::uwsgi_response_add_content_length;
const _: WriteBody = ffi::uwsgi_response_write_body_do;
const _: WriteHeaders = ffi::uwsgi_response_write_headers_do;
const _: AddFdRead = ffi::event_queue_add_fd_read;
const _: WorkerIsBusy = ffi::uwsgi_worker_is_busy;
const _: StringNewList = ffi::uwsgi_string_new_list;

/// uWSGI's functions and its server struct, resolved once at load time. The response
/// functions exist in every build but only the route action (routing builds) uses them.
pub(crate) struct Api {
    pub(crate) server: *mut ffi::uwsgi_server,
    pub(crate) get_var: GetVar,
    /// `uwsgi_logvar_get(req, key, keylen)`: a logvar the application set on the request.
    pub(crate) logvar_get: LogvarGet,
    #[cfg(uwsgi_routing)]
    pub(crate) prepare_headers: PrepareHeaders,
    #[cfg(uwsgi_routing)]
    pub(crate) add_header: AddHeader,
    #[cfg(uwsgi_routing)]
    pub(crate) add_content_length: AddContentLength,
    #[cfg(uwsgi_routing)]
    pub(crate) write_body: WriteBody,
    #[cfg(uwsgi_routing)]
    pub(crate) write_headers: WriteHeaders,
    pub(crate) add_fd_read: AddFdRead,
    /// `uwsgi_worker_is_busy(wid)`: the stats server's definition of a busy worker.
    pub(crate) worker_is_busy: WorkerIsBusy,
    /// `uwsgi_string_new_list(&list, value)`: appends to one of uWSGI's string lists.
    pub(crate) string_new_list: StringNewList,
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
        get_var: sym!(c"uwsgi_get_var", GetVar),
        logvar_get: sym!(c"uwsgi_logvar_get", LogvarGet),
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
        string_new_list: sym!(c"uwsgi_string_new_list", StringNewList),
    })
}
