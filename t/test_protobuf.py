"""Issue 12: Prometheus' protobuf exposition and native histograms, against real uWSGI.

The protobuf output is decoded with Google's protobuf library (engine/tests/data/metrics.proto
compiled by grpcio-tools' protoc), independently of the plugin, and compared with the text
output of the same instance; a real Prometheus with native histograms on scrapes both front
ends and answers histogram_quantile from the native histogram.
"""
import math
import tempfile
import time

import pytest

from helpers import PROTO_ACCEPT, decode, get, native_counts, server_addrs
from promcheck import samples
from promserver import Prometheus

PROTO_CT = ('application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; '
            'encoding=delimited')
# Values of these families move between two scrapes (the scrape itself costs CPU, memory, fds).
MOVING = ('uwsgi_master_', 'uwsgi_worker_cpu_', 'uwsgi_worker_resident_', 'uwsgi_worker_open_fds',
          'uwsgi_worker_oldest_request_')


def proto_samples(fams):
    """The text format's samples rebuilt from protobuf families: {(name, labels): value}."""
    out = {}
    for f in fams:
        for m in f.metric:
            labels = frozenset((lp.name, lp.value) for lp in m.label)
            if f.type == 0:
                out[(f.name, labels)] = m.counter.value
            elif f.type == 1:
                out[(f.name, labels)] = m.gauge.value
            elif f.type == 4:
                h = m.histogram
                for b in h.bucket:
                    if math.isinf(b.upper_bound):
                        continue
                    le = ('%.6f' % b.upper_bound).rstrip('0').rstrip('.')
                    out[(f.name + '_bucket', labels | {('le', le)})] = b.cumulative_count
                out[(f.name + '_bucket', labels | {('le', '+Inf')})] = h.sample_count
                out[(f.name + '_sum', labels)] = h.sample_sum
                out[(f.name + '_count', labels)] = h.sample_count
            else:
                raise AssertionError('unexpected type %d for %s' % (f.type, f.name))
    return out


def test_protobuf_agrees_with_text(start_uwsgi, pb):
    u = start_uwsgi('pip-routing', ['--workers', '2', '--threads', '2', '--metric', 'myapp.jobs',
                                    '--prometheus-server', '127.0.0.1:0',
                                    '--route', '^/metrics$ prometheus-metrics:protobuf'])
    addr = server_addrs(u)[0]
    for path in ['/', '/', '/status?404', '/slow?0.3', '/slow?0.3', '/metric']:
        assert u.get(path)[0] in (200, 404)
    time.sleep(1.5)  # the last request's hook, and uWSGI's collector for the aggregates
    status, h, body = get(addr, headers={'Accept': PROTO_ACCEPT})
    assert status == 200 and h['content-type'] == PROTO_CT
    text = samples(get(addr)[2])
    fams = decode(pb, body)
    got = proto_samples(fams)
    assert set(got) == set(text), (set(got) ^ set(text))
    for key, v in text.items():
        if key[0].startswith(MOVING):
            continue
        assert got[key] == pytest.approx(v, rel=1e-12, abs=1e-9), key
    names = [f.name for f in fams]
    assert len(names) == len(set(names))
    assert 'uwsgi_requests_total' in names  # counters keep their _total, as from text
    units = {f.name: f.unit for f in fams}
    assert units['uwsgi_request_duration_seconds'] == 'seconds'
    assert all(f.help for f in fams)
    # The route action forced to protobuf (and served by a worker) decodes too.
    status, h, rbody = u.get('/metrics')
    assert status == 200 and h['content-type'] == PROTO_CT
    assert 'uwsgi_requests_total' in [f.name for f in decode(pb, rbody)]


def test_native_buckets_agree_with_classic(start_uwsgi, pb):
    u = start_uwsgi('pip-norouting', ['--workers', '2', '--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    for _ in range(5):
        assert u.get('/')[0] == 200
    for _ in range(3):
        assert u.get('/slow?0.3')[0] == 200
    time.sleep(0.5)
    fams = {f.name: f for f in decode(pb, get(addr, headers={'Accept': PROTO_ACCEPT})[2])}
    (m,) = fams['uwsgi_request_duration_seconds'].metric
    h = m.histogram
    assert h.sample_count == 8 and h.schema == 3 and h.zero_threshold == 0
    counts = native_counts(h)  # {bucket index: count}
    assert sum(counts.values()) + h.zero_count == h.sample_count
    base = 2 ** (2 ** -3)
    upper = {i: base ** i for i in counts}
    slow = sum(c for i, c in counts.items() if upper[i] > 0.3)
    fast = sum(c for i, c in counts.items() if upper[i] <= 0.25)
    assert (slow, fast) == (3, 5), counts
    # Same count and sum as the classic buckets of the same message.
    classic = {b.upper_bound: b.cumulative_count for b in h.bucket}
    assert classic[0.25] == 5 and classic[0.5] == 8
    assert 0.9 <= h.sample_sum <= 8 * 1.0


@pytest.mark.parametrize('native', [True, False], ids=['native-histograms', 'default'])
def test_real_prometheus_scrapes_both_front_ends(start_uwsgi, tmpdir_path, native):
    u = start_uwsgi('pip-routing', ['--workers', '2', '--prometheus-server', '127.0.0.1:0',
                                    '--route', '^/metrics$ prometheus-metrics:'])
    addr = server_addrs(u)[0]
    config = ('global: {scrape_interval: 1s, scrape_timeout: 1s}\n'
              'scrape_configs:\n'
              '  - job_name: server\n'
              '    static_configs: [{targets: ["%s"]}]\n'
              '  - job_name: route\n'
              '    static_configs: [{targets: ["127.0.0.1:%d"]}]\n' % (addr, u.http_port))
    args = ['--enable-feature=native-histograms'] if native else []
    with Prometheus(tempfile.mkdtemp(dir=tmpdir_path), config, args).start() as prom:
        q = ('histogram_quantile(0.5, sum(rate(uwsgi_request_duration_seconds[30s])))'
             if native else
             'histogram_quantile(0.5, sum by (le) '
             '(rate(uwsgi_request_duration_seconds_bucket[30s])))')

        def scraped():
            for _ in range(5):
                u.get('/')
            u.get('/slow?0.1')
            healthy = [t for t in prom.targets() if t['health'] == 'up' and not t['lastError']]
            res = prom.query(q)
            return (len(healthy) == 2 and len(res) == 1 and res[0]['value'][1] != 'NaN'
                    and len(prom.query('uwsgi_requests_total')) == 2)

        prom.wait('both front ends scraped and a quantile', scraped)
        for t in prom.targets():
            assert t['health'] == 'up' and t['lastError'] == '', t
        if native:
            # The native series exists only when Prometheus ingested the native histogram.
            assert prom.query('histogram_count(uwsgi_request_duration_seconds)'), prom.log()[-2000:]
        else:
            assert not prom.query('histogram_count(uwsgi_request_duration_seconds)')
