"""Issue 19: the truth under load. Every histogram sample agrees with itself while `wrk`
saturates the instance, in protobuf (native and classic buckets) and OpenMetrics (with
exemplars of concurrent traced requests); the master keeps answering when a worker dies
holding uWSGI's metrics lock."""
import re
import statistics
import subprocess
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from helpers import PROTO_ACCEPT, decode, get, native_counts, server_addrs
from promcheck import promtool_clean, samples

TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
OM_ACCEPT = 'application/openmetrics-text; version=1.0.0'


def native_total(h):
    """The zero bucket plus every native bucket."""
    return h.zero_count + sum(native_counts(h).values())


def protobuf_problems(fams):
    """What Prometheus would reject or misread in the histograms of one protobuf scrape."""
    out = []
    for f in fams:
        for m in f.metric:
            if not m.HasField('histogram'):
                continue
            h = m.histogram
            labels = {lp.name: lp.value for lp in m.label}
            cums = [b.cumulative_count for b in h.bucket]
            if cums != sorted(cums) or (cums and cums[-1] > h.sample_count):
                out.append('%s %s: classic %s, count %d' % (f.name, labels, cums, h.sample_count))
            if h.schema or h.positive_span or h.zero_count or h.zero_threshold:
                n = native_total(h)
                if n != h.sample_count:
                    out.append('%s %s: native %d, count %d' % (f.name, labels, n, h.sample_count))
    return out


def openmetrics_problems(body):
    """Histogram samples whose +Inf bucket differs from _count, or whose buckets go down."""
    out = []
    for fam in text_string_to_metric_families(body.decode()):
        if fam.type != 'histogram':
            continue
        series = {}
        for s in fam.samples:
            key = frozenset((k, v) for k, v in s.labels.items() if k != 'le')
            series.setdefault(key, []).append(s)
        for key, ss in series.items():
            buckets = [s.value for s in ss if s.name.endswith('_bucket')]
            count = [s.value for s in ss if s.name.endswith('_count')]
            if buckets != sorted(buckets) or count != buckets[-1:]:
                out.append('%s %s: buckets %s, count %s' % (fam.name, dict(key), buckets, count))
            for s in ss:
                if s.exemplar and s.exemplar.labels.get('trace_id') != TRACE:
                    out.append('%s: exemplar %s' % (fam.name, s.exemplar))
    return out


@pytest.fixture
def wrk():
    procs = []

    def _start(port, seconds):
        p = subprocess.Popen(['wrk', '-t', '2', '-c', '32', '-d', '%ds' % seconds,
                              '-H', 'traceparent: 00-%s-00f067aa0ba902b7-01' % TRACE,
                              'http://127.0.0.1:%d/' % port],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    yield _start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.parametrize('variant', ['pip-routing', 'debian'])
def test_every_histogram_sample_is_consistent_under_load(start_uwsgi, wrk, pb, variant):
    u = start_uwsgi(variant, ['--workers', '2', '--threads', '4', '--prometheus-exemplars',
                              '--prometheus-server', '127.0.0.1:0'])
    addr = server_addrs(u)[0]
    load = wrk(u.http_port, 600)
    scrapes = {'protobuf': 0, 'openmetrics': 0}
    problems = []
    counts = []
    deadline = time.monotonic() + 60
    try:
        while scrapes['protobuf'] < 3000 and time.monotonic() < deadline:
            status, _, body = get(addr, headers={'Accept': PROTO_ACCEPT})
            assert status == 200
            fams = decode(pb, body)
            problems += protobuf_problems(fams)
            scrapes['protobuf'] += 1
            if scrapes['protobuf'] % 3 == 0:
                status, _, om = get(addr, headers={'Accept': OM_ACCEPT})
                assert status == 200
                problems += openmetrics_problems(om)
                scrapes['openmetrics'] += 1
            counts.append(sum(m.histogram.sample_count for f in fams for m in f.metric
                              if f.name == 'uwsgi_request_duration_seconds'))
    finally:
        load.kill()
        out = load.communicate()[0].decode()
    assert load.returncode is not None
    assert not problems, '%d inconsistent samples in %s scrapes, first: %s' % (
        len(problems), scrapes, problems[:5])
    # It was under load: requests completed between nearly every two scrapes.
    moved = sum(1 for a, b in zip(counts[:-1], counts[1:], strict=True) if b > a)
    assert scrapes['protobuf'] >= 1000 and moved >= 0.5 * len(counts), (scrapes, moved, out)
    assert counts == sorted(counts), 'a count went down'
    _, _, om = get(addr, headers={'Accept': OM_ACCEPT})
    assert ('trace_id="%s"' % TRACE) in om.decode(), 'no exemplar of the traced requests'
    promtool_clean(get(addr)[2])


def scrape_ms(addr):
    t0 = time.monotonic()
    status, _, body = get(addr, timeout=5)
    return status, body, (time.monotonic() - t0) * 1000


def test_master_answers_while_a_dead_worker_holds_the_metrics_lock(start_uwsgi):
    u = start_uwsgi('pip-routing-faults', [
        '--workers', '2', '--metric', 'myapp.jobs.done', '--prometheus-server', '127.0.0.1:0',
        '--route', '^/__die_holding_metrics_lock$ prometheus-metrics:',
        '--route', '^/metrics$ prometheus-metrics:'])
    addr = server_addrs(u)[0]
    for _ in range(3):
        assert u.get('/metric')[0] == 200
    jobs = ('uwsgi_myapp_jobs_done_total', frozenset())
    stale = ('uwsgi_exporter_stale_reads_total', frozenset())

    def scrape():
        status, body, ms = scrape_ms(addr)
        assert status == 200
        return samples(body), ms

    before = [scrape() for _ in range(5)]
    assert before[-1][0][jobs] == 3 and before[-1][0][stale] == 0
    usual = statistics.median(ms for _, ms in before)

    # The worker takes the write lock and exits holding it: nobody will ever release it.
    try:
        u.get('/__die_holding_metrics_lock', timeout=5)
    except Exception:  # noqa: BLE001 (the connection dies with the worker)
        pass
    u.wait_log(r'Respawned uWSGI worker', timeout=10)

    after = [scrape() for _ in range(20)]
    values = [s for s, _ in after]
    assert all(v[jobs] == 3 for v in values), 'the last values read are served'
    assert [v[stale] for v in values] == list(range(1, 21)), 'each scrape counted as stale'
    assert all(v[('uwsgi_up', frozenset())] == 1 for v in values)
    worst = max(ms for _, ms in after)
    # The master never waits on the lock: every scrape takes about what it took before (a
    # wait would show as a timeout, 5 s).
    assert statistics.median(ms for _, ms in after) < usual * 3 + 20, (usual, after)
    assert worst < 1000, (usual, worst)
    # A respawned worker's route scrape has nothing read yet: it reads without the lock.
    status, _, body = u.get('/metrics', timeout=5)
    assert status == 200 and samples(body)[jobs] == 3
    assert re.search(r'uwsgi_exporter_stale_reads_total 2\d', get(addr)[2].decode())
    promtool_clean(get(addr)[2])


@pytest.mark.parametrize('args, message', [
    (['--prometheus-exemplars', '--prometheus-no-histograms'],
     r'--prometheus-exemplars: exemplars live in the request histograms'),
    (['--prometheus-basic-auth', 'u:sha256:' + 'a' * 64],
     r'--prometheus-basic-auth: it protects --prometheus-server, and none is configured'),
    (['--prometheus-allow', '10.0.0.0/8'],
     r'--prometheus-allow: it restricts --prometheus-server, and none is configured'),
])
def test_contradictory_options_stop_startup(start_uwsgi, args, message):
    u = start_uwsgi('pip-norouting', args, wait_for=None)
    assert u.wait_exit() == 1
    assert re.search(r'\[metrics_prometheus\] ' + message, u.log()), u.log()


def test_options_left_without_effect_are_named_once(start_uwsgi, tmpdir_path):
    u = start_uwsgi('pip-norouting', [
        '--prometheus-no-histograms', '--prometheus-buckets', '0.1',
        '--prometheus-compat-stats-uri', 'x', '--prometheus-server', '127.0.0.1:0',
        '--prometheus-server-mode', '660', '--prometheus-vassal-timeout', '500'])
    server_addrs(u)
    log = u.log()
    for opt, why in [('buckets', '--prometheus-no-histograms turns the request histograms off'),
                     ('compat-stats-uri', 'it only labels the --prometheus-compat'),
                     ('server-mode', 'no --prometheus-server listens on a UNIX socket'),
                     ('vassal-timeout', 'it bounds the wait for --prometheus-vassal-socket')]:
        line = '[metrics_prometheus] --prometheus-%s is ignored: %s' % (opt, why)
        assert log.count(line) == 1, (line, log)
    assert log.count(' is ignored: ') == 4
    # The instance runs as configured otherwise.
    assert get(server_addrs(u)[0])[0] == 200
