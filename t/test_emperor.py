"""Issue 15: `emperor = prometheus://ADDR`, one endpoint for a whole uWSGI Emperor.

A real `uwsgi --emperor DIR --emperor prometheus://ADDR --plugin ...` governs real vassals; its
endpoint's families are compared with the Emperor's own `--emperor-stats` server, vassals are
added, touched and removed, an on-demand vassal waits for its first connection, and the output
goes through promtool, both prometheus_client parsers and a real Prometheus. Every process is
stopped by pid (the Emperor's top process, then any leftover below it).
"""
import contextlib
import gzip
import json
import os
import signal
import socket
import tempfile
import threading
import time

import pytest

from conftest import APP, VARIANTS, Uwsgi, free_port, free_ports
from helpers import alive, descendants, get
from promcheck import OM_ACCEPT, assert_grouped, promtool_clean, samples
from promserver import Prometheus


def vassal_ini(port, extra=''):
    return ('[uwsgi]\nhttp-socket = 127.0.0.1:%d\nwsgi-file = %s\nmaster = true\n'
            'processes = 1\n%s' % (port, APP, extra))


def write(path, text):
    tmp = os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + '.tmp')
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


class Emperor:
    """A real Emperor with the plugin, its vassal directory and its two stats endpoints."""

    def __init__(self, variant, tmpdir, addr, extra=(), glob=False):
        self.dir = tmpdir
        self.vassals = os.path.join(tmpdir, 'vassals')
        os.makedirs(self.vassals)
        self.stats_port = free_port()
        self.addr = addr
        v = VARIANTS[variant].require()
        self.plugin = v.plugin
        self.python_plugin = v.python_plugin
        # The plugin first: its options exist only once it is loaded.
        # A directory monitor names vassals by file name, a glob monitor by the matched path.
        monitor = os.path.join(self.vassals, '*.ini') if glob else self.vassals
        self.u = Uwsgi(v, ['--plugin', v.plugin, '--emperor', monitor,
                           '--emperor', 'prometheus://' + addr,
                           '--emperor-stats', '127.0.0.1:%d' % self.stats_port,
                           '--emperor-freq', '1'] + list(extra),
                       tmpdir, wrapper=[])
        self.below = set()

    def start(self):
        self.u.start(wait_for=r"serving the Emperor's metrics on (\S+)")
        return self

    def ini(self, port, extra=''):
        """A vassal's config for this Emperor's uWSGI (Debian's loads python as a plugin)."""
        return vassal_ini(port, ('plugin = python3\n' if self.python_plugin else '') + extra)

    def add(self, name, text):
        write(os.path.join(self.vassals, name), text)

    def remove(self, name):
        os.unlink(os.path.join(self.vassals, name))

    def stats(self):
        with socket.create_connection(('127.0.0.1', self.stats_port), timeout=10) as s:
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return json.loads(b''.join(chunks).decode('utf-8', 'replace'))

    def scrape(self, headers=None):
        status, hdrs, body = get(self.addr, headers=headers)
        assert status == 200, (status, body[:500])
        return hdrs, body

    def wait(self, what, fn, timeout=30):
        deadline = time.time() + timeout
        while True:
            got = fn()
            if got:
                return got
            assert time.time() < deadline and self.u.proc.poll() is None, (
                'timed out waiting for %s\n%s' % (what, self.u.log()[-4000:]))
            time.sleep(0.2)

    def stop(self):
        self.below |= descendants(self.u.proc.pid)
        self.u.stop()
        deadline = time.time() + 15
        while [p for p in self.below if alive(p)] and time.time() < deadline:
            time.sleep(0.1)
        left = [p for p in self.below if alive(p)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


@pytest.fixture
def emperor(tmpdir_path):
    started = []

    def _start(variant, addr, extra=(), glob=False):
        e = Emperor(variant, tempfile.mkdtemp(dir=tmpdir_path), addr, extra, glob)
        started.append(e)
        return e

    yield _start
    for e in started:
        e.stop()


def label(vassal_id):
    """What %n is in the vassal: the base name without extension."""
    return os.path.basename(vassal_id).rsplit('.', 1)[0]


def agrees(body, stats):
    """None when the exposition matches the --emperor-stats document, else what differs."""
    s = samples(body)

    def val(name, vassal=None):
        key = (name, frozenset({('vassal', vassal)} if vassal else ()))
        return s.get(key)

    vassals = stats['vassals']
    problems = []
    if val('uwsgi_emperor_vassals') != len(vassals):
        problems.append(('vassals', val('uwsgi_emperor_vassals'), len(vassals)))
    present = {dict(k[1])['vassal'] for k in s if k[0] == 'uwsgi_vassal_present'}
    if present != {label(v['id']) for v in vassals}:
        problems.append(('present', present))
    now = time.time()
    for v in vassals:
        n = label(v['id'])
        on_demand = v['on_demand'] != '' and v['pid'] <= 0
        expect = {
            'uwsgi_vassal_present': 1,
            'uwsgi_vassal_running': int(v['pid'] > 0 and alive(v['pid'])),
            'uwsgi_vassal_respawns_total': v['respawns'],
            'uwsgi_vassal_loyal': v['loyal'],
            'uwsgi_vassal_ready': v['ready'],
            'uwsgi_vassal_accepting': v['accepting'],
            'uwsgi_vassal_on_demand': int(on_demand),
        }
        for fam, want in expect.items():
            if val(fam, n) != want:
                problems.append((fam, n, val(fam, n), want))
        age = val('uwsgi_vassal_heartbeat_age_seconds', n)
        if v['last_heartbeat'] > 0:
            if age is None or abs(age - (now - v['last_heartbeat'])) > 2:
                problems.append(('heartbeat', n, age, now - v['last_heartbeat']))
        elif age is not None:
            problems.append(('heartbeat without one', n, age))
    return problems or None


def agree_with_stats(e, tries=15):
    """Reads both endpoints until they agree (the Emperor may act between the two reads)."""
    for _ in range(tries):
        stats = e.stats()
        _, body = e.scrape()
        problems = agrees(body, stats)
        if not problems:
            return stats, body
        time.sleep(0.3)
    raise AssertionError('the endpoint disagrees with --emperor-stats: %r\n%s\n%s'
                         % (problems, json.dumps(stats, indent=1), body.decode()))


@contextlib.contextmanager
def scrape_flood(addr, clients=4):
    """Clients scraping `addr` back to back while the block runs; yields the list their
    statuses go to."""
    stop = threading.Event()
    statuses = []

    def flood():
        while not stop.is_set():
            statuses.append(get(addr)[0])

    threads = [threading.Thread(target=flood) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield statuses
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def check_output(e):
    _, text = e.scrape()
    promtool_clean(text)
    assert_grouped(text)
    samples(text)
    hdrs, om = e.scrape(headers={'Accept': OM_ACCEPT})
    assert hdrs['content-type'].startswith('application/openmetrics-text'), hdrs
    assert om.endswith(b'# EOF\n')
    samples(om, openmetrics=True)
    return text


@pytest.mark.parametrize('variant,kind', [('pip-routing', 'tcp'), ('pip-norouting', 'unix'),
                                          ('debian', 'unix')])
def test_emperor_families_follow_the_vassals(emperor, tmpdir_path, variant, kind):
    addr = ('127.0.0.1:%d' % free_port() if kind == 'tcp'
            else os.path.join(tmpdir_path, 'emperor.prom.sock'))
    e = emperor(variant, addr, ['--emperor-on-demand-extension', '.socket'])
    ports = dict(zip(('alpha', 'beta', 'gamma', 'delta'), free_ports(4), strict=True))
    e.add('alpha.ini', e.ini(ports['alpha']))
    e.add('beta.ini', e.ini(ports['beta']))
    e.add('gamma.ini', e.ini(ports['gamma'], 'heartbeat = 1\n'))
    e.start()

    e.wait('3 accepting vassals', lambda: len(
        [v for v in e.stats()['vassals'] if v['accepting']]) == 3)
    e.wait('a heartbeat from gamma', lambda: [
        v for v in e.stats()['vassals'] if v['id'] == 'gamma.ini' and v['last_heartbeat'] > 0])
    stats, body = agree_with_stats(e)
    assert {v['id'] for v in stats['vassals']} == {'alpha.ini', 'beta.ini', 'gamma.ini'}
    s = samples(body)
    assert s[('uwsgi_vassal_running', frozenset({('vassal', 'alpha')}))] == 1
    assert ('uwsgi_vassal_heartbeat_age_seconds', frozenset({('vassal', 'gamma')})) in s
    check_output(e)

    # Added: appears. Touched: the Emperor reloads it, respawns counts 1. Removed: disappears.
    e.add('delta.ini', e.ini(ports['delta']))
    e.wait('delta in the endpoint', lambda: b'vassal="delta"' in e.scrape()[1])
    later = time.time() + 5
    os.utime(os.path.join(e.vassals, 'alpha.ini'), (later, later))
    e.wait('alpha reloaded', lambda: [
        v for v in e.stats()['vassals'] if v['id'] == 'alpha.ini' and v['respawns'] == 1])
    e.remove('beta.ini')
    e.wait('beta gone', lambda: b'vassal="beta"' not in e.scrape()[1])
    e.wait('alpha accepting again', lambda: [
        v for v in e.stats()['vassals'] if v['id'] == 'alpha.ini' and v['accepting']])
    stats, body = agree_with_stats(e)
    s = samples(body)
    assert s[('uwsgi_emperor_vassals', frozenset())] == 3
    assert s[('uwsgi_vassal_respawns_total', frozenset({('vassal', 'alpha')}))] == 1

    # On demand: no process until its socket gets a connection.
    sock = os.path.join(tmpdir_path, 'epsilon.sock')
    with open(os.path.join(e.vassals, 'epsilon.ini.socket'), 'w') as f:
        f.write(sock)
    e.add('epsilon.ini', e.ini(free_port()))
    e.wait('epsilon on demand', lambda: samples(e.scrape()[1]).get(
        ('uwsgi_vassal_on_demand', frozenset({('vassal', 'epsilon')}))) == 1)
    stats, body = agree_with_stats(e)
    s = samples(body)
    assert s[('uwsgi_vassal_running', frozenset({('vassal', 'epsilon')}))] == 0
    check_output(e)

    if kind == 'tcp':
        with Prometheus(tempfile.mkdtemp(dir=tmpdir_path), 'global: {scrape_interval: 1s, '
                        'scrape_timeout: 1s}\nscrape_configs:\n- job_name: emperor\n'
                        '  static_configs: [{targets: ["%s"]}]\n' % addr) as prom:
            prom.start()
            res = prom.wait('4 vassals in Prometheus',
                            lambda: len(prom.query('uwsgi_vassal_present')) == 4 and
                            prom.query('uwsgi_vassal_present'))
            assert {r['metric']['vassal'] for r in res} == {'alpha', 'gamma', 'delta',
                                                            'epsilon'}
            up = prom.query('up{job="emperor"}')
            assert [r['value'][1] for r in up] == ['1'], up

    pid = e.u.proc.pid
    left = e.stop()
    assert not left, 'processes outlived the Emperor: %r' % left
    assert not alive(pid)
    log = e.u.log()
    assert 'The Emperor is buried' in log
    assert 'panic' not in log
    if kind == 'unix':
        assert not os.path.exists(addr), 'the UNIX socket file is left behind'


def test_emperor_server_limits_and_access(emperor, tmpdir_path):
    """The same server as --prometheus-server: allow-list, paths, HEAD, gzip; and the Emperor
    keeps spawning vassals on time while the endpoint is scraped in a loop."""
    addr = '127.0.0.1:%d' % free_port()
    e = emperor('pip-routing', addr)
    e.add('one.ini', vassal_ini(free_port()))
    e.start()
    e.wait('one accepting', lambda: [v for v in e.stats()['vassals'] if v['accepting']])
    assert get(addr, '/')[0] == 200
    assert get(addr, '/nope')[0] == 404
    status, hdrs, body = get(addr, method='HEAD')
    assert status == 200 and body == b'' and int(hdrs['content-length']) > 0
    status, hdrs, body = get(addr, headers={'Accept-Encoding': 'gzip'})
    assert status == 200
    if hdrs.get('content-encoding') == 'gzip':
        body = gzip.decompress(body)
    assert b'uwsgi_vassal_present{vassal="one"} 1' in body

    with scrape_flood(addr) as scrapes:
        t0 = time.time()
        e.add('two.ini', vassal_ini(free_port()))
        e.wait('two accepting during the flood', lambda: [
            v for v in e.stats()['vassals'] if v['id'] == 'two.ini' and v['accepting']],
            timeout=15)
        spawn = time.time() - t0
    assert spawn < 10, spawn
    assert scrapes and set(scrapes) == {200}, set(scrapes)
    e.stop()

    # The allow-list of --prometheus-server applies.
    e2 = emperor('pip-routing', '127.0.0.1:%d' % free_port(),
                 ['--prometheus-allow', '10.9.9.9/32'])
    e2.start()
    assert get(e2.addr)[0] == 403


JUNK_APP = """
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain; version=0.0.4')])
    return [b'this is { not an exposition\\n']
"""


def plugin_vassal(e, run, port, stats_port):
    return e.ini(port, 'plugin = %s\nprometheus-server = %s/%%n.prom.sock\n'
                            'stats = 127.0.0.1:%d\nstats-http = true\n'
                      % (e.plugin, run, stats_port))


def own_stats(port):
    """A vassal's own stats server (--stats-http)."""
    return json.loads(get('127.0.0.1:%d' % port, path='/')[2].decode('utf-8', 'replace'))


def up_of(s):
    return {dict(k[1])['vassal']: v for k, v in s.items() if k[0] == 'uwsgi_vassal_scrape_up'}


def merged_pid(e):
    return {v['id']: v['pid'] for v in e.stats()['vassals']}


@pytest.mark.parametrize('variant,kind', [('pip-routing', 'tcp'), ('pip-norouting', 'unix')])
def test_merged_vassal_expositions(emperor, tmpdir_path, variant, kind):
    """Every vassal's own exposition merged: per-vassal request counters equal each vassal's
    own stats server; a slow (SIGSTOPped), socket-less, on-demand or garbage-answering vassal
    gets uwsgi_vassal_scrape_up 0 while the others stay complete and the scrape fast."""
    run = tempfile.mkdtemp(dir=tmpdir_path)
    addr = ('127.0.0.1:%d' % free_port() if kind == 'tcp'
            else os.path.join(tmpdir_path, 'emperor.prom.sock'))
    e = emperor(variant, addr, ['--prometheus-vassal-socket', run + '/{vassal}.prom.sock',
                                '--prometheus-vassal-timeout', '500',
                                '--emperor-on-demand-extension', '.socket'])
    names = ('alpha', 'beta', 'gamma')
    ports = free_ports(2 * len(names))
    http = {n: ports.pop() for n in names}
    stats = {n: ports.pop() for n in names}
    for n in names:
        e.add(n + '.ini', plugin_vassal(e, run, http[n], stats[n]))
    junk_app = os.path.join(e.dir, 'junk.py')
    with open(junk_app, 'w') as f:
        f.write(JUNK_APP)
    e.add('junk.ini', '[uwsgi]\nhttp-socket = %s/junk.prom.sock\nwsgi-file = %s\n'
                      'master = true\nprocesses = 1\n' % (run, junk_app))
    e.add('bare.ini', vassal_ini(free_port()))  # no plugin: no socket
    with open(os.path.join(e.vassals, 'lazy.ini.socket'), 'w') as f:
        f.write(os.path.join(run, 'lazy.sock'))
    e.add('lazy.ini', plugin_vassal(e, run, free_port(), free_port()))
    e.start()
    e.wait('5 accepting vassals', lambda: len(
        [v for v in e.stats()['vassals'] if v['accepting']]) == 5)
    e.wait('3 vassal sockets', lambda: all(
        os.path.exists('%s/%s.prom.sock' % (run, n)) for n in names))

    for i, n in enumerate(names):
        for _ in range(i + 1):
            status, _, _ = get('127.0.0.1:%d' % http[n], path='/')
            assert status == 200

    def scrape_ok():
        _, body = e.scrape()
        s = samples(body)
        return s if all(up_of(s).get(n) == 1 for n in names) else None

    s = e.wait('alpha, beta, gamma merged', scrape_ok)
    assert up_of(s) == {'alpha': 1, 'beta': 1, 'gamma': 1, 'junk': 0, 'bare': 0, 'lazy': 0}
    for i, n in enumerate(names):
        own = own_stats(stats[n])
        for w in own['workers']:
            key = ('uwsgi_worker_requests_total',
                   frozenset({('vassal', n), ('worker', str(w['id']))}))
            assert s.get(key) == w['requests'], (n, w, s.get(key))
        assert sum(w['requests'] for w in own['workers']) == i + 1
    # Nothing of junk, bare or lazy but the Emperor's own series about them.
    for k in s:
        vassal = dict(k[1]).get('vassal')
        if vassal in ('junk', 'bare', 'lazy'):
            assert k[0].startswith(('uwsgi_vassal_', 'uwsgi_emperor_')), k
    text = check_output(e)
    assert text.count(b'# TYPE uwsgi_worker_requests_total ') == 1

    # A vassal whose master is stopped: 0 for it, the rest complete, within the timeout.
    gamma_pid = merged_pid(e)['gamma.ini']
    os.kill(gamma_pid, signal.SIGSTOP)
    try:
        t0 = time.time()
        _, body = e.scrape()
        took = time.time() - t0
        s2 = samples(body)
        assert up_of(s2)['gamma'] == 0 and up_of(s2)['alpha'] == 1 and up_of(s2)['beta'] == 1
        assert took < 1.5, took
        for n in ('alpha', 'beta'):
            assert [k for k in s2 if k[0] == 'uwsgi_worker_requests_total'
                    and ('vassal', n) in k[1]], n
        assert not [k for k in s2 if ('vassal', 'gamma') in k[1]
                    and not k[0].startswith(('uwsgi_vassal_', 'uwsgi_emperor_'))]
        promtool_clean(body)
        assert_grouped(body)
        # Scrapes at the same time share one round.
        took = []

        def one():
            t = time.time()
            assert e.scrape()[0]
            took.append(time.time() - t)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(took) == 4 and max(took) < 1.5, took
    finally:
        os.kill(gamma_pid, signal.SIGCONT)
    e.wait('gamma back', lambda: up_of(samples(e.scrape()[1])).get('gamma') == 1)

    if kind == 'tcp':
        with Prometheus(tempfile.mkdtemp(dir=tmpdir_path), 'global: {scrape_interval: 1s, '
                        'scrape_timeout: 1s}\nscrape_configs:\n- job_name: emperor\n'
                        '  static_configs: [{targets: ["%s"]}]\n' % addr) as prom:
            prom.start()
            res = prom.wait('merged worker requests in Prometheus', lambda: len(prom.query(
                'uwsgi_worker_requests_total')) == 3 and prom.query(
                'uwsgi_worker_requests_total'))
            assert {r['metric']['vassal']: r['value'][1] for r in res} == {
                'alpha': '1', 'beta': '2', 'gamma': '3'}

    # Removed: gone from the merged output too.
    e.remove('beta.ini')
    e.wait('beta gone', lambda: b'vassal="beta"' not in e.scrape()[1])
    left = e.stop()
    assert not left, left
    assert 'panic' not in e.u.log()


@pytest.mark.parametrize('variant', ['pip-routing', 'debian'])
def test_glob_monitor_labels_vassals_like_their_percent_n(emperor, tmpdir_path, variant):
    """`emperor = DIR/*.ini` (the glob monitor) names vassals by the path it matched; the
    `vassal` label and `{vassal}` in --prometheus-vassal-socket are still the base name without
    extension, which is what `%n` is inside the vassal, so its socket is found."""
    run = tempfile.mkdtemp(dir=tmpdir_path)
    e = emperor(variant, '127.0.0.1:%d' % free_port(),
                ['--prometheus-vassal-socket', run + '/{vassal}.prom.sock'], glob=True)
    ports = free_ports(4)
    for n in ('alpha', 'beta'):
        e.add(n + '.ini', plugin_vassal(e, run, ports.pop(), ports.pop()))
    e.start()
    e.wait('2 accepting vassals', lambda: len(
        [v for v in e.stats()['vassals'] if v['accepting']]) == 2)
    ids = sorted(v['id'] for v in e.stats()['vassals'])
    assert ids == [os.path.join(e.vassals, 'alpha.ini'), os.path.join(e.vassals, 'beta.ini')], ids
    def merged():
        s = samples(e.scrape()[1])
        return s if up_of(s) == {'alpha': 1, 'beta': 1} else None

    s = e.wait('alpha and beta merged', merged)
    for n in ('alpha', 'beta'):
        assert ('uwsgi_worker_requests_total', frozenset({('vassal', n), ('worker', '1')})) in s
    assert not [k for k in s if '/' in dict(k[1]).get('vassal', '')]
    agree_with_stats(e)
    check_output(e)
    left = e.stop()
    assert not left, left


def test_twenty_vassals_scrape_fast_and_spawn_on_time(emperor, tmpdir_path):
    """20 real vassals merged: a scrape well under a second; during a scrape flood the Emperor
    still spawns and stops vassals on time."""
    run = tempfile.mkdtemp(dir=tmpdir_path)
    ports = free_ports(41)
    addr = '127.0.0.1:%d' % ports.pop()
    e = emperor('pip-routing', addr, ['--prometheus-vassal-socket', run + '/{vassal}.prom.sock'])
    for i in range(20):
        e.add('v%02d.ini' % i, plugin_vassal(e, run, ports.pop(), ports.pop()))
    e.start()
    e.wait('20 merged vassals', lambda: list(up_of(samples(e.scrape()[1])).values())
           == [1] * 20, timeout=120)
    took = []
    for _ in range(10):
        t0 = time.time()
        _, body = e.scrape()
        took.append(time.time() - t0)
    took.sort()
    assert took[5] < 0.3 and took[-1] < 0.8, took
    promtool_clean(body)
    s = samples(body)
    assert {dict(k[1])['vassal'] for k in s if k[0] == 'uwsgi_worker_requests_total'} == {
        'v%02d' % i for i in range(20)}

    with scrape_flood(addr) as codes:
        t0 = time.time()
        e.add('late.ini', plugin_vassal(e, run, free_port(), free_port()))
        e.wait('late accepting', lambda: [v for v in e.stats()['vassals']
                                          if v['id'] == 'late.ini' and v['accepting']],
               timeout=20)
        spawned = time.time() - t0
        t0 = time.time()
        e.remove('v00.ini')
        e.wait('v00 stopped', lambda: 'v00.ini' not in {v['id'] for v in e.stats()['vassals']},
               timeout=20)
        stopped = time.time() - t0
    assert spawned < 10 and stopped < 10, (spawned, stopped)
    assert codes and set(codes) == {200}, set(codes)
    e.stop()
