"""Issue 21 item 3: uwsgi_request_queue_seconds, the time from the front proxy receiving a request
(its X-Request-Start or X-Queue-Start header) to uWSGI starting it, against real uWSGI.

Requests whose header says 300 ms ago land in the (0.25, 0.5] bucket in every form the proxies
send (nginx t=${msec}, HAProxy and Apache t=MICROSECONDS, Heroku's plain milliseconds...), in the
text format, OpenMetrics and protobuf (classic and native buckets); a header in the future counts
as 0 and in uwsgi_request_queue_skew_total; off by default.
"""
import math
import time

import pytest

from helpers import PROTO_ACCEPT, decode, get, native_counts, raw, server_addrs
from promcheck import promtool_clean, samples

FAMILY = 'uwsgi_request_queue_seconds'
SKEW = ('uwsgi_request_queue_skew_total', frozenset())
OM = {'Accept': 'application/openmetrics-text; version=1.0.0'}


def request(port, headers):
    """One HTTP/1.0 request on its own connection; returns the status."""
    h = ''.join('%s: %s\r\n' % kv for kv in headers.items())
    return raw('127.0.0.1:%d' % port, ('GET / HTTP/1.0\r\nHost: x\r\n%s\r\n' % h).encode(),
               timeout=20)[0]


# Each form as a function of the time the proxy received the request (seconds since the epoch).
FORMS = {
    'nginx t=seconds.millis': ('X-Request-Start', lambda t: 't=%.3f' % t),
    't=microseconds (Apache %t, HAProxy date(0,us))':
        ('X-Request-Start', lambda t: 't=%d' % (t * 1e6)),
    't=milliseconds (HAProxy t=%Ts%ms)': ('X-Request-Start', lambda t: 't=%d' % (t * 1e3)),
    'plain milliseconds (Heroku)': ('X-Request-Start', lambda t: '%d' % (t * 1e3)),
    'plain microseconds': ('X-Request-Start', lambda t: '%d' % (t * 1e6)),
    'plain seconds.micros': ('X-Request-Start', lambda t: '%.6f' % t),
    'X-Queue-Start t=seconds.millis': ('X-Queue-Start', lambda t: 't=%.3f' % t),
    'X-Queue-Start plain milliseconds': ('X-Queue-Start', lambda t: ' %d ' % (t * 1e3)),
}


def queue(body, openmetrics=False):
    """{'buckets': {le: n}, 'sum': s, 'count': n} of the queue histogram, and the skew count."""
    h = {'buckets': {}}
    s = samples(body, openmetrics=openmetrics)
    for (name, labels), v in s.items():
        if not name.startswith(FAMILY + '_'):
            continue
        labels = dict(labels)
        if name.endswith('_bucket'):
            h['buckets'][labels.pop('le')] = v
        else:
            h[name.rsplit('_', 1)[1]] = v
        assert labels == {}, (name, labels)
    return h, s.get(SKEW)


def wait_count(addr, want, timeout=5):
    """Scrapes until the histogram counts `want` requests (the hook runs after the response is
    sent, so the last request may land a moment after its client returned)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = get(addr)
        assert status == 200
        h, skew = queue(body)
        if h.get('count', 0) == want or time.monotonic() > deadline:
            assert h.get('count', 0) == want, h
            return body, h, skew
        time.sleep(0.05)


def start(start_uwsgi, variant, args=()):
    u = start_uwsgi(variant, ['--prometheus-server', '127.0.0.1:0', '--prometheus-queue-time']
                    + list(args))
    assert 'queue time on (X-Request-Start, X-Queue-Start)' in u.log()
    return u, server_addrs(u)[0]


@pytest.mark.parametrize('variant', ['pip-routing', 'debian'])
def test_every_form_lands_in_its_bucket(start_uwsgi, pb, variant):
    u, addr = start(start_uwsgi, variant, ['--workers', '2'])
    for form, (header, value) in FORMS.items():
        assert request(u.http_port, {header: value(time.time() - 0.3)}) == 200, form
    # Without a header, or with one in no accepted form: not observed.
    assert request(u.http_port, {}) == 200
    assert request(u.http_port, {'X-Request-Start': 'web1 t=%.3f' % time.time()}) == 200
    n = len(FORMS)
    body, h, skew = wait_count(addr, n)
    assert h['buckets']['0.25'] == 0 and h['buckets']['0.5'] == n, h
    assert h['buckets']['+Inf'] == n and skew == 0, (h, skew)
    assert 0.3 * n <= h['sum'] <= 0.5 * n, h
    assert sorted(h['buckets'], key=float) == ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25',
                                               '0.5', '1', '2.5', '5', '10', '+Inf']
    promtool_clean(body)
    # OpenMetrics: the same numbers, typed and with its unit.
    status, _, om = get(addr, headers=OM)
    assert status == 200
    assert queue(om, openmetrics=True) == (h, skew)
    assert b'# TYPE uwsgi_request_queue_seconds histogram\n' in om
    assert b'# UNIT uwsgi_request_queue_seconds seconds\n' in om
    # Protobuf: the classic buckets, and native ones between 0.25 and 0.5 s.
    fams = {f.name: f for f in decode(pb, get(addr, headers={'Accept': PROTO_ACCEPT})[2])}
    (m,) = fams[FAMILY].metric
    assert list(m.label) == [] and fams[FAMILY].unit == 'seconds'
    ph = m.histogram
    assert ph.sample_count == n and ph.schema == 3 and ph.zero_count == 0
    assert ph.sample_sum == pytest.approx(h['sum'], abs=1e-6)
    classic = {b.upper_bound: b.cumulative_count for b in ph.bucket
               if not math.isinf(b.upper_bound)}
    assert classic[0.25] == 0 and classic[0.5] == n, classic
    counts = native_counts(ph)
    base = 2 ** (2 ** -3)
    assert sum(counts.values()) == n, counts
    assert all(base ** i > 0.25 and base ** (i - 1) < 0.5 for i in counts), counts
    assert fams['uwsgi_request_queue_skew_total'].metric[0].counter.value == 0


def test_skew_and_respawns(start_uwsgi, pb):
    # Two workers that each serve 2 requests, then are respawned: counts live in shared memory.
    u, addr = start(start_uwsgi, 'pip-routing', ['--workers', '2', '--max-requests', '2',
                                                 '--min-worker-lifetime', '0'])
    for _ in range(2):
        assert request(u.http_port, {'X-Request-Start': 't=%.3f' % (time.time() + 10)}) == 200
    for _ in range(4):
        assert request(u.http_port, {'X-Request-Start': 't=%d' % ((time.time() - 0.3) * 1e6)}) \
            == 200
    # An X-Request-Start that is no time (before 2000): X-Queue-Start is used instead.
    assert request(u.http_port, {'X-Request-Start': '12', 'X-Queue-Start':
                                 '%d' % ((time.time() - 0.3) * 1e3)}) == 200
    body, h, skew = wait_count(addr, 7)
    assert skew == 2, skew
    # The future ones count as 0: in the first bucket; the others above 0.25 s (0.3 s, plus
    # the real wait of the requests that came while both workers were being respawned).
    assert h['buckets']['0.005'] == 2 and h['buckets']['0.25'] == 2, h
    assert h['buckets']['+Inf'] == 7 and h['sum'] >= 5 * 0.3, h
    respawns = sum(v for (n, _), v in samples(body).items() if n == 'uwsgi_worker_respawns_total')
    assert respawns >= 2, respawns  # 7 requests, 2 per life
    fams = {f.name: f for f in decode(pb, get(addr, headers={'Accept': PROTO_ACCEPT})[2])}
    ph = fams[FAMILY].metric[0].histogram
    assert ph.zero_count == 2 and ph.sample_count == 7
    assert sum(native_counts(ph).values()) == 5
    assert fams['uwsgi_request_queue_skew_total'].metric[0].counter.value == 2


def test_off_by_default(start_uwsgi):
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0', '--workers', '1'])
    addr = server_addrs(u)[0]
    assert 'queue time' not in u.log()
    for t in (time.time() - 0.3, time.time() + 10):
        assert request(u.http_port, {'X-Request-Start': 't=%.3f' % t}) == 200
    # The request histogram sees both requests; no queue family, no skew counter.
    deadline = time.monotonic() + 5
    while True:
        body = get(addr)[2]
        n = sum(v for (name, _), v in samples(body).items()
                if name == 'uwsgi_request_duration_seconds_count')
        if n == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert n == 2
    assert b'uwsgi_request_queue' not in body
    assert b'uwsgi_request_queue' not in get(addr, headers=OM)[2]


def test_conflicts_with_no_histograms(start_uwsgi):
    bad = start_uwsgi('debian', ['--prometheus-queue-time', '--prometheus-no-histograms'],
                      wait_for=None)
    assert bad.wait_exit() == 1
    assert '--prometheus-queue-time: the queue-time histogram is recorded by the after-request ' \
           'hook of the request histograms, which --prometheus-no-histograms turns off' \
           in bad.log()
