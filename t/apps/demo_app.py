"""The demo's application: t/apps/app.py with a few prometheus_client metrics of its own, as an
application team writes them. With `shared-pyimport = metrics_prometheus` (t/apps/demo.ini)
their values live in uWSGI's shared memory and the master serves them with uWSGI's."""
import time

from prometheus_client import Counter, Gauge, Histogram

from app import application as inner

REQUESTS = Counter('demo_requests', 'Requests the demo app served, by path.', ['path'])
LATENCY = Histogram('demo_request_seconds', 'Time the demo app spent on a request.')
IN_PROGRESS = Gauge('demo_in_progress', 'Requests being served now.', multiprocess_mode='livesum')


def application(environ, start_response):
    REQUESTS.labels(environ.get('PATH_INFO', '/')).inc()
    t0 = time.monotonic()
    with IN_PROGRESS.track_inprogress():
        try:
            return inner(environ, start_response)
        finally:
            LATENCY.observe(time.monotonic() - t0)
