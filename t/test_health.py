"""Issue 21 item 4: /healthz and /readyz on the dedicated server, against real uWSGI.

/healthz is answered by the master loop itself; /readyz reads uWSGI's worker table (a worker
running, past its startup, not cheaped, paused or leaving) and the listen queue of every
socket (TCP_INFO, netlink sock_diag for UNIX sockets) against --prometheus-ready-queue."""
import base64
import hashlib
import os
import re
import signal
import socket
import struct
import time

import pytest

from conftest import VARIANTS as ALL_VARIANTS
from conftest import Uwsgi, free_port
from helpers import get, master_pid, server_addrs
from promcheck import samples

VARIANTS = ['pip-routing', 'debian']
TEXT = 'text/plain; charset=utf-8'


def uwsgi_request(path, query=''):
    """A request in the uwsgi protocol (modifier 0), as a front proxy sends it."""
    env = {'REQUEST_METHOD': 'GET', 'PATH_INFO': path, 'QUERY_STRING': query,
           'SERVER_NAME': 'x', 'SERVER_PORT': '80', 'SERVER_PROTOCOL': 'HTTP/1.1'}
    body = b''.join(struct.pack('<H', len(k)) + k.encode() + struct.pack('<H', len(v)) + v.encode()
                    for k, v in env.items())
    return struct.pack('<BHB', 0, len(body), 0) + body


def client(target):
    """A client connected to uWSGI's socket `target` (a UNIX path or a (host, port) pair)."""
    if isinstance(target, str):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(30)
        c.connect(target)
        return c
    return socket.create_connection(target, timeout=30)


def probe(addr, path, **kw):
    status, h, body = get(addr, path, **kw)
    return status, body.decode()


def wait_until(cond, what, timeout=15):
    """Polls `cond` until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, 'timed out waiting for %s' % what
        time.sleep(0.05)


def busy_workers(addr):
    return sum(v for (name, labels), v in samples(get(addr)[2]).items()
               if name == 'uwsgi_worker_status' and dict(labels)['status'] == 'busy')


@pytest.mark.parametrize('variant', VARIANTS)
def test_probes_at_rest(start_uwsgi, variant):
    u = start_uwsgi(variant, ['--workers', '2', '--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    # Ready as soon as a worker entered its request loop: right after startup, poll.
    wait_until(lambda: get(addr, '/readyz')[0] == 200, '/readyz 200')
    for path, body in [('/healthz', 'ok\n'), ('/readyz', 'ready\n')]:
        status, h, got = get(addr, path)
        assert (status, got.decode()) == (200, body)
        assert h['content-type'] == TEXT and h['cache-control'] == 'no-store'
        assert h['connection'] == 'close' and int(h['content-length']) == len(body)
        status, h, got = get(addr, path, method='HEAD')
        assert status == 200 and got == b'' and int(h['content-length']) == len(body)
        assert get(addr, path + '?verbose=1')[0] == 200
        status, h, _ = get(addr, path, method='POST')
        assert status == 405 and h['allow'] == 'GET, HEAD'
    assert get(addr, '/healthz/')[0] == 404
    status, _, page = get(addr, '/')
    assert status == 200 and b'href="/healthz"' in page and b'href="/readyz"' in page
    assert get(addr)[0] == 200
    assert u.get('/')[0] == 200


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('kind', ['unix', 'tcp'])
def test_readyz_follows_the_listen_queue(start_uwsgi, tmpdir_path, variant, kind):
    """Both workers busy in long requests, then 5 clients waiting on the socket (on the UNIX
    one without sending anything) with the threshold at 3: /readyz says 503, naming the
    socket and the numbers; /healthz stays 200; once the workers are free again and have
    taken the waiting clients, 200."""
    if kind == 'unix':
        name = os.path.join(tmpdir_path, 'app.sock')
        target = name
    else:
        port = free_port()
        name, target = '127.0.0.1:%d' % port, ('127.0.0.1', port)
    u = start_uwsgi(variant, ['--socket', name, '--workers', '2',
                              '--prometheus-server', '127.0.0.1:0',
                              '--prometheus-ready-queue', '3'], http=False)
    addr = server_addrs(u)[0]
    wait_until(lambda: probe(addr, '/readyz') == (200, 'ready\n'), 'ready at rest')
    busy, waiting = [], []
    try:
        for _ in range(2):
            c = client(target)
            c.sendall(uwsgi_request('/slow', '4'))
            busy.append(c)
        wait_until(lambda: busy_workers(addr) == 2, 'both workers busy')
        # Busy workers still accept requests (uWSGI's notion): the queue decides.
        assert probe(addr, '/readyz') == (200, 'ready\n')

        def wait_on_socket():
            c = client(target)
            if kind == 'tcp':
                # uWSGI sets TCP_DEFER_ACCEPT: a TCP connection joins the accept queue with
                # its first bytes (a front proxy sends its request at once).
                c.sendall(uwsgi_request('/'))
            waiting.append(c)
        for _ in range(2):
            wait_on_socket()
        assert probe(addr, '/readyz') == (200, 'ready\n')  # 2 waiting, under 3
        for _ in range(3):
            wait_on_socket()

        def not_ready():
            # A TCP connection joins the accept queue when the server gets the client's last
            # handshake ACK, a little after the client's connect() returns.
            status, body = probe(addr, '/readyz')
            m = re.fullmatch(r'listen queue (\d+)/(\d+) on (\S+) \(threshold 3\)\n', body)
            assert status == 200 or (status == 503 and m), (status, body)
            return status == 503 and int(m.group(1)) >= 4 and (body, m)
        body, m = wait_until(not_ready, '/readyz 503 with the 5 waiting clients')
        assert int(m.group(1)) <= 6 and int(m.group(2)) > 5, body
        assert m.group(3) == name
        status, h, _ = get(addr, '/readyz', method='HEAD')
        assert status == 503 and int(h['content-length']) == len(body)
        assert probe(addr, '/healthz') == (200, 'ok\n')
        # The waiting clients go away (each one, accepted, is read to its end at once); the
        # workers take them when their long requests are over.
        for c in waiting:
            c.close()
        wait_until(lambda: probe(addr, '/readyz') == (200, 'ready\n'), '/readyz 200 again')
    finally:
        for c in busy + waiting:
            c.close()


@pytest.mark.parametrize('variant', VARIANTS)
def test_no_worker_accepting_while_paused(start_uwsgi, variant):
    """SIGTSTP to the master pauses every worker (uWSGI's `suspended`): not ready, and the
    master still answers /healthz; a second SIGTSTP resumes them."""
    u = start_uwsgi(variant, ['--workers', '2', '--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    wait_until(lambda: probe(addr, '/readyz') == (200, 'ready\n'), 'ready at rest')
    pid = master_pid(u)
    os.kill(pid, signal.SIGTSTP)
    wait_until(lambda: probe(addr, '/readyz') == (503, 'no worker accepting\n'), 'paused')
    assert probe(addr, '/healthz') == (200, 'ok\n')
    os.kill(pid, signal.SIGTSTP)
    wait_until(lambda: probe(addr, '/readyz') == (200, 'ready\n'), 'resumed')


@pytest.mark.parametrize('variant', VARIANTS)
def test_no_worker_accepting_until_the_app_is_loaded(start_uwsgi, tmpdir_path, variant):
    """With --lazy-apps each worker loads the application after fork, and is not `accepting`
    until it is loaded: the application's import waits here for a file the test creates."""
    gate = os.path.join(tmpdir_path, 'go')
    with open(os.path.join(tmpdir_path, 'slowstart.py'), 'w') as f:
        f.write('import os, time\nwhile not os.path.exists(%r):\n    time.sleep(0.02)\n' % gate)
    u = start_uwsgi(variant, ['--workers', '2', '--lazy-apps', '--pythonpath', tmpdir_path,
                              '--import', 'slowstart', '--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    assert probe(addr, '/readyz') == (503, 'no worker accepting\n')
    assert probe(addr, '/healthz') == (200, 'ok\n')
    open(gate, 'w').close()
    wait_until(lambda: probe(addr, '/readyz') == (200, 'ready\n'), 'ready once loaded')
    assert u.get('/')[0] == 200


def test_cheap_mode_is_ready(start_uwsgi):
    """--cheap: no worker runs until the first connection, which the master answers by
    spawning them: the instance takes requests, so it is ready."""
    u = start_uwsgi('pip-routing', ['--workers', '2', '--cheap',
                                    '--prometheus-server', '127.0.0.1:0'],
                    wait_for=r'cheap mode enabled')
    addr = server_addrs(u)[0]
    statuses = {dict(labels)['status']: v for (name, labels), v in samples(get(addr)[2]).items()
                if name == 'uwsgi_worker_status' and dict(labels)['worker'] == '1'}
    assert statuses['cheap'] == 1, statuses
    assert probe(addr, '/readyz') == (200, 'ready\n')
    assert u.get('/')[0] == 200
    assert probe(addr, '/readyz') == (200, 'ready\n')


def test_probes_need_no_credentials(start_uwsgi):
    """Basic auth protects the metrics, the index and unknown paths; the probes (a kubelet
    sends no credentials) answer without, whatever Authorization header comes along."""
    digest = hashlib.sha256(b's3cret').hexdigest()
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-basic-auth', 'prom:sha256:' + digest])
    addr = server_addrs(u)[0]
    for path in ['/metrics', '/', '/nope']:
        assert get(addr, path)[0] == 401, path
    good = {'Authorization': 'Basic ' + base64.b64encode(b'prom:s3cret').decode()}
    bad = {'Authorization': 'Basic ' + base64.b64encode(b'prom:nope').decode()}
    assert get(addr, headers=good)[0] == 200
    wait_until(lambda: probe(addr, '/readyz') == (200, 'ready\n'), 'ready')
    for headers in [None, bad, good]:
        assert probe(addr, '/healthz', headers=headers) == (200, 'ok\n')
        assert probe(addr, '/readyz', headers=headers) == (200, 'ready\n')
        assert get(addr, '/readyz', method='HEAD', headers=headers)[0] == 200
    # Only GET and HEAD of a probe are exempt.
    assert get(addr, '/readyz', method='POST')[0] == 401


def test_probes_stay_under_the_allow_list(start_uwsgi, tmpdir_path):
    """--prometheus-allow decides who may connect at all, probes included (kubelet probes come
    from the node: allow its address); UNIX sockets are governed by file permissions."""
    sock = os.path.join(tmpdir_path, 'metrics.sock')
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-server', sock,
                                    '--prometheus-allow', '10.0.0.0/8'])
    tcp, unix = server_addrs(u)
    for path in ['/healthz', '/readyz']:
        assert probe(tcp, path) == (403, 'forbidden\n')
    assert probe(unix, '/healthz') == (200, 'ok\n')


@pytest.mark.parametrize('path', ['/healthz', '/readyz'])
def test_metrics_path_cannot_be_a_probe(start_uwsgi, path):
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-path', path], wait_for=None)
    assert u.wait_exit() != 0
    assert re.search(r"invalid value for --prometheus-path: '%s' is a health endpoint" % path,
                     u.log()), u.log()


def test_the_emperors_probes(tmpdir_path):
    """An Emperor serving prometheus:// has no workers or sockets of its own: its /readyz
    answers as its /healthz, proving its loop runs."""
    v = ALL_VARIANTS['pip-routing'].require()
    vassals = os.path.join(tmpdir_path, 'vassals')
    os.makedirs(vassals)
    u = Uwsgi(v, ['--plugin', v.plugin, '--emperor', vassals,
                  '--emperor', 'prometheus://127.0.0.1:%d' % free_port()], tmpdir_path, wrapper=[])
    try:
        addr = u.start(wait_for=r"serving the Emperor's metrics on (\S+)").wait_log(
            r"serving the Emperor's metrics on (\S+)").group(1)
        assert probe(addr, '/healthz') == (200, 'ok\n')
        assert probe(addr, '/readyz') == (200, 'ready\n')
        assert get(addr)[0] == 200
    finally:
        u.kill()
