"""A real Prometheus server for the integration tests ($PROMETHEUS, default `prometheus` on PATH).

Each one runs in a directory of the test's own (config, TSDB, log), listens on an ephemeral
127.0.0.1 port, and is stopped by its pid. Waiting is bounded polling of its HTTP API, never a
fixed sleep: Prometheus 2.42 starts scraping new targets about 5 s after it starts.
"""
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import free_port

PROMETHEUS = os.environ.get('PROMETHEUS', 'prometheus')


class Prometheus:
    """`config` is the text of prometheus.yml; `args` are extra command-line flags."""

    def __init__(self, workdir, config, args=()):
        self.dir = workdir
        self.port = free_port()
        self.config_path = os.path.join(workdir, 'prometheus.yml')
        with open(self.config_path, 'w') as f:
            f.write(config)
        self.args = [PROMETHEUS, '--config.file=' + self.config_path,
                     '--storage.tsdb.path=' + os.path.join(workdir, 'data'),
                     '--web.listen-address=127.0.0.1:%d' % self.port] + list(args)
        self.logfile = os.path.join(workdir, 'prometheus.log')
        self.proc = None

    @property
    def addr(self):
        return '127.0.0.1:%d' % self.port

    def start(self, timeout=30):
        self.log_fh = open(self.logfile, 'wb')
        self.proc = subprocess.Popen(self.args, stdout=self.log_fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait('ready', self.ready, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self):
        try:
            with urllib.request.urlopen('http://%s/-/ready' % self.addr, timeout=5) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def api(self, path, **params):
        url = 'http://%s/api/v1/%s' % (self.addr, path)
        if params:
            url += '?' + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)['data']

    def query(self, q):
        """Instant query: the result list ({'metric': labels, 'value': [t, 'v']})."""
        return self.api('query', query=q)['result']

    def targets(self):
        return self.api('targets')['activeTargets']

    def log(self):
        with open(self.logfile, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def wait(self, what, fn, timeout=40):
        """Polls fn() until it returns something truthy, which it returns; fails after
        `timeout` seconds with the last value and the tail of Prometheus' log."""
        deadline = time.time() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError('Prometheus exited (rc=%s) while waiting for %s:\n%s'
                                     % (self.proc.returncode, what, self.log()[-3000:]))
            try:
                last = fn()
            except OSError as e:  # not listening yet, or a query it cannot answer yet
                last = e
            else:
                if last:
                    return last
            if time.time() > deadline:
                raise AssertionError('timed out after %ss waiting for %s; last: %r\n%s'
                                     % (timeout, what, last, self.log()[-3000:]))
            time.sleep(0.25)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log_fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
