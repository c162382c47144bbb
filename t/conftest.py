"""Harness for the integration tests: real uWSGI processes with the built plugin.

The uWSGI binaries come from t/setup.sh (paths in $MP_ENV/env, exported by t/test.sh); the
plugin for each binary is built by t/test.sh into build/<variant>/metrics_prometheus_plugin.so.
A test that needs a variant that is missing FAILS and says how to get it; nothing is skipped.

Running uWSGI under a wrapper (unset: everything as above):
  MP_UWSGI_WRAPPER='cmd args...'  every uWSGI the fixtures start runs as `cmd args... uwsgi ...`
        (split like a shell would). `{logdir}` in it is replaced by a fresh directory per uWSGI
        instance; when it is there, that directory's valgrind logs (vg.<pid>.log) are checked
        with t/memcheck.py once the instance has exited, and the test fails (an error at
        teardown) if anything is attributable to the plugin, if the positive control finds no
        plugin frame, or if the master's log is incomplete. A forked worker killed before its
        leak check (a test that SIGKILLs workers) only gives a warning.
  MP_VALGRIND=1   the same with the memcheck command of t/valgrind.sh (needs valgrind).
  MP_VALGRIND_LOGS=DIR   keep each instance's logs (and its uwsgi.log) in DIR/<test>.<random>/
        instead of the test's temp dir, e.g. for `python3 t/memcheck.py DIR/*` afterwards.
  MP_TIMEOUT_FACTOR=N    multiplies the harness's timeouts (start, log waits, HTTP requests,
        stop); default 1, or 10 under a wrapper. Timeouts written in the tests themselves are
        not scaled: only the tests without tight timing hold under valgrind.
  MP_BUILD_DIR=DIR       where the plugins are looked up (default build/): DIR/<variant>/.
"""
import importlib
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings

import pytest

import memcheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, 't', 'apps', 'app.py')
BUILD_DIR = os.environ.get('MP_BUILD_DIR') or os.path.join(ROOT, 'build')

# t/valgrind.sh's memcheck command. PYTHONMALLOC=malloc: CPython's pymalloc reads its arena
# headers in a way memcheck reports as invalid reads / uninitialised jumps (address_in_range)
# unless CPython was built --with-valgrind; plain malloc gives exact reports whatever the build.
# VALGRIND_OPTS from the caller would change the log format memcheck.py reads.
VALGRIND = [
    'env', '-u', 'VALGRIND_OPTS', 'PYTHONMALLOC=malloc',
    'valgrind', '--tool=memcheck',
    '--leak-check=full',
    '--show-leak-kinds=all',           # "still reachable" plugin blocks: the positive control
    '--errors-for-leak-kinds=definite,indirect',
    '--track-origins=yes',             # origin stacks for uninitialised values
    '--trace-children=yes',            # forked workers (and respawned ones) get their own log
    '--track-fds=no',
    '--num-callers=50',                # deep enough to reach the plugin's frames
    '--vgdb=no',                       # no vgdb FIFOs left in /tmp
    '--fullpath-after=%s/' % ROOT,     # plugin sources show as src/<file>.rs
    '--log-file={logdir}/vg.%p.log',
]


def _wrapper():
    wrapper = os.environ.get('MP_UWSGI_WRAPPER', '').strip()
    if os.environ.get('MP_VALGRIND', '') not in ('', '0'):
        if wrapper:
            raise ValueError('set MP_VALGRIND or MP_UWSGI_WRAPPER, not both')
        if not shutil.which('valgrind'):
            raise ValueError('MP_VALGRIND=1 needs valgrind: apt-get install -y valgrind')
        return list(VALGRIND)
    return shlex.split(wrapper)


WRAPPER = _wrapper()
TIMEOUT_FACTOR = float(os.environ.get('MP_TIMEOUT_FACTOR') or (10 if WRAPPER else 1))


def scaled(seconds):
    """A harness timeout, stretched under a wrapper (MP_TIMEOUT_FACTOR)."""
    return seconds * TIMEOUT_FACTOR


class Variant:
    def __init__(self, name, env_var, python_plugin):
        self.name = name
        self.env_var = env_var
        self.bin = os.environ.get(env_var, '')
        self.python_plugin = python_plugin  # Debian ships python as a plugin, pip embeds it
        self.plugin = os.path.join(BUILD_DIR, name, 'metrics_prometheus_plugin.so')

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


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _group_pids(pgid):
    """Pids of the processes in process group `pgid` (from /proc)."""
    pids = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # after "pid (comm)": state ppid pgrp
            pids.add(int(entry))
    return pids


def stop_session(proc, sig=signal.SIGTERM, timeout=10):
    """Stops `proc`, started with start_new_session=True: `sig` and up to `timeout` seconds to
    exit, then SIGKILL to its process group (only what it forked), and reaps it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(5)


# Bind-and-close ports, for what cannot bind `:0` and report the kernel's choice (uWSGI's
# --http-socket and --stats can: start_uwsgi and helpers.stats_port read it back). Another
# process may take such a port between its close and the bind that uses it.
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def free_ports(n):
    """`n` distinct free ports: the sockets stay bound until all are chosen (separate
    free_port() calls can return the same port twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _logdir(tmpdir):
    """A fresh directory for one instance's wrapper logs."""
    keep = os.environ.get('MP_VALGRIND_LOGS')
    if not keep:
        return tempfile.mkdtemp(prefix='memcheck-', dir=tmpdir)
    os.makedirs(keep, exist_ok=True)
    test = os.environ.get('PYTEST_CURRENT_TEST', 'uwsgi').rsplit(' ', 1)[0]
    path, _, item = test.partition('::')
    name = re.sub(r'[^A-Za-z0-9_.=-]+', '_', os.path.basename(path) + '-' + item)[:120]
    return tempfile.mkdtemp(prefix=name + '.', dir=keep)


class Uwsgi:
    """One uWSGI instance started by a test; always stopped (by pid) at teardown.

    `wrapper` (default: MP_UWSGI_WRAPPER / MP_VALGRIND) is a command prefix; with `{logdir}` in
    it, stop() checks the valgrind logs of the instance (see the module docstring)."""

    def __init__(self, variant, args, tmpdir, wrapper=None):
        self.variant = variant
        self.tmpdir = tmpdir
        self.logfile = os.path.join(tmpdir, 'uwsgi.log')
        self._http_port = None
        self.http_port_from_log = False  # set by start_uwsgi: --http-socket 127.0.0.1:0
        self.args = [variant.bin] + variant.base_args() + args
        self.proc = None
        self.wrapper = WRAPPER if wrapper is None else list(wrapper)
        self.logdir = None
        self.memchecked = False
        if any('{logdir}' in w for w in self.wrapper):
            self.logdir = _logdir(tmpdir)
        self.command = [w.replace('{logdir}', self.logdir or '') for w in self.wrapper] + self.args

    @property
    def http_port(self):
        """The port of the --http-socket; with `127.0.0.1:0` the kernel's choice, as uWSGI logs
        it (`uwsgi socket 0 bound to TCP address 127.0.0.1:PORT (port auto-assigned)`)."""
        if self._http_port is None and self.http_port_from_log:
            m = self.wait_log(r'uwsgi socket 0 bound to TCP address 127\.0\.0\.1:(\d+) '
                              r'\(port auto-assigned\)')
            self._http_port = int(m.group(1))
        return self._http_port

    @http_port.setter
    def http_port(self, port):
        self._http_port = port

    def start(self, wait_for=r'spawned uWSGI worker', timeout=20):
        self.log_fh = open(self.logfile, 'wb')
        # A new session makes the master the leader of a process group holding only what it
        # forked, so teardown can reach leftover workers without touching anything else.
        self.proc = subprocess.Popen(self.command, stdout=self.log_fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.tmpdir,
                                     start_new_session=True)
        if wait_for:
            self.wait_log(wait_for, timeout)
        return self

    def log(self):
        with open(self.logfile, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def wait_log(self, pattern, timeout=20):
        deadline = time.time() + scaled(timeout)
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
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError('uWSGI still running after %ss:\n%s'
                                 % (scaled(timeout), self.log())) from None

    def stop(self):
        """Stops the instance; under a `{logdir}` wrapper, then checks its valgrind logs (once)
        and raises AssertionError when they blame the plugin or are inconclusive."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # A worker still in its post-fork setup (seconds under valgrind, or on a loaded
            # machine) when the master's SIGINT reaches it does not die of it (uWSGI 2.0.31):
            # the master waits out its mercy (60 s) and SIGKILLs it, with no exit path run
            # (no leak check, UNIX socket files left). So SIGINT the group's other processes
            # (the workers) again every few seconds (every second without a wrapper) until the
            # master is gone.
            self.proc.send_signal(signal.SIGINT)
            deadline = time.time() + scaled(10)
            every = 3 if self.wrapper else 1
            nudge = time.time() + every
            while self.proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
                if time.time() > nudge:
                    nudge = time.time() + every
                    for pid in _group_pids(self.proc.pid) - {self.proc.pid}:
                        try:
                            os.kill(pid, signal.SIGINT)
                        except ProcessLookupError:
                            pass
        if self.wrapper:
            # Workers outliving the master may still be running their leak check: give them
            # the time to finish before the SIGKILL below (the group is only what uWSGI forked).
            deadline = time.time() + scaled(10)
            while time.time() < deadline and _group_alive(self.proc.pid):
                time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log_fh.close()
        self.check_memcheck()

    def kill(self):
        """Ends the instance at once: SIGKILL to its process group (only what it forked). For
        teardown: a graceful stop() costs a second per instance (uWSGI's master buries its
        workers on a one-second tick) and checks nothing; a test that needs the exit path (a
        socket file removed, an exit status, valgrind's leak check) calls stop() itself."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self.log_fh.close()

    def teardown(self):
        """The end of a fixture: kill() unless under a wrapper, where stop() and its memcheck
        verdict are the point (AssertionError when the logs blame the plugin)."""
        if self.wrapper:
            self.stop()
        else:
            self.kill()

    def check_memcheck(self):
        if self.logdir is None or self.memchecked:
            return
        self.memchecked = True
        shutil.copyfile(self.logfile, os.path.join(self.logdir, 'uwsgi.log'))
        plugins = [a for a in self.args if a.endswith('.so')]
        res = memcheck.analyse([self.logdir], plugins, allow_incomplete_children=True)
        problems = res.problems()
        if res.logs and not any(lg.pid == self.proc.pid for lg in res.logs):
            problems.append('no log of the master (pid %d) in %s' % (self.proc.pid, self.logdir))
        killed = [lg for lg in res.incomplete if not lg.root]
        if killed:
            warnings.warn('memcheck: %d forked process(es) of %s ended without a leak check '
                          '(killed): %s' % (len(killed), ' '.join(self.args[:1]),
                                            ', '.join(str(lg.pid) for lg in killed)),
                          stacklevel=2)
        if problems:
            out = io.StringIO()
            memcheck.print_summary(res, out, memcheck.served_requests([self.logdir]))
            raise AssertionError('memcheck of %s: %s\n%s\n(logs in %s)'
                                 % (' '.join(self.args), '; '.join(problems), out.getvalue(),
                                    self.logdir))

    def get(self, path, port=None, headers=None, method='GET', timeout=10):
        """HTTP request; returns (status, headers dict lowercased, body bytes)."""
        req = urllib.request.Request('http://127.0.0.1:%d%s' % (port or self.http_port, path),
                                     headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=scaled(timeout)) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory(prefix='mp-test-') as d:
        yield d


@pytest.fixture
def start_uwsgi(tmpdir_path):
    """start_uwsgi(variant_name, extra_args, http=True, plugin=None, wait_for=..., app=...) ->
    Uwsgi."""
    started = []

    def _start(variant, args=(), http=True, plugin=None, wait_for=r'spawned uWSGI worker',
               need=False, app=APP):
        v = VARIANTS[variant].require()
        sub = tempfile.mkdtemp(dir=tmpdir_path)
        full = ['--need-plugin' if need else '--plugin', plugin or v.plugin]
        if http:
            # Port 0: the kernel picks a free one at bind time, no race with other tests.
            full += ['--http-socket', '127.0.0.1:0']
        full += ['--wsgi-file', app, '--die-on-term'] + list(args)
        u = Uwsgi(v, full, sub)
        u.http_port_from_log = http
        started.append(u)
        return u.start(wait_for=wait_for)

    yield _start
    failures = []
    for u in started:  # stop every one, even when a memcheck verdict fails
        try:
            u.teardown()
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        pytest.fail('\n\n'.join(failures), pytrace=False)


@pytest.fixture(scope='module')
def pb():
    """Prometheus' protobuf messages (engine/tests/data/metrics.proto), compiled by grpcio-tools'
    protoc: a decoder independent of the plugin (helpers.decode)."""
    out = tempfile.mkdtemp(prefix='mp-proto-')
    subprocess.run([sys.executable, '-m', 'grpc_tools.protoc', '-I',
                    os.path.join(ROOT, 'engine', 'tests', 'data'), '--python_out', out,
                    'metrics.proto'], check=True)
    sys.path.insert(0, out)
    try:
        return importlib.import_module('metrics_pb2')
    finally:
        sys.path.remove(out)
