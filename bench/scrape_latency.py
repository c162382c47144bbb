#!/usr/bin/env python3
"""Scrape latency of --prometheus-server next to uWSGI's own stats server, same instance, same run.

Usage: bench/scrape_latency.py [--uwsgi BIN] [--plugin SO] [--workers 16] [--threads 32] [-n 500]
       [--async N]  (N async cores per worker with ugreen instead of threads)
Defaults come from $MP_ENV/env (t/setup.sh) and build/pip-routing (t/test.sh or t/demo.sh).
Prints p50/p90/p99 per endpoint and the ratios. Machines are noisy: compare within one run.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fetch(port, path, accept=None):
    """One HTTP/1.0-style request on a fresh connection, read to EOF; returns seconds, bytes."""
    t0 = time.perf_counter()
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        hdr = 'Accept: %s\r\n' % accept if accept else ''
        s.sendall(('GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n' % (path, hdr)).encode())
        n = 0
        while True:
            b = s.recv(262144)
            if not b:
                break
            n += len(b)
    return time.perf_counter() - t0, n


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--uwsgi', default=os.environ.get('UWSGI_PIP_ROUTING'))
    ap.add_argument('--plugin', default=os.path.join(ROOT, 'build', 'pip-routing',
                                                     'metrics_prometheus_plugin.so'))
    ap.add_argument('--workers', type=int, default=16)
    ap.add_argument('--threads', type=int, default=32)
    ap.add_argument('--async', dest='async_cores', type=int, default=0)
    ap.add_argument('-n', type=int, default=500)
    a = ap.parse_args()
    if not a.uwsgi:
        sys.exit('set --uwsgi or source $MP_ENV/env (t/setup.sh)')
    prom, stats, http = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix='mp-bench-')
    log = open(os.path.join(tmp, 'uwsgi.log'), 'wb')
    proc = subprocess.Popen(
        [a.uwsgi, '--need-plugin', a.plugin, '--http-socket', '127.0.0.1:%d' % http,
         '--wsgi-file', os.path.join(ROOT, 't', 'apps', 'app.py'),
         '--workers', str(a.workers),
         *(['--async', str(a.async_cores), '--ugreen'] if a.async_cores
           else ['--threads', str(a.threads)]),
         '--prometheus-server', '127.0.0.1:%d' % prom,
         '--stats', '127.0.0.1:%d' % stats, '--stats-http'],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    try:
        deadline = time.time() + 180  # 64 x 64 starts slowly (per-core metric registration)
        while time.time() < deadline:
            text = open(os.path.join(tmp, 'uwsgi.log'), errors='replace').read()
            if len(re.findall(r'spawned uWSGI worker', text)) >= a.workers:
                break
            if proc.poll() is not None:
                sys.exit('uWSGI exited:\n' + text)
            time.sleep(0.1)
        time.sleep(2)  # let the metrics collector run once
        cases = [
            ('prometheus-server text', prom, '/metrics', None),
            ('prometheus-server openmetrics', prom, '/metrics',
             'application/openmetrics-text;version=1.0.0'),
            ('stats server JSON', stats, '/', None),
        ]
        for _, port, path, accept in cases:  # warm-up
            for _ in range(20):
                fetch(port, path, accept)
        results = {name: [] for name, *_ in cases}
        sizes = {}
        for _ in range(a.n):  # interleaved, so both see the same machine noise
            for name, port, path, accept in cases:
                dt, n = fetch(port, path, accept)
                results[name].append(dt)
                sizes[name] = n
        print('uWSGI %s, %d workers x %s, %d scrapes each (interleaved)'
              % (subprocess.check_output([a.uwsgi, '--version'], text=True).strip(),
                 a.workers, '%d async cores (ugreen)' % a.async_cores if a.async_cores
                 else '%d threads' % a.threads, a.n))
        print('%-32s %10s %9s %9s %9s' % ('endpoint', 'bytes', 'p50 ms', 'p90 ms', 'p99 ms'))
        for name in results:
            xs = results[name]
            print('%-32s %10d %9.3f %9.3f %9.3f' % (name, sizes[name], pct(xs, 50) * 1e3,
                                                    pct(xs, 90) * 1e3, pct(xs, 99) * 1e3))
        base = statistics.median(results['stats server JSON'])
        for name in results:
            if name != 'stats server JSON':
                print('median ratio %s / stats JSON: %.2f'
                      % (name, statistics.median(results[name]) / base))
    finally:
        stop(proc, signal.SIGINT, 15)


def stop(proc, sig, timeout):
    """Sends `sig` to the uWSGI master, then SIGKILL to its process group after `timeout` s."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


if __name__ == '__main__':
    main()
