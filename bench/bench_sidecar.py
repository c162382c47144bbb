"""A real sidecar exporter for bench/run.py: PyPI's uwsgi-prometheus (a prometheus_client
collector reading uWSGI's stats server) served by prometheus_client's start_http_server, the way
its README deploys it. Runs in the bench venv: bench_sidecar.py PORT STATS_URL"""
import sys
import time

from prometheus_client import REGISTRY, start_http_server
from uwsgi_prometheus.collectors import UWSGIStatsCollector

REGISTRY.register(UWSGIStatsCollector(stats_url=sys.argv[2]))
start_http_server(int(sys.argv[1]), addr='127.0.0.1')
print('sidecar serving on %s' % sys.argv[1], flush=True)
while True:
    time.sleep(3600)
