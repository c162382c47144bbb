"""Issue 22: the README's Flask and Django snippets that set the `route` logvar ("Latency by
route"), taken from README.md as they stand and run in real uWSGI (pip 2.0.31 with routing)
with real Flask and Django (installed into that uWSGI's venv by t/setup.sh).

With --prometheus-route-label and a --prometheus-route rule for /api/, each framework's
template names the requests it routed (the logvar wins over the rule), an unknown /api/ URL
falls to the rule and any other unknown URL to `other`, with exact counts.
"""
import os
import re
import subprocess
import time

from conftest import ROOT, VARIANTS
from helpers import get, server_addrs
from promcheck import samples

ARGS = ['--prometheus-server', '127.0.0.1:0', '--prometheus-route-label',
        '--prometheus-route', '^/api/ /api-rule']
# path -> how many requests; the expected series follow from the framework's template.
REQUESTS = {'/api/users/1': 1, '/api/users/22': 1, '/api/users/333': 1, '/api/nope': 1,
            '/nope': 2}

FLASK_APP = '''from flask import Flask

app = Flask(__name__)


@app.route('/api/users/<int:id>')
def user(id):
    return 'user %d\\n' % id


'''

DJANGO_APP = '''import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from django.conf import settings

settings.configure(DEBUG=False, SECRET_KEY='test', ALLOWED_HOSTS=['*'], ROOT_URLCONF='djurls',
                   MIDDLEWARE=['routemw.UwsgiRoute'])
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
'''

DJANGO_URLS = '''from django.http import HttpResponse
from django.urls import path


def user(request, id):
    return HttpResponse('user %d\\n' % id)


urlpatterns = [path('api/users/<int:id>', user)]
'''


def readme_snippet(framework):
    """The python block of README.md's "Latency by route" that imports `framework`."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        readme = f.read()
    section = readme.split('\n### Latency by route\n', 1)[1].split('\n### ', 1)[0]
    blocks = [b for b in re.findall(r'```python\n(.*?)```', section, re.S)
              if re.search(r'^from %s\b' % framework, b, re.M)]
    assert len(blocks) == 1, (framework, blocks)
    return blocks[0]


def need_module(module):
    """The pip uWSGI's embedded Python imports from its venv: the framework must be there."""
    python = os.path.join(os.path.dirname(VARIANTS['pip-routing'].bin), 'python')
    r = subprocess.run([python, '-c', 'import ' + module], capture_output=True, text=True)
    assert r.returncode == 0, ('%s missing in %s: run `bash t/setup.sh`\n%s'
                               % (module, python, r.stderr))


def scrape(addr):
    """One scrape: ({(route, code): count} of uwsgi_request_duration_seconds_count, over the
    methods; every sample)."""
    status, _, body = get(addr)
    assert status == 200
    every = samples(body)
    counts = {}
    for (name, labels), value in every.items():
        if name == 'uwsgi_request_duration_seconds_count':
            labels = dict(labels)
            key = (labels.get('route'), labels['code'])
            counts[key] = counts.get(key, 0) + value
    return counts, every


def run_app(start_uwsgi, wsgi_file, template):
    u = start_uwsgi('pip-routing', ['--wsgi-file', wsgi_file] + ARGS)
    addr = server_addrs(u)[0]
    for path, n in REQUESTS.items():
        for _ in range(n):
            status, _, body = u.get(path)
            assert status == (200 if path.startswith('/api/users/') else 404), (path, body)
    want = {(template, '2xx'): 3, ('/api-rule', '4xx'): 1, ('other', '4xx'): 2}
    # Recorded by the after-request hook, once the response is sent: poll, with a deadline.
    deadline = time.time() + 10
    while True:
        got, every = scrape(addr)
        if got == want or time.time() > deadline:
            break
        time.sleep(0.1)
    assert got == want, (got, u.log()[-3000:])
    assert every[('uwsgi_route_overflow_total', frozenset())] == 0


def test_flask_snippet(start_uwsgi, tmpdir_path):
    need_module('flask')
    app = os.path.join(tmpdir_path, 'flask_app.py')
    with open(app, 'w') as f:
        f.write(FLASK_APP + readme_snippet('flask') + '\napplication = app\n')
    run_app(start_uwsgi, app, '/api/users/<int:id>')


def test_django_snippet(start_uwsgi, tmpdir_path):
    need_module('django')
    for name, text in (('django_app.py', DJANGO_APP), ('djurls.py', DJANGO_URLS),
                       ('routemw.py', readme_snippet('django'))):
        with open(os.path.join(tmpdir_path, name), 'w') as f:
            f.write(text)
    run_app(start_uwsgi, os.path.join(tmpdir_path, 'django_app.py'), 'api/users/<int:id>')

