//! The preformatted pieces of the text formats, written once when the layout is built: a
//! family's `# HELP`/`# TYPE`/`# UNIT` lines and the `name{labels} ` prefix of a sample line.

use super::{escape, Options};

/// Appends a family's metadata lines: `# HELP` (with [`Options::help`]), `# TYPE` and, in
/// OpenMetrics, `# UNIT` for `_seconds`/`_bytes` names (with [`Options::types`]).
pub(super) fn push_head(
    text: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    om: bool,
    opts: &Options,
) {
    if opts.help {
        text.push_str("# HELP ");
        text.push_str(name);
        text.push(' ');
        escape::push_help(help, om, text);
        text.push('\n');
    }
    if opts.types {
        text.push_str("# TYPE ");
        text.push_str(name);
        text.push(' ');
        text.push_str(kind);
        text.push('\n');
        if om {
            if let Some(unit) = unit_of(name) {
                text.push_str("# UNIT ");
                text.push_str(name);
                text.push(' ');
                text.push_str(unit);
                text.push('\n');
            }
        }
    }
}

/// The OpenMetrics unit of a family name: `seconds` or `bytes` when it ends in `_seconds` or
/// `_bytes`.
pub(super) fn unit_of(name: &str) -> Option<&'static str> {
    ["seconds", "bytes"]
        .into_iter()
        .find(|u| name.strip_suffix(u).is_some_and(|b| b.ends_with('_')))
}

/// `k="v",...` without braces, values escaped.
fn push_label_pairs(labels: &[(String, String)], out: &mut String) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape::push_label_value(v, out);
        out.push('"');
    }
}

/// Appends `name{labels,extra} ` (`extra` a preformatted `k="v"` or empty).
pub(super) fn push_prefix(name: &str, labels: &[(String, String)], extra: &str, out: &mut String) {
    out.push_str(name);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        push_label_pairs(labels, out);
        if !extra.is_empty() {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str(extra);
        }
        out.push('}');
    }
    out.push(' ');
}
