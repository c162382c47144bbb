"""Issue 4: the `prometheus-metrics` routing action, against real uWSGI builds with routing."""
import base64
import concurrent.futures
import http.client
import os
import re

import pytest

from conftest import ROUTING_VARIANTS
from helpers import stats_port
from promcheck import (OM_ACCEPT, OM_CT, TEXT_CT, agree_with_stats, assert_grouped,
                       promtool_clean, samples)

ROUTE = ['--route', '^/metrics$ prometheus-metrics:']


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_both_formats_parse_and_lint_clean(start_uwsgi, variant):
    u = start_uwsgi(variant, ROUTE + ['--workers', '2', '--threads', '2',
                                      '--metric', 'myapp.jobs.done'])
    for _ in range(3):
        assert u.get('/metric')[0] == 200
    status, headers, body = u.get('/metrics')
    assert status == 200
    assert headers['content-type'] == TEXT_CT
    assert int(headers['content-length']) == len(body)
    s = samples(body)
    assert ('uwsgi_worker_requests_total', frozenset({('worker', '1')})) in s
    assert ('uwsgi_worker_core_requests_total', frozenset({('worker', '2'), ('core', '1')})) in s
    promtool_clean(body)
    assert_grouped(body)

    status, headers, om = u.get('/metrics', headers={'Accept': OM_ACCEPT})
    assert status == 200 and headers['content-type'] == OM_CT
    assert om.endswith(b'# EOF\n')
    samples(om, openmetrics=True)
    assert_grouped(om)


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_head_405_and_query_string(start_uwsgi, variant):
    u = start_uwsgi(variant, ROUTE)
    status, headers, body = u.get('/metrics', method='HEAD')
    assert status == 200 and body == b''
    assert headers['content-type'] == TEXT_CT and int(headers['content-length']) > 1000
    status, headers, body = u.get('/metrics', method='POST')
    assert status == 405 and headers['allow'] == 'GET, HEAD'
    status, _, body = u.get('/metrics?name[]=x&y')
    assert status == 200 and b'uwsgi_requests_total' in body
    # The route only takes /metrics; the application still gets everything else.
    assert u.get('/metrics/other')[2] == b'hello from /metrics/other\n'


@pytest.mark.parametrize('arg,accept,ctype', [
    ('openmetrics', None, OM_CT),
    ('text', OM_ACCEPT, TEXT_CT),
])
def test_forced_format(start_uwsgi, arg, accept, ctype):
    u = start_uwsgi('pip-routing', ['--route', '^/metrics$ prometheus-metrics:' + arg])
    status, headers, body = u.get('/metrics', headers={'Accept': accept} if accept else {})
    assert status == 200 and headers['content-type'] == ctype
    samples(body, openmetrics=(ctype == OM_CT))


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_bad_route_argument_stops_startup(start_uwsgi, variant):
    u = start_uwsgi(variant, ['--route', '^/metrics$ prometheus-metrics:json'], wait_for=None)
    assert u.wait_exit() != 0
    log = u.log()
    assert re.search(r"\[metrics_prometheus\] route action prometheus-metrics:json: unknown "
                     r"argument 'json'", log), log


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_503_when_metrics_are_disabled(start_uwsgi, tmpdir_path, variant):
    ini = os.path.join(tmpdir_path, 'nometrics.ini')
    with open(ini, 'w') as f:
        f.write('[uwsgi]\nenable-metrics = false\n')
    u = start_uwsgi(variant, ROUTE + ['--ini', ini])
    status, headers, body = u.get('/metrics')
    assert status == 503
    assert headers['content-type'] == 'text/plain; charset=utf-8'
    assert b'enable-metrics = false' in body
    assert body.count(b'\n') == 1


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_values_agree_with_stats_server(start_uwsgi, variant):
    u = start_uwsgi(variant, ROUTE + ['--workers', '2', '--threads', '2',
                                      '--metric', 'myapp.jobs.done',
                                      '--stats', '127.0.0.1:0', '--stats-http'])
    for path in ['/', '/metric', '/metric', '/x']:
        assert u.get(path)[0] == 200
    with pytest.raises(http.client.RemoteDisconnected):
        u.get('/error')  # an exception counts too; uWSGI closes the connection
    # uWSGI's collector copies the counters about once a second: agree_with_stats retries.
    agree_with_stats(lambda: u.get('/metrics')[2], stats_port(u))


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_basicauth_in_front(start_uwsgi, variant):
    # Debian ships the basicauth router as a plugin; pip builds embed it.
    extra = ['--plugin', 'router_basicauth'] if variant == 'debian' else []
    u = start_uwsgi(variant,
                    extra + ['--route', '^/metrics$ basicauth:metrics,prom:s3cret'] + ROUTE)
    status, _, _ = u.get('/metrics')
    assert status == 401
    bad = base64.b64encode(b'prom:wrong').decode()
    assert u.get('/metrics', headers={'Authorization': 'Basic ' + bad})[0] == 401
    good = base64.b64encode(b'prom:s3cret').decode()
    status, _, body = u.get('/metrics', headers={'Authorization': 'Basic ' + good})
    assert status == 200
    samples(body)


@pytest.mark.parametrize('variant,args', [
    ('debian', ['--workers', '2', '--threads', '8']),
    ('pip-routing', ['--workers', '2', '--threads', '8']),
    ('pip-routing', ['--workers', '1', '--async', '16', '--ugreen']),
    ('debian', ['--plugin', 'ugreen', '--workers', '1', '--async', '16', '--ugreen']),
])
def test_concurrent_scrapes_in_threads_and_async_cores(start_uwsgi, variant, args):
    u = start_uwsgi(variant, ROUTE + args)

    def scrape(i):
        status, headers, body = u.get('/metrics', headers={'Accept': OM_ACCEPT} if i % 2 else {})
        assert status == 200
        samples(body, openmetrics=bool(i % 2))
        return len(body)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(scrape, range(200)))
    assert min(sizes) > 1000


@pytest.mark.parametrize('allowed,status', [('127.0.0.1', 200), ('10.0.0.5', 403)])
def test_source_address_restriction_from_readme(start_uwsgi, allowed, status):
    u = start_uwsgi('pip-routing', [
        '--route', '^/metrics$ goto:metrics',
        '--route-run', 'last:',
        '--route-label', 'metrics',
        '--route-if-not', 'equal:${REMOTE_ADDR};%s break:403 Forbidden' % allowed,
        '--route-run', 'prometheus-metrics:',
    ])
    assert u.get('/metrics')[0] == status
    # Everything else still reaches the app, untouched by the routes.
    assert u.get('/other') == (200, {'content-type': 'text/plain', 'content-length': '18'},
                               b'hello from /other\n')
