"""Issue 13: every recipe of docs/recipes.md, tried with real uWSGI and a real Prometheus.

The configurations are read from the doc: each fenced block tagged `recipe=NAME` in its info
string. A test replaces the doc's example hosts, ports and paths by ephemeral ports on
127.0.0.1 and temporary paths (each replaced text must be in the block, so a changed doc fails
here instead of drifting), sets the scrape and evaluation intervals to 1 s, and keeps the rest
as written. Prometheus is Debian's 2.42 ($PROMETHEUS, $PROMTOOL); it has no Kubernetes
discovery, so the pod-annotation rules run on a file-SD list that carries the labels
Kubernetes discovery would set, and the other Kubernetes manifests are checked for syntax and
consistency only.

Samples with the constant labels of `--prometheus-label` are checked when the plugin has that
option; without it the test checks everything else, then ends as an expected failure.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import yaml

from conftest import APP, ROOT, VARIANTS, Uwsgi, free_port
from helpers import alive, descendants, get, server_addrs
from promcheck import samples
from promserver import Prometheus

DOC = os.path.join(ROOT, 'docs', 'recipes.md')
PLUGIN_LINE = 'need-plugin = /usr/lib/uwsgi/plugins/metrics_prometheus_plugin.so'
VARIANT = 'pip-routing'


def read_recipes():
    with open(DOC) as f:
        text = f.read()
    found = re.findall(r'^```(\w+) recipe=([\w-]+)\n(.*?)^```$', text, re.M | re.S)
    names = [name for _, name, _ in found]
    assert len(names) == len(set(names)), 'duplicate recipe names in %s' % DOC
    return {name: (lang, body) for lang, name, body in found}


RECIPES = read_recipes()


def recipe(name):
    return RECIPES[name][1]


def subst(text, *pairs):
    """Replaces each (old, new) in text; every old must be there."""
    for old, new in pairs:
        assert old in text, '%r is no longer in the recipe:\n%s' % (old, text)
        text = text.replace(old, new)
    return text


def fast(config_text):
    """A Prometheus configuration with every interval at 1 s, as YAML text."""
    cfg = yaml.safe_load(config_text)
    cfg.setdefault('global', {}).update(scrape_interval='1s', scrape_timeout='1s',
                                        evaluation_interval='1s')
    for job in cfg.get('scrape_configs') or []:
        for key in ('scrape_interval', 'scrape_timeout'):
            if key in job:
                job[key] = '1s'
    return yaml.safe_dump(cfg, sort_keys=False)


def write(path, text):
    """Writes atomically (a temporary name the file-SD globs do not match, then a rename)."""
    tmp = os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + '.tmp')
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def plugin():
    return VARIANTS[VARIANT].require().plugin


def by_instance(result):
    return {r['metric']['instance']: r['metric'] for r in result}


def series(prom, query, n):
    """Waits until `query` answers n series; returns the result."""
    def ok():
        res = prom.query(query)
        return len(res) == n and res
    return prom.wait('%d series of %s' % (n, query), ok)


def up_instances(prom, n, query='up'):
    """Waits until `query` has n series, each with the value 1; returns them by instance."""
    return by_instance(series(prom, '%s == 1' % query, n))


@pytest.fixture
def tmp(tmpdir_path):
    return lambda: tempfile.mkdtemp(dir=tmpdir_path)


@pytest.fixture
def ini_uwsgi(tmp):
    """ini_uwsgi(text) starts uWSGI with --ini holding text; stopped by pid at teardown."""
    started = []

    def _start(text):
        d = tmp()
        path = write(os.path.join(d, 'uwsgi.ini'), text)
        u = Uwsgi(VARIANTS[VARIANT].require(), ['--ini', path], d)
        started.append(u)
        return u.start()

    yield _start
    for u in started:
        u.teardown()


@pytest.fixture
def prometheus(tmp):
    """prometheus(config_text, args=()) starts a real Prometheus; stopped by pid at teardown."""
    started = []

    def _start(config, args=()):
        p = Prometheus(tmp(), config, args)
        started.append(p)
        return p.start()

    yield _start
    for p in reversed(started):  # a remote-writing one before its receiver
        p.stop()


def local_ini(text, wsgi_file, *pairs):
    """A uWSGI ini of the doc with the built plugin, the test app, and the `pairs` replaced."""
    return subst(text, (PLUGIN_LINE, 'need-plugin = ' + plugin()),
                 ('wsgi-file = ' + wsgi_file, 'wsgi-file = ' + APP), *pairs)


def instance_ini(http, metrics):
    """The `uwsgi-instance` recipe on 127.0.0.1, allowing only 127.0.0.1 to scrape."""
    return local_ini(recipe('uwsgi-instance'), '/srv/app/app.py',
                     ('http-socket = :8080', 'http-socket = 127.0.0.1:%d' % http),
                     ('prometheus-server = :9117', 'prometheus-server = 127.0.0.1:%d' % metrics),
                     ('prometheus-allow = 10.0.0.5/32', 'prometheus-allow = 127.0.0.1/32'))


def two_plain_instances(start_uwsgi):
    """Two uWSGI with a dedicated server each; their metrics addresses."""
    return [server_addrs(start_uwsgi(VARIANT, ['--prometheus-server', '127.0.0.1:0']))[0]
            for _ in range(2)]


# ---------------------------------------------------------------------------------------------
# Syntax: promtool on every Prometheus configuration and rule file of the doc.

def k8s_as_file_sd(config_text, sd_file):
    """The pod-annotation configuration with Kubernetes discovery swapped for a file-SD list."""
    cfg = yaml.safe_load(config_text)
    (job,) = cfg['scrape_configs']
    assert job.pop('kubernetes_sd_configs') == [{'role': 'pod'}]
    job['file_sd_configs'] = [{'files': [sd_file]}]
    return yaml.safe_dump(cfg, sort_keys=False)


def localise_paths(text, d):
    return text.replace('/etc/prometheus/', d + '/')


def promtool(*args):
    return subprocess.run([os.environ.get('PROMTOOL', 'promtool')] + list(args),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('name', sorted(n for n in RECIPES if n.startswith('prometheus-')))
def test_promtool_checks_config(name, tmp):
    d = tmp()
    # Target and rule files where the configurations look for them, so promtool reads them too.
    os.makedirs(os.path.join(d, 'targets'))
    os.makedirs(os.path.join(d, 'rules'))
    write(os.path.join(d, 'targets', 'uwsgi-shop.json'), recipe('targets-json'))
    write(os.path.join(d, 'targets', 'uwsgi-blog.yml'), recipe('targets-yaml'))
    write(os.path.join(d, 'targets', 'uwsgi-vassals.json'), '[{"targets": ["127.0.0.1:9201"]}]')
    write(os.path.join(d, 'rules', 'uwsgi.yml'), recipe('rules-uwsgi'))
    text = localise_paths(recipe(name), d)
    r = promtool('check', 'config', write(os.path.join(d, 'prometheus.yml'), text))
    if name == 'prometheus-k8s-annotations' and r.returncode != 0:
        # Debian's build has no Kubernetes discovery: that, and only that, may fail.
        assert 'field kubernetes_sd_configs not found' in r.stdout + r.stderr, r
        text = k8s_as_file_sd(text, os.path.join(d, 'targets', '*.json'))
        r = promtool('check', 'config', write(os.path.join(d, 'prometheus.yml'), text))
    assert r.returncode == 0, (r.stdout, r.stderr)
    if name == 'prometheus-file-sd':
        # promtool read the target files too: a bad one fails it.
        write(os.path.join(d, 'targets', 'uwsgi-bad.json'),
              '[{"targets": ["x:1"], "labels": {"0": "y"}}]')
        r = promtool('check', 'config', os.path.join(d, 'prometheus.yml'))
        assert r.returncode != 0 and 'checking SD file' in r.stdout + r.stderr, r
    if name == 'prometheus-site':
        assert '2 rules found' in r.stdout, r.stdout


def test_promtool_checks_rules(tmp):
    r = promtool('check', 'rules', write(os.path.join(tmp(), 'uwsgi.yml'), recipe('rules-uwsgi')))
    assert r.returncode == 0 and '2 rules found' in r.stdout, (r.stdout, r.stderr)


# ---------------------------------------------------------------------------------------------
# Tried for real.

def test_static_config_two_instances(ini_uwsgi, prometheus):
    """Two instances from the `uwsgi-instance` ini, scraped through --prometheus-server by the
    `static_configs` job: `up` is 1 for both, their plugin metrics carry the static label."""
    addrs = []
    for _ in range(2):
        http, metrics = free_port(), free_port()
        u = ini_uwsgi(instance_ini(http, metrics))
        assert server_addrs(u) == ['127.0.0.1:%d' % metrics]
        assert u.get('/', port=http)[0] == 200
        addrs.append('127.0.0.1:%d' % metrics)
    prom = prometheus(fast(subst(recipe('prometheus-static'),
                                 ('app1.example.com:9117', addrs[0]),
                                 ('app2.example.com:9117', addrs[1]))))
    up = up_instances(prom, 2, 'up{job="uwsgi"}')
    assert sorted(up) == sorted(addrs)
    hist = prom.wait('the request histogram of both', lambda: by_instance(prom.query(
        'uwsgi_request_duration_seconds_count{job="uwsgi",env="prod"} > 0')))
    assert sorted(hist) == sorted(addrs)
    rate = prom.query('sum by (instance) (uwsgi_requests_total{job="uwsgi"})')
    assert sorted(by_instance(rate)) == sorted(addrs)


def test_file_sd_labels_and_rewrite(start_uwsgi, prometheus, tmp):
    """The `file_sd_configs` job reads the JSON target file (labels on every series); a rewritten
    JSON file and a new YAML file add targets, picked up without a restart."""
    a, b = two_plain_instances(start_uwsgi)
    c = server_addrs(start_uwsgi(VARIANT, ['--prometheus-server', '127.0.0.1:0']))[0]
    d = tmp()
    targets = os.path.join(d, 'targets')
    os.makedirs(targets)
    prom_cfg = subst(recipe('prometheus-file-sd'), ('/etc/prometheus/targets/', targets + '/'))
    shop = os.path.join(targets, 'uwsgi-shop.json')
    full = subst(recipe('targets-json'), ('app1.example.com:9117', a), ('app2.example.com:9117', b))
    first = json.loads(full)
    first[0]['targets'] = first[0]['targets'][:1]
    write(shop, json.dumps(first))
    prom = prometheus(fast(prom_cfg))
    up = up_instances(prom, 1)
    assert up[a]['env'] == 'prod' and up[a]['service'] == 'shop' and up[a]['job'] == 'uwsgi', up
    assert prom.query('uwsgi_requests_total{instance="%s",env="prod",service="shop"}' % a)
    write(shop, full)
    write(os.path.join(targets, 'uwsgi-blog.yml'),
          subst(recipe('targets-yaml'), ('app3.example.com:9117', c)))
    up = up_instances(prom, 3)
    assert {i: (m['env'], m['service']) for i, m in up.items()} == {
        a: ('prod', 'shop'), b: ('prod', 'shop'), c: ('staging', 'blog')}
    got = by_instance(series(prom, 'uwsgi_requests_total', 3))
    assert got[c]['service'] == 'blog' and got[a]['service'] == 'shop'


def test_constant_labels_two_instances_on_one_host(ini_uwsgi, prometheus):
    """Two instances from the `labels-instance` ini on one host, the `prometheus-labels` job:
    `up` for both, and (with --prometheus-label) their series by the `service` label."""
    ports = {}
    for app, metrics in (('shop', '127.0.0.1:9201'), ('blog', '127.0.0.1:9202')):
        ports[metrics] = '127.0.0.1:%d' % free_port()
        ini_uwsgi(local_ini(recipe('labels-instance'), '/srv/shop/app.py',
                            ('127.0.0.1:8001', '127.0.0.1:%d' % free_port()),
                            ('127.0.0.1:9201', ports[metrics]),
                            ('service=shop', 'service=' + app)))
    prom = prometheus(fast(subst(recipe('prometheus-labels'), *ports.items())))
    up = up_instances(prom, 2, 'up{job="uwsgi"}')
    assert sorted(up) == sorted(ports.values())
    res = series(prom, 'sum by (service, team) (uwsgi_requests_total)', 2)
    assert sorted((r['metric']['service'], r['metric']['team']) for r in res) == [
        ('blog', 'web'), ('shop', 'web')]


def requests_total(addr):
    status, _, body = get(addr)
    assert status == 200, body
    found = [v for (name, _), v in samples(body).items() if name == 'uwsgi_requests_total']
    assert len(found) == 1, found
    return found[0]


def test_emperor_one_socket_and_port_per_vassal(prometheus, tmp):
    """A real `uwsgi --emperor DIR` with two vassals from the `vassal` recipe: `%n` gives each
    its own UNIX socket serving its own metrics; the `vassal-targets` script lists their TCP
    ports for the `prometheus-vassals` job, which scrapes both. SIGINT to the Emperor stops
    every vassal and removes the sockets."""
    d = tmp()
    vassals, run = os.path.join(d, 'vassals'), os.path.join(d, 'run')
    os.makedirs(vassals)
    os.makedirs(run)
    http, tcp = {}, {}
    for name in ('shop', 'blog'):
        http[name], tcp[name] = free_port(), '127.0.0.1:%d' % free_port()
        write(os.path.join(vassals, name + '.ini'), local_ini(
            recipe('vassal'), '/srv/shop/app.py',
            ('http-socket = 127.0.0.1:8001', 'http-socket = 127.0.0.1:%d' % http[name]),
            ('prometheus-server = 127.0.0.1:9201', 'prometheus-server = ' + tcp[name]),
            ('/run/uwsgi/', run + '/')))
    sock = {name: os.path.join(run, 'metrics-%s.sock' % name) for name in http}
    log = open(os.path.join(d, 'emperor.log'), 'wb')
    emperor = subprocess.Popen([VARIANTS[VARIANT].require().bin, '--emperor', vassals],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=d, start_new_session=True)
    below = set()
    try:
        def emperor_log():
            with open(log.name, 'rb') as f:
                return f.read().decode('utf-8', 'replace')

        deadline = time.time() + 30
        while not all(os.path.exists(s) for s in sock.values()):
            assert emperor.poll() is None and time.time() < deadline, emperor_log()[-3000:]
            time.sleep(0.1)
        # Each socket serves its own vassal: 3 requests to shop, none to blog.
        for _ in range(3):
            with urllib.request.urlopen('http://127.0.0.1:%d/' % http['shop'], timeout=10) as r:
                assert r.status == 200
        deadline = time.time() + 10
        while requests_total(sock['shop']) != 3:  # uWSGI's aggregate: refreshed every second
            assert time.time() < deadline, requests_total(sock['shop'])
            time.sleep(0.2)
        assert requests_total(sock['blog']) == 0
        assert requests_total(tcp['shop']) == 3 and requests_total(tcp['blog']) == 0

        targets = os.path.join(d, 'uwsgi-vassals.json')
        script = write(os.path.join(d, 'uwsgi-vassal-targets'), recipe('vassal-targets'))
        subprocess.run([sys.executable, script, vassals, targets], check=True, timeout=30)
        with open(targets) as f:
            assert json.load(f) == [{'targets': [tcp['blog'], tcp['shop']]}]
        prom = prometheus(fast(subst(recipe('prometheus-vassals'),
                                     ('/etc/prometheus/targets/uwsgi-vassals.json', targets))))
        up = up_instances(prom, 2, 'up{job="uwsgi"}')
        assert sorted(up) == sorted(tcp.values())
        count = series(prom, 'uwsgi_requests_total', 2)
        assert {r['metric']['instance']: r['value'][1] for r in count} == {
            tcp['shop']: '3', tcp['blog']: '0'}
        for name in sock:
            body = get(sock[name])[2].decode()
            lines = [line for line in body.splitlines() if line and not line.startswith('#')]
            assert lines and all('vassal="%s"' % name in line for line in lines), lines[:5]
        assert {r['metric']['vassal']: r['value'][1] for r in prom.query(
            'uwsgi_requests_total')} == {'shop': '3', 'blog': '0'}

        below = descendants(emperor.pid)  # the vassals' masters and their workers
        cmdlines = []
        for pid in below:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmdlines.append(f.read().replace(b'\0', b' ').decode())
        for name in sock:
            assert any('%s.ini' % name in c for c in cmdlines), cmdlines
        emperor.send_signal(signal.SIGINT)
        assert emperor.wait(30) is not None
        deadline = time.time() + 10
        while [p for p in below if alive(p)] and time.time() < deadline:
            time.sleep(0.1)
        assert not [p for p in below if alive(p)], 'vassal processes outlived the Emperor'
        assert not [s for s in sock.values() if os.path.exists(s)]
        assert 'The Emperor is buried' in emperor_log()
    finally:
        # The Emperor leads a process group of its own: what it forked, and nothing else.
        for pid in below | descendants(emperor.pid):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(emperor.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if emperor.poll() is None:
            emperor.wait(5)
        log.close()


def test_federation(start_uwsgi, prometheus, tmp):
    """A site Prometheus (`prometheus-site`, with the `rules-uwsgi` recording rules) scrapes two
    instances; a global one (`prometheus-federate`) gets their raw series, with their own job
    and instance labels and the site's external label, and the aggregates."""
    a, b = two_plain_instances(start_uwsgi)
    rules = write(os.path.join(tmp(), 'uwsgi.yml'), recipe('rules-uwsgi'))
    site = prometheus(fast(subst(recipe('prometheus-site'),
                                 ('/etc/prometheus/rules/uwsgi.yml', rules),
                                 ('app1.example.com:9117', a), ('app2.example.com:9117', b))))
    top = prometheus(fast(subst(recipe('prometheus-federate'),
                                ('prometheus-dc1.example.com:9090', site.addr))))
    raw = by_instance(series(top, 'uwsgi_requests_total{job="uwsgi",site="dc1"}', 2))
    assert sorted(raw) == sorted([a, b])
    assert not top.query('{exported_job!=""}') and not top.query('{exported_instance!=""}')
    agg = top.wait('the recorded aggregates', lambda: top.query(
        'job:uwsgi_requests:rate5m{job="uwsgi",site="dc1"}') and top.query(
        'job:uwsgi_busy_workers:sum{job="uwsgi",site="dc1"}'))
    assert len(agg) == 1
    # The global Prometheus' own target is the site, under the job `federate`.
    assert [t['labels']['job'] for t in top.targets()] == ['federate']


def test_remote_write(start_uwsgi, prometheus):
    """A site Prometheus (`prometheus-remote-write`) scrapes two instances and writes them to a
    second Prometheus started with --web.enable-remote-write-receiver, which has no scrape
    target of its own and answers with the sites' series."""
    a, b = two_plain_instances(start_uwsgi)
    central = prometheus('global: {evaluation_interval: 1s}\n',
                         ['--web.enable-remote-write-receiver'])
    prometheus(fast(subst(recipe('prometheus-remote-write'),
                          ('app1.example.com:9117', a), ('app2.example.com:9117', b),
                          ('central.example.com:9090', central.addr))))
    got = by_instance(series(central, 'uwsgi_requests_total{job="uwsgi",site="dc1"}', 2))
    assert sorted(got) == sorted([a, b])
    assert central.targets() == []
    assert len(central.query('up{job="uwsgi",site="dc1"} == 1')) == 2


# ---------------------------------------------------------------------------------------------
# Kubernetes: the annotation rules for real on simulated discovery labels; the rest syntax.

def k8s_docs(text=None):
    return {d['kind']: d for d in yaml.safe_load_all(text or recipe('k8s-app'))}


def sanitize(name):
    return re.sub(r'[^a-zA-Z0-9_]', '_', name)


def pod_targets(deploy, pod_ip, pod_name, annotated=True):
    """The targets Prometheus' pod discovery makes of one pod of the Deployment: one per
    container port, with the __meta_kubernetes_* labels the relabel rules read."""
    tpl = deploy['spec']['template']
    out = []
    for c in tpl['spec']['containers']:
        for p in c['ports']:
            labels = {'__meta_kubernetes_namespace': deploy['metadata']['namespace'],
                      '__meta_kubernetes_pod_name': pod_name,
                      '__meta_kubernetes_pod_ip': pod_ip,
                      '__meta_kubernetes_pod_container_name': c['name'],
                      '__meta_kubernetes_pod_container_port_name': p['name'],
                      '__meta_kubernetes_pod_container_port_number': str(p['containerPort'])}
            for k, v in tpl['metadata']['labels'].items():
                labels['__meta_kubernetes_pod_label_' + sanitize(k)] = v
            for k, v in (tpl['metadata']['annotations'] if annotated else {}).items():
                labels['__meta_kubernetes_pod_annotation_' + sanitize(k)] = v
                labels['__meta_kubernetes_pod_annotationpresent_' + sanitize(k)] = 'true'
            out.append({'targets': ['%s:%d' % (pod_ip, p['containerPort'])], 'labels': labels})
    return out


def test_kubernetes_pod_annotations(ini_uwsgi, prometheus, tmp):
    """The uWSGI ini of the `k8s-app` ConfigMap runs; the relabel rules of
    `prometheus-k8s-annotations`, fed the discovery labels of an annotated pod of the
    Deployment (two container ports) and of an unannotated pod, scrape the annotated metrics
    port once, with namespace and pod labels, and drop the other pod."""
    http, metrics = free_port(), free_port()
    app = subst(recipe('k8s-app'),
                ('http-socket = :8080', 'http-socket = 127.0.0.1:8080'),
                ('prometheus-server = :9117', 'prometheus-server = 127.0.0.1:9117'),
                ('8080', str(http)), ('9117', str(metrics)))
    docs = k8s_docs(app)
    u = ini_uwsgi(local_ini(docs['ConfigMap']['data']['uwsgi.ini'], '/srv/app/app.py'))
    assert server_addrs(u) == ['127.0.0.1:%d' % metrics]
    d = tmp()
    sd = os.path.join(d, 'pods.json')
    write(sd, json.dumps(pod_targets(docs['Deployment'], '127.0.0.1', 'shop-7d4b9c-x2x9q')
                         + pod_targets(docs['Deployment'], '127.0.0.2', 'other-5f6d7-abcde',
                                       annotated=False)))
    prom = prometheus(fast(k8s_as_file_sd(recipe('prometheus-k8s-annotations'), sd)))
    up = up_instances(prom, 1, 'up{job="kubernetes-pods"}')
    assert list(up) == ['127.0.0.1:%d' % metrics]
    (t,) = prom.targets()
    assert t['labels'] == {'instance': '127.0.0.1:%d' % metrics, 'job': 'kubernetes-pods',
                           'namespace': 'shop', 'pod': 'shop-7d4b9c-x2x9q'}, t
    assert t['scrapeUrl'] == 'http://127.0.0.1:%d/metrics' % metrics
    # Two container ports of the annotated pod made two identical targets, kept once; the two
    # of the unannotated pod were dropped.
    dropped = prom.api('targets', state='dropped')['droppedTargets']
    assert len(dropped) == 2 and all(x['discoveredLabels']['__meta_kubernetes_pod_name']
                                     == 'other-5f6d7-abcde' for x in dropped), dropped
    assert prom.wait('the plugin metrics', lambda: prom.query(
        'uwsgi_requests_total{namespace="shop",pod="shop-7d4b9c-x2x9q"}'))
    # The container's probes, asked of the running uWSGI on the port they name.
    (container,) = docs['Deployment']['spec']['template']['spec']['containers']
    ports = {p['name']: p['containerPort'] for p in container['ports']}
    for kind, body in [('livenessProbe', b'ok\n'), ('readinessProbe', b'ready\n')]:
        http_get = container[kind]['httpGet']
        assert ports[http_get['port']] == metrics
        assert get('127.0.0.1:%d' % metrics, http_get['path'])[::2] == (200, body), kind


def test_kubernetes_manifests_consistent():
    """Syntax only (no cluster here): the manifests parse, and the names that tie them together
    agree: Service and Deployment select the pods, the monitors name ports that exist, the
    annotations name the port uWSGI's --prometheus-server listens on."""
    docs = k8s_docs()
    assert sorted(docs) == ['ConfigMap', 'Deployment', 'Service']
    cm, deploy, svc = docs['ConfigMap'], docs['Deployment'], docs['Service']
    assert (cm['apiVersion'], deploy['apiVersion'], svc['apiVersion']) == ('v1', 'apps/v1', 'v1')
    ns = {d['metadata']['namespace'] for d in docs.values()}
    assert ns == {'shop'}
    tpl = deploy['spec']['template']
    pod_labels = tpl['metadata']['labels']
    (container,) = tpl['spec']['containers']
    ports = {p['name']: p['containerPort'] for p in container['ports']}
    assert deploy['spec']['selector']['matchLabels'].items() <= pod_labels.items()
    assert svc['spec']['selector'].items() <= pod_labels.items()
    assert {p['name']: p['targetPort'] for p in svc['spec']['ports']} == {'http': 'http',
                                                                         'metrics': 'metrics'}
    # The ini in the ConfigMap is the file the container runs, and listens on the named ports.
    (mount,) = container['volumeMounts']
    (vol,) = tpl['spec']['volumes']
    assert vol['configMap']['name'] == cm['metadata']['name'] and vol['name'] == mount['name']
    (key,) = cm['data']
    assert container['args'][-1] == mount['mountPath'] + '/' + key
    ini = cm['data'][key]
    assert re.search(r'^prometheus-server = :%d$' % ports['metrics'], ini, re.M), ini
    assert re.search(r'^http-socket = :%d$' % ports['http'], ini, re.M), ini
    assert re.search(r'^die-on-term = true$', ini, re.M), ini
    # The probes: on the metrics port, by name; /healthz for liveness, /readyz for readiness.
    assert container['livenessProbe']['httpGet'] == {'path': '/healthz', 'port': 'metrics'}
    assert container['readinessProbe']['httpGet'] == {'path': '/readyz', 'port': 'metrics'}
    for kind in ('livenessProbe', 'readinessProbe'):
        probe = container[kind]
        assert probe['timeoutSeconds'] < probe['periodSeconds'], probe
    ann = tpl['metadata']['annotations']
    assert ann == {'prometheus.io/scrape': 'true', 'prometheus.io/port': str(ports['metrics']),
                   'prometheus.io/path': '/metrics'}
    # ServiceMonitor: selects the Service by label, a Service port by name.
    sm = yaml.safe_load(recipe('k8s-servicemonitor'))
    assert (sm['apiVersion'], sm['kind']) == ('monitoring.coreos.com/v1', 'ServiceMonitor')
    assert sm['metadata']['namespace'] == 'shop'
    assert sm['spec']['selector']['matchLabels'].items() <= svc['metadata']['labels'].items()
    (ep,) = sm['spec']['endpoints']
    assert ep['port'] in {p['name'] for p in svc['spec']['ports']}
    assert ep['path'] == '/metrics'
    # PodMonitor: selects the pods by label, a container port by name.
    pm = yaml.safe_load(recipe('k8s-podmonitor'))
    assert (pm['apiVersion'], pm['kind']) == ('monitoring.coreos.com/v1', 'PodMonitor')
    assert pm['metadata']['namespace'] == 'shop'
    assert pm['spec']['selector']['matchLabels'].items() <= pod_labels.items()
    (pep,) = pm['spec']['podMetricsEndpoints']
    assert pep['port'] in ports and pep['path'] == '/metrics'
    assert sm['metadata']['labels'] == pm['metadata']['labels']


def test_every_recipe_is_used():
    """Each tagged block is read by a test above, or by t/test_packaging.py for the container
    recipe (a new recipe needs a test)."""
    source = ''
    for name in (__file__, os.path.join(ROOT, 't', 'test_packaging.py')):
        with open(name) as f:
            source += f.read()
    unused = [n for n in RECIPES if "'%s'" % n not in source and not n.startswith('prometheus-')]
    assert not unused, unused
    assert {lang for lang, _ in RECIPES.values()} <= {'ini', 'yaml', 'json', 'python',
                                                      'dockerfile'}
