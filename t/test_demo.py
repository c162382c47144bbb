"""The README's first command: t/demo.sh builds the plugin and starts uWSGI with both front
ends on the bundled app (here on ephemeral ports, stopped by pid at the end)."""
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

from conftest import ROOT, free_port, stop_session
from promcheck import promtool_clean, samples


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_demo_serves_both_front_ends():
    ports = {k: free_port() for k in ('DEMO_HTTP', 'DEMO_METRICS', 'DEMO_STATS')}
    env = dict(os.environ, **{k: '127.0.0.1:%d' % p for k, p in ports.items()})
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(['bash', 't/demo.sh'], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            server = 'http://127.0.0.1:%d/metrics' % ports['DEMO_METRICS']
            deadline = time.time() + 600  # includes a cargo build on a cold tree
            while True:
                try:
                    status, body = fetch(server)
                    break
                except OSError:
                    if p.poll() is not None or time.time() > deadline:
                        log.seek(0)
                        raise AssertionError('demo did not come up:\n'
                                             + log.read().decode()[-3000:]) from None
                    time.sleep(0.5)
            assert status == 200
            app = 'http://127.0.0.1:%d' % ports['DEMO_HTTP']
            assert fetch(app + '/metric')[0] == 200
            time.sleep(1.5)
            status, route_body = fetch(app + '/metrics')
            assert status == 200
            for b in (route_body, fetch(server)[1]):
                s = samples(b)
                assert s[('uwsgi_up', frozenset())] == 1
                promtool_clean(b)
            assert b'uwsgi_myapp_jobs_done_total 1' in fetch(server)[1]
            # The app's own prometheus_client metrics, served by the master.
            app_counts = samples(fetch(server)[1])
            assert app_counts[('demo_requests_total', frozenset({('path', '/metric')}))] == 1
            # Latency by route (demo.ini's --prometheus-route rules).
            routed = frozenset({('method', 'GET'), ('code', '2xx'), ('route', '/metric')})
            assert app_counts[('uwsgi_request_duration_seconds_count', routed)] == 1
            assert fetch('http://127.0.0.1:%d/' % ports['DEMO_STATS'])[0] == 200
        finally:
            # t/demo.sh execs uWSGI, so p.pid is the master; its session holds only what it forked.
            stop_session(p, signal.SIGINT, 15)
