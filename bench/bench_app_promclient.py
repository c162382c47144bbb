"""The app-level alternative for bench/run.py's overhead part: the trivial app of
bench/request_overhead_app.py plus a prometheus_client Histogram in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR set by the caller), as prometheus_flask_exporter does: one
observation per request labelled by method and status, and /metrics rendered by a
MultiProcessCollector over every worker's files (scraped through the app itself)."""
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import multiprocess

BODY = b'ok\n'
HEADERS = [('Content-Type', 'text/plain'), ('Content-Length', str(len(BODY)))]
LATENCY = Histogram('http_request_duration_seconds', 'Flask HTTP request duration in seconds',
                    ['method', 'status'])


def metrics(start_response):
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    data = generate_latest(registry)
    start_response('200 OK', [('Content-Type', CONTENT_TYPE_LATEST),
                              ('Content-Length', str(len(data)))])
    return [data]


def application(environ, start_response):
    if environ.get('PATH_INFO') == '/metrics':
        return metrics(start_response)
    t0 = time.perf_counter()
    start_response('200 OK', HEADERS)
    LATENCY.labels(environ.get('REQUEST_METHOD', 'GET'), '200').observe(time.perf_counter() - t0)
    return [BODY]
