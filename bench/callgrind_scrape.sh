#!/usr/bin/env bash
# Instructions per scrape of the dedicated server (--prometheus-server), counted by callgrind:
# uWSGI runs under `valgrind --tool=callgrind` with collection only inside the plugin's
# scrape::render (the live fill, the histogram copy and the render), W warm-up scrapes are
# discarded (callgrind_control --zero), then N scrapes are counted and dumped.
# Instruction counts (Ir) are stable on a noisy machine; syscall time (--collect-systime) is
# printed too but is wall time, so noisy. Kernel work is not in Ir: the /proc reads show up as
# sysCount/sysTime only.
#
#   bash bench/callgrind_scrape.sh [workers=16] [threads=32] [N=50]
#   env: UWSGI (default $UWSGI_PIP_ROUTING), PLUGIN (default build/pip-routing/...so),
#        KEEP=1 keeps the temp dir (callgrind.out.* for callgrind_annotate)
#
# Prints: Ir per scrape (total, and the top functions inclusive), syscalls per scrape.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "${MP_ENV:-$HOME/.cache/metrics_prometheus}/env"
WORKERS=${1:-16}
THREADS=${2:-32}
N=${3:-50}
W=5
UWSGI=${UWSGI:-$UWSGI_PIP_ROUTING}
PLUGIN=${PLUGIN:-$ROOT/build/pip-routing/metrics_prometheus_plugin.so}
TMP=$(mktemp -d /tmp/mp-callgrind.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PROM=$(port)
HTTP=$(port)
cleanup() {
  if [ -n "${PID:-}" ]; then kill -INT "$PID" 2>/dev/null || true; fi
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if [ -n "${PID:-}" ]; then kill -KILL "$PID" 2>/dev/null || true; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT
cd "$TMP"
valgrind --tool=callgrind --collect-atstart=no --collect-systime=nsec \
  --toggle-collect='metrics_prometheus::scrape::render' \
  --callgrind-out-file="$TMP/callgrind.out.%p" \
  "$UWSGI" --need-plugin "$PLUGIN" --http-socket "127.0.0.1:$HTTP" \
  --wsgi-file "$ROOT/t/apps/app.py" --workers "$WORKERS" --threads "$THREADS" \
  --prometheus-server "127.0.0.1:$PROM" --die-on-term >"$TMP/uwsgi.log" 2>&1 &
PID=$!
scrape() { python3 - "$PROM" "$1" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    with socket.create_connection(('127.0.0.1', port), timeout=60) as s:
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
        while s.recv(262144):
            pass
EOF
}
for _ in $(seq 600); do
  [ "$(grep -c 'spawned uWSGI worker' "$TMP/uwsgi.log" || true)" -ge "$WORKERS" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/uwsgi.log"; exit 1; }
  sleep 0.5
done
sleep 3
scrape "$W"
callgrind_control --zero "$PID" >/dev/null
scrape "$N"
callgrind_control --dump=scrapes "$PID" >/dev/null
sleep 1
OUT="$TMP/callgrind.out.$PID.1"
echo "uWSGI $("$UWSGI" --version), $WORKERS workers x $THREADS threads, $N scrapes counted"
python3 - "$OUT" "$N" <<'EOF'
import re, subprocess, sys
out, n = sys.argv[1], int(sys.argv[2])
text = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100', out],
                      capture_output=True, text=True).stdout
events = re.search(r'^Events shown:\s+(.*)$', text, re.M).group(1).split()
rows = []
for line in text.splitlines():
    m = re.match(r'^\s*([\d,]+ \([^)]*\)\s+)+(?:[\d,. ]+)?\s*(\S.*?)\s*$', line)
    nums = re.findall(r'([\d,]+) \(', line)
    if nums and '  ' in line and ':' in line and len(nums) == len(events):
        name = line.split(')')[-1].strip()
        rows.append((dict(zip(events, (int(x.replace(',', '')) for x in nums))), name))
tot = re.search(r'^([\d,]+ \([^)]*\).*)\s+PROGRAM TOTALS', text, re.M).group(1)
tot = dict(zip(events, (int(x.replace(',', '')) for x in re.findall(r'([\d,]+) \(', tot))))
print('per scrape: Ir %d, syscalls %.1f, syscall time %.1f us'
      % (tot['Ir'] / n, tot.get('sysCount', 0) / n, tot.get('sysTime', 0) / n / 1e3))
print('%12s %8s %10s  %s' % ('Ir/scrape', 'sys/scr', 'sys us/scr', 'function (inclusive)'))
for ev, name in rows[:40]:
    print('%12d %8.1f %10.1f  %s' % (ev['Ir'] / n, ev.get('sysCount', 0) / n,
                                     ev.get('sysTime', 0) / n / 1e3, name[:110]))
EOF
