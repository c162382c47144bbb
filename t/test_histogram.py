"""Issue 11: request-duration histograms recorded by the after-request hook, against real uWSGI.

A known mix of requests (GET/POST, 200/404/500, two sleeping 300 ms) must show up exactly in
uwsgi_request_duration_seconds by method and status class, in every uWSGI variant and
concurrency model, across respawns and a harakiri; exemplars and the oldest-request gauge too.
"""
import socket
import threading
import time

import pytest

from conftest import MAIN_VARIANTS
from helpers import get, server_addrs
from promcheck import promtool_clean, samples

FAMILY = 'uwsgi_request_duration_seconds'
OM = {'Accept': 'application/openmetrics-text; version=1.0.0'}

MODES = {
    'processes': ['--workers', '2'],
    'threads': ['--workers', '1', '--threads', '4'],
    'async': ['--workers', '1', '--async', '8', '--ugreen'],
}


def request(port, method='GET', path='/', headers=None):
    """One HTTP/1.0 request on its own connection; returns (status, seconds)."""
    h = ''.join('%s: %s\r\n' % kv for kv in (headers or {}).items())
    t0 = time.monotonic()
    with socket.create_connection(('127.0.0.1', port), timeout=20) as s:
        s.sendall(('%s %s HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n%s\r\n'
                   % (method, path, h)).encode())
        data = b''
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    elapsed = time.monotonic() - t0
    status = int(data.split(b' ', 2)[1]) if data.startswith(b'HTTP/') else None
    return status, elapsed


def histogram(body):
    """{(method, code): {'buckets': {le: n}, 'sum': s, 'count': n}} from a text exposition."""
    out = {}
    for (name, labels), v in samples(body).items():
        if not name.startswith(FAMILY + '_'):
            continue
        labels = dict(labels)
        h = out.setdefault((labels['method'], labels['code']), {'buckets': {}})
        if name.endswith('_bucket'):
            h['buckets'][labels['le']] = v
        else:
            h[name.rsplit('_', 1)[1]] = v
    return out


def counts(body):
    return {k: h['count'] for k, h in histogram(body).items()}


def wait_counts(addr, want, timeout=5):
    """Scrapes until the histogram's counts equal `want` (the hook runs after the response is
    sent, so the last request may land a moment after its client returned)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = get(addr)
        assert status == 200
        got = counts(body)
        if got == want or time.monotonic() > deadline:
            assert got == want
            return body
        time.sleep(0.05)


def start(start_uwsgi, variant, args):
    if variant == 'debian' and '--ugreen' in args:
        args = ['--plugin', 'ugreen'] + args
    u = start_uwsgi(variant, ['--prometheus-server', '127.0.0.1:0'] + list(args))
    return u, server_addrs(u)[0]


@pytest.mark.parametrize('mode', sorted(MODES))
@pytest.mark.parametrize('variant', MAIN_VARIANTS)
def test_counts_by_method_and_code(start_uwsgi, variant, mode):
    u, addr = start(start_uwsgi, variant, MODES[mode])
    assert 'added "metrics_prometheus_after_request(struct wsgi_request *)" to the ' \
           'after-request chain' in u.log()
    sent = []
    for _ in range(6):
        sent.append(('GET', request(u.http_port)))
    for _ in range(3):
        sent.append(('POST', request(u.http_port, 'POST')))
    for _ in range(4):
        sent.append(('GET', request(u.http_port, path='/status?404')))
    for _ in range(2):
        sent.append(('GET', request(u.http_port, path='/status?500')))
    # An exception before start_response: the client gets no response (uWSGI closes the
    # connection), but uWSGI records status 500 for it, as its request log does.
    errors = [request(u.http_port, path='/error') for _ in range(2)]
    assert [s for s, _ in errors] == [None, None]
    sent += [('GET', (500, e)) for _, e in errors]
    slow = [request(u.http_port, path='/slow?0.3') for _ in range(2)]
    sent += [('GET', r) for r in slow]
    want = {}
    for method, (status, _) in sent:
        assert status in (200, 404, 500), sent
        key = (method, '%dxx' % (status // 100))
        want[key] = want.get(key, 0) + 1
    assert want == {('GET', '2xx'): 8, ('POST', '2xx'): 3, ('GET', '4xx'): 4, ('GET', '5xx'): 4}
    body = wait_counts(addr, want)
    h = histogram(body)
    get2 = h[('GET', '2xx')]
    # The six fast GETs are well under 250 ms, the two slow ones between 250 and 500 ms.
    assert get2['buckets']['0.25'] == 6 and get2['buckets']['0.5'] == 8, get2
    assert get2['buckets']['+Inf'] == 8 == get2['count']
    # uWSGI's durations are inside what the clients measured, end to end.
    client_total = sum(e for m, (s, e) in sent if m == 'GET' and s == 200)
    assert 0.6 <= get2['sum'] <= client_total, (get2['sum'], client_total)
    for key, hh in h.items():
        les = [v for le, v in sorted(hh['buckets'].items(),
                                     key=lambda kv: float(kv[0]))]
        assert les == sorted(les) and les[-1] == hh['count'], (key, hh)
    promtool_clean(body)
    status, _, om = get(addr, headers=OM)
    assert status == 200
    samples(om, openmetrics=True)
    assert b'# TYPE uwsgi_request_duration_seconds histogram' in om


def test_counts_survive_respawns(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-routing', ['--workers', '2', '--max-requests', '5',
                                                 '--min-worker-lifetime', '0'])
    for i in range(30):
        assert request(u.http_port, path='/?%d' % i)[0] == 200
    body = wait_counts(addr, {('GET', '2xx'): 30})
    respawns = sum(v for (n, _), v in samples(body).items()
                   if n == 'uwsgi_worker_respawns_total')
    assert respawns >= 2 + 4, respawns  # 30 requests, 5 per life: several respawns


def test_counts_survive_a_harakiri(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-norouting', ['--workers', '1', '--harakiri', '1'])
    for _ in range(3):
        assert request(u.http_port)[0] == 200
    wait_counts(addr, {('GET', '2xx'): 3})
    # Killed mid-request: uWSGI never closes that request, so it is not counted.
    assert request(u.http_port, path='/slow?4')[0] is None
    u.wait_log(r'HARAKIRI ON WORKER 1')
    u.wait_log(r'Respawned uWSGI worker 1')
    for _ in range(2):
        assert request(u.http_port, 'POST')[0] == 200
    body = wait_counts(addr, {('GET', '2xx'): 3, ('POST', '2xx'): 2})
    assert samples(body)[('uwsgi_worker_harakiri_total', frozenset({('worker', '1')}))] == 1


def test_route_scrapes_are_counted(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-routing', ['--workers', '1',
                                                 '--route', '^/metrics$ prometheus-metrics:'])
    for _ in range(3):
        status, _, body = u.get('/metrics')
        assert status == 200
    # Route scrapes are requests like any other: GET, 200.
    wait_counts(addr, {('GET', '2xx'): 3})


def test_exemplars(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-routing', ['--workers', '2', '--prometheus-exemplars'])
    trace = '4bf92f3577b34da6a3ce929d0e0e4736'
    status, _ = request(u.http_port, path='/slow?0.3',
                        headers={'traceparent': '00-%s-00f067aa0ba902b7-01' % trace})
    t_end = time.time()
    assert status == 200
    assert request(u.http_port)[0] == 200  # no traceparent: no exemplar of its own
    wait_counts(addr, {('GET', '2xx'): 2})
    status, _, om = get(addr, headers=OM)
    lines = [line for line in om.decode().splitlines() if ' # {' in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith('uwsgi_request_duration_seconds_bucket'
                               '{method="GET",code="2xx",le="0.5"} 2 # {trace_id="%s"} 0.3'
                               % trace), lines
    ts = float(lines[0].rsplit(' ', 1)[1])
    assert abs(ts - t_end) < 2, (ts, t_end)
    # prometheus_client's OpenMetrics parser accepts it and sees the exemplar.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    ex = [s.exemplar for f in text_string_to_metric_families(om.decode()) for s in f.samples
          if s.exemplar]
    assert len(ex) == 1 and ex[0].labels == {'trace_id': trace} and 0.3 <= ex[0].value < 0.5
    # The text format carries no exemplars.
    assert b' # {' not in get(addr)[2]


def test_no_exemplars_without_the_option(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-routing', ['--workers', '1'])
    assert request(u.http_port, headers={
        'traceparent': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'})[0] == 200
    wait_counts(addr, {('GET', '2xx'): 1})
    assert b' # {' not in get(addr, headers=OM)[2]


def test_oldest_request_gauge(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-routing', ['--workers', '1', '--threads', '2'])
    t0 = time.monotonic()
    t = threading.Thread(target=request, args=(u.http_port, 'GET', '/slow?2'))
    t.start()
    time.sleep(1.0)
    status, _, body = get(addr)
    age_client = time.monotonic() - t0
    assert status == 200
    age = samples(body)[('uwsgi_worker_oldest_request_seconds', frozenset({('worker', '1')}))]
    assert age_client - 0.2 <= age <= age_client, (age, age_client)
    t.join(10)
    time.sleep(0.2)
    body = get(addr)[2]
    assert samples(body)[('uwsgi_worker_oldest_request_seconds',
                          frozenset({('worker', '1')}))] == 0


def test_no_histograms_option(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-norouting', ['--prometheus-no-histograms'])
    assert request(u.http_port)[0] == 200
    time.sleep(0.3)
    assert FAMILY.encode() not in get(addr)[2]
    assert 'after-request chain' not in u.log()


def test_custom_buckets_and_bad_buckets(start_uwsgi):
    u, addr = start(start_uwsgi, 'pip-norouting', ['--prometheus-buckets', '1,0.1'])
    assert request(u.http_port)[0] == 200
    body = wait_counts(addr, {('GET', '2xx'): 1})
    assert sorted(histogram(body)[('GET', '2xx')]['buckets']) == ['+Inf', '0.1', '1']
    bad = start_uwsgi('pip-norouting', ['--prometheus-buckets', '0.1,x'], wait_for=None)
    assert bad.wait_exit() == 1
    assert "invalid value for --prometheus-buckets: 'x'" in bad.log()
