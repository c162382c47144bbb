# Build path 1: `uwsgi --build-plugin .` in this directory (the uWSGI convention).
#
# uWSGI's uwsgiconfig.py exec()s this file with the invoking binary's cflags in
# UWSGI_PLUGINS_BUILDER_CFLAGS and its header in .uwsgi_plugins_builder/uwsgi.h. We hand both to
# cargo (build.rs reads UWSGI_CFLAGS / UWSGI_H), so the plugin is built for exactly the binary
# that runs --build-plugin. uwsgiconfig.py then insists on linking something from GCC_LIST, so a
# one-line C file is linked, and post_build() puts cargo's cdylib in its place.
import os
import shutil
import subprocess
import sys

NAME = 'metrics_prometheus'
CFLAGS = []
LDFLAGS = []
LIBS = []
GCC_LIST = ['src/build_plugin_placeholder']

_argv = sys.argv
_src = _argv[_argv.index('--extra-plugin') + 1] if '--extra-plugin' in _argv else '.'
_src = os.path.abspath(_src)
_builder = os.path.abspath('.uwsgi_plugins_builder')
_target = os.path.join(_src, 'target', 'uwsgi-build-plugin')


def _cargo():
    env = dict(os.environ)
    cflags = env.get('UWSGI_PLUGINS_BUILDER_CFLAGS')
    header = os.path.join(_builder, 'uwsgi.h')
    if not cflags or not os.path.exists(header):
        sys.exit('metrics_prometheus: run this through `uwsgi --build-plugin <dir>`')
    env['UWSGI_CFLAGS'] = cflags
    env['UWSGI_H'] = header
    env['CARGO_TARGET_DIR'] = _target
    cmd = ['cargo', 'build', '--release', '--lib', '--manifest-path', os.path.join(_src, 'Cargo.toml')]
    print('*** metrics_prometheus: %s ***' % ' '.join(cmd))
    if subprocess.call(cmd, env=env) != 0:
        sys.exit('*** metrics_prometheus: cargo build failed ***')


_cargo()


def post_build(config):
    built = os.path.join(_target, 'release', 'libmetrics_prometheus.so')
    out = NAME + '_plugin.so'
    tmp = out + '.tmp'
    shutil.copyfile(built, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    print('*** metrics_prometheus: %s is the cargo-built plugin ***' % os.path.abspath(out))
