"""Issue 22 point 2: `--prometheus-include GLOB` / `--prometheus-exclude GLOB` against real
uWSGI (pip 2.0.31 and Debian 2.0.21).

The expected family sets are computed independently of the plugin: an instance without any
pattern gives every family, and Python's fnmatch.fnmatchcase (same `*`, `?`, `[...]`,
`[!...]` grammar) says which of them the patterns keep, matched on the name of the text
format's `# TYPE` line (a counter also under its name without `_total`). Each filtered
instance must then show exactly that set in the text format, OpenMetrics and protobuf.
"""
import os
import re
import shutil
import subprocess
from fnmatch import fnmatchcase

import pytest

from conftest import ROOT, VARIANTS
from helpers import PROTO_ACCEPT, decode, get, server_addrs
from promcheck import OM_ACCEPT, promtool_clean, samples

BOTH = ['pip-routing', 'debian']
UNMATCHED = ': the pattern matches no family of this instance'


def start(start_uwsgi, variant, extra=()):
    """An instance with workers, cores, a custom metric, a cache and observed histograms;
    (uwsgi, the dedicated server's address)."""
    u = start_uwsgi(variant, ['--workers', '2', '--threads', '2',
                              '--metric', 'myapp.jobs.done',
                              '--cache2', 'name=mycache,items=10',
                              '--prometheus-server', '127.0.0.1:0'] + list(extra))
    addr = server_addrs(u)[0]
    for path in ['/', '/cache', '/status?404']:
        assert u.get(path)[0] in (200, 404)
    return u, addr


def type_lines(body):
    """{family: type} of the `# TYPE` lines of a text rendering."""
    return dict(re.findall(r'^# TYPE (\S+) (\S+)$', body.decode(), re.M))


def families(addr, pb):
    """The families of one scrape in each format, all named as the text format names them
    (an OpenMetrics counter gets its `_total` back). Every body is also checked: promtool for
    the text format, prometheus_client's parsers for both text formats."""
    text = get(addr)[2]
    promtool_clean(text)
    samples(text)
    om = get(addr, headers={'Accept': OM_ACCEPT})[2]
    samples(om, openmetrics=True)
    assert om.endswith(b'# EOF\n')
    status, headers, body = get(addr, headers={'Accept': PROTO_ACCEPT})
    assert status == 200 and 'protobuf' in headers['content-type']
    om_fams = {n + '_total' if t == 'counter' else n: t for n, t in type_lines(om).items()}
    pb_fams = [f.name for f in decode(pb, body)]
    assert len(pb_fams) == len(set(pb_fams)), pb_fams
    return type_lines(text), om_fams, set(pb_fams)


def kept(fams, include, exclude):
    """The oracle: what the patterns keep of `fams` ({text name: type}); a value may list
    several patterns, comma-separated."""
    include = [p for v in include for p in v.split(',')]
    exclude = [p for v in exclude for p in v.split(',')]

    def hit(pats, name, kind):
        names = [name] + ([name[:-len('_total')]] if kind == 'counter' else [])
        return any(fnmatchcase(n, p) for p in pats for n in names)
    return {n for n, k in fams.items()
            if not hit(exclude, n, k) and (not include or hit(include, n, k))}


def check_filtered(start_uwsgi, pb, variant, include, exclude, baseline):
    args = []
    for p in include:
        args += ['--prometheus-include', p]
    for p in exclude:
        args += ['--prometheus-exclude', p]
    u, addr = start(start_uwsgi, variant, args)
    text, om, proto = families(addr, pb)
    want = kept(baseline, include, exclude)
    assert set(text) == want, (sorted(set(text) ^ want), u.log()[-2000:])
    assert set(om) == want and proto == want, (sorted(set(om) ^ want), sorted(proto ^ want))
    # Left out whole: no sample of a dropped family under any of its sample names.
    names = {n for n, _ in samples(get(addr)[2])}
    for gone in set(baseline) - want:
        base = gone[:-len('_total')] if gone.endswith('_total') else gone
        assert not [n for n in names if n in (gone, base, base + '_bucket', base + '_sum',
                                              base + '_count', base + '_info')], gone
    return u


@pytest.mark.parametrize('variant', BOTH)
def test_include_and_exclude_give_exactly_the_expected_families(start_uwsgi, pb, variant):
    _, addr = start(start_uwsgi, variant)
    baseline, om, proto = families(addr, pb)
    assert set(baseline) == set(om) == proto
    # The instance has what the patterns below are about.
    for f in ('uwsgi_worker_requests_total', 'uwsgi_request_duration_seconds',
              'uwsgi_myapp_jobs_done_total', 'uwsgi_cache_hits_total', 'uwsgi_up'):
        assert f in baseline, sorted(baseline)
    assert baseline['uwsgi_request_duration_seconds'] == 'histogram'

    # Exclude only: everything but the per-worker families and the request histogram.
    u = check_filtered(start_uwsgi, pb, variant, [],
                       ['uwsgi_worker_*', 'uwsgi_request_duration_seconds'], baseline)
    assert UNMATCHED not in u.log()

    # Include, with exclude winning; a counter included under its OpenMetrics name; a set.
    u = check_filtered(start_uwsgi, pb, variant,
                       ['uwsgi_worker_*,uwsgi_request_*', 'uwsgi_myapp_jobs_done', 'uwsgi_up',
                        'uwsgi_nomatch_*'],
                       ['uwsgi_worker_[a-c]*', 'uwsgi_worker_?ss_bytes'], baseline)
    log = u.log()
    line = '[metrics_prometheus] --prometheus-include uwsgi_nomatch_*' + UNMATCHED
    assert log.count(line) == 1, log[-3000:]
    assert log.count(UNMATCHED) == 1, log[-3000:]
    # The log says nothing of the families left out on purpose.
    assert 'left out by --prometheus-include' not in log


def test_a_bad_pattern_stops_startup(start_uwsgi):
    u = start_uwsgi('pip-routing', ['--prometheus-server', '127.0.0.1:0',
                                    '--prometheus-exclude', 'uwsgi-worker-*'], wait_for=None)
    assert u.wait_exit() != 0
    log = u.log()
    assert ("invalid value for --prometheus-exclude: 'uwsgi-worker-*': '-' never appears in a "
            "family name") in log, log[-2000:]


@pytest.fixture(scope='module')
def app_venv(tmp_path_factory):
    """The pip uWSGI's venv with `pip install ./python` done (as t/test_app_metrics.py does)."""
    v = VARIANTS['pip-routing'].require()
    python = os.path.join(os.path.dirname(v.bin), 'python')
    src = os.path.join(str(tmp_path_factory.mktemp('app-python')), 'python')
    shutil.copytree(os.path.join(ROOT, 'python'), src,
                    ignore=shutil.ignore_patterns('build', '*.egg-info', '__pycache__'))
    r = subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--force-reinstall',
                        src], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_application_families_are_filtered_at_scrape_time(start_uwsgi, pb, app_venv):
    include, exclude = ['app_*,uwsgi_up'], ['app_*_level,app_latency_seconds,app_imports']

    def start_app(extra):
        u = start_uwsgi('pip-routing', [
            '--workers', '2', '--master', '--pythonpath', os.path.join(ROOT, 't', 'apps'),
            '--module', 'app_metrics', '--prometheus-server', '127.0.0.1:0',
            '--prometheus-app-metrics', '--shared-pyimport', 'metrics_prometheus'] + extra)
        addr = server_addrs(u)[0]
        for _ in range(3):
            assert u.get('/work')[0] == 200
        return u, addr

    _, addr = start_app([])
    baseline, _, _ = families(addr, pb)
    for f in ('app_requests_total', 'app_odd_level', 'app_latency_seconds', 'app_imports_total',
              'app_payload_bytes', 'uwsgi_worker_requests_total'):
        assert f in baseline, sorted(baseline)
    want = kept(baseline, include, exclude)
    assert 'app_requests_total' in want and 'app_imports_total' not in want
    u, addr = start_app(['--prometheus-include', include[0], '--prometheus-exclude', exclude[0],
                         '--prometheus-include', 'uwsgi_nomatch_*,nomatch_*'])
    text, om, proto = families(addr, pb)
    assert set(text) == want and set(om) == want and proto == want, (
        sorted(set(text) ^ want), sorted(set(om) ^ want), sorted(proto ^ want))
    assert samples(get(addr)[2])[('app_requests_total', frozenset({('path', '/work')}))] == 3
    # At startup, only a pattern under the plugin's prefix (which application families may not
    # use) can be judged: the others may be meant for families the application makes later.
    log = u.log()
    line = '[metrics_prometheus] --prometheus-include uwsgi_nomatch_*' + UNMATCHED
    assert log.count(line) == 1 and log.count(UNMATCHED) == 1, log[-3000:]
