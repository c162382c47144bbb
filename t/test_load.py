"""Issue 2: the plugin loads into each real uWSGI it was built for, and refuses the others."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import MAIN_VARIANTS, ROOT, VARIANTS
from helpers import head_commit, workspace_version

STARTUP = re.compile(r'\[metrics_prometheus\] metrics_prometheus (\S+) \(commit (\w+)\) '
                     r'loaded into uWSGI (\S+); front ends: (.*)')


@pytest.mark.parametrize('variant', MAIN_VARIANTS)
def test_loads_and_logs_one_startup_line(start_uwsgi, variant):
    u = start_uwsgi(variant)
    log = u.log()
    lines = STARTUP.findall(log)
    assert len(lines) == 1, log
    plugin_version, commit, uwsgi_version, front_ends = lines[0]
    assert plugin_version == workspace_version()
    # build.rs records the checkout's commit; CI's clean clone is a git checkout.
    assert commit == head_commit()
    assert uwsgi_version == subprocess.check_output([VARIANTS[variant].bin, '--version'],
                                                    text=True).strip()
    if VARIANTS[variant].routing:
        assert 'route action prometheus-metrics available' in front_ends
    else:
        assert 'route action unavailable (uWSGI built without routing)' in front_ends
    assert 'prometheus-server off' in front_ends
    # Loading the plugin turns on the metrics subsystem and the master, as --enable-metrics does.
    assert re.search(r'initialized \d+ metrics', log), log
    assert 'spawned uWSGI master process' in log
    assert 'refusing' not in log
    status, _, body = u.get('/')
    assert status == 200 and body == b'hello from /\n'


MISMATCHES = [('debian', 'pip-routing'), ('pip-routing', 'debian'),
              ('pip-routing', 'pip-norouting'), ('pip-norouting', 'pip-routing')]


@pytest.mark.parametrize('built_for,loaded_into', MISMATCHES)
def test_refuses_a_plugin_built_for_another_binary(start_uwsgi, built_for, loaded_into):
    plugin = VARIANTS[built_for].require().plugin
    u = start_uwsgi(loaded_into, plugin=plugin)
    log = u.log()
    want = 'built for uWSGI %s but loaded into uWSGI %s' % (
        subprocess.check_output([VARIANTS[built_for].bin, '--version'], text=True).strip(),
        subprocess.check_output([VARIANTS[loaded_into].bin, '--version'], text=True).strip())
    refusals = [line for line in log.splitlines() if 'refusing to load' in line]
    assert len(refusals) == 1, log
    assert want in refusals[0] and 'uwsgi --build-plugin' in refusals[0], refusals[0]
    # uWSGI drops the plugin and serves the app without it.
    assert not STARTUP.search(log)
    status, _, _ = u.get('/')
    assert status == 200


@pytest.mark.parametrize('built_for,loaded_into', MISMATCHES[:2])
def test_need_plugin_mismatch_stops_startup(start_uwsgi, built_for, loaded_into):
    plugin = VARIANTS[built_for].require().plugin
    u = start_uwsgi(loaded_into, plugin=plugin, need=True, wait_for=None)
    rc = u.wait_exit()
    assert rc != 0
    assert 'refusing to load' in u.log()
    assert 'unable to load plugin' in u.log()


@pytest.mark.parametrize('args,option', [
    (['--prometheus-prefix', '9bad'], 'prometheus-prefix'),
    (['--prometheus-prefix', 'a-b'], 'prometheus-prefix'),
    (['--prometheus-server', 'nonsense'], 'prometheus-server'),
    (['--prometheus-server', '127.0.0.1:70000'], 'prometheus-server'),
])
def test_bad_option_value_stops_startup_naming_the_option(start_uwsgi, args, option):
    u = start_uwsgi('pip-routing', args, wait_for=None)
    rc = u.wait_exit()
    assert rc != 0, u.log()
    assert re.search(r'\[metrics_prometheus\] invalid value for --%s: ' % option, u.log()), u.log()


def test_bad_option_in_ini_file_stops_startup(start_uwsgi, tmpdir_path):
    ini = os.path.join(tmpdir_path, 'bad.ini')
    with open(ini, 'w') as f:
        f.write('[uwsgi]\nprometheus-prefix = has space\n')
    u = start_uwsgi('debian', ['--ini', ini], wait_for=None)
    assert u.wait_exit() != 0
    assert 'invalid value for --prometheus-prefix' in u.log()


def test_build_plugin_path(start_uwsgi, tmpdir_path):
    """`uwsgi --build-plugin <src>` (uwsgiplugin.py driving cargo) gives a loadable plugin."""
    v = VARIANTS['pip-routing'].require()
    env = dict(os.environ, PYTHON=shutil.which('python3') or '/usr/bin/python3')
    r = subprocess.run([v.bin, '--build-plugin', ROOT], cwd=tmpdir_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    built = os.path.join(tmpdir_path, 'metrics_prometheus_plugin.so')
    assert os.path.exists(built), r.stdout + r.stderr
    u = start_uwsgi('pip-routing', plugin=built, need=True)
    assert len(STARTUP.findall(u.log())) == 1, u.log()
