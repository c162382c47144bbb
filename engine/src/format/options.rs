//! The rendering options, fixed when the [`Layout`](super::Layout) is built, and the check of
//! the one given as free text (the prefix).

/// Rendering options, fixed when the [`Layout`](super::Layout) is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Prepended verbatim to every family name (default `uwsgi_`). Check it with
    /// [`validate_prefix`]; bytes outside `[a-zA-Z0-9_]` are replaced by `_`
    /// anyway. The prefix is not rewritten for promlint: choose one in
    /// snake_case ending in `_`.
    pub prefix: String,
    /// Emit `# HELP` lines (default true).
    pub help: bool,
    /// Emit `# TYPE` lines, and `# UNIT` lines in OpenMetrics (default true).
    /// Without them, counters are announced under their sample name
    /// (`…_total`) in both formats.
    pub types: bool,
    /// Emit per-worker series (those with a `worker` label: `uwsgi_worker_*`,
    /// `uwsgi_worker_core_*`, default true). Aggregates stay either way.
    pub workers: bool,
    /// Emit per-core series (those with a `core` label, default true). Async and
    /// gevent instances can have thousands of cores per worker.
    pub cores: bool,
    /// Constant labels added to every series of every family (histograms included), after
    /// the series' own labels, in every format (default none). Check each with
    /// [`validate_label`](super::validate_label); one that fails is left out. A series that already has one of these
    /// label names is left out ([`SkipReason::LabelClash`](super::SkipReason::LabelClash)).
    pub labels: Vec<(String, String)>,
    /// Families kept and dropped by name (`--prometheus-include`, `--prometheus-exclude`),
    /// decided when the [`Layout`](super::Layout) is built (default: every family). See
    /// [`FamilyFilter`](super::FamilyFilter) for the matching rule.
    pub families: super::FamilyFilter,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: crate::defaults::PREFIX.to_owned(),
            help: true,
            types: true,
            workers: true,
            cores: true,
            labels: Vec::new(),
            families: super::FamilyFilter::default(),
        }
    }
}

impl Options {
    /// The constant labels of [`Options::labels`] that pass
    /// [`validate_label`](super::validate_label): the ones every renderer adds.
    pub fn valid_labels(&self) -> impl Iterator<Item = &(String, String)> {
        self.labels
            .iter()
            .filter(|(k, v)| super::validate_label(k, v).is_ok())
    }
}

/// A `--prometheus-prefix` value that is not empty nor `[a-zA-Z_][a-zA-Z0-9_]*`: the offending
/// character and its byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError {
    pub prefix: String,
    pub at: usize,
    pub found: char,
}

impl std::fmt::Display for PrefixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid prefix {:?}: character {:?} at byte {} is not allowed; a metric prefix must \
             be empty or start with an ASCII letter or '_' followed by ASCII letters, digits or \
             '_' (for example \"uwsgi_\")",
            self.prefix, self.found, self.at
        )
    }
}

impl std::error::Error for PrefixError {}

/// Checks a family-name prefix: it must be empty or match `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn validate_prefix(p: &str) -> Result<(), PrefixError> {
    match p
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
    {
        None => Ok(()),
        Some((at, found)) => Err(PrefixError {
            prefix: p.to_owned(),
            at,
            found,
        }),
    }
}

/// The prefix as it is applied ([`Options::prefix`] with every byte outside `[a-zA-Z0-9_]`
/// replaced by `_`), and the one rule that makes a family name of it: the prefix, then the
/// name, then a `_` in front if that starts with a digit (possible only with an empty prefix,
/// or one [`validate_prefix`] would refuse). Every family is named through it: the built-in
/// and generic metrics, the extras, the histograms; the applications' families (`crate::app`)
/// are checked against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Prefix(String);

impl Prefix {
    pub(crate) fn new(prefix: &str) -> Prefix {
        Prefix(
            prefix
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'_' {
                        b as char
                    } else {
                        '_'
                    }
                })
                .collect(),
        )
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The family name for `name` (which has no prefix).
    pub(crate) fn family(&self, name: &str) -> String {
        let mut family = String::with_capacity(self.0.len() + name.len() + 1);
        family.push_str(&self.0);
        family.push_str(name);
        if family.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            family.insert(0, '_');
        }
        family
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["", "uwsgi_", "_", "a", "My_App2_", "__x"] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok:?}");
        }
        for bad in ["1x", "a-b", "a b", "é", "x:", "a.b", "9"] {
            let err = validate_prefix(bad).unwrap_err().to_string();
            assert!(err.contains("must be empty or start with"), "{err}");
        }
        let e = validate_prefix("ab-c").unwrap_err();
        assert_eq!((e.at, e.found), (2, '-'));
        assert_eq!(
            e.to_string(),
            "invalid prefix \"ab-c\": character '-' at byte 2 is not allowed; a metric prefix must be empty or start with an ASCII letter or '_' followed by ASCII letters, digits or '_' (for example \"uwsgi_\")"
        );
    }

    #[test]
    fn family_names() {
        let p = Prefix::new("uwsgi_");
        assert_eq!(p.family("requests"), "uwsgi_requests");
        assert_eq!(p.family("1x"), "uwsgi_1x");
        let empty = Prefix::new("");
        assert_eq!(empty.family("1x"), "_1x");
        assert_eq!(empty.family("x1"), "x1");
        assert_eq!(empty.family(""), "");
        // Not checked: one `_` per byte outside `[a-zA-Z0-9_]`.
        assert_eq!(Prefix::new("a-é.").as_str(), "a____");
        assert_eq!(Prefix::new("9").family("x"), "_9x");
    }
}
