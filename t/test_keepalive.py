"""Issue 13 (7): every scraper, not only Prometheus.

Agents whose HTTP clients keep connections alive scrape the route action on every kind of uWSGI
socket, with a client that reuses its connection and opens a new one only when the server said
`Connection: close` (RFC 9112 §9.6), as Go's net/http, fasthttp (old vmagent) or Python's
http.client do. A server that closes without saying so makes such a client fail the next scrape
on that connection. Also: HEAD, conditional requests and the `Accept` headers the agents send,
against both front ends.
"""
import http.client
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import MAIN_VARIANTS, ROUTING_VARIANTS, free_port, scaled, stop_session
from promcheck import OM_CT, TEXT_CT, samples

ROUTE = ['--route', '^/metrics$ prometheus-metrics:']
PROTO_CT = ('application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; '
            'encoding=delimited')
SCRAPES = 20


class CountingConnection(http.client.HTTPConnection):
    """http.client's connection, counting the TCP connections it opens. Like the agents' clients
    it keeps the connection after a response unless the response said `Connection: close` (or
    was HTTP/1.0): then it closes, and the next request opens a new one."""

    def __init__(self, port):
        super().__init__('127.0.0.1', port, timeout=scaled(10))
        self.opened = 0

    def connect(self):
        super().connect()
        self.opened += 1


def scrape_many(port, n=SCRAPES, path='/metrics', method='GET', headers=None):
    """`n` requests over one reusing client; returns (failures, connections opened, responses).
    A failure is a request the server dropped (closed without answering, reset): the agent then
    reports a failed scrape and reconnects for the next one."""
    conn = CountingConnection(port)
    failures, responses = [], []
    try:
        for i in range(n):
            try:
                conn.request(method, path, headers=headers or {})
                r = conn.getresponse()
                body = r.read()
                responses.append((r.status, {k.lower(): v for k, v in r.getheaders()}, body))
            except (http.client.RemoteDisconnected, http.client.BadStatusLine,
                    ConnectionError, socket.timeout) as e:
                failures.append('scrape %d: %r' % (i, e))
                conn.close()
    finally:
        conn.close()
    return failures, conn.opened, responses


def check_responses(responses, method='GET'):
    for status, headers, body in responses:
        assert status == 200
        assert headers['content-type'] == TEXT_CT
        length = int(headers['content-length'])
        if method == 'HEAD':
            assert body == b'' and length > 1000
        else:
            assert length == len(body)
            assert b'uwsgi_requests_total' in body


def says_close(headers):
    return headers.get('connection', '').lower() == 'close'


def start_routing(start_uwsgi, variant, front):
    """uWSGI with the route, its HTTP side on a free port; returns (uwsgi, port)."""
    port = free_port()
    addr = '127.0.0.1:%d' % port
    router = ['--plugin', 'http'] if variant == 'debian' else []
    args = {
        'http-socket': ['--http-socket', addr],
        'http11-socket': ['--http11-socket', addr],
        'http': router + ['--http', addr],
        'http-keepalive': router + ['--http', addr, '--http-keepalive'],
    }[front]
    u = start_uwsgi(variant, ROUTE + args, http=False)
    if front.startswith('http') and front not in ('http-socket', 'http11-socket'):
        u.wait_log(r'spawned uWSGI http 1')
    return u, port


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
@pytest.mark.parametrize('front,keeps', [
    ('http-socket', False),      # the worker closes after every response
    ('http11-socket', True),     # the worker keeps the connection (uwsgi_proto_http11_close)
    ('http', False),             # the --http router closes after every response
    ('http-keepalive', True),    # ... unless --http-keepalive
])
def test_reusing_client_never_fails(start_uwsgi, variant, front, keeps):
    u, port = start_routing(start_uwsgi, variant, front)
    for method in ('GET', 'HEAD'):
        failures, opened, responses = scrape_many(port, method=method)
        assert failures == [], '%d of %d scrapes failed on %s (%s): %s' % (
            len(failures), SCRAPES, front, variant, failures[:3])
        check_responses(responses, method)
        if keeps:
            # One connection for every scrape, and no response that says otherwise.
            assert opened == 1
            assert not any(says_close(h) for _, h, _ in responses)
        else:
            assert opened == SCRAPES
            assert all(says_close(h) for _, h, _ in responses)
    # The application behind the same sockets still answers (its connection handling is
    # uWSGI's own and not the plugin's business).
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=scaled(10))
    c.request('GET', '/other')
    assert c.getresponse().read() == b'hello from /other\n'
    c.close()


def test_keepalive_router_in_another_instance(start_uwsgi):
    """uWSGI's --http router with --http-keepalive in a separate instance, in front of the
    route's uwsgi socket: this instance cannot see the router's setting, so the answer says
    close; the router honours it (closing after the response), and no scrape fails."""
    backend = free_port()
    start_uwsgi('pip-routing', ROUTE + ['--socket', '127.0.0.1:%d' % backend], http=False)
    port = free_port()
    start_uwsgi('pip-routing', ['--http', '127.0.0.1:%d' % port, '--http-keepalive',
                                '--http-to', '127.0.0.1:%d' % backend],
                http=False, wait_for=r'spawned uWSGI http 1')
    failures, opened, responses = scrape_many(port)
    assert failures == [], failures[:3]
    check_responses(responses)
    assert opened == SCRAPES and all(says_close(h) for _, h, _ in responses)


@pytest.mark.parametrize('front', ['http11-socket', 'http-keepalive'])
def test_client_asking_to_close_is_told_close(start_uwsgi, front):
    """A request with `Connection: close`, an HTTP/1.0 request, or one with a body the route
    does not read: the answer says close (the client, or uWSGI, closes afterwards)."""
    u, port = start_routing(start_uwsgi, 'pip-routing', front)
    for head in [b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
                 b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n',
                 b'GET /metrics HTTP/1.0\r\n\r\n',
                 b'GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc']:
        with socket.create_connection(('127.0.0.1', port), timeout=scaled(10)) as s:
            s.sendall(head)
            data = b''
            while b'\r\n\r\n' not in data:
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
        lines = data.split(b'\r\n\r\n')[0].decode('latin-1').lower().split('\r\n')
        assert lines[0].split()[1] == '200', lines
        assert 'connection: close' in lines, (head, lines)


# uwsgi protocol behind nginx: nginx owns the client connection and keeps it alive; a
# `Connection` header of the backend is hop-by-hop to it and never reaches the client
# (ngx_http_upstream.c: "Connection" has ngx_http_upstream_ignore_header_line as copy handler).
NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {params};
            uwsgi_pass 127.0.0.1:{backend};
        }}
    }}
}}
"""


def nginx_binary():
    path = shutil.which('nginx') or '/usr/sbin/nginx'
    if not os.access(path, os.X_OK):
        pytest.fail('nginx missing: `bash t/setup.sh` installs nginx-light')
    return path


@pytest.fixture
def nginx(tmpdir_path):
    """nginx in front of a uwsgi socket: start(backend_port) -> nginx's HTTP port. Runs in the
    foreground in its own session; stopped by pid (its workers are in its process group)."""
    procs = []

    def start(backend):
        tmp = os.path.join(tmpdir_path, 'nginx')
        os.makedirs(tmp)
        port = free_port()
        conf = os.path.join(tmp, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port, backend=backend,
                                      params='/etc/nginx/uwsgi_params'))
        log = open(os.path.join(tmp, 'nginx.out'), 'wb')
        p = subprocess.Popen([nginx_binary(), '-p', tmp, '-c', conf], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        procs.append((p, log))
        deadline = time.time() + scaled(10)
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return port
            except OSError:
                if p.poll() is not None or time.time() > deadline:
                    with open(os.path.join(tmp, 'nginx-error.log')) as f:
                        raise AssertionError('nginx did not start: %s' % f.read()) from None
                time.sleep(0.05)

    yield start
    for p, log in procs:
        stop_session(p)
        log.close()


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_behind_nginx(start_uwsgi, nginx, variant):
    backend = free_port()
    start_uwsgi(variant, ROUTE + ['--socket', '127.0.0.1:%d' % backend], http=False)
    port = nginx(backend)
    for method in ('GET', 'HEAD'):
        failures, opened, responses = scrape_many(port, method=method)
        assert failures == [], failures[:3]
        check_responses(responses, method)
        assert opened == 1
        assert not any(says_close(h) for _, h, _ in responses)


# The Accept headers the agents send by default, each from the agent's source:
AGENT_ACCEPTS = [
    # Prometheus 2.49-2.55 defaults (scrape/scrape.go acceptHeader() over config.go
    # DefaultScrapeProtocols); the OpenTelemetry Collector's prometheus receiver and Grafana
    # Agent / Alloy's prometheus.scrape build theirs with the same Prometheus function.
    ('application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;'
     'version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2', OM_CT),
    # Prometheus 3.x defaults (the same function, five protocols, escaping on the 1.0.0 ones).
    ('application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,'
     'application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;'
     'escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2', OM_CT),
    # VictoriaMetrics vmagent (lib/promscrape/client.go: "copied from Prometheus sources").
    ('text/plain;version=0.0.4;q=1,*/*;q=0.1', TEXT_CT),
    # Telegraf inputs.prometheus (plugins/inputs/prometheus/prometheus.go acceptHeader).
    ('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
     'encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1', PROTO_CT),
    # Datadog Agent OpenMetrics V2 check (datadog_checks_base .../openmetrics/v2/scraper.py):
    # 'text/plain', or this with use_latest_spec.
    ('text/plain', TEXT_CT),
    ('application/openmetrics-text; version=0.0.1; charset=utf-8', OM_CT),
    # curl, browsers, and headers no agent should send: never 406, the text format.
    ('*/*', TEXT_CT),
    ('', TEXT_CT),
    ('text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', TEXT_CT),
    ('garbage;;;,,=', TEXT_CT),
    ('application/json', TEXT_CT),
    ('text/plain;q=0,application/openmetrics-text;q=0,*/*;q=0', TEXT_CT),
    ('application/openmetrics-text;version=9.9.9', TEXT_CT),
]


def check_agent_answer(status, headers, body, ctype, method):
    assert status == 200
    assert headers['content-type'] == ctype
    assert int(headers['content-length']) > 100
    if method == 'HEAD':
        assert body == b''
    else:
        assert int(headers['content-length']) == len(body)
        if ctype == TEXT_CT:
            samples(body)
        elif ctype == OM_CT:
            samples(body, openmetrics=True)


# A scrape that comes with validators from an earlier response still gets the full, fresh
# answer: the metrics are never "not modified".
CONDITIONAL = {'If-Modified-Since': 'Wed, 21 Oct 2015 07:28:00 GMT', 'If-None-Match': '"x"',
               'Cache-Control': 'max-age=0'}


@pytest.mark.parametrize('variant', ROUTING_VARIANTS)
def test_route_agents_accept_head_and_conditional(start_uwsgi, variant):
    u, port = start_routing(start_uwsgi, variant, 'http11-socket')
    conn = CountingConnection(port)
    try:
        for accept, ctype in AGENT_ACCEPTS:
            for method in ('GET', 'HEAD'):
                conn.request(method, '/metrics', headers=dict(CONDITIONAL, Accept=accept))
                r = conn.getresponse()
                body = r.read()
                check_agent_answer(r.status, {k.lower(): v for k, v in r.getheaders()}, body,
                                   ctype, method)
        assert conn.opened == 1
    finally:
        conn.close()


@pytest.mark.parametrize('variant', MAIN_VARIANTS)
def test_server_agents_accept_head_and_conditional(start_uwsgi, variant):
    u = start_uwsgi(variant, ['--prometheus-server', '127.0.0.1:0'])
    addr = u.wait_log(r'prometheus-server on 127\.0\.0\.1:(\d+)')
    port = int(addr.group(1))
    for accept, ctype in AGENT_ACCEPTS:
        for method in ('GET', 'HEAD'):
            failures, opened, responses = scrape_many(
                port, n=2, method=method, headers=dict(CONDITIONAL, Accept=accept))
            # The dedicated server closes every connection and says so.
            assert failures == [] and opened == 2
            for status, headers, body in responses:
                assert says_close(headers)
                check_agent_answer(status, headers, body, ctype, method)
