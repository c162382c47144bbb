//! One connection of the server: a small state machine over a non-blocking socket. It reads
//! the request head, writes the response across as many cycles as the client needs (gzip
//! answers compressed as the socket drains), then half-closes and drains the client before
//! closing, so that unread data never turns into a reset that destroys the answer in flight.

use std::io;
use std::time::{Duration, Instant};

use metrics_prometheus_engine::http::{self, Action};

use crate::host::epoll::{self, Epoll};
use crate::host::fork::Tracked;
use crate::host::{self, net};

use super::budget::Budget;
use super::gzip::{Compressors, Stream};
use super::token::Token;
use super::MAX_CONNS;

/// A connection's whole life: read, write and drain must finish within it.
pub(super) const DEADLINE: Duration = Duration::from_secs(10);
/// Time left to drain a client after the response, before the socket is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes written per connection and cycle.
const WRITE_PER_CYCLE: usize = 4 << 20;
/// A spare buffer larger than this (from a huge scrape) is not kept forever.
const SPARE_BUF_MAX: usize = 8 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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

/// What reading the request head gave.
pub(super) enum Read {
    /// The socket is drained (or the head limit reached) and still open.
    Open,
    /// The client half-closed: a complete head still gets its answer.
    Eof,
    /// A socket error: the connection is closed.
    Failed,
}

pub(super) struct Conn {
    fd: Tracked,
    pub(super) state: State,
    /// The bytes to send: the whole response, or with gzip the head and then each compressed
    /// slice in turn.
    pub(super) buf: Vec<u8>,
    sent: usize,
    /// With gzip: the exposition, compressed a slice at a time as the socket drains.
    pub(super) gzip: Stream,
    pub(super) deadline: Instant,
    /// Accepted over the cap only to be told 503; not counted against it.
    pub(super) refused: bool,
}

/// Buffers and compressors of closed connections, reused so steady scraping allocates nothing.
#[derive(Default)]
pub(super) struct Spares {
    pub(super) bufs: Vec<Vec<u8>>,
    pub(super) compressors: Compressors,
}

impl Spares {
    /// An empty buffer, reused when one is spare.
    pub(super) fn buf(&mut self) -> Vec<u8> {
        let mut buf = self.bufs.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Between scrapes: the spare buffers' pages go back to the kernel (their capacity stays,
    /// so the next scrape allocates nothing for them) and the spare compressors are dropped.
    pub(super) fn release_pages(&mut self) {
        for buf in &mut self.bufs {
            host::alloc::release_pages(buf);
        }
        self.compressors.clear();
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl Conn {
    /// A connection just accepted, reading its request head into `buf`.
    pub(super) fn new(fd: Tracked, buf: Vec<u8>, now: Instant, refused: bool) -> Conn {
        Conn {
            fd,
            state: State::Reading,
            buf,
            sent: 0,
            gzip: Stream::default(),
            deadline: now + super::faults::deadline(DEADLINE),
            refused,
        }
    }

    /// Sets the events the connection's slot waits for; false when epoll refused.
    pub(super) fn wait_for(&self, poller: &Epoll, events: u32, slot: usize) -> bool {
        poller
            .modify(&self.fd, events, Token::Conn(slot).raw())
            .is_ok()
    }

    /// Reads what the client sent, up to the head limit.
    pub(super) fn receive(&mut self) -> Read {
        // A client may send its request and half-close at once: EOF after a complete head still
        // gets its answer; EOF before one just ends the connection.
        loop {
            let room = http::HEAD_LIMIT - self.buf.len().min(http::HEAD_LIMIT);
            if room == 0 {
                return Read::Open;
            }
            match net::recv_append(&self.fd, &mut self.buf, room) {
                Ok(0) => return Read::Eof,
                Ok(_) => {}
                Err(e) if would_block(&e) => return Read::Open,
                Err(e) if interrupted(&e) => {}
                Err(_) => return Read::Failed,
            }
        }
    }

    /// What the client has sent so far.
    pub(super) fn head(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the buffer (for an answer, or the next compressed slice).
    pub(super) fn clear_buf(&mut self) {
        self.buf.clear();
        self.sent = 0;
    }

    /// The answer is in the buffer: write it as the socket allows.
    pub(super) fn start_writing(&mut self, poller: &Epoll, slot: usize) {
        self.state = State::Writing;
        let _ = self.wait_for(poller, epoll::OUT, slot);
    }

    /// Writes as much of the response as the socket takes, compressing the next slice of a
    /// gzip body whenever the last one is out (within the cycle's `budget`); returns false to
    /// close.
    pub(super) fn write(
        &mut self,
        slot: usize,
        now: Instant,
        budget: &mut Budget,
        compressors: &mut Compressors,
        poller: &Epoll,
    ) -> bool {
        if self.state != State::Writing {
            return true;
        }
        let mut left = WRITE_PER_CYCLE;
        loop {
            while self.sent < self.buf.len() && left > 0 {
                let chunk = (self.buf.len() - self.sent).min(left);
                match net::send(&self.fd, &self.buf[self.sent..self.sent + chunk]) {
                    Ok(n) => {
                        self.sent += n;
                        left -= n.min(left);
                    }
                    Err(e) if would_block(&e) => return true,
                    Err(e) if interrupted(&e) => {}
                    Err(_) => return false,
                }
            }
            if self.sent < self.buf.len() {
                return true;
            }
            if !self.gzip.is_active() {
                break;
            }
            // Out of this cycle's compression budget: the socket is writable, so the
            // connection's next event comes with the next cycle.
            if budget.gzip_spent() || left == 0 {
                return true;
            }
            self.clear_buf();
            self.gzip.compress_next(&mut self.buf, budget, compressors);
        }
        // Done: half-close and read what the client still sends, so that closing with unread
        // data does not turn into a reset that could destroy the response in flight.
        net::shutdown_write(&self.fd);
        self.state = State::Draining;
        self.deadline = self.deadline.min(now + LINGER);
        self.wait_for(poller, epoll::IN, slot)
    }

    /// Reads and discards what the client still sends (bounded); returns false to close.
    pub(super) fn drain(&self) -> bool {
        let mut scratch = [0u8; 16 * 1024];
        for _ in 0..4 {
            match net::recv_discard(&self.fd, &mut scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) => return would_block(&e) || interrupted(&e),
            }
        }
        true
    }

    /// Closes the connection, keeping its buffers and compressor in `spares`.
    pub(super) fn close(self, spares: &mut Spares) {
        let (body, gz) = self.gzip.into_parts();
        // Keep buffers for reuse, but not an outsized one from a huge scrape forever.
        for mut buf in [self.buf, body] {
            if buf.capacity() > 0
                && buf.capacity() <= SPARE_BUF_MAX
                && spares.bufs.len() < MAX_CONNS
            {
                buf.clear();
                spares.bufs.push(buf);
            }
        }
        spares.compressors.keep(gz);
        // Dropping the fd closes it, which also removes it from the epoll set.
    }
}
