"""Issue 13 point 3: constant labels (--prometheus-label NAME=VALUE) on every sample, in every
format and from both front ends, against real uWSGI."""
import time

import pytest

from helpers import PROTO_ACCEPT, decode, get, server_addrs
from promcheck import OM_ACCEPT, promtool_clean, samples

# A value that needs every escape of the text formats.
ENV = 'a"b\\c'
CONSTANT = {'host': 'web-1', 'env': ENV}


def test_every_sample_carries_the_constant_labels(start_uwsgi, pb):
    u = start_uwsgi('pip-routing', ['--workers', '2', '--threads', '2',
                                    '--metric', 'myapp.jobs.done', '--prometheus-exemplars',
                                    '--cache2', 'name=mycache,items=10',
                                    '--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-label', 'host=web-1',
                                    '--prometheus-label', 'env=' + ENV,
                                    '--route', '^/metrics$ prometheus-metrics:'])
    addr = server_addrs(u)[0]
    for path in ['/', '/metric', '/cache', '/status?404']:
        assert u.get(path, headers={
            'traceparent': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'})[0] in (
                200, 404)
    time.sleep(1.5)
    bodies = {
        'text': get(addr)[2],
        'openmetrics': get(addr, headers={'Accept': OM_ACCEPT})[2],
        'route-text': u.get('/metrics')[2],
        'route-openmetrics': u.get('/metrics', headers={'Accept': OM_ACCEPT})[2],
    }
    names = set()
    for kind, body in bodies.items():
        om = kind.endswith('openmetrics')
        got = samples(body, openmetrics=om)
        assert len(got) > 50, kind
        for (name, labels), _ in got.items():
            assert dict(labels).items() >= CONSTANT.items(), (kind, name, dict(labels))
            names.add(name)
        if not om:
            promtool_clean(body)
        else:
            assert b'# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}' in body
    # Histograms, info and custom families are covered too.
    for n in ('uwsgi_request_duration_seconds_bucket', 'uwsgi_build_info',
              'uwsgi_myapp_jobs_done_total', 'uwsgi_up', 'uwsgi_cache_hits_total'):
        assert n in names, n
    # Protobuf: every metric of every family ends with the constant label pairs.
    status, h, body = get(addr, headers={'Accept': PROTO_ACCEPT})
    assert status == 200 and 'protobuf' in h['content-type']
    fams = decode(pb, body)
    assert len(fams) > 20
    for f in fams:
        assert f.metric, f.name
        for m in f.metric:
            pairs = [(lp.name, lp.value) for lp in m.label]
            assert pairs[-2:] == list(CONSTANT.items()), (f.name, pairs)


@pytest.mark.parametrize('value, reason', [
    ('worker=1', "used by the plugin's own series"),
    ('le=1', "used by the plugin's own series"),
    ('__meta=1', 'reserved by Prometheus'),
    ('9lives=1', "character '9' at byte 0 is not allowed"),
    ('a-b=1', "character '-' at byte 1"),
    ('host', 'expected NAME=VALUE'),
    ('host=', 'empty value'),
])
def test_a_bad_label_stops_startup(start_uwsgi, value, reason):
    u = start_uwsgi('pip-norouting', ['--prometheus-server', '127.0.0.1:0',
                                      '--prometheus-label', value], wait_for=None)
    assert u.wait_exit() != 0
    log = u.log()
    assert 'invalid value for --prometheus-label: ' in log and reason in log, log[-2000:]


def test_a_label_given_twice_stops_startup(start_uwsgi):
    u = start_uwsgi('pip-norouting', ['--prometheus-server', '127.0.0.1:0',
                                      '--prometheus-label', 'host=a',
                                      '--prometheus-label', 'host=b'], wait_for=None)
    assert u.wait_exit() != 0
    assert 'invalid value for --prometheus-label: label "host" given twice' in u.log()


def test_a_custom_metric_with_the_same_label_is_left_out_and_logged(start_uwsgi):
    u = start_uwsgi('debian', ['--prometheus-server', '127.0.0.1:0',
                               '--metric', 'db.host.3.queries', '--metric', 'myapp.jobs.done',
                               '--prometheus-label', 'host=web-1'])
    addr = server_addrs(u)[0]
    u.wait_log(r'not exported: db\.host\.3\.queries: its label host is also a constant label')
    body = get(addr)[2]
    promtool_clean(body)
    got = samples(body)
    assert not [k for k in got if k[0].startswith('uwsgi_db_')]
    assert got[('uwsgi_myapp_jobs_done_total', frozenset({('host', 'web-1')}))] == 0
