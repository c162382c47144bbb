"""t/apps/app_metrics.py under prometheus_client's own multiprocess mode (PROMETHEUS_MULTIPROC_DIR
set, metrics_prometheus not imported): /metrics-app serves a MultiProcessCollector's registry,
as prometheus_client's documentation tells multiprocess applications to. The reference of the
differential test in t/test_app_metrics.py."""
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

import app_metrics


def application(environ, start_response):
    if environ.get('PATH_INFO') != '/metrics-app':
        return app_metrics.application(environ, start_response)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    body = generate_latest(registry)
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('X-Worker', str(app_metrics.worker_id()))])
    return [body]
