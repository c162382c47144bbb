#!/usr/bin/env bash
# Cost of the request-latency histogram (the plugin's after-request hook), in one run:
# instructions per hook call (callgrind) with an ns estimate calibrated on this machine, and
# wrk throughput of plain uWSGI vs the plugin (histograms on, scraped once per second) vs the
# plugin with --prometheus-no-histograms, alternated round by round. See request_overhead.py.
#
#   bash bench/request_overhead.sh                 # builds the plugin like t/test.sh (~5 min run)
#   PLUGIN=/path/metrics_prometheus_plugin.so bash bench/request_overhead.sh   # no build
#   bash bench/request_overhead.sh --rounds 7 --duration 8 --keep   # options of request_overhead.py
#
# Needs valgrind, wrk and a C compiler (installed with apt-get when missing) and the uWSGI of
# t/setup.sh (pip 2.0.31 with routing, $UWSGI_PIP_ROUTING).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MP_ENV=${MP_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics_prometheus}
if [[ ! -f $MP_ENV/env ]]; then
  bash t/setup.sh
fi
# shellcheck disable=SC1091
. "$MP_ENV/env"
PY=$MP_TOOLS/bin/python
[[ -x $PY ]] || PY=$(command -v python3)

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v wrk >/dev/null || missing+=(wrk)
command -v cc >/dev/null || missing+=(gcc)
if ((${#missing[@]})); then
  echo "[request_overhead.sh] installing ${missing[*]} (apt-get)" >&2
  apt-get install -y "${missing[@]}" >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mp-request-overhead-build.XXXXXX")
CHILD=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # request_overhead.py kills its own uWSGI process groups when it gets SIGTERM
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z ${PLUGIN:-} ]]; then
  echo "[request_overhead.sh] building the plugin for $UWSGI_PIP_ROUTING (cargo build --release --lib)" >&2
  UWSGI_BIN=$UWSGI_PIP_ROUTING cargo build --release --lib
  PLUGIN=$TMP/metrics_prometheus_plugin.so
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/libmetrics_prometheus.so" "$PLUGIN"
fi
[[ -f $PLUGIN ]] || { echo "no plugin at $PLUGIN" >&2; exit 2; }

"$PY" "$ROOT/bench/request_overhead.py" --uwsgi "$UWSGI_PIP_ROUTING" --plugin "$PLUGIN" "$@" &
CHILD=$!
wait "$CHILD"
