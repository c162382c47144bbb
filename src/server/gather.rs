//! The Emperor's server fetching its vassals' own expositions (`--prometheus-vassal-socket`):
//! one round per scrape (scrapes arriving meanwhile in the same format share it), every vassal
//! at once over non-blocking UNIX sockets registered in the server's own epoll, so the
//! Emperor's loop never waits on a vassal. A round ends when every vassal has answered or at
//! its deadline (`--prometheus-vassal-timeout`, a timerfd in the same epoll wakes the loop);
//! whatever has not answered, or answered anything but a well-formed exposition, is left out
//! with `uwsgi_vassal_scrape_up 0`. The scrapes wait meanwhile as [`State::Waiting`]
//! connections; a finished round answers every one waiting for its format.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use metrics_prometheus_engine::emperor::{vassal_label, Vassal};
use metrics_prometheus_engine::format::Format;
use metrics_prometheus_engine::http::Action;
use metrics_prometheus_engine::merge::{self, VASSAL_BODY_LIMIT};

use crate::host::epoll::{self, Epoll, Timer};
use crate::host::{self, net};
use crate::scrape::{self, Scratch};

use super::conn::State;
use super::token::Token;
use super::Server;

/// Vassals fetched per round at most; the others are reported with scrape_up 0.
pub(super) const MAX_FETCHES: usize = 1024;
/// Bytes read from one vassal per event (bounded work per Emperor loop iteration).
const READ_PER_EVENT: usize = 256 << 10;
/// A response head is at most this long.
const HEAD_ROOM: usize = 16 << 10;
/// Read buffers kept for the next round.
const SPARE_BUFS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Sending,
    Reading,
    Done,
}

struct Fetch {
    fd: Option<OwnedFd>,
    step: Step,
    sent: usize,
    buf: Vec<u8>,
    /// Where the body starts in `buf`, once the whole answer was accepted.
    body: Option<usize>,
    /// The answer grew past [`VASSAL_BODY_LIMIT`].
    too_big: bool,
}

impl Fetch {
    fn failed() -> Fetch {
        Fetch {
            fd: None,
            step: Step::Done,
            sent: 0,
            buf: Vec::new(),
            body: None,
            too_big: false,
        }
    }
}

struct Round {
    fmt: Format,
    deadline: Instant,
    request: Vec<u8>,
    vassals: Vec<Vassal>,
    fetches: Vec<Fetch>,
}

pub(super) struct Gather {
    pattern: String,
    path: String,
    timeout: Duration,
    timer: Timer,
    round: Option<Round>,
    spare: Vec<Vec<u8>>,
    /// Vassals already logged as over the size cap (said once each).
    logged_too_big: Vec<String>,
}

/// The format vassals are asked for: a protobuf scrape gets OpenMetrics (merged expositions
/// are text).
fn merged_format(fmt: Format) -> Format {
    match fmt {
        Format::Protobuf => Format::OpenMetrics,
        f => f,
    }
}

impl Gather {
    /// `pattern` holds `{vassal}`; `path` is the metrics path asked of each vassal.
    pub(super) fn new(
        pattern: &str,
        path: &str,
        timeout_ms: u32,
        poller: &Epoll,
    ) -> io::Result<Gather> {
        let timer = Timer::new()?;
        poller.add(&timer, epoll::IN, Token::Timer.raw())?;
        Ok(Gather {
            pattern: pattern.to_string(),
            path: path.to_string(),
            timeout: Duration::from_millis(u64::from(timeout_ms)),
            timer,
            round: None,
            spare: Vec::new(),
            logged_too_big: Vec::new(),
        })
    }

    /// The format of the round in progress, if any.
    pub(super) fn busy(&self) -> Option<Format> {
        self.round.as_ref().map(|r| r.fmt)
    }

    /// Starts a round in `fmt`: reads the vassal list and connects to every running vassal.
    pub(super) fn start(&mut self, fmt: Format, poller: &Epoll, now: Instant) {
        let mut vassals = Vec::new();
        scrape::read_vassals(&mut vassals);
        let request = merge::vassal_request(&self.path, fmt);
        let mut seen: Vec<&str> = Vec::new();
        let mut fetches = Vec::with_capacity(vassals.len());
        for (i, v) in vassals.iter().enumerate() {
            let label = vassal_label(&v.name);
            // Not running (on demand, stopped): nothing to ask. A second vassal with the same
            // label (`app.ini`, `app.yaml`) would repeat the first one's series.
            if !v.running || v.on_demand || i >= MAX_FETCHES || seen.contains(&label) {
                fetches.push(Fetch::failed());
                continue;
            }
            seen.push(label);
            let path = PathBuf::from(self.pattern.replace("{vassal}", label));
            let token = Token::Vassal(i).raw();
            let fetch = match net::connect_unix(&path) {
                Ok(fd) if poller.add(&fd, epoll::IN | epoll::OUT, token).is_ok() => {
                    let mut buf = self.spare.pop().unwrap_or_default();
                    buf.clear();
                    Fetch {
                        fd: Some(fd),
                        step: Step::Sending,
                        sent: 0,
                        buf,
                        body: None,
                        too_big: false,
                    }
                }
                _ => Fetch::failed(),
            };
            fetches.push(fetch);
        }
        self.timer.arm(self.timeout);
        self.round = Some(Round {
            fmt,
            deadline: now + self.timeout,
            request,
            vassals,
            fetches,
        });
    }

    /// The timer fired: consume it (the caller then checks [`Gather::finished`]).
    pub(super) fn timer_event(&self) {
        self.timer.clear();
    }

    /// Drives fetch `i` as far as its socket allows (bounded).
    pub(super) fn event(&mut self, i: usize, poller: &Epoll) {
        let token = Token::Vassal(i).raw();
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let fmt = round.fmt;
        let Some(f) = round.fetches.get_mut(i) else {
            return;
        };
        if !drive(f, &round.request, fmt, poller, token) {
            f.fd = None;
            f.step = Step::Done;
            if f.too_big {
                let name = vassal_label(&round.vassals[i].name);
                if !self.logged_too_big.iter().any(|n| n == name) {
                    host::log(&format!(
                        "emperor: vassal {name} sent more than {VASSAL_BODY_LIMIT} bytes; its \
                         exposition is left out (uwsgi_vassal_scrape_up 0)"
                    ));
                    self.logged_too_big.push(name.to_string());
                }
            }
        }
    }

    /// Every vassal has answered (or failed), or the deadline has passed.
    pub(super) fn finished(&self, now: Instant) -> bool {
        self.round
            .as_ref()
            .is_some_and(|r| now >= r.deadline || r.fetches.iter().all(|f| f.step == Step::Done))
    }

    /// Ends the round: the Emperor's own families with each vassal's scrape_up, then the
    /// merged vassal families, into `scratch.out`. Returns the round's format.
    pub(super) fn finish(&mut self, scratch: &mut Scratch) -> Option<Format> {
        let mut round = self.round.take()?;
        for (v, f) in round.vassals.iter_mut().zip(&round.fetches) {
            v.scrape_up = Some(f.body.is_some());
        }
        scrape::render_vassals(&round.vassals, round.fmt, scratch);
        let bodies: Vec<(&str, &[u8])> = round
            .vassals
            .iter()
            .zip(&round.fetches)
            .filter_map(|(v, f)| Some((vassal_label(&v.name), &f.buf[f.body?..])))
            .collect();
        merge::merge(&bodies, round.fmt, &mut scratch.out);
        drop(bodies);
        for f in round.fetches {
            // Dropping the fd closes it, which also takes it out of the epoll set.
            if f.buf.capacity() > 0
                && f.buf.capacity() <= (1 << 20)
                && self.spare.len() < SPARE_BUFS
            {
                self.spare.push(f.buf);
            }
        }
        Some(round.fmt)
    }
}

impl Server {
    /// Ends a finished round of the vassals' expositions (answering every connection waiting
    /// for its format), then starts the next one for the connections still waiting.
    pub(super) fn advance_gather(&mut self, now: Instant) {
        let Some(g) = self.gather.as_mut() else {
            return;
        };
        if g.finished(now) {
            if let Some(fmt) = g.finish(&mut self.answers.scratch) {
                self.answer_waiting(fmt, now);
            }
        }
        let Some(g) = self.gather.as_mut() else {
            return;
        };
        if g.busy().is_none() {
            let next = self.conns.iter().flatten().find_map(|c| match c.state {
                State::Waiting(Action::Metrics { fmt, .. }) => Some(merged_format(fmt)),
                _ => None,
            });
            if let Some(fmt) = next {
                g.start(fmt, &self.poller, now);
                if g.finished(now) {
                    // Nothing to wait for (no running vassal): answer at once.
                    self.advance_gather(now);
                }
            }
        }
    }

    /// Answers every connection waiting for a round in `fmt` with the merged exposition
    /// (in `self.answers.scratch.out`).
    fn answer_waiting(&mut self, fmt: Format, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_mut() else {
                continue;
            };
            let State::Waiting(Action::Metrics { fmt: f, head, gzip }) = c.state else {
                continue;
            };
            if merged_format(f) != fmt {
                continue;
            }
            self.answers.answer(c, fmt, head, gzip, Ok(()), 0);
            c.start_writing(&self.poller, slot);
            if !self.write(slot, now) {
                self.close_conn(slot);
            }
        }
    }
}

/// One fetch's step; false when it failed (the caller closes it).
fn drive(f: &mut Fetch, request: &[u8], fmt: Format, poller: &Epoll, token: u64) -> bool {
    let Some(fd) = f.fd.as_ref() else {
        return f.step == Step::Done;
    };
    if f.step == Step::Sending {
        while f.sent < request.len() {
            match net::send(fd, &request[f.sent..]) {
                Ok(n) => f.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        f.step = Step::Reading;
        if poller.modify(fd, epoll::IN, token).is_err() {
            return false;
        }
    }
    if f.step != Step::Reading {
        return true;
    }
    let mut budget = READ_PER_EVENT;
    while budget > 0 {
        let room = (VASSAL_BODY_LIMIT + HEAD_ROOM + 1)
            .saturating_sub(f.buf.len())
            .min(budget);
        if room == 0 {
            f.too_big = true;
            return false;
        }
        match net::recv_append(fd, &mut f.buf, room) {
            Ok(0) => {
                f.fd = None;
                f.step = Step::Done;
                f.body = merge::vassal_response(&f.buf, fmt).ok();
                return true;
            }
            Ok(n) => budget -= n.min(budget),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
