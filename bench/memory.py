#!/usr/bin/env python3
"""Memory the plugin adds to uWSGI: master and worker RSS, PSS and private bytes from
/proc/PID/smaps_rollup, same app, same workers x threads, variants alternated:

  plain    uWSGI alone;
  metrics  uWSGI with --enable-metrics, which the plugin turns on: uWSGI's own metrics
           subsystem (its per-core metrics at 16 x 32 are several MB of the master's heap);
  plugin   uWSGI with the plugin (histograms on, the dedicated server on, scraped --scrapes
           times before measuring).

"added" rows: plugin - plain (everything the plugin causes) and plugin - metrics (the plugin's
own code and data).

Usage: bench/memory.py [--uwsgi BIN] [--plugin SO] [--workers 16] [--threads 32] [--rounds 2]
       [--scrapes 20] [--extra ARG ...]
Defaults come from $MP_ENV/env (t/setup.sh) and build/pip-routing. Prints one table of medians
over the rounds (worker figures: the median worker of each round) and the differences.
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

from scrape_latency import ROOT, free_port, stop

FIELDS = ('Rss', 'Pss', 'Private_Clean', 'Private_Dirty')


def rollup(pid):
    """kB figures of smaps_rollup; Private = Private_Clean + Private_Dirty."""
    out = {}
    with open('/proc/%d/smaps_rollup' % pid) as fh:
        for line in fh:
            m = re.match(r'(\w+):\s+(\d+) kB', line)
            if m and m.group(1) in FIELDS:
                out[m.group(1)] = int(m.group(2))
    out['Private'] = out.pop('Private_Clean') + out.pop('Private_Dirty')
    return out


def children(pid):
    kids = []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                with open('/proc/%s/stat' % p) as fh:
                    ppid = int(fh.read().rsplit(')', 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                kids.append(int(p))
    return kids


def scrape(port):
    with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
        while s.recv(262144):
            pass


def measure(a, variant):
    http = free_port()
    args = [a.uwsgi, '--http-socket', '127.0.0.1:%d' % http,
            '--wsgi-file', os.path.join(ROOT, 't', 'apps', 'app.py'),
            '--workers', str(a.workers), '--threads', str(a.threads), '--die-on-term',
            '--master']  # the plugin turns the master on: compare like with like
    prom = None
    if variant == 'metrics':
        args.append('--enable-metrics')
    if variant == 'plugin':
        prom = free_port()
        args += ['--need-plugin', a.plugin, '--prometheus-server', '127.0.0.1:%d' % prom]
        args += a.extra
    tmp = tempfile.mkdtemp(prefix='mp-mem-')
    logpath = os.path.join(tmp, 'uwsgi.log')
    with open(logpath, 'wb') as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            text = open(logpath, errors='replace').read()
            if len(re.findall(r'spawned uWSGI worker', text)) >= a.workers:
                break
            if proc.poll() is not None:
                sys.exit('uWSGI exited:\n' + text)
            time.sleep(0.1)
        time.sleep(2)
        if prom:
            for _ in range(a.scrapes):
                scrape(prom)
        # A few requests per worker, so each has run the app (and the after-request hook).
        for _ in range(a.workers * 2):
            with socket.create_connection(('127.0.0.1', http), timeout=30) as s:
                s.sendall(b'GET / HTTP/1.0\r\n\r\n')
                while s.recv(65536):
                    pass
        time.sleep(1)
        master = rollup(proc.pid)
        workers = [rollup(w) for w in children(proc.pid)]
        return master, workers
    finally:
        stop(proc, signal.SIGTERM, 30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--uwsgi', default=os.environ.get('UWSGI_PIP_ROUTING'))
    ap.add_argument('--plugin',
                    default=os.path.join(ROOT, 'build/pip-routing/metrics_prometheus_plugin.so'))
    for opt, default in (('--workers', 16), ('--threads', 32), ('--rounds', 2)):
        ap.add_argument(opt, type=int, default=default)
    ap.add_argument('--scrapes', type=int, default=20)
    ap.add_argument('--extra', nargs='*', default=[],
                    help='more uWSGI options for the plugin variant')
    a = ap.parse_args()
    if not a.uwsgi:
        sys.exit('set --uwsgi or source $MP_ENV/env (t/setup.sh)')
    rows = {'plain': [], 'metrics': [], 'plugin': []}
    for _ in range(a.rounds):
        for name in rows:
            rows[name].append(measure(a, name))
    keys = ('Rss', 'Pss', 'Private')

    def med(name, who, k):
        if who == 'master':
            return statistics.median(m[k] for m, _ in rows[name])
        if who == 'workers (sum)':
            return statistics.median(sum(w[k] for w in ws) for _, ws in rows[name])
        return statistics.median(statistics.median(w[k] for w in ws) for _, ws in rows[name])

    print('uWSGI %s, %d workers x %d threads, %d rounds alternated; kB from smaps_rollup, '
          'medians' % (subprocess.check_output([a.uwsgi, '--version'], text=True).strip(),
                       a.workers, a.threads, a.rounds))
    print('%-16s %-8s %10s %10s %10s' % ('process', 'variant', *keys))
    print('(-plain, -metrics: plugin minus that variant)')
    for who in ('master', 'worker', 'workers (sum)'):
        for name in rows:
            print('%-16s %-8s %10d %10d %10d' % (who, name, *(med(name, who, k) for k in keys)))
        for base in ('plain', 'metrics'):
            print('%-16s %-8s %10d %10d %10d' % (who, '-' + base, *(med('plugin', who, k)
                                                                   - med(base, who, k)
                                                                   for k in keys)))


if __name__ == '__main__':
    main()
