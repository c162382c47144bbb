//! `/readyz` of the dedicated server: whether the instance can take requests now, decided from
//! plain figures the host reads (uWSGI's worker table, the sockets' listen queues). Pure: no
//! I/O, no FFI. (`/healthz` needs no decision: the master loop answering it is the proof.)
#![forbid(unsafe_code)]

use std::fmt;

use crate::defaults::READY_QUEUE_DIVISOR;

/// What the decision reads of one worker, from uWSGI's worker table (`struct uwsgi_worker`,
/// in shared memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Worker {
    /// `pid > 0`: set by the master when it forks the worker, cleared when it reaps it.
    pub running: bool,
    /// `accepting`: set by the worker itself in `uwsgi_ignition()`, once its applications are
    /// loaded and just before it enters its request loop; cleared by the master before each
    /// respawn. (A dead worker keeps it until the respawn: hence `running`.)
    pub accepting: bool,
    /// `cheaped`: stopped, or being stopped, by the cheaper subsystem; or not spawned yet in
    /// cheap mode.
    pub cheaped: bool,
    /// `suspended`: paused (SIGTSTP to the master): the worker waits after its current request.
    pub suspended: bool,
    /// `manage_next_request`: cleared when the worker will take no further request (graceful
    /// reload, `--max-requests` reached, `--max-worker-lifetime`, the cheaper's pick).
    pub next_request: bool,
}

impl Worker {
    /// The worker takes new requests: running, past its startup, and neither cheaped, paused
    /// nor on its way out. Busy or not: a busy worker's requests wait in the listen queue,
    /// which the queue threshold judges.
    pub fn accepts(&self) -> bool {
        self.running && self.accepting && !self.cheaped && !self.suspended && self.next_request
    }
}

/// One of uWSGI's sockets: its name, and `(waiting connections, backlog)` where the kernel
/// tells (TCP_INFO, sock_diag); `None` where it cannot (the socket is then not judged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket<'a> {
    pub name: &'a str,
    pub queue: Option<(u32, u32)>,
}

/// `--prometheus-ready-queue`: from how many waiting connections a socket makes the instance
/// not ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueLimit {
    /// The socket's backlog divided by [`READY_QUEUE_DIVISOR`] (2), rounded up (at least 1):
    /// the default.
    #[default]
    HalfBacklog,
    /// This many (`--prometheus-ready-queue N`, N >= 1).
    At(u32),
    /// The queues are not judged (`--prometheus-ready-queue 0`).
    Off,
}

impl QueueLimit {
    /// From the option's value: 0 turns the check off.
    pub fn from_option(n: u32) -> QueueLimit {
        if n == 0 {
            QueueLimit::Off
        } else {
            QueueLimit::At(n)
        }
    }

    /// The threshold for a socket with this backlog; `None` when the queues are not judged.
    pub fn threshold(self, backlog: u32) -> Option<u32> {
        match self {
            QueueLimit::HalfBacklog => Some(backlog.div_ceil(READY_QUEUE_DIVISOR).max(1)),
            QueueLimit::At(n) => Some(n),
            QueueLimit::Off => None,
        }
    }
}

/// The answer of `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Ready,
    /// No worker accepts requests (and uWSGI is not in cheap mode).
    NoWorker,
    /// The first socket whose listen queue is at or above its threshold.
    Queue {
        socket: &'a str,
        waiting: u32,
        backlog: u32,
        threshold: u32,
    },
}

impl Verdict<'_> {
    pub fn is_ready(&self) -> bool {
        matches!(self, Verdict::Ready)
    }
}

/// The one-line body of the answer (without its newline).
impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ready => f.write_str("ready"),
            Verdict::NoWorker => f.write_str("no worker accepting"),
            Verdict::Queue {
                socket,
                waiting,
                backlog,
                threshold,
            } => write!(
                f,
                "listen queue {waiting}/{backlog} on {socket} (threshold {threshold})"
            ),
        }
    }
}

/// Ready when at least one worker [accepts](Worker::accepts) requests, or uWSGI is in cheap
/// mode (`--cheap`, `--idle`: the master itself watches the sockets and spawns the workers at
/// the first connection, so a connection is served), and no socket's listen queue is at or
/// above its threshold.
pub fn decide<'a>(
    workers: impl IntoIterator<Item = Worker>,
    cheap_mode: bool,
    sockets: impl IntoIterator<Item = Socket<'a>>,
    limit: QueueLimit,
) -> Verdict<'a> {
    if !cheap_mode && !workers.into_iter().any(|w| w.accepts()) {
        return Verdict::NoWorker;
    }
    for s in sockets {
        let Some((waiting, backlog)) = s.queue else {
            continue;
        };
        let Some(threshold) = limit.threshold(backlog) else {
            break;
        };
        if waiting >= threshold {
            return Verdict::Queue {
                socket: s.name,
                waiting,
                backlog,
                threshold,
            };
        }
    }
    Verdict::Ready
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Worker = Worker {
        running: true,
        accepting: true,
        cheaped: false,
        suspended: false,
        next_request: true,
    };

    fn sock(name: &str, waiting: u32, backlog: u32) -> Socket<'_> {
        Socket {
            name,
            queue: Some((waiting, backlog)),
        }
    }

    #[test]
    fn a_worker_accepts_only_when_every_flag_says_so() {
        assert!(UP.accepts());
        let off = [
            Worker {
                running: false,
                ..UP
            },
            Worker {
                accepting: false,
                ..UP
            },
            Worker {
                cheaped: true,
                ..UP
            },
            Worker {
                suspended: true,
                ..UP
            },
            Worker {
                next_request: false,
                ..UP
            },
            Worker::default(),
        ];
        for w in off {
            assert!(!w.accepts(), "{w:?}");
            assert_eq!(
                decide([w, w], false, [], QueueLimit::default()),
                Verdict::NoWorker
            );
            // One accepting worker among them is enough.
            assert_eq!(
                decide([w, UP], false, [], QueueLimit::default()),
                Verdict::Ready
            );
        }
        assert_eq!(
            decide([], false, [], QueueLimit::default()),
            Verdict::NoWorker
        );
    }

    #[test]
    fn cheap_mode_is_ready_without_workers() {
        let cheaped = Worker {
            cheaped: true,
            running: false,
            ..UP
        };
        assert_eq!(
            decide([cheaped; 2], true, [], QueueLimit::default()),
            Verdict::Ready
        );
        // The queues still count.
        assert!(matches!(
            decide([cheaped], true, [sock("/s", 9, 10)], QueueLimit::default()),
            Verdict::Queue { .. }
        ));
    }

    #[test]
    fn queue_thresholds() {
        let half = QueueLimit::HalfBacklog;
        assert_eq!(half.threshold(100), Some(50));
        assert_eq!(half.threshold(101), Some(51));
        assert_eq!(half.threshold(1), Some(1));
        assert_eq!(half.threshold(0), Some(1));
        assert_eq!(QueueLimit::from_option(3), QueueLimit::At(3));
        assert_eq!(QueueLimit::from_option(3).threshold(100), Some(3));
        assert_eq!(QueueLimit::from_option(0), QueueLimit::Off);
        assert_eq!(QueueLimit::Off.threshold(100), None);

        fn ok<'a>(sockets: &[Socket<'a>], limit: QueueLimit) -> Verdict<'a> {
            decide([UP], false, sockets.iter().copied(), limit)
        }
        assert_eq!(ok(&[sock("/a", 49, 100)], half), Verdict::Ready);
        assert_eq!(
            ok(&[sock("/a", 49, 100), sock("/run/app.sock", 57, 100)], half),
            Verdict::Queue {
                socket: "/run/app.sock",
                waiting: 57,
                backlog: 100,
                threshold: 50
            }
        );
        // At the threshold is not ready; the first socket over it is named.
        let v = ok(&[sock("/a", 3, 100), sock("/b", 4, 100)], QueueLimit::At(3));
        assert_eq!(v.to_string(), "listen queue 3/100 on /a (threshold 3)");
        assert_eq!(ok(&[sock("/a", 2, 100)], QueueLimit::At(3)), Verdict::Ready);
        // Unknown queues are not judged; Off judges none.
        let unknown = Socket {
            name: "udp",
            queue: None,
        };
        assert_eq!(ok(&[unknown], QueueLimit::At(1)), Verdict::Ready);
        assert_eq!(ok(&[sock("/a", 100, 100)], QueueLimit::Off), Verdict::Ready);
        // No worker comes first.
        assert_eq!(
            decide([], false, [sock("/a", 100, 100)], half),
            Verdict::NoWorker
        );
    }

    #[test]
    fn reasons() {
        assert_eq!(Verdict::Ready.to_string(), "ready");
        assert!(Verdict::Ready.is_ready() && !Verdict::NoWorker.is_ready());
        assert_eq!(Verdict::NoWorker.to_string(), "no worker accepting");
        let q = Verdict::Queue {
            socket: "/run/app.sock",
            waiting: 57,
            backlog: 100,
            threshold: 50,
        };
        assert_eq!(
            q.to_string(),
            "listen queue 57/100 on /run/app.sock (threshold 50)"
        );
    }
}
