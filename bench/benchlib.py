"""Helpers shared by bench/run.py and bench/scaling.py: environment, build, uWSGI instances
started in their own session (killed by process group on exit), raw HTTP scrapes, percentiles.

Nothing here is part of the test run."""
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
T0 = time.monotonic()
STARTED = []  # Popen objects of session leaders we started; cleanup() kills their groups

OM_ACCEPT = 'application/openmetrics-text;version=1.0.0'
PB_ACCEPT = ('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
             'encoding=delimited')


def log(msg):
    print('[bench +%4.0fs] %s' % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


def load_env():
    """Exports what t/setup.sh recorded in $MP_ENV/env (running it first when missing)."""
    mp_env = os.environ.get('MP_ENV') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'metrics_prometheus')
    envfile = os.path.join(mp_env, 'env')
    if not os.path.exists(envfile):
        log('no %s: running t/setup.sh' % envfile)
        subprocess.run(['bash', 't/setup.sh'], cwd=ROOT, check=True)
    out = subprocess.run(['bash', '-c', '. "$0" && env -0', envfile], check=True,
                         capture_output=True).stdout
    for item in out.split(b'\0'):
        k, _, v = item.decode(errors='replace').partition('=')
        if k in ('MP_ENV', 'UWSGI_DEBIAN', 'UWSGI_PIP_ROUTING', 'UWSGI_PIP_NOROUTING', 'MP_TOOLS',
                 'PROMTOOL', 'PROMETHEUS'):
            os.environ[k] = v
    os.environ.setdefault('MP_ENV', mp_env)


def build_plugin(name, uwsgi, features=()):
    """cargo build --release --lib against `uwsgi` (like t/test.sh's build_for); returns the
    path of build/<name>/metrics_prometheus_plugin.so."""
    env = dict(os.environ, UWSGI_BIN=uwsgi)
    cmd = ['cargo', 'build', '--release', '--lib']
    if features:
        cmd += ['--features', ','.join(features)]
    log('building %s: %s' % (name, ' '.join(cmd)))
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    target = os.environ.get('CARGO_TARGET_DIR') or os.path.join(ROOT, 'target')
    dst = os.path.join(ROOT, 'build', name)
    os.makedirs(dst, exist_ok=True)
    so = os.path.join(dst, 'metrics_prometheus_plugin.so')
    shutil.copy(os.path.join(target, 'release', 'libmetrics_prometheus.so'), so)
    return so


def machine():
    model = '?'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    return os.cpu_count(), model


def loadavg():
    return ' '.join(open('/proc/loadavg').read().split()[:3])


def report_head(uwsgi):
    """The first line of a bench report: the machine, the uWSGI binary, the load at start."""
    ncpu, model = machine()
    uver = subprocess.run([uwsgi, '--version'], capture_output=True, text=True).stdout.strip()
    return 'machine: %d cores, %s; uWSGI %s (pip); load average at start %s' % (
        ncpu, model, uver, loadavg())


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start(cmd, logpath, env=None, cwd=None):
    """Starts cmd as the leader of a new session: kill_group() reaches all it forks."""
    f = open(logpath, 'wb')
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env, cwd=cwd)
    f.close()
    p.logpath = logpath
    STARTED.append(p)
    return p


def kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(p, timeout=20):
    """SIGINT to the uWSGI master (it kills its workers and exits), SIGKILL to the group after."""
    kill_group(p, signal.SIGINT)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    kill_group(p)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    if p in STARTED:
        STARTED.remove(p)


def cleanup():
    for p in list(STARTED):
        kill_group(p)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    STARTED.clear()


def wait_log(p, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(p.logpath, 'rb') as f:
            if re.search(pattern.encode(), f.read()):
                return
        if p.poll() is not None:
            break
        time.sleep(0.2)
    with open(p.logpath, 'rb') as f:
        tail = f.read()[-3000:].decode(errors='replace')
    raise RuntimeError('not ready (%r in %s, rc %r):\n%s' % (pattern, p.logpath, p.poll(), tail))


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError('nothing listens on 127.0.0.1:%d' % port)


def uwsgi_instance(uwsgi, tmp, name, workers, cores=1, mode='threads', plugin=None,
                   prom_port=None, route=False, stats_port=None, http_port=None, app=None,
                   extra=(), env=None, timeout=240):
    """Starts one uWSGI (master, `workers` processes, `cores` threads or async cores) and waits
    for its last worker."""
    cmd = [uwsgi, '--master', '--die-on-term', '--workers', str(workers),
           '--wsgi-file', app or os.path.join(ROOT, 't', 'apps', 'app.py'), '--disable-logging',
           '--worker-reload-mercy', '5', '--reload-mercy', '5']
    if cores > 1:
        cmd += ['--threads', str(cores)] if mode == 'threads' else ['--async', str(cores)]
        if mode == 'ugreen':
            cmd += ['--ugreen']
    if not http_port:
        (http_port,) = free_ports(1)
    cmd += ['--http-socket', '127.0.0.1:%d' % http_port]
    if plugin:
        cmd += ['--need-plugin', plugin]
    if prom_port:
        cmd += ['--prometheus-server', '127.0.0.1:%d' % prom_port]
    if route:
        cmd += ['--route', '^/metrics$ prometheus-metrics:']
    if stats_port:
        cmd += ['--stats', '127.0.0.1:%d' % stats_port, '--stats-http']
    cmd += list(extra)
    p = start(cmd, os.path.join(tmp, '%s.log' % name), env=env, cwd=tmp)
    wait_log(p, r'spawned uWSGI worker %d ' % workers, timeout)
    for port in (prom_port, stats_port, http_port):
        if port:
            wait_port(port)
    p.http_port = http_port
    return p


def fetch(port, path='/metrics', headers=(), timeout=30):
    """One GET on a fresh connection (Connection: close), read to EOF.
    Returns (seconds, status, {header: value}, body bytes as received)."""
    t0 = time.perf_counter()
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        h = ''.join('%s: %s\r\n' % kv for kv in headers)
        s.sendall(('GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n'
                   % (path, h)).encode())
        chunks = []
        while True:
            b = s.recv(262144)
            if not b:
                break
            chunks.append(b)
    dt = time.perf_counter() - t0
    data = b''.join(chunks)
    head, _, body = data.partition(b'\r\n\r\n')
    lines = head.decode(errors='replace').split('\r\n')
    status = int(lines[0].split(' ', 2)[1]) if lines[0].startswith('HTTP/') else None
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(':')
        hdrs[k.strip().lower()] = v.strip()
    return dt, status, hdrs, body


def session_cpu_s(sid):
    """utime + stime (s) of every live process of session `sid` (a uWSGI master and its
    workers). Workers are not respawned during the run, so deltas are exact to the tick."""
    ticks = 0
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf('SC_CLK_TCK')


class Scraper(threading.Thread):
    """Scrapes each (port, path) once a second, like a Prometheus at scrape_interval 1s."""

    def __init__(self, targets, must_contain=b''):
        super().__init__(daemon=True)
        self.targets, self.must_contain, self.ok, self.failed = targets, must_contain, 0, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            for port, path in self.targets:
                try:
                    _, status, _, body = fetch(port, path, timeout=5)
                    if status == 200 and self.must_contain in body:
                        self.ok += 1
                    else:
                        self.failed += 1
                except OSError:
                    self.failed += 1


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def median(xs):
    return statistics.median(xs)


def count_series(text_body):
    return sum(1 for line in text_body.split(b'\n') if line and not line.startswith(b'#'))


def children(pid):
    """Pids of the direct children of `pid` (from /proc)."""
    kids = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/stat' % d) as f:
                    if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError):
                pass
    return kids
