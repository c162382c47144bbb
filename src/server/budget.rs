//! The work one master cycle may spend on rendering and compressing, all connections
//! together: the master loop has other duties, and one large exposition must not stall it.

use std::time::{Duration, Instant};

/// Renders per cycle are bounded by time: after the first, another starts only while the cycle
/// is younger than this. A large exposition (2 MB at 64 × 64) is then one render per cycle, and
/// the other scrapes wait for the next cycles instead of stalling the master in a row.
const RENDER_WINDOW: Duration = Duration::from_millis(1);
/// Exposition bytes compressed per cycle, all connections together (about 1 ms at level 1),
/// in slices of at most [`GZIP_SLICE`] per connection and turn.
const GZIP_PER_CYCLE: usize = 256 << 10;
const GZIP_SLICE: usize = 64 << 10;

/// What is left of this cycle's render window and compression budget.
pub(super) struct Budget {
    cycle_start: Instant,
    rendered: bool,
    gzip_left: usize,
}

impl Budget {
    pub(super) fn new(now: Instant) -> Budget {
        Budget {
            cycle_start: now,
            rendered: false,
            gzip_left: GZIP_PER_CYCLE,
        }
    }

    /// A new cycle starts with the whole budget.
    pub(super) fn renew(&mut self, now: Instant) {
        *self = Budget::new(now);
    }

    /// Whether a render may start now: the first of the cycle always may, the others only
    /// within [`RENDER_WINDOW`] of the cycle's start.
    pub(super) fn may_render(&self) -> bool {
        !self.rendered || self.cycle_start.elapsed() < RENDER_WINDOW
    }

    pub(super) fn rendering(&mut self) {
        self.rendered = true;
    }

    /// No compression left this cycle.
    pub(super) fn gzip_spent(&self) -> bool {
        self.gzip_left == 0
    }

    /// Takes the bytes to compress next out of `left` still to go: one slice at most, and no
    /// more than the cycle has left.
    pub(super) fn take_gzip(&mut self, left: usize) -> usize {
        let take = left.min(GZIP_SLICE).min(self.gzip_left);
        self.gzip_left -= take;
        take
    }
}
