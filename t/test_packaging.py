"""Issue 23: installing without a Rust toolchain. The Debian package (real dpkg, lintian and
Debian's uwsgi), the container recipe of docs/recipes.md (hadolint, then its build steps run for
real), and the release (one version, the commit, a source tarball that builds offline).

The .deb is built once per run by t/test.sh (step "Debian package", packaging/deb.sh into
build/deb/); the tests here inspect, install and remove it. Installing is real (`dpkg -i`, as
root): each test that installs removes the package again in a `finally`, and fails at the start
if it is already installed (a left-over of someone else, which the test must not remove).
"""
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import tomllib

import pytest

from conftest import APP, BUILD_DIR, ROOT, Uwsgi, Variant, scaled
from helpers import get, head_commit, server_addrs, workspace_version
from promcheck import samples

PKG = 'uwsgi-plugin-metrics-prometheus'
INSTALLED_SO = '/usr/lib/uwsgi/plugins/metrics_prometheus_plugin.so'
SHARE = '/usr/share/' + PKG
DEBIAN_UWSGI = '/usr/bin/uwsgi'  # Debian's `uwsgi` package: the alternative for uwsgi-core
DOC = os.path.join(ROOT, 'docs', 'recipes.md')
STARTUP = re.compile(r'metrics_prometheus (\S+) \(commit (\w+)\) loaded into uWSGI (\S+);')
APP_METRICS = os.path.join(ROOT, 't', 'apps', 'app_metrics.py')
# lintian's tags for the package, each left for a reason (README, "Install it"). Informational
# only: an error or a warning fails the test whatever its tag.
LINTIAN_ALLOWED = {
    # The Rust code calls no fortifiable libc function; the C shim is built by the cc crate
    # without dpkg-buildflags' -D_FORTIFY_SOURCE (it reads uWSGI's structs, no string copies).
    'hardening-no-fortify-functions',
}


def run(cmd, **kw):
    kw.setdefault('capture_output', True)
    kw.setdefault('text', True)
    return subprocess.run(cmd, **kw)


def arch():
    return run(['dpkg', '--print-architecture'], check=True).stdout.strip()


def deb_path():
    path = os.path.join(BUILD_DIR, 'deb', '%s_%s_%s.deb' % (PKG, workspace_version(), arch()))
    if not os.path.exists(path):
        pytest.fail('%s not built: `bash t/test.sh` builds it (bash packaging/deb.sh build/deb)'
                    % path)
    return path


def core_abi():
    """The uwsgi-abi-<hash> the installed uwsgi-core provides, read as deb.sh reads it."""
    provides = run(['dpkg-query', '-W', '-f=${Provides}', 'uwsgi-core'], check=True).stdout
    (abi,) = re.findall(r'uwsgi-abi-[0-9a-f]+', provides)
    return abi


def status(pkg):
    r = run(['dpkg-query', '-W', '-f=${Status}', pkg])
    return r.stdout.strip() if r.returncode == 0 else 'not known'


def control(deb):
    """The control fields of a .deb, as dpkg-deb reads them."""
    text = run(['dpkg-deb', '-f', deb], check=True).stdout
    fields, key = {}, None
    for line in text.splitlines():
        if line.startswith(' ') and key:
            fields[key] += '\n' + line
        else:
            key, _, value = line.partition(':')
            fields[key] = value.strip()
    return fields


@contextlib.contextmanager
def dpkg_installing(deb):
    """`dpkg -i deb`; yields its result; purges the package afterwards whatever happened."""
    assert status(PKG) in ('not known', 'unknown ok not-installed', 'deinstall ok config-files'), \
        '%s is already installed (%s): not this test\'s to remove' % (PKG, status(PKG))
    try:
        yield run(['dpkg', '-i', deb], timeout=120)
    finally:
        r = run(['dpkg', '--purge', PKG], timeout=120)
        assert r.returncode == 0, r
        assert not os.path.exists(INSTALLED_SO), 'dpkg --purge left %s' % INSTALLED_SO


def start(tmpdir, bin_, args):
    """A uWSGI from `bin_` (no variant's plugin), stopped by the caller."""
    v = Variant('packaging', 'UWSGI_DEBIAN', False)
    v.bin = bin_
    u = Uwsgi(v, args, tmpdir)
    u.http_port_from_log = True
    return u


def metrics_of(u):
    (addr,) = server_addrs(u)
    status_, _, body = get(addr)
    assert status_ == 200, body
    return samples(body)


# ---------------------------------------------------------------------------------------------
# The release: one version, the commit.

def test_versions_agree():
    """Cargo.toml's [workspace.package] is the version; the crates inherit it, the Python
    package and the CHANGELOG carry it."""
    version = workspace_version()
    for manifest in ('Cargo.toml', 'engine/Cargo.toml'):
        with open(os.path.join(ROOT, manifest), 'rb') as f:
            assert tomllib.load(f)['package']['version'] == {'workspace': True}, manifest
    with open(os.path.join(ROOT, 'python', 'pyproject.toml'), 'rb') as f:
        assert tomllib.load(f)['project']['version'] == version
    with open(os.path.join(ROOT, 'CHANGELOG.md')) as f:
        assert '\n## %s\n' % version in f.read()


# ---------------------------------------------------------------------------------------------
# The Debian package.

def test_deb_fields_and_files():
    deb = deb_path()
    f = control(deb)
    assert f['Package'] == PKG
    assert f['Version'] == workspace_version()
    assert f['Architecture'] == arch()
    depends = [d.strip() for d in f['Depends'].split(',')]
    # The ABI of the uwsgi-core it was built against, read from dpkg (never written in a file).
    assert depends[0] == core_abi(), depends
    assert any(d.startswith('libc6 ') for d in depends), depends
    assert head_commit() in f['Description']
    info = run(['dpkg-deb', '-I', deb], check=True).stdout
    # No maintainer script: installing starts nothing and asks nothing.
    members = re.findall(r'^\s+\d+ bytes,\s+\d+ lines\s+\*?\s*(\S+)', info, re.M)
    assert sorted(members) == ['control', 'md5sums'], info
    listing = run(['dpkg-deb', '-c', deb], check=True).stdout
    files = {line.split()[-1].lstrip('.') for line in listing.splitlines()
             if line.startswith('-')}
    assert files == {
        INSTALLED_SO,
        '/usr/share/doc/%s/README.md.gz' % PKG,
        '/usr/share/doc/%s/CHANGELOG.md.gz' % PKG,
        '/usr/share/doc/%s/changelog.gz' % PKG,
        '/usr/share/doc/%s/copyright' % PKG,
        SHARE + '/dashboards/uwsgi.json',
        SHARE + '/rules/uwsgi.rules.yml',
        SHARE + '/rules/uwsgi.rules.test.yml',
        SHARE + '/python/metrics_prometheus/__init__.py',
    }, listing
    assert all(' root/root ' in line for line in listing.splitlines()), listing
    with tempfile.TemporaryDirectory(prefix='mp-deb-') as d:
        run(['dpkg-deb', '-x', deb, d], check=True)
        with open(os.path.join(d, 'usr/share/doc', PKG, 'copyright')) as fh:
            copyright_ = fh.read()
        assert copyright_.startswith('Format: https://www.debian.org/doc/packaging-manuals/'
                                     'copyright-format/1.0/')
        assert 'License: MIT' in copyright_ and ' httparse ' in copyright_
        assert '@CRATES@' not in copyright_
        with open(os.path.join(ROOT, 'rules', 'uwsgi.rules.yml'), 'rb') as a, \
                open(os.path.join(d, SHARE[1:], 'rules', 'uwsgi.rules.yml'), 'rb') as b:
            assert a.read() == b.read()


def test_lintian_no_errors_no_warnings():
    r = run(['lintian', '--pedantic', '--display-info', '--display-experimental', deb_path()],
            timeout=scaled(300))
    tags = re.findall(r'^([EWIPX]): %s(?: \w+)?: (\S+)' % re.escape(PKG), r.stdout, re.M)
    assert not [t for t in tags if t[0] in 'EW'], r.stdout + r.stderr
    assert {tag for _, tag in tags} <= LINTIAN_ALLOWED, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def test_installed_package_loads_by_name_in_debian_uwsgi(tmpdir_path):
    """dpkg -i, then Debian's `uwsgi` with an ini as one in /etc/uwsgi/apps-enabled names the
    plugin by name (`plugins = python3,metrics_prometheus`) and the Python module from
    /usr/share; it serves uWSGI's and the application's metrics. The pip uWSGI refuses the
    installed plugin."""
    assert os.path.realpath(DEBIAN_UWSGI) == '/usr/bin/uwsgi-core', \
        '%s is not Debian\'s uwsgi-core: `bash t/setup.sh` installs the uwsgi package' \
        % DEBIAN_UWSGI
    apps = os.path.join(tmpdir_path, 'apps-enabled')
    os.makedirs(apps)
    ini = os.path.join(apps, 'shop.ini')
    with open(ini, 'w') as f:
        f.write('[uwsgi]\n'
                'plugins = python3,metrics_prometheus\n'
                'http-socket = 127.0.0.1:0\n'
                'wsgi-file = %s\n'
                'processes = 2\n'
                'die-on-term = true\n'
                'prometheus-server = 127.0.0.1:0\n'
                'prometheus-app-metrics = true\n'
                'pythonpath = %s/python\n'
                'shared-pyimport = metrics_prometheus\n' % (APP_METRICS, SHARE))
    started = []
    with dpkg_installing(deb_path()) as r:
        try:
            assert r.returncode == 0, r.stdout + r.stderr
            assert status(PKG) == 'install ok installed'
            u = start(tmpdir_path, DEBIAN_UWSGI, ['--ini', ini])
            started.append(u)
            u.start()
            version, commit, uwsgi_version = u.wait_log(STARTUP.pattern).groups()
            assert (version, commit, uwsgi_version) == (workspace_version(), head_commit(),
                                                        '2.0.21-debian'), u.log()
            u.wait_log(r"prometheus_client values now live in uWSGI's shared memory")
            assert u.get('/work')[0] == 200
            got = metrics_of(u)
            assert got[('uwsgi_up', frozenset())] == 1
            assert got[('uwsgi_build_info', frozenset({
                ('version', '2.0.21-debian'), ('plugin_version', workspace_version()),
                ('commit', head_commit())}))] == 1
            assert got[('app_requests_total', frozenset({('path', '/work')}))] == 1
            # A uWSGI the package was not built for: the plugin refuses it, startup stops.
            pip = start(tmpdir_path, os.environ['UWSGI_PIP_ROUTING'],
                        ['--need-plugin', INSTALLED_SO, '--http-socket', '127.0.0.1:0'])
            started.append(pip)
            pip.start(wait_for=None)
            assert pip.wait_exit() != 0
            assert 'refusing to load: built for uWSGI 2.0.21-debian' in pip.log(), pip.log()
        finally:
            for s in started:
                s.kill()


def test_package_for_another_abi_is_refused(tmpdir_path):
    """A copy of the package whose Depends names another uwsgi-abi: dpkg will not configure it
    against this uwsgi-core (and apt would not install it)."""
    abi = core_abi()
    other = 'uwsgi-abi-' + '0' * 32
    tree = os.path.join(tmpdir_path, 'tree')
    run(['dpkg-deb', '-R', deb_path(), tree], check=True)
    path = os.path.join(tree, 'DEBIAN', 'control')
    with open(path) as f:
        text = f.read()
    assert 'Depends: %s, ' % abi in text
    with open(path, 'w') as f:
        f.write(text.replace(abi, other))
    copy = os.path.join(tmpdir_path, 'other-abi.deb')
    run(['dpkg-deb', '--root-owner-group', '--build', tree, copy], check=True)
    apt = run(['apt-get', 'install', '--simulate', '-q', copy], timeout=120)
    assert apt.returncode != 0 and other in apt.stdout + apt.stderr, apt
    with dpkg_installing(copy) as r:
        assert r.returncode != 0, r
        out = r.stdout + r.stderr
        assert 'depends on %s; however:' % other in out, out
        assert 'Package %s is not installed.' % other in out, out
        assert status(PKG) != 'install ok installed'


# ---------------------------------------------------------------------------------------------
# The container recipe.

def recipe(name):
    with open(DOC) as f:
        text = f.read()
    (body,) = re.findall(r'^```\w+ recipe=%s\n(.*?)^```$' % re.escape(name), text, re.M | re.S)
    return body


def instructions(dockerfile):
    """[(INSTRUCTION, arguments)] of a Dockerfile: comments dropped, continuations joined."""
    out, cur = [], ''
    for line in dockerfile.splitlines():
        if line.lstrip().startswith('#') and not cur:
            continue
        cur += line.rstrip('\\').rstrip() + ' ' if line.endswith('\\') else line
        if not line.endswith('\\'):
            if cur.strip():
                word, _, rest = cur.strip().partition(' ')
                out.append((word.upper(), rest.strip()))
            cur = ''
    return out


def test_container_dockerfile_lints(tmpdir_path):
    hadolint = os.path.join(os.environ.get('MP_TOOLS', ''), 'bin', 'hadolint')
    assert os.access(hadolint, os.X_OK), 'hadolint missing: `bash t/setup.sh` installs it'
    path = os.path.join(tmpdir_path, 'Dockerfile')
    with open(path, 'w') as f:
        f.write(recipe('container-dockerfile'))
    r = run([hadolint, '--no-color', path])
    assert r.returncode == 0 and r.stdout == '', r.stdout + r.stderr
    # Positive control: the same file with a broken instruction is a parse error.
    with open(path, 'a') as f:
        f.write('COPY --from=\n')
    r = run([hadolint, '--no-color', path])
    assert r.returncode != 0 and 'unexpected flag --from with no value' in r.stdout, r


def test_container_recipe_builds_a_loading_plugin(tmpdir_path):
    """The build stage's steps, run on this machine in a directory standing for the image's
    `/`, give a venv whose uWSGI loads the plugin they build, with the recipe's uwsgi.ini.

    What stands in for the image: the host's Rust toolchain for the rust image's (the ENV of
    the COPY --from=rust lines is skipped), /usr/bin/python3 for `python`, t/setup.sh's Debian
    packages for the apt-get step (checked installed, not run: it would rewrite the host's apt
    lists). The cargo target directory is the suite's, as a Docker layer cache would be: the
    crates are reused, the plugin crate is rebuilt for this uWSGI. pip builds uWSGI from PyPI's
    source every time (about 15 s here)."""
    root = os.path.join(tmpdir_path, 'root')
    bindir = os.path.join(tmpdir_path, 'bin')
    os.makedirs(root)
    os.makedirs(bindir)
    os.symlink('/usr/bin/python3', os.path.join(bindir, 'python'))
    steps = instructions(recipe('container-dockerfile'))
    froms = [i for i, (word, _) in enumerate(steps) if word == 'FROM']
    assert len(froms) == 2 and froms[0] == 0
    build, runtime = steps[1:froms[1]], steps[froms[1] + 1:]
    env = dict(os.environ, PATH=bindir + ':' + os.environ['PATH'])
    env.pop('CARGO_TARGET_DIR', None)
    env.pop('VIRTUAL_ENV', None)
    workdir = root
    ran = []
    for word, args in build:
        if word == 'COPY' and args.startswith('--from=rust:'):
            continue
        if word == 'ENV':
            for key, value in re.findall(r'(\w+)=(\S+)', args):
                if key in ('CARGO_HOME', 'RUSTUP_HOME', 'PATH'):
                    assert '/usr/local/cargo' in value or value == '/usr/local/rustup', value
                else:
                    env[key] = root + value if value.startswith('/') else value
        elif word == 'WORKDIR':
            workdir = root + args
            os.makedirs(workdir, exist_ok=True)
        elif word == 'COPY':
            assert args == '. .', args
            tracked = run(['git', '-C', ROOT, 'ls-files', '-z'], check=True).stdout
            for rel in tracked.split('\0'):
                if rel and os.path.exists(os.path.join(ROOT, rel)):
                    os.makedirs(os.path.dirname(os.path.join(workdir, rel)), exist_ok=True)
                    shutil.copy2(os.path.join(ROOT, rel), os.path.join(workdir, rel))
            os.symlink(os.environ.get('CARGO_TARGET_DIR') or os.path.join(ROOT, 'target'),
                       os.path.join(workdir, 'target'))
        elif word == 'RUN' and args.startswith('apt-get update'):
            packages = re.search(r'--no-install-recommends ([\w .-]+?) &&', args).group(1).split()
            assert packages
            for p in packages:
                assert status(p) == 'install ok installed', (p, status(p))
        elif word == 'RUN':
            r = run(['bash', '-euo', 'pipefail', '-c', args], cwd=workdir, env=env,
                    timeout=scaled(900))
            assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-5000:])
            ran.append(args)
        else:
            raise AssertionError('unexpected build step %s %s' % (word, args))
    assert len(ran) == 2, ran
    venv = env['VIRTUAL_ENV']
    plugin = os.path.join(venv, 'lib', 'uwsgi', 'metrics_prometheus_plugin.so')
    assert os.path.exists(plugin)
    # The runtime stage copies the venv (plugin inside) and nothing built by Rust.
    assert ('COPY', '--from=build /opt/venv /opt/venv') in runtime, runtime
    assert venv == root + '/opt/venv'
    ini = recipe('container-uwsgi')
    for old, new in (('/opt/venv/', venv + '/'), ('wsgi-file = /app/app.py', 'wsgi-file = ' + APP),
                     ('http-socket = :8080', 'http-socket = 127.0.0.1:0'),
                     ('prometheus-server = :9290', 'prometheus-server = 127.0.0.1:0')):
        assert old in ini, (old, ini)
        ini = ini.replace(old, new)
    path = os.path.join(tmpdir_path, 'uwsgi.ini')
    with open(path, 'w') as f:
        f.write(ini)
    uwsgi = os.path.join(venv, 'bin', 'uwsgi')
    assert run([uwsgi, '--version'], check=True).stdout.strip() == '2.0.31'
    # Built from source by pip with the build stage's libpcre2-dev: routing, the route action.
    assert '-DUWSGI_ROUTING' in run([uwsgi, '--cflags'], check=True).stdout
    u = start(tmpdir_path, uwsgi, ['--ini', path])
    try:
        u.start()
        assert STARTUP.search(u.log()).groups()[::2] == (workspace_version(), '2.0.31'), u.log()
        assert u.get('/')[0] == 200
        got = metrics_of(u)
        assert got[('uwsgi_up', frozenset())] == 1
        assert got[('uwsgi_workers', frozenset())] == 2
        # The Python module the recipe installs into the venv imports there.
        r = run([os.path.join(venv, 'bin', 'python'), '-c',
                 'import metrics_prometheus; print(metrics_prometheus.__file__)'], check=True)
        assert r.stdout.startswith(venv + '/'), r.stdout
    finally:
        u.kill()


# ---------------------------------------------------------------------------------------------
# The release artefacts and the offline build.

def test_release_artefacts_and_offline_build(tmpdir_path):
    """packaging/release.sh's artefacts check against SHA256SUMS; the source tarball builds with
    `cargo build --offline` and an empty CARGO_HOME (no registry cache, no network), without
    git, and the plugin it gives says the commit recorded in the tarball."""
    out = os.path.join(tmpdir_path, 'dist')
    r = run(['bash', os.path.join(ROOT, 'packaging', 'release.sh'), out], timeout=scaled(900))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    version = workspace_version()
    sums = run(['sha256sum', '-c', 'SHA256SUMS'], cwd=out)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    with open(os.path.join(out, 'SHA256SUMS')) as f:
        listed = sorted(line.split()[1] for line in f)
    assert listed == sorted([
        'metrics_prometheus-%s.tar.gz' % version,
        '%s_%s_%s.deb' % (PKG, version, arch()),
        'uwsgi_metrics_prometheus-%s.tar.gz' % version,
        'uwsgi_metrics_prometheus-%s-py3-none-any.whl' % version])
    src = os.path.join(tmpdir_path, 'src')
    os.makedirs(src)
    run(['tar', '-xzf', os.path.join(out, 'metrics_prometheus-%s.tar.gz' % version), '-C', src],
        check=True)
    tree = os.path.join(src, 'metrics_prometheus-' + version)
    for name in ('Cargo.lock', 'COMMIT', '.cargo/config.toml'):
        assert os.path.exists(os.path.join(tree, name)), name
    with open(os.path.join(tree, '.cargo', 'config.toml'), 'rb') as f:
        assert tomllib.load(f)['source']['crates-io'] == {'replace-with': 'vendored-sources'}
    assert any(n.startswith('libc-') for n in os.listdir(os.path.join(tree, 'vendor')))
    assert not os.path.exists(os.path.join(tree, '.git'))
    with open(os.path.join(tree, 'COMMIT')) as f:
        assert f.read().strip() == head_commit()
    cargo_home = os.path.join(tmpdir_path, 'cargo-home')
    os.makedirs(cargo_home)
    env = dict(os.environ, CARGO_HOME=cargo_home, UWSGI_BIN=os.environ['UWSGI_DEBIAN'],
               CARGO_TARGET_DIR=os.path.join(tmpdir_path, 'target'), CARGO_NET_OFFLINE='true',
               # rustup's proxies find the toolchain through RUSTUP_HOME, not CARGO_HOME.
               RUSTUP_HOME=os.environ.get('RUSTUP_HOME',
                                          os.path.expanduser('~/.rustup')),
               # No git: the commit must come from the tarball's COMMIT file.
               GIT_DIR=os.path.join(tmpdir_path, 'no-git'), GIT_CEILING_DIRECTORIES=src)
    b = run(['cargo', 'build', '--offline', '--locked', '--release', '--lib'], cwd=tree, env=env,
            timeout=scaled(900))
    assert b.returncode == 0, b.stderr[-5000:]
    # uWSGI takes a plugin path not ending in _plugin.so for a name (the README's cp step).
    built = os.path.join(tmpdir_path, 'metrics_prometheus_plugin.so')
    shutil.copyfile(os.path.join(tmpdir_path, 'target', 'release', 'libmetrics_prometheus.so'),
                    built)
    u = start(tmpdir_path, os.environ['UWSGI_DEBIAN'],
              ['--plugin', 'python3', '--need-plugin', built, '--http-socket', '127.0.0.1:0',
               '--wsgi-file', APP, '--die-on-term'])
    try:
        u.start()
        assert STARTUP.search(u.log()).groups() == (version, head_commit(), '2.0.21-debian')
    finally:
        u.kill()
