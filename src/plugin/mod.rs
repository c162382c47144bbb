//! The plugin as uWSGI sees it: the exported `metrics_prometheus_plugin` struct, its option
//! table (generated from the engine's option declarations), and every entry point, the ABI
//! constructor included, each declared with [`entry!`] so it runs behind the panic guard. The
//! entries only convert arguments and call the layers below.

pub(crate) mod guard;

use std::ffi::{c_char, c_void};

use metrics_prometheus_engine::config::{parse_server_addr, Config, Implies, OPTIONS};
use parking_lot::Mutex;

use crate::ffi;
use crate::host;
use crate::host::abi::LoadCheck;
use crate::scrape::{self, Exposition};
use crate::server::Server;
use guard::entry;

entry! {
    /// Runs at `dlopen` time, before uWSGI looks at the plugin struct. On a mismatch the plugin
    /// clears its own `name`, so uWSGI refuses it through its normal path ("has no .name
    /// attribute", dlclose): `--plugin` continues without it and `--need-plugin` exits with an
    /// error. Outside uWSGI (unit tests link this too) it does nothing.
    fn load_time_abi_check() {
        if let LoadCheck::Mismatch(m) = host::abi::load_check() {
            host::log(&format!(
                "refusing to load: {m}. Rebuild the plugin against this binary: run \
                 `uwsgi --build-plugin <metrics_prometheus source dir>` with this uwsgi, or \
                 `UWSGI_BIN=$(command -v uwsgi) cargo build --release`"
            ));
            let plugin = &raw mut metrics_prometheus_plugin;
            // SAFETY: this constructor runs before uWSGI reads the struct, while the process is
            // single-threaded; a plain pointer store. uWSGI drops any plugin whose `name` is
            // NULL right after dlsym.
            unsafe { (*plugin).name = std::ptr::null() };
        }
    }
}

#[used]
#[link_section = ".init_array"]
static LOAD_TIME_ABI_CHECK: unsafe extern "C" fn() = load_time_abi_check;

const N_OPTIONS: usize = OPTIONS.len();

/// UWSGI_END_OF_OPTIONS
const END_OF_OPTIONS: ffi::uwsgi_option = ffi::uwsgi_option {
    name: std::ptr::null_mut(),
    type_: 0,
    shortcut: 0,
    help: std::ptr::null_mut(),
    func: None,
    data: std::ptr::null_mut(),
    flags: 0,
};

/// uWSGI's option table, one row per declaration in the engine's `OPTIONS`; `data` carries the
/// row's index back to [`set_option`].
const fn c_options() -> [ffi::uwsgi_option; N_OPTIONS + 1] {
    let mut table = [END_OF_OPTIONS; N_OPTIONS + 1];
    let mut i = 0;
    while i < N_OPTIONS {
        let d = &OPTIONS[i];
        table[i] = ffi::uwsgi_option {
            name: d.name.as_ptr() as *mut c_char,
            type_: if d.takes_value { 1 } else { 0 }, // getopt required_argument / no_argument
            shortcut: 0,
            help: d.help.as_ptr() as *mut c_char,
            func: Some(set_option),
            data: i as *mut c_void,
            flags: match d.implies {
                Implies::Nothing => 0,
                Implies::MasterAndMetrics => {
                    (ffi::UWSGI_OPT_MASTER | ffi::UWSGI_OPT_METRICS) as u64
                }
            },
        };
        i += 1;
    }
    table
}

/// uWSGI copies these structs in `build_options` but keeps the string pointers: static storage.
static mut C_OPTIONS: [ffi::uwsgi_option; N_OPTIONS + 1] = c_options();

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
    post_fork: Some(post_fork),
    master_cleanup: Some(master_cleanup),
    options: &raw mut C_OPTIONS as *mut ffi::uwsgi_option,
    // SAFETY: every other field is a raw pointer, an integer or an Option<fn>; all-zero (NULL,
    // None) is valid for each, and uWSGI treats NULL hooks as absent. `request` stays NULL, which
    // makes this a generic plugin.
    ..unsafe { std::mem::zeroed() }
};

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

/// The configuration after option parsing.
fn config() -> Config {
    CONFIG.lock().clone().unwrap_or_default()
}

/// Stops uWSGI at startup with a message that names the option.
fn fatal(msg: &str) -> ! {
    host::log(msg);
    host::uwsgi::exit_at_startup()
}

/// Stops startup on contradictory options; logs (when `log`) each one left without effect.
fn check_config(cfg: &Config, emperor: bool, log: bool) {
    match cfg.check(emperor) {
        Err(conflict) => fatal(&conflict.to_string()),
        Ok(ignored) if log => ignored.iter().for_each(|i| host::log(&i.to_string())),
        Ok(_) => {}
    }
}

entry! {
    fn set_option(_name: *mut c_char, value: *mut c_char, data: *mut c_void) {
        let Some(decl) = OPTIONS.get(data as usize) else {
            return;
        };
        // SAFETY: uWSGI passes option values as NUL-terminated strings that outlive the call.
        let value = (!value.is_null()).then(|| unsafe { host::c_string(value) });
        let mut cfg = CONFIG.lock();
        let cfg = cfg.get_or_insert_with(Config::default);
        if let Err(e) = cfg.apply(decl.opt, value.as_deref()) {
            fatal(&e.to_string());
        }
    }
}

entry! {
    fn on_load() {
        if !host::abi::abi_ok() {
            return;
        }
        guard::install_panic_hook();
        if !host::abi::shim_agrees_with_bindgen() {
            fatal("the C shim and bindgen disagree on sizeof(struct uwsgi_server); rebuild the plugin");
        }
        host::uwsgi::enable_metrics_and_master();
        // Routers must exist before uwsgi_configure parses `route` options; on_load is the
        // last hook before that.
        #[cfg(uwsgi_routing)]
        if !host::request::register_router(c"prometheus-metrics", route_setup) {
            host::log("this uWSGI has no uwsgi_register_router; route action unavailable");
        }
        // `emperor = prometheus://ADDR`: the Emperor builds its scanners from the monitors
        // registered by then (all of uWSGI's emperor_* plugins register in on_load).
        if !host::emperor::register_monitor(c"prometheus", emperor_init, emperor_func) {
            host::log(
                "this uWSGI has no uwsgi_register_imperial_monitor; emperor = prometheus:// \
                 unavailable",
            );
        }
    }
}

entry! {
    /// Runs in the master after uWSGI has bound (or, on reload, re-adopted) its own sockets:
    /// earlier, a reloading uWSGI closes every socket it does not recognise, ours included.
    /// Workers are not forked yet, so the listeners are inherited only to be closed by the fork
    /// handler.
    fn post_init() {
        if !host::abi::abi_ok() {
            return;
        }
        let cfg = config();
        // In an Emperor serving prometheus://, its monitor's init logs what is ignored.
        let emperor = host::emperor::prometheus_monitor_configured();
        check_config(&cfg, emperor, !emperor);
        let has_master = host::uwsgi::has_master();
        let mut bound = Vec::new();
        if !cfg.servers.is_empty() {
            if has_master {
                match Server::bind(&cfg, atfork_child) {
                    Ok(server) => {
                        bound = server.describe();
                        *SERVER.lock() = Some(server);
                    }
                    Err(e) => fatal(&e.to_string()),
                }
            } else {
                host::log(
                    "--prometheus-server needs the uWSGI master (master = false was given): \
                     not serving metrics, the application runs as usual",
                );
            }
        }
        if !has_master {
            host::log(
                "uWSGI runs without a master (master = false): metrics are never collected and \
                 scrapes answer 503",
            );
        } else if cfg.histograms {
            // Mapped before fork so that every worker, respawned ones included, shares it.
            let workers = host::uwsgi::numproc();
            let routes = if cfg.routes_on() {
                match crate::routes::setup(&cfg.routes, cfg.route_max, workers) {
                    Ok(()) => cfg.route_max + 1,
                    Err(e) => fatal(&format!("cannot set up the route label: {e}")),
                }
            } else {
                1
            };
            match crate::latency::setup(
                &cfg.buckets_us,
                cfg.native_schema,
                workers,
                cfg.exemplars,
                cfg.queue_time,
                routes,
            ) {
                Ok(bytes) => {
                    host::request::add_after_request_hook(c"metrics_prometheus_after_request");
                    let route_note = if routes > 1 {
                        format!(
                            ", route label on (logvar route, {} rules, at most {} routes; \
                             pages are used as routes are recorded)",
                            cfg.routes.len(),
                            cfg.route_max
                        )
                    } else {
                        String::new()
                    };
                    host::log(&format!(
                        "request histograms on: {} classic buckets, native schema {}, {} bytes \
                         of shared memory per worker{}{}{route_note}",
                        cfg.buckets_us.len() + 1,
                        cfg.native_schema,
                        bytes / (workers + 1),
                        if cfg.exemplars { ", exemplars on" } else { "" },
                        if cfg.queue_time {
                            ", queue time on (X-Request-Start, X-Queue-Start)"
                        } else {
                            ""
                        }
                    ));
                }
                Err(e) => fatal(&format!("cannot map the request histograms: {e}")),
            }
        }
        if has_master && cfg.app_metrics {
            // Before any application code runs (shared-pyimport, the app itself).
            let workers = host::uwsgi::numproc();
            match crate::app_metrics::setup(cfg.app_series, workers) {
                Ok(bytes) => host::log(&format!(
                    "application metrics on: {} samples, {} bytes of shared memory reserved \
                     (pages are used as samples are written)",
                    cfg.app_series, bytes
                )),
                Err(e) => fatal(&format!("cannot map the application metrics' table: {e}")),
            }
        }
        host::log(&format!(
            "metrics_prometheus {} (commit {}) loaded into uWSGI {}; front ends: {}",
            host::PLUGIN_VERSION,
            host::PLUGIN_COMMIT,
            ffi::BUILD_UWSGI_VERSION,
            front_ends_summary(&bound)
        ));
    }
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

entry! {
    fn postinit_apps() {
        if host::abi::abi_ok() {
            // Scrapes keep /proc files open (host::procfs): from here on every fork closes
            // them in the child.
            host::fork::install_atfork(atfork_child);
            // Before fork, like the exposition: the workers share the exit counters.
            if host::uwsgi::has_master() {
                crate::exits::setup();
            }
            // Before fork: the workers share it (see scrape::install for how it stays shared).
            crate::scrape::install(&config());
        }
    }
}

/// The dedicated server; only the master ever has one.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

entry! {
    fn master_cycle() {
        serve_cycle();
        // Last, as close as the plugin gets to uWSGI's waitpid (master.c:661), which follows
        // the master_cycle hooks: a worker dying after this look is reaped before the next.
        crate::exits::cycle();
    }
}

/// One bounded round of the dedicated server, in the master.
fn serve_cycle() {
    let mut guard = SERVER.lock();
    let Some(server) = guard.as_mut() else {
        return;
    };
    if !server.is_registered() {
        // master_queue is -1 until master_loop creates it, just before the first cycle.
        let mq = host::uwsgi::master_queue();
        if mq < 0 {
            return;
        }
        if !host::uwsgi::add_fd_read(mq, server.epoll_fd()) {
            host::log("cannot add the server to the master's event queue; polling once per cycle");
        }
        server.mark_registered();
    }
    server.cycle();
}

/// The Emperor's server (`emperor = prometheus://ADDR`); only an Emperor has one.
static EMPEROR_SERVER: Mutex<Option<Server>> = Mutex::new(None);

entry! {
    /// The `prometheus` imperial monitor's `init`: in the Emperor, once per
    /// `emperor = prometheus://ADDR` value, before its loop starts. Binds the server and makes its
    /// epoll fd the scanner's, so a client wakes the Emperor loop, which calls [`emperor_event`].
    fn emperor_init(ues: *mut ffi::uwsgi_emperor_scanner) {
        if !host::abi::abi_ok() {
            return;
        }
        // SAFETY: uWSGI passes the scanner it has just created; it lives as long as the Emperor.
        let Some(mut scanner) = (unsafe { host::emperor::Scanner::from_raw(ues) }) else {
            return;
        };
        let arg = scanner.arg();
        let value = arg.strip_prefix("prometheus://").unwrap_or(&arg);
        let addr = parse_server_addr(value).unwrap_or_else(|e| fatal(&format!("emperor = {arg}: {e}")));
        let mut slot = EMPEROR_SERVER.lock();
        if slot.is_some() {
            fatal(&format!("emperor = {arg}: only one prometheus:// value per Emperor"));
        }
        let cfg = config();
        check_config(&cfg, true, true);
        scrape::install_emperor(&cfg);
        let server = Server::bind_source(&cfg, &[addr], Exposition::Emperor, atfork_child)
            .unwrap_or_else(|e| fatal(&format!("emperor = {arg}: {e}")));
        if !scanner.attach(server.epoll_fd(), emperor_event) {
            fatal(&format!("emperor = {arg}: cannot add the server to the Emperor's event queue"));
        }
        host::log(&format!(
            "metrics_prometheus {} (commit {}): serving the Emperor's metrics on {}",
            host::PLUGIN_VERSION,
            host::PLUGIN_COMMIT,
            server.describe().join(", ")
        ));
        *slot = Some(server);
        host::emperor::at_exit(emperor_exit);
    }
}

/// One bounded round of the Emperor's server.
fn emperor_cycle() {
    if let Some(server) = EMPEROR_SERVER.lock().as_mut() {
        server.cycle();
    }
}

entry! {
    /// The monitor's `func`: every Emperor loop iteration (deadlines are checked here).
    fn emperor_func(_ues: *mut ffi::uwsgi_emperor_scanner) {
        emperor_cycle();
    }
}

entry! {
    /// The scanner's `event_func`: the server's epoll fd is readable.
    fn emperor_event(_ues: *mut ffi::uwsgi_emperor_scanner) {
        emperor_cycle();
    }
}

entry! {
    /// At the Emperor's exit: closes the server and removes its UNIX socket file.
    fn emperor_exit() {
        if let Some(mut server) = EMPEROR_SERVER.lock().take() {
            server.shutdown();
        }
    }
}

entry! {
    fn master_cleanup() {
        if let Some(mut server) = SERVER.lock().take() {
            server.shutdown();
        }
    }
}

entry! {
    /// Called by uWSGI at the end of every request (the after-request chain, see
    /// `host::request::add_after_request_hook`), in the worker thread that served it.
    #[no_mangle]
    fn metrics_prometheus_after_request(req: *mut ffi::wsgi_request) {
        // SAFETY: uWSGI passes the request it is closing, valid for the call.
        if let Some(req) = unsafe { host::request::Request::from_raw(req) } {
            crate::latency::observe(&req);
        }
    }
}

entry! {
    /// In each new worker, before its apps and threads start (uWSGI's `post_fork`).
    fn post_fork() {
        crate::latency::heal_after_respawn();
        // The row this worker leaves if it calls exit(), for the master's exit count.
        host::children::at_exit_with_status(worker_exit);
    }
}

entry! {
    /// glibc's `on_exit` handler in a worker: `exit(status)` is under way.
    fn worker_exit(status: std::ffi::c_int, _arg: *mut c_void) {
        crate::exits::last_words(status);
    }
}

entry! {
    /// The child side of `pthread_atfork`: forked children must not keep the server's fds,
    /// nor the /proc files the scrapes keep open.
    fn atfork_child() {
        host::fork::close_all_in_child();
        host::procfs::forget_in_child();
        crate::app_metrics::forget_slot_in_child();
    }
}

entry! {
    /// The Python package's first call: fills `out` and returns 1 with application metrics
    /// on, 0 with them off (the package then changes nothing and says why).
    #[no_mangle]
    fn metrics_prometheus_app_info(out: *mut crate::app_metrics::Info) -> std::ffi::c_int = 0; {
        let Some(info) = crate::app_metrics::info() else {
            return 0;
        };
        // SAFETY: the caller passes a writable struct of this layout (its `version` field,
        // checked by the caller, says which).
        unsafe { host::write_out(out, info) };
        1
    }
}

entry! {
    /// Registers one series (see `app_metrics::Table::register`): its index, or -1.
    #[no_mangle]
    fn metrics_prometheus_app_register(key: *const u8, key_len: usize, help: *const u8, help_len: usize, kind: u8, mode: u8) -> i64 = -1; {
        // SAFETY: the caller passes a buffer of this length, valid for the call.
        let key = unsafe { host::c_bytes(key, key_len) };
        // SAFETY: as above.
        let help = unsafe { host::c_bytes(help, help_len) };
        crate::app_metrics::register(key, help, kind, mode)
    }
}

entry! {
    /// Series `index` merged over the processes (prometheus_client's `get()`).
    #[no_mangle]
    fn metrics_prometheus_app_get(index: usize) -> f64 = 0.0; {
        crate::app_metrics::merged(index)
    }
}

entry! {
    /// The calling process' row in the values (see `app_metrics::resolve_slot`), or -1.
    #[no_mangle]
    fn metrics_prometheus_app_slot() -> i64 = -1; {
        crate::app_metrics::resolve_slot()
    }
}

#[cfg(uwsgi_routing)]
entry! {
    fn route_setup(ur: *mut ffi::uwsgi_route, args: *mut c_char) -> std::ffi::c_int = -1; {
        // SAFETY: uWSGI passes route arguments as a NUL-terminated string (or NULL).
        let args = unsafe { host::c_string(args) };
        match crate::router::setup(&args) {
            Err(e) => {
                host::log(&format!("route action prometheus-metrics:{args}: {e}"));
                -1
            }
            Ok(fmt) => {
                // SAFETY: `ur` is the route uWSGI is setting up in this call.
                let Some(mut route) = (unsafe { host::request::Route::from_raw(ur) }) else {
                    return -1;
                };
                route.attach(route_func, fmt.tag());
                0
            }
        }
    }
}

#[cfg(uwsgi_routing)]
entry! {
    fn route_func(req: *mut ffi::wsgi_request, ur: *mut ffi::uwsgi_route) -> std::ffi::c_int = host::request::BREAK; {
        use crate::router::{serve, RouteFormat};
        // SAFETY: `ur` is the route uWSGI runs, set up by route_setup.
        let forced = unsafe { host::request::Route::from_raw(ur) }
            .map_or(RouteFormat::Negotiate, |r| RouteFormat::from_tag(r.tag()));
        // SAFETY: `req` is the request this thread is handling, for the duration of the call.
        if let Some(req) = unsafe { host::request::Request::from_raw(req) } {
            serve(&req, forced);
        }
        host::request::BREAK
    }
}
