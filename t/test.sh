#!/usr/bin/env bash
# Runs every test: formatting and lints, `cargo test`, then the integration tests against real
# uWSGI binaries (Debian 2.0.21, pip 2.0.31 with routing, pip 2.0.31 without), promtool and the
# Python prometheus_client parsers. Installs what is missing first (t/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=t/env.sh
. t/env.sh

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

# The pure engine needs no uWSGI and no libclang: prove it with a uWSGI path that does not
# exist (the plugin crate's build script would fail on it, the engine has none).
step "engine: cargo test -p metrics_prometheus_engine (no uWSGI, no libclang)"
UWSGI_BIN=/nonexistent/uwsgi LIBCLANG_PATH=/nonexistent cargo test -p metrics_prometheus_engine

# Lints and unit tests need a uWSGI to generate bindings for; run clippy against a binary with
# routing and one without, so both sides of cfg(uwsgi_routing) are checked.
step "cargo clippy (routing)"
UWSGI_BIN=$UWSGI_PIP_ROUTING cargo clippy --workspace --all-targets -- -D warnings
step "cargo clippy (no routing)"
UWSGI_BIN=$UWSGI_PIP_NOROUTING cargo clippy --workspace --all-targets -- -D warnings
step "cargo clippy (fault-injection feature)"
UWSGI_BIN=$UWSGI_PIP_ROUTING cargo clippy --all-targets --features fault-injection -- -D warnings

step "cargo test (workspace: plugin unit tests, layering, engine)"
UWSGI_BIN=$UWSGI_PIP_ROUTING cargo test --workspace

# The protobuf encoder against Google's own decoder (needs the tools venv's protobuf and
# grpcio-tools, so it is an ignored test in plain `cargo test`).
step "engine: protobuf output decoded by Python's protobuf library"
MP_PYTHON=$MP_TOOLS/bin/python cargo test -p metrics_prometheus_engine --test format_protobuf -- --ignored

step "build the plugin for each uWSGI"
build_for() {
  local name=$1 bin=$2
  shift 2
  UWSGI_BIN=$bin cargo build --release --lib "$@"
  mkdir -p "build/$name"
  cp "${CARGO_TARGET_DIR:-target}/release/libmetrics_prometheus.so" "build/$name/metrics_prometheus_plugin.so"
  echo "build/$name/metrics_prometheus_plugin.so <- $bin ($("$bin" --version))"
}
build_for debian "$UWSGI_DEBIAN"
build_for pip-norouting "$UWSGI_PIP_NOROUTING"
# A test-only build whose dedicated server panics on GET /__panic (proves the panic guard).
build_for pip-routing-faults "$UWSGI_PIP_ROUTING" --features fault-injection
build_for pip-routing "$UWSGI_PIP_ROUTING"
cargo build --release -p metrics_prometheus_engine --example render
export RENDER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/render

step "fuzz smoke run (cargo fuzz, ${FUZZ_SECONDS:-30} s per target)"
FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash fuzz/smoke.sh

step "Prometheus rules: promtool check rules, promtool test rules"
"$PROMTOOL" check rules rules/uwsgi.rules.yml
"$PROMTOOL" test rules rules/uwsgi.rules.test.yml

step "integration tests (real uWSGI)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# --timeout: a hung test fails after 5 minutes instead of stalling CI.
"$MP_TOOLS/bin/pytest" -p no:cacheprovider -ra --timeout 300 t/ "$@"
