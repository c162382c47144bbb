"""Issue 10: behaviour fixed while re-layering the plugin, each case failing on the old code.

- uwsgi_worker_status decides each worker's state once per scrape (exactly one series is 1);
- a panic while handling one connection closes that connection at once and the others are
  served in the same cycle;
- a steady scrape allocates nothing (counted by the test-only fault-injection build);
- RFC 9112 §6.3 framing errors get 400 on both TCP and UNIX listeners (the hostile suite
  covers more shapes).
"""
import gzip
import re
import socket
import threading
import time

from helpers import connect, get, raw, server_addrs
from promcheck import samples


def statuses_by_worker(body):
    out = {}
    for (name, labels), value in samples(body).items():
        if name == 'uwsgi_worker_status':
            labels = dict(labels)
            out.setdefault(labels['worker'], {})[labels['status']] = value
    return out


def test_worker_status_is_decided_once_per_scrape(start_uwsgi):
    # Four single-threaded workers flip between busy and idle thousands of times a second;
    # re-deriving the state for each of the five series makes some scrapes show a worker in
    # zero or two states.
    u = start_uwsgi('pip-routing', ['--workers', '4', '--prometheus-server', '127.0.0.1:0',
                                    '--listen', '128'])
    addr = server_addrs(u)[0]
    stop = threading.Event()
    served = [0]

    def load():
        while not stop.is_set():
            try:
                with socket.create_connection(('127.0.0.1', u.http_port), timeout=5) as s:
                    s.sendall(b'GET /slow?0.0005 HTTP/1.0\r\n\r\n')
                    while s.recv(4096):
                        pass
                served[0] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    bad = []
    scrapes = 0
    try:
        deadline = time.time() + 20
        while scrapes < 600 and time.time() < deadline:
            status, _, body = get(addr)
            assert status == 200
            scrapes += 1
            for worker, st in statuses_by_worker(body).items():
                assert sorted(st) == ['busy', 'cheap', 'idle', 'pause', 'sig'], st
                if sum(st.values()) != 1:
                    bad.append((worker, st))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert scrapes >= 200 and served[0] > 1000, (scrapes, served[0])
    assert not bad, '%d of %d scrapes had a worker in 0 or 2 states: %r' % (
        len(bad), scrapes, bad[:5])


def test_a_panic_closes_only_its_connection(start_uwsgi):
    u = start_uwsgi('pip-routing-faults', ['--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    waiting = connect(addr)
    waiting.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n')  # head not complete yet
    try:
        t0 = time.monotonic()
        status, _, _ = raw(addr, b'GET /__panic HTTP/1.1\r\n\r\n', timeout=5)
        elapsed = time.monotonic() - t0
        assert status is None  # dropped, nothing half-written
        assert elapsed < 1.0, 'the panicking connection lingered %.1f s' % elapsed
        u.wait_log(r'a panic while handling a connection; it was closed')
        assert re.search(r'panic at src/server/\w+\.rs:\d+: fault injection', u.log())
        assert 'master_cycle: caught a panic' not in u.log()
        # The connection that was mid-request in the same cycle is still served.
        waiting.sendall(b'\r\n')
        data = b''
        while True:
            b = waiting.recv(65536)
            if not b:
                break
            data += b
        assert data.startswith(b'HTTP/1.1 200 OK\r\n'), data[:200]
    finally:
        waiting.close()
    assert get(addr)[0] == 200


def test_steady_scrapes_allocate_nothing(start_uwsgi):
    u = start_uwsgi('pip-routing-faults', ['--workers', '3', '--threads', '2',
                                           '--prometheus-server', '127.0.0.1:0',
                                           '--metric', 'myapp.jobs.done', '--cache2',
                                           'name=mycache,items=10', '--mule'],
                    wait_for=r'spawned uWSGI mule')
    addr = server_addrs(u)[0]
    counts = []
    kinds = [{'Accept': 'text/plain'},
             {'Accept': 'application/openmetrics-text; version=1.0.0'},
             {'Accept-Encoding': 'gzip'},
             {'Accept': 'application/vnd.google.protobuf;'
                        'proto=io.prometheus.client.MetricFamily;encoding=delimited'}]
    for headers in kinds * 4:
        assert u.get('/')[0] == 200
        status, h, body = get(addr, headers=headers)
        if h.get('content-encoding') == 'gzip':
            body = gzip.decompress(body)
        assert status == 200 and b'uwsgi_worker_open_fds' in body
        counts.append(int(h['x-scrape-allocations']))
    # The first scrapes grow the buffers; after that, nothing, whatever the format or encoding.
    assert counts[0] > 0, counts
    assert counts[-8:] == [0] * 8, counts


def test_framing_errors_get_400(start_uwsgi, tmpdir_path):
    sock = tmpdir_path + '/m.sock'
    u = start_uwsgi('pip-norouting', ['--prometheus-server', '127.0.0.1:0',
                                      '--prometheus-server', sock])
    for addr in server_addrs(u):
        for extra in [b'Content-Length: -1\r\n', b'Content-Length: 99999999999999999999\r\n',
                      b'Content-Length: 0\r\nTransfer-Encoding: chunked\r\n']:
            status, h, _ = raw(addr, b'GET /metrics HTTP/1.1\r\nHost: x\r\n' + extra + b'\r\n')
            assert status == 400 and h['connection'] == 'close', (addr, extra, status)
        assert get(addr)[0] == 200
