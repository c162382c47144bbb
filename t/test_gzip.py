"""gzip on both front ends: negotiated by Accept-Encoding, Vary on every metrics answer,
--prometheus-no-gzip, HEAD, and a master that keeps answering during a flood of gzip scrapes
of a large (64 workers x 64 async cores, about 2 MB) instance.

Prometheus itself scrapes with `Accept-Encoding: gzip`: the real-Prometheus tests in
test_protobuf.py, test_compat.py and test_dashboard.py go through this path too."""
import gzip
import multiprocessing
import os
import socket
import time

import pytest

from conftest import MAIN_VARIANTS, VARIANTS, Uwsgi, free_port
from helpers import get, server_addrs
from promcheck import OM_ACCEPT, OM_CT, TEXT_CT, promtool_clean, samples

PROTOBUF_ACCEPT = ('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
                   'encoding=delimited')


def families(body):
    return {s[0] for s in samples(body)}


def route_get(u, headers=None, method='GET'):
    return get('127.0.0.1:%d' % u.http_port, method=method, headers=headers)


def front_ends(u, variant):
    """(name, request function) for the dedicated server and, with routing, the route."""
    addr = server_addrs(u)[0]
    ends = [('server', lambda **kw: get(addr, **kw))]
    if VARIANTS[variant].routing:
        ends.append(('route', lambda **kw: route_get(u, **kw)))
    return ends


def start(start_uwsgi, variant, *args):
    extra = ['--prometheus-server', '127.0.0.1:0']
    if VARIANTS[variant].routing:
        extra += ['--route', '^/metrics$ prometheus-metrics:']
    return start_uwsgi(variant, extra + list(args))


@pytest.mark.parametrize('variant', MAIN_VARIANTS)
def test_gzip_when_accepted(start_uwsgi, variant):
    u = start(start_uwsgi, variant)
    for name, req in front_ends(u, variant):
        status, h, plain = req()
        assert status == 200 and 'content-encoding' not in h, (name, h)
        assert h.get('vary') == 'Accept-Encoding', (name, h)
        for accept, ctype in ((None, TEXT_CT), (OM_ACCEPT, OM_CT)):
            headers = {'Accept-Encoding': 'gzip, deflate, br'}
            if accept:
                headers['Accept'] = accept
            status, h, body = req(headers=headers)
            assert status == 200, (name, status)
            assert h['content-encoding'] == 'gzip' and h['content-type'] == ctype, (name, h)
            assert h['vary'] == 'Accept-Encoding', (name, h)
            text = gzip.decompress(body)
            assert len(body) * 2 < len(text), (name, len(body), len(text))
            if accept is None:
                promtool_clean(text)
                # (A route scrape is a request: it may add histogram series.)
                assert families(plain) <= families(text), name
            else:
                assert text.endswith(b'# EOF\n') and samples(text, openmetrics=True), name
            if name == 'route':
                assert int(h['content-length']) == len(body)
            else:
                # Close-delimited: the gzip trailer tells a complete body from a cut one.
                assert 'content-length' not in h
        if VARIANTS[variant].routing or name == 'server':
            status, h, body = req(headers={'Accept-Encoding': 'gzip', 'Accept': PROTOBUF_ACCEPT})
            assert status == 200 and h['content-encoding'] == 'gzip', (name, h)
            assert h['content-type'].startswith('application/vnd.google.protobuf'), (name, h)
            assert len(gzip.decompress(body)) > len(body), name


@pytest.mark.parametrize('accept_encoding', [None, '', 'identity', 'br, deflate', 'gzip;q=0',
                                             'gzip;q=0, *', '*;q=0', 'gzip;q=x'])
def test_plain_unless_gzip_is_acceptable(start_uwsgi, accept_encoding):
    u = start(start_uwsgi, 'pip-routing')
    headers = None if accept_encoding is None else {'Accept-Encoding': accept_encoding}
    for name, req in front_ends(u, 'pip-routing'):
        status, h, body = req(headers=headers)
        assert status == 200 and 'content-encoding' not in h, (name, h)
        assert h['vary'] == 'Accept-Encoding'
        assert int(h['content-length']) == len(body)
        promtool_clean(body)


def test_accept_encoding_spellings(start_uwsgi):
    u = start(start_uwsgi, 'pip-routing')
    for value in ('gzip', 'GZIP', 'x-gzip', '*', 'br;q=1.0, gzip;q=0.1', 'deflate, *;q=0.5'):
        for name, req in front_ends(u, 'pip-routing'):
            status, h, body = req(headers={'Accept-Encoding': value})
            assert status == 200 and h.get('content-encoding') == 'gzip', (value, name, h)
            gzip.decompress(body)


def test_no_gzip_option(start_uwsgi):
    u = start(start_uwsgi, 'pip-routing', '--prometheus-no-gzip')
    for name, req in front_ends(u, 'pip-routing'):
        status, h, body = req(headers={'Accept-Encoding': 'gzip'})
        assert status == 200, name
        # No negotiation happens, so there is nothing to vary on.
        assert 'content-encoding' not in h and 'vary' not in h, (name, h)
        promtool_clean(body)


def test_head_with_gzip(start_uwsgi):
    u = start(start_uwsgi, 'pip-routing')
    for name, req in front_ends(u, 'pip-routing'):
        status, h, body = req(method='HEAD', headers={'Accept-Encoding': 'gzip'})
        assert status == 200 and body == b'', (name, body[:40])
        assert h['content-encoding'] == 'gzip' and h['vary'] == 'Accept-Encoding', (name, h)
        if name == 'route':
            # The length GET would have.
            _, _, gz = req(headers={'Accept-Encoding': 'gzip'})
            assert abs(int(h['content-length']) - len(gz)) < len(gz) // 10, (h, len(gz))


def test_small_bodies_stay_plain(tmpdir_path):
    # The smallest exposition the plugin makes: an Emperor's with no vassal yet (an instance's
    # own families are over 1 KiB however many options are off).
    v = VARIANTS['pip-routing'].require()
    vassals = os.path.join(tmpdir_path, 'vassals')
    os.makedirs(vassals)
    u = Uwsgi(v, ['--plugin', v.plugin, '--emperor', vassals,
                  '--emperor', 'prometheus://127.0.0.1:%d' % free_port(),
                  '--prometheus-no-help', '--prometheus-no-type'], tmpdir_path, wrapper=[])
    try:
        u.start(wait_for=r"serving the Emperor's metrics on (\S+)")
        addr = u.wait_log(r"serving the Emperor's metrics on (\S+)").group(1)
        status, h, body = get(addr, headers={'Accept-Encoding': 'gzip'})
        assert status == 200 and len(body) < 1024, len(body)
        assert 'content-encoding' not in h and h['vary'] == 'Accept-Encoding', h
    finally:
        u.stop()


def _request(addr, path, headers=''):
    host, port = addr.rsplit(':', 1)
    t0 = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(('GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n' % (path, headers)).encode())
        head = b''
        while True:
            b = s.recv(262144)
            if not b:
                break
            head = head or b[:12]
    return time.perf_counter() - t0, head


def _flood(addr, stop_at, out):
    n = 0
    while time.time() < stop_at:
        _, head = _request(addr, '/metrics', 'Accept-Encoding: gzip\r\n')
        if head.startswith(b'HTTP/1.1 200'):
            n += 1
    out.put(n)


def test_master_answers_during_a_gzip_flood(start_uwsgi):
    """Three processes scrape a 2 MB exposition with gzip back to back while a fourth asks the
    same listener for a 404 every 10 ms: the 404 must not wait for whole renders and whole
    compressions in a row (measured: median about 1 ms with the per-cycle bounds, 14-16 ms
    without them)."""
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0', '--master',
                                    '--processes', '64', '--async', '64', '--ugreen'],
                    wait_for=r'spawned uWSGI worker 64 ')
    addr = server_addrs(u)[0]
    # Let the last workers finish starting (a starting worker skews the first scrapes).
    time.sleep(3)
    _, h, body = get(addr, headers={'Accept-Encoding': 'gzip'})
    size = len(gzip.decompress(body))
    assert size > 1_500_000, size
    ctx = multiprocessing.get_context('fork')
    out = ctx.Queue()
    stop_at = time.time() + 8
    flooders = [ctx.Process(target=_flood, args=(addr, stop_at, out)) for _ in range(3)]
    for p in flooders:
        p.start()
    try:
        time.sleep(0.5)
        lat = []
        while time.time() < stop_at - 0.5:
            t, head = _request(addr, '/nope')
            assert head.startswith(b'HTTP/1.1 404'), head
            lat.append(t * 1e3)
            time.sleep(0.01)
        scrapes = sum(out.get(timeout=60) for _ in flooders)
    finally:
        for p in flooders:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    lat.sort()
    p50, p90 = lat[len(lat) // 2], lat[int(len(lat) * 0.9)]
    print('gzip flood: %d scrapes of %d bytes; 404 p50 %.2f ms, p90 %.2f ms, max %.2f ms over %d'
          % (scrapes, size, p50, p90, lat[-1], len(lat)))
    assert scrapes > 50, scrapes
    assert p50 < 5, lat
    assert p90 < 15, lat
