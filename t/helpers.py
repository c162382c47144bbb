"""Helpers shared by the integration tests: raw HTTP to the dedicated server, addresses and
ports read from a running uWSGI, processes seen through /proc, the protobuf decoder.

Test modules import from here (and fixtures come from conftest.py), never from each other.
"""
import os
import re
import socket
import subprocess
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROTO_ACCEPT = ('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
                'encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2')


# --- the release: its one version and the commit ---------------------------------------------

def workspace_version():
    """The project's version: Cargo.toml's [workspace.package], which both crates inherit."""
    with open(os.path.join(ROOT, 'Cargo.toml'), 'rb') as f:
        return tomllib.load(f)['workspace']['package']['version']


def head_commit():
    """The checkout's commit as build.rs records it (12 hex digits)."""
    return subprocess.check_output(['git', '-C', ROOT, 'rev-parse', '--short=12', 'HEAD'],
                                   text=True).strip()


# --- the dedicated server (--prometheus-server), spoken to over raw sockets ------------------

def server_addrs(u):
    """The addresses the dedicated server listens on, as it logs them (`:0` resolved)."""
    m = u.wait_log(r'prometheus-server on ([^\n]+)')
    return [a.strip() for a in m.group(1).split(',')]


def server_addrs_last(u):
    """server_addrs of the latest start (after reloads)."""
    return [a.strip() for a in re.findall(r'prometheus-server on ([^\n]+)', u.log())[-1].split(',')]


def connect(addr, timeout=10):
    """A connected socket to `addr`: a UNIX path, or HOST:PORT."""
    if addr.startswith('/'):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(addr)
    else:
        host, port = addr.rsplit(':', 1)
        s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def raw(addr, data, timeout=10):
    """Sends `data`, reads until the server closes; returns (status, headers, body)."""
    with connect(addr, timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    resp = b''.join(chunks)
    if not resp:
        return None, {}, b''
    head, _, body = resp.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(':')
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get(addr, path='/metrics', method='GET', headers=None, timeout=10):
    """One HTTP/1.1 request over raw(): (status, lowercased headers, body)."""
    h = ''.join('%s: %s\r\n' % kv for kv in (headers or {}).items())
    return raw(addr, ('%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n' % (method, path, h)).encode(), timeout)


# --- a running uWSGI seen from outside -------------------------------------------------------

def master_pid(u):
    return int(u.wait_log(r'spawned uWSGI master process \(pid: (\d+)\)').group(1))


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def tcp_listen_port(pid, fd):
    """The local port of the listening TCP socket that is file descriptor `fd` of process
    `pid` (from /proc: the fd's socket inode, looked up in /proc/net/tcp and tcp6)."""
    link = os.readlink('/proc/%d/fd/%d' % (pid, fd))
    m = re.fullmatch(r'socket:\[(\d+)\]', link)
    assert m, 'fd %d of %d is not a socket: %s' % (fd, pid, link)
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(table) as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if p[9] == m.group(1) and p[3] == '0A':
                    return int(p[1].rsplit(':', 1)[1], 16)
    raise AssertionError('fd %d of %d (%s) is not a listening TCP socket' % (fd, pid, link))


def stats_port(u):
    """The port of uWSGI's stats server started with `--stats 127.0.0.1:0`: uWSGI logs the
    address as given and the fd, so the kernel's choice is read through the master's fd."""
    m = u.wait_log(r'\*\*\* Stats server enabled on 127\.0\.0\.1:0 fd: (\d+) \*\*\*')
    return tcp_listen_port(master_pid(u), int(m.group(1)))


def descendants(pid):
    """Pids of every process below pid (from /proc)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


# --- the protobuf exposition -----------------------------------------------------------------

def native_counts(h):
    """{native bucket index: count} of a decoded protobuf histogram, its spans and deltas
    expanded (empty buckets left out)."""
    counts, idx, prev = {}, 0, 0
    deltas = iter(h.positive_delta)
    for span in h.positive_span:
        idx += span.offset
        for _ in range(span.length):
            prev += next(deltas)
            if prev:
                counts[idx] = prev
            idx += 1
    return counts


def decode(pb, body):
    """The MetricFamily messages of a delimited protobuf body (`pb`: the conftest fixture)."""
    from google.protobuf.internal.decoder import _DecodeVarint
    fams, pos = [], 0
    while pos < len(body):
        n, pos = _DecodeVarint(body, pos)
        f = pb.MetricFamily()
        f.ParseFromString(body[pos:pos + n])
        fams.append(f)
        pos += n
    return fams
