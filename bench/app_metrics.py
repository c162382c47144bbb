#!/usr/bin/env python3
"""Application metrics (`--prometheus-app-metrics` with the python/ package, issue 20): the
speed of prometheus_client's hot paths with each value class, the scrape time of the table
against prometheus_client's MultiProcessCollector, and the memory the table takes. A script,
not a test; one table per part, medians, ratios to the baselines measured in the same run.

  python3 bench/app_metrics.py                 # all three parts (builds first; ~1 minute)
  python3 bench/app_metrics.py --quick         # fewer rounds (~40 s)
  python3 bench/app_metrics.py --only calls    # a subset: calls,scrape,memory
  python3 bench/app_metrics.py --compare main  # part calls also times the UwsgiValue of
                                               # python/ at that git revision ("ref" column)
  python3 bench/run.py --only app              # the same, as a part of bench/run.py

Parts (real uWSGI 2.0 from pip, $UWSGI_PIP_ROUTING of t/setup.sh; prometheus_client from its
venv; the package from this checkout's python/, put first on the path with --pythonpath):
  calls   ns per call of Counter.inc, Gauge.set, Gauge.inc, Histogram.observe,
          labels(...).inc (lookup of an existing child + inc) and Summary.observe, measured
          inside one uWSGI worker (plugin loaded, --prometheus-app-metrics on) by
          bench/app_metrics_app.py: one metric set per value class (prometheus_client's
          ValueClass set to the class while the set is made, registry=None), timeit in rounds
          that rotate the classes' order: (a) MutexValue (single process), (b)
          MultiProcessValue (a temp PROMETHEUS_MULTIPROC_DIR), (c) metrics_prometheus'
          UwsgiValue, and a no-op value (what prometheus_client's own wrappers cost). Then the
          pieces of UwsgiValue.inc, each timed alone. Goal: every operation <= 1.2x (a) and
          below (b).
  scrape  16 and 64 workers, 500 counters + 32 histograms (default buckets) = 1,012 samples
          made in the master and written by every worker after fork (post_fork_hook; checked:
          every counter equals the worker count): the time of a scrape of
          --prometheus-server (fresh connection) with the table, the same instance shape
          with --prometheus-app-metrics off (the values in each worker, unexported), and
          prometheus_client's MultiProcessCollector over the same data (files of 16 / 64
          fake pids written in one process, generate_latest timed in a second one), rounds
          interleaved; then an idle phase and a tight scrape loop of a few seconds.
          Throughout, a separate process sends a 404 probe to the dedicated server every
          10 ms (p50/p99 while it is being scraped and otherwise). Goals: <= 2 ms at 16 workers,
          <= 8 ms at 64 (medians).
  memory  PSS (/proc/PID/smaps_rollup) of the master and of the workers of the same two
          instances after the scrapes (table on vs off, same app, same writes), and the
          table's own mapping in the master (/proc/PID/smaps): bytes per series, per worker.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (HERE, ROOT, build_plugin, children, cleanup, fetch,  # noqa: E402
                      free_ports, load_env, loadavg, log, median, pct, report_head, stop,
                      uwsgi_instance)

PARTS = ('calls', 'scrape', 'memory')
APP = os.path.join(HERE, 'app_metrics_app.py')
COUNTERS, HISTOGRAMS = 500, 32
SAMPLES = COUNTERS + HISTOGRAMS * 16  # 15 buckets (14 bounds and +Inf) and _sum each
GOAL_RATIO = 1.2
SCRAPE_GOALS = {16: 2e-3, 64: 8e-3}
MPC_REFERENCE = {16: '25-29 ms', 64: '80-107 ms'}  # issue 20, this machine


def fmt_ms(x):
    return '%.2f ms' % (x * 1e3) if x < 0.1 else '%.0f ms' % (x * 1e3)


def venv_python(uwsgi):
    return os.path.join(os.path.dirname(uwsgi), 'python')


def app_args(on=True):
    """uWSGI options of an instance running bench/app_metrics_app.py with the package."""
    extra = ['--pythonpath', os.path.join(ROOT, 'python'), '--shared-pyimport',
             'metrics_prometheus']
    if on:
        extra += ['--prometheus-app-metrics']
    return extra


def get_json(port, path, timeout=600):
    _, status, _, body = fetch(port, path, timeout=timeout)
    if status != 200:
        raise RuntimeError('%s answered %r: %r' % (path, status, body[:300]))
    return json.loads(body)


# ---------------------------------------------------------------------------------------------
# calls

CLASS_LABELS = (('single', '(a) single process (MutexValue)'),
                ('multiprocess', '(b) multiprocess (MultiProcessValue)'),
                ('uwsgi', '(c) metrics_prometheus (UwsgiValue)'),
                ('ref', 'UwsgiValue of --compare'),
                ('noop', 'no-op value (prometheus_client alone)'))


def part_calls(a, tmp, uwsgi, so, out):
    prom, = free_ports(1)
    env = dict(os.environ)
    env.pop('PROMETHEUS_MULTIPROC_DIR', None)
    if a.compare_file:
        env['APP_BENCH_COMPARE'] = a.compare_file
    u = uwsgi_instance(uwsgi, tmp, 'calls', 1, plugin=so, prom_port=prom, app=APP,
                       extra=app_args(), env=env)
    try:
        check = get_json(u.http_port, '/check')
        if not check['installed']:
            raise RuntimeError('metrics_prometheus is not installed in the worker: %r' % check)
        log('calls: %s, prometheus_client %s' % (check['metrics_prometheus'],
                                                 check['prometheus_client']))
        log('calls: %d rounds x %d calls per operation and class' % (a.call_rounds, a.number))
        res = get_json(u.http_port, '/bench?rounds=%d&number=%d' % (a.call_rounds, a.number))
        prof = get_json(u.http_port, '/profile?rounds=%d&number=%d' % (a.call_rounds, a.number))
    finally:
        stop(u)
    classes = [c for c, _ in CLASS_LABELS if c in res]
    ops = list(res['single'])
    head = ['operation'] + ['%s ns' % dict(CLASS_LABELS)[c] for c in classes] + [
        '(c) / (a), paired', '(c) / (b), paired', 'goal: <= %.1fx (a) and < (b)' % GOAL_RATIO]
    if 'ref' in classes:
        head.insert(-1, '(c) / ref, paired')
    rows = []
    met_all = True
    for op in ops:
        med = {c: median(res[c][op]) for c in classes}
        ra = median([c / s for c, s in zip(res['uwsgi'][op], res['single'][op], strict=True)])
        rb = median([c / m for c, m in zip(res['uwsgi'][op], res['multiprocess'][op], strict=True)])
        met = ra <= GOAL_RATIO and rb < 1
        met_all &= met
        r = [op] + ['%.0f' % med[c] for c in classes] + ['%.2fx' % ra, '%.2fx' % rb]
        if 'ref' in classes:
            pairs = zip(res['uwsgi'][op], res['ref'][op], strict=True)
            r.append('%.2fx' % median([c / f for c, f in pairs]))
        r.append('met' if met else '**not met**')
        rows.append(r)
        out.append(('app calls', op, '(c) %.0f ns, %.2fx (a) %.0f ns, %.2fx (b) %.0f ns' % (
            med['uwsgi'], ra, med['single'], rb, med['multiprocess']),
            'goal <= %.1fx (a) and < (b): %s; prometheus_client alone (no-op value) %.0f ns'
            % (GOAL_RATIO, 'met' if met else 'NOT met', med['noop'])))
    tables = [('calls: ns per call, medians of %d rounds x %d calls, one uWSGI worker; ratios '
               'are medians of the per-round ratios' % (a.call_rounds, a.number), head, rows)]
    prow = [[name, '%.0f' % median(xs), '%.0f' % min(xs)] for name, xs in prof.items()]
    tables.append(('calls: where the time goes (each statement alone, same worker, ns)',
                   ['statement', 'median ns', 'min ns'], prow))
    return tables, met_all


# ---------------------------------------------------------------------------------------------
# scrape

def _probe(port, done, q):
    """A 404 to the dedicated server every 10 ms until `done` is set: (time sent, latency)
    pairs (latency -1: not a 404)."""
    got = []
    while not done.is_set():
        t = time.time()
        dt, status, _, _ = fetch(port, '/no-such-page', timeout=10)
        if status != 404:
            got.append((t, -1.0))
        else:
            got.append((t, dt))
        time.sleep(max(0.0, 0.01 - (time.time() - t)))
    q.put(got)


class Mpc:
    """A child process (the uWSGI venv's Python, which has prometheus_client) holding files
    written as by `workers` processes, timing generate_latest over a MultiProcessCollector."""

    def __init__(self, uwsgi, tmp, workers):
        self.dir = tempfile.mkdtemp(prefix='mpc-%d-' % workers, dir=tmp)
        self.p = subprocess.Popen(
            [venv_python(uwsgi), os.path.abspath(__file__), '--mpc-child', self.dir,
             str(workers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.info = json.loads(self.p.stdout.readline())

    def time(self, n):
        self.p.stdin.write('%d\n' % n)
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def mpc_child(d, workers):
    """--mpc-child DIR N: writes the bench app's series as N processes (MultiProcessValue with
    fake pids), then answers each line 'K' on stdin with K timings of generate_latest."""
    os.environ['PROMETHEUS_MULTIPROC_DIR'] = d
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
    from prometheus_client.multiprocess import MultiProcessCollector
    sys.path.insert(0, HERE)
    from app_metrics_app import OBSERVATIONS
    for pid in range(1000, 1000 + workers):
        values.ValueClass = values.MultiProcessValue(process_identifier=lambda pid=pid: pid)
        for n in range(COUNTERS):
            Counter('bench_app_counter_%d' % n, 'Counter %d.' % n, registry=None).inc()
        for n in range(HISTOGRAMS):
            h = Histogram('bench_app_hist_%d_seconds' % n, 'Histogram %d.' % n, registry=None)
            for x in OBSERVATIONS:
                h.observe(x)
    values.close_all_multiprocess_files()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    body = generate_latest(registry)
    lines = body.decode().split('\n')
    samples = [ln for ln in lines if ln and not ln.startswith('#')]
    c0 = [ln for ln in samples if ln.startswith('bench_app_counter_0_total ')]
    print(json.dumps({'bytes': len(body), 'samples': len(samples),
                      'counter_0': float(c0[0].split()[1]) if c0 else None}), flush=True)
    for line in sys.stdin:
        k = int(line)
        ts = []
        for _ in range(k):
            t0 = time.perf_counter()
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            generate_latest(registry)
            ts.append(time.perf_counter() - t0)
        print(json.dumps(ts), flush=True)


def app_samples(body):
    """Sample lines of the bench app's families, and counter 0's value."""
    lines = [ln for ln in body.decode().split('\n') if ln.startswith('bench_app_')]
    c0 = [ln for ln in lines if ln.startswith('bench_app_counter_0_total ')]
    return len(lines), (float(c0[0].split()[1]) if c0 else None)


def start_pair(a, tmp, uwsgi, so, workers):
    """The instance with the table and its twin without (same app, same writes)."""
    env = dict(os.environ, APP_BENCH_SERIES='%d,%d' % (COUNTERS, HISTOGRAMS))
    env.pop('PROMETHEUS_MULTIPROC_DIR', None)
    inst = {}
    for on in (True, False):
        prom, = free_ports(1)
        u = uwsgi_instance(uwsgi, tmp, 'scrape-%d-%s' % (workers, 'on' if on else 'off'),
                           workers, plugin=so, prom_port=prom, app=APP, extra=app_args(on),
                           env=env)
        u.prom = prom
        inst[on] = u
    time.sleep(2)  # every worker's post_fork_hook has run
    body = fetch(inst[True].prom)[3]
    n, c0 = app_samples(body)
    if c0 != workers:
        raise RuntimeError('%d workers: bench_app_counter_0_total is %r, not %d (not every '
                           'worker wrote?)' % (workers, c0, workers))
    n_off, _ = app_samples(fetch(inst[False].prom)[3])
    return inst, n, n_off, len(body)


def part_scrape(a, tmp, uwsgi, so, out, keep):
    tables = []
    rows = []
    probe_rows = []
    met_all = True
    ctx = multiprocessing.get_context('fork')
    for workers in (16, 64):
        log('scrape: %d workers (two instances, and MultiProcessCollector files)' % workers)
        inst, n, n_off, size = start_pair(a, tmp, uwsgi, so, workers)
        mpc = Mpc(uwsgi, tmp, workers)
        if mpc.info['counter_0'] != workers:
            raise RuntimeError('MultiProcessCollector: counter 0 is %r' % mpc.info['counter_0'])
        for _ in range(10):  # warm-up: the master parses the table's entries once
            fetch(inst[True].prom)
            fetch(inst[False].prom)
        mpc.time(2)
        # The probe runs across the whole benchmark; "during" = while the loop scrapes the
        # instance with the table, "between" = the rest (the other two are being timed).
        q, done = ctx.Queue(), ctx.Event()
        pr = ctx.Process(target=_probe, args=(inst[True].prom, done, q))
        pr.start()
        time.sleep(0.5)
        lat = {'on': [], 'off': [], 'mpc': []}
        busy = []
        cases = ['on', 'off', 'mpc']
        for r in range(a.scrape_rounds):
            k = r % 3
            for case in cases[k:] + cases[:k]:
                if case == 'mpc':
                    lat['mpc'] += mpc.time(a.mpc_per_round)
                    continue
                t0 = time.time()
                for _ in range(a.scrapes_per_round):
                    dt, status, _, _ = fetch(inst[case == 'on'].prom)
                    if status != 200:
                        raise RuntimeError('scrape answered %r' % status)
                    lat[case].append(dt)
                if case == 'on':
                    busy.append((t0, time.time()))
        # Then the probe alone (idle), and the probe while the table's instance is scraped in
        # a tight loop.
        time.sleep(a.phase)
        t0 = time.time()
        loop = 0
        while time.time() < t0 + a.phase:
            if fetch(inst[True].prom)[1] != 200:
                raise RuntimeError('scrape failed')
            loop += 1
        busy.append((t0, time.time()))
        done.set()
        got = q.get(timeout=60)
        pr.join(10)
        mpc.close()
        keep[workers] = inst
        on, off, mp = median(lat['on']), median(lat['off']), median(lat['mpc'])
        goal = SCRAPE_GOALS[workers]
        met = on <= goal
        met_all &= met
        rows.append(['%d workers x %d app samples' % (workers, SAMPLES),
                     '%s (p99 %s)' % (fmt_ms(on), fmt_ms(pct(lat['on'], 99))),
                     '%s (+%s)' % (fmt_ms(off), fmt_ms(on - off)),
                     '%s (p99 %s)' % (fmt_ms(mp), fmt_ms(pct(lat['mpc'], 99))),
                     '%.3fx' % (on / mp), '%.0f KB, %d app samples (off: %d)' % (
                         size / 1e3, n, n_off),
                     '<= %s: %s' % (fmt_ms(goal), 'met' if met else '**not met**')])
        out.append(('app scrape', '%d workers x %d app samples, `--prometheus-server`'
                    % (workers, SAMPLES),
                    'p50 %s, p99 %s' % (fmt_ms(on), fmt_ms(pct(lat['on'], 99))),
                    'app metrics off %s; MultiProcessCollector %s (%.1fx the plugin; issue: %s);'
                    ' goal <= %s: %s' % (fmt_ms(off), fmt_ms(mp), mp / on,
                                         MPC_REFERENCE[workers], fmt_ms(goal),
                                         'met' if met else 'NOT met')))
        probe_rows.append((workers, got, busy, loop / a.phase))
        log('scrape %d: on %s, off %s, MultiProcessCollector %s' % (
            workers, fmt_ms(on), fmt_ms(off), fmt_ms(mp)))
    tables.append(('scrape: medians of %d rounds (%d scrapes of each instance, %d '
                   'MultiProcessCollector renders per round), fresh connection per scrape'
                   % (a.scrape_rounds, a.scrapes_per_round, a.mpc_per_round),
                   ['instance', '`--prometheus-server`, table on', 'same, app metrics off (+ '
                    'the table\'s share)', 'MultiProcessCollector generate_latest',
                    'plugin / MPC', 'exposition', 'goal'], rows))
    prows = []
    for workers, got, busy, rate in probe_rows:
        if not got:
            prows.append(['%d workers' % workers, 'no probe results', '', ''])
            continue
        fails = sum(1 for _, dt in got if dt < 0)
        during = [dt for t, dt in got if dt >= 0 and any(b0 <= t <= b1 for b0, b1 in busy)]
        between = [dt for t, dt in got if dt >= 0 and not any(b0 <= t <= b1 for b0, b1 in busy)]
        prows.append(['%d workers' % workers,
                      'p50 %s, p99 %s (%d probes; the loop: %.0f scrapes/s)' % (
                          fmt_ms(median(during)), fmt_ms(pct(during, 99)), len(during), rate)
                      if during else '-',
                      'p50 %s, p99 %s (%d probes)' % (fmt_ms(median(between)),
                                                       fmt_ms(pct(between, 99)), len(between))
                      if between else '-', '%d' % fails])
        if during:
            out.append(('app scrape', '%d workers: 404 probe of the dedicated server every '
                        '10 ms while it is scraped in a loop' % workers,
                        'p50 %s, p99 %s' % (fmt_ms(median(during)), fmt_ms(pct(during, 99))),
                        'otherwise (idle, or the other two timed): p99 %s; %d failed' % (
                            fmt_ms(pct(between, 99)) if between else '-', fails)))
    tables.append(('scrape: the master\'s responsiveness, a 404 probe to the dedicated server '
                   'every 10 ms from a separate process, across the rounds and two phases of '
                   '%.1f s: idle, then scraped in a tight loop' % a.phase,
                   ['instance', 'while scrapes of it run', 'otherwise (idle, or the other two '
                    'timed)', 'failed probes'], prows))
    return tables, met_all


# ---------------------------------------------------------------------------------------------
# memory

def rollup(pid):
    out = {}
    with open('/proc/%d/smaps_rollup' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('Rss', 'Pss'):
                out[k] = int(v.split()[0]) * 1024
    return out


def table_mapping(pid, nbytes):
    """Rss and Pss (bytes) of the shared mapping of `nbytes` (rounded up to pages) in pid."""
    want = (nbytes + 4095) // 4096 * 4096
    cur = None
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            parts = line.split()
            if '-' in parts[0] and len(parts) >= 5 and ':' not in parts[0]:
                lo, hi = (int(x, 16) for x in parts[0].split('-'))
                cur = {'size': hi - lo, 'shared': parts[1].endswith('s')}
            elif cur is not None and parts[0] in ('Rss:', 'Pss:') and cur['size'] == want \
                    and cur['shared']:
                cur[parts[0][:-1]] = int(parts[1]) * 1024
                if 'Rss' in cur and 'Pss' in cur:
                    return cur
    return None


def table_bytes(capacity, workers):
    slots = 1 + workers + 64 + 1
    # src/app_metrics.rs, Table::words: header, owners, the hash index, entries, values, stamps.
    return 8 * (8 + slots + 2 * capacity + capacity * 64 + 2 * slots * capacity)




def part_memory(a, tmp, uwsgi, so, out, keep):
    if not keep:
        for workers in (16, 64):
            keep[workers] = start_pair(a, tmp, uwsgi, so, workers)[0]
            for _ in range(20):
                fetch(keep[workers][True].prom)
                fetch(keep[workers][False].prom)
    rows = []
    delta, mapped = {}, {}
    for workers, inst in sorted(keep.items()):
        m = {}
        for on, u in inst.items():
            kids = children(u.pid)
            ws = [rollup(k) for k in kids]
            m[on] = dict(master=rollup(u.pid)['Pss'],
                         worker=median([w['Pss'] for w in ws]),
                         total=rollup(u.pid)['Pss'] + sum(w['Pss'] for w in ws), n=len(ws))
        tm = table_mapping(inst[True].pid, table_bytes(4096, workers))
        d = {k: m[True][k] - m[False][k] for k in ('master', 'worker', 'total')}
        delta[workers] = d
        if tm:
            mapped[workers] = tm['Rss']
        rows.append(['%d workers, %d app samples' % (workers, SAMPLES),
                     '%.0f / %.0f KB (%+.0f KB)' % (m[True]['master'] / 1e3,
                                                    m[False]['master'] / 1e3, d['master'] / 1e3),
                     '%.0f / %.0f KB (%+.1f KB)' % (m[True]['worker'] / 1e3,
                                                    m[False]['worker'] / 1e3, d['worker'] / 1e3),
                     '%.1f / %.1f MB (%+.0f KB; %+.0f bytes per sample)' % (
                         m[True]['total'] / 1e6, m[False]['total'] / 1e6, d['total'] / 1e3,
                         d['total'] / SAMPLES),
                     ('%.0f KB resident of %.1f MB mapped (%.0f bytes per sample)' % (
                         tm['Rss'] / 1e3, table_bytes(4096, workers) / 1e6, tm['Rss'] / SAMPLES)
                      if tm else 'not found')])
        out.append(('app memory', '%d workers x %d app samples, table on vs off' % (
            workers, SAMPLES), 'master PSS %+.0f KB, worker PSS %+.1f KB (median), total %+.0f '
            'KB' % (d['master'] / 1e3, d['worker'] / 1e3, d['total'] / 1e3),
            'the table mapping: %s' % ('%.0f KB resident in the master' % (tm['Rss'] / 1e3)
                                       if tm else '?')))
        for u in inst.values():
            stop(u)
    if 16 in delta and 64 in delta:
        per_worker = (delta[64]['total'] - delta[16]['total']) / 48
        fixed = delta[16]['total'] - 16 * per_worker
        rows.append(['fit: total = fixed + workers x slot', '', '',
                     'per worker slot %.1f KB (%.1f bytes per sample); fixed %.0f KB (%.0f bytes'
                     ' per sample)' % (per_worker / 1e3, per_worker / SAMPLES, fixed / 1e3,
                                       fixed / SAMPLES), ''])
        out.append(('app memory', 'per worker slot / fixed', '%.1f KB per worker (%.1f bytes per '
                    'sample and worker); %.0f KB fixed (%.0f bytes per sample)' % (
                        per_worker / 1e3, per_worker / SAMPLES, fixed / 1e3, fixed / SAMPLES),
                    'from the total PSS deltas at 16 and 64 workers'))
    if 16 in mapped and 64 in mapped:
        slot = (mapped[64] - mapped[16]) / 48
        slots16 = 1 + 16 + 64 + 1
        fixed = mapped[16] - slots16 * slot
        rows.append(['the table\'s resident pages: fixed + slots x row', '', '',
                     '', 'per slot %.1f KB (%.1f bytes per sample; %d slots at 16 workers: '
                     'master, workers, 64 for mules and spoolers, 1 discard); fixed %.0f KB '
                     '(%.0f bytes per sample)' % (slot / 1e3, slot / SAMPLES, slots16,
                                                  fixed / 1e3, fixed / SAMPLES)])
        out.append(('app memory', 'the table\'s mapping, resident', '%.1f KB per slot (%.1f '
                    'bytes per sample and slot), %.0f KB fixed (%.0f bytes per sample)' % (
                        slot / 1e3, slot / SAMPLES, fixed / 1e3, fixed / SAMPLES),
                    'slots = 1 + workers + 64 + 1, every one read by the master\'s merge'))
    return [('memory: PSS with the table / without (--prometheus-app-metrics off), same app and '
             'writes, after the scrapes', ['instance', 'master', 'worker (median)',
                                           'total (master + workers)', 'the table\'s mapping '
                                           '(master, /proc/PID/smaps)'], rows)], None


# ---------------------------------------------------------------------------------------------

def markdown(title, head, rows):
    lines = ['**%s**' % title, '', '| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


def run(uwsgi, so, tmp, parts=PARTS, quick=False, compare=None):
    """The parts; returns (markdown tables, run.py rows (part, case, result, notes))."""
    a = argparse.Namespace(
        call_rounds=31 if quick else 81, number=2000,
        scrape_rounds=6 if quick else 15, scrapes_per_round=10, mpc_per_round=2,
        phase=1.5 if quick else 3,
        compare_file=None)
    if compare:
        a.compare_file = os.path.join(tmp, 'ref_metrics_prometheus.py')
        src = subprocess.run(['git', 'show', '%s:python/metrics_prometheus/__init__.py' % compare],
                             cwd=ROOT, check=True, capture_output=True).stdout
        with open(a.compare_file, 'wb') as f:
            f.write(src)
    out, tables, goals = [], [], {}
    keep = {}
    if 'calls' in parts:
        t, goals['calls'] = part_calls(a, tmp, uwsgi, so, out)
        tables += t
    if 'scrape' in parts:
        t, goals['scrape'] = part_scrape(a, tmp, uwsgi, so, out, keep)
        tables += t
    if 'memory' in parts:
        t, _ = part_memory(a, tmp, uwsgi, so, out, keep)
        tables += t
    else:
        for inst in keep.values():
            for u in inst.values():
                stop(u)
    return [markdown(*t) for t in tables], out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument('--only', help='comma-separated parts: ' + ','.join(PARTS))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--no-build', action='store_true',
                    help='use build/bench-pip-routing/ as it is')
    ap.add_argument('--compare', metavar='REV',
                    help='also time the UwsgiValue of python/ at this git revision')
    ap.add_argument('--markdown', help='also write the tables to this file')
    ap.add_argument('--keep', action='store_true', help='keep the temp dir (uWSGI logs)')
    ap.add_argument('--mpc-child', nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mpc_child:
        return mpc_child(a.mpc_child[0], int(a.mpc_child[1]))
    parts = PARTS if not a.only else tuple(p.strip() for p in a.only.split(',') if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error('unknown part(s) %s; choose from %s' % (','.join(bad), ','.join(PARTS)))
    load_env()
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    tmp = tempfile.mkdtemp(prefix='mp-bench-app.')
    t0 = time.monotonic()
    uwsgi = os.environ['UWSGI_PIP_ROUTING']
    head = report_head(uwsgi)
    print(head, flush=True)
    try:
        if a.no_build:
            so = os.path.join(ROOT, 'build', 'bench-pip-routing', 'metrics_prometheus_plugin.so')
        else:
            so = build_plugin('bench-pip-routing', uwsgi)
        tables, _ = run(uwsgi, so, tmp, parts, a.quick, a.compare)
    finally:
        cleanup()
        if a.keep:
            log('kept ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    text = '\n\n'.join([head, 'load average at end %s; %s%s run in %.0f s' % (
        loadavg(), 'quick, ' if a.quick else '', ','.join(parts), time.monotonic() - t0)] + tables)
    print('\n' + text)
    if a.markdown:
        with open(a.markdown, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
