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
//!   and each has a deadline checked every cycle.
//! - Forked children (workers, mules, spoolers, respawns) close every fd of the server in a
//!   `pthread_atfork` child handler: only the master serves.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::config::{BasicAuth, Cidr, Config, ServerAddr};
use crate::http::{self, Action, Parsed, Status};

/// Connections served at once. Beyond it, the oldest connection still waiting for its request
/// head (or draining) is closed to make room; if all are mid-response, the newcomer gets 503.
pub(crate) const MAX_CONNS: usize = 64;
/// A connection's whole life: read, write and drain must finish within it.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// Time left to drain a client after the response, before the socket is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Per cycle: events handled, connections accepted per listener, bytes written per connection.
const EVENTS_PER_CYCLE: usize = 128;
const ACCEPTS_PER_CYCLE: usize = 64;
const WRITE_PER_CYCLE: usize = 4 << 20;
const MAX_LISTENERS: usize = 16;

/// Every fd this module owns, for the fork child handler (which may not take locks).
static FDS: [AtomicI32; 1 + MAX_LISTENERS + MAX_CONNS] =
    [const { AtomicI32::new(-1) }; 1 + MAX_LISTENERS + MAX_CONNS];

fn fd_slot_set(slot: usize, fd: RawFd) {
    if let Some(s) = FDS.get(slot) {
        s.store(fd, Ordering::Relaxed);
    }
}

extern "C" fn close_fds_in_child() {
    for s in &FDS {
        let fd = s.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was opened by this module in the parent and is owned by nothing else
            // in the child; close() is async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
}

struct Listener {
    fd: RawFd,
    addr: ServerAddr,
    unix_path: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    Writing,
    Draining,
}

struct Conn {
    fd: RawFd,
    state: State,
    buf: Vec<u8>,
    sent: usize,
    deadline: Instant,
}

/// The server state; lives in the master only.
pub(crate) struct Server {
    epfd: RawFd,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    /// Reused buffers of closed connections, so steady scraping allocates nothing.
    spare: Vec<Vec<u8>>,
    registered: bool,
    path: String,
    allow: Vec<Cidr>,
    auth: Option<BasicAuth>,
    index: Vec<u8>,
    values: Vec<i64>,
    body: Vec<u8>,
}

const TOKEN_LISTENER: u64 = 1 << 32;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epfd and fd are open descriptors owned by this module; `ev` lives for the call.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn close(fd: RawFd) {
    // SAFETY: callers pass a descriptor this module opened and forget it afterwards.
    unsafe { libc::close(fd) };
}

fn bind_tcp(host: &str, port: u16) -> io::Result<RawFd> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for sa in (host, port).to_socket_addrs()? {
        // std sets SO_REUSEADDR and SOCK_CLOEXEC on Unix listeners.
        match TcpListener::bind(sa) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(l.into_raw_fd());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// uid and gid for `USER[:GROUP]` (the group defaults to the user's primary group).
fn resolve_owner(user: &str, group: Option<&str>) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let not_found = |what: &str| io::Error::new(io::ErrorKind::NotFound, format!("no {what}"));
    let cuser = std::ffi::CString::new(user).map_err(|_| not_found("such user"))?;
    // SAFETY: getpwnam reads the user database; called once at startup in the master, before
    // any thread of ours exists. The returned record is copied out at once.
    let pw = unsafe { libc::getpwnam(cuser.as_ptr()) };
    if pw.is_null() {
        return Err(not_found(&format!("user '{user}'")));
    }
    // SAFETY: non-NULL record from getpwnam, read before any other NSS call.
    let pw = unsafe { &*pw };
    let (uid, mut gid) = (pw.pw_uid, pw.pw_gid);
    if let Some(g) = group {
        let cgroup = std::ffi::CString::new(g).map_err(|_| not_found("such group"))?;
        // SAFETY: as for getpwnam.
        let gr = unsafe { libc::getgrnam(cgroup.as_ptr()) };
        if gr.is_null() {
            return Err(not_found(&format!("group '{g}'")));
        }
        // SAFETY: non-NULL record from getgrnam.
        gid = unsafe { (*gr).gr_gid };
    }
    Ok((uid, gid))
}

fn bind_unix(
    path: &Path,
    mode: Option<u32>,
    owner: Option<&(String, Option<String>)>,
) -> io::Result<RawFd> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A live server behind it must not be cut off; a stale file (e.g. after SIGKILL)
            // would make bind fail with EADDRINUSE forever.
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some((user, group)) = owner {
        let (uid, gid) = resolve_owner(user, group.as_deref())?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    l.set_nonblocking(true)?;
    Ok(l.into_raw_fd())
}

impl Server {
    /// Binds every address. Called in the master after uWSGI's own sockets are set up and before
    /// the workers are forked.
    pub(crate) fn bind(cfg: &Config) -> Result<Server, String> {
        let (addrs, mode, path) = (&cfg.servers, cfg.server_mode, cfg.path.as_str());
        if addrs.len() > MAX_LISTENERS {
            return Err(format!(
                "at most {MAX_LISTENERS} --prometheus-server addresses"
            ));
        }
        // SAFETY: plain syscall; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        fd_slot_set(0, epfd);
        // From here on every fork closes the server's fds in the child.
        static ATFORK: std::sync::Once = std::sync::Once::new();
        ATFORK.call_once(|| {
            // SAFETY: registers a handler that only closes fds (async-signal-safe).
            unsafe { libc::pthread_atfork(None, None, Some(close_fds_in_child)) };
        });
        let mut server = Server {
            epfd,
            listeners: Vec::new(),
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            spare: Vec::new(),
            registered: false,
            path: path.to_string(),
            allow: cfg.allow.clone(),
            auth: cfg.basic_auth.clone(),
            index: Vec::new(),
            values: Vec::new(),
            body: Vec::new(),
        };
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
                ServerAddr::Tcp { host, port } => (bind_tcp(host, *port), None),
                ServerAddr::Unix(p) => (
                    bind_unix(p, mode, cfg.server_owner.as_ref()),
                    Some(p.clone()),
                ),
            };
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) => {
                    server.shutdown();
                    return Err(format!("--prometheus-server {addr}: cannot listen: {e}"));
                }
            };
            let i = server.listeners.len();
            fd_slot_set(1 + i, fd);
            server.listeners.push(Listener {
                fd,
                addr: addr.clone(),
                unix_path,
            });
            if let Err(e) = epoll_ctl(
                epfd,
                libc::EPOLL_CTL_ADD,
                fd,
                libc::EPOLLIN as u32,
                TOKEN_LISTENER | i as u64,
            ) {
                server.shutdown();
                return Err(format!("--prometheus-server {addr}: epoll: {e}"));
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
                    local_tcp_addr(l.fd).unwrap_or_else(|| l.addr.to_string())
                }
            })
            .collect()
    }

    /// The fd to register in the master's event queue.
    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epfd
    }

    pub(crate) fn mark_registered(&mut self) {
        self.registered = true;
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.registered
    }

    /// One bounded round of work; called from every `master_cycle`.
    pub(crate) fn cycle(&mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_CYCLE];
        // SAFETY: `events` has room for EVENTS_PER_CYCLE entries; timeout 0 never blocks.
        let n =
            unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), EVENTS_PER_CYCLE as i32, 0) };
        let now = Instant::now();
        for ev in events.iter().take(n.max(0) as usize) {
            let token = ev.u64;
            if token & TOKEN_LISTENER != 0 {
                self.accept((token & 0xffff_ffff) as usize, now);
            } else {
                self.drive(token as usize, now);
            }
        }
        for slot in 0..self.conns.len() {
            if self.conns[slot].as_ref().is_some_and(|c| now >= c.deadline) {
                self.close_conn(slot);
            }
        }
    }

    fn accept(&mut self, li: usize, now: Instant) {
        let Some(lfd) = self.listeners.get(li).map(|l| l.fd) else {
            return;
        };
        for _ in 0..ACCEPTS_PER_CYCLE {
            // SAFETY: `lfd` is a listening socket; NULL address pointers are allowed.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                // EAGAIN: drained. Other errors (ECONNABORTED, EMFILE, ...) end this round;
                // level-triggered epoll brings us back next cycle.
                return;
            }
            // A client outside the allow-list gets its 403 through the normal write/drain path
            // (closing at once, with its request unread, would reset the connection and
            // destroy the answer in flight).
            let denied = !self.allow.is_empty()
                && self.listeners[li].unix_path.is_none()
                && !peer_ip(fd).is_some_and(|ip| self.allow.iter().any(|n| n.contains(ip)));
            let free = self.conns.iter().position(Option::is_none);
            let Some(slot) = free.or_else(|| self.evict_idle()) else {
                // Over the cap with every connection mid-response.
                refuse(fd, Status::Unavailable);
                continue;
            };
            if epoll_ctl(
                self.epfd,
                libc::EPOLL_CTL_ADD,
                fd,
                libc::EPOLLIN as u32,
                slot as u64,
            )
            .is_err()
            {
                close(fd);
                continue;
            }
            fd_slot_set(1 + MAX_LISTENERS + slot, fd);
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            self.conns[slot] = Some(Conn {
                fd,
                state: State::Reading,
                buf,
                sent: 0,
                deadline: now + DEADLINE,
            });
            if denied {
                self.respond(slot, Action::Error(Status::Forbidden));
            }
            // Data often arrives with the connection (TCP_DEFER_ACCEPT-like clients, UNIX
            // sockets): try right away instead of waiting for the next cycle.
            self.drive(slot, now);
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
            .filter(|(_, c)| c.state != State::Writing)
            .min_by_key(|(_, c)| c.deadline)
            .map(|(i, _)| i)?;
        self.close_conn(victim);
        Some(victim)
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
            State::Writing => self.write(slot, now),
            State::Draining => self.drain(slot),
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
            let len = c.buf.len();
            c.buf.reserve(room);
            let spare = c.buf.spare_capacity_mut().as_mut_ptr();
            // SAFETY: `spare` has room for at least `room` bytes (reserved above); recv writes at
            // most that many, and set_len below exposes exactly what it wrote.
            let n = unsafe { libc::recv(c.fd, spare.cast(), room, 0) };
            if n == 0 {
                eof = true;
                break;
            }
            if n < 0 {
                let e = errno();
                if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                    break;
                }
                if e == libc::EINTR {
                    continue;
                }
                return false;
            }
            // SAFETY: recv initialised `n` more bytes (n <= room).
            unsafe { c.buf.set_len(len + n as usize) };
        }
        #[cfg(feature = "fault-injection")]
        if c.buf.starts_with(b"GET /__panic ") {
            panic!("fault injection: GET /__panic");
        }
        match http::parse_with_auth(&c.buf, &self.path, self.auth.as_ref()) {
            Parsed::Partial => !eof,
            Parsed::Done(action) => {
                self.respond(slot, action);
                let now = Instant::now();
                self.write(slot, now)
            }
        }
    }

    fn respond(&mut self, slot: usize, action: Action) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        c.buf.clear();
        match action {
            Action::Metrics { fmt, head } => {
                match crate::scrape::render(fmt, &mut self.values, &mut self.body) {
                    Ok(()) => http::write_response(
                        &mut c.buf,
                        Status::Ok,
                        fmt.content_type(),
                        "",
                        &self.body,
                        head,
                    ),
                    Err(msg) => http::write_response(
                        &mut c.buf,
                        Status::Unavailable,
                        "text/plain; charset=utf-8",
                        "",
                        msg.as_bytes(),
                        head,
                    ),
                }
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
        c.sent = 0;
        let _ = epoll_ctl(
            self.epfd,
            libc::EPOLL_CTL_MOD,
            c.fd,
            libc::EPOLLOUT as u32,
            slot as u64,
        );
    }

    /// Writes as much of the response as the socket takes; returns false to close.
    fn write(&mut self, slot: usize, now: Instant) -> bool {
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        let mut budget = WRITE_PER_CYCLE;
        while c.sent < c.buf.len() && budget > 0 {
            let chunk = (c.buf.len() - c.sent).min(budget);
            let pending = &c.buf[c.sent..c.sent + chunk];
            // SAFETY: `pending` is live for the call; MSG_NOSIGNAL keeps a closed peer from
            // raising SIGPIPE in the master.
            let n = unsafe {
                libc::send(
                    c.fd,
                    pending.as_ptr().cast(),
                    pending.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = errno();
                if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                    return true;
                }
                if e == libc::EINTR {
                    continue;
                }
                return false;
            }
            c.sent += n as usize;
            budget -= (n as usize).min(budget);
        }
        if c.sent < c.buf.len() {
            return true;
        }
        // Done: half-close and read what the client still sends, so that closing with unread
        // data does not turn into a reset that could destroy the response in flight.
        // SAFETY: `c.fd` is an open socket.
        unsafe { libc::shutdown(c.fd, libc::SHUT_WR) };
        c.state = State::Draining;
        c.deadline = c.deadline.min(now + LINGER);
        epoll_ctl(
            self.epfd,
            libc::EPOLL_CTL_MOD,
            c.fd,
            libc::EPOLLIN as u32,
            slot as u64,
        )
        .is_ok()
    }

    fn drain(&mut self, slot: usize) -> bool {
        let Some(c) = self.conns[slot].as_ref() else {
            return false;
        };
        let mut scratch = [0u8; 16 * 1024];
        for _ in 0..4 {
            // SAFETY: `scratch` is writable for its whole length.
            let n = unsafe { libc::recv(c.fd, scratch.as_mut_ptr().cast(), scratch.len(), 0) };
            if n == 0 {
                return false;
            }
            if n < 0 {
                let e = errno();
                return e == libc::EAGAIN || e == libc::EWOULDBLOCK || e == libc::EINTR;
            }
        }
        true
    }

    fn close_conn(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::take) {
            fd_slot_set(1 + MAX_LISTENERS + slot, -1);
            // Closing also removes it from the epoll set.
            close(c.fd);
            let mut buf = c.buf;
            // Keep buffers for reuse, but not an outsized one from a huge scrape forever.
            if buf.capacity() <= (8 << 20) && self.spare.len() < MAX_CONNS {
                buf.clear();
                self.spare.push(buf);
            }
        }
    }

    /// Closes everything and removes UNIX socket files (master shutdown and reload).
    pub(crate) fn shutdown(&mut self) {
        for slot in 0..self.conns.len() {
            self.close_conn(slot);
        }
        for (i, l) in self.listeners.drain(..).enumerate() {
            fd_slot_set(1 + i, -1);
            close(l.fd);
            if let Some(p) = l.unix_path {
                let _ = std::fs::remove_file(p);
            }
        }
        if self.epfd >= 0 {
            fd_slot_set(0, -1);
            close(self.epfd);
            self.epfd = -1;
        }
    }

    /// Open connections (for tests of the cap and the fd accounting).
    #[allow(dead_code)]
    pub(crate) fn open_conns(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }
}

/// Answers a just-accepted connection with one best-effort error response, never waiting for
/// the client, and closes it.
fn refuse(fd: RawFd, status: Status) {
    let mut out = Vec::new();
    http::write_error(&mut out, status, false);
    // SAFETY: `fd` is the socket just accepted; `out` is live for the call.
    unsafe {
        libc::send(
            fd,
            out.as_ptr().cast(),
            out.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    close(fd);
}

fn peer_ip(fd: RawFd) -> Option<std::net::IpAddr> {
    sockaddr_of(fd, true).map(|(ip, _)| ip)
}

fn local_tcp_addr(fd: RawFd) -> Option<String> {
    sockaddr_of(fd, false).map(|(ip, port)| std::net::SocketAddr::new(ip, port).to_string())
}

/// The peer's (`peer`) or the local address of a TCP socket.
fn sockaddr_of(fd: RawFd, peer: bool) -> Option<(std::net::IpAddr, u16)> {
    let mut ss: libc::sockaddr_storage = unsafe_zeroed_storage();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let r = if peer {
        // SAFETY: `ss` is large enough for any address; `len` says so.
        unsafe { libc::getpeername(fd, (&raw mut ss).cast(), &mut len) }
    } else {
        // SAFETY: as above.
        unsafe { libc::getsockname(fd, (&raw mut ss).cast(), &mut len) }
    };
    if r < 0 {
        return None;
    }
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says `ss` holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some((ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says `ss` holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some((ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

fn unsafe_zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
