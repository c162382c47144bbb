"""The WSGI app of bench/app_metrics.py (a script, not a test), run with the plugin,
`--prometheus-app-metrics` (or not: the memory baseline) and `shared-pyimport =
metrics_prometheus`.

  /bench?rounds=R&number=N   ns per call of prometheus_client's hot paths with each value class,
                             measured here, in this uWSGI worker, in interleaved rounds: JSON
  /profile?rounds=R&number=N the pieces of UwsgiValue.inc's cost, same method: JSON
  /check                     this worker's id and whether metrics_prometheus is installed

With APP_BENCH_SERIES=C,H in the environment the module creates C counters and H histograms
(default buckets: 16 samples each) in the master (before fork), and every worker writes every
sample once after fork (uwsgi.post_fork_hook): every counter ends at the number of workers.
"""
import json
import os
import tempfile
import threading
import time
import timeit

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram, Summary, values

try:
    import uwsgi
except ImportError:  # pragma: no cover (only runs inside uWSGI)
    uwsgi = None

try:
    import metrics_prometheus
except ImportError:
    metrics_prometheus = None

# ------------------------------------------------------------------------------------------
# part 1: ns per call


class NoopValue:
    """A value that does nothing: what prometheus_client's own wrappers cost (the floor)."""

    _multiprocess = False

    def __init__(self, *args, **kwargs):
        pass

    def inc(self, amount):
        pass

    def set(self, value, timestamp=None):
        pass

    def set_exemplar(self, exemplar):
        pass

    def get(self):
        return 0.0

    def get_exemplar(self):
        return None


OPS = (
    ('Counter.inc', 'c.inc()'),
    ('Gauge.set', 'g.set(3.0)'),
    ('Gauge.inc', 'g.inc()'),
    ('Histogram.observe', 'h.observe(0.3)'),
    ('labels(...).inc', "lc.labels('get', '200').inc()"),
    ('Summary.observe', 's.observe(0.3)'),
)


def metric_set(value_class, prefix):
    """One of each metric, with `value_class` as prometheus_client's ValueClass while they are
    made (registry=None: the sets' names never clash)."""
    saved = values.ValueClass
    values.ValueClass = value_class
    try:
        ns = dict(
            c=Counter(prefix + '_c', 'A counter.', registry=None),
            g=Gauge(prefix + '_g', 'A gauge.', registry=None),
            h=Histogram(prefix + '_h', 'A histogram.', registry=None),
            lc=Counter(prefix + '_lc', 'A labelled counter.', ['method', 'status'],
                       registry=None),
            s=Summary(prefix + '_s', 'A summary.', registry=None),
        )
        ns['lc'].labels('get', '200')  # the child exists: the op is lookup + inc
    finally:
        values.ValueClass = saved
    return ns


_SETS = None
_MPDIR = None


def sets():
    """{class label: namespace}, made once per worker."""
    global _SETS, _MPDIR
    if _SETS is None:
        _MPDIR = tempfile.mkdtemp(prefix='app-bench-mp-')
        os.environ['PROMETHEUS_MULTIPROC_DIR'] = _MPDIR
        try:
            mp = metric_set(values.MultiProcessValue(), 'bench_mp')
        finally:
            del os.environ['PROMETHEUS_MULTIPROC_DIR']
        _SETS = {'single': metric_set(values.MutexValue, 'bench_mutex'), 'multiprocess': mp}
        if metrics_prometheus is not None and metrics_prometheus.installed:
            _SETS['uwsgi'] = metric_set(metrics_prometheus.UwsgiValue, 'bench_uwsgi')
        ref = load_ref()
        if ref is not None:
            _SETS['ref'] = metric_set(ref.UwsgiValue, 'bench_ref')
        _SETS['noop'] = metric_set(NoopValue, 'bench_noop')
    return _SETS


def load_ref():
    """The package's module from APP_BENCH_COMPARE (another revision of it, for bench/
    app_metrics.py --compare), bound to the same table; None without."""
    path = os.environ.get('APP_BENCH_COMPARE')
    if not path:
        return None
    import importlib.util
    saved = values.ValueClass
    spec = importlib.util.spec_from_file_location('metrics_prometheus_ref', path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)  # maps the same table (its own views of it)
    finally:
        values.ValueClass = saved
    return mod if mod.installed else None


def interleaved(cases, rounds, number):
    """{case: [ns per call, one per round]}; cases is [(name, stmt, globals)], run in an order
    rotated each round so that drift hits all alike."""
    out = {name: [] for name, _, _ in cases}
    timers = [(name, timeit.Timer(stmt, globals=g)) for name, stmt, g in cases]
    for _, t in timers:
        t.timeit(number // 10 or 1)  # warm-up
    for r in range(rounds):
        k = r % len(timers)
        for name, t in timers[k:] + timers[:k]:
            out[name].append(t.timeit(number) / number * 1e9)
    return out


def bench(rounds, number):
    s = sets()
    res = {}
    for op, stmt in OPS:
        got = interleaved([(cls, stmt, ns) for cls, ns in s.items()], rounds, number)
        for cls, xs in got.items():
            res.setdefault(cls, {})[op] = xs
    return res


def profile(rounds, number):
    """The pieces of the hot path, each alone (ns per statement), beside whole calls."""
    s = sets()
    cases = []
    for cls in ('single', 'multiprocess', 'uwsgi'):
        if cls in s:
            c = s[cls]['c']
            cases.append(('%s: value.inc(1.0) (the value alone)' % cls, 'v.inc(1.0)',
                          {'v': c._value}))
            cases.append(('%s: Counter.inc()' % cls, 'c.inc()', {'c': c}))
    if 'uwsgi' in s:
        mp = metrics_prometheus
        v = s['uwsgi']['c']._value
        g = s['uwsgi']['g']._value
        row = mp._base[0]
        env = {'_base': mp._base, '_values': mp._values, '_stamps': mp._stamps, 'v': v,
               'g': g, 'row': row, 'i': v._index, 'lock': threading.Lock(), 'time': time.time,
               'o': type('O', (), {'x': 0.0})()}
        cases += [
            ('uwsgi: gauge value.inc(1.0)', 'g.inc(1.0)', env),
            ('uwsgi: gauge value.set(1.0)', 'g.set(1.0)', env),
            ('piece: i = v._index', 'i = v._index', env),
            ('piece: row = _base[0]', 'row = _base[0]', env),
            ('piece: _values[row + i] += 1.0', '_values[row + i] += 1.0', env),
            ('piece: _values[row + i] (read)', '_values[row + i]', env),
            ('piece: with lock: pass', 'with lock: pass', env),
            ('piece: lock.acquire(); lock.release()', 'lock.acquire(); lock.release()', env),
            ('piece: lock.acquire(); try: pass; finally: lock.release()',
             'lock.acquire()\ntry:\n    pass\nfinally:\n    lock.release()', env),
            ('piece: time.time()', 'time()', env),
            ('piece: _stamps[row + i] = time()', '_stamps[row + i] = time()', env),
            ('piece: o.x += 1.0 (MutexValue\'s update)', 'o.x += 1.0', env),
            ('piece: if v._gauge: pass', 'if v._gauge: pass', env),
            ('piece: empty statement', 'pass', env),
        ]
    return interleaved(cases, rounds, number)


# ------------------------------------------------------------------------------------------
# parts 2 and 3: a worker-wide table of counters and histograms

FILL = []


def _make_series(spec):
    c, h = (int(x) for x in spec.split(','))
    for n in range(c):
        FILL.append(('c', Counter('bench_app_counter_%d' % n, 'Counter %d.' % n)))
    for n in range(h):
        FILL.append(('h', Histogram('bench_app_hist_%d_seconds' % n, 'Histogram %d.' % n)))


# Observations landing in each default bucket once (and +Inf): every cell is written.
OBSERVATIONS = (0.001, 0.007, 0.02, 0.04, 0.06, 0.08, 0.2, 0.4, 0.6, 0.9, 2.0, 4.0, 6.0, 9.0, 20.0)
FILLED = {'done': False}


def fill():
    for kind, m in FILL:
        if kind == 'c':
            m.inc()
        else:
            for x in OBSERVATIONS:
                m.observe(x)
    FILLED['done'] = True


if os.environ.get('APP_BENCH_SERIES'):
    _make_series(os.environ['APP_BENCH_SERIES'])
    if uwsgi is not None:
        uwsgi.post_fork_hook = fill


# ------------------------------------------------------------------------------------------

def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    qs = dict(kv.partition('=')[::2] for kv in environ.get('QUERY_STRING', '').split('&') if kv)
    wid = uwsgi.worker_id() if uwsgi else 0
    if path == '/bench':
        body = json.dumps(bench(int(qs.get('rounds', 9)), int(qs.get('number', 20000))))
    elif path == '/profile':
        body = json.dumps(profile(int(qs.get('rounds', 9)), int(qs.get('number', 20000))))
    elif path == '/check':
        body = json.dumps({'worker': wid, 'pid': os.getpid(), 'filled': FILLED['done'],
                           'installed': bool(metrics_prometheus and metrics_prometheus.installed),
                           'reason': metrics_prometheus and metrics_prometheus.reason,
                           'prometheus_client': prometheus_client.__file__,
                           'metrics_prometheus':
                               metrics_prometheus and metrics_prometheus.__file__})
    else:
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'not found\n']
    data = body.encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('X-Worker', str(wid)),
                              ('Content-Length', str(len(data)))])
    return [data]
