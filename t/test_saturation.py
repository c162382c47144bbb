"""Issue 21 (part): the listen queue of UNIX sockets, from the kernel. uWSGI measures only TCP,
so behind nginx on a UNIX socket its figure (and its stats server's) is always 0; the plugin
asks the kernel (netlink sock_diag) at scrape time."""
import json
import os
import socket
import struct
import time

import pytest

from helpers import get, server_addrs, stats_port
from promcheck import samples


def uwsgi_packet(path):
    """A request in the uwsgi protocol (modifier 0): the vars a front proxy would send."""
    env = {'REQUEST_METHOD': 'GET', 'PATH_INFO': path, 'QUERY_STRING': '30', 'SERVER_NAME': 'x',
           'SERVER_PORT': '80', 'SERVER_PROTOCOL': 'HTTP/1.1'}
    body = b''.join(struct.pack('<H', len(k)) + k.encode() + struct.pack('<H', len(v)) + v.encode()
                    for k, v in env.items())
    return struct.pack('<BHB', 0, len(body), 0) + body


def stats_sockets(port):
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        data = b''
        while chunk := s.recv(65536):
            data += chunk
    return {x['name']: x['queue'] for x in json.loads(data)['sockets']}


def busy_workers(addr):
    return sum(v for (sample, labels), v in samples(get(addr)[2]).items()
               if sample == 'uwsgi_worker_status' and dict(labels)['status'] == 'busy')


def queue_of(addr, name):
    for (sample, labels), v in samples(get(addr)[2]).items():
        if sample == 'uwsgi_socket_listen_queue' and dict(labels).get('name') == name:
            return v
    raise AssertionError('no uwsgi_socket_listen_queue for %s' % name)


@pytest.mark.parametrize('variant', ['pip-routing', 'debian'])
@pytest.mark.parametrize('proto', ['socket', 'http-socket'])
def test_unix_listen_queue_counts_waiting_clients(start_uwsgi, tmpdir_path, variant, proto):
    path = os.path.join(tmpdir_path, 'app.sock')
    u = start_uwsgi(variant, ['--%s' % proto, path, '--workers', '2',
                              '--prometheus-server', '127.0.0.1:0', '--stats', '127.0.0.1:0'],
                    http=False)
    addr = server_addrs(u)[0]
    sport = stats_port(u)
    assert queue_of(addr, path) == 0
    busy, waiting = [], []
    try:
        # Both workers busy in a 30 s request each.
        for _ in range(2):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            c.sendall(uwsgi_packet('/slow') if proto == 'socket'
                      else b'GET /slow?30 HTTP/1.1\r\nHost: x\r\n\r\n')
            busy.append(c)
        deadline = time.monotonic() + 10
        while busy_workers(addr) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert busy_workers(addr) == 2
        n = 7
        for _ in range(n):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            waiting.append(c)
        deadline = time.monotonic() + 10
        while queue_of(addr, path) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert abs(queue_of(addr, path) - n) <= 1
        # uWSGI's own figure for the same socket.
        assert stats_sockets(sport)[path] == 0
    finally:
        for c in busy + waiting:
            c.close()
