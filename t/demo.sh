#!/usr/bin/env bash
# Installs what is needed, builds the plugin for pip's uWSGI 2.0.31 (with routing) and starts a
# demo uWSGI in the foreground with both front ends on the bundled app. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=t/env.sh
. t/env.sh

UWSGI=${UWSGI_BIN:-$UWSGI_PIP_ROUTING}
echo "building the plugin for $UWSGI ($("$UWSGI" --version))"
UWSGI_BIN=$UWSGI cargo build --release --lib
mkdir -p build/demo
cp "${CARGO_TARGET_DIR:-target}/release/libmetrics_prometheus.so" build/demo/metrics_prometheus_plugin.so

# The Python half of the application metrics, into the interpreter this uWSGI runs (its venv).
VENV_PIP=$(dirname "$UWSGI")/pip
if [ -x "$VENV_PIP" ] && [ -f "$(dirname "$UWSGI")/activate" ]; then
  "$VENV_PIP" install -q --no-deps --force-reinstall ./python
  rm -rf python/build python/*.egg-info
else
  echo "$UWSGI is not in a venv: install ./python into its Python yourself (pip install ./python)"
fi

DEMO_HTTP=${DEMO_HTTP:-127.0.0.1:8080}
DEMO_METRICS=${DEMO_METRICS:-127.0.0.1:9290}
DEMO_STATS=${DEMO_STATS:-127.0.0.1:9291}
sed -e "s|@MP_PLUGIN@|$ROOT/build/demo/metrics_prometheus_plugin.so|" \
    -e "s|@MP_ROOT@|$ROOT|" -e "s|@DEMO_HTTP@|$DEMO_HTTP|" \
    -e "s|@DEMO_METRICS@|$DEMO_METRICS|" -e "s|@DEMO_STATS@|$DEMO_STATS|" \
    t/apps/demo.ini > build/demo/demo.ini
cat <<MSG

  app:                         http://$DEMO_HTTP/   (/metric bumps a custom metric, /slow?5 sleeps;
                               every request counts in the app's own demo_requests_total)
  route action (app port):     http://$DEMO_HTTP/metrics
  prometheus-server (master):  http://$DEMO_METRICS/metrics
  uWSGI stats server (JSON):   http://$DEMO_STATS/

  try: curl -s http://$DEMO_METRICS/metrics | promtool check metrics
  Ctrl-C stops uWSGI.

MSG
exec "$UWSGI" --ini build/demo/demo.ini
