#!/usr/bin/env python3
"""Scrape time and body size against the number of series, ~50 to ~100 000, for the plugin's
dedicated server (text; text with gzip) and for uWSGI's stats server JSON (what a sidecar
fetches first), in one uWSGI instance per point. Plots docs/bench/scaling.png.

  python3 bench/run.py --only scaling        # builds the plugin first; or, with a plugin at hand:
  $MP_TOOLS/bin/python bench/scaling.py [--plugin SO] [--quick]

Points vary workers x threads/async cores and custom metrics (--metric). The large points use
uWSGI's --metrics-no-cores (per-core metrics registration in uWSGI is quadratic: 4096 cores per
worker would take minutes to start): the plugin then still exports one or two series per core
from the worker table, and uWSGI's stats JSON still lists every core.
"""
import argparse
import json
import os
import sys
import tempfile
import shutil
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ROOT, cleanup, count_series, fetch, free_ports, load_env, log,  # noqa: E402
                      median, stop, uwsgi_instance)

# (label, workers, cores, mode, custom metrics, extra options)
POINTS = [
    ('1 x 1', 1, 1, 'threads', 0, []),
    ('2 x 2 threads', 2, 2, 'threads', 0, []),
    ('4 x 8 threads', 4, 8, 'threads', 0, []),
    ('16 x 32 threads', 16, 32, 'threads', 0, []),
    ('16 x 32 threads + 2,000 --metric', 16, 32, 'threads', 2000, []),
    ('2 x 2 threads + 8,000 --metric', 2, 2, 'threads', 8000, []),
    ('4 x 1024 async, --metrics-no-cores', 4, 1024, 'async', 0, ['--metrics-no-cores']),
    ('10 x 4096 async, --metrics-no-cores', 10, 4096, 'async', 0, ['--metrics-no-cores']),
    ('25 x 4096 async, --metrics-no-cores', 25, 4096, 'async', 0, ['--metrics-no-cores']),
]
PNG = os.path.join(ROOT, 'docs', 'bench', 'scaling.png')


def measure(uwsgi, so, tmp, point, n):
    label, w, c, mode, nmetrics, extra = point
    prom, stats = free_ports(2)
    extra = list(extra)
    for i in range(nmetrics):
        extra += ['--metric', 'app.m%d' % i]
    t = time.monotonic()
    u = uwsgi_instance(uwsgi, tmp, 'scaling-%dx%d-%d' % (w, c, nmetrics), w, c, mode, plugin=so,
                       prom_port=prom, stats_port=stats, extra=extra, timeout=600)
    startup = time.monotonic() - t
    time.sleep(2)
    try:
        ends = [('text', prom, '/metrics', ()),
                ('gzip', prom, '/metrics', (('Accept-Encoding', 'gzip'),)),
                ('json', stats, '/', ())]
        for _, port, path, headers in ends:
            for _ in range(3):
                fetch(port, path, headers)
        lat = {e[0]: [] for e in ends}
        size = {}
        for i in range(n):
            k = i % len(ends)
            for name, port, path, headers in ends[k:] + ends[:k]:
                dt, status, _, body = fetch(port, path, headers, timeout=120)
                assert status == 200, (label, name, status)
                lat[name].append(dt)
                size[name] = len(body)
        series = count_series(fetch(prom)[3])
    finally:
        stop(u)
    r = dict(label=label, workers=w, cores=c, mode=mode, metrics=nmetrics, series=series,
             startup_s=startup, **{'%s_s' % k: median(v) for k, v in lat.items()},
             **{'%s_bytes' % k: v for k, v in size.items()})
    log('scaling %-38s %7d series: text %s %.2f ms, gzip %s %.2f ms, JSON %s %.2f ms '
        '(start %.1f s)' % (label, series, r['text_bytes'], r['text_s'] * 1e3, r['gzip_bytes'],
                            r['gzip_s'] * 1e3, r['json_bytes'], r['json_s'] * 1e3, startup))
    return r


def family(r):
    if r['metrics']:
        return 'custom --metric added'
    if r['mode'] == 'async':
        return 'async cores, --metrics-no-cores'
    return 'workers x threads (built-ins)'


def plot(results, path):
    """Colour: the endpoint; marker and line style: the kind of instance (lines join points of
    one kind only, so that a kind with fewer bytes per series does not zigzag the curve)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    ends = (('text', '--prometheus-server, text', 'tab:blue'),
            ('gzip', '--prometheus-server, text + gzip', 'tab:orange'),
            ('json', 'uWSGI stats server, JSON', 'tab:green'))
    kinds = (('workers x threads (built-ins)', 'o', '-'),
             ('async cores, --metrics-no-cores', 's', '--'),
             ('custom --metric added', '^', ':'))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.2))
    for kind, marker, ls in kinds:
        rs = sorted((r for r in results if family(r) == kind), key=lambda r: r['series'])
        if not rs:
            continue
        xs = [r['series'] for r in rs]
        for key, _, colour in ends:
            ax1.plot(xs, [r['%s_s' % key] * 1e3 for r in rs], marker=marker, ls=ls, color=colour)
            ax2.plot(xs, [r['%s_bytes' % key] / 1e3 for r in rs], marker=marker, ls=ls,
                     color=colour)
    handles = [Line2D([], [], color=c, lw=2, label=name) for _, name, c in ends]
    handles += [Line2D([], [], color='gray', marker=m, ls=ls, label=k) for k, m, ls in kinds]
    ax1.set_title('Scrape time (median, fresh connection each)')
    ax1.set_ylabel('ms')
    ax2.set_title('Response body size (on the wire)')
    ax2.set_ylabel('KB')
    for ax in (ax1, ax2):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('series in the exposition (plugin, text format)')
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(handles=handles, fontsize=8, loc='upper left')
    fig.suptitle('metrics_prometheus: scaling with the number of series (uWSGI %s, %d cores, '
                 'shared machine: absolute times are noisy)'
                 % (results[0].get('uwsgi', ''), os.cpu_count()), fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(uwsgi, so, tmp, quick=False, png=PNG):
    """Measures every point; writes the PNG and a JSON of the figures beside it; returns rows
    (part, case, result, notes) for bench/run.py's table."""
    import subprocess
    n = 5 if quick else 15
    points = POINTS[:5] + POINTS[6:8] if quick else POINTS
    uver = subprocess.run([uwsgi, '--version'], capture_output=True, text=True).stdout.strip()
    results = []
    for p in points:
        r = measure(uwsgi, so, tmp, p, n)
        r['uwsgi'] = uver
        results.append(r)
    plot(results, png)
    with open(os.path.splitext(png)[0] + '.json', 'w') as f:
        json.dump(results, f, indent=1)
    log('wrote %s' % png)
    rows = []
    for r in sorted(results, key=lambda r: (family(r), r['series'])):
        rows.append(('scaling', '%s, %d series' % (r['label'], r['series']),
                     'text %.2f ms (%.0f ns/series), JSON %.2f ms' % (
                         r['text_s'] * 1e3, r['text_s'] * 1e9 / r['series'], r['json_s'] * 1e3),
                     'text %.0f KB, gzip %.0f KB, JSON %.0f KB; gzip scrape %.2f ms; '
                     '%.2fx JSON time'
                     % (r['text_bytes'] / 1e3, r['gzip_bytes'] / 1e3, r['json_bytes'] / 1e3,
                        r['gzip_s'] * 1e3, r['text_s'] / r['json_s'])))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--plugin', default=os.path.join(ROOT, 'build', 'bench-pip-routing',
                                                     'metrics_prometheus_plugin.so'))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--png', default=PNG)
    a = ap.parse_args()
    load_env()
    tmp = tempfile.mkdtemp(prefix='mp-bench-scaling.')
    try:
        for r in run(os.environ['UWSGI_PIP_ROUTING'], a.plugin, tmp, a.quick, a.png):
            print('| %s | %s | %s | %s |' % r)
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
