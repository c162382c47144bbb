"""A real Prometheus over a real uWSGI, the queries of dashboards/uwsgi.json, and a request load
that moves every panel: shared by t/test_dashboard.py and docs/dashboard.py."""
import http.client
import json
import os
import random
import re
import threading
import time

import promserver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, 'dashboards', 'uwsgi.json')
RULES = os.path.join(ROOT, 'rules', 'uwsgi.rules.yml')
JOB = 'uwsgi'
# What Grafana makes of $__rate_interval with a 1 s scrape interval: at least 4 scrapes, and more
# than one step of a graph of a few minutes.
RATE_INTERVAL = '15s'

APP = os.path.join(ROOT, 't', 'apps', 'dashboard_app.py')


def uwsgi_args(max_requests=40, listen=None):
    """uWSGI options for the load below: t/apps/dashboard_app.py (the last --wsgi-file wins over
    the harness's app.py, which it wraps), three workers recycled every `max_requests` requests,
    a 2 s harakiri, a 20-item cache that the load fills up, and the queue time recorded from
    the X-Request-Start header the load sends."""
    args = ['--wsgi-file', APP, '--workers', '3', '--prometheus-server', '127.0.0.1:0',
            '--cache2', 'name=mycache,items=20', '--harakiri', '2',
            '--max-requests', str(max_requests), '--min-worker-lifetime', '0',
            '--prometheus-queue-time']
    if listen:
        args += ['--listen', str(listen)]
    return args


def dashboard_targets(path=DASHBOARD):
    """[(panel title, legend, expr)] of every query of every panel, rows' nested panels too."""
    with open(path) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get('panels', []))
            for t in p.get('targets', []):
                out.append((p['title'], t.get('legendFormat', ''), t['expr']))
    walk(dash['panels'])
    return out


def dashboard_variables(path=DASHBOARD):
    with open(path) as f:
        return json.load(f)['templating']['list']


def regex_value(value):
    """A variable's value as Grafana's Prometheus data source puts it in a `=~"..."` matcher:
    regex metacharacters escaped, and that backslash doubled for the PromQL string."""
    return re.sub(r'[\\^$*+?.()|{}\[\]]', lambda m: '\\\\' + m.group(0), value)


def substitute(expr, instance, job=JOB, rate_interval=RATE_INTERVAL, time_range='5m'):
    """The PromQL Grafana sends for `expr` with one job and one instance selected, `$route` at
    All (the variable's allValue, which Grafana inserts unescaped: `.+`, which a series without
    the label never matches) and a dashboard time range of `time_range` ($__range, the
    top-routes table's window)."""
    job, instance = regex_value(job), regex_value(instance)
    route = next(v['allValue'] for v in dashboard_variables() if v['name'] == 'route')
    out = (expr.replace('$__rate_interval', rate_interval).replace('$__range', time_range)
           .replace('${job}', job).replace('$job', job)
           .replace('${instance}', instance).replace('$instance', instance)
           .replace('${route}', route).replace('$route', route))
    assert '$' not in out, 'unsubstituted variable in %r' % out
    return out


def needs_route(expr):
    """Whether a panel query is one of the "Latency by route" row's: it selects on the request
    histogram's `route` label, which exists only with --prometheus-route(-label)."""
    return '$route' in expr or '${route}' in expr


def is_route_rule(name):
    """Whether a recording rule is per route (rules/uwsgi.rules.yml: `instance_route...`)."""
    return name.startswith('instance_route')


def recording_rule_names(path=RULES):
    with open(path) as f:
        return re.findall(r'^\s*- record: (\S+)\s*$', f.read(), re.M)


def alert_names(path=RULES):
    with open(path) as f:
        return re.findall(r'^\s*- alert: (\S+)\s*$', f.read(), re.M)


class Prometheus(promserver.Prometheus):
    """A Prometheus (2.42, $PROMETHEUS) scraping `targets` as job `uwsgi` every second, with
    rules/uwsgi.rules.yml evaluated every second; stopped by pid."""

    def __init__(self, workdir, targets, rule_files=(RULES,), retention='1h'):
        os.makedirs(workdir, exist_ok=True)
        config = ('global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n'
                  'rule_files: %s\n'
                  'scrape_configs:\n'
                  '  - job_name: %s\n'
                  '    static_configs: [{targets: %s}]\n'
                  % (json.dumps(list(rule_files)), JOB, json.dumps(list(targets))))
        super().__init__(workdir, config, ['--storage.tsdb.retention.time=' + retention])

    def query(self, expr, at=None):
        params = {'query': expr}
        if at is not None:
            params['time'] = '%.3f' % at
        return self.api('query', **params)['result']

    def query_range(self, expr, start, end, step=1):
        return self.api('query_range', query=expr, start='%.3f' % start, end='%.3f' % end,
                        step=str(step))['result']

    def wait_scraping(self, timeout=60):
        """Waits until every target has been scraped successfully (2.42 starts scraping a few
        seconds after it is up); returns the active targets."""
        def scraped():
            targets = self.targets()
            return targets if targets and all(t['health'] == 'up' for t in targets) else None
        return self.wait('every target scraped', scraped, timeout)


def request(port, path, timeout=30, headers=None):
    """GET; returns the status, or None when uWSGI closed the connection without answering (an
    exception before start_response, a harakiri) or the request failed."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('GET', path, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Load:
    """Background clients for t/apps/dashboard_app.py on `port`, until stop():

    - `fast` threads: a mix (`paths`) of 200 (/, /cachekey?KEY with KEY drawn from a few dozen,
      the first ones more often), 404 (/status?404), 5xx (/status?503, and /error: an exception)
      requests and a few /slow?0.2;
    - a `slow` thread: /slow?1.2 in a loop (in-flight age, the latency quantiles' tail);
    - every `burst_every` seconds, `burst` /slow?1 requests at once, more than there are
      workers, so every worker is busy and connections wait in the listen queue;
    - every `harakiri_every` seconds (from the first one at `harakiri_at`), a /slow?4 that the
      2 s --harakiri kills;
    - every `clear_every` seconds, /cacheclear.

    Every request carries `X-Request-Start: t=SECONDS.MILLIS` (nginx's form) stamped as it is
    sent, minus a delay drawn uniformly from `proxy_delay` seconds, as if a front proxy had
    received it that much earlier: uwsgi_request_queue_seconds gets that delay plus the real
    wait in the listen queue (the bursts' requests wait for a worker).

    `intensity(elapsed)` (default 1) scales the fast clients' rate over time; `counts` tallies
    the statuses seen (None: closed without an answer)."""

    PATHS = (['/'] * 6 + ['/cachekey'] * 4 + ['/status?404'] * 2
             + ['/status?503', '/error', '/slow?0.2'])

    def __init__(self, port, fast=2, pause=0.02, burst_every=6.0, burst=8, harakiri_at=3.0,
                 harakiri_every=None, clear_every=10.0, intensity=None, paths=PATHS,
                 proxy_delay=(0.001, 0.02)):
        self.port = port
        self.fast = fast
        self.pause = pause
        self.burst_every = burst_every
        self.burst = burst
        self.harakiri_at = harakiri_at
        self.harakiri_every = harakiri_every
        self.clear_every = clear_every
        self.intensity = intensity or (lambda elapsed: 1.0)
        self.paths = list(paths)
        self.proxy_delay = proxy_delay
        self.stopping = threading.Event()
        self.threads = []
        self.counts = {}
        self.lock = threading.Lock()

    def _get(self, path, timeout=30):
        start = time.time() - random.uniform(*self.proxy_delay)
        status = request(self.port, path, timeout, {'X-Request-Start': 't=%.3f' % start})
        with self.lock:
            self.counts[status] = self.counts.get(status, 0) + 1
        return status

    def _fast(self, seed):
        rand = random.Random(seed)
        while not self.stopping.is_set():
            level = max(self.intensity(time.time() - self.t0), 0.0)
            if level <= 0 or rand.random() > level:
                self.stopping.wait(0.1)
                continue
            path = rand.choice(self.paths)
            if path == '/cachekey':
                path += '?k%d' % int(rand.expovariate(1 / 12.0))
            self._get(path)
            self.stopping.wait(self.pause)

    def _slow(self):
        while not self.stopping.is_set():
            self._get('/slow?1.2')
            self.stopping.wait(0.3)

    def _bursts(self):
        while not self.stopping.wait(self.burst_every):
            ts = [threading.Thread(target=self._get, args=('/slow?1',), daemon=True)
                  for _ in range(self.burst)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)

    def _harakiri(self):
        if self.stopping.wait(self.harakiri_at):
            return
        while True:
            self._get('/slow?4')
            if self.harakiri_every is None or self.stopping.wait(self.harakiri_every):
                return

    def _clear(self):
        while not self.stopping.wait(self.clear_every):
            self._get('/cacheclear')

    def start(self):
        self.t0 = time.time()
        targets = ([(self._fast, (i,)) for i in range(self.fast)]
                   + [(self._slow, ()), (self._bursts, ()), (self._harakiri, ()),
                      (self._clear, ())])
        for fn, args in targets:
            t = threading.Thread(target=fn, args=args, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)
