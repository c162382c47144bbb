"""Renders dashboards/uwsgi.json's graphs into docs/dashboard.png, from a real Prometheus
scraping a real uWSGI under a varying load (Grafana itself is not needed). See docs/dashboard.md.

    $MP_TOOLS/bin/python docs/dashboard.py                # ~4 minutes: starts uWSGI + Prometheus
    $MP_TOOLS/bin/python docs/dashboard.py --minutes 2 --out /tmp/d.png
    $MP_TOOLS/bin/python docs/dashboard.py --prometheus http://127.0.0.1:9090 \\
        --instance 127.0.0.1:9290 [--job uwsgi] --minutes 30   # an existing setup, no load

Starting its own, it needs what t/test.sh needs: `. ~/.cache/metrics_prometheus/env` (the pip
uWSGI with routing, $PROMETHEUS) and the plugin built into build/pip-routing/.
"""
import argparse
import math
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 't'))

import matplotlib  # noqa: E402

matplotlib.use('Agg')
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from dashload import (DASHBOARD, JOB, Load, Prometheus, substitute,  # noqa: E402
                      uwsgi_args)

COLUMNS = 3
# The load (see t/dashload.py's Load): fewer errors than the test's mix, a respawn per worker
# every half minute or so rather than every few seconds, and a listen queue of 16 so that the
# bursts show against its maximum.
PATHS = (['/'] * 20 + ['/cachekey'] * 8 + ['/status?404'] * 3
         + ['/status?503', '/error', '/slow?0.2', '/slow?0.2'])
MAX_REQUESTS = 300
LISTEN = 16


def load_level(elapsed):
    """Share of the fast clients' full rate: two slow waves over 4 minutes, and a quiet minute
    (10 %) in the middle of the third."""
    if 140 <= elapsed < 170:
        return 0.1
    return 0.55 + 0.45 * math.sin(2 * math.pi * elapsed / 120.0)


class Remote(Prometheus):
    """An existing Prometheus, queried only."""

    def __init__(self, url):
        self.url = url.rstrip('/')
        m = re.match(r'https?://([^/:]+):(\d+)$', self.url)
        if not m or m.group(1) not in ('127.0.0.1', 'localhost'):
            raise SystemExit('--prometheus: give http://127.0.0.1:PORT')
        self.port = int(m.group(2))


def fmt_value(unit):
    def f(v, _pos=None):
        if unit == 'bytes':
            for div, suffix in ((2 ** 30, ' GiB'), (2 ** 20, ' MiB'), (2 ** 10, ' KiB')):
                if abs(v) >= div:
                    return '%g%s' % (round(v / div, 1), suffix)
            return '%g B' % v
        if unit == 'percentunit':
            return '%g%%' % round(v * 100, 2)
        if unit == 's':
            return '%g ms' % round(v * 1000, 1) if 0 < abs(v) < 1 else '%g s' % round(v, 2)
        if unit == 'reqps':
            return '%g/s' % round(v, 2)
        if unit == 'cps':
            return '%g/s' % round(v, 2)
        if unit == 'cpm':
            return '%g/min' % round(v, 2)
        return '%g' % round(v, 2)
    return f


def legend(template, metric):
    return re.sub(r'\{\{\s*(\w+)\s*\}\}', lambda m: metric.get(m.group(1), ''), template)


def dashed_regexes(panel):
    out = []
    for o in panel['fieldConfig'].get('overrides', []):
        if o['matcher']['id'] == 'byRegexp' and any(
                p['id'] == 'custom.lineStyle' for p in o['properties']):
            out.append(re.compile(o['matcher']['options']))
    return out


def series_of(prom, panel, instance, job, start, end, step):
    """[(legend, [datetime], [value])] of every target of the panel."""
    import datetime
    out = []
    for t in panel['targets']:
        for r in prom.query_range(substitute(t['expr'], instance, job), start, end, step):
            xs = [datetime.datetime.fromtimestamp(float(ts)) for ts, _ in r['values']]
            ys = [float(v) if v not in ('NaN', '+Inf', '-Inf') else float('nan')
                  for _, v in r['values']]
            out.append((legend(t.get('legendFormat', ''), r['metric']), xs, ys))
    return out


def stat_line(prom, panels, instance, job):
    parts = []
    for p in panels:
        res = prom.query(substitute(p['targets'][0]['expr'], instance, job))
        if not res:
            parts.append('%s: -' % p['title'])
        elif p['title'] == 'Version':
            parts.append(legend(p['targets'][0]['legendFormat'], res[0]['metric']))
        elif p['title'] == 'Up':
            parts.append('UP' if float(res[0]['value'][1]) == 1 else 'DOWN')
        else:
            v = float(res[0]['value'][1])
            parts.append('%s: %s' % (p['title'], fmt_value(p['fieldConfig']['defaults']['unit'])(
                round(v) if p['title'] == 'Uptime' else v)))
    return '   |   '.join(parts)


def render(prom, instance, start, end, out, subtitle, job=JOB):
    import json
    with open(DASHBOARD) as f:
        dash = json.load(f)
    graphs = [p for p in dash['panels'] if p['type'] == 'timeseries']
    stats = [p for p in dash['panels'] if p['type'] == 'stat']
    step = max(1, int((end - start) / 300))
    rows = (len(graphs) + COLUMNS - 1) // COLUMNS
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(7 * COLUMNS, 3.6 * rows + 1.2),
                             squeeze=False)
    fig.suptitle('%s  -  %s\n%s' % (dash['title'], instance, stat_line(prom, stats, instance, job)),
                 fontsize=15, y=0.995)
    for ax, panel in zip(axes.flat, graphs, strict=False):  # the grid's last row may have room
        unit = panel['fieldConfig']['defaults'].get('unit', 'short')
        data = series_of(prom, panel, instance, job, start, end, step)
        dashed = dashed_regexes(panel)
        if panel['fieldConfig']['defaults']['custom']['stacking']['mode'] == 'normal' and data:
            data.sort(key=lambda s: s[0])
            ax.stackplot(data[0][1], *[s[2] for s in data], labels=[s[0] for s in data],
                         alpha=0.75)
        else:
            for name, xs, ys in data:
                style = '--' if any(r.search(name) for r in dashed) else '-'
                ax.plot(xs, ys, style, label=name, linewidth=1.3)
        ax.set_title(panel['title'], fontsize=12, loc='left', fontweight='bold')
        ax.yaxis.set_major_formatter(FuncFormatter(fmt_value(unit)))
        ax.xaxis.set_major_formatter(mdates.DateFormatter('%H:%M:%S' if end - start < 900
                                                          else '%H:%M'))
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=6))
        scale = panel['fieldConfig']['defaults']['custom'].get('scaleDistribution', {})
        if scale.get('type') == 'log':
            ax.set_yscale('log', base=scale.get('log', 10))
            ax.yaxis.set_major_formatter(FuncFormatter(fmt_value(unit)))
        else:
            ax.set_ylim(bottom=0)
        if 'max' in panel['fieldConfig']['defaults']:
            ax.set_ylim(top=panel['fieldConfig']['defaults']['max'] * 1.05)
        ax.grid(alpha=0.3)
        if data:
            ax.legend(fontsize=8, loc='upper left', ncol=3, framealpha=0.7)
        else:
            ax.text(0.5, 0.5, 'no data', ha='center', va='center', transform=ax.transAxes)
    for ax in list(axes.flat)[len(graphs):]:
        ax.axis('off')
    fig.text(0.5, 0.003, subtitle, ha='center', fontsize=9, color='#555555')
    fig.tight_layout(rect=(0, 0.012, 1, 0.965))
    fig.savefig(out, dpi=80)
    print('wrote %s' % out)


def own_setup(minutes, workdir):
    """Starts uWSGI (pip build with routing) and Prometheus, runs the load for `minutes`;
    returns (prom, instance, start, end, stop) where stop() ends both."""
    from conftest import VARIANTS, Uwsgi, free_port
    from helpers import server_addrs
    v = VARIANTS['pip-routing'].require()
    port = free_port()
    u = Uwsgi(v, ['--plugin', v.plugin, '--http-socket', '127.0.0.1:%d' % port, '--die-on-term']
              + uwsgi_args(max_requests=MAX_REQUESTS, listen=LISTEN),
              os.path.join(workdir, 'uwsgi'))
    os.makedirs(u.tmpdir)
    prom = load = None

    def stop():
        if load is not None:
            load.stop()
        if prom is not None:
            prom.stop()
        u.stop()

    try:
        u.start()
        instance = server_addrs(u)[0]
        prom = Prometheus(os.path.join(workdir, 'prometheus'), [instance]).start()
        prom.wait_scraping()
        start = time.time()
        load = Load(port, fast=3, burst_every=20.0, burst=12, harakiri_at=45.0,
                    harakiri_every=60.0, clear_every=30.0, intensity=load_level,
                    paths=PATHS).start()
        while time.time() < start + minutes * 60:
            time.sleep(5)
            print('%3.0f s: %r' % (time.time() - start, load.counts), flush=True)
        return prom, instance, start, time.time(), stop
    except BaseException:
        stop()
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--minutes', type=float, default=4.0)
    ap.add_argument('--out', default=os.path.join(HERE, 'dashboard.png'))
    ap.add_argument('--prometheus', help='an existing Prometheus (http://127.0.0.1:PORT)')
    ap.add_argument('--instance', help="with --prometheus: the uWSGI target's instance label")
    ap.add_argument('--job', default=JOB, help='with --prometheus: its job label (%(default)s)')
    args = ap.parse_args()
    if args.prometheus:
        if not args.instance:
            ap.error('--prometheus needs --instance')
        end = time.time()
        render(Remote(args.prometheus), args.instance, end - args.minutes * 60, end, args.out,
               'job %s, the last %g minutes' % (args.job, args.minutes), job=args.job)
        return
    with tempfile.TemporaryDirectory(prefix='mp-dashboard-') as d:
        prom, instance, start, end, stop = own_setup(args.minutes, d)
        try:
            render(prom, instance, start, end, args.out,
                   'uWSGI 2.0.31, 3 workers (--max-requests %d, --harakiri 2, --listen %d, '
                   '--cache2 items=20, --prometheus-queue-time), '
                   'Prometheus 2.42 scraping every 1 s, $__rate_interval = 15s; load: '
                   'docs/dashboard.md' % (MAX_REQUESTS, LISTEN))
        finally:
            stop()


if __name__ == '__main__':
    main()
