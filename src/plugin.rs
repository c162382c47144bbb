//! The exported `metrics_prometheus_plugin` struct, its option table and its hooks. Each hook
//! only converts arguments and runs its body through `guard`.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::config::{Config, Opt};
use crate::ffi;
use crate::guard::guard;
use crate::host;
use crate::server::Server;

/// The plugin's version, logged at startup.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

const fn option(
    opt: Opt,
    name: &'static CStr,
    help: &'static CStr,
    flags: u32,
) -> ffi::uwsgi_option {
    ffi::uwsgi_option {
        name: name.as_ptr() as *mut c_char,
        type_: if opt.takes_value() { 1 } else { 0 }, // getopt required_argument / no_argument
        shortcut: 0,
        help: help.as_ptr() as *mut c_char,
        func: Some(set_option),
        data: opt as usize as *mut c_void,
        flags: flags as u64,
    }
}

/// uWSGI copies these structs in `build_options` but keeps the string pointers: static storage.
static mut OPTIONS: [ffi::uwsgi_option; 12] = [
    option(
        Opt::Server,
        c"prometheus-server",
        c"serve Prometheus metrics from the master on ADDR (host:port, :port, [v6]:port or a UNIX socket path); implies --master and --enable-metrics",
        ffi::UWSGI_OPT_MASTER | ffi::UWSGI_OPT_METRICS,
    ),
    option(
        Opt::ServerMode,
        c"prometheus-server-mode",
        c"permission bits (octal, e.g. 660) of --prometheus-server UNIX sockets",
        0,
    ),
    option(
        Opt::ServerOwner,
        c"prometheus-server-owner",
        c"owner (USER or USER:GROUP) of --prometheus-server UNIX sockets",
        0,
    ),
    option(
        Opt::Path,
        c"prometheus-path",
        c"path of the metrics on --prometheus-server (default /metrics)",
        0,
    ),
    option(
        Opt::Allow,
        c"prometheus-allow",
        c"comma-separated networks (10.0.0.0/8, ::1) allowed to connect to --prometheus-server over TCP; others get 403",
        0,
    ),
    option(
        Opt::BasicAuth,
        c"prometheus-basic-auth",
        c"require HTTP basic auth on --prometheus-server: USER:sha256:HEX (HEX = sha256 of the password)",
        0,
    ),
    option(
        Opt::Prefix,
        c"prometheus-prefix",
        c"prefix of every exported metric family (default uwsgi_)",
        0,
    ),
    option(
        Opt::NoWorkers,
        c"prometheus-no-workers",
        c"do not export per-worker (uwsgi_worker_*) families",
        0,
    ),
    option(
        Opt::NoCores,
        c"prometheus-no-cores",
        c"do not export per-core (thread or async core) series",
        0,
    ),
    option(
        Opt::NoHelp,
        c"prometheus-no-help",
        c"omit # HELP lines",
        0,
    ),
    option(
        Opt::NoType,
        c"prometheus-no-type",
        c"omit # TYPE lines",
        0,
    ),
    // UWSGI_END_OF_OPTIONS
    ffi::uwsgi_option {
        name: std::ptr::null_mut(),
        type_: 0,
        shortcut: 0,
        help: std::ptr::null_mut(),
        func: None,
        data: std::ptr::null_mut(),
        flags: 0,
    },
];

/// The symbol uWSGI looks up (`<basename without .so>`). uWSGI writes into it (`modifier1`),
/// so it must be writable: `static mut`, only ever touched through raw pointers.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut metrics_prometheus_plugin: ffi::uwsgi_plugin = ffi::uwsgi_plugin {
    name: c"metrics_prometheus".as_ptr(),
    on_load: Some(on_load),
    post_init: Some(post_init),
    postinit_apps: Some(postinit_apps),
    master_cycle: Some(master_cycle),
    master_cleanup: Some(master_cleanup),
    options: &raw mut OPTIONS as *mut ffi::uwsgi_option,
    // SAFETY: every other field is a raw pointer, an integer or an Option<fn>; all-zero (NULL,
    // None) is valid for each, and uWSGI treats NULL hooks as absent. `request` stays NULL, which
    // makes this a generic plugin.
    ..unsafe { std::mem::zeroed() }
};

/// Makes uWSGI refuse the plugin: it drops any plugin whose `name` is NULL right after dlsym.
pub(crate) fn disable() {
    let plugin = &raw mut metrics_prometheus_plugin;
    // SAFETY: called from the load-time constructor, before uWSGI reads the struct and while the
    // process is single-threaded (option parsing); a plain pointer store.
    unsafe { (*plugin).name = std::ptr::null() };
}

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

/// The configuration after option parsing.
pub(crate) fn config() -> Config {
    CONFIG.lock().clone().unwrap_or_default()
}

/// Stops uWSGI at startup with a message that names the option.
fn fatal(msg: &str) -> ! {
    host::log(msg);
    // SAFETY: plain process exit during startup, as uWSGI itself does for bad options.
    unsafe { libc::exit(1) }
}

unsafe extern "C" fn set_option(_name: *mut c_char, value: *mut c_char, data: *mut c_void) {
    guard("option", (), || {
        let Some(&opt) = Opt::ALL.get(data as usize) else {
            return;
        };
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: uWSGI passes option values as NUL-terminated strings that outlive the call.
            Some(
                unsafe { CStr::from_ptr(value) }
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let mut cfg = CONFIG.lock();
        let cfg = cfg.get_or_insert_with(Config::default);
        if let Err(e) = cfg.apply(opt, value.as_deref()) {
            fatal(&e);
        }
    })
}

extern "C" fn on_load() {
    guard("on_load", (), || {
        if !host::abi_ok() {
            return;
        }
        crate::guard::install_panic_hook();
        if !host::shim_agrees_with_bindgen() {
            fatal("the C shim and bindgen disagree on sizeof(struct uwsgi_server); rebuild the plugin");
        }
        host::enable_metrics_and_master();
        // Routers must exist before uwsgi_configure parses `route` options; on_load is the
        // last hook before that.
        #[cfg(uwsgi_routing)]
        crate::router::register();
    })
}

/// Runs in the master after uWSGI has bound (or, on reload, re-adopted) its own sockets: earlier,
/// a reloading uWSGI closes every socket it does not recognise, ours included. Workers are not
/// forked yet, so the listeners are inherited only to be closed by the fork handler.
extern "C" fn post_init() {
    guard("post_init", (), || {
        if !host::abi_ok() {
            return;
        }
        let cfg = config();
        let mut bound = Vec::new();
        if !cfg.servers.is_empty() {
            if host::has_master() {
                match Server::bind(&cfg) {
                    Ok(server) => {
                        bound = server.describe();
                        *SERVER.lock() = Some(server);
                    }
                    Err(e) => fatal(&e),
                }
            } else {
                host::log(
                    "--prometheus-server needs the uWSGI master (master = false was given): \
                     not serving metrics, the application runs as usual",
                );
            }
        }
        if !host::has_master() {
            host::log(
                "uWSGI runs without a master (master = false): metrics are never collected and \
                 scrapes answer 503",
            );
        }
        host::log(&format!(
            "metrics_prometheus {VERSION} loaded into uWSGI {}; front ends: {}",
            ffi::BUILD_UWSGI_VERSION,
            front_ends_summary(&bound)
        ));
    })
}

fn front_ends_summary(bound: &[String]) -> String {
    #[cfg(uwsgi_routing)]
    let route = format!(
        "route action prometheus-metrics available ({} routes use it)",
        crate::router::configured_routes()
    );
    #[cfg(not(uwsgi_routing))]
    let route = "route action unavailable (uWSGI built without routing)";
    let server = if bound.is_empty() {
        "prometheus-server off".to_string()
    } else {
        format!("prometheus-server on {}", bound.join(", "))
    };
    format!("{route}, {server}")
}

/// What a scrape needs, built once in the master before fork and inherited by the workers.
pub(crate) struct Exporter {
    pub layout: crate::format::Layout,
    /// Where each value of the layout comes from (metrics list first, then extras).
    pub sources: Vec<crate::live::Source>,
    pub live: crate::live::Live,
}

pub(crate) static EXPORTER: OnceLock<Exporter> = OnceLock::new();

extern "C" fn postinit_apps() {
    guard("postinit_apps", (), || {
        if !host::abi_ok() || !host::has_metrics() {
            return;
        }
        let Some(list) = host::read_metrics_list() else {
            return;
        };
        let cfg = config();
        let (live, plan) = crate::live::Live::build(&list);
        let names: Vec<(&str, crate::format::MetricType)> =
            plan.names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let layout = crate::format::Layout::with_extras(&names, &plan.extras, &cfg.format);
        // Skips by design (aliases, worker 0, ...) are documented; collisions between the
        // user's own metric names are worth one line each.
        for s in layout.skipped() {
            use crate::format::SkipReason as R;
            if matches!(
                s.reason,
                R::EmptyName
                    | R::TypeConflict { .. }
                    | R::NameClash { .. }
                    | R::DuplicateSeries { .. }
            ) {
                host::log(&format!("not exported: {s}"));
            }
        }
        let _ = EXPORTER.set(Exporter {
            layout,
            sources: plan.sources,
            live,
        });
    })
}

/// The dedicated server; only the master ever has one.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

extern "C" fn master_cycle() {
    guard("master_cycle", (), || {
        let mut guard = SERVER.lock();
        let Some(server) = guard.as_mut() else {
            return;
        };
        if !server.is_registered() {
            // master_queue is -1 until master_loop creates it, just before the first cycle.
            let mq = host::master_queue();
            if mq < 0 {
                return;
            }
            if host::add_fd_read(mq, server.epoll_fd()) {
                server.mark_registered();
            } else {
                host::log(
                    "cannot add the server to the master's event queue; polling once per cycle",
                );
                server.mark_registered();
            }
        }
        server.cycle();
    })
}

extern "C" fn master_cleanup() {
    guard("master_cleanup", (), || {
        if let Some(mut server) = SERVER.lock().take() {
            server.shutdown();
        }
    })
}
