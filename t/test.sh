#!/usr/bin/env bash
# Runs every test: formatting and lints, `cargo test`, then the integration tests against real
# uWSGI binaries (Debian 2.0.21, pip 2.0.31 with routing, pip 2.0.31 without), promtool and the
# Python prometheus_client parsers. Installs what is missing first (t/setup.sh).
#
# Arguments go to pytest (e.g. `bash t/test.sh -k route`). At the end: the slowest tests
# (pytest --durations) and the time of every step and of the whole run.
#
# Cargo target directory: $CARGO_TARGET_DIR (default target/), shared by every step. The plugin's
# build script depends on UWSGI_BIN, so a change of variant recompiles the plugin crate alone
# (2 s for clippy, 5 s for a release build, 13 s for its tests here); its dependencies are
# built once. MP_TARGET_PER_VARIANT=1 gives every variant its own directory instead,
# $CARGO_TARGET_DIR/<variant>/ (the engine alone: .../engine/): nothing is recompiled on a
# second run, but a first run builds every dependency once per directory (about 6 minutes more
# on 2 cores), which is what CI's fresh clone always pays.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=t/env.sh
. t/env.sh

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
unset CARGO_TARGET_DIR  # each cargo command below names its own (cargo_in)

T0=$SECONDS
STEPS=()
STEP=''
STEP_T0=$SECONDS
end_step() {
  if [[ -n $STEP ]]; then
    STEPS+=("$(printf '%6ss  %s' "$((SECONDS - STEP_T0))" "$STEP")")
  fi
  STEP=''
}
step() {
  end_step
  STEP=$*
  STEP_T0=$SECONDS
  printf '\n=== %s ===\n' "$*"
}
report() {
  local rc=$?
  if [[ -n $STEP && $rc != 0 ]]; then STEP="$STEP  <-- FAILED (exit $rc)"; fi
  end_step
  printf '\n=== time per step ===\n'
  printf '%s\n' "${STEPS[@]}"
  printf '%6ss  total, exit %s (load average at the end: %s)\n' "$((SECONDS - T0))" "$rc" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
}
trap report EXIT

# The target directory of a variant (or of `engine`); `cargo_in VARIANT ARGS...` runs cargo there.
target_of() {
  if [[ ${MP_TARGET_PER_VARIANT:-0} == 1 ]]; then echo "$TARGET/$1"; else echo "$TARGET"; fi
}
cargo_in() {
  local dir
  dir=$(target_of "$1")
  shift
  CARGO_TARGET_DIR=$dir cargo "$@"
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "ruff check (Python: t/, bench/, docs/*.py, python/; ruff.toml)"
"$MP_TOOLS/bin/ruff" check t bench docs python

# The pure engine needs no uWSGI and no libclang: prove it with a uWSGI path that does not
# exist (the plugin crate's build script would fail on it, the engine has none). Its tests run
# here only (not again with the plugin's), the ignored one included: the protobuf encoder
# against Google's own decoder, with the tools venv's protobuf and grpcio-tools. `cargo test`
# also builds the `render` example, which t/test_engine_parsers.py runs.
step "engine: cargo test -p metrics_prometheus_engine (no uWSGI, no libclang)"
UWSGI_BIN=/nonexistent/uwsgi LIBCLANG_PATH=/nonexistent MP_PYTHON=$MP_TOOLS/bin/python \
  cargo_in engine test -p metrics_prometheus_engine -- --include-ignored
RENDER_BIN=$(target_of engine)/debug/examples/render
export RENDER_BIN

# Lints need a uWSGI to generate bindings for; run clippy against a binary with routing and
# one without, so both sides of cfg(uwsgi_routing) are checked, and with the test-only feature.
step "cargo clippy (routing)"
UWSGI_BIN=$UWSGI_PIP_ROUTING cargo_in pip-routing clippy --workspace --all-targets -- -D warnings
step "cargo clippy (no routing)"
UWSGI_BIN=$UWSGI_PIP_NOROUTING cargo_in pip-norouting clippy --workspace --all-targets -- \
  -D warnings
step "cargo clippy (fault-injection feature)"
# --workspace as above: the same dependency features, so nothing but the plugin is rebuilt.
UWSGI_BIN=$UWSGI_PIP_ROUTING cargo_in pip-routing-faults clippy --workspace --all-targets \
  --features metrics_prometheus/fault-injection -- -D warnings

step "cargo test -p metrics_prometheus (plugin unit tests, layering)"
UWSGI_BIN=$UWSGI_PIP_ROUTING cargo_in pip-routing test -p metrics_prometheus

# Before the other builds: the plugin it builds for uwsgi-core is the `debian` variant's (same
# UWSGI_BIN, same target directory), so build_for debian below has nothing left to do.
step "Debian package: packaging/deb.sh into build/deb (t/test_packaging.py installs it)"
CARGO_TARGET_DIR=$(target_of debian) bash packaging/deb.sh build/deb

step "build the plugin for each uWSGI"
build_for() {
  local name=$1 bin=$2
  shift 2
  UWSGI_BIN=$bin cargo_in "$name" build --release --lib "$@"
  mkdir -p "build/$name"
  cp "$(target_of "$name")/release/libmetrics_prometheus.so" "build/$name/metrics_prometheus_plugin.so"
  echo "build/$name/metrics_prometheus_plugin.so <- $bin ($("$bin" --version))"
}
build_for debian "$UWSGI_DEBIAN"
build_for pip-norouting "$UWSGI_PIP_NOROUTING"
# A test-only build whose dedicated server panics on GET /__panic (proves the panic guard).
build_for pip-routing-faults "$UWSGI_PIP_ROUTING" --features fault-injection
build_for pip-routing "$UWSGI_PIP_ROUTING"

# One target per core at a time: each still fuzzes for its full FUZZ_SECONDS.
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc)}
step "fuzz smoke run (cargo fuzz, ${FUZZ_SECONDS:-30} s per target, $FUZZ_JOBS at a time)"
FUZZ_SECONDS=${FUZZ_SECONDS:-30} FUZZ_JOBS=$FUZZ_JOBS bash fuzz/smoke.sh

step "Prometheus rules: promtool check rules, promtool test rules"
"$PROMTOOL" check rules rules/uwsgi.rules.yml
"$PROMTOOL" test rules rules/uwsgi.rules.test.yml

step "integration tests (real uWSGI)"
# t/test_demo.py runs t/demo.sh, whose `cargo build` (UWSGI_BIN: pip with routing, the last
# build above) then has nothing to do.
CARGO_TARGET_DIR=$(target_of pip-routing)
export CARGO_TARGET_DIR
# --timeout: a hung test fails after 5 minutes instead of stalling CI. --durations: every test
# phase (setup, call, teardown) of 0.5 s or more, slowest first.
"$MP_TOOLS/bin/pytest" -p no:cacheprovider -ra --timeout 300 --durations=0 --durations-min=0.5 \
  t/ "$@"
