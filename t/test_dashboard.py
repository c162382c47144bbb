"""Issue 13: dashboards/uwsgi.json and rules/uwsgi.rules.yml against a real Prometheus (2.42)
scraping a real uWSGI under a load that moves every panel (t/dashload.py).

Every query of every panel, with $job/$instance/$__rate_interval substituted as Grafana would,
must return data through Prometheus' HTTP API, and (but for the listed exceptions) a non-zero
value at some point of the run; every recording rule must produce data; no rule may fail to
evaluate; the harakiri the load provokes must fire UwsgiHarakiri (and show in the exits panel
under `harakiri`, as the --max-requests recycling under `max_requests`), while the crash alert
UwsgiWorkersCrashing, which those benign exits must not trip, stays silent.

The "Latency by route" row and the per-route recording rules need the request histogram's
`route` label (--prometheus-route, --prometheus-route-label): without it (the first test) they
must have no data at all, and no series may carry the label; with it (the second), each has
data for every route, and the routes split the instance's requests without changing the
per-instance panels.
"""
import os
import time

from dashload import (JOB, Load, Prometheus, alert_names, dashboard_targets,
                      dashboard_variables, is_route_rule, needs_route, recording_rule_names,
                      substitute, uwsgi_args)
from helpers import server_addrs

# (panel title, legend) of the queries that may stay 0 all along under this load.
ZERO_OK = {}
# Panels where particular series must move, not just any of them: each label set listed.
# (All ten exit reasons are always exported; this load provokes a harakiri and recycles workers
# by --max-requests, and nothing else: the other eight may stay 0.)
MUST_MOVE = {
    ('Workers by status', '{{status}}'): [{'status': 'busy'}],
    ('Worker exits by reason', '{{reason}}'): [{'reason': 'harakiri'},
                                               {'reason': 'max_requests'}],
}
LOAD_SECONDS = 90  # at most; usually every panel has moved after about 20 s
# --prometheus-route rules for the second test: /slow (the load's /slow?1.2 loop, the slowest)
# and a templated path; everything else (/, /status, /error, /cachekey...) is `other`.
ROUTE_RULES = ['--prometheus-route', '^/api/users/[0-9]+$ /api/users/:id',
               '--prometheus-route', '^/slow$ /slow']
ROUTES = ['/api/users/:id', '/slow', 'other']
ROUTE_PATHS = ['/', '/status?404', '/api/users/1', '/api/users/22', '/api/users/333']
ROUTE_SECONDS = 60  # at most; every route has data after about 10 s


def range_max(results, labels=None):
    """Largest value of the series of a query_range answer (matching `labels`), or None."""
    values = [float(v) for r in results
              if all(r['metric'].get(k) == v for k, v in (labels or {}).items())
              for _, v in r['values'] if v not in ('NaN', '+Inf', '-Inf')]
    return max(values) if values else None


def missing_data(prom, instance, t0):
    """What does not have its data yet: [(what, why)]."""
    now = time.time()
    missing = []
    for title, legend, expr in dashboard_targets():
        if needs_route(expr):
            continue  # no route label here: no_route_data() checks they stay empty
        q = substitute(expr, instance)
        res = prom.query_range(q, t0, now)
        if not res:
            missing.append(('%s / %s' % (title, legend), 'no data: ' + q))
            continue
        if (title, legend) in ZERO_OK:
            continue
        for labels in MUST_MOVE.get((title, legend), [None]):
            top = range_max(res, labels)
            if top is None or top <= 0:
                missing.append(('%s / %s' % (title, legend),
                                'never above 0%s: %s' % (' for %r' % labels if labels else '', q)))
    for name in recording_rule_names():
        if is_route_rule(name):
            continue
        if not prom.query('%s{job="%s", instance="%s"}' % (name, JOB, instance)):
            missing.append((name, 'recording rule without data'))
    if not prom.query_range('ALERTS{alertname="UwsgiHarakiri", alertstate="firing", '
                            'instance="%s"}' % instance, t0, now):
        missing.append(('UwsgiHarakiri', 'never fired'))
    return missing


def route_data(prom, instance, t0):
    """Whatever data the route panels and the per-route rules have had since t0: [(what, q)]."""
    now = time.time()
    found = []
    for title, legend, expr in dashboard_targets():
        if needs_route(expr):
            q = substitute(expr, instance)
            if prom.query_range(q, t0, now):
                found.append(('%s / %s' % (title, legend), q))
    for name in recording_rule_names():
        if is_route_rule(name):
            q = '%s{job="%s", instance="%s"}' % (name, JOB, instance)
            if prom.query_range(q, t0, now):
                found.append((name, q))
    q = '{job="%s", instance="%s", route!=""}' % (JOB, instance)
    if prom.query_range(q, t0, now):
        found.append(('a series with a route label', q))
    return found


def check_variables(prom, instance, route_values):
    """The variables' label_values() queries, as Grafana's Prometheus data source runs them."""
    expected = {'job': [JOB], 'instance': [instance], 'route': route_values}
    names = []
    for var in dashboard_variables():
        if var['type'] != 'query':
            continue
        q = var['definition']
        assert q.startswith('label_values(') and q.endswith(')'), q
        match, label = q[len('label_values('):-1].rsplit(',', 1)
        values = prom.api('label/%s/values' % label.strip(),
                          **{'match[]': substitute(match, instance)})
        assert values == expected[var['name']], (q, values)
        names.append(var['name'])
    assert sorted(names) == sorted(expected), names


def test_every_panel_and_recording_rule_has_data(start_uwsgi, tmpdir_path):
    u = start_uwsgi('pip-routing', uwsgi_args())
    instance = server_addrs(u)[0]
    prom = Prometheus(os.path.join(tmpdir_path, 'prometheus'), [instance]).start()
    load = None
    try:
        prom.wait_scraping()
        check_variables(prom, instance, [])
        t0 = time.time()
        load = Load(u.http_port).start()
        deadline = t0 + LOAD_SECONDS
        while True:
            time.sleep(3)
            missing = missing_data(prom, instance, t0)
            if not missing or time.time() > deadline:
                break
        load.stop()
        assert not missing, ('after %.0f s of load (statuses %r):\n%s\n%s'
                             % (time.time() - t0, load.counts,
                                '\n'.join('%s: %s' % m for m in missing), u.log()[-3000:]))
        # Without the options, nothing has a route: the route row and rules stay empty (the
        # second test shows the same queries with data).
        assert not route_data(prom, instance, t0)
        check_variables(prom, instance, [])
        # The load did what it says: every status class, harakiri, respawns.
        assert {200, 404, 503, None} <= set(load.counts), load.counts
        assert 'HARAKIRI ON WORKER' in u.log()
        # Harakiri and max-requests recycling are not a crash loop.
        assert not prom.query_range('ALERTS{alertname="UwsgiWorkersCrashing", instance="%s"}'
                                    % instance, t0, time.time())
        # Every rule of the file is loaded and evaluates without error.
        groups = prom.api('rules')['groups']
        rules = [r for g in groups for r in g['rules']]
        assert sorted(r['name'] for r in rules) == sorted(recording_rule_names()
                                                          + alert_names())
        bad = [(r['name'], r.get('lastError')) for r in rules if r['health'] != 'ok']
        assert not bad, bad
    finally:
        if load is not None:
            load.stop()
        prom.stop()


def routes_of(results):
    return sorted(r['metric'].get('route', '') for r in results)


def test_route_panels_and_rules_with_the_route_label(start_uwsgi, tmpdir_path):
    u = start_uwsgi('pip-routing', uwsgi_args() + ROUTE_RULES)
    instance = server_addrs(u)[0]
    prom = Prometheus(os.path.join(tmpdir_path, 'prometheus'), [instance]).start()
    targets = {(title, legend): expr for title, legend, expr in dashboard_targets()
               if needs_route(expr)}
    assert sorted(targets) == [('Top routes by time spent', 'p99'),
                               ('Top routes by time spent', 'requests/s'),
                               ('Top routes by time spent', 'time spent'),
                               ('p99 by route', '{{route}}')]
    rules = [name for name in recording_rule_names() if is_route_rule(name)]
    assert len(rules) == 4, rules
    load = None
    try:
        prom.wait_scraping()
        t0 = time.time()
        # The fast clients on ROUTE_PATHS and the /slow?1.2 loop; the bursts, the harakiri and
        # the cache clears are pushed past the end of the test.
        load = Load(u.http_port, paths=ROUTE_PATHS, burst_every=3600, harakiri_at=3600,
                    clear_every=3600).start()

        def missing():
            out = []
            for key, expr in targets.items():
                got = routes_of(prom.query_range(substitute(expr, instance), t0, time.time()))
                if got != ROUTES:
                    out.append((key, got))
            for name in rules:
                got = sorted(set(routes_of(prom.query('%s{job="%s", instance="%s"}'
                                                      % (name, JOB, instance)))))
                if got != ROUTES:
                    out.append((name, got))
            return out

        deadline = t0 + ROUTE_SECONDS
        while True:
            time.sleep(3)
            absent = missing()
            if not absent or time.time() > deadline:
                break
        load.stop()
        assert not absent, ('after %.0f s (statuses %r), routes seen: %r\n%s'
                            % (time.time() - t0, load.counts, absent, u.log()[-3000:]))
        check_variables(prom, instance, ROUTES)

        # The table over the whole run, as Grafana asks for it ($__range), one evaluation time.
        end = time.time()
        span = '%ds' % (end - t0 + 1)

        def table(legend):
            res = prom.query(substitute(targets[('Top routes by time spent', legend)], instance,
                                        time_range=span), at=end)
            return {r['metric']['route']: float(r['value'][1]) for r in res}
        spent, rate, p99 = table('time spent'), table('requests/s'), table('p99')
        assert sorted(spent) == sorted(rate) == sorted(p99) == ROUTES, (spent, rate, p99)
        # /slow?1.2 in a loop takes most of the time, and its p99 is above 1 s.
        assert max(spent, key=spent.get) == '/slow', spent
        assert p99['/slow'] >= 1 > p99['/api/users/:id'], p99
        # The routes split the instance's requests: their rates add up to its rate.
        total = float(prom.query(substitute(
            'sum(rate(uwsgi_request_duration_seconds_count{job=~"$job", instance=~"$instance"}'
            '[%s]))' % span, instance), at=end)[0]['value'][1])
        assert abs(sum(rate.values()) - total) <= 1e-9 * total, (rate, total)

        # The per-instance panel and rules still sum over the routes: one series each, and
        # the per-route request rates add up to the per-code ones (both recorded by the same
        # group at the same time; 2 s back, where both evaluations are complete).
        latency = [expr for title, _, expr in dashboard_targets()
                   if title == 'Latency p50 / p95 / p99']
        for expr in latency:
            assert len(prom.query(substitute(expr, instance), at=end)) == 1, expr
        assert len(prom.query('instance:uwsgi_request_duration_seconds:p99_5m{instance="%s"}'
                              % instance, at=end)) == 1
        by_route, by_code = (float(prom.query(
            'sum(%s{instance="%s"})' % (name, instance), at=end - 2)[0]['value'][1])
            for name in ('instance_route:uwsgi_request_duration_seconds_count:rate5m',
                         'instance_code:uwsgi_request_duration_seconds_count:rate5m'))
        assert abs(by_route - by_code) <= 1e-9 * by_code, (by_route, by_code)
        bad = [(r['name'], r.get('lastError')) for g in prom.api('rules')['groups']
               for r in g['rules'] if r['health'] != 'ok']
        assert not bad, bad
    finally:
        if load is not None:
            load.stop()
        prom.stop()
