"""Issue 6: live uWSGI state (worker status, harakiri, exceptions, sockets, apps, processes)."""
import http.client
import json
import os
import re
import threading
import time
import urllib.request

import pytest

from helpers import get, server_addrs, stats_port
from promcheck import assert_grouped, promtool_clean, samples


def L(**kw):
    return frozenset(kw.items())


def stats(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=10) as r:
        return json.loads(r.read().decode('utf-8', 'replace'))


@pytest.fixture
def instance(start_uwsgi):
    def _start(args, variant='pip-routing'):
        u = start_uwsgi(variant, ['--prometheus-server', '127.0.0.1:0',
                                  '--stats', '127.0.0.1:0', '--stats-http'] + list(args))
        u.stats_port = stats_port(u)
        return u, server_addrs(u)[0]
    return _start


@pytest.mark.parametrize('variant', ['pip-routing', 'debian'])
def test_two_busy_two_idle(instance, variant):
    u, addr = instance(['--workers', '4', '--threads', '1'], variant)
    slow = []  # the two requests that keep the workers busy must themselves succeed
    threads = [threading.Thread(target=lambda: slow.append(u.get('/slow?3', timeout=20)[0]))
               for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    s = samples(get(addr)[2])
    for t in threads:
        t.join()
    assert slow == [200, 200], slow
    status = {}
    for w in '1234':
        states = {st: s[('uwsgi_worker_status', L(worker=w, status=st))]
                  for st in ('busy', 'idle', 'cheap', 'pause', 'sig')}
        assert sum(states.values()) == 1, states
        status[w] = [k for k, v in states.items() if v == 1][0]
    assert sorted(status.values()) == ['busy', 'busy', 'idle', 'idle'], status
    busy_cores = sum(v for (n, _), v in s.items() if n == 'uwsgi_worker_core_in_request')
    assert busy_cores == 2


def test_harakiri_and_exceptions(instance):
    u, addr = instance(['--workers', '2', '--harakiri', '1'])
    with pytest.raises(http.client.RemoteDisconnected):
        u.get('/slow?4', timeout=10)  # the worker is killed mid-request
    u.wait_log(r'HARAKIRI')
    for _ in range(3):
        with pytest.raises(http.client.RemoteDisconnected):
            u.get('/error')  # uWSGI closes the connection of a request whose app raised
    time.sleep(0.5)
    s = samples(get(addr)[2])
    harakiri = {dict(k)['worker']: v for (n, k), v in s.items()
                if n == 'uwsgi_worker_harakiri_total'}
    assert sorted(harakiri.values()) == [0, 1], harakiri
    exc = sum(v for (n, _), v in s.items() if n == 'uwsgi_worker_exceptions_total')
    app_exc = sum(v for (n, _), v in s.items() if n == 'uwsgi_worker_app_exceptions_total')
    assert exc == 3 and app_exc == 3, (exc, app_exc)
    js = stats(u.stats_port)
    assert {str(w['id']): w['harakiri_count'] for w in js['workers']} == harakiri


def test_sockets_carry_their_names(instance, tmpdir_path):
    sock = '%s/app.sock' % tmpdir_path
    u, addr = instance(['--socket', sock, '--workers', '1'])
    s = samples(get(addr)[2])
    names = {dict(k)['name']: dict(k) for (n, k) in s if n == 'uwsgi_socket_listen_queue'}
    assert set(names) == {'127.0.0.1:%d' % u.http_port, sock}, names
    assert names[sock]['proto'] == 'uwsgi'
    assert names['127.0.0.1:%d' % u.http_port]['proto'] == 'http'


def worker_expectations(js):
    """(sample name, labels) -> value, from the stats server's live JSON."""
    want = {}
    want[('uwsgi_listen_queue', frozenset())] = js['listen_queue']
    want[('uwsgi_load', frozenset())] = js['load']
    want[('uwsgi_signal_queue', frozenset())] = js['signal_queue']
    for c in js['caches']:
        cl = L(name=c['name'])
        want[('uwsgi_cache_items', cl)] = c['items']
        want[('uwsgi_cache_max_items', cl)] = c['max_items']
        want[('uwsgi_cache_hits_total', cl)] = c['hits']
        want[('uwsgi_cache_misses_total', cl)] = c['miss']
        want[('uwsgi_cache_full_total', cl)] = c['full']
    for sp in js['spoolers']:
        sl = L(dir=sp['dir'])
        want[('uwsgi_spooler_tasks_total', sl)] = sp['tasks']
        want[('uwsgi_spooler_respawns_total', sl)] = sp['respawns']
        want[('uwsgi_spooler_running', sl)] = sp['running']
    for sock in js['sockets']:
        labels = None
        for k in ('queue', 'max_queue'):
            fam = 'uwsgi_socket_listen_queue' + ('_max' if k == 'max_queue' else '')
            want[(fam, ('name', sock['name']), ('proto', sock['proto']))] = sock[k]
        del labels
    for w in js['workers']:
        wl = L(worker=str(w['id']))
        status = w['status'] if not w['status'].startswith('sig') else 'sig'
        for st in ('busy', 'idle', 'cheap', 'pause', 'sig'):
            want[('uwsgi_worker_status', L(worker=str(w['id']), status=st))] = int(st == status)
        for fam, key, scale in [
            ('uwsgi_worker_requests_total', 'requests', 1),
            ('uwsgi_worker_delta_requests', 'delta_requests', 1),
            ('uwsgi_worker_exceptions_total', 'exceptions', 1),
            ('uwsgi_worker_harakiri_total', 'harakiri_count', 1),
            ('uwsgi_worker_signals_total', 'signals', 1),
            ('uwsgi_worker_respawns_total', 'respawn_count', 1),
            ('uwsgi_worker_tx_bytes_total', 'tx', 1),
            ('uwsgi_worker_avg_response_time_seconds', 'avg_rt', 1e-6),
            ('uwsgi_worker_running_time_seconds_total', 'running_time', 1e-6),
            ('uwsgi_worker_rss_bytes', 'rss', 1),
            ('uwsgi_worker_vsz_bytes', 'vsz', 1),
            ('uwsgi_worker_accepting', 'accepting', 1),
            ('uwsgi_worker_last_spawn_timestamp_seconds', 'last_spawn', 1),
        ]:
            want[(fam, wl)] = w[key] * scale
        for app in w['apps']:
            al = L(worker=str(w['id']), app=str(app['id']), mountpoint=app['mountpoint'])
            want[('uwsgi_worker_app_requests_total', al)] = app['requests']
            want[('uwsgi_worker_app_exceptions_total', al)] = app['exceptions']
        for core in w['cores']:
            cl = L(worker=str(w['id']), core=str(core['id']))
            for k in ('requests', 'static_requests', 'routed_requests', 'offloaded_requests',
                      'write_errors', 'read_errors'):
                want[('uwsgi_worker_core_%s_total' % k, cl)] = core[k]
            want[('uwsgi_worker_core_in_request', cl)] = core['in_request']
    return want


@pytest.mark.parametrize('variant', ['pip-routing', 'debian', 'pip-norouting'])
def test_every_value_the_stats_server_has_is_equal(instance, tmpdir_path, variant):
    spool = os.path.join(tmpdir_path, 'spool')
    os.mkdir(spool)
    u, addr = instance(['--workers', '3', '--threads', '2', '--memory-report',
                        '--cache2', 'name=mycache,items=100', '--spooler', spool], variant)
    for path in ['/', '/a', '/metric', '/b', '/c', '/cache', '/cache']:
        assert u.get(path)[0] == 200
    for _ in range(2):
        with pytest.raises(http.client.RemoteDisconnected):
            u.get('/error')  # uWSGI closes the connection of a request whose app raised
    time.sleep(1.5)
    js = stats(u.stats_port)
    s = samples(get(addr)[2])
    # Every list worker_expectations walks holds exactly what was configured: none of its
    # loops can be skipped by an empty or missing list.
    assert [c['name'] for c in js['caches']] == ['mycache'], js['caches']
    assert [sp['dir'] for sp in js['spoolers']] == [spool], js['spoolers']
    assert [sk['name'] for sk in js['sockets']] == ['127.0.0.1:%d' % u.http_port], js['sockets']
    assert [w['id'] for w in js['workers']] == [1, 2, 3], js['workers']
    for w in js['workers']:
        assert [c['id'] for c in w['cores']] == [0, 1], w['cores']
        assert [a['mountpoint'] for a in w['apps']] == [''], w['apps']
    want = worker_expectations(js)
    checked = 0
    for key, value in want.items():
        name = key[0]
        if len(key) == 3:  # socket: match by name and proto, whatever the index label
            got = [v for (n, k), v in s.items() if n == name and key[1] in k and key[2] in k]
            assert got == [value], (key, got)
        else:
            assert key in s, 'missing %s %s' % (name, dict(key[1]))
            assert abs(s[key] - value) < 1e-9, '%s %s: scrape %r, stats %r' % (
                name, dict(key[1]), s[key], value)
        checked += 1
    assert checked > 50
    assert s[('uwsgi_cache_hits_total', L(name='mycache'))] == 2
    assert s[('uwsgi_cache_misses_total', L(name='mycache'))] == 2
    assert s[('uwsgi_cache_items', L(name='mycache'))] == 1
    # --memory-report makes uWSGI fill rss/vsz: the values are real, not zeros.
    assert any(v > 0 for (n, _), v in s.items() if n == 'uwsgi_worker_rss_bytes')


def test_many_threads_complete_and_no_cores_shrinks(instance):
    u, addr = instance(['--processes', '8', '--threads', '256'])
    status, h, full = get(addr, timeout=30)
    assert status == 200 and int(h['content-length']) == len(full)
    s_full = samples(full)
    promtool_clean(full)
    assert_grouped(full)
    per_core = [k for k in s_full if ('core', '255') in k[1]]
    assert len(per_core) == 8 * 8  # 7 uWSGI per-core metrics + in_request, for 8 workers
    u.stop()

    u2, addr2 = instance(['--processes', '8', '--threads', '256', '--prometheus-no-cores'])
    small = get(addr2, timeout=30)[2]
    s_small = samples(small)
    assert not [k for k in s_small if any(lk == 'core' for lk, _ in k[1])]
    assert len(s_full) - len(s_small) == 8 * 256 * 8
    assert len(small) * 20 < len(full)


def test_process_metrics_are_real(instance):
    u, addr = instance(['--workers', '2'])
    # The first scrape opens the /proc files the master then keeps open (two per process,
    # counted from then on): compare the second one.
    get(addr)
    s = samples(get(addr)[2])
    pid = int(re.search(r'spawned uWSGI master process \(pid: (\d+)', u.log()).group(1))
    import os
    fds = len(os.listdir('/proc/%d/fd' % pid))
    assert abs(s[('uwsgi_master_open_fds', frozenset())] - fds) <= 2
    assert s[('uwsgi_master_resident_memory_bytes', frozenset())] > 1 << 20
    for w in '12':
        assert s[('uwsgi_worker_resident_memory_bytes', L(worker=w))] > 1 << 20
    assert s[('uwsgi_up', frozenset())] == 1
    assert abs(s[('uwsgi_start_time_seconds', frozenset())] - time.time()) < 60


def test_mules(instance):
    u, addr = instance(['--workers', '1', '--mule', '--mule'])
    u.wait_log(r'spawned uWSGI mule 2')
    s = samples(get(addr)[2])
    for m in ('1', '2'):
        assert s[('uwsgi_mule_running', L(mule=m))] == 1
        assert s[('uwsgi_mule_signals_total', L(mule=m))] == 0
        assert s[('uwsgi_mule_in_signal', L(mule=m))] == 0
