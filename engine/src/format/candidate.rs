//! One metric of uWSGI's list, or one [`Extra`], mapped to a family: its name, type, unit
//! scale, labels and HELP text, before the collision checks of the layout. uWSGI's own names
//! go through the built-in table (`table.rs`), any other through the generic rules
//! (`name.rs`).

use std::borrow::Cow;

use super::{name, table, Extra, Kind, MetricType, Prefix, SkipReason};

/// `(label name, label value)` pairs in output order.
pub(super) type Labels = Vec<(String, String)>;

/// One metric mapped to a family, before collision checks.
pub(super) struct Candidate {
    pub(super) family: String,
    pub(super) kind: Kind,
    pub(super) scale: u8,
    pub(super) labels: Labels,
    pub(super) help: Cow<'static, str>,
}

/// Maps one metric, or says why it is skipped.
pub(super) fn candidate(
    name: &str,
    ty: MetricType,
    prefix: &Prefix,
) -> Result<Candidate, SkipReason> {
    if ty == MetricType::Alias {
        return Err(SkipReason::Alias);
    }
    if let Some((entry, labels)) = table::lookup(name, ty) {
        return match &entry.rule {
            table::Rule::Skip(reason) => Err(reason.clone()),
            table::Rule::Emit {
                family,
                kind,
                scale,
                help,
            } => Ok(Candidate {
                family: prefix.family(family),
                kind: *kind,
                scale: *scale,
                labels: labels
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                help: Cow::Borrowed(help),
            }),
        };
    }
    generic(name, ty, prefix)
}

/// Maps a metric the table does not know, by the generic rules (`name.rs`).
fn generic(name: &str, ty: MetricType, prefix: &Prefix) -> Result<Candidate, SkipReason> {
    let kind = if ty == MetricType::Counter {
        Kind::Counter
    } else {
        Kind::Gauge
    };
    let split = name::split_generic(name);
    let rw = name::rewrite(&split.joined, kind == Kind::Counter);
    if rw.name.is_empty() {
        return Err(SkipReason::EmptyName);
    }
    let mut family = prefix.family(&rw.name);
    if kind == Kind::Counter {
        while let Some(base) = family.strip_suffix("_total") {
            family.truncate(base.len());
        }
        if family.is_empty() || family == "total" {
            return Err(SkipReason::EmptyName);
        }
    }
    let mut help = format!(
        "uWSGI metric {} (custom, or not known to this exporter)",
        split.pattern
    );
    if let Some(unit) = rw.converted_from {
        help.push_str("; value converted from ");
        help.push_str(unit);
        help.push_str(" to seconds");
    }
    if !rw.removed.is_empty() {
        help.push_str("; unit tokens removed from the name: ");
        help.push_str(&rw.removed.join(", "));
    }
    help.push('.');
    Ok(Candidate {
        family,
        kind,
        scale: rw.scale,
        labels: split.labels,
        help: Cow::Owned(help),
    })
}

/// Maps a series the host computes itself.
pub(super) fn extra_candidate(e: &Extra, prefix: &Prefix) -> Candidate {
    Candidate {
        family: prefix.family(e.family),
        kind: e.kind,
        scale: e.scale,
        labels: e.labels.clone(),
        help: Cow::Borrowed(e.help),
    }
}
