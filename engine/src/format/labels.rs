//! Constant labels (`--prometheus-label NAME=VALUE`): checked once, then appended to the label
//! set of every series when the [`Layout`](super::Layout) is built, so that a scrape copies them
//! with the rest of each preformatted line and costs nothing more.
//!
//! A constant label must never give a series the same label twice, so its name may not be one
//! the plugin itself puts on a series ([`RESERVED`]); a series whose own labels still use it (a
//! custom metric's generic label, say) is left out and reported
//! ([`SkipReason::LabelClash`](super::SkipReason::LabelClash)).

/// Label names the plugin's own families use (native and `--prometheus-compat` names), plus
/// `le` and `quantile`, which Prometheus gives a meaning. A constant label may not take one.
pub const RESERVED: &[&str] = &[
    // Native families.
    "worker",
    "core",
    "status",
    "app",
    "mountpoint",
    "socket",
    "name",
    "proto",
    "dir",
    "mule",
    "version",
    "plugin_version",
    "commit",
    "method",
    "code",
    "reason",
    "route",
    // Histograms, summaries and exemplars.
    "le",
    "quantile",
    "trace_id",
    // timonwong/uwsgi_exporter names (`--prometheus-compat uwsgi_exporter`).
    "stats_uri",
    "worker_id",
    "core_id",
    "app_id",
    "chdir",
];

/// Why a constant label is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelError {
    /// No `=` in a `--prometheus-label` value.
    NoEquals(String),
    EmptyName,
    BadCharacter {
        name: String,
        at: usize,
        found: char,
    },
    ReservedByPrometheus(String),
    ReservedByPlugin(String),
    EmptyValue(String),
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelError::NoEquals(v) => write!(f, "{v:?}: expected NAME=VALUE"),
            LabelError::EmptyName => f.write_str("empty label name; expected NAME=VALUE"),
            LabelError::BadCharacter { name, at, found } => write!(
                f,
                "label name {name:?}: character {found:?} at byte {at} is not allowed; a label \
                 name is an ASCII letter or '_' followed by ASCII letters, digits or '_'"
            ),
            LabelError::ReservedByPrometheus(name) => write!(
                f,
                "label name {name:?}: names starting with \"__\" are reserved by Prometheus"
            ),
            LabelError::ReservedByPlugin(name) => write!(
                f,
                "label name {name:?} is used by the plugin's own series; choose another \
                 (reserved: {})",
                RESERVED.join(", ")
            ),
            LabelError::EmptyValue(name) => write!(
                f,
                "label {name:?} has an empty value, which Prometheus treats as no label"
            ),
        }
    }
}

impl std::error::Error for LabelError {}

/// Checks one constant label: a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`), not
/// reserved by Prometheus (`__` prefix) nor by the plugin ([`RESERVED`]), with a non-empty value
/// (Prometheus drops a label whose value is empty). Any UTF-8 value is fine: it is escaped for
/// each format.
pub fn validate_label(name: &str, value: &str) -> Result<(), LabelError> {
    let bad = name
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())));
    if name.is_empty() {
        return Err(LabelError::EmptyName);
    }
    if let Some((at, found)) = bad {
        return Err(LabelError::BadCharacter {
            name: name.into(),
            at,
            found,
        });
    }
    if name.starts_with("__") {
        return Err(LabelError::ReservedByPrometheus(name.into()));
    }
    if RESERVED.contains(&name) {
        return Err(LabelError::ReservedByPlugin(name.into()));
    }
    if value.is_empty() {
        return Err(LabelError::EmptyValue(name.into()));
    }
    Ok(())
}

/// Parses one `--prometheus-label` value, `NAME=VALUE` (the value may contain `=`), and checks
/// it with [`validate_label`].
pub fn parse_label(v: &str) -> Result<(String, String), LabelError> {
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| LabelError::NoEquals(v.into()))?;
    let name = name.trim();
    validate_label(name, value)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// `labels` followed by the constant labels.
pub(super) fn with_constant(
    labels: &[(String, String)],
    constant: &[(String, String)],
) -> Vec<(String, String)> {
    let mut all = Vec::with_capacity(labels.len() + constant.len());
    all.extend_from_slice(labels);
    all.extend_from_slice(constant);
    all
}

/// The first of `labels`' names that a constant label also has.
pub(super) fn clash<'a>(
    labels: &'a [(String, String)],
    constant: &[(String, String)],
) -> Option<&'a str> {
    labels
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| constant.iter().any(|(c, _)| c == k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(
            parse_label("host=web-1"),
            Ok(("host".into(), "web-1".into()))
        );
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(
            parse_label("_x9=\"q\"\n"),
            Ok(("_x9".into(), "\"q\"\n".into()))
        );
        for bad in [
            "host",
            "=v",
            "9a=v",
            "a-b=v",
            "é=v",
            "__name__=v",
            "__x=v",
            "worker=1",
            "le=1",
            "stats_uri=x",
            "host=",
        ] {
            assert!(parse_label(bad).is_err(), "{bad:?}");
        }
        let e = parse_label("worker=1").unwrap_err();
        assert_eq!(e, LabelError::ReservedByPlugin("worker".into()));
        assert!(e.to_string().contains("used by the plugin's own series"));
    }

    #[test]
    fn clashes() {
        let l = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = l(&[("host", "a"), ("dc", "b")]);
        assert_eq!(clash(&l(&[("shard", "1"), ("dc", "2")]), &c), Some("dc"));
        assert_eq!(clash(&l(&[("shard", "1")]), &c), None);
        assert_eq!(
            with_constant(&l(&[("shard", "1")]), &c),
            l(&[("shard", "1"), ("host", "a"), ("dc", "b")])
        );
    }
}
