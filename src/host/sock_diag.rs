//! The accept queue of listening UNIX sockets, from the kernel (`NETLINK_SOCK_DIAG`,
//! `UDIAG_SHOW_RQLEN`): for a listening UNIX socket the read-queue length is the number of
//! connections waiting to be accepted, and the write-queue figure its backlog. uWSGI measures
//! only TCP (`TCP_INFO`), so behind nginx on a UNIX socket its listen queue always reads 0.
//!
//! One exchange per scrape for every socket: a dump of the host's listening UNIX sockets, read
//! without blocking and bounded in size, filtered by the inodes of ours.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// linux/sock_diag.h, linux/unix_diag.h, linux/netlink.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
const TCP_LISTEN: u32 = 10;

/// The most the dump may take (a host with thousands of UNIX listeners): past it the
/// sockets not yet seen keep uWSGI's figure.
const MAX_BYTES: usize = 4 << 20;
const BUF: usize = 32 << 10;

/// `(waiting connections, backlog)` of each listening UNIX socket whose inode is in
/// `inodes`, in `out` (same order; `None` where the kernel did not list it). `Err` when netlink
/// cannot be used at all (a kernel without sock_diag, a seccomp filter). `buf` is the
/// caller's receive buffer, grown once and kept, so that a steady scrape allocates nothing.
pub(crate) fn unix_listen_queues(
    inodes: &[u64],
    out: &mut Vec<Option<(u32, u32)>>,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    out.resize(inodes.len(), None);
    if inodes.is_empty() {
        return Ok(());
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nothing else: closed on drop.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    send_dump_request(&sock)?;
    if buf.len() < BUF {
        buf.resize(BUF, 0);
    }
    let mut read = 0;
    while read < MAX_BYTES {
        // SAFETY: `buf` is writable for its length; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // WouldBlock: the kernel produces a dump's parts as they are read, so an empty
            // queue means it is over (or stalled): keep what was found.
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(())
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        read += n;
        match parse(&buf[..n], inodes, out) {
            Parsed::More => {}
            Parsed::Done => return Ok(()),
            Parsed::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
    Ok(())
}

fn send_dump_request(sock: &OwnedFd) -> io::Result<()> {
    // struct nlmsghdr (16 bytes) + struct unix_diag_req (24 bytes).
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0, no groups).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `req` and `kernel` are valid for the lengths given; MSG_DONTWAIT never blocks.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            libc::MSG_DONTWAIT,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum Parsed {
    More,
    Done,
    Error(i32),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One datagram of netlink messages. Pure, so that it is tested on made-up bytes.
fn parse(mut b: &[u8], inodes: &[u64], out: &mut [Option<(u32, u32)>]) -> Parsed {
    while b.len() >= 16 {
        let (Some(len), Some(ty)) = (u32_at(b, 0), u16_at(b, 4)) else {
            return Parsed::Done;
        };
        let len = len as usize;
        if len < 16 || len > b.len() {
            return Parsed::Done;
        }
        match ty {
            NLMSG_DONE => return Parsed::Done,
            NLMSG_ERROR => {
                let errno = u32_at(b, 16).map_or(0, |e| e as i32);
                return if errno == 0 {
                    Parsed::Done
                } else {
                    Parsed::Error(-errno)
                };
            }
            SOCK_DIAG_BY_FAMILY => unix_msg(&b[16..len], inodes, out),
            _ => {}
        }
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Parsed::More
}

/// One `struct unix_diag_msg` (16 bytes) and its attributes.
fn unix_msg(m: &[u8], inodes: &[u64], out: &mut [Option<(u32, u32)>]) {
    let Some(ino) = u32_at(m, 4) else {
        return;
    };
    let Some(k) = inodes.iter().position(|&i| i == u64::from(ino)) else {
        return;
    };
    let mut attrs = m.get(16..).unwrap_or(&[]);
    while attrs.len() >= 4 {
        let (Some(len), Some(ty)) = (u16_at(attrs, 0), u16_at(attrs, 2)) else {
            return;
        };
        let len = usize::from(len);
        if len < 4 || len > attrs.len() {
            return;
        }
        if ty == UNIX_DIAG_RQLEN {
            if let (Some(rq), Some(wq)) = (u32_at(attrs, 4), u32_at(attrs, 8)) {
                out[k] = Some((rq, wq));
            }
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
}

/// The inode of the socket `fd` (what sock_diag reports), or `None`.
pub(crate) fn socket_inode(fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable; an invalid fd makes fstat fail.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some(st.st_ino)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    /// A real listening UNIX socket with connections nobody accepted: the kernel's figures.
    #[test]
    fn waiting_connections_of_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("mp-sockdiag-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("l.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let ino = socket_inode(listener.as_raw_fd()).expect("inode");
        let mut out = Vec::new();
        unix_listen_queues(&[ino, 0], &mut out, &mut Vec::new()).expect("netlink");
        let (queue, backlog) = out[0].expect("listed");
        assert_eq!(queue, 0);
        assert!(backlog > 0);
        assert_eq!(out[1], None);
        let clients: Vec<UnixStream> = (0..3)
            .map(|_| UnixStream::connect(&path).expect("connect"))
            .collect();
        unix_listen_queues(&[ino], &mut out, &mut Vec::new()).expect("netlink");
        assert_eq!(out[0], Some((3, backlog)));
        drop(clients);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m.resize((len + 3) & !3, 0);
        m
    }

    fn unix(ino: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = vec![libc::AF_UNIX as u8, 1, 10, 0];
        b.extend_from_slice(&ino.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        for (ty, data) in attrs {
            let len = 4 + data.len();
            b.extend_from_slice(&(len as u16).to_ne_bytes());
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(data);
            b.resize((b.len() + 3) & !3, 0);
        }
        b
    }

    #[test]
    fn parses_only_what_is_sane() {
        let rq: Vec<u8> = [7u32, 100].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut dgram = msg(
            SOCK_DIAG_BY_FAMILY,
            &unix(42, &[(0, b"/x\0"), (UNIX_DIAG_RQLEN, &rq)]),
        );
        dgram.extend(msg(
            SOCK_DIAG_BY_FAMILY,
            &unix(43, &[(UNIX_DIAG_RQLEN, &rq[..4])]),
        ));
        let mut out = vec![None; 3];
        assert!(matches!(
            parse(&dgram, &[42, 43, 44], &mut out),
            Parsed::More
        ));
        assert_eq!(out, [Some((7, 100)), None, None]);
        let done = msg(NLMSG_DONE, &[0; 4]);
        assert!(matches!(parse(&done, &[42], &mut out), Parsed::Done));
        let err = msg(NLMSG_ERROR, &(-13i32).to_ne_bytes());
        assert!(matches!(parse(&err, &[42], &mut out), Parsed::Error(13)));
        // Lengths past the datagram, or shorter than a header: stop, never read past.
        let mut bad = msg(SOCK_DIAG_BY_FAMILY, &unix(42, &[]));
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(parse(&bad, &[42], &mut out), Parsed::Done));
        assert!(matches!(parse(&bad[..7], &[42], &mut out), Parsed::More));
    }
}
