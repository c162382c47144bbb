//! Builds the plugin against the exact uWSGI binary it will be loaded into.
//!
//! Inputs, each overridable (every one is tracked with `rerun-if-env-changed`):
//! - `UWSGI_BIN`: the uwsgi binary (default `uwsgi` on PATH);
//! - `UWSGI_CFLAGS`: replaces `$UWSGI_BIN --cflags`;
//! - `UWSGI_H`: path to a header that replaces `$UWSGI_BIN --dot-h`.
//!
//! The same layout flags go to bindgen and to the C shim, so Rust and C see the binary's layout.
//! The raw cflags string is embedded so `on_load`-time code can refuse a different binary.
//!
//! It also records the source's git commit (`MP_GIT_COMMIT`, for build_info and the startup
//! line): see [`git_commit`].

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/cflags.rs"]
mod cflags;

fn env_tracked(name: &str) -> Option<String> {
    println!("cargo::rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn run_uwsgi(bin: &str, arg: &str) -> Vec<u8> {
    let out = Command::new(bin).arg(arg).output().unwrap_or_else(|e| {
        panic!(
            "could not run `{bin} {arg}`: {e}. Set UWSGI_BIN to the uwsgi binary this plugin will \
             be loaded into, or set UWSGI_CFLAGS and UWSGI_H explicitly"
        )
    });
    if !out.status.success() {
        panic!(
            "`{bin} {arg}` failed ({}): {}. Set UWSGI_BIN to a uWSGI 2.0 binary",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

fn main() {
    // uWSGI's struct layouts, the ABI check (ELF64 symbol sizes) and the syscalls the plugin
    // makes (epoll, getdents64, TCP_INFO) are those of 64-bit Linux; refuse anything else
    // instead of building a plugin that would read the wrong memory.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    if os != "linux" || width != "64" {
        panic!("metrics_prometheus supports 64-bit Linux only (target: {os}, {width}-bit)");
    }
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=wrapper.h");
    println!("cargo::rerun-if-changed=src/shim.c");
    println!("cargo::rerun-if-changed=src/cflags.rs");
    println!("cargo::rustc-check-cfg=cfg(uwsgi_routing)");
    println!("cargo::rustc-check-cfg=cfg(uwsgi_max_requests_delta)");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bin = env_tracked("UWSGI_BIN").unwrap_or_else(|| "uwsgi".to_string());

    // `uwsgi --cflags` prints uwsgi_get_cflags() plus a newline; the embedded copy must equal
    // what uwsgi_get_cflags() returns at run time.
    let raw_cflags = match env_tracked("UWSGI_CFLAGS") {
        Some(c) => c,
        None => String::from_utf8(run_uwsgi(&bin, "--cflags"))
            .expect("uwsgi --cflags printed non-UTF-8")
            .trim_end_matches('\n')
            .to_string(),
    };
    let header = match env_tracked("UWSGI_H") {
        Some(path) => {
            println!("cargo::rerun-if-changed={path}");
            fs::read(&path).unwrap_or_else(|e| panic!("UWSGI_H={path}: {e}"))
        }
        None => run_uwsgi(&bin, "--dot-h"),
    };
    if !header.windows(20).any(|w| w == b"struct uwsgi_server ") {
        panic!(
            "the uWSGI header from {bin} does not declare struct uwsgi_server; is it uWSGI 2.0?"
        );
    }
    fs::write(out_dir.join("uwsgi.h"), &header).expect("write OUT_DIR/uwsgi.h");
    fs::write(out_dir.join("uwsgi_cflags.txt"), &raw_cflags).expect("write cflags");

    let mut flags = cflags::layout_flags(&cflags::split_shell_words(&raw_cflags));
    flags.insert(0, format!("-I{}", out_dir.display()));
    let version = cflags::uwsgi_version(&flags).unwrap_or_else(|| "unknown".to_string());
    fs::write(out_dir.join("uwsgi_version.txt"), &version).expect("write version");

    let routing = cflags::defines(&flags, "UWSGI_ROUTING");
    if routing {
        println!("cargo::rustc-cfg=uwsgi_routing");
    }

    // `--max-requests-delta` (uwsgi_server.max_requests_delta) came in 2.0.22.
    if header.windows(19).any(|w| w == b"max_requests_delta;") {
        println!("cargo::rustc-cfg=uwsgi_max_requests_delta");
    }

    println!("cargo::rustc-env=MP_GIT_COMMIT={}", git_commit());

    generate_bindings(&flags, &out_dir);
    build_shim(&flags);
}

/// The commit the plugin is built from: `git rev-parse` in a git checkout of this very
/// directory; else the `COMMIT` file packaging/release.sh writes into the source tarball (which
/// has no .git); else `unknown`. Never an error: a build without git must still work.
fn git_commit() -> String {
    println!("cargo::rerun-if-changed=COMMIT");
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    // An unpacked tarball inside some other repository must not take that repository's commit.
    let top = git(&["rev-parse", "--show-toplevel"]);
    let ours = top.is_some_and(|t| fs::canonicalize(t).ok() == fs::canonicalize(&dir).ok());
    if ours {
        if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
            // A new commit or a checkout moves HEAD or the branch it names (loose or packed).
            for name in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", name]) {
                    println!("cargo::rerun-if-changed={p}");
                }
            }
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &r]) {
                    println!("cargo::rerun-if-changed={p}");
                }
            }
            return commit;
        }
    }
    fs::read_to_string(Path::new(&dir).join("COMMIT"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "unknown".to_string())
}

fn generate_bindings(flags: &[String], out_dir: &Path) {
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(flags)
        .use_core()
        .layout_tests(false)
        .wrap_unsafe_ops(true)
        .generate_cstr(true)
        .derive_default(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        // The structs the plugin reads or fills; their dependencies come along.
        .allowlist_type(
            "uwsgi_(plugin|option|metric|server|worker|core|shared|socket|route|router|lock_item|instance|emperor_scanner|imperial_monitor)",
        )
        .allowlist_type("wsgi_request")
        // Host functions the plugin calls (resolved from the executable at dlopen).
        // uwsgi_register_router is deliberately absent: it exists only in routing builds and is
        // resolved with dlsym (router.rs).
        .allowlist_function(
            "uwsgi_(log|get_cflags|response_.*|get_var|logvar_get|worker_is_busy|string_new_list|register_imperial_monitor)",
        )
        .allowlist_function("event_queue_(add_fd_read|del_fd|read)")
        // The global server struct and the option/route/metric constants.
        .allowlist_var("uwsgi")
        .allowlist_var("UWSGI_(OPT|ROUTE|METRIC)_.*")
        .allowlist_var("UWSGI_PLUGIN_API")
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "bindgen failed on the uWSGI header: {e}. Install libclang-dev and the \
                 development headers uwsgi.h includes for this binary's -D flags \
                 (libpcre2-dev or libpcre3-dev, libssl-dev, libcap-dev, uuid-dev, zlib1g-dev, \
                 libxml2-dev, libyajl-dev); t/setup.sh installs them"
            )
        });
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("write bindings.rs");
}

fn build_shim(flags: &[String]) {
    let mut b = cc::Build::new();
    b.file("src/shim.c").warnings(false);
    for f in flags {
        b.flag(f);
    }
    b.compile("metrics_prometheus_shim");
}
