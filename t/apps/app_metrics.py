"""A WSGI app instrumented with prometheus_client, as an application team writes it: nothing in
it knows about uWSGI's shared memory (metrics_prometheus is imported by the configuration,
`shared-pyimport = metrics_prometheus`)."""
import os
import time

from prometheus_client import Counter, Gauge, Histogram, Summary, generate_latest

REQUESTS = Counter('app_requests', 'Requests handled, by path.', ['path'])
LATENCY = Histogram('app_latency_seconds', 'Simulated work time.', buckets=(0.01, 0.1, 1.0))
SIZES = Summary('app_payload_bytes', 'Payload sizes.')
MODES = ('all', 'liveall', 'min', 'livemin', 'max', 'livemax', 'sum', 'livesum', 'mostrecent',
         'livemostrecent')
# prometheus_client 0.16 (Debian 12's) knows only some of them (mostrecent came in 0.17): a Gauge
# in another mode raises ValueError there.
MODES = tuple(m for m in MODES if m in getattr(Gauge, '_MULTIPROC_MODES', MODES))
# Named app_<mode>_level: promtool's lint rejects a gauge named *_gauge* or *_sum.
GAUGES = {m: Gauge('app_%s_level' % m, 'A gauge in mode %s.' % m, multiprocess_mode=m)
          for m in MODES}
MULE_TICKS = Counter('app_mule_ticks', 'Ticks of the mule loop.')
SPOOLED = Counter('app_spooled_tasks', 'Spooler tasks run.')
# In the default multiprocess_mode ('all'), as an application writes an in-progress gauge.
IN_PROGRESS = Gauge('app_sleeping', 'Requests sleeping in /sleep now.')
ODD = Gauge('app_odd_level', 'Odd values: "quotes", \\ backslash,\nnewline, unicode \u00e9.',
            multiprocess_mode='max')
# Counted where the module is imported: once in the master (preforked), in each worker with
# lazy-apps.
IMPORTS = Counter('app_imports', 'Imports of the application module.')
IMPORTS.inc()
ODD_LABEL = '/odd "q" \\ \u00e9\nx'


def worker_id():
    try:
        import uwsgi
        return uwsgi.worker_id()
    except ImportError:
        return 0


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    qs = environ.get('QUERY_STRING', '')
    body = b''
    if path == '/gwork':
        # /work under gevent, yielding to the other greenlets of the worker first.
        import gevent
        gevent.sleep(0.01)
        path = '/work'
    if path == '/work':
        REQUESTS.labels(path).inc()
        LATENCY.observe(float(qs or 0.05))
        SIZES.observe(10)
    elif path == '/gauge':
        for g in GAUGES.values():
            g.set(worker_id() * 10)
    elif path == '/sleep':
        with IN_PROGRESS.track_inprogress():
            time.sleep(float(qs or 5))
    elif path == '/odd':
        REQUESTS.labels(ODD_LABEL).inc()
        ODD.set(1234567.0)
    elif path == '/die':
        # Only the worker named in the query string dies (os._exit: no cleanup, like a crash).
        if str(worker_id()) == qs:
            os._exit(1)
    elif path == '/long':
        # A label value longer than an entry of the plugin's table holds: kept in-process.
        REQUESTS.labels('/long/' + 'x' * 600).inc()
    elif path == '/fork':
        # A process the application forks itself (not a uWSGI worker): counts in its own slot,
        # which the master never exports.
        child = os.fork()
        if child == 0:
            try:
                REQUESTS.labels('/fork').inc()
                if qs == 'set':
                    GAUGES['all'].set(99)
            finally:
                os._exit(0)
        os.waitpid(child, 0)
    elif path == '/spool':
        import uwsgi
        uwsgi.spool({b'task': b'count'})
    elif path == '/metrics-app':
        # The application's own endpoint, as prometheus_client users write it.
        body = generate_latest()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('X-Worker', str(worker_id())),
                              ('X-Pid', str(os.getpid()))])
    return [body or ('%s worker %d\n' % (path, worker_id())).encode()]


def spooler(env):
    SPOOLED.inc()
    import uwsgi
    return uwsgi.SPOOL_OK


def mule_loop(ticks):
    for _ in range(ticks):
        MULE_TICKS.inc()
        time.sleep(0.01)
    while True:
        time.sleep(60)


try:
    import uwsgi
    uwsgi.spooler = spooler
except ImportError:
    pass
