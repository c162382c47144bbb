//! Renders an exposition from a metric list read on stdin, without uWSGI.
//!
//! Input: one metric per line, `name<TAB>type<TAB>value`, where `type` is
//! uWSGI's type number (0 counter, 1 gauge, 2 absolute, 3 alias) and `value`
//! an `i64`. In the name, `\\`, `\n`, `\r` and `\t` stand for a backslash,
//! LF, CR and TAB (so that any name fits on one line); any other backslash is
//! kept as is. Empty lines are ignored.
//!
//! ```text
//! render text|openmetrics [--prefix P] [--no-help] [--no-type] [--no-workers]
//! ```
//!
//! Prints the exposition on stdout and one `skipped: <name>: <reason>` line per
//! skipped metric on stderr. Exits 2 on bad arguments or input.
//!
//! ```text
//! printf 'worker.1.requests\t0\t5\nsocket.0.listen_queue\t1\t2\n' \
//!     | cargo run --example render -- text
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;

use metrics_prometheus_engine::format::{validate_prefix, Format, Layout, MetricType, Options};

const USAGE: &str =
    "usage: render text|openmetrics [--prefix P] [--no-help] [--no-type] [--no-workers] < metrics.tsv";

/// Decodes the name field's `\\`, `\n`, `\r` and `\t` escapes.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let format = match args.next().as_deref() {
        Some("text") => Format::Text,
        Some("openmetrics") => Format::OpenMetrics,
        _ => return Err(USAGE.to_owned()),
    };
    let mut opts = Options::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--prefix" => {
                opts.prefix = args.next().ok_or(USAGE)?;
                validate_prefix(&opts.prefix).map_err(|e| e.to_string())?;
            }
            "--no-help" => opts.help = false,
            "--no-type" => opts.types = false,
            "--no-workers" => opts.workers = false,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }

    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let input = String::from_utf8(input).map_err(|e| format!("stdin is not UTF-8: {e}"))?;

    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut values = Vec::new();
    for (n, line) in input.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut fields = line.rsplitn(3, '\t');
        let (Some(value), Some(ty), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("line {}: expected name<TAB>type<TAB>value", n + 1));
        };
        let ty = ty
            .parse::<u8>()
            .ok()
            .and_then(MetricType::from_uwsgi)
            .ok_or_else(|| format!("line {}: bad type {ty:?} (0..3)", n + 1))?;
        let value = value
            .parse::<i64>()
            .map_err(|e| format!("line {}: bad value {value:?}: {e}", n + 1))?;
        names.push(unescape(name));
        types.push(ty);
        values.push(value);
    }
    let metrics: Vec<(&str, MetricType)> = names.iter().map(String::as_str).zip(types).collect();

    let layout = Layout::new(&metrics, &opts);
    let mut out = Vec::new();
    layout.render(&values, format, &mut out);
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| format!("writing stdout: {e}"))?;
    let mut err = std::io::stderr().lock();
    for s in layout.skipped() {
        // Best effort: a closed stderr must not fail the rendering.
        let _ = writeln!(err, "skipped: {s}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render: {e}");
            ExitCode::from(2)
        }
    }
}
