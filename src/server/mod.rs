//! Front end 2: `--prometheus-server`, served by the uWSGI master without ever blocking it.
//!
//! - The listeners are bound in the master's `post_init` hook (so a bind failure stops startup) and
//!   added, with every connection, to a private epoll instance. That one epoll fd is registered
//!   in `uwsgi.master_queue` at the first `master_cycle`: a client wakes the master at once,
//!   uWSGI's event dispatcher ignores the unknown fd, and the loop calls `master_cycle` again
//!   right away, where [`Server::cycle`] does the work.
//! - Every socket is non-blocking; each connection is a small state machine (read the head,
//!   write the response across as many cycles as the client needs, half-close and drain).
//! - Work per cycle is bounded (events, accepts, bytes per connection), connections are capped,
//!   and each has a deadline checked every cycle. A panic while handling one connection closes
//!   that connection only.
//! - Forked children (workers, mules, spoolers, respawns) close every fd of the server (the
//!   plugin's fork handler calls `host::fork::close_all_in_child`): only the master serves.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use metrics_prometheus_engine::compress;
use metrics_prometheus_engine::config::{Cidr, Config, ServerAddr};
use metrics_prometheus_engine::format::Format;
use metrics_prometheus_engine::http::{self, Action, BasicAuth, Parsed, Status};

use crate::host::epoll::{self, Epoll, Event};
use crate::host::fork::{self, Tracked};
use crate::host::{self, net};
use crate::scrape::{self, Exposition, ScrapeError, Scratch};

mod budget;
mod faults;
mod gather;
mod gzip;
mod token;

use budget::Budget;
use gather::Gather;
use gzip::{Compressors, Stream};
use token::Token;

/// Connections served at once. Beyond it, the oldest connection still waiting for its request
/// head (or draining) is closed to make room; if all are mid-response, the newcomer gets 503.
pub(crate) const MAX_CONNS: usize = 64;
/// Connections over the cap being told 503: they are drained like any other, so the answer
/// reaches the client instead of being destroyed by a reset. Beyond these, a newcomer is closed
/// at once.
const OVERFLOW: usize = 16;
/// A connection's whole life: read, write and drain must finish within it.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// Time left to drain a client after the response, before the socket is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Per cycle: events handled, connections accepted per listener, bytes written per connection.
const EVENTS_PER_CYCLE: usize = 128;
const ACCEPTS_PER_CYCLE: usize = 64;
const WRITE_PER_CYCLE: usize = 4 << 20;
const MAX_LISTENERS: usize = 16;
/// After this long without a connection, the server gives its buffers' pages back to the
/// kernel and drops its spare compressors ([`Server::release_memory`]): about 1 MB at 16 x 32
/// that would otherwise stay in the master between scrapes. Scrapes closer together than this
/// (a benchmark's loop) keep everything; one every 15 s faults its pages in again and
/// allocates a compressor for gzip.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

// The fork table has room for every fd of the server.
const _: () = assert!(fork::SLOTS >= 1 + MAX_LISTENERS + MAX_CONNS + OVERFLOW);
const CONN_SLOT_BASE: usize = 1 + MAX_LISTENERS;

struct Listener {
    fd: Tracked,
    addr: ServerAddr,
    unix_path: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// The request is read; its scrape waits for this cycle's render budget
    /// ([`Budget::may_render`]). Registered for writability, so the next cycle comes at once.
    Pending(Action),
    Writing,
    Draining,
    /// The request is read; its scrape waits for the vassals' expositions (the Emperor's
    /// server with `--prometheus-vassal-socket`). Registered for no event but hang-ups.
    Waiting(Action),
}

struct Conn {
    fd: Tracked,
    state: State,
    /// The bytes to send: the whole response, or with gzip the head and then each compressed
    /// slice in turn.
    buf: Vec<u8>,
    sent: usize,
    /// With gzip: the exposition, compressed a slice at a time as the socket drains.
    gzip: Stream,
    deadline: Instant,
    /// Accepted over the cap only to be told 503; not counted against it.
    refused: bool,
}

/// The server state; lives in the master only.
pub(crate) struct Server {
    poller: Epoll,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    /// Reused buffers of closed connections, so steady scraping allocates nothing.
    spare: Vec<Vec<u8>>,
    registered: bool,
    path: String,
    allow: Vec<Cidr>,
    auth: Option<BasicAuth>,
    index: Vec<u8>,
    scratch: Scratch,
    /// `--prometheus-no-gzip` not given.
    gzip: bool,
    spare_gzips: Compressors,
    budget: Budget,
    /// What the metrics path serves.
    source: Exposition,
    /// The vassals' expositions, when the Emperor's server merges them.
    gather: Option<Gather>,
    /// The last cycle with a connection or an event, and whether the memory was released
    /// since ([`IDLE_RELEASE`]).
    last_busy: Instant,
    released: bool,
}

/// Why `--prometheus-server` could not start; startup stops with this message.
#[derive(Debug)]
pub(crate) enum BindError {
    TooMany,
    Epoll(io::Error),
    Listen(ServerAddr, io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::TooMany => {
                write!(f, "at most {MAX_LISTENERS} --prometheus-server addresses")
            }
            BindError::Epoll(e) => write!(f, "--prometheus-server: epoll: {e}"),
            BindError::Listen(addr, e) => {
                write!(f, "--prometheus-server {addr}: cannot listen: {e}")
            }
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl Server {
    /// Binds every address of `--prometheus-server`. Called in the master after uWSGI's own
    /// sockets are set up and before the workers are forked. `atfork_child` is the plugin's
    /// fork handler, installed once.
    pub(crate) fn bind(
        cfg: &Config,
        atfork_child: unsafe extern "C" fn(),
    ) -> Result<Server, BindError> {
        Self::bind_source(cfg, &cfg.servers, Exposition::Instance, atfork_child)
    }

    /// Binds `addrs` serving `source`, with every other setting (path, access control, gzip,
    /// socket mode) from `cfg`. One server per process: the fd slots of the fork table are
    /// fixed.
    pub(crate) fn bind_source(
        cfg: &Config,
        addrs: &[ServerAddr],
        source: Exposition,
        atfork_child: unsafe extern "C" fn(),
    ) -> Result<Server, BindError> {
        let (mode, path) = (cfg.server_mode, cfg.path.as_str());
        if addrs.len() > MAX_LISTENERS {
            return Err(BindError::TooMany);
        }
        let poller = Epoll::new(0).map_err(BindError::Epoll)?;
        // From here on every fork closes the server's fds in the child.
        fork::install_atfork(atfork_child);
        let mut server = Server {
            poller,
            listeners: Vec::new(),
            conns: (0..MAX_CONNS + OVERFLOW).map(|_| None).collect(),
            spare: Vec::new(),
            registered: false,
            path: path.to_string(),
            allow: cfg.allow.clone(),
            auth: cfg.basic_auth.clone(),
            index: Vec::new(),
            scratch: Scratch::default(),
            gzip: cfg.gzip,
            spare_gzips: Compressors::default(),
            budget: Budget::new(Instant::now()),
            source,
            gather: None,
            last_busy: Instant::now(),
            released: true,
        };
        if let (Exposition::Emperor, Some(pattern)) = (source, cfg.vassal_socket.as_deref()) {
            let g = Gather::new(pattern, path, cfg.vassal_timeout_ms, &server.poller)
                .map_err(BindError::Epoll)?;
            server.gather = Some(g);
        }
        let index = http::index_page(path);
        http::write_response(
            &mut server.index,
            Status::Ok,
            "text/html; charset=utf-8",
            "",
            index.as_bytes(),
            false,
        );
        for addr in addrs {
            let (fd, unix_path) = match addr {
                ServerAddr::Tcp { host, port } => (net::bind_tcp(host, *port), None),
                ServerAddr::Unix(p) => (
                    net::bind_unix(p, mode, cfg.server_owner.as_ref()),
                    Some(p.clone()),
                ),
            };
            let fd = match fd {
                Ok(fd) => Tracked::new(fd, 1 + server.listeners.len()),
                Err(e) => {
                    server.shutdown();
                    return Err(BindError::Listen(addr.clone(), e));
                }
            };
            let token = Token::Listener(server.listeners.len()).raw();
            let added = server.poller.add(&fd, epoll::IN, token);
            server.listeners.push(Listener {
                fd,
                addr: addr.clone(),
                unix_path,
            });
            if let Err(e) = added {
                server.shutdown();
                return Err(BindError::Listen(addr.clone(), e));
            }
        }
        Ok(server)
    }

    /// The bound addresses, for the startup log (with the port the kernel chose for `:0`).
    pub(crate) fn describe(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| match &l.addr {
                ServerAddr::Unix(p) => p.display().to_string(),
                ServerAddr::Tcp { .. } => {
                    net::local_addr(&l.fd).map_or_else(|| l.addr.to_string(), |a| a.to_string())
                }
            })
            .collect()
    }

    /// The fd to register in the master's event queue.
    pub(crate) fn epoll_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.poller.as_raw_fd()
    }

    pub(crate) fn mark_registered(&mut self) {
        self.registered = true;
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.registered
    }

    /// One bounded round of work; called from every `master_cycle`.
    pub(crate) fn cycle(&mut self) {
        let mut events = [Event { events: 0, u64: 0 }; EVENTS_PER_CYCLE];
        let n = self.poller.poll(&mut events).len();
        let tokens = || events[..n].iter().filter_map(|e| Token::from_raw(e.u64));
        let now = Instant::now();
        self.budget.renew(now);
        // Vassal answers first (they may complete a round), then connections: a client that
        // went away frees its slot before newcomers are counted against the cap.
        if let Some(g) = self.gather.as_mut() {
            for token in tokens() {
                match token {
                    Token::Vassal(i) => g.event(i, &self.poller),
                    Token::Timer => g.timer_event(),
                    Token::Conn(_) | Token::Listener(_) => {}
                }
            }
        }
        for token in tokens() {
            if let Token::Conn(slot) = token {
                self.drive_guarded(slot, now);
            }
        }
        for token in tokens() {
            if let Token::Listener(li) = token {
                self.accept(li, now);
            }
        }
        self.advance_gather(Instant::now());
        for slot in 0..self.conns.len() {
            if self.conns[slot].as_ref().is_some_and(|c| now >= c.deadline) {
                self.close_conn(slot);
            }
        }
        if n > 0 || self.conns.iter().any(Option::is_some) {
            self.last_busy = now;
            self.released = false;
        } else if !self.released && now.duration_since(self.last_busy) >= IDLE_RELEASE {
            self.release_memory();
        }
    }

    /// Between scrapes: the pages of the render buffer and of the spare connection buffers go
    /// back to the kernel (their capacity stays, so the next scrape allocates nothing for
    /// them), the spare compressors are dropped, and the heap's free pages are returned.
    fn release_memory(&mut self) {
        self.released = true;
        self.scratch.release_pages();
        for buf in &mut self.spare {
            host::alloc::release_pages(buf);
        }
        self.spare_gzips.clear();
        host::release_free_memory();
    }

    fn active(&self) -> usize {
        self.conns.iter().flatten().filter(|c| !c.refused).count()
    }

    fn free_slot(&self) -> Option<usize> {
        self.conns.iter().position(Option::is_none)
    }

    fn accept(&mut self, li: usize, now: Instant) {
        let Some(listener) = self.listeners.get(li) else {
            return;
        };
        let unix = listener.unix_path.is_some();
        for _ in 0..ACCEPTS_PER_CYCLE {
            // EAGAIN: drained. Other errors (ECONNABORTED, EMFILE, ...) end this round;
            // level-triggered epoll brings us back next cycle.
            let Ok(fd) = net::accept(&self.listeners[li].fd) else {
                return;
            };
            // A client outside the allow-list gets its 403 through the normal write/drain path
            // (closing at once, with its request unread, would reset the connection and
            // destroy the answer in flight).
            let denied = !self.allow.is_empty()
                && !unix
                && !net::peer_ip(&fd).is_some_and(|ip| self.allow.iter().any(|n| n.contains(ip)));
            let slot = if self.active() < MAX_CONNS {
                self.free_slot()
            } else {
                self.evict_idle()
            };
            let (slot, refused) = match slot {
                Some(s) => (s, false),
                // Over the cap with every connection mid-response: 503, drained like any other
                // answer so that it reaches the client. No room even for that: closed.
                None => match self.free_slot() {
                    Some(s) => (s, true),
                    None => continue,
                },
            };
            if self
                .poller
                .add(&fd, epoll::IN, Token::Conn(slot).raw())
                .is_err()
            {
                continue;
            }
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            self.conns[slot] = Some(Conn {
                fd: Tracked::new(fd, CONN_SLOT_BASE + slot),
                state: State::Reading,
                buf,
                sent: 0,
                gzip: Stream::default(),
                deadline: now + DEADLINE,
                refused,
            });
            if refused {
                self.respond(slot, Action::Error(Status::Unavailable));
            } else if denied {
                self.respond(slot, Action::Error(Status::Forbidden));
            }
            // Data often arrives with the connection (TCP_DEFER_ACCEPT-like clients, UNIX
            // sockets): try right away instead of waiting for the next cycle.
            self.drive_guarded(slot, now);
        }
    }

    /// At the cap, the connection that has waited longest without completing a request head
    /// makes room: idle or trickling clients cannot lock out a real scrape.
    fn evict_idle(&mut self) -> Option<usize> {
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| !c.refused && matches!(c.state, State::Reading | State::Draining))
            .min_by_key(|(_, c)| c.deadline)
            .map(|(i, _)| i)?;
        self.close_conn(victim);
        Some(victim)
    }

    /// [`Server::drive`], where a panic closes this connection only; the cycle goes on with
    /// the others (the panic hook has logged where it happened).
    fn drive_guarded(&mut self, slot: usize, now: Instant) {
        if catch_unwind(AssertUnwindSafe(|| self.drive(slot, now))).is_err() {
            host::log("--prometheus-server: a panic while handling a connection; it was closed");
            self.close_conn(slot);
        }
    }

    fn drive(&mut self, slot: usize, now: Instant) {
        let Some(state) = self
            .conns
            .get(slot)
            .and_then(|c| c.as_ref())
            .map(|c| c.state)
        else {
            return;
        };
        let keep = match state {
            State::Reading => self.read_head(slot),
            State::Pending(action) => !self.respond(slot, action) || self.write(slot, now),
            State::Writing => self.write(slot, now),
            State::Draining => self.drain(slot),
            // Registered for no event: only a hang-up or an error brings it here.
            State::Waiting(_) => false,
        };
        if !keep {
            self.close_conn(slot);
        }
    }

    /// Reads what the client sent; returns false to close.
    fn read_head(&mut self, slot: usize) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        // A client may send its request and half-close at once: EOF after a complete head still
        // gets its answer; EOF before one just ends the connection.
        let mut eof = false;
        loop {
            let room = http::HEAD_LIMIT - c.buf.len().min(http::HEAD_LIMIT);
            if room == 0 {
                break;
            }
            match net::recv_append(&c.fd, &mut c.buf, room) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(_) => return false,
            }
        }
        faults::on_head(&c.buf);
        match http::parse_with_auth(&c.buf, &self.path, self.auth.as_ref()) {
            Parsed::Partial => !eof,
            Parsed::Done(action) => !self.respond(slot, action) || self.write(slot, Instant::now()),
        }
    }

    /// Prepares the answer to `action`. A scrape over this cycle's render budget is deferred
    /// (the connection turns [`State::Pending`]); returns whether the answer is ready to write.
    fn respond(&mut self, slot: usize, action: Action) -> bool {
        let render_now = self.budget.may_render();
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        if matches!(action, Action::Metrics { .. }) && self.gather.is_some() {
            c.state = State::Waiting(action);
            let _ = self.poller.modify(&c.fd, 0, Token::Conn(slot).raw());
            self.advance_gather(Instant::now());
            return false;
        }
        if matches!(action, Action::Metrics { .. }) && !render_now {
            if c.state != State::Pending(action) {
                c.state = State::Pending(action);
                let _ = self
                    .poller
                    .modify(&c.fd, epoll::OUT, Token::Conn(slot).raw());
            }
            return false;
        }
        c.buf.clear();
        c.sent = 0;
        match action {
            Action::Metrics { fmt, head, gzip } => {
                self.budget.rendering();
                let (rendered, allocations) = faults::counting_allocations(|| {
                    scrape::render_source(self.source, fmt, &mut self.scratch)
                });
                return self.answer(slot, fmt, head, gzip, rendered, allocations);
            }
            Action::Index { head } => {
                if head {
                    let end = self
                        .index
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 4);
                    c.buf.extend_from_slice(&self.index[..end]);
                } else {
                    c.buf.extend_from_slice(&self.index);
                }
            }
            Action::Error(status) => http::write_error(&mut c.buf, status, false),
        }
        c.state = State::Writing;
        let _ = self
            .poller
            .modify(&c.fd, epoll::OUT, Token::Conn(slot).raw());
        true
    }

    /// Ends a finished round of the vassals' expositions (answering every connection waiting
    /// for its format), then starts the next one for the connections still waiting.
    fn advance_gather(&mut self, now: Instant) {
        let Some(g) = self.gather.as_mut() else {
            return;
        };
        if g.finished(now) {
            if let Some(fmt) = g.finish(&mut self.scratch) {
                for slot in 0..self.conns.len() {
                    let waiting = match self.conns[slot].as_ref().map(|c| c.state) {
                        Some(State::Waiting(Action::Metrics { fmt: f, head, gzip }))
                            if gather::merged_format(f) == fmt =>
                        {
                            Some((head, gzip))
                        }
                        _ => None,
                    };
                    if let Some((head, gzip)) = waiting {
                        let ready = self.answer(slot, fmt, head, gzip, Ok(()), 0);
                        if !ready || !self.write(slot, now) {
                            self.close_conn(slot);
                        }
                    }
                }
            }
        }
        let Some(g) = self.gather.as_mut() else {
            return;
        };
        if g.busy().is_none() {
            let next = self.conns.iter().flatten().find_map(|c| match c.state {
                State::Waiting(Action::Metrics { fmt, .. }) => Some(gather::merged_format(fmt)),
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

    /// Writes the answer to a scrape whose exposition is in `self.scratch.out` (or failed)
    /// into the connection's buffer; returns whether it is ready to write.
    fn answer(
        &mut self,
        slot: usize,
        fmt: Format,
        head: bool,
        gzip: bool,
        rendered: Result<(), ScrapeError>,
        allocations: u64,
    ) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        c.buf.clear();
        c.sent = 0;
        let vary = if self.gzip { http::VARY } else { "" };
        let (fault, extra) = faults::scrape_headers(vary, allocations);
        match rendered {
            Ok(()) if gzip && self.gzip && self.scratch.out.len() >= compress::MIN_SIZE => {
                http::write_gzip_head(&mut c.buf, fmt.content_type(), &fault);
                if !head {
                    c.gzip.start(
                        &self.scratch.out,
                        &mut c.buf,
                        &mut self.spare,
                        &mut self.spare_gzips,
                    );
                }
            }
            Ok(()) => http::write_response(
                &mut c.buf,
                Status::Ok,
                fmt.content_type(),
                &extra,
                &self.scratch.out,
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
        c.state = State::Writing;
        let _ = self
            .poller
            .modify(&c.fd, epoll::OUT, Token::Conn(slot).raw());
        true
    }

    /// Writes as much of the response as the socket takes, compressing the next slice of a
    /// gzip body whenever the last one is out; returns false to close.
    fn write(&mut self, slot: usize, now: Instant) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        if c.state != State::Writing {
            return true;
        }
        let mut budget = WRITE_PER_CYCLE;
        loop {
            while c.sent < c.buf.len() && budget > 0 {
                let chunk = (c.buf.len() - c.sent).min(budget);
                match net::send(&c.fd, &c.buf[c.sent..c.sent + chunk]) {
                    Ok(n) => {
                        c.sent += n;
                        budget -= n.min(budget);
                    }
                    Err(e) if would_block(&e) => return true,
                    Err(e) if interrupted(&e) => {}
                    Err(_) => return false,
                }
            }
            if c.sent < c.buf.len() {
                return true;
            }
            if !c.gzip.is_active() {
                break;
            }
            // Out of this cycle's compression budget: the socket is writable, so the
            // connection's next event comes with the next cycle.
            if self.budget.gzip_spent() || budget == 0 {
                return true;
            }
            c.buf.clear();
            c.sent = 0;
            c.gzip
                .compress_next(&mut c.buf, &mut self.budget, &mut self.spare_gzips);
        }
        // Done: half-close and read what the client still sends, so that closing with unread
        // data does not turn into a reset that could destroy the response in flight.
        net::shutdown_write(&c.fd);
        c.state = State::Draining;
        c.deadline = c.deadline.min(now + LINGER);
        self.poller
            .modify(&c.fd, epoll::IN, Token::Conn(slot).raw())
            .is_ok()
    }

    fn drain(&mut self, slot: usize) -> bool {
        let Some(c) = self.conns[slot].as_ref() else {
            return false;
        };
        let mut scratch = [0u8; 16 * 1024];
        for _ in 0..4 {
            match net::recv_discard(&c.fd, &mut scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) => return would_block(&e) || interrupted(&e),
            }
        }
        true
    }

    fn close_conn(&mut self, slot: usize) {
        // Dropping the fd closes it, which also removes it from the epoll set.
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::take) {
            let (body, gz) = c.gzip.into_parts();
            // Keep buffers for reuse, but not an outsized one from a huge scrape forever.
            for mut buf in [c.buf, body] {
                if buf.capacity() > 0 && buf.capacity() <= (8 << 20) && self.spare.len() < MAX_CONNS
                {
                    buf.clear();
                    self.spare.push(buf);
                }
            }
            self.spare_gzips.keep(gz);
        }
    }

    /// Closes everything and removes UNIX socket files (master shutdown and reload).
    pub(crate) fn shutdown(&mut self) {
        for slot in 0..self.conns.len() {
            self.close_conn(slot);
        }
        for l in self.listeners.drain(..) {
            if let Some(p) = l.unix_path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
