"""The memcheck wrapper of t/conftest.py against real uWSGI, and a workload for valgrind runs.

The wrapper tests need no valgrind: a stand-in wrapper writes saved logs of t/data/valgrind/
(with its own pid as the master's) into `{logdir}` and execs uWSGI, so the verdict at stop()
is known in advance. The workload test is an ordinary test that also holds under
MP_VALGRIND=1 (no tight timing): t/valgrind.sh runs it.
"""
import concurrent.futures
import os
import re
import sys
import tempfile
import time

import pytest

from conftest import APP, VARIANTS, Uwsgi, scaled
from helpers import get, server_addrs
from promcheck import OM_ACCEPT, OM_CT, TEXT_CT, samples

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, 'data', 'valgrind')

# Copies DIR's vg.<pid>.log files into LOGDIR, as if this process (about to exec uWSGI, so the
# same pid) were their master with `as-master`, unchanged with `as-is`, then execs the command
# after `--`.
STAND_IN = r'''
import os, re, sys
src, logdir, mode = sys.argv[1:4]
cmd = sys.argv[sys.argv.index('--') + 1:]
logs = {}
for name in os.listdir(src):
    m = re.match(r'vg\.(\d+)\.log$', name)
    if m:
        with open(os.path.join(src, name)) as f:
            logs[m.group(1)] = f.read()
parents = {pid: re.search(r'Parent PID: (\d+)', t).group(1) for pid, t in logs.items()}
(root,) = [pid for pid, parent in parents.items() if parent not in logs]
me = str(os.getpid()) if mode == 'as-master' else root
for pid, text in logs.items():
    text = text.replace('Parent PID: %s\n' % root, 'Parent PID: %s\n' % me)
    if pid == root:
        pid, text = me, text.replace('==%s==' % root, '==%s==' % me)
    with open(os.path.join(logdir, 'vg.%s.log' % pid), 'w') as f:
        f.write(text)
os.execv(cmd[0], cmd)
'''


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / 'stand_in.py'
    script.write_text(STAND_IN)
    started = []

    def _start(logset, mode='as-master'):
        v = VARIANTS['pip-routing'].require()
        d = tempfile.mkdtemp(dir=tmp_path)
        wrapper = [sys.executable, str(script), os.path.join(DATA, logset), '{logdir}', mode, '--']
        u = Uwsgi(v, ['--need-plugin', v.plugin, '--http-socket', '127.0.0.1:0',
                      '--wsgi-file', APP], d, wrapper=wrapper)
        started.append(u)
        u.start()
        assert u.proc.poll() is None
        return u

    yield _start
    for u in started:
        try:
            u.stop()
        except AssertionError:
            pass


def test_clean_logs_pass_and_are_kept_with_the_uwsgi_log(stand_in):
    u = stand_in('route')
    master = u.proc.pid
    u.stop()  # no exception: clean
    assert u.memchecked
    names = sorted(os.listdir(u.logdir))
    assert names == sorted(['uwsgi.log', 'vg.%d.log' % master, 'vg.10966.log'])
    assert 'spawned uWSGI master process (pid: %d)' % master in \
        open(os.path.join(u.logdir, 'uwsgi.log')).read()


def test_a_plugin_leak_fails_at_stop_with_the_record(stand_in):
    u = stand_in('plugin-leak-deep')
    with pytest.raises(AssertionError) as e:
        u.stop()
    msg = str(e.value)
    assert msg.startswith('memcheck of %s' % u.variant.bin)
    assert '1 unique contexts (1 occurrences) attributable to the plugin' in msg
    assert '65 bytes in 1 blocks are definitely lost' in msg
    assert 'metrics_prometheus::plugin::post_init (src/plugin.rs:199)' in msg
    assert u.proc.poll() is not None  # stopped all the same
    u.stop()  # judged once


def test_no_plugin_frame_fails_at_stop_as_inconclusive(stand_in):
    u = stand_in('no-plugin')
    with pytest.raises(AssertionError, match='POSITIVE CONTROL FAILED'):
        u.stop()


def test_a_killed_worker_is_only_a_warning(stand_in):
    u = stand_in('killed-worker')
    with pytest.warns(UserWarning, match=r'1 forked process\(es\) .*\(killed\): 11775$'):
        u.stop()


def test_logs_without_the_masters_fail(stand_in):
    u = stand_in('route', 'as-is')
    with pytest.raises(AssertionError, match=r'no log of the master \(pid %d\)' % u.proc.pid):
        u.stop()


def test_a_wrapper_that_writes_no_log_fails(tmp_path):
    v = VARIANTS['pip-routing'].require()
    u = Uwsgi(v, ['--need-plugin', v.plugin, '--http-socket', '127.0.0.1:0', '--wsgi-file', APP],
              str(tmp_path), wrapper=['env', 'MP_LOGS={logdir}'])
    u.start()
    assert os.path.isdir(u.logdir)
    with pytest.raises(AssertionError, match='no valgrind logs found'):
        u.stop()


def test_a_wrapper_without_logdir_only_wraps(tmp_path):
    v = VARIANTS['pip-routing'].require()
    u = Uwsgi(v, ['--need-plugin', v.plugin, '--http-socket', '127.0.0.1:0', '--wsgi-file', APP],
              str(tmp_path), wrapper=['env', 'MP_WRAPPED=yes'])
    u.start()
    try:
        with open('/proc/%d/environ' % u.proc.pid, 'rb') as f:
            assert b'MP_WRAPPED=yes\0' in f.read()
        assert u.logdir is None
    finally:
        u.stop()
    assert not u.memchecked


def test_no_wrapper_runs_uwsgi_itself(tmp_path):
    v = VARIANTS['pip-routing'].require()
    u = Uwsgi(v, ['--need-plugin', v.plugin, '--http-socket', '127.0.0.1:0', '--wsgi-file', APP],
              str(tmp_path), wrapper=[])
    assert u.command == u.args and u.args[0] == v.bin
    u.start()
    try:
        assert os.readlink('/proc/%d/exe' % u.proc.pid) == os.path.realpath(v.bin)
    finally:
        u.stop()


# ---------------------------------------------------------------------------------------------
# A workload that holds under valgrind (t/valgrind.sh): every front end, both formats, app
# traffic, and workers recycled by --max-requests (forked again from the master, whose server
# thread and buffers exist by then) while scrapes go on.

def respawns(u):
    return len(re.findall(r'[Rr]espawned uWSGI worker \d+ \(new pid: \d+', u.log()))


def test_scrapes_on_every_front_end_while_workers_are_recycled(start_uwsgi, tmpdir_path):
    sock = os.path.join(tmpdir_path, 'm.sock')
    u = start_uwsgi('pip-routing', [
        # (--min-worker-lifetime 0: by default a worker younger than 10 s is not recycled)
        '--workers', '2', '--threads', '2', '--max-requests', '8', '--min-worker-lifetime', '0',
        '--route', '^/metrics$ prometheus-metrics:',
        '--prometheus-server', '127.0.0.1:0', '--prometheus-server', sock,
        '--metric', 'myapp.jobs.done', '--cache2', 'name=mycache,items=16'])
    tcp, unix = server_addrs(u)
    assert unix == sock

    def scrape(i):
        om = i % 2 == 1
        headers = {'Accept': OM_ACCEPT} if om else {}
        if i % 3 == 0:
            status, h, body = u.get('/metrics', headers=headers)
        else:
            status, h, body = get((tcp, unix)[i % 3 - 1], headers=headers)
        assert status == 200 and h['content-type'] == (OM_CT if om else TEXT_CT)
        samples(body, openmetrics=om)
        return body

    def app(i):
        path = ('/metric', '/cache', '/')[i % 3]
        assert u.get(path)[0] == 200

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(scrape, i) for i in range(24)] + \
            [pool.submit(app, i) for i in range(36)]
        for j in jobs:
            j.result()
    # 44 requests to the workers (36 app, 8 route scrapes), 8 per worker life (+1 in the
    # second thread at most): at least 5 lives, 3 respawns.
    deadline = time.time() + scaled(20)
    while respawns(u) < 3:
        assert time.time() < deadline, u.log()[-3000:]
        time.sleep(0.2)
    # The master counts them (its metrics collector may lag about a second).
    deadline = time.time() + scaled(10)
    while True:
        s = samples(get(tcp)[2])
        total = sum(v for (n, _), v in s.items() if n == 'uwsgi_worker_respawns_total')
        if total >= 2 + respawns(u) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert total >= 2 + 3, total  # the first spawn of each worker counts too
    # The master's server, both sockets and formats, after the recycling. (Not the route: a
    # worker recycled now could still be starting when uWSGI is stopped, and one that gets the
    # master's SIGINT then only dies of the SIGKILL at the end of its mercy.)
    for i in (1, 2, 4, 5):
        scrape(i)
