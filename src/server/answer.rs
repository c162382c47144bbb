//! What a request is answered with: the index page, an error, or a scrape, rendered within
//! this cycle's budget and written plain or as a streamed gzip body.

use std::time::Instant;

use metrics_prometheus_engine::compress;
use metrics_prometheus_engine::config::Config;
use metrics_prometheus_engine::format::Format;
use metrics_prometheus_engine::health::{QueueLimit, Verdict};
use metrics_prometheus_engine::http::{self, Action, BasicAuth, Parsed, Probe, Status};

use crate::host::epoll::{self, Epoll};
use crate::scrape::{self, Exposition, ScrapeError, Scratch};

use super::budget::Budget;
use super::conn::{Conn, Spares, State};
use super::faults;

/// What became of a request.
pub(super) enum Respond {
    /// The answer is in the connection's buffer, to write.
    Ready,
    /// A scrape over this cycle's render budget, deferred to a later cycle.
    Deferred,
    /// A scrape waiting for the vassals' expositions.
    Gather,
}

/// Everything answering takes, apart from the connection itself.
pub(super) struct Responder {
    path: String,
    auth: Option<BasicAuth>,
    /// The index page's whole response.
    index: Vec<u8>,
    pub(super) scratch: Scratch,
    /// `--prometheus-no-gzip` not given.
    gzip: bool,
    /// What the metrics path serves.
    source: Exposition,
    /// `--prometheus-ready-queue`.
    ready_queue: QueueLimit,
    /// `/readyz`'s answer, read at most once per cycle (a burst of probes costs one reading):
    /// `Ok(verdict)`, or why there is none. Cleared by [`Responder::renew`].
    readiness: Option<Result<Verdict<'static>, ScrapeError>>,
    /// The body of a probe's answer.
    probe_body: String,
    pub(super) budget: Budget,
    pub(super) spares: Spares,
}

impl Responder {
    pub(super) fn new(cfg: &Config, source: Exposition) -> Responder {
        let mut index = Vec::new();
        http::write_response(
            &mut index,
            Status::Ok,
            "text/html; charset=utf-8",
            "",
            http::index_page(&cfg.path).as_bytes(),
            false,
        );
        Responder {
            path: cfg.path.clone(),
            auth: cfg.basic_auth.clone(),
            index,
            scratch: Scratch::default(),
            gzip: cfg.gzip,
            source,
            ready_queue: cfg.ready_queue,
            readiness: None,
            probe_body: String::new(),
            budget: Budget::new(Instant::now()),
            spares: Spares::default(),
        }
    }

    /// A new cycle: the whole render budget again, and readiness read afresh.
    pub(super) fn renew(&mut self, now: Instant) {
        self.budget.renew(now);
        self.readiness = None;
    }

    /// The request in `head` so far, checked against the metrics path and the credentials.
    pub(super) fn parse(&self, head: &[u8]) -> Parsed {
        http::parse_with_auth(head, &self.path, self.auth.as_ref())
    }

    /// Prepares the answer to `action` in `c`, the connection in `slot`. A scrape over this
    /// cycle's render budget is deferred (the connection turns [`State::Pending`]); with
    /// `gathering`, a scrape waits for the vassals ([`State::Waiting`]) and the caller starts
    /// or joins a round.
    pub(super) fn respond(
        &mut self,
        c: &mut Conn,
        slot: usize,
        action: Action,
        gathering: bool,
        poller: &Epoll,
    ) -> Respond {
        let scrape = matches!(action, Action::Metrics { .. });
        if scrape && gathering {
            c.state = State::Waiting(action);
            let _ = c.wait_for(poller, 0, slot);
            return Respond::Gather;
        }
        if scrape && !self.budget.may_render() {
            if c.state != State::Pending(action) {
                c.state = State::Pending(action);
                let _ = c.wait_for(poller, epoll::OUT, slot);
            }
            return Respond::Deferred;
        }
        c.clear_buf();
        match action {
            Action::Metrics { fmt, head, gzip } => {
                self.budget.rendering();
                let (rendered, allocations) = faults::counting_allocations(|| {
                    scrape::render_source(self.source, fmt, &mut self.scratch)
                });
                self.answer(c, fmt, head, gzip, rendered, allocations);
            }
            Action::Index { head } => {
                let end = if head {
                    self.index
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 4)
                } else {
                    self.index.len()
                };
                c.buf.extend_from_slice(&self.index[..end]);
            }
            Action::Probe { probe, head } => self.probe(c, probe, head),
            Action::Error(status) => http::write_error(&mut c.buf, status, false),
        }
        c.start_writing(poller, slot);
        Respond::Ready
    }

    /// Writes the answer to `/healthz` or `/readyz` into the connection's buffer: 200, or 503
    /// and the reason, in one line of text. `/healthz` proves the loop that answers it runs:
    /// the master's (or the Emperor's). The Emperor has no workers or sockets of its own, so
    /// its `/readyz` answers as its `/healthz` (each vassal's own server answers for it).
    fn probe(&mut self, c: &mut Conn, probe: Probe, head: bool) {
        use std::fmt::Write as _;
        let verdict = match (probe, self.source) {
            (Probe::Live, _) | (Probe::Ready, Exposition::Emperor) => Ok(Verdict::Ready),
            (Probe::Ready, Exposition::Instance) => {
                let (limit, scratch) = (self.ready_queue, &mut self.scratch);
                *self
                    .readiness
                    .get_or_insert_with(|| scrape::readiness(limit, scratch))
            }
        };
        self.probe_body.clear();
        let status = match verdict {
            Ok(v) if v.is_ready() => {
                self.probe_body
                    .push_str(if probe == Probe::Live { "ok" } else { "ready" });
                Status::Ok
            }
            Ok(v) => {
                let _ = write!(self.probe_body, "{v}");
                Status::Unavailable
            }
            Err(e) => {
                self.probe_body.push_str(e.body().trim_end());
                Status::Unavailable
            }
        };
        self.probe_body.push('\n');
        http::write_response(
            &mut c.buf,
            status,
            "text/plain; charset=utf-8",
            "Cache-Control: no-store\r\n",
            self.probe_body.as_bytes(),
            head,
        );
    }

    /// Writes the answer to a scrape whose exposition is in `self.scratch.out` (or failed)
    /// into the connection's buffer; the caller then starts writing it. `allocations` is what
    /// the render allocated (reported by the test-only `fault-injection` build).
    pub(super) fn answer(
        &mut self,
        c: &mut Conn,
        fmt: Format,
        head: bool,
        gzip: bool,
        rendered: Result<(), ScrapeError>,
        allocations: u64,
    ) {
        c.clear_buf();
        let vary = if self.gzip { http::VARY } else { "" };
        let (fault, extra) = faults::scrape_headers(vary, allocations);
        let out = &self.scratch.out;
        match rendered {
            Ok(()) if gzip && self.gzip && out.len() >= compress::MIN_SIZE => {
                http::write_gzip_head(&mut c.buf, fmt.content_type(), &fault);
                if !head {
                    let spares = &mut self.spares;
                    c.gzip
                        .start(out, &mut c.buf, &mut spares.bufs, &mut spares.compressors);
                }
            }
            Ok(()) => http::write_response(
                &mut c.buf,
                Status::Ok,
                fmt.content_type(),
                &extra,
                out,
                head,
            ),
            Err(e) => http::write_response(
                &mut c.buf,
                Status::Unavailable,
                "text/plain; charset=utf-8",
                &extra,
                e.body().as_bytes(),
                head,
            ),
        }
    }

    /// Between scrapes: the pages of the render buffer and of the spare connection buffers go
    /// back to the kernel (their capacity stays, so the next scrape allocates nothing for
    /// them), and the spare compressors are dropped.
    pub(super) fn release_pages(&mut self) {
        self.scratch.release_pages();
        self.spares.release_pages();
    }
}
