"""Harness for the integration tests: real uWSGI processes with the built plugin.

The uWSGI binaries come from t/setup.sh (paths in $MP_ENV/env, exported by t/test.sh); the
plugin for each binary is built by t/test.sh into build/<variant>/metrics_prometheus_plugin.so.
A test that needs a variant that is missing FAILS and says how to get it; nothing is skipped.
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, 't', 'apps', 'app.py')


class Variant:
    def __init__(self, name, env_var, python_plugin):
        self.name = name
        self.env_var = env_var
        self.bin = os.environ.get(env_var, '')
        self.python_plugin = python_plugin  # Debian ships python as a plugin, pip embeds it
        self.plugin = os.path.join(ROOT, 'build', name, 'metrics_prometheus_plugin.so')

    def require(self):
        if not self.bin or not os.access(self.bin, os.X_OK):
            pytest.fail('uWSGI variant %s missing: %s=%r. Run `bash t/setup.sh` and use '
                        '`bash t/test.sh`, which exports it' % (self.name, self.env_var, self.bin))
        if not os.path.exists(self.plugin):
            pytest.fail('plugin for %s not built at %s; `bash t/test.sh` builds it'
                        % (self.name, self.plugin))
        return self

    def cflags(self):
        return subprocess.check_output([self.bin, '--cflags'], text=True)

    @property
    def routing(self):
        return '-DUWSGI_ROUTING' in self.cflags()

    def base_args(self):
        return ['--plugin', 'python3'] if self.python_plugin else []


VARIANTS = {
    'debian': Variant('debian', 'UWSGI_DEBIAN', True),
    'pip-routing': Variant('pip-routing', 'UWSGI_PIP_ROUTING', False),
    'pip-norouting': Variant('pip-norouting', 'UWSGI_PIP_NOROUTING', False),
    # Same binary, plugin built with the test-only `fault-injection` feature.
    'pip-routing-faults': Variant('pip-routing-faults', 'UWSGI_PIP_ROUTING', False),
}
MAIN_VARIANTS = ['debian', 'pip-norouting', 'pip-routing']
ROUTING_VARIANTS = ['debian', 'pip-routing']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Uwsgi:
    """One uWSGI instance started by a test; always stopped (by pid) at teardown."""

    def __init__(self, variant, args, tmpdir):
        self.variant = variant
        self.tmpdir = tmpdir
        self.logfile = os.path.join(tmpdir, 'uwsgi.log')
        self.http_port = None
        self.args = [variant.bin] + variant.base_args() + args
        self.proc = None

    def start(self, wait_for=r'spawned uWSGI worker', timeout=20):
        self.log_fh = open(self.logfile, 'wb')
        # A new session makes the master the leader of a process group holding only what it
        # forked, so teardown can reach leftover workers without touching anything else.
        self.proc = subprocess.Popen(self.args, stdout=self.log_fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.tmpdir,
                                     start_new_session=True)
        if wait_for:
            self.wait_log(wait_for, timeout)
        return self

    def log(self):
        with open(self.logfile, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def wait_log(self, pattern, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                raise AssertionError('uWSGI exited (rc=%s) before %r:\n%s'
                                     % (self.proc.returncode, pattern, self.log()))
            time.sleep(0.05)
        raise AssertionError('timed out waiting for %r in log:\n%s' % (pattern, self.log()))

    def wait_exit(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('uWSGI still running after %ss:\n%s' % (timeout, self.log()))

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log_fh.close()

    def get(self, path, port=None, headers=None, method='GET', timeout=10):
        """HTTP request; returns (status, headers dict lowercased, body bytes)."""
        req = urllib.request.Request('http://127.0.0.1:%d%s' % (port or self.http_port, path),
                                     headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory(prefix='mp-test-') as d:
        yield d


@pytest.fixture
def start_uwsgi(tmpdir_path):
    """start_uwsgi(variant_name, extra_args, http=True, plugin=None, wait_for=...) -> Uwsgi."""
    started = []

    def _start(variant, args=(), http=True, plugin=None, wait_for=r'spawned uWSGI worker',
               need=False):
        v = VARIANTS[variant].require()
        sub = tempfile.mkdtemp(dir=tmpdir_path)
        full = ['--need-plugin' if need else '--plugin', plugin or v.plugin]
        port = None
        if http:
            port = free_port()
            full += ['--http-socket', '127.0.0.1:%d' % port]
        full += ['--wsgi-file', APP, '--die-on-term'] + list(args)
        u = Uwsgi(v, full, sub)
        u.http_port = port
        started.append(u)
        return u.start(wait_for=wait_for)

    yield _start
    for u in started:
        u.stop()
