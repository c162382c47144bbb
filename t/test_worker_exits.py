"""Issue 21, item 2: uwsgi_worker_exits_total{reason} against real uWSGI (pip 2.0.31 and Debian
2.0.21).

Each reason is provoked for real (harakiri, --max-requests, --reload-on-rss, --reload-on-as,
--max-worker-lifetime, --touch-workers-reload and --touch-chain-reload, the cheaper, kill -9,
sys.exit and os._exit) and must be counted exactly once under its reason, every other reason
staying 0, also once the master has respawned the worker (the plugin sees a dead worker before
uWSGI reaps it and again after, with a new pid: a second count would show there).
"""
import os
import re
import signal
import threading
import time

import pytest

from helpers import PROTO_ACCEPT, decode, get, raw, server_addrs
from promcheck import OM_ACCEPT, samples

FAMILY = 'uwsgi_worker_exits_total'
REASONS = ['harakiri', 'max_requests', 'reload_on_rss', 'reload_on_as', 'max_lifetime',
           'reload', 'cheaper', 'signal', 'exit', 'unknown']
VARIANTS = ['debian', 'pip-routing']


def request(port, path):
    """One HTTP/1.0 request; the status, or None when the worker died before answering."""
    try:
        return raw('127.0.0.1:%d' % port,
                   ('GET %s HTTP/1.0\r\nHost: x\r\n\r\n' % path).encode(), timeout=20)[0]
    except ConnectionResetError:
        return None


def scrape(addr):
    status, _, body = get(addr)
    assert status == 200
    s = samples(body)
    exits = {dict(labels)['reason']: v for (name, labels), v in s.items() if name == FAMILY}
    assert sorted(exits) == sorted(REASONS), exits
    spawns = sum(v for (name, _), v in s.items() if name == 'uwsgi_worker_respawns_total')
    cheap = sum(v for (name, labels), v in s.items()
                if name == 'uwsgi_worker_status' and dict(labels)['status'] == 'cheap')
    return {r: v for r, v in exits.items() if v}, spawns, cheap


def wait_for(addr, want, spawns=None, cheap=0, timeout=15):
    """Scrapes until the non-zero exit counts are `want`, the workers have been spawned
    `spawns` times in all and `cheap` of them are cheaped; returns the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(addr)
        if got[0] == want and spawns in (None, got[1]) and got[2] == cheap:
            return got
        assert time.monotonic() < deadline, 'want %r, %s spawns, %d cheap; got %r' % (
            want, spawns, cheap, got)
        time.sleep(0.05)


def worker_pids(u, workers):
    """The current pid of each worker id, from uWSGI's log (spawned and respawned)."""
    pids = {}
    for m in re.finditer(r'(?:spawned uWSGI worker (\d+) \(pid: (\d+)|'
                         r'Respawned uWSGI worker (\d+) \(new pid: (\d+))', u.log()):
        w, pid = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        pids[int(w)] = int(pid)
    assert sorted(pids) == list(range(1, workers + 1)), pids
    return pids


def start(start_uwsgi, variant, workers, args):
    u = start_uwsgi(variant, ['--prometheus-server', '127.0.0.1:0', '--workers', str(workers)]
                    + args, wait_for=r'spawned uWSGI worker %d ' % workers)
    addr = server_addrs(u)[0]
    wait_for(addr, {}, spawns=workers)
    return u, addr


@pytest.mark.parametrize('variant', VARIANTS)
def test_harakiri(start_uwsgi, variant):
    u, addr = start(start_uwsgi, variant, 1, ['--harakiri', '1'])
    assert request(u.http_port, '/slow?4') is None
    wait_for(addr, {'harakiri': 1}, spawns=2)
    assert 'HARAKIRI ON WORKER 1' in u.log()


@pytest.mark.parametrize('variant', VARIANTS)
def test_max_requests(start_uwsgi, variant):
    u, addr = start(start_uwsgi, variant, 1, ['--max-requests', '3',
                                              '--min-worker-lifetime', '0'])
    for _ in range(3):
        assert request(u.http_port, '/') == 200
    wait_for(addr, {'max_requests': 1}, spawns=2)


@pytest.mark.parametrize('variant', VARIANTS)
def test_reload_on_rss(start_uwsgi, variant):
    # A worker starts at about 15 MB resident; /grow?80 writes 80 MB more.
    u, addr = start(start_uwsgi, variant, 1, ['--reload-on-rss', '64',
                                              '--min-worker-lifetime', '0'])
    assert request(u.http_port, '/') == 200
    assert request(u.http_port, '/grow?80') == 200
    wait_for(addr, {'reload_on_rss': 1}, spawns=2)


@pytest.mark.parametrize('variant', VARIANTS)
def test_reload_on_as(start_uwsgi, variant):
    # About 60 MB of address space at start; /reserve?400 maps 400 MB more (untouched).
    u, addr = start(start_uwsgi, variant, 1, ['--reload-on-as', '256',
                                              '--min-worker-lifetime', '0'])
    assert request(u.http_port, '/') == 200
    assert request(u.http_port, '/reserve?400') == 200
    wait_for(addr, {'reload_on_as': 1}, spawns=2)


@pytest.mark.parametrize('variant', VARIANTS)
def test_max_lifetime(start_uwsgi, variant):
    # The master ends the worker once it has lived more than 2 s, again and again: every
    # respawn is one max_lifetime exit.
    u, addr = start(start_uwsgi, variant, 1, ['--max-worker-lifetime', '2',
                                              '--min-worker-lifetime', '0'])
    exits, spawns, _ = wait_for(addr, {'max_lifetime': 1}, spawns=2, timeout=20)
    assert 'worker 1 lifetime reached' in u.log()


@pytest.mark.parametrize('variant', VARIANTS)
def test_workers_and_chain_reload(start_uwsgi, variant, tmpdir_path):
    touch_workers = os.path.join(tmpdir_path, 'reload-workers')
    touch_chain = os.path.join(tmpdir_path, 'reload-chain')
    for f in (touch_workers, touch_chain):
        open(f, 'w').close()
    u, addr = start(start_uwsgi, variant, 2, ['--touch-workers-reload', touch_workers,
                                              '--touch-chain-reload', touch_chain])
    later = time.time() + 10
    os.utime(touch_workers, (later, later))
    wait_for(addr, {'reload': 2}, spawns=4)
    os.utime(touch_chain, (later + 10, later + 10))
    wait_for(addr, {'reload': 4}, spawns=6)
    assert 'chain reloading complete' in u.log() or 'chain next victim is worker 2' in u.log()


@pytest.mark.parametrize('variant', VARIANTS)
def test_cheaper(start_uwsgi, variant):
    # Two workers at start, one is enough when idle: the spare algorithm cheaps the other
    # after one idle cycle, and does not respawn it.
    u, addr = start(start_uwsgi, variant, 2, ['--cheaper', '1', '--cheaper-initial', '2',
                                              '--cheaper-overload', '1'])
    wait_for(addr, {'cheaper': 1}, spawns=2, cheap=1)
    assert 'cheaped' in u.log()


@pytest.mark.parametrize('variant', VARIANTS)
def test_kill_9(start_uwsgi, variant, pb):
    u, addr = start(start_uwsgi, variant, 2, [])
    os.kill(worker_pids(u, 2)[2], signal.SIGKILL)
    wait_for(addr, {'signal': 1}, spawns=3)
    # The same count in every format.
    status, _, om = get(addr, headers={'Accept': OM_ACCEPT})
    assert status == 200
    assert samples(om, openmetrics=True)[(FAMILY, frozenset({('reason', 'signal')}))] == 1
    assert b'# TYPE uwsgi_worker_exits counter' in om
    status, _, body = get(addr, headers={'Accept': PROTO_ACCEPT})
    assert status == 200
    fam = [f for f in decode(pb, body) if f.name == FAMILY]
    assert len(fam) == 1 and fam[0].type == pb.COUNTER
    by_reason = {m.label[0].value: m.counter.value for m in fam[0].metric}
    assert by_reason == {r: (1 if r == 'signal' else 0) for r in REASONS}


@pytest.mark.parametrize('variant', VARIANTS)
def test_sys_exit_and_os_exit(start_uwsgi, variant):
    u, addr = start(start_uwsgi, variant, 1, ['--route', '^/metrics$ prometheus-metrics:'])
    assert request(u.http_port, '/sys-exit?3') is None
    wait_for(addr, {'exit': 1}, spawns=2)
    assert request(u.http_port, '/os-exit?4') is None
    wait_for(addr, {'exit': 2}, spawns=3)
    # The route action, in the respawned worker, reads the same counters (shared memory).
    status, _, body = u.get('/metrics')
    assert status == 200
    assert samples(body)[(FAMILY, frozenset({('reason', 'exit')}))] == 2


@pytest.mark.parametrize('variant', VARIANTS)
def test_a_busy_master_loop_counts_each_death_once(start_uwsgi, variant):
    # Scrapes every few milliseconds make the master loop (and the plugin's look) run far
    # more often than once a second while workers die by the dozen.
    u, addr = start(start_uwsgi, variant, 2, ['--max-requests', '2',
                                              '--min-worker-lifetime', '0'])
    stop = threading.Event()

    def scraper():
        while not stop.is_set():
            get(addr)

    t = threading.Thread(target=scraper)
    t.start()
    try:
        for _ in range(20):
            assert request(u.http_port, '/') == 200
    finally:
        stop.set()
        t.join()
    exits, spawns, _ = wait_for(addr, {'max_requests': 10}, spawns=12)
