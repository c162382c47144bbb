"""Issue 13: dashboards/uwsgi.json and rules/uwsgi.rules.yml against a real Prometheus (2.42)
scraping a real uWSGI under a load that moves every panel (t/dashload.py).

Every query of every panel, with $job/$instance/$__rate_interval substituted as Grafana would,
must return data through Prometheus' HTTP API, and (but for the listed exceptions) a non-zero
value at some point of the run; every recording rule must produce data; no rule may fail to
evaluate; the harakiri the load provokes must fire UwsgiHarakiri (and show in the exits panel
under `harakiri`, as the --max-requests recycling under `max_requests`), while the crash alert
UwsgiWorkersCrashing, which those benign exits must not trip, stays silent.
"""
import os
import time

from dashload import (JOB, Load, Prometheus, alert_names, dashboard_targets,
                      dashboard_variables, recording_rule_names, substitute, uwsgi_args)
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
        if not prom.query('%s{job="%s", instance="%s"}' % (name, JOB, instance)):
            missing.append((name, 'recording rule without data'))
    if not prom.query_range('ALERTS{alertname="UwsgiHarakiri", alertstate="firing", '
                            'instance="%s"}' % instance, t0, now):
        missing.append(('UwsgiHarakiri', 'never fired'))
    return missing


def test_every_panel_and_recording_rule_has_data(start_uwsgi, tmpdir_path):
    u = start_uwsgi('pip-routing', uwsgi_args())
    instance = server_addrs(u)[0]
    prom = Prometheus(os.path.join(tmpdir_path, 'prometheus'), [instance]).start()
    load = None
    try:
        prom.wait_scraping()
        # The variables' label_values() queries, as Grafana's Prometheus data source runs them.
        for var in dashboard_variables():
            if var['type'] != 'query':
                continue
            q = var['definition']
            assert q.startswith('label_values(') and q.endswith(')'), q
            match, label = q[len('label_values('):-1].rsplit(',', 1)
            values = prom.api('label/%s/values' % label.strip(),
                              **{'match[]': substitute(match, instance)})
            assert values == [{'job': JOB, 'instance': instance}[var['name']]], (q, values)
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
