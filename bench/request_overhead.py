#!/usr/bin/env python3
"""Cost of the request-latency histogram (the after-request hook), measured two ways in one run.

Run it through bench/request_overhead.sh (it builds the plugin and sets the environment), or:

  request_overhead.py --uwsgi BIN --plugin SO [--cg-requests 2000] [--rounds 5] [--duration 10]

1. callgrind: uWSGI (master, 1 worker, no threads, --http-socket, bench/request_overhead_app.py)
   under `valgrind --tool=callgrind --trace-children=yes`; N sequential requests, each with a W3C
   `traceparent` header and an `X-Request-Start: t=<now, ms>` header (nginx's form); SIGINT to
   the master (workers exit and dump their profile); the worker's callgrind.out is parsed: the
   inclusive Ir of every call to metrics_prometheus_after_request (the `cfn=`/`calls=` records,
   summed over call sites) divided by the number of calls. Variants: no plugin, plugin with
   --prometheus-no-histograms, histograms (default), histograms + --prometheus-exemplars,
   histograms + --prometheus-queue-time. The calls of uwsgi_get_var show which headers the hook
   looks up: none without exemplars and queue time. The worker's total Ir per request is
   printed too (whole request, for scale; its difference between variants includes some
   run-to-run jitter of uWSGI/Python).
   Ir -> ns: bench/request_overhead_calib.c runs hook-shaped code natively (timed) and under
   callgrind (Ir), with plain adds and with relaxed atomic adds; estimate =
   Ir x (ns/Ir of the plain variant) + 2 x (extra ns of one uncontended atomic add).
2. wrk: three uWSGI instances up at once (same args: master, 2 workers, --http-socket, the same
   app, --disable-logging), differing only in the plugin: A no plugin; B plugin, histograms on,
   --prometheus-server scraped once per second by a background thread; C plugin with
   --prometheus-no-histograms (also scraped). Rounds alternate A/B/C with the order rotated each
   round; median req/s per variant, min/max, ratio of medians and the median of the per-round
   (paired) ratios. At the end B's histogram _count is checked against what it served.

All processes are started in their own session (setsid) and killed by process group, also on
failure or interruption. 127.0.0.1 and kernel-chosen free ports only.
"""
import argparse
import glob
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Scraper, free_ports, kill_group, machine, session_cpu_s  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, 'request_overhead_app.py')
CALIB_SRC = os.path.join(HERE, 'request_overhead_calib.c')
HOOK = 'metrics_prometheus_after_request'
REQUEST_PATH = ('wsgi_req_setup', 'wsgi_req_accept', 'wsgi_req_recv', 'uwsgi_close_request')
# callees of the hook worth showing (exemplars): uWSGI's header lookup and the traceparent parser
BREAKDOWN = ('uwsgi_get_var', 'metrics_prometheus_engine::http::traceparent_trace_id',
             'metrics_prometheus_engine::queue::queue_time', 'uwsgi_logvar_get',
             'metrics_prometheus::routes::route_of')
T0 = time.monotonic()
STARTED = []  # Popen objects of session leaders we started


def log(msg):
    print('[request_overhead +%3.0fs] %s' % (time.monotonic() - T0, msg), file=sys.stderr,
          flush=True)


def start(cmd, logpath, env=None):
    """Starts cmd as the leader of a new session (and process group): kill_group() reaches it
    and everything it forks (uWSGI workers, valgrind'd children)."""
    f = open(logpath, 'wb')
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    f.close()
    STARTED.append(p)
    return p


def cleanup():
    for p in STARTED:
        kill_group(p)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def wait_log(path, pattern, p, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, 'rb') as f:
            if re.search(pattern.encode(), f.read()):
                return
        if p.poll() is not None:
            break
        time.sleep(0.2)
    with open(path, 'rb') as f:
        tail = f.read()[-3000:].decode(errors='replace')
    raise RuntimeError('uWSGI not ready (%r in %s, rc %r):\n%s' % (pattern, path, p.poll(), tail))


def http_get(port, path='/', headers=(), timeout=60):
    """One request on a fresh connection, read to EOF (uWSGI's http-socket closes)."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        h = ''.join('%s: %s\r\n' % kv for kv in headers)
        s.sendall(('GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n' % (path, h)).encode())
        data = b''
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    status = int(data.split(b' ', 2)[1]) if data.startswith(b'HTTP/') else None
    return status, data.partition(b'\r\n\r\n')[2]


# ---------------------------------------------------------------------------------------------
# callgrind.out parsing (written with --compress-strings=no --compress-pos=no)

def parse_callgrind(path, fn_name):
    """Returns (totals Ir, calls of fn_name, inclusive Ir of those calls), summing every
    `cfn=<fn_name>` / `calls=` / cost-line triple of the file (one per call site)."""
    totals = None
    calls = incl = 0
    pending = None  # 'calls' seen, waiting for its cost line
    cfn = None
    with open(path, errors='replace') as f:
        for line in f:
            if line.startswith('totals:'):
                totals = int(line.split()[1])
            elif line.startswith('cfn='):
                cfn = line[4:].strip()
            elif line.startswith('calls='):
                pending = int(line[6:].split()[0]) if cfn == fn_name else None
            elif pending is not None and line[:1].isdigit():
                calls += pending
                incl += int(line.split()[1])
                pending = None
            elif line.startswith('fn='):
                cfn = None
    if totals is None:
        with open(path, errors='replace') as f:
            for line in f:
                if line.startswith('summary:'):
                    totals = int(line.split()[1])
    return totals, calls, incl


# ---------------------------------------------------------------------------------------------
# 0. calibration: ns per instruction for hook-shaped code

def calibrate(tmp, native_n, cg_n):
    exe = os.path.join(tmp, 'calib')
    subprocess.run(['cc', '-O2', '-o', exe, CALIB_SRC], check=True)
    out = {}
    best = {'plain': 1e300, 'atomic': 1e300}
    for _ in range(3):  # best of 3 x 5 repeats, alternated: other load on the machine only slows
        for mode in best:
            r = subprocess.run([exe, mode, str(native_n)], check=True, capture_output=True,
                               text=True)
            best[mode] = min(best[mode], float(r.stdout.split()[2]))
    for mode in ('plain', 'atomic'):
        ns_iter = best[mode]
        cg = os.path.join(tmp, 'calib.%s.cg' % mode)
        subprocess.run(['valgrind', '--tool=callgrind', '--compress-strings=no',
                        '--compress-pos=no', '--callgrind-out-file=' + cg, exe, mode, str(cg_n)],
                       check=True, capture_output=True)
        _, calls, incl = parse_callgrind(cg, 'run_' + mode)
        ir_iter = incl / (calls * cg_n)  # run_<mode>(n) is called 5 times (5 repeats)
        out[mode] = (ns_iter, ir_iter, ns_iter / ir_iter)
    ns_per_ir = out['plain'][2]
    atomic_extra = max(0.0, (out['atomic'][0] - out['plain'][0]) / 2)
    return out, ns_per_ir, atomic_extra


# ---------------------------------------------------------------------------------------------
# 1. callgrind runs

def callgrind_variant(tmp, name, uwsgi, extra, n):
    d = os.path.join(tmp, 'cg-' + name)
    os.makedirs(d)
    (port,) = free_ports(1)
    cmd = ['valgrind', '--tool=callgrind', '--trace-children=yes', '--compress-strings=no',
           '--compress-pos=no', '--callgrind-out-file=' + os.path.join(d, 'cg.%p.out'),
           uwsgi, '--master', '--workers', '1', '--http-socket', '127.0.0.1:%d' % port,
           '--wsgi-file', APP, '--disable-logging', '--worker-reload-mercy', '120',
           '--reload-mercy', '120'] + extra
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    env.pop('VALGRIND_OPTS', None)
    logpath = os.path.join(d, 'uwsgi.log')
    p = start(cmd, logpath, env)
    t = time.monotonic()
    wait_log(logpath, r'spawned uWSGI worker 1', p, 180)
    if extra and HOOK not in open(logpath, errors='replace').read() and \
            '--prometheus-no-histograms' not in extra:
        raise RuntimeError('%s: the hook was not added to the after-request chain' % name)
    for i in range(n):
        tp = '00-%032x-%016x-01' % (0x4bf92f3577b34da6a3ce929d0e0e4736 + i, 0x00f067aa0ba902b7)
        status, body = http_get(port, '/', [('traceparent', tp),
                                            ('X-Request-Start', 't=%.3f' % time.time())])
        if status != 200 or body != b'ok\n':
            raise RuntimeError('%s: request %d answered %r %r' % (name, i, status, body[:100]))
    os.kill(p.pid, signal.SIGINT)  # uWSGI: kill the workers (SIGINT), they exit() and dump
    try:
        p.wait(timeout=180)
    except subprocess.TimeoutExpired:
        raise RuntimeError('%s: uWSGI did not stop' % name) from None
    kill_group(p)
    workers = [f for f in glob.glob(os.path.join(d, 'cg.*.out'))
               if not f.endswith('cg.%d.out' % p.pid)]
    if len(workers) != 1:
        raise RuntimeError('%s: expected one worker profile, found %r' % (name, workers))
    totals, calls, incl = parse_callgrind(workers[0], HOOK)
    # The request path of simple_loop_run (uWSGI 2.0): setup, accept, recv (which runs the app),
    # close (which runs the after-request chain). The worker's totals also hold what it inherited
    # from the master at fork (Python init, plugin load), so they are no per-request measure.
    path = 0
    for fn in REQUEST_PATH:
        path += parse_callgrind(workers[0], fn)[2]
    parts = {fn: parse_callgrind(workers[0], fn)[1:] for fn in BREAKDOWN}
    log('callgrind %-16s %5.1fs, worker Ir %d, request path Ir %d, hook calls %d, hook Ir %d'
        % (name, time.monotonic() - t, totals, path, calls, incl))
    return dict(name=name, totals=totals, path=path, calls=calls, incl=incl, n=n, parts=parts)


# Ten --prometheus-route rules of the usual shape; the benchmark's path (/) matches the last
# only, and the rules are one automaton (RegexSet), so every request pays the full scan.
TEN_RULES = []
for rx, name in [
        (r'^/api/users/[0-9]+$', '/api/users/:id'), (r'^/api/users/[0-9]+/posts$', '/posts'),
        (r'^/api/items/[a-z0-9-]+$', '/api/items/:slug'), (r'^/api/search', '/api/search'),
        (r'^/static/', '/static'), (r'^/admin/', '/admin'), (r'^/health$', '/health'),
        (r'^/api/v2/orders/[0-9]+/lines/[0-9]+$', '/orders/:id/lines/:n'),
        (r'^/(en|fr|de)/docs/', '/docs'), (r'^/$', '/')]:
    TEN_RULES += ['--prometheus-route', '%s %s' % (rx, name)]
# The route variants (the hook then also picks the request's route): their own goal, the cost
# of what they do; the others keep the hook's 100 ns.
ROUTE_VARIANTS = ('hist+10-rules', 'hist+logvar')
ROUTE_GOAL_NS = 250


# ---------------------------------------------------------------------------------------------
# 2. wrk

def wrk(port, threads, conns, duration):
    r = subprocess.run(['wrk', '-t%d' % threads, '-c%d' % conns, '-d%ds' % duration,
                        'http://127.0.0.1:%d/' % port], capture_output=True, text=True,
                       timeout=duration + 60)
    m = re.search(r'Requests/sec:\s+([\d.]+)', r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError('wrk failed (rc %d):\n%s%s' % (r.returncode, r.stdout, r.stderr))
    if 'Non-2xx' in r.stdout:
        raise RuntimeError('wrk saw non-2xx answers:\n' + r.stdout)
    total = int(re.search(r'(\d+) requests in', r.stdout).group(1))
    return float(m.group(1)), total


def histogram_count(port):
    status, body = http_get(port, '/metrics', timeout=10)
    n = 0
    for line in body.decode().splitlines():
        if line.startswith('uwsgi_request_duration_seconds_count{'):
            n += int(float(line.rsplit(' ', 1)[1]))
    return n


def throughput(tmp, uwsgi, plugin, rounds, duration, threads, conns, workers, socket_opt):
    ports = free_ports(5)
    common = ['--master', '--workers', str(workers), '--wsgi-file', APP, '--disable-logging']
    variants = [
        ('A plain', ports[0], None, []),
        ('B histograms', ports[1], ports[3], ['--need-plugin', plugin]),
        ('C no-histograms', ports[2], ports[4],
         ['--need-plugin', plugin, '--prometheus-no-histograms']),
    ]
    procs = {}
    for name, port, sport, extra in variants:
        cmd = [uwsgi, socket_opt, '127.0.0.1:%d' % port] + common + extra
        if sport:
            cmd += ['--prometheus-server', '127.0.0.1:%d' % sport]
        logpath = os.path.join(tmp, 'wrk-%s.log' % name.split()[0])
        p = start(cmd, logpath)
        wait_log(logpath, r'spawned uWSGI worker %d' % workers, p, 60)
        procs[name] = p
        text = open(logpath, errors='replace').read()
        hooked = HOOK in text
        if hooked != (name.startswith('B')):
            raise RuntimeError('%s: after-request hook %s'
                               % (name, 'present' if hooked else 'missing'))
    scraper = Scraper([(ports[3], '/metrics'), (ports[4], '/metrics')], b'uwsgi_up 1')
    scraper.start()
    for _name, port, _, _ in variants:  # warm-up: imports done, caches warm
        wrk(port, threads, conns, 2)
    base_count = histogram_count(ports[3])
    results = {name: [] for name, _, _, _ in variants}
    cpu = {name: [] for name, _, _, _ in variants}
    served_b = 0
    for r in range(rounds):
        order = variants[r % 3:] + variants[:r % 3]
        for name, port, _, _ in order:
            c0 = session_cpu_s(procs[name].pid)
            rps, total = wrk(port, threads, conns, duration)
            cpu[name].append((session_cpu_s(procs[name].pid) - c0) / total * 1e6)
            results[name].append(rps)
            if name.startswith('B'):
                served_b += total
        log('wrk round %d/%d: %s' % (r + 1, rounds, ', '.join(
            '%s %.0f' % (n.split()[0], results[n][-1]) for n, _, _, _ in variants)))
    scraper.stop.set()
    scraper.join(5)
    counted = histogram_count(ports[3]) - base_count
    for p in procs.values():
        kill_group(p, signal.SIGINT)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(p)
    return results, cpu, scraper, served_b, counted


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--uwsgi', required=True)
    ap.add_argument('--plugin', required=True)
    ap.add_argument('--cg-requests', type=int, default=2000)
    ap.add_argument('--rounds', type=int, default=10)
    ap.add_argument('--duration', type=int, default=5, help='seconds per wrk run')
    ap.add_argument('--wrk-threads', type=int, default=2)
    ap.add_argument('--wrk-connections', type=int, default=16)
    ap.add_argument('--workers', type=int, default=2, help='uWSGI workers for the wrk part')
    ap.add_argument('--socket', default='--http-socket',
                    help='uWSGI socket option for the wrk part (--http11-socket: keep-alive)')
    ap.add_argument('--skip-callgrind', action='store_true')
    ap.add_argument('--skip-wrk', action='store_true')
    ap.add_argument('--only', default='',
                    help='comma-separated callgrind variants to run (e.g. plain,histograms to '
                         'compare with a plugin built before the route label)')
    ap.add_argument('--keep', action='store_true', help='keep the temp dir (profiles, logs)')
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tmp = tempfile.mkdtemp(prefix='mp-request-overhead.')
    try:
        run(a, tmp)
    finally:
        cleanup()
        if a.keep:
            log('kept ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(a, tmp):
    ncpu, model = machine()
    load0 = ' '.join(open('/proc/loadavg').read().split()[:3])
    uver = subprocess.run([a.uwsgi, '--version'], capture_output=True, text=True).stdout.strip()
    vver = subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()
    wver = subprocess.run(['wrk', '-v'], capture_output=True, text=True).stdout.split('\n')[0]

    cal = cg = None
    if not a.skip_callgrind:
        log('calibration (hook-shaped C loop, native and under callgrind)')
        cal = calibrate(tmp, 10_000_000, 200_000)
        cg = []
        for name, extra in (
                ('plain', []),
                ('no-histograms', ['--need-plugin', a.plugin, '--prometheus-no-histograms']),
                ('histograms', ['--need-plugin', a.plugin]),
                ('hist+exemplars', ['--need-plugin', a.plugin, '--prometheus-exemplars']),
                ('hist+queue-time', ['--need-plugin', a.plugin, '--prometheus-queue-time']),
                ('hist+10-rules', ['--need-plugin', a.plugin] + TEN_RULES),
                ('hist+logvar', ['--need-plugin', a.plugin, '--prometheus-route-label',
                                 '--env', 'BENCH_ROUTE_LOGVAR=/bench/<id>'])):
            if not a.only or name in a.only.split(','):
                cg.append(callgrind_variant(tmp, name, a.uwsgi, extra, a.cg_requests))
    tp = None
    if not a.skip_wrk:
        log('wrk: %d rounds x 3 variants x %ds' % (a.rounds, a.duration))
        tp = throughput(tmp, a.uwsgi, a.plugin, a.rounds, a.duration, a.wrk_threads,
                        a.wrk_connections, a.workers, a.socket)

    # ------------------------------------------------------------------ report
    print()
    print('=== request overhead of the after-request hook (metrics_prometheus) ===')
    print('machine: nproc %d, %s; uWSGI %s; %s; %s' % (ncpu, model, uver, vver, wver))
    print('plugin:  %s' % a.plugin)
    print('load average at start: %s, at end: %s (other work on the machine skews wrk, not Ir)'
          % (load0, ' '.join(open('/proc/loadavg').read().split()[:3])))
    verdicts = []
    if cal:
        modes, ns_per_ir, atomic_extra = cal
        print()
        print('calibration (bench/request_overhead_calib.c, best of 15 x 10M iterations; '
              'Ir from callgrind):')
        for mode in ('plain', 'atomic'):
            ns_iter, ir_iter, nspi = modes[mode]
            print('  %-7s %6.1f Ir/iter  %6.2f ns/iter  %.3f ns/Ir  (%.2f Ir/ns)'
                  % (mode, ir_iter, ns_iter, nspi, 1 / nspi))
        print('  => estimate(ns) = Ir x %.3f ns/Ir + 2 x %.1f ns (one uncontended relaxed '
              'atomic add, extra over a plain add); hot caches' % (ns_per_ir, atomic_extra))
        plain_req = cg[0]['path'] / cg[0]['n']
        print()
        print('callgrind: 1 worker, no threads, --http-socket, %d sequential requests with a '
              'traceparent and an X-Request-Start header' % a.cg_requests)
        ghz = re.search(r'@\s*([\d.]+)\s*GHz', model)
        ns_1ipc = 1 / float(ghz.group(1)) if ghz else None
        print('  %-16s %11s %11s %9s %12s %11s %14s %9s'
              % ('variant', 'hook calls', 'hook Ir', 'Ir/call', 'est. ns/call', 'ns @1 IPC',
                 'request Ir/req', 'vs plain'))
        for v in cg:
            req_ir = v['path'] / v['n']
            if v['calls']:
                per = v['incl'] / v['calls']
                est = per * ns_per_ir + 2 * atomic_extra
                cells = ('%d' % v['calls'], '%d' % v['incl'], '%.1f' % per, '%.1f' % est,
                         '%.0f' % (per * ns_1ipc) if ns_1ipc else '?')
                goal = ROUTE_GOAL_NS if v['name'] in ROUTE_VARIANTS else 100
                ok = v['calls'] == v['n'] and est <= goal
                verdicts.append(('%s: %.0f ns/request (goal <= %d), %d/%d calls'
                                 % (v['name'], est, goal, v['calls'], v['n']), ok))
            else:
                cells = ('0', '-', '-', '-', '-')
            print('  %-16s %11s %11s %9s %12s %11s %14.0f %+9.0f'
                  % ((v['name'],) + cells + (req_ir, req_ir - plain_req)))
            if v['calls']:
                for fn, (c, ir) in v['parts'].items():
                    if c:
                        print('  %-16s   of which %s: %d calls, %.1f Ir/call, ~%.0f ns'
                              % ('', fn, c, ir / c, ir / c * ns_per_ir))
        print('  hook Ir: inclusive (the hook and all it calls). request Ir/req: inclusive Ir '
              'of the worker\'s request path (%s) / requests; the "vs plain" difference also holds '
              'uWSGI/Python run-to-run jitter' % ', '.join(REQUEST_PATH))
        print('  est. ns/call: calibrated (above), hot caches. ns @1 IPC: Ir x 1/nominal GHz, a '
              'pessimistic bound (this code runs at several instructions per cycle)')
    if tp:
        results, cpu, scraper, served_b, counted = tp
        print()
        print('wrk -t%d -c%d -d%ds, uWSGI %s, %d workers, %d rounds, order rotated each round:'
              % (a.wrk_threads, a.wrk_connections, a.duration, a.socket, a.workers, a.rounds))
        base = results['A plain']
        cbase = cpu['A plain']
        med_a = statistics.median(base)
        print('  %-16s %10s %10s %10s %14s %22s   %s' % ('variant', 'median/s', 'min/s', 'max/s',
                                                       'median/plain', 'paired ratio med [min-max]',
                                                       'rounds'))
        for name, xs in results.items():
            med = statistics.median(xs)
            paired = [x / b for x, b in zip(xs, base, strict=True)]
            print('  %-16s %10.0f %10.0f %10.0f %14.4f %8.4f [%.4f-%.4f]   %s'
                  % (name, med, min(xs), max(xs), med / med_a, statistics.median(paired),
                     min(paired), max(paired), ' '.join('%.0f' % x for x in xs)))
            if name.startswith('B'):
                cb = cpu['B histograms']
                mb, mbase = statistics.median(cb), statistics.median(cbase)
                verdicts.append(('CPU per request B/A: %.4f by medians (%.2f us more per '
                                 'request), for information' % (mb / mbase, mb - mbase), True))
                verdicts.append(('throughput B/A: %.4f by medians, %.4f paired (goal >= 0.99); '
                                 'spread of A %.1f%%, of B %.1f%% (max/min-1)'
                                 % (med / med_a, statistics.median(paired),
                                    100 * (max(base) / min(base) - 1),
                                    100 * (max(xs) / min(xs) - 1)),
                                 med / med_a >= 0.99))
        print('  uWSGI CPU time (master + workers, user + sys, from /proc) per request served, us:')
        for name, xs in cpu.items():
            paired = [x / b for x, b in zip(xs, cbase, strict=True)]
            print('  %-16s %10.1f %10.1f %10.1f %14.4f %8.4f [%.4f-%.4f]   %s'
                  % (name, statistics.median(xs), min(xs), max(xs),
                     statistics.median(xs) / statistics.median(cbase), statistics.median(paired),
                     min(paired), max(paired), ' '.join('%.1f' % x for x in xs)))
        print('  background scrapes of B and C (1/s each): %d ok, %d failed'
              % (scraper.ok, scraper.failed))
        print('  B histogram _count grew by %d; wrk counted %d completed requests on B (wrk stops '
              'mid-request: the histogram may count a few more)' % (counted, served_b))
        if counted < served_b:
            verdicts.append(('B histogram counted fewer requests than served', False))
    print()
    for text, ok in verdicts:
        print('  [%s] %s' % ('ok' if ok else 'MISS', text))
    log('done')


if __name__ == '__main__':
    main()
