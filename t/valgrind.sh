#!/usr/bin/env bash
# Memcheck run of the plugin inside real uWSGI (pip 2.0.31, with routing): a subset of the
# normal pytest suite with every uWSGI under valgrind memcheck (MP_VALGRIND=1, t/conftest.py),
# each instance's logs judged by t/memcheck.py at its teardown, then one summary of them all.
#
#   bash t/valgrind.sh                      # the default subset (VG_TESTS below)
#   bash t/valgrind.sh t/test_route.py -k 'pip-routing'    # any pytest selection instead
#
#   exit 0: nothing attributable to the plugin
#   exit 1: at least one error/leak whose stack involves the plugin
#   exit 2: inconclusive: the build failed, a test failed for another reason, a master's log is
#           incomplete, or the positive control failed (no plugin frame recognised at all)
#
# What it does:
#  1. builds the plugin with debug info (release profile + CARGO_PROFILE_RELEASE_DEBUG=true) for
#     $UWSGI_PIP_ROUTING, in its own target dir so it never touches target/release of t/test.sh,
#     into a temp build dir the tests load it from (MP_BUILD_DIR);
#  2. runs the tests with MP_VALGRIND=1: every uWSGI they start runs under
#     `valgrind --tool=memcheck --leak-check=full --trace-children=yes` (forked workers, and
#     respawned ones, get their own log), with the harness's timeouts stretched; at each
#     instance's teardown t/memcheck.py reads its logs and the test fails if an error or a
#     definite/indirect leak has a plugin frame in any of its stacks (the rules, the known
#     uWSGI/CPython noise and the positive control are in t/memcheck.py);
#  3. prints t/memcheck.py's summary over every instance's logs (kept in MP_VALGRIND_LOGS).
#
# Only tests without tight timing hold under valgrind (20-50x slower); the default subset covers
# the route action (text, OpenMetrics, HEAD/405, concurrent threads, a bad argument at startup),
# the dedicated server on TCP and UNIX (statuses, 400/431, the deadline, values against the
# stats server, the socket file's lifecycle, basic auth), hostile clients, and scrapes on every
# front end while --max-requests recycles the workers (forked again from the master).
#
# Environment knobs:
#   VG_TARGET_DIR=...    cargo target dir (default /tmp/metrics_prometheus-valgrind-target)
#   VG_REF=<git rev>     build the plugin from `git archive <rev>` instead of the working tree
#   VG_KEEP=1            keep the temp dir (build, logs) instead of removing it
#   MP_TIMEOUT_FACTOR=10 the harness's timeout multiplier under valgrind (t/conftest.py)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$SECONDS

VG_TESTS=(
  't/test_route.py::test_both_formats_parse_and_lint_clean[pip-routing]'
  't/test_route.py::test_head_405_and_query_string[pip-routing]'
  't/test_route.py::test_concurrent_scrapes_in_threads_and_async_cores[pip-routing-args1]'
  't/test_route.py::test_bad_route_argument_stops_startup[pip-routing]'
  't/test_server.py::test_statuses_on_tcp_and_unix[pip-routing]'
  't/test_server.py::test_values_agree_with_stats_server[pip-routing]'
  't/test_server.py::test_deadline_closes_a_silent_client'
  't/test_server.py::test_unix_socket_file_lifecycle'
  't/test_faults.py::test_basic_auth'
  't/test_memcheck_run.py::test_scrapes_on_every_front_end_while_workers_are_recycled'
  't/test_hostile.py::test_hostile_client[tls_hello-tcp]'
  't/test_hostile.py::test_hostile_client[header_1mb-unix]'
  't/test_hostile.py::test_hostile_client[pipelined-tcp]'
  't/test_hostile.py::test_hostile_client[rst_mid_response-unix]'
  't/test_hostile.py::test_hostile_client[slowloris-tcp]'
  't/test_hostile.py::test_hostile_client[500_connections-unix]'
  't/test_histogram.py::test_counts_survive_respawns'
  't/test_histogram.py::test_route_scrapes_are_counted'
  't/test_routes.py::test_overflow_goes_to_other_and_is_counted[pip-routing]'
  't/test_routes.py::test_route_action_scrapes_routed_series'
)
if (($# > 0)); then
  VG_TESTS=("$@")
fi

MP_ENV=${MP_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics_prometheus}
if [[ ! -f $MP_ENV/env ]]; then
  bash t/setup.sh
fi
# shellcheck disable=SC1091
. "$MP_ENV/env"
UWSGI=$UWSGI_PIP_ROUTING
PY=$MP_TOOLS/bin/python
VG_TARGET_DIR=${VG_TARGET_DIR:-${TMPDIR:-/tmp}/metrics_prometheus-valgrind-target}

log() { printf '[valgrind.sh +%ss] %s\n' "$((SECONDS - START))" "$*" >&2; }

if ! command -v valgrind >/dev/null; then
  log "valgrind missing: installing it (apt-get install -y valgrind)"
  apt-get install -y valgrind >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mp-valgrind.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ ${VG_KEEP:-0} == 1 ]]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  log "done in $((SECONDS - START))s, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. Build.
SRC=$ROOT
if [[ -n ${VG_REF:-} ]]; then
  SRC=$TMP/src
  mkdir -p "$SRC"
  git -C "$ROOT" archive "$VG_REF" | tar -x -C "$SRC"
  log "building from $VG_REF ($(git -C "$ROOT" rev-parse --short "$VG_REF")) in $SRC"
else
  log "building the working tree at $(git -C "$ROOT" rev-parse --short HEAD)" \
    "($(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock build.rs wrapper.h | wc -l) modified files)"
fi
if ! (
  cd "$SRC"
  UWSGI_BIN=$UWSGI CARGO_TARGET_DIR=$VG_TARGET_DIR CARGO_PROFILE_RELEASE_DEBUG=true \
    cargo build --release --lib --quiet
); then
  log "the plugin does not build"
  exit 2
fi
PLUGIN=$TMP/build/pip-routing/metrics_prometheus_plugin.so
mkdir -p "$(dirname "$PLUGIN")"
cp "$VG_TARGET_DIR/release/libmetrics_prometheus.so" "$PLUGIN"
# The deadline test runs the fault-injection build (its deadline can be shortened).
if ! (
  cd "$SRC"
  UWSGI_BIN=$UWSGI CARGO_TARGET_DIR=$VG_TARGET_DIR-faults CARGO_PROFILE_RELEASE_DEBUG=true \
    cargo build --release --lib --quiet --features fault-injection
); then
  log "the fault-injection plugin does not build"
  exit 2
fi
mkdir -p "$TMP/build/pip-routing-faults"
cp "$VG_TARGET_DIR-faults/release/libmetrics_prometheus.so" \
  "$TMP/build/pip-routing-faults/metrics_prometheus_plugin.so"
if ! readelf -S "$PLUGIN" | grep -q '\.debug_info'; then
  log "the plugin has no debug info: stacks could not be attributed"
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# 2. The tests, every uWSGI under valgrind.
log "running ${#VG_TESTS[@]} test selection(s) under valgrind"
TEST_RC=0
MP_VALGRIND=1 MP_BUILD_DIR=$TMP/build MP_VALGRIND_LOGS=$TMP/logs \
  "$MP_TOOLS/bin/pytest" -p no:cacheprovider -ra --timeout 600 --durations=5 "${VG_TESTS[@]}" \
  || TEST_RC=$?
log "pytest exited with $TEST_RC"

# ---------------------------------------------------------------------------------------------
# 3. One summary over every instance's logs.
MEMCHECK_RC=0
shopt -s nullglob
LOGDIRS=("$TMP"/logs/*/)
if ((${#LOGDIRS[@]} == 0)); then
  log "no valgrind logs: no uWSGI was started"
  exit 2
fi
log "memcheck summary over ${#LOGDIRS[@]} uWSGI instances"
"$PY" t/memcheck.py --allow-incomplete-children --plugin "$PLUGIN" --src "$SRC" "${LOGDIRS[@]}" \
  || MEMCHECK_RC=$?

if ((MEMCHECK_RC == 1)); then
  log "RESULT: memcheck found errors/leaks attributable to the plugin"
  exit 1
fi
if ((TEST_RC != 0 || MEMCHECK_RC != 0)); then
  log "RESULT: inconclusive (pytest rc $TEST_RC, memcheck rc $MEMCHECK_RC)"
  exit 2
fi
log "RESULT: clean: nothing attributable to the plugin"
exit 0
