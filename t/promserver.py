"""A real Prometheus (PROMETHEUS, 2.42 in CI) scraping test instances, and its HTTP API."""
import contextlib
import json
import os
import subprocess
import tempfile
import urllib.parse
import urllib.request

from conftest import free_port


def prom_query(port, q):
    url = 'http://127.0.0.1:%d/api/v1/query?query=%s' % (port, urllib.parse.quote(q))
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)['data']['result']


def prom_targets(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/api/v1/targets' % port, timeout=10) as r:
        return json.load(r)['data']['activeTargets']


@contextlib.contextmanager
def prometheus(tmpdir, jobs, args=()):
    """Runs Prometheus scraping every second `jobs` ({job name: target address}); yields
    (API port, function returning its log so far). Stopped on exit."""
    port = free_port()
    d = tempfile.mkdtemp(dir=tmpdir)
    with open(os.path.join(d, 'prometheus.yml'), 'w') as f:
        f.write('global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n')
        for name, target in jobs.items():
            f.write('  - job_name: %s\n    static_configs: [{targets: ["%s"]}]\n'
                    % (name, target))
    logpath = os.path.join(d, 'prometheus.log')
    log = open(logpath, 'wb')
    prom = subprocess.Popen([os.environ.get('PROMETHEUS', 'prometheus'),
                             '--config.file=' + os.path.join(d, 'prometheus.yml'),
                             '--storage.tsdb.path=' + os.path.join(d, 'data'),
                             '--web.listen-address=127.0.0.1:%d' % port] + list(args),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def read_log():
        with open(logpath, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    try:
        yield port, read_log
    finally:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()
