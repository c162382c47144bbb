#!/usr/bin/env python3
"""All of metrics_prometheus' performance figures in one run, printed as one table.

  python3 bench/run.py                    # everything (builds first; about 10-15 minutes)
  python3 bench/run.py --quick            # fewer scrapes/rounds, shorter phases (a few minutes)
  python3 bench/run.py --only scrape,wrk  # a subset: build,scrape,wrk,master,alloc,memory,
                                          # criterion,scaling,app (build is implied when needed)
  python3 bench/run.py --markdown out.md  # also write the table (and machine line) to a file

Parts (a script, not a test; real uWSGI 2.0 from pip, $UWSGI_PIP_ROUTING of t/setup.sh):
  scrape    latency of a scrape on a fresh connection, p50/p99 over N rounds in which the four
            endpoints are fetched in turn (order rotated each round, so machine drift hits all
            alike): --prometheus-server, the prometheus-metrics route action, uWSGI's stats
            server JSON (--stats-http: what every sidecar fetches first) and PyPI's
            uwsgi-prometheus sidecar (prometheus_client start_http_server, own process, in
            $MP_ENV/bench-venv); instances 2 x 2 threads, 16 x 32 threads, 64 x 64 async ugreen.
            Beside them the floor: nginx (t/setup.sh's nginx-light, one process, sendfile)
            sending the same exposition bytes from a file, fetched by the same client
  wrk       requests/s of plain uWSGI, uWSGI + plugin (histograms on, --prometheus-server
            scraped at 1 Hz) and plain uWSGI + a prometheus_client Histogram in the app in
            multiprocess mode (PROMETHEUS_MULTIPROC_DIR, /metrics scraped through the app at
            1 Hz); rounds alternate the three (order rotated), medians and paired ratios
  master    the stats server's latency (a probe every 10 ms) while a client scrapes the
            dedicated server in a tight loop for a few seconds, per format (text, OpenMetrics,
            gzip, protobuf), phases alternated with idle phases; 16 x 32 threads
  alloc     heap allocations per scrape, from the X-Scrape-Allocations header of the
            fault-injection build's dedicated server (first scrape, then steady state)
  memory    RSS and PSS (/proc/PID/smaps_rollup) of the master and the workers, 16 x 32 threads,
            without and with the plugin (the dedicated server alone, and with a route using
            the action too), after requests and scrapes
  criterion the formatter's criterion medians (cargo bench -p metrics_prometheus_engine
            --bench format, group render*), ns per series
  baseline  bench/engine_baseline.py: the 16 x 32 text render of this tree's engine against the
            baseline commit's (bench/engine_baseline.json), same binary, paired rounds; the
            ratio beside the reference one, REGRESSION when it is over it by more than 5 %
  scaling   bench/scaling.py: scrape time and body size from ~50 to ~100 000 series
            (docs/bench/scaling.png)
  app       bench/app_metrics.py: application metrics (--prometheus-app-metrics, python/):
            ns per prometheus_client call with MutexValue, MultiProcessValue and UwsgiValue in
            one uWSGI worker; scrape time of 16 / 64 workers x 1,012 app samples against
            MultiProcessCollector, a 404 probe meanwhile; PSS with the table on and off
"""
import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (HERE, OM_ACCEPT, PB_ACCEPT, ROOT, children, cleanup,  # noqa: E402
                      count_series, fetch, free_ports, load_env, loadavg, log, median, pct,
                      report_head,
                      Scraper, session_cpu_s, start, stop, uwsgi_instance, wait_log, wait_port,
                      build_plugin)

PARTS = ('scrape', 'wrk', 'master', 'alloc', 'memory', 'criterion', 'baseline', 'scaling', 'app')
ROWS = []  # (part, case, result, notes): the one table
APP_TABLES = []  # bench/app_metrics.py's own tables (markdown), when the app part runs


def row(part, case, result, notes=''):
    ROWS.append((part, case, result, notes))
    log('%-9s | %s | %s | %s' % (part, case, result, notes))


def ms(x):
    return '%.2f ms' % (x * 1e3) if x < 0.1 else '%.0f ms' % (x * 1e3)


def kb(n):
    return '%.0f KB' % (n / 1000) if n < 10_000_000 else '%.1f MB' % (n / 1e6)


# ---------------------------------------------------------------------------------------------
# setup

def bench_venv():
    """$MP_ENV/bench-venv with uwsgi-prometheus and prometheus_client (never installed globally)."""
    venv = os.path.join(os.environ['MP_ENV'], 'bench-venv')
    py = os.path.join(venv, 'bin', 'python')
    ok = os.path.exists(py) and subprocess.run(
        [py, '-c', 'import uwsgi_prometheus, prometheus_client'],
        capture_output=True).returncode == 0
    if not ok:
        log('creating %s (pip install uwsgi-prometheus prometheus_client)' % venv)
        subprocess.run([sys.executable, '-m', 'venv', venv], check=True)
        subprocess.run([py, '-m', 'pip', 'install', '-q', 'uwsgi-prometheus', 'prometheus_client'],
                       check=True)
    site = subprocess.run([py, '-c', 'import prometheus_client, os; '
                           'print(os.path.dirname(os.path.dirname(prometheus_client.__file__)))'],
                          check=True, capture_output=True, text=True).stdout.strip()
    ver = subprocess.run([py, '-m', 'pip', 'list', '--format=freeze'], capture_output=True,
                         text=True).stdout
    vers = [line for line in ver.split()
            if line.lower().startswith(('uwsgi-prometheus', 'prometheus'))]
    return py, site, vers


def need_wrk():
    if shutil.which('wrk'):
        return
    if os.geteuid() == 0 and shutil.which('apt-get'):
        log('installing wrk (apt-get install -y wrk)')
        subprocess.run(['apt-get', 'install', '-y', 'wrk'], check=True, stdout=subprocess.DEVNULL)
        return
    sys.exit('wrk is missing: sudo apt-get install wrk (Debian/Ubuntu package "wrk"), '
             'or skip this part: --only scrape,master,...')


# ---------------------------------------------------------------------------------------------
# scrape latency

def sidecar(py, tmp, stats_port):
    (port,) = free_ports(1)
    p = start([py, os.path.join(HERE, 'bench_sidecar.py'), str(port),
               'http://127.0.0.1:%d' % stats_port], os.path.join(tmp, 'sidecar-%d.log' % port))
    wait_log(p, r'sidecar serving', 30)
    wait_port(port)
    return p, port


FLOOR = 'floor: nginx, the same bytes from a file'
NGINX_FLOOR = '''daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
    }}
}}
'''


def floor_server(tmp, body):
    """nginx serving `body` at /metrics from a file: the cost of the HTTP exchange and of
    moving these bytes through loopback to this client, with no rendering at all. Returns
    (process, port), or (None, None) without nginx."""
    nginx = shutil.which('nginx') or '/usr/sbin/nginx'
    if not os.access(nginx, os.X_OK):
        log('scrape: no nginx (t/setup.sh installs nginx-light): no floor row')
        return None, None
    (port,) = free_ports(1)
    d = tempfile.mkdtemp(prefix='floor-', dir=tmp)
    os.makedirs(os.path.join(d, 'www'))
    with open(os.path.join(d, 'www', 'metrics'), 'wb') as f:
        f.write(body)
    conf = os.path.join(d, 'nginx.conf')
    with open(conf, 'w') as f:
        f.write(NGINX_FLOOR.format(dir=d, port=port))
    p = start([nginx, '-p', d, '-c', conf], os.path.join(d, 'nginx.log'))
    wait_port(port)
    return p, port


def part_scrape(a, tmp, uwsgi, so, py, after16=None):
    configs = [('2 x 2 threads', 2, 2, 'threads'), ('16 x 32 threads', 16, 32, 'threads'),
               ('64 x 64 async ugreen', 64, 64, 'ugreen')]
    n = a.scrapes
    for label, w, c, mode in configs:
        prom, stats = free_ports(2)
        log('scrape: starting %s (64 x 64 async registers its metrics slowly: up to a minute)'
            % label if w == 64 else 'scrape: starting %s' % label)
        u = uwsgi_instance(uwsgi, tmp, 'scrape-%dx%d' % (w, c), w, c, mode, plugin=so,
                           prom_port=prom, route=True, stats_port=stats)
        sc, scport = sidecar(py, tmp, stats)
        time.sleep(3)  # the last workers settle; the metrics collector runs once
        ends = [('`--prometheus-server`', prom, '/metrics'),
                ('route action (worker)', u.http_port, '/metrics'),
                ('uWSGI stats server JSON', stats, '/'),
                ('uwsgi-prometheus sidecar', scport, '/metrics')]
        for _, port, path in ends:
            for _ in range(10):
                fetch(port, path)
        # After the warm-up: route scrapes are requests, whose histogram series are in the body.
        fl, flport = floor_server(tmp, fetch(prom)[3])
        if fl:
            ends.append((FLOOR, flport, '/metrics'))
            for _ in range(10):
                fetch(flport)
        lat = {e[0]: [] for e in ends}
        size = {}
        for i in range(n):
            k = i % len(ends)
            for name, port, path in ends[k:] + ends[:k]:
                dt, status, _, body = fetch(port, path)
                if status != 200:
                    raise RuntimeError('%s answered %r' % (name, status))
                lat[name].append(dt)
                size[name] = len(body)
        series = count_series(fetch(prom)[3])
        base = median(lat['uWSGI stats server JSON'])
        floor = median(lat[FLOOR]) if fl else None
        for name, _, _ in ends:
            xs = lat[name]
            note = '%s' % kb(size[name])
            if name.startswith('`') or name.startswith('route'):
                note += ', %d series' % series
            if 'sidecar' in name:
                note += ' (its 3 uWSGI families + process metrics)'
            if name == FLOOR:
                note += ', no rendering'
            elif not name.startswith('uWSGI stats'):
                note += ', %.2fx stats JSON' % (median(xs) / base)
            if floor and name.startswith('`'):
                note += ', %.2fx floor (+%s)' % (median(xs) / floor, ms(median(xs) - floor))
            row('scrape', '%s, %s' % (label, name), 'p50 %s, p99 %s' % (ms(pct(xs, 50)),
                                                                      ms(pct(xs, 99))), note)
        stop(sc)
        if fl:
            stop(fl)
        if after16 and w == 16:
            after16((u, prom, stats))  # the master part, on this instance (stops it)
        stop(u)


# ---------------------------------------------------------------------------------------------
# wrk

def wrk(port, threads, conns, duration):
    r = subprocess.run(['wrk', '-t%d' % threads, '-c%d' % conns, '-d%ds' % duration,
                        'http://127.0.0.1:%d/' % port], capture_output=True, text=True,
                       timeout=duration + 60)
    m = re.search(r'Requests/sec:\s+([\d.]+)', r.stdout)
    if r.returncode != 0 or not m or 'Non-2xx' in r.stdout:
        raise RuntimeError('wrk failed (rc %d):\n%s%s' % (r.returncode, r.stdout, r.stderr))
    return float(m.group(1)), int(re.search(r'(\d+) requests in', r.stdout).group(1))


def part_wrk(a, tmp, uwsgi, so, site):
    need_wrk()
    app = os.path.join(HERE, 'request_overhead_app.py')
    papp = os.path.join(HERE, 'bench_app_promclient.py')
    mpdir = os.path.join(tmp, 'prometheus_multiproc')
    os.makedirs(mpdir)
    prom, = free_ports(1)
    workers = 2
    variants = [('plain uWSGI', dict(app=app)),
                ('plugin, histograms on, 1 Hz scrapes', dict(app=app, plugin=so, prom_port=prom)),
                ('prometheus_client Histogram in the app (multiprocess)',
                 dict(app=papp, extra=['--pythonpath', site],
                      env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=mpdir)))]
    procs = {}
    for i, (name, kw) in enumerate(variants):
        procs[name] = uwsgi_instance(uwsgi, tmp, 'wrk-%d' % i, workers, **kw)
    scraper = Scraper([(prom, '/metrics'), (procs[variants[2][0]].http_port, '/metrics')])
    scraper.start()
    for name, _ in variants:
        wrk(procs[name].http_port, 2, 16, 2)  # warm-up
    res = {name: [] for name, _ in variants}
    cpu = {name: [] for name, _ in variants}  # uWSGI CPU us (master + workers) per request
    for r in range(a.rounds):
        order = variants[r % 3:] + variants[:r % 3]
        for name, _ in order:
            c0 = session_cpu_s(procs[name].pid)
            rps, total = wrk(procs[name].http_port, 2, 16, a.duration)
            cpu[name].append((session_cpu_s(procs[name].pid) - c0) / total * 1e6)
            res[name].append(rps)
        log('wrk round %d/%d: %s'
            % (r + 1, a.rounds, ', '.join('%.0f' % res[n][-1] for n, _ in variants)))
    scraper.stop.set()
    scraper.join(5)
    _, _, _, body = fetch(procs[variants[2][0]].http_port, '/metrics')
    if b'http_request_duration_seconds_count' not in body:
        raise RuntimeError('the prometheus_client app exported no histogram:\n%r' % body[:500])
    for p in procs.values():
        stop(p)
    base = res['plain uWSGI']
    for name, _ in variants:
        xs = res[name]
        paired = [x / b for x, b in zip(xs, base, strict=True)]
        cs = cpu[name]
        result = 'uWSGI CPU per request %.1f µs; %.0f req/s' % (median(cs), median(xs))
        note = 'req/s min %.0f, max %.0f' % (min(xs), max(xs))
        if name != 'plain uWSGI':
            result = 'CPU/request **%.2fx** plain, req/s %.3fx plain; ' % (
                median(cs) / median(cpu['plain uWSGI']), median(xs) / median(base)) + result
            note += '; paired req/s ratio %.3f [%.3f-%.3f]' % (
                median(paired), min(paired), max(paired))
        row('wrk', name, result, note)
    row('wrk', 'background scrapes (1/s each of 2)',
        '%d ok, %d failed' % (scraper.ok, scraper.failed),
        'wrk -t2 -c16, %d rounds x %d s, %d workers, --http-socket, 3-byte answer'
        % (a.rounds, a.duration, workers))


# ---------------------------------------------------------------------------------------------
# master responsiveness

def _flood(port, headers, stop_at, q):
    n = 0
    while time.time() < stop_at:
        _, status, _, _ = fetch(port, '/metrics', headers)
        n += status == 200
    q.put(n)


def part_master(a, tmp, uwsgi, so, kept):
    if kept:
        u, prom, stats = kept
    else:
        prom, stats = free_ports(2)
        u = uwsgi_instance(uwsgi, tmp, 'master-16x32', 16, 32, 'threads', plugin=so,
                           prom_port=prom, stats_port=stats)
        time.sleep(3)
    phases = [('text', ()), ('OpenMetrics', (('Accept', OM_ACCEPT),)),
              ('gzip', (('Accept-Encoding', 'gzip'),)), ('protobuf', (('Accept', PB_ACCEPT),))]
    ctx = multiprocessing.get_context('fork')
    lat = {'idle': []}
    rate = {}
    for _ in range(a.master_rounds):
        for name, headers in phases:
            for phase in ('idle', name):
                q = ctx.Queue()
                stop_at = time.time() + a.phase
                fl = None
                if phase != 'idle':
                    fl = ctx.Process(target=_flood, args=(prom, headers, stop_at, q))
                    fl.start()
                time.sleep(0.2)
                xs = lat.setdefault(phase, [])
                while time.time() < stop_at - 0.2:
                    xs.append(fetch(stats, '/')[0])
                    time.sleep(0.01)
                if fl:
                    rate.setdefault(phase, []).append(q.get(timeout=60) / a.phase)
                    fl.join(30)
    stop(u)
    base = median(lat['idle'])
    row('master', 'stats server JSON, no scrapes (16 x 32 threads)', 'p50 %s, p99 %s' % (
        ms(base), ms(pct(lat['idle'], 99))), '%d probes, every 10 ms' % len(lat['idle']))
    for name, _ in phases:
        xs = lat[name]
        row('master', 'stats server JSON while scraping `--prometheus-server` %s in a loop' % name,
            'p50 %s, p99 %s' % (ms(median(xs)), ms(pct(xs, 99))),
            '%.2fx idle p50; %.0f scrapes/s' % (median(xs) / base, median(rate[name])))


# ---------------------------------------------------------------------------------------------
# allocations

def part_alloc(a, tmp, uwsgi, so_faults):
    prom, stats = free_ports(2)
    u = uwsgi_instance(uwsgi, tmp, 'alloc-16x32', 16, 32, 'threads', plugin=so_faults,
                       prom_port=prom)
    time.sleep(2)
    fmts = [('text', ()), ('OpenMetrics', (('Accept', OM_ACCEPT),)),
            ('gzip', (('Accept-Encoding', 'gzip'),)), ('protobuf', (('Accept', PB_ACCEPT),))]
    seen = {name: [] for name, _ in fmts}
    for name, headers in fmts:  # 10 scrapes of one format, then the next: its steady state
        for _ in range(10):
            seen[name].append(allocations(prom, headers))
    mixed = []
    for _ in range(5):  # then the formats in turn (buffers change hands between formats)
        for _name, headers in fmts:
            mixed.append(allocations(prom, headers))
    stop(u)
    for name, xs in seen.items():
        row('alloc', 'scrape of `--prometheus-server`, %s (16 x 32 threads)' % name,
            '%d allocations per scrape (steady state)' % max(xs[5:]),
            '10 scrapes in a row: %s' % ' '.join(map(str, xs)))
    row('alloc', 'the four formats in turn, 5 rounds', 'max %d allocations per scrape' % max(mixed),
        ' '.join(map(str, mixed)))


def allocations(prom, headers):
    _, status, h, _ = fetch(prom, '/metrics', headers)
    if status != 200 or 'x-scrape-allocations' not in h:
        raise RuntimeError('no X-Scrape-Allocations header (fault-injection build?): %r %r'
                           % (status, h))
    return int(h['x-scrape-allocations'])


# ---------------------------------------------------------------------------------------------
# memory

def smaps(pid):
    out = {}
    with open('/proc/%d/smaps_rollup' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('Rss', 'Pss'):
                out[k] = int(v.split()[0])
    return out




def part_memory(a, tmp, uwsgi, so):
    prom, = free_ports(1)
    mem = {}
    # Two plugin rows: with a route using the action the workers share the precomputed
    # exposition with the master (built before fork); with the dedicated server alone it is
    # built in the master after fork.
    for label, kw in (('without the plugin', {}),
                      ('without the plugin, `--enable-metrics` (implied by the plugin)',
                       dict(extra=['--enable-metrics'])),
                      ('with the plugin (histograms, `--prometheus-server`)',
                       dict(plugin=so, prom_port=prom)),
                      ('with the plugin (histograms, `--prometheus-server`, route)',
                       dict(plugin=so, prom_port=prom, route=True))):
        u = uwsgi_instance(uwsgi, tmp, 'memory-%d' % len(mem), 16, 32, 'threads', **kw)
        time.sleep(2)
        for _ in range(64):
            fetch(u.http_port, '/')
        if 'plugin' in kw:
            for headers in ((), (('Accept', OM_ACCEPT),), (('Accept', PB_ACCEPT),),
                            (('Accept-Encoding', 'gzip'),)):
                for _ in range(3):
                    fetch(prom, '/metrics', headers)
                    if kw.get('route'):
                        fetch(u.http_port, '/metrics', headers)
        # Between scrapes: the dedicated server gives its buffers' pages back after 1 s
        # without a connection (at its next master cycle, within another second).
        time.sleep(3)
        m = smaps(u.pid)
        ws = [smaps(k) for k in children(u.pid)]
        mem[label] = (m, ws)
        stop(u)
    prev = None
    for i, (label, (m, ws)) in enumerate(mem.items()):
        wr = median([w['Rss'] for w in ws])
        wp = median([w['Pss'] for w in ws])
        wmax = max(w['Pss'] for w in ws)
        total = m['Pss'] + sum(w['Pss'] for w in ws)
        note = '%d workers' % len(ws)
        if prev:
            # The largest worker too: with a route, the one(s) that served its scrapes.
            note += '; vs %s: master RSS %+d KB, PSS %+d KB; per worker RSS %+d KB, ' \
                    'PSS %+d KB (largest worker %+d KB); total PSS %+d KB' % (
                        'the row above' if i == 1 else '`--enable-metrics`',
                        m['Rss'] - prev[0]['Rss'], m['Pss'] - prev[0]['Pss'], wr - prev[1],
                        wp - prev[2], wmax - prev[4], total - prev[3])
        if i <= 1:
            prev = (m, wr, wp, total, wmax)  # the plugin rows are compared with --enable-metrics
        row('memory', '16 x 32 threads, %s' % label,
            'master RSS %d KB, PSS %d KB; worker (median) RSS %d KB, PSS %d KB; total PSS %d KB'
            % (m['Rss'], m['Pss'], wr, wp, total), note)


# ---------------------------------------------------------------------------------------------
# criterion

def part_criterion(a):
    cmd = ['cargo', 'bench', '-p', 'metrics_prometheus_engine', '--bench', 'format', '--',
           '^render', '--noplot', '--warm-up-time', '1', '--measurement-time',
           '2' if a.quick else '4']
    log('criterion: ' + ' '.join(cmd))
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    target = os.environ.get('CARGO_TARGET_DIR') or os.path.join(ROOT, 'target')
    found = []
    for dirpath, _, files in os.walk(os.path.join(target, 'criterion')):
        if (dirpath.endswith(os.sep + 'new') and 'estimates.json' in files
                and 'benchmark.json' in files):
            est = os.path.join(dirpath, 'estimates.json')
            if os.path.getmtime(est) < t0:
                continue
            b = json.load(open(os.path.join(dirpath, 'benchmark.json')))
            e = json.load(open(est))
            found.append((b['full_id'], e['median']['point_estimate'],
                          (b.get('throughput') or {}).get('Elements')))
    for full_id, ns, elements in sorted(found):
        per = ' (%.1f ns per series)' % (ns / elements) if elements else ''
        row('criterion', full_id + (', %d series' % elements if elements else ''),
            '%.1f µs%s' % (ns / 1e3, per), 'median, one core')


def part_baseline(a, tmp):
    out = os.path.join(tmp, 'engine_baseline.json')
    cmd = [sys.executable, os.path.join(HERE, 'engine_baseline.py'), '--no-criterion', '--json',
           out, '--repeat', '1' if a.quick else '3']
    log('baseline: ' + ' '.join(cmd[1:]))
    # Exit 1 is a regression: reported in the row, not a failed run.
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    if not os.path.exists(out):
        raise RuntimeError('engine_baseline.py failed (%d)' % r.returncode)
    res = json.load(open(out))
    ref = json.load(open(os.path.join(HERE, 'engine_baseline.json')))
    for case, fig in res['cases'].items():
        p = fig['paired']
        same_base = ref.get('base') == res['base']
        refc = (ref.get('cases', {}).get(case) or {}).get('paired') if same_base else None
        row('baseline', 'render %s, against %s' % (case, res['base']),
            '%.2f µs vs %.2f µs: ratio %.3f' % (p['current_us'], p['baseline_us'], p['ratio']),
            'reference %s%s' % ('%.3f' % refc['ratio'] if refc else '-',
                                ', REGRESSION' if r.returncode == 1 else ''))


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument('--only', help='comma-separated parts: ' + ','.join(PARTS))
    ap.add_argument('--quick', action='store_true', help='a quick try (fewer scrapes and rounds)')
    ap.add_argument('--no-build', action='store_true',
                    help='use build/bench-pip-routing{,-faults}/ as they are')
    ap.add_argument('--markdown', help='also write the table to this file')
    ap.add_argument('--keep', action='store_true', help='keep the temp dir (uWSGI logs)')
    a = ap.parse_args()
    parts = PARTS if not a.only else tuple(p.strip() for p in a.only.split(',') if p.strip())
    bad = [p for p in parts if p not in PARTS + ('build',)]
    if bad:
        ap.error('unknown part(s) %s; choose from %s' % (','.join(bad), ','.join(PARTS)))
    a.scrapes = 50 if a.quick else 200
    a.rounds = 2 if a.quick else 5
    a.duration = 2 if a.quick else 5
    a.master_rounds = 1 if a.quick else 2
    a.phase = 2 if a.quick else 4

    load_env()
    tools_py = os.path.join(os.environ['MP_TOOLS'], 'bin', 'python')
    if 'scaling' in parts and os.path.realpath(sys.executable) != os.path.realpath(tools_py) \
            and os.path.exists(tools_py) and not os.environ.get('MP_BENCH_REEXEC'):
        os.environ['MP_BENCH_REEXEC'] = '1'  # matplotlib lives in the tools venv
        os.execv(tools_py, [tools_py] + sys.argv)

    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    tmp = tempfile.mkdtemp(prefix='mp-bench-run.')
    t0 = time.monotonic()
    uwsgi = os.environ['UWSGI_PIP_ROUTING']
    head = report_head(uwsgi)
    print(head, flush=True)
    try:
        so = so_faults = None
        needs = set(parts) - {'criterion', 'baseline'}
        if needs:
            if a.no_build:
                so = os.path.join(ROOT, 'build', 'bench-pip-routing',
                                  'metrics_prometheus_plugin.so')
                so_faults = os.path.join(ROOT, 'build', 'bench-pip-routing-faults',
                                         'metrics_prometheus_plugin.so')
            else:
                if 'alloc' in parts:
                    so_faults = build_plugin('bench-pip-routing-faults', uwsgi, ['fault-injection'])
                so = build_plugin('bench-pip-routing', uwsgi)
        py = site = None
        if 'scrape' in parts or 'wrk' in parts:
            py, site, vers = bench_venv()
            log('bench venv: %s' % ' '.join(vers))
        if 'scrape' in parts:
            after16 = None
            if 'master' in parts:
                def after16(kept):
                    part_master(a, tmp, uwsgi, so, kept)
            part_scrape(a, tmp, uwsgi, so, py, after16)
        elif 'master' in parts:
            part_master(a, tmp, uwsgi, so, None)
        if 'alloc' in parts:
            part_alloc(a, tmp, uwsgi, so_faults)
        if 'memory' in parts:
            part_memory(a, tmp, uwsgi, so)
        if 'wrk' in parts:
            part_wrk(a, tmp, uwsgi, so, site)
        if 'criterion' in parts:
            part_criterion(a)
        if 'baseline' in parts:
            part_baseline(a, tmp)
        if 'scaling' in parts:
            import scaling
            for r in scaling.run(uwsgi, so, tmp, quick=a.quick):
                row(*r)
        if 'app' in parts:
            import app_metrics
            tables, rows = app_metrics.run(uwsgi, so, tmp, quick=a.quick)
            for part, case, result, notes in rows:
                row('app', '%s: %s' % (part[4:], case), result, notes)
            APP_TABLES.extend(tables)  # printed after the one table
    finally:
        cleanup()
        if a.keep:
            log('kept ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = [head, 'load average at end %s; %s%s run in %.0f s' % (
        loadavg(), 'quick, ' if a.quick else '', ','.join(parts), time.monotonic() - t0), '',
             '| part | case | result | notes |', '|---|---|---|---|']
    ROWS.sort(key=lambda r: PARTS.index(r[0]))  # stable: the master part runs amid the scrapes
    lines += ['| %s | %s | %s | %s |' % r for r in ROWS]
    for t in APP_TABLES:
        lines += ['', t]
    print('\n'.join(lines[1:]))
    if a.markdown:
        with open(a.markdown, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
