"""Issue 22 item 1: the `route` label of uwsgi_request_duration_seconds (and of
uwsgi_request_queue_seconds), against real uWSGI.

The app is t/apps/routes_app.py, a Flask-like URL map: with `--env ROUTES_LOGVAR=1` it sets the
logvar `route` to the matched template, as a framework middleware does; without it, only the
plugin's `--prometheus-route` rules name routes. Counts per route must equal the requests sent,
in the text format, OpenMetrics and protobuf (classic and native buckets), through respawns; new
routes past `--prometheus-route-max` go to route="other" and are counted in
uwsgi_route_overflow_total.
"""
import os
import time

import pytest

from conftest import scaled
from helpers import PROTO_ACCEPT, decode, get, native_counts, server_addrs
from promcheck import promtool_clean, samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, 't', 'apps', 'routes_app.py')
FAMILY = 'uwsgi_request_duration_seconds'
QUEUE = 'uwsgi_request_queue_seconds'
OVERFLOW = ('uwsgi_route_overflow_total', frozenset())
OM = {'Accept': 'application/openmetrics-text; version=1.0.0'}
VARIANTS = ['pip-routing', 'debian']

# The app's URL map as --prometheus-route rules (the names say they come from the rules).
RULES = [
    '^/api/users/[0-9]+$ /api/users/:id',
    '^/api/items/[a-z]+$ /api/items/:name',
    '^/missing/ /missing/*',
]

# path -> number of requests; the routes they get from the logvar and from the rules.
TRAFFIC = {'/api/users/1': 3, '/api/users/22': 4, '/api/items/abc': 5, '/missing/x': 2,
           '/elsewhere': 3}
BY_LOGVAR = {('/api/users/<int:id>', '2xx'): 7, ('/api/items/<name>', '2xx'): 5,
             ('/missing/<path>', '4xx'): 2, ('other', '2xx'): 3}
BY_RULES = {('/api/users/:id', '2xx'): 7, ('/api/items/:name', '2xx'): 5,
            ('/missing/*', '4xx'): 2, ('other', '2xx'): 3}


def start(start_uwsgi, variant, logvar, args=()):
    extra = ['--master', '--processes', '2', '--prometheus-server', '127.0.0.1:0']
    if logvar:
        extra += ['--env', 'ROUTES_LOGVAR=1', '--prometheus-route-label']
    u = start_uwsgi(variant, extra + list(args), app=APP)
    assert 'route label on' in u.log(), u.log()
    return u, server_addrs(u)[0]


def send(u, paths, headers=None):
    for path, n in paths.items():
        for _ in range(n):
            status, _, _ = get('127.0.0.1:%d' % u.http_port, path, headers=headers,
                               timeout=scaled(10))
            assert status in (200, 404), (path, status)


def counts(s, family=FAMILY):
    """{(route, code): count} of the `family` histogram in parsed samples (GET only)."""
    out = {}
    for (name, labels), v in s.items():
        if name != family + '_count':
            continue
        labels = dict(labels)
        assert labels.get('method', 'GET') == 'GET', labels
        key = (labels['route'], labels['code']) if 'code' in labels else labels['route']
        out[key] = out.get(key, 0) + v
    return out


def wait_total(addr, want, timeout=10):
    """Scrapes until the request histogram counts `want` requests (the hook runs after the
    response is sent); returns the last text body."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        status, _, body = get(addr)
        assert status == 200
        total = sum(counts(samples(body)).values())
        if total == want or time.monotonic() > deadline:
            assert total == want, body.decode()[-3000:]
            return body


def protobuf_counts(addr, pb):
    """{(route, code): (classic count, native count)} from a protobuf scrape."""
    status, _, body = get(addr, headers={'Accept': PROTO_ACCEPT})
    assert status == 200
    out = {}
    for fam in decode(pb, body):
        if fam.name != FAMILY:
            continue
        for m in fam.metric:
            labels = {lp.name: lp.value for lp in m.label}
            h = m.histogram
            assert sum(native_counts(h).values()) + h.zero_count == h.sample_count
            out[(labels['route'], labels['code'])] = h.sample_count
    return out


def check_all_formats(addr, want, pb):
    body = wait_total(addr, sum(want.values()))
    promtool_clean(body)
    assert counts(samples(body)) == want
    status, _, om = get(addr, headers=OM)
    assert status == 200
    assert counts(samples(om, openmetrics=True)) == want
    assert protobuf_counts(addr, pb) == want
    return body


@pytest.mark.parametrize('variant', VARIANTS)
def test_routes_from_the_logvar(start_uwsgi, variant, pb):
    u, addr = start(start_uwsgi, variant, logvar=True)
    send(u, TRAFFIC)
    body = check_all_formats(addr, BY_LOGVAR, pb)
    assert samples(body)[OVERFLOW] == 0


@pytest.mark.parametrize('variant', VARIANTS)
def test_routes_from_rules_only(start_uwsgi, variant, pb):
    args = []
    for r in RULES:
        args += ['--prometheus-route', r]
    u, addr = start(start_uwsgi, variant, logvar=False, args=args)
    send(u, TRAFFIC)
    check_all_formats(addr, BY_RULES, pb)


def test_the_logvar_wins_over_the_rules(start_uwsgi, pb):
    u, addr = start(start_uwsgi, 'pip-routing', logvar=True,
                    args=['--prometheus-route', '^/api/ /api/*', '--prometheus-route',
                          '^/else /else'])
    send(u, TRAFFIC)
    # The logvar names the /api/ and /missing/ paths; /elsewhere only matches a rule.
    want = dict(BY_LOGVAR)
    want[('/else', '2xx')] = want.pop(('other', '2xx'))
    check_all_formats(addr, want, pb)


@pytest.mark.parametrize('variant', VARIANTS)
def test_overflow_goes_to_other_and_is_counted(start_uwsgi, variant, pb):
    # Three routes kept: one by a rule (registered at startup), two by the first new logvar
    # values; every later new value is `other` and counted, known ones keep their route.
    u, addr = start(start_uwsgi, variant, logvar=True,
                    args=['--prometheus-route-max', '3',
                          '--prometheus-route', '^/elsewhere$ /elsewhere'])
    send(u, {'/label/a': 2, '/label/b': 1, '/label/c': 3, '/label/d': 1, '/label/a?again': 1,
             '/elsewhere': 2, '/label/other': 2, '/label/e': 1})
    want = {('/elsewhere', '2xx'): 2, ('a', '2xx'): 3, ('b', '2xx'): 1,
            # c, d and e past the maximum (5 requests), and the app's own "other" (2).
            ('other', '2xx'): 7}
    body = check_all_formats(addr, want, pb)
    assert samples(body)[OVERFLOW] == 5


@pytest.mark.parametrize('variant', VARIANTS)
def test_counts_survive_max_requests_respawns(start_uwsgi, variant, pb):
    u, addr = start(start_uwsgi, variant, logvar=True,
                    args=['--max-requests', '3', '--min-worker-lifetime', '0'])
    traffic = {'/api/users/7': 9, '/api/items/z': 6, '/elsewhere': 5}
    send(u, traffic)
    # 20 requests over 2 workers recycled every 3: at least 5 recycled.
    recycled = ('uwsgi_worker_exits_total', frozenset({('reason', 'max_requests')}))
    deadline = time.monotonic() + scaled(10)
    while samples(get(addr)[2]).get(recycled, 0) < 5:
        assert time.monotonic() < deadline, u.log()[-3000:]
        time.sleep(0.1)
    check_all_formats(addr, {('/api/users/<int:id>', '2xx'): 9,
                             ('/api/items/<name>', '2xx'): 6, ('other', '2xx'): 5}, pb)


@pytest.mark.parametrize('variant', VARIANTS)
def test_queue_time_by_route(start_uwsgi, variant):
    u, addr = start(start_uwsgi, variant, logvar=True, args=['--prometheus-queue-time'])
    past = {'X-Request-Start': 't=%.3f' % (time.time() - 0.3)}
    send(u, {'/api/users/1': 2, '/elsewhere': 1}, headers=past)
    send(u, {'/api/items/q': 1})  # no header: no queue time
    body = wait_total(addr, 4)
    promtool_clean(body)
    s = samples(body)
    assert counts(s, QUEUE) == {'/api/users/<int:id>': 2, 'other': 1}
    le = [v for (name, labels), v in s.items() if name == QUEUE + '_bucket'
          and dict(labels) == {'route': 'other', 'le': '0.5'}]
    assert le == [1]


def test_without_the_options_there_is_no_route_label(start_uwsgi):
    u = start_uwsgi('pip-routing', ['--master', '--prometheus-server', '127.0.0.1:0'], app=APP)
    send(u, {'/api/users/1': 2})
    addr = server_addrs(u)[0]
    deadline = time.monotonic() + scaled(10)
    while True:
        _, _, body = get(addr)
        s = samples(body)
        hist = {k: v for k, v in s.items() if k[0] == FAMILY + '_count'}
        if sum(hist.values()) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert hist == {(FAMILY + '_count', frozenset({('method', 'GET'), ('code', '2xx')})): 2}
    assert OVERFLOW not in s
    assert 'route label on' not in u.log()


@pytest.mark.parametrize('args, message', [
    (['--prometheus-route', '^/a( /a'], 'invalid value for --prometheus-route: \'^/a(\' is '
                                        'not a valid regular expression'),
    (['--prometheus-route', '^/a'], "invalid value for --prometheus-route: '^/a': expected "
                                    "'REGEX NAME'"),
    (['--prometheus-route-label', '--prometheus-route-max', '0'],
     "invalid value for --prometheus-route-max: '0' is not a number of routes from 1 to 1000"),
    (['--prometheus-route', '^/a a', '--prometheus-route', '^/b b',
      '--prometheus-route-max', '1'],
     '--prometheus-route: the rules name more distinct routes than --prometheus-route-max'),
    (['--prometheus-route-label', '--prometheus-label', 'route=x'],
     'invalid value for --prometheus-label: label name "route" is used by the plugin'),
    (['--prometheus-route-label', '--prometheus-no-histograms'],
     '--prometheus-route-label: the route label is a label of the request histograms'),
])
def test_bad_route_options_stop_startup(start_uwsgi, args, message):
    u = start_uwsgi('pip-routing', ['--master'] + args, wait_for=None)
    assert u.wait_exit(20) != 0
    assert message in u.log(), u.log()


def test_exclude_drops_a_routed_family_in_every_format(start_uwsgi, pb):
    u, addr = start(start_uwsgi, 'pip-routing', logvar=True,
                    args=['--prometheus-queue-time', '--prometheus-exclude', FAMILY,
                          '--prometheus-exemplars'])
    past = {'X-Request-Start': 't=%.3f' % (time.time() - 0.3)}
    send(u, {'/api/users/1': 2}, headers=past)
    deadline = time.monotonic() + scaled(10)
    while sum(counts(samples(get(addr)[2]), QUEUE).values()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _, _, text = get(addr)
    _, _, om = get(addr, headers=OM)
    _, _, proto = get(addr, headers={'Accept': PROTO_ACCEPT})
    for names in ({n for n, _ in samples(text)}, {n for n, _ in samples(om, openmetrics=True)}):
        assert not any(n.startswith(FAMILY) for n in names), names
        assert QUEUE + '_count' in names
    families = {f.name for f in decode(pb, proto)}
    assert FAMILY not in families and QUEUE in families, families
    assert counts(samples(text), QUEUE) == {'/api/users/<int:id>': 2}


@pytest.mark.parametrize('extra', [
    ['--prometheus-label', 'env=prod'],
    ['--prometheus-compat', 'uwsgi_exporter', '--prometheus-no-type'],
], ids=['constant-label', 'compat-untyped'])
def test_routes_with_other_rendering_options(start_uwsgi, extra):
    u, addr = start(start_uwsgi, 'pip-routing', logvar=False,
                    args=['--prometheus-route', RULES[0]] + extra)
    send(u, {'/api/users/1': 2, '/elsewhere': 1})
    body = wait_total(addr, 3)
    promtool_clean(body)
    hist = {dict(labels)['route']: (v, dict(labels).get('env'))
            for (name, labels), v in samples(body).items() if name == FAMILY + '_count'}
    env = 'prod' if 'env=prod' in extra else None
    assert hist == {'/api/users/:id': (2, env), 'other': (1, env)}


def test_route_action_scrapes_routed_series(start_uwsgi):
    # The route action renders in the worker that serves the scrape: its own layout of the
    # routed series, rebuilt there as they appear.
    u = start_uwsgi('pip-routing', ['--master', '--processes', '2', '--env', 'ROUTES_LOGVAR=1',
                                    '--prometheus-route-label',
                                    '--route', '^/metrics$ prometheus-metrics:'], app=APP)
    addr = '127.0.0.1:%d' % u.http_port
    send(u, {'/api/users/1': 3, '/api/items/a': 1})
    deadline = time.monotonic() + scaled(10)
    while True:
        status, _, body = get(addr)
        assert status == 200
        got = {k: v for k, v in counts(samples(body)).items() if k[0] != 'other'}
        if got == {('/api/users/<int:id>', '2xx'): 3, ('/api/items/<name>', '2xx'): 1}:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    promtool_clean(body)


# uWSGI's own routing sets logvars too (`logvar:KEY=VALUE`, before the request plugin runs):
# routes from the configuration alone, for any request plugin.
LOGVAR_ROUTES = ['--route', '^/api/users/[0-9]+$ logvar:route=/users/{id}',
                 '--route', '^/missing/ logvar:route=/missing']
BY_ROUTING = {('/users/{id}', '2xx'): 7, ('/missing', '4xx'): 2, ('other', '2xx'): 8}


@pytest.mark.parametrize('variant', VARIANTS)
def test_logvar_from_uwsgi_routing(start_uwsgi, variant, pb):
    u, addr = start(start_uwsgi, variant, logvar=False,
                    args=['--prometheus-route-label'] + LOGVAR_ROUTES)
    send(u, TRAFFIC)
    check_all_formats(addr, BY_ROUTING, pb)


def test_psgi_request_plugin(start_uwsgi, pb):
    # Debian's uwsgi-plugin-psgi (t/setup.sh installs it): the hook reads the logvar and
    # PATH_INFO of a Perl request as of a Python one.
    assert os.path.exists('/usr/lib/uwsgi/plugins/psgi_plugin.so'), 'run t/setup.sh'
    psgi = ['--plugin', 'psgi', '--psgi', os.path.join(ROOT, 't', 'apps', 'routes.psgi'),
            '--http-socket-modifier1', '5']
    u, addr = start(start_uwsgi, 'debian', logvar=False,
                    args=psgi + LOGVAR_ROUTES + ['--prometheus-route', '^/api/items/ /items'])
    send(u, TRAFFIC)
    assert get('127.0.0.1:%d' % u.http_port, '/elsewhere')[2] == b'ok from perl\n'
    want = dict(BY_ROUTING)
    want[('/items', '2xx')] = 5
    want[('other', '2xx')] = 4  # with the request above
    check_all_formats(addr, want, pb)


def test_route_values_are_escaped(start_uwsgi, pb):
    # The app puts the rest of /label/... in the logvar: a quote, a backslash, non-ASCII.
    u, addr = start(start_uwsgi, 'pip-routing', logvar=True)
    send(u, {'/label/q"x\\y': 2, '/label/caf\xc3\xa9'.encode('latin-1').decode('utf-8'): 1})
    check_all_formats(addr, {('q"x\\y', '2xx'): 2, ('caf\xe9', '2xx'): 1}, pb)
