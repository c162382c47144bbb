"""Checks shared by the integration tests: parse with the reference parsers, lint with promtool,
and compare with uWSGI's own stats server."""
import json
import os
import re
import subprocess
import time
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from conftest import scaled

TEXT_CT = 'text/plain; version=0.0.4; charset=utf-8'
OM_CT = 'application/openmetrics-text; version=1.0.0; charset=utf-8'
OM_ACCEPT = ('application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
             'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1')


def samples(body, openmetrics=False):
    """{(sample name, frozenset(labels)): value} via prometheus_client; fails on any parse error."""
    text = body.decode('utf-8')
    parse = om_parse if openmetrics else text_parse
    out = {}
    for fam in parse(text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, 'duplicate series %r' % (key,)
            out[key] = s.value
    return out


def promtool_clean(body):
    promtool = os.environ.get('PROMTOOL', 'promtool')
    r = subprocess.run([promtool, 'check', 'metrics'], input=body, capture_output=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == b'' and r.stderr == b'', (
        'promtool check metrics: rc=%d\n%s%s' % (r.returncode, r.stdout.decode(),
                                                  r.stderr.decode()))


SUFFIXES = ('', '_total', '_created', '_bucket', '_sum', '_count', '_info')


def assert_grouped(body):
    """Each family (by its metadata, or its sample name without metadata) is one contiguous
    block, which promtool does not check; a histogram's `_bucket`/`_sum`/`_count` lines and a
    counter's `_total`/`_created` belong to it (per label set, as the client libraries order
    them)."""
    seen, current = set(), None
    for line in body.decode().splitlines():
        if line.startswith(('# HELP ', '# TYPE ', '# UNIT ')):
            fam = line.split()[2]
        elif line.startswith('#') or not line:
            continue
        else:
            name = re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line).group(0)
            if current and any(name == current + x for x in SUFFIXES):
                continue
            fam = name
        if fam != current:
            assert fam not in seen, 'family %s is split into several groups' % fam
            seen.add(fam)
            current = fam


def stats_metrics(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=10) as r:
        data = json.loads(r.read().decode('utf-8', 'replace'))
    return {name: m['value'] for name, m in data['metrics'].items()}


# An oracle for the mapping, written from the README's table (not from the Rust code):
# uWSGI name pattern -> (sample name, label names, scale); None = not exported.
ORACLE = [
    (r'core\.(routed_signals|unrouted_signals|overloaded)$', 'uwsgi_core_{0}_total', [], 1),
    (r'core\.(busy_workers|idle_workers)$', 'uwsgi_core_{0}', [], 1),
    (r'worker\.0\.requests$', 'uwsgi_requests_total', [], 1),
    (r'worker\.0\.', None, None, None),
    (r'worker\.\d+\.failed_requests$', None, None, None),
    (r'worker\.(\d+)\.(requests|respawns)$', 'uwsgi_worker_{1}_total', ['worker'], 1),
    (r'worker\.(\d+)\.delta_requests$', 'uwsgi_worker_delta_requests', ['worker'], 1),
    (r'worker\.(\d+)\.avg_response_time$', 'uwsgi_worker_avg_response_time_seconds', ['worker'],
     1e-6),
    (r'worker\.(\d+)\.total_tx$', 'uwsgi_worker_tx_bytes_total', ['worker'], 1),
    (r'worker\.(\d+)\.rss_size$', 'uwsgi_worker_rss_bytes', ['worker'], 1),
    (r'worker\.(\d+)\.vsz_size$', 'uwsgi_worker_vsz_bytes', ['worker'], 1),
    (r'worker\.(\d+)\.running_time$', 'uwsgi_worker_running_time_seconds_total', ['worker'], 1e-6),
    (r'worker\.(\d+)\.core\.(\d+)\.(\w+)$', 'uwsgi_worker_core_{2}_total', ['worker', 'core'], 1),
    (r'core\.total_tx$', 'uwsgi_tx_bytes_total', [], 1),
    (r'core\.total_rss$', 'uwsgi_rss_bytes', [], 1),
    (r'core\.total_vsz$', 'uwsgi_vsz_bytes', [], 1),
    (r'core\.avg_response_time$', 'uwsgi_avg_response_time_seconds', [], 1e-6),
    (r'core\.total_running_time$', 'uwsgi_running_time_seconds_total', [], 1e-6),
    (r'socket\.(\d+)\.listen_queue$', 'uwsgi_socket_listen_queue', ['socket'], 1),
    (r'(rss_size|vsz_size)$', None, None, None),
    (r'myapp\.jobs\.done$', 'uwsgi_myapp_jobs_done_total', [], 1),
]


def expected_series(stats):
    out = {}
    for name, value in stats.items():
        for pat, sample, labels, scale in ORACLE:
            m = re.match(pat, name)
            if not m:
                continue
            if sample is not None:
                g = m.groups()
                nums = [x for x in g if x is not None and x.isdigit()]
                key = (sample.format(*g), frozenset(zip(labels, nums, strict=True)))
                out[key] = value * scale
            break
        else:
            raise AssertionError('oracle has no rule for uWSGI metric %s' % name)
    return out


def compare_with_stats(body, stats):
    """Every series the oracle derives from the stats server's metrics equals the scrape's."""
    got = samples(body)
    want = expected_series(stats)
    assert want, 'stats server reported no metrics'
    problems = []
    matched = set()
    for key, value in want.items():
        # The scrape may carry more labels than uWSGI's name gives (sockets also have
        # name and proto): match on the oracle's labels.
        hits = [k for k in got if k[0] == key[0] and key[1] <= k[1]]
        if len(hits) != 1:
            problems.append('%s %s: %d matching series in scrape' % (key[0], dict(key[1]),
                                                                      len(hits)))
            continue
        matched.add(hits[0])
        if abs(got[hits[0]] - value) > 1e-9:
            problems.append('%s %s: scrape %r, stats %r' % (key[0], dict(key[1]), got[hits[0]],
                                                              value))
    families = {k[0] for k in want}
    extra = {k for k in got if k[0] in families} - matched
    if extra:
        problems.append('series not in the stats server: %r' % sorted(extra)[:5])
    return problems


def agree_with_stats(scrape, stats_port, interval=1.5, timeout=10):
    """Scrape between two identical stats-server readings and compare every value, retried
    every `interval` seconds for up to `timeout`: uWSGI's collector copies the counters into
    its metrics about once a second, so right after requests the two may differ for a tick. A
    scrape through the route action is itself a request (counted live at once, by uWSGI's
    metrics a tick later): there, retry after more than a tick (the default); a scrape of the
    dedicated server is not, and can be retried sooner. `timeout` is scaled under a wrapper."""
    problems = None
    deadline = time.monotonic() + scaled(timeout)
    while True:
        before = stats_metrics(stats_port)
        body = scrape()
        after = stats_metrics(stats_port)
        if before == after:
            problems = compare_with_stats(body, before)
            if not problems:
                return body
        if time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    raise AssertionError('scrape disagrees with the stats server: %s' % (problems or 'unstable'))
