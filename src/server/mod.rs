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
//!
//! [`Server`] binds, runs the cycle, accepts and shuts down; the units it drives: `conn` (one
//! connection's states and socket I/O), `answer` (what a request is answered with), `budget`
//! (each cycle's render window and compression budget), `gzip` (a gzip answer streamed as the
//! socket drains), `gather` (the Emperor's fetches of its vassals' expositions), `token` (the
//! epoll tokens) and `faults` (the hooks of the test-only `fault-injection` build).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use metrics_prometheus_engine::config::{Cidr, Config, ServerAddr};
use metrics_prometheus_engine::http::{Action, Parsed, Status};

use crate::host::epoll::{self, Epoll, Event};
use crate::host::fork::{self, Tracked};
use crate::host::{self, net};
use crate::scrape::Exposition;

mod answer;
mod budget;
mod conn;
mod faults;
mod gather;
mod gzip;
mod token;

use answer::{Respond, Responder};
use conn::{Conn, Read, State};
use gather::Gather;
use token::Token;

/// Connections served at once. Beyond it, the oldest connection still waiting for its request
/// head (or draining) is closed to make room; if all are mid-response, the newcomer gets 503.
const MAX_CONNS: usize = 64;
/// Connections over the cap being told 503: they are drained like any other, so the answer
/// reaches the client instead of being destroyed by a reset. Beyond these, a newcomer is closed
/// at once.
const OVERFLOW: usize = 16;
/// Per cycle: events handled, connections accepted per listener. (Bytes written per
/// connection: `conn`; renders and compression: `budget`.)
const EVENTS_PER_CYCLE: usize = 128;
const ACCEPTS_PER_CYCLE: usize = 64;
const MAX_LISTENERS: usize = 16;
/// After this long without a connection, the server gives its buffers' pages back to the
/// kernel and drops its spare compressors ([`Server::release_memory`]): about 1 MB at 16 x 32
/// that would otherwise stay in the master between scrapes. Scrapes closer together than this
/// (a benchmark's loop) keep everything; one every 15 s faults its pages in again and
/// allocates a compressor for gzip.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

// The fork table has room for every fd of the server: slot 0 the epoll fd, then the
// listeners, then the connections.
const _: () = assert!(fork::SLOTS >= 1 + MAX_LISTENERS + MAX_CONNS + OVERFLOW);
const LISTENER_SLOT_BASE: usize = 1;
const CONN_SLOT_BASE: usize = 1 + MAX_LISTENERS;

struct Listener {
    fd: Tracked,
    addr: ServerAddr,
    unix_path: Option<PathBuf>,
}

/// The server state; lives in the master only.
pub(crate) struct Server {
    poller: Epoll,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    registered: bool,
    allow: Vec<Cidr>,
    /// Answering requests: the render scratch, this cycle's budget, the spare buffers.
    answers: Responder,
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
            registered: false,
            allow: cfg.allow.clone(),
            answers: Responder::new(cfg, source),
            gather: None,
            last_busy: Instant::now(),
            released: true,
        };
        if let (Exposition::Emperor, Some(pattern)) = (source, cfg.vassal_socket.as_deref()) {
            let g = Gather::new(pattern, &cfg.path, cfg.vassal_timeout_ms, &server.poller)
                .map_err(BindError::Epoll)?;
            server.gather = Some(g);
        }
        for addr in addrs {
            if let Err(e) = server.listen(addr, cfg) {
                server.shutdown();
                return Err(BindError::Listen(addr.clone(), e));
            }
        }
        Ok(server)
    }

    /// Binds one listener and adds it to the epoll set.
    fn listen(&mut self, addr: &ServerAddr, cfg: &Config) -> io::Result<()> {
        let (fd, unix_path) = match addr {
            ServerAddr::Tcp { host, port } => (net::bind_tcp(host, *port)?, None),
            ServerAddr::Unix(p) => (
                net::bind_unix(p, cfg.server_mode, cfg.server_owner.as_ref())?,
                Some(p.clone()),
            ),
        };
        let index = self.listeners.len();
        let fd = Tracked::new(fd, LISTENER_SLOT_BASE + index);
        let added = self
            .poller
            .add(&fd, epoll::IN, Token::Listener(index).raw());
        // Kept even when epoll refused it, so that shutdown removes its socket file.
        self.listeners.push(Listener {
            fd,
            addr: addr.clone(),
            unix_path,
        });
        added
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
        self.answers.renew(now);
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

    /// Between scrapes: the buffers' pages go back to the kernel, the spare compressors are
    /// dropped, and the heap's free pages are returned.
    fn release_memory(&mut self) {
        self.released = true;
        self.answers.release_pages();
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
            let fd = Tracked::new(fd, CONN_SLOT_BASE + slot);
            let buf = self.answers.spares.buf();
            self.conns[slot] = Some(Conn::new(fd, buf, now, refused));
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

    /// One step of the connection in `slot`, from the state it is in.
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
            State::Draining => self.conns[slot].as_ref().is_some_and(Conn::drain),
            // Registered for no event: only a hang-up or an error brings it here.
            State::Waiting(_) => false,
        };
        if !keep {
            self.close_conn(slot);
        }
    }

    /// Reads what the client sent and answers a complete head; returns false to close.
    fn read_head(&mut self, slot: usize) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        let eof = match c.receive() {
            Read::Open => false,
            Read::Eof => true,
            Read::Failed => return false,
        };
        faults::on_head(c.head());
        match self.answers.parse(c.head()) {
            Parsed::Partial => !eof,
            Parsed::Done(action) => !self.respond(slot, action) || self.write(slot, Instant::now()),
        }
    }

    /// Prepares the answer to `action`; returns whether it is ready to write (a scrape may
    /// wait for the render budget or for the vassals instead).
    fn respond(&mut self, slot: usize, action: Action) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        let gathering = self.gather.is_some();
        match self
            .answers
            .respond(c, slot, action, gathering, &self.poller)
        {
            Respond::Ready => true,
            Respond::Deferred => false,
            Respond::Gather => {
                self.advance_gather(Instant::now());
                false
            }
        }
    }

    /// Writes what the connection's socket takes; returns false to close.
    fn write(&mut self, slot: usize, now: Instant) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        let answers = &mut self.answers;
        c.write(
            slot,
            now,
            &mut answers.budget,
            &mut answers.spares.compressors,
            &self.poller,
        )
    }

    fn close_conn(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::take) {
            c.close(&mut self.answers.spares);
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
