"""Issue 7: faults (panics, killed workers, harakiri, reloads, stop) and access control."""
import base64
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error

import pytest

from conftest import VARIANTS
from helpers import get, raw, server_addrs, server_addrs_last
from promcheck import promtool_clean, samples


def master_pid(u):
    return int(re.findall(r'spawned uWSGI master process \(pid: (\d+)', u.log())[-1])


def test_panic_in_the_server_is_caught_and_the_master_keeps_serving(start_uwsgi):
    u = start_uwsgi('pip-routing-faults', ['--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    pid = master_pid(u)
    status, _, _ = raw(addr, b'GET /__panic HTTP/1.1\r\n\r\n', timeout=15)
    assert status is None  # the connection is dropped, nothing half-written
    u.wait_log(r'--prometheus-server: a panic while handling a connection; it was closed')
    assert re.search(r'\[metrics_prometheus\] panic at src/server/\w+\.rs:\d+: fault injection',
                     u.log())
    for _ in range(3):
        assert get(addr)[0] == 200
    assert master_pid(u) == pid and u.proc.poll() is None
    assert u.get('/')[0] == 200


def dropped_by_a_dying_worker(e):
    """What a client of the route sees when the worker serving it is SIGKILLed: the
    connection closed or reset before a complete response (never a timeout, never garbage)."""
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, Exception):
        e = e.reason  # raised while sending the request
    return isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.IncompleteRead))


def test_worker_killed_during_scrapes(start_uwsgi):
    u = start_uwsgi('pip-routing', ['--workers', '2', '--threads', '4',
                                    '--route', '^/metrics$ prometheus-metrics:',
                                    '--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    pid = master_pid(u)
    stop = threading.Event()
    route, dedicated = [], []  # one (status, None) or (None, exception) per scrape

    def scrape_loop(scrape, results):
        while not stop.is_set():
            try:
                status, _, body = scrape()
                if status == 200:
                    samples(body)
                results.append((status, None))
            except Exception as e:
                results.append((None, e))

    threads = [threading.Thread(target=scrape_loop, daemon=True,
                                args=(lambda: u.get('/metrics', timeout=5), route))
               for _ in range(4)]
    threads.append(threading.Thread(target=scrape_loop, daemon=True,
                                    args=(lambda: get(addr, timeout=5), dedicated)))
    for t in threads:
        t.start()
    kills = 3
    try:
        for _ in range(kills):
            workers = [int(p) for p in re.findall(
                r'(?:spawned uWSGI worker \d+ \(pid: '
                r'|[Rr]espawned uWSGI worker \d+ \(new pid: )(\d+)',
                u.log())]
            os.kill(workers[-1], signal.SIGKILL)
            time.sleep(0.7)
            assert get(addr)[0] == 200
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    # The dedicated server lives in the master: not one scrape failed or got another status.
    assert [r for r in dedicated if r != (200, None)] == []
    assert len(dedicated) >= 20, len(dedicated)
    # Through the route, every answer is a valid 200; the only failures are the requests in
    # flight on a killed worker (at most one per scraping thread per kill).
    assert {st for st, e in route if e is None} == {200}, route
    failures = [e for st, e in route if e is not None]
    assert all(dropped_by_a_dying_worker(e) for e in failures), failures
    assert len(failures) <= kills * 4, failures
    assert len(route) - len(failures) >= 20, (len(route), failures)
    assert master_pid(u) == pid
    s = samples(get(addr)[2])
    assert sum(v for (n, _), v in s.items() if n == 'uwsgi_worker_respawns_total') == 2 + kills


def test_harakiri_during_a_route_scrape(start_uwsgi, tmpdir_path):
    # The route answers on a UNIX http-socket (kernel buffers of ~200 KB) with a ~600 KB
    # exposition to a client that stops reading: the worker blocks in the write until harakiri
    # kills it. The master respawns it and both front ends keep answering.
    app_sock = os.path.join(tmpdir_path, 'app.sock')
    u = start_uwsgi('pip-routing', ['--http-socket', app_sock, '--workers', '1',
                                    '--threads', '1000', '--harakiri', '2',
                                    '--socket-timeout', '30',
                                    '--route', '^/metrics$ prometheus-metrics:',
                                    '--prometheus-server', '127.0.0.1:0'], http=False)
    addr = server_addrs(u)[0]
    s = socket.socket(socket.AF_UNIX)
    s.connect(app_sock)
    s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
    s.recv(1)
    u.wait_log(r'HARAKIRI', timeout=20)
    s.close()
    u.wait_log(r'[Rr]espawned uWSGI worker', timeout=20)
    assert get(addr)[0] == 200
    time.sleep(0.5)
    status, _, body = get(app_sock)
    assert status == 200
    samples(body)
    s2 = samples(get(addr)[2])
    assert s2[('uwsgi_worker_harakiri_total', frozenset({('worker', '1')}))] == 1


@pytest.mark.parametrize('how', ['touch-reload', 'touch-chain-reload', 'SIGHUP'])
def test_reloads_keep_tcp_and_unix_listening(start_uwsgi, tmpdir_path, how):
    trigger = os.path.join(tmpdir_path, 'reload.trigger')
    open(trigger, 'w').close()
    sock = os.path.join(tmpdir_path, 'r.sock')
    args = ['--workers', '2', '--prometheus-server', '127.0.0.1:0', '--prometheus-server', sock,
            '--lazy-apps']
    if how != 'SIGHUP':
        args += ['--' + how, trigger]
    u = start_uwsgi('pip-routing', args)
    pid = master_pid(u)
    n = u.log().count('prometheus-server on')
    workers_before = len(re.findall(r'spawned uWSGI worker', u.log()))
    time.sleep(1.2)
    if how == 'SIGHUP':
        os.kill(pid, signal.SIGHUP)
    else:
        os.utime(trigger, None)
    deadline = time.time() + 10
    while time.time() < deadline:
        log = u.log()
        if how == 'touch-chain-reload':
            spawned = re.findall(r'[Rr]espawned uWSGI worker|spawned uWSGI worker', log)
            if len(spawned) >= workers_before + 2:
                break
        elif log.count('prometheus-server on') > n:
            break
        time.sleep(0.1)
    else:
        raise AssertionError('no reload seen:\n' + u.log()[-3000:])
    addrs = server_addrs_last(u)
    assert len(addrs) == 2 and addrs[1] == sock, addrs
    for a in addrs:
        deadline = time.time() + 5
        while True:
            try:
                if get(a)[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, a
            time.sleep(0.1)
    assert 'Address already in use' not in u.log()


def test_stop_removes_the_unix_socket(start_uwsgi, tmpdir_path):
    sock = os.path.join(tmpdir_path, 's.sock')
    pidfile = os.path.join(tmpdir_path, 'u.pid')
    u = start_uwsgi('pip-routing', ['--prometheus-server', sock, '--pidfile', pidfile])
    assert get(sock)[0] == 200
    subprocess.run([VARIANTS['pip-routing'].bin, '--stop', pidfile], check=True, timeout=10)
    assert u.wait_exit(15) is not None
    assert not os.path.exists(sock)


def test_first_second_gives_valid_output(start_uwsgi):
    """Before uWSGI's metrics collector has run once, the output is valid, not garbage."""
    u = start_uwsgi('pip-routing', ['--workers', '2', '--prometheus-server', '127.0.0.1:0',
                                    '--metric', 'myapp.jobs.done'],
                    wait_for=r'prometheus-server on')
    addr = server_addrs(u)[0]
    # The listener is bound before that log line: the very first scrape, answered as soon as
    # the master loop runs, is the one checked (no retrying until some scrape is fine).
    st, _, body = get(addr)
    assert st == 200, (st, body)
    samples(body)
    promtool_clean(body)


def test_allow_list(start_uwsgi, tmpdir_path):
    sock = os.path.join(tmpdir_path, 'a.sock')
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-server', sock,
                                    '--prometheus-allow', '10.0.0.0/8,192.168.0.0/16'])
    tcp, unix = server_addrs(u)
    status, _, body = get(tcp)
    assert status == 403 and body == b'forbidden\n'
    assert get(unix)[0] == 200  # UNIX sockets are governed by file permissions
    u.stop()
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-allow', '10.0.0.0/8',
                                    '--prometheus-allow', '127.0.0.0/8'])
    assert get(server_addrs(u)[0])[0] == 200


def test_basic_auth(start_uwsgi):
    digest = hashlib.sha256(b's3cret').hexdigest()
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-basic-auth', 'prom:sha256:' + digest])
    addr = server_addrs(u)[0]
    status, h, _ = get(addr)
    assert status == 401 and h['www-authenticate'] == 'Basic realm="uWSGI metrics"'
    bad = base64.b64encode(b'prom:nope').decode()
    assert get(addr, headers={'Authorization': 'Basic ' + bad})[0] == 401
    good = base64.b64encode(b'prom:s3cret').decode()
    status, _, body = get(addr, headers={'Authorization': 'Basic ' + good})
    assert status == 200
    samples(body)
    assert digest not in u.log() and 's3cret' not in u.log()


def test_bad_access_options_stop_startup(start_uwsgi):
    for args, opt in [(['--prometheus-allow', '10.0.0.0/40'], 'prometheus-allow'),
                      (['--prometheus-basic-auth', 'prom:plaintext'], 'prometheus-basic-auth')]:
        u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0'] + args,
                        wait_for=None)
        assert u.wait_exit() != 0
        assert 'invalid value for --%s' % opt in u.log()
        assert 'plaintext' not in u.log()


def test_unix_socket_mode_and_owner(start_uwsgi, tmpdir_path):
    import grp
    import pwd
    import stat
    sock = os.path.join(tmpdir_path, 'o.sock')
    u = start_uwsgi('pip-routing', ['--prometheus-server', sock, '--prometheus-server-mode', '640',
                                    '--prometheus-server-owner', 'nobody:nogroup'])
    st = os.stat(sock)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == pwd.getpwnam('nobody').pw_uid
    assert st.st_gid == grp.getgrnam('nogroup').gr_gid
    assert get(sock)[0] == 200
    u.stop()
    u = start_uwsgi('pip-routing', ['--prometheus-server', sock,
                                    '--prometheus-server-owner', 'no-such-user-xyz'],
                    wait_for=None)
    assert u.wait_exit() != 0
    assert re.search(r'--prometheus-server %s: cannot listen: no user .no-such-user-xyz.' %
                     re.escape(sock), u.log()), u.log()
