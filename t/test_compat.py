"""Issue 13 point 2: --prometheus-compat uwsgi_exporter, against real uWSGI and a real Prometheus.

The expected families are written from timonwong/uwsgi_exporter 1.3's collector
(pkg/collector/exporter.go), not from the plugin's code; the values are checked against uWSGI's
own stats server, which is what that exporter reads.
"""
import json
import tempfile
import time
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from conftest import free_port
from helpers import get, server_addrs
from promcheck import OM_ACCEPT, promtool_clean, samples
from promserver import Prometheus

MAIN = {'stats_uri'}
SOCKET = {'stats_uri', 'name', 'proto'}
WORKER = {'stats_uri', 'worker_id'}
APP = {'stats_uri', 'worker_id', 'app_id', 'mountpoint', 'chdir'}
CORE = {'stats_uri', 'worker_id', 'core_id'}
CACHE = {'stats_uri', 'name'}

# family -> (type, label names). The exporter's cache hits/misses/full are counters named
# without _total; here they are gauges (docs/compat.md says why).
FAMILIES = {
    'uwsgi_up': ('gauge', set()),
    'uwsgi_listen_queue_length': ('gauge', MAIN),
    'uwsgi_listen_queue_errors': ('gauge', MAIN),
    'uwsgi_signal_queue_length': ('gauge', MAIN),
    'uwsgi_workers': ('gauge', MAIN),
    **{'uwsgi_socket_' + n: ('gauge', SOCKET)
       for n in ('queue_length', 'max_queue_length', 'shared', 'can_offload')},
    **{'uwsgi_worker_' + n: ('gauge', WORKER)
       for n in ('accepting', 'delta_requests', 'signal_queue_length', 'rss_bytes', 'vsz_bytes',
                 'running_time_seconds', 'last_spawn_time_seconds',
                 'average_response_time_seconds', 'apps', 'cores', 'busy', 'idle', 'cheap')},
    **{'uwsgi_worker_' + n: ('counter', WORKER)
       for n in ('requests', 'exceptions', 'harakiri_count', 'signals', 'respawn_count',
                 'transmitted_bytes')},
    'uwsgi_worker_app_startup_time_seconds': ('gauge', APP),
    'uwsgi_worker_app_requests': ('counter', APP),
    'uwsgi_worker_app_exceptions': ('counter', APP),
    'uwsgi_worker_core_busy': ('gauge', CORE),
    **{'uwsgi_worker_core_' + n: ('counter', CORE)
       for n in ('requests', 'static_requests', 'routed_requests', 'offloaded_requests',
                 'write_errors', 'read_errors')},
    **{'uwsgi_cache_' + n: ('gauge', CACHE)
       for n in ('hits', 'misses', 'full', 'items', 'max_items')},
}

# Native families whose data the compat families carry: never exported beside them.
REPLACED = ('uwsgi_worker_status', 'uwsgi_socket_listen_queue', 'uwsgi_listen_queue',
            'uwsgi_signal_queue', 'uwsgi_worker_tx_bytes', 'uwsgi_worker_respawns',
            'uwsgi_worker_harakiri', 'uwsgi_worker_last_spawn_timestamp_seconds',
            'uwsgi_worker_core_in_request', 'uwsgi_worker_avg_response_time_seconds')

DASHBOARD_QUERIES = [
    'sum by (instance)(uwsgi_workers)',
    'sum by (instance)(uwsgi_worker_busy)',
    'sum by (instance)(uwsgi_listen_queue_length)',
    'sum by (instance)(rate(uwsgi_worker_requests_total[1m]))',
    'sum by (instance)(increase(uwsgi_worker_harakiri_count_total[1m]))',
    'avg(uwsgi_worker_busy) by (instance)',
]


def families(body, openmetrics=False):
    parse = om_parse if openmetrics else text_parse
    return {f.name: f for f in parse(body.decode())}


def stats_json(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=10) as r:
        return json.loads(r.read().decode('utf-8', 'replace'))


def without_load(js):
    """A stats reading as comparable text, less `load` (which moves with every request)."""
    return json.dumps({k: v for k, v in js.items() if k != 'load'}, sort_keys=True)


def L(**kw):
    return frozenset(kw.items())


@pytest.fixture
def compat(start_uwsgi):
    def _start(args=(), variant='pip-routing'):
        # Not `--stats 127.0.0.1:0`: the stats_uri label is the option as written, and must
        # be the address uwsgi_exporter would be given.
        st = free_port()
        u = start_uwsgi(variant, ['--workers', '2', '--threads', '2',
                                  '--cache2', 'name=mycache,items=10',
                                  '--stats', '127.0.0.1:%d' % st, '--stats-http',
                                  '--prometheus-server', '127.0.0.1:0',
                                  '--prometheus-compat', 'uwsgi_exporter'] + list(args))
        u.stats_port = st
        return u, server_addrs(u)[0]
    return _start


def expected_from_stats(js, uri):
    """What uwsgi_exporter derives from one stats-server reading: {(sample, labels): value}."""
    out = {
        ('uwsgi_listen_queue_length', L(stats_uri=uri)): js['listen_queue'],
        ('uwsgi_listen_queue_errors', L(stats_uri=uri)): js['listen_queue_errors'],
        ('uwsgi_signal_queue_length', L(stats_uri=uri)): js['signal_queue'],
        ('uwsgi_workers', L(stats_uri=uri)): len(js['workers']),
    }
    for s in js['sockets']:
        lab = L(stats_uri=uri, name=s['name'], proto=s['proto'])
        out[('uwsgi_socket_max_queue_length', lab)] = s['max_queue']
        out[('uwsgi_socket_shared', lab)] = s['shared']
        out[('uwsgi_socket_can_offload', lab)] = s['can_offload']
    for w in js['workers']:
        lab = L(stats_uri=uri, worker_id=str(w['id']))
        for name, v in [('accepting', w['accepting']), ('delta_requests', w['delta_requests']),
                        ('signal_queue_length', w['signal_queue']), ('rss_bytes', w['rss']),
                        ('vsz_bytes', w['vsz']), ('running_time_seconds', w['running_time'] / 1e6),
                        ('last_spawn_time_seconds', w['last_spawn']),
                        ('average_response_time_seconds', w['avg_rt'] / 1e6),
                        ('apps', len(w['apps'])), ('cores', len(w['cores'])),
                        ('busy', int(w['status'] == 'busy')), ('idle', int(w['status'] == 'idle')),
                        ('cheap', int(w['status'] == 'cheap')),
                        ('requests_total', w['requests']), ('exceptions_total', w['exceptions']),
                        ('harakiri_count_total', w['harakiri_count']),
                        ('signals_total', w['signals']),
                        ('respawn_count_total', w['respawn_count']),
                        ('transmitted_bytes_total', w['tx'])]:
            out[('uwsgi_worker_' + name, lab)] = v
        for a in w['apps']:
            alab = L(stats_uri=uri, worker_id=str(w['id']), app_id=str(a['id']),
                     mountpoint=a['mountpoint'], chdir=a['chdir'])
            out[('uwsgi_worker_app_startup_time_seconds', alab)] = a['startup_time']
            out[('uwsgi_worker_app_requests_total', alab)] = a['requests']
            out[('uwsgi_worker_app_exceptions_total', alab)] = a['exceptions']
        for c in w['cores']:
            clab = L(stats_uri=uri, worker_id=str(w['id']), core_id=str(c['id']))
            out[('uwsgi_worker_core_busy', clab)] = c['in_request']
            for n in ('requests', 'static_requests', 'routed_requests', 'offloaded_requests',
                      'write_errors', 'read_errors'):
                out[('uwsgi_worker_core_%s_total' % n, clab)] = c[n]
    for c in js['caches']:
        lab = L(stats_uri=uri, name=c['name'])
        for name, key in [('hits', 'hits'), ('misses', 'miss'), ('full', 'full'),
                          ('items', 'items'), ('max_items', 'max_items')]:
            out[('uwsgi_cache_' + name, lab)] = c[key]
    return out


def test_every_family_with_its_type_labels_and_values(compat):
    u, addr = compat(['--metric', 'myapp.jobs.done', '--memory-report'])
    for path in ['/', '/cache', '/cache', '/metric', '/']:
        assert u.get(path)[0] == 200
    # An exception in the app: uWSGI closes the connection (http.client.RemoteDisconnected).
    with pytest.raises(ConnectionResetError):
        u.get('/error')
    time.sleep(1.5)  # uWSGI's collector, for the aggregates
    uri = '127.0.0.1:%d' % u.stats_port
    for openmetrics in (False, True):
        headers = {'Accept': OM_ACCEPT} if openmetrics else {}
        status, _, body = get(addr, headers=headers)
        assert status == 200
        fams = families(body, openmetrics)
        samples(body, openmetrics)  # no duplicate series, parses
        for name, (ty, labels) in FAMILIES.items():
            fam_name = name
            assert fam_name in fams, '%s missing (openmetrics=%s)' % (name, openmetrics)
            f = fams[fam_name]
            assert f.type == ty, (name, f.type)
            assert f.samples, name
            for s in f.samples:
                assert set(s.labels) == labels, (name, s.labels)
                if labels:
                    assert s.labels['stats_uri'] == uri
        for gone in REPLACED:
            assert gone not in fams, gone
        # The plugin's additions stay under their own names.
        for extra in ('uwsgi_request_duration_seconds', 'uwsgi_myapp_jobs_done',
                      'uwsgi_worker_oldest_request_seconds', 'uwsgi_master_cpu_seconds',
                      'uwsgi_build_info', 'uwsgi_requests'):
            assert extra in fams, extra
    text = get(addr)[2]
    promtool_clean(text)
    got = samples(text)
    # uwsgi_exporter's values from the same stats-server reading (retried while it moves).
    for _ in range(6):
        before = stats_json(u.stats_port)
        got = samples(get(addr)[2])
        after = stats_json(u.stats_port)
        if without_load(before) != without_load(after):
            time.sleep(1)
            continue
        want = expected_from_stats(before, uri)
        bad = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != pytest.approx(v)}
        if not bad:
            break
        time.sleep(1.5)
    assert not bad, bad
    # Every compat series is one the exporter would produce, and vice versa (sockets: once).
    compat_keys = {k for k in got if k[0].replace('_total', '') in FAMILIES and k[0] != 'uwsgi_up'}
    assert compat_keys - {k for k in compat_keys if k[0] == 'uwsgi_socket_queue_length'} \
        == set(want), compat_keys ^ set(want)
    assert got[('uwsgi_worker_requests_total', L(stats_uri=uri, worker_id='1'))] + \
        got[('uwsgi_worker_requests_total', L(stats_uri=uri, worker_id='2'))] >= 6


def test_stats_uri_option_and_no_cores(compat, start_uwsgi):
    u, addr = compat(['--prometheus-compat-stats-uri', 'http://10.0.0.1:1717',
                      '--prometheus-no-cores', '--prometheus-label', 'instance_name=a'])
    body = get(addr)[2]
    promtool_clean(body)
    fams = families(body)
    assert not [n for n in fams if n.startswith('uwsgi_worker_core_')]
    for s in fams['uwsgi_worker_busy'].samples:
        assert s.labels['stats_uri'] == 'http://10.0.0.1:1717'
        assert s.labels['instance_name'] == 'a'
    # Without --stats and without the option, the label is empty.
    v = start_uwsgi('pip-routing', ['--workers', '1', '--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-compat', 'uwsgi_exporter'])
    body = get(server_addrs(v)[0])[2]
    promtool_clean(body)
    assert samples(body)[('uwsgi_workers', L(stats_uri=''))] == 1


def test_unknown_compat_stops_startup(start_uwsgi):
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-compat', 'statsd'], wait_for=None)
    assert u.wait_exit() != 0
    assert "invalid value for --prometheus-compat: 'statsd'" in u.log()


def test_dashboard_queries_on_a_real_prometheus(compat, tmpdir_path):
    u, addr = compat()
    config = ('global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n'
              '  - job_name: uwsgi\n    static_configs: [{targets: ["%s"]}]\n' % addr)
    workdir = tempfile.mkdtemp(dir=tmpdir_path)
    with Prometheus(workdir, config).start() as prom:
        def all_answer():
            for _ in range(3):
                u.get('/')
            results = {q: prom.query(q) for q in DASHBOARD_QUERIES}
            return results if all(results.values()) else None

        results = prom.wait('every dashboard query to return data', all_answer, timeout=45)
        for t in prom.targets():
            assert t['health'] == 'up' and t['lastError'] == '', t
        # Prometheus 2.42 negotiated OpenMetrics; the names are those of the text format.
        assert float(results['sum by (instance)(uwsgi_workers)'][0]['value'][1]) == 2
        assert float(results['sum by (instance)(rate(uwsgi_worker_requests_total[1m]))']
                     [0]['value'][1]) > 0
        assert prom.query('uwsgi_cache_hits'), 'cache series stored under its old name'
