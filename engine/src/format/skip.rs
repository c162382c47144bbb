//! Why a metric of the input list is not exported: collected while the
//! [`Layout`] is built, reported by [`Layout::skipped`].

use std::fmt;

#[cfg(doc)]
use super::{Layout, Options};

/// Why a metric of the input list is not exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// An ALIAS metric: it duplicates the metric it points to.
    Alias,
    /// `worker.N.failed_requests`: never incremented by uWSGI 2.0, always 0.
    AlwaysZero,
    /// A `worker.0.*` value other than `requests`: worker slot 0 is uWSGI's
    /// aggregate, for which only `requests` (the total over all workers) is
    /// maintained; the totals of the others come from `core.*`.
    AggregateSlot,
    /// A per-worker series (it has a `worker` label) while
    /// [`Options::workers`] is false.
    WorkersDisabled,
    /// A per-core series (it has a `core` label) while [`Options::cores`] is
    /// false.
    CoresDisabled,
    /// Nothing is left to name the family (an empty name, or only unit
    /// tokens, e.g. `...` or `kb`).
    EmptyName,
    /// The family already exists with the other type.
    TypeConflict {
        /// The family name.
        family: String,
    },
    /// One of the family's names (`x`, or for a counter `x_total`/`x_created`)
    /// is already used by another family.
    NameClash {
        /// The name already in use.
        name: String,
    },
    /// The same family and labels were already produced by an earlier metric.
    DuplicateSeries {
        /// The sample name.
        name: String,
    },
    /// The series has a label that [`Options::labels`] also sets.
    LabelClash {
        /// The label name.
        label: String,
    },
    /// Its family is left out by [`Options::families`] (`--prometheus-include`,
    /// `--prometheus-exclude`).
    Filtered {
        /// The family's name as matched (a counter's with `_total`).
        family: String,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Alias => f.write_str("alias of another metric"),
            SkipReason::AlwaysZero => f.write_str("never updated by uWSGI 2.0 (always 0)"),
            SkipReason::AggregateSlot => f.write_str(
                "worker 0 is uWSGI's aggregate slot; only its requests value is maintained",
            ),
            SkipReason::WorkersDisabled => f.write_str("per-worker metrics are disabled"),
            SkipReason::CoresDisabled => f.write_str("per-core metrics are disabled"),
            SkipReason::EmptyName => f.write_str("no usable name left after sanitising"),
            SkipReason::TypeConflict { family } => {
                write!(f, "family {family} already exists with another type")
            }
            SkipReason::NameClash { name } => {
                write!(f, "name {name} is already used by another family")
            }
            SkipReason::DuplicateSeries { name } => {
                write!(
                    f,
                    "duplicate series of {name} (same labels as an earlier metric)"
                )
            }
            SkipReason::LabelClash { label } => {
                write!(
                    f,
                    "its label {label} is also a constant label (--prometheus-label)"
                )
            }
            SkipReason::Filtered { family } => write!(
                f,
                "family {family} is left out by --prometheus-include/--prometheus-exclude"
            ),
        }
    }
}

/// A metric of the input list that is not exported, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its index in the list given to [`Layout::new`].
    pub index: usize,
    /// Its uWSGI name.
    pub name: String,
    /// Why it is not exported.
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}
