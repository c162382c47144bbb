//! Non-blocking sockets for the dedicated server, as `OwnedFd`s (closed on drop).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// A non-blocking, close-on-exec TCP listener on the first address `host` resolves to that
/// binds (std sets SO_REUSEADDR on Unix listeners).
pub(crate) fn bind_tcp(host: &str, port: u16) -> io::Result<OwnedFd> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for sa in (host, port).to_socket_addrs()? {
        match TcpListener::bind(sa) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(l.into());
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

/// A non-blocking UNIX listener at `path`, replacing a stale socket file (not a live one),
/// with the given mode and owner.
pub(crate) fn bind_unix(
    path: &Path,
    mode: Option<u32>,
    owner: Option<&(String, Option<String>)>,
) -> io::Result<OwnedFd> {
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
    Ok(l.into())
}

/// Accepts one connection, non-blocking and close-on-exec. `Err(WouldBlock)` when none waits.
pub(crate) fn accept(listener: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: a listening socket; NULL address pointers are allowed.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives at most `max` bytes, appended to `buf`. `Ok(0)` is end of stream.
pub(crate) fn recv_append(fd: &impl AsRawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let len = buf.len();
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(max);
    // SAFETY: `spare` has room for `room` bytes; recv writes at most that many.
    let n = unsafe { libc::recv(fd.as_raw_fd(), spare.as_mut_ptr().cast(), room, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised `n` more bytes (n <= room).
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

/// Receives into `scratch` and discards. `Ok(0)` is end of stream.
pub(crate) fn recv_discard(fd: &impl AsRawFd, scratch: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `scratch` is writable for its whole length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            scratch.as_mut_ptr().cast(),
            scratch.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends without blocking and without SIGPIPE.
pub(crate) fn send(fd: &impl AsRawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is live for the call; MSG_NOSIGNAL keeps a closed peer from raising SIGPIPE
    // in the master.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Half-closes: no more data from us, the client may still send.
pub(crate) fn shutdown_write(fd: &impl AsRawFd) {
    // SAFETY: an open socket; failure (already closed by the peer) changes nothing.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}

/// The address of the peer of a TCP socket.
pub(crate) fn peer_ip(fd: &impl AsRawFd) -> Option<IpAddr> {
    sockaddr_of(fd, true).map(|sa| sa.ip())
}

/// The local address of a TCP socket (the port the kernel chose for `:0`).
pub(crate) fn local_addr(fd: &impl AsRawFd) -> Option<SocketAddr> {
    sockaddr_of(fd, false)
}

fn sockaddr_of(fd: &impl AsRawFd, peer: bool) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let get = if peer {
        libc::getpeername
    } else {
        libc::getsockname
    };
    // SAFETY: `ss` is large enough for any address; `len` says so.
    if unsafe { get(fd.as_raw_fd(), (&raw mut ss).cast(), &mut len) } < 0 {
        return None;
    }
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says `ss` holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says `ss` holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// `(queue, backlog limit)` of a listening TCP socket, as uWSGI's master reads them.
pub(crate) fn tcp_listen_queue(fd: i32) -> Option<(u32, u32)> {
    if fd < 0 {
        return None;
    }
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut ti: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `ti` is writable for `len` bytes; a non-TCP fd just fails.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut ti).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // For a listening socket Linux reports the accept queue in tcpi_unacked and its limit in
    // tcpi_sacked (what uWSGI's master.c reads).
    Some((ti.tcpi_unacked, ti.tcpi_sacked))
}

/// Bytes waiting to be read on `fd` (FIONREAD), as the stats server computes `signal_queue`.
pub(crate) fn bytes_readable(fd: i32) -> Option<i64> {
    if fd < 0 {
        return None;
    }
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; a closed or invalid fd only makes ioctl fail.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return None;
    }
    Some(i64::from(n))
}

/// A non-blocking, close-on-exec connection to the UNIX stream socket at `path`: connected, or
/// in progress (wait for writability). No server, a full backlog (`EAGAIN`) or a path too long
/// for `sun_path` is an error.
pub(crate) fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable UNIX socket path",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a filled sockaddr_un of `len` bytes, alive for the call.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(fd)
}
