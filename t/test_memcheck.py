"""t/memcheck.py, the valgrind verdicts, on the saved logs of t/data/valgrind/ (see its README).

No valgrind and no uWSGI needed: real logs trimmed, and edited copies of real records.
"""
import io
import os
import re
import shutil
import subprocess
import sys

import pytest

import memcheck

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, 'data', 'valgrind')


def data(name):
    return os.path.join(DATA, name)


def copy_set(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(data(name), dst)
    return dst


def plugin_lines_removed(path):
    """The log with every line naming a plugin frame dropped (the record otherwise intact)."""
    plugin = memcheck.Plugin()
    out = []
    with open(path) as f:
        for line in f:
            body = memcheck.HEADER.match(line.rstrip('\n')).group(2)
            m = memcheck.FRAME.match(body)
            if not (m and plugin.frame(m.group(1), m.group(2))):
                out.append(line)
    with open(path, 'w') as f:
        f.writelines(out)


def summary(res):
    out = io.StringIO()
    memcheck.print_summary(res, out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Real runs.

def test_real_route_run_is_clean_and_every_leak_is_explained_noise():
    res = memcheck.analyse(data('route'))
    assert [(lg.pid, lg.root, lg.complete) for lg in res.logs] == [(10944, True, True),
                                                               (10966, False, True)]
    assert res.exit_code() == 0 and res.problems() == [] and res.verdict == []
    leaks = [r for r in res.records if r.kind in ('definite leak', 'indirect leak')]
    assert len(leaks) == 24
    assert not [r for r in leaks if r.plugin or not r.noise]
    assert {r.noise for r in leaks} == {
        'uwsgi-load-plugin-path', 'uwsgi-python-program-name', 'uwsgi-wsgi-file-source',
        'uwsgi-python-module-refs', 'uwsgi-python-argv-refs', 'uwsgi-python-fixup',
        'cpython-unfinalized'}
    uninit = [r for r in res.records if r.kind == 'uninitialised value']
    assert uninit and {r.noise for r in uninit} == {'cpython-int-from-bytes'}
    # The worker inherits the master's heap: the master's leak is one context, two occurrences.
    (key, rs), = [(k, rs) for k, rs in res.groups.items()
                  if rs[0].noise == 'uwsgi-load-plugin-path']
    assert key[0] == 'other' and sorted(r.pid for r in rs) == [10944, 10966]
    assert [r.owner() for r in rs] == ['uWSGI', 'uWSGI']


def test_real_route_run_positive_control_sees_the_plugin():
    res = memcheck.analyse(data('route'))
    assert len(res.reachable) == 8 and len(res.control) == 6
    funcs = {f[0] for r in res.control for f in r.plugin_frames}
    assert 'metrics_prometheus::plugin::on_load' in funcs
    assert 'metrics_prometheus::guard::guard' in funcs
    # Reachable blocks are the control, never findings.
    assert not [r for r in res.records if r.kind == 'reachable']


def test_uwsgi_auto_port_leak_is_known_noise():
    res = memcheck.analyse(data('auto-port'))
    (r,) = res.records
    assert r.kind == 'definite leak' and r.bytes == 11 and r.owner() == 'uWSGI'
    assert r.noise == 'uwsgi-auto-port'
    assert res.exit_code() == 0


def test_no_plugin_frame_anywhere_makes_the_verdict_void():
    res = memcheck.analyse(data('no-plugin'))
    assert len(res.logs) == 2 and all(lg.complete for lg in res.logs)
    assert res.reachable and res.records  # plenty to read, none of it the plugin's
    assert res.control == [] and res.verdict == []
    assert res.exit_code() == 2
    assert res.problems() == ['POSITIVE CONTROL FAILED: no plugin frame recognised anywhere; '
                              'the verdict is void']


def test_killed_worker_log_is_incomplete(tmp_path):
    res = memcheck.analyse(data('killed-worker'))
    assert [(lg.pid, lg.complete) for lg in res.logs] == [(11774, True), (11775, False)]
    assert res.logs[1].summary == 'no ERROR SUMMARY'
    # What the worker logged before the kill is still read.
    assert [r for r in res.records if r.pid == 11775]
    assert res.exit_code() == 2
    assert res.problems() == ['incomplete log %s (pid 11775: no ERROR SUMMARY, killed before its '
                              'leak check)' % res.logs[1].path]
    # A test that SIGKILLs workers may accept that for forked children...
    assert memcheck.analyse(data('killed-worker'), allow_incomplete_children=True).exit_code() == 0
    # ...never for the master.
    d = copy_set('killed-worker', tmp_path)
    master = d / 'vg.11774.log'
    master.write_text(''.join(line for line in master.read_text().splitlines(True)
                              if 'ERROR SUMMARY' not in line))
    res = memcheck.analyse(str(d), allow_incomplete_children=True)
    assert res.exit_code() == 2
    assert [lg.pid for lg in res.incomplete_blocking()] == [11774]


def test_no_logs_is_inconclusive(tmp_path):
    res = memcheck.analyse(str(tmp_path))
    assert res.exit_code() == 2 and res.problems() == ['no valgrind logs found']


# ---------------------------------------------------------------------------------------------
# Crafted from real records.

def test_leak_with_a_deep_plugin_frame_under_a_uwsgi_helper_is_the_plugins(tmp_path):
    res = memcheck.analyse(data('plugin-leak-deep'))
    assert res.exit_code() == 1
    (r,) = res.blamed
    assert r.kind == 'definite leak' and r.bytes == 65 and r.noise is None
    primary = [f[0] for f in r.frames if f[2] == 0]
    # The top of the stack is uWSGI's own (what a suppression would match)...
    assert primary[:4] == ['malloc', 'uwsgi_malloc', 'uwsgi_concat2', 'uwsgi_load_plugin']
    assert not [f for f in r.plugin_frames if primary.index(f[0]) < 7]
    assert 'metrics_prometheus::plugin::post_init' in [f[0] for f in r.plugin_frames]
    # ...and without the plugin's frames the very same record is explained uWSGI noise.
    d = copy_set('plugin-leak-deep', tmp_path)
    plugin_lines_removed(str(d / 'vg.10944.log'))
    res = memcheck.analyse(str(d))
    assert res.verdict == [] and res.exit_code() == 2  # (the control went with the frames)
    (r,) = [r for r in res.records if r.kind == 'definite leak']
    assert r.bytes == 65 and r.noise == 'uwsgi-load-plugin-path' and r.owner() == 'uWSGI'


def test_cpython_startup_leak_is_not_the_plugins(tmp_path):
    res = memcheck.analyse(data('cpython-startup-leak'))
    assert res.exit_code() == 0 and res.verdict == []
    (r,) = res.records
    assert r.kind == 'definite leak' and r.bytes == 103792 and not r.plugin
    assert r.noise == 'cpython-unfinalized' and r.owner() == 'Python'
    assert 'Py_InitializeFromConfig' in [f[0] for f in r.frames]
    # One plugin frame anywhere in it and it is the plugin's.
    d = copy_set('cpython-startup-leak', tmp_path)
    log = d / 'vg.10944.log'
    text = log.read_text()
    frame = ('==10944==    by 0x81638C1: metrics_prometheus::plugin::post_init '
             '(src/plugin.rs:199)\n')
    i = text.index('==10944==    by 0x1A8BAF: uwsgi_python_init')
    log.write_text(text[:i] + frame + text[i:])
    res = memcheck.analyse(str(d))
    assert res.exit_code() == 1 and [r.kind for r in res.blamed] == ['definite leak']
    assert res.blamed[0].noise is None


def test_unexplained_record_without_plugin_frame_is_listed_not_blamed(tmp_path):
    # The CPython leak as if uWSGI had allocated it (uwsgi_malloc first): no NOISE rule fits
    # (cpython-unfinalized wants the allocation made by libpython itself).
    d = copy_set('cpython-startup-leak', tmp_path)
    log = d / 'vg.10944.log'
    text = log.read_text()
    i = text.index('==10944==    by 0x52A6A2F')
    log.write_text(text[:i] + '==10944==    by 0x1495F8: uwsgi_malloc (in %s)\n' % UWSGI + text[i:])
    res = memcheck.analyse(str(d))
    (r,) = res.records
    assert r.kind == 'definite leak' and r.noise is None and r.owner() == 'uWSGI'
    assert res.exit_code() == 0 and res.verdict == []
    assert 'UNEXPLAINED (not a plugin frame; see stack)' in summary(res)


def test_plugin_errors_are_blamed_whichever_stack_holds_the_plugin():
    res = memcheck.analyse(data('plugin-errors'))
    assert res.exit_code() == 1
    by_kind = {r.kind: r for r in res.blamed}
    assert sorted(by_kind) == ['crash', 'invalid read', 'invalid write', 'uninitialised value']
    # the invalid read happens in the plugin
    read = by_kind['invalid read']
    assert read.first[0] == 'metrics_prometheus::http::write_response'
    assert {f[2] for f in read.plugin_frames} == {0, 1}
    # uWSGI writes past the plugin's block: the plugin is only in the "alloc'd" stack
    write = by_kind['invalid write']
    assert write.first[0].startswith('memcpy') and write.owner() == 'plugin'
    assert [f[0] for f in write.frames if f[2] == 0][1] == 'uwsgi_buffer_append'
    assert {f[2] for f in write.plugin_frames} == {1}
    # uninitialised bytes written by uWSGI, created by the plugin: allocation and origin stacks
    uninit = by_kind['uninitialised value']
    assert uninit.lines[0].startswith('Syscall param write(buf)')
    assert {f[2] for f in uninit.plugin_frames} == {1, 2}
    # valgrind prints a line between a crash's title and its stack
    crash = by_kind['crash']
    assert crash.first[0] == 'metrics_prometheus::http::write_response'
    assert crash.signature[1][0] == 'metrics_prometheus::http::write_response'
    text = summary(res)
    assert '=== ATTRIBUTABLE TO THE PLUGIN: 4 ===' in text
    assert 'verdict: errors/leaks attributable to the plugin' in text


def test_possibly_lost_plugin_block_is_information_only():
    res = memcheck.analyse(data('plugin-possibly-lost'))
    assert res.exit_code() == 0 and res.verdict == []
    ((key, rs),) = res.info_only
    assert key[:2] == ('plugin', 'possible leak') and rs[0].bytes == 288
    assert 'plugin frames in "possibly lost" records (information only): 1' in summary(res)


def test_lines_of_another_pid_in_a_log_are_ignored(tmp_path):
    # (a log file shared by several processes: only the file's own pid counts)
    d = copy_set('plugin-errors', tmp_path)
    log = d / 'vg.11759.log'
    text = log.read_text()
    start = text.index('==11759== Invalid read')
    end = text.index('==11759== \n', start)
    log.write_text(text[:start] + text[start:end].replace('==11759==', '==4==') + text[end:])
    res = memcheck.analyse(str(d))
    assert sorted(r.kind for r in res.blamed) == ['crash', 'invalid write', 'uninitialised value']
    assert memcheck.analyse(data('plugin-errors')).exit_code() == 1


# ---------------------------------------------------------------------------------------------
# The frame rules.

SO = '/tmp/mp-valgrind.abc/build/pip-routing/metrics_prometheus_plugin.so'
UWSGI = '/root/.cache/metrics_prometheus/uwsgi-pip-routing/bin/uwsgi'
RUSTC = '/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library'


@pytest.mark.parametrize('func,loc,plugin', [
    ('metrics_prometheus::server::Server::bind', 'src/server.rs:232', True),
    ('{closure#0}', 'src/plugin.rs:207', True),                   # a source file of the plugin
    ('UnknownInlinedFun', RUSTC + '/alloc/src/raw_vec/mod.rs:673', True),   # any Rust file
    ('alloc::raw_vec::RawVecInner<A>::finish_grow', 'in ' + SO, True),
    ('<httparse::Request>::parse', 'lib.rs:500', True),
    ('__rust_alloc', 'in /somewhere/else.so', True),
    ('uwsgi_rs_metrics_rlock', 'shim.c:15', True),                # the C shim
    ('???', 'in ' + SO, True),                                    # no debug info: the .so
    ('???', 'in /elsewhere/libmetrics_prometheus.so', True),      # cargo's file name
    ('uwsgi_malloc', 'in ' + UWSGI, False),
    ('_PyEval_EvalFrameDefault', 'in /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0', False),
    ('allocate_dtv', 'elf/../elf/dl-tls.c:401', False),
    ('std::__cxx11::basic_string<char>::_M_create', 'basic_string.tcc:141', False),  # C++
    ('???', 'in /tmp/x/custom_name.so', False),
    ('helper', '/work/repo/src/shim.c:15', True),                 # under the source tree
    ('helper', '/work/repo-other/x.c:3', False),                  # a sibling directory
])
def test_plugin_frame_rules(func, loc, plugin):
    assert memcheck.Plugin(src='/work/repo').frame(func, loc) is plugin


def test_a_renamed_plugin_file_counts_when_named():
    assert not memcheck.Plugin().frame('???', 'in /tmp/x/custom_name.so')
    assert memcheck.Plugin(['/tmp/x/custom_name.so']).frame('???', 'in /tmp/x/custom_name.so')


# ---------------------------------------------------------------------------------------------
# The command line and the report.

@pytest.mark.parametrize('args,rc,verdict', [
    (['route'], 0, 'verdict: clean: nothing attributable to the plugin'),
    (['plugin-leak-deep'], 1, 'verdict: errors/leaks attributable to the plugin'),
    (['route', 'plugin-errors'], 1, 'verdict: errors/leaks attributable to the plugin'),
    (['no-plugin'], 2, 'verdict: inconclusive'),
    (['killed-worker'], 2, 'verdict: inconclusive'),
    (['--allow-incomplete-children', 'killed-worker'], 0, 'verdict: clean'),
    (['route', 'no-plugin'], 0, 'verdict: clean'),   # one control over all the instances
])
def test_cli_exit_codes(args, rc, verdict):
    argv = [a if a.startswith('-') else data(a) for a in args]
    p = subprocess.run([sys.executable, os.path.join(HERE, 'memcheck.py')] + argv,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == rc, p.stdout + p.stderr
    assert p.stdout.rstrip().splitlines()[-1].startswith(verdict), p.stdout[-2000:]


def test_cli_prints_the_plugins_record_in_full():
    p = subprocess.run([sys.executable, os.path.join(HERE, 'memcheck.py'),
                        data('plugin-leak-deep')], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    out = p.stdout
    assert '=== ATTRIBUTABLE TO THE PLUGIN: 1 ===' in out
    block = out.split('=== ATTRIBUTABLE TO THE PLUGIN: 1 ===')[1]
    assert '65 bytes in 1 blocks are definitely lost' in block
    assert 'uwsgi_concat2' in block and 'metrics_prometheus::plugin::post_init' in block


def test_cli_rejects_a_missing_directory(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(HERE, 'memcheck.py'),
                        str(tmp_path / 'nope')], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and 'not a directory' in p.stderr


def test_summary_of_the_real_run():
    text = summary(memcheck.analyse(data('route')))
    assert re.search(r'pid 10944 +master +ERROR SUMMARY: 29 errors', text)
    assert re.search(r'pid 10966 +child of 10944 +ERROR SUMMARY: 100 errors', text)
    assert re.search(r'definite leak +0 \(0\) +13 \(18\) +0 \(0\)', text)
    assert re.search(r'uninitialised value +0 \(0\) +4 \(5\) +0 \(0\)', text)
    assert 'positive control: 6 "still reachable" records (of 8) carry plugin frames' in text
    assert 'UNEXPLAINED' not in text and 'ATTRIBUTABLE' not in text
