//! The layering stays true: each module of `src/` may use only the layers below its own
//! (`src/lib.rs` documents them), `host/log.rs` uses nothing of the crate, no `extern "C"`
//! function is written anywhere except through the plugin's `entry!` macro (so none can skip
//! the panic guard), and `unsafe` code lives in `host/` and `ffi.rs` only, or in the plugin's
//! entry points (an `entry!` body, or the exported plugin struct). Reads the source; fails
//! naming each violation.

use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, ground floor first. A module may use its own layer and those
/// below (the engine is another crate and always allowed).
const LAYERS: &[&[&str]] = &[
    &["ffi", "cflags"],
    &["host"],
    &["live", "latency", "routes", "app_metrics", "exits"],
    &["scrape"],
    &["router", "server"],
    &["plugin"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to (`src/host/net.rs` -> `host`).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

/// Every `crate::<module>` a source text refers to, outside comments, with its line number.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$crate::` in macros and `crate::{a, b}` groups are looked at too.
            if name.is_empty() && after.starts_with('{') {
                let group = &after[1..after.find('}').unwrap_or(after.len())];
                for item in group.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    if !item.is_empty() {
                        refs.push((n + 1, item.to_string()));
                    }
                }
            } else if !name.is_empty() {
                refs.push((n + 1, name));
            }
            rest = after;
        }
    }
    refs
}

/// Back edges and other violations in a tree of `(path relative to src, text)`.
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (rel, text) in files {
        let shown = rel.display();
        if let Some(module) = module_of(rel) {
            let Some(own) = layer_of(&module) else {
                bad.push(format!("{shown}: module `{module}` has no layer in LAYERS"));
                continue;
            };
            for (line, target) in crate_refs(text) {
                if rel == Path::new("host/log.rs") {
                    bad.push(format!(
                        "{shown}:{line}: host/log.rs must not use crate::{target}"
                    ));
                    continue;
                }
                match layer_of(&target) {
                    Some(l) if l <= own => {}
                    Some(_) => bad.push(format!(
                        "{shown}:{line}: `{module}` uses `crate::{target}`, a higher layer"
                    )),
                    None => bad.push(format!(
                        "{shown}:{line}: `crate::{target}` is not a known module"
                    )),
                }
            }
        }
        let host_side = rel.starts_with("host") || rel == Path::new("ffi.rs");
        let entries = if rel.starts_with("plugin") {
            entry_lines(text)
        } else {
            Vec::new()
        };
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let unsafe_code = ["unsafe {", "unsafe fn", "unsafe impl"]
                .iter()
                .any(|u| code.contains(u));
            if unsafe_code && !host_side && !entries.get(n).copied().unwrap_or(false) {
                bad.push(format!(
                    "{shown}:{}: `unsafe` outside host/ and the plugin's entry points",
                    n + 1
                ));
            }
            if let Some(i) = code.find("extern \"C\" fn ") {
                let after = &code[i + "extern \"C\" fn ".len()..];
                if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    bad.push(format!(
                        "{shown}:{}: an `extern \"C\"` function outside `entry!`",
                        n + 1
                    ));
                }
            }
        }
    }
    bad
}

/// Per line of a plugin source: whether it is inside an `entry! { ... }` item or the exported
/// `metrics_prometheus_plugin` struct (by brace depth from the line that opens it).
fn entry_lines(text: &str) -> Vec<bool> {
    let mut out = Vec::new();
    let mut depth: Option<i64> = None;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let opens = code.trim_start().starts_with("entry! {")
            || code.contains("static mut metrics_prometheus_plugin");
        if depth.is_none() && opens {
            depth = Some(0);
        }
        out.push(depth.is_some());
        if let Some(d) = depth.as_mut() {
            *d += code.matches('{').count() as i64 - code.matches('}').count() as i64;
            if *d <= 0 && code.contains('}') {
                depth = None;
            }
        }
    }
    out
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("readable source");
            let rel = path.strip_prefix(root).expect("under src").to_path_buf();
            out.push((rel, text));
        }
    }
}

#[test]
fn src_has_no_back_edges() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    assert!(
        files.len() > 15,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    for m in ["host", "live", "scrape", "server", "plugin"] {
        assert!(
            files
                .iter()
                .any(|(p, _)| module_of(p).as_deref() == Some(m)),
            "module {m} not found"
        );
    }
    let bad = violations(&files);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_catches_back_edges() {
    let file = |p: &str, t: &str| (PathBuf::from(p), t.to_string());
    let ok = [
        file("host/net.rs", "use crate::ffi;\nuse crate::host::log;"),
        file(
            "server.rs",
            "use crate::scrape::{self, Scratch};\nuse crate::{host, live};",
        ),
        file(
            "plugin/mod.rs",
            "use crate::server::Server; // crate::nothing",
        ),
        file("plugin/guard.rs", "unsafe extern \"C\" fn $name() {}"),
        file(
            "host/shared_counters.rs",
            "let p = unsafe { libc::mmap() };",
        ),
        file(
            "plugin/mod.rs",
            "entry! {\n    fn f(p: *mut u8) {\n        let r = unsafe { g(p) };\n    }\n}",
        ),
        file("server.rs", "    atfork_child: unsafe extern \"C\" fn(),"),
    ];
    assert_eq!(violations(&ok), Vec::<String>::new());
    let cases = [
        file("host/abi.rs", "use crate::plugin::disable;"),
        file("live.rs", "let v = crate::scrape::render();"),
        file("scrape.rs", "use crate::{host, server};"),
        file("host/log.rs", "use crate::ffi;"),
        file("router.rs", "unsafe extern \"C\" fn route_func() {}"),
        file("server.rs", "use crate::nosuch;"),
        file("newmodule.rs", "fn x() {}"),
        file("live.rs", "let w = unsafe { &*ptr };"),
        file("histogram.rs", "unsafe impl Send for X {}"),
        file(
            "plugin/mod.rs",
            "entry! {\n    fn f() {}\n}\nfn lossy(p: *const u8) {\n    unsafe { g(p) }\n}",
        ),
    ];
    for case in cases {
        let v = violations(std::slice::from_ref(&case));
        assert_eq!(v.len(), 1, "{case:?} gave {v:?}");
    }
}
