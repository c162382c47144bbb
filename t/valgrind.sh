#!/usr/bin/env bash
# Memcheck run of the plugin inside a real uWSGI (pip 2.0.31, with routing).
#
#   bash t/valgrind.sh            # exit 0: nothing attributable to the plugin
#                                 # exit 1: at least one error/leak whose stack involves the plugin
#                                 # exit 2: the run itself failed (build, startup, workload,
#                                 #         incomplete valgrind logs, or the positive control:
#                                 #         no plugin frame recognised at all): inconclusive
#
# What it does:
#  1. builds the plugin with debug info (release profile + CARGO_PROFILE_RELEASE_DEBUG=true) for
#     $UWSGI_PIP_ROUTING, in its own target dir so it never touches target/release of t/test.sh;
#  2. starts uWSGI under `valgrind --tool=memcheck --leak-check=full --trace-children=yes`
#     (forked workers, and respawned ones, get their own log vg.<pid>.log) with 2 workers x 2
#     threads, an http-socket with the `prometheus-metrics` route, a TCP and a UNIX
#     `--prometheus-server`, a custom metric, a cache, the stats server and `--max-requests`
#     (so workers are respawned by the master after the server exists: pthread_atfork path);
#  3. drives a workload (an embedded Python script, stdlib only): hundreds of scrapes on both
#     front ends in text and OpenMetrics, HEAD, 404/405/400/431, idle connections beyond the
#     64-connection cap, half-sent requests, clients that reset mid-response or read slowly,
#     app requests (including /error, which raises), the stats server; then stops uWSGI with
#     SIGINT and waits for every process to finish its leak check;
#  4. parses every valgrind log. Each error (invalid read/write/free, uninitialised values,
#     syscall params, crashes) and each definite/indirect leak is attributed to the PLUGIN when
#     any frame of any of its stacks (access, alloc/free, origin) is in the plugin: a
#     `metrics_prometheus` symbol, the C shim (`uwsgi_rs_*`), a Rust frame (a `.rs` file or a
#     Rust-only crate path: uWSGI and Python contain no Rust, so any Rust frame is in the
#     plugin's .so), a file under the plugin's source tree, or the .so itself. Everything else
#     is uWSGI/Python/glibc's; known, explained noise is listed separately (NOISE in the parser).
#     "possibly lost" blocks are reported for information only.
#
# Noise is ignored in the parser, never with valgrind suppression files: a valgrind suppression
# matches stack frames top-down and cannot say "and no plugin frame below", so it could hide a
# plugin leak made through a uWSGI helper (uwsgi_malloc, uwsgi_concat2...). The parser only
# ignores records with no plugin frame at all.
#
# Environment knobs:
#   VG_SCRAPES=300          scrapes per endpoint (route, TCP server, UNIX server)
#   VG_TARGET_DIR=...       cargo target dir (default /tmp/metrics_prometheus-valgrind-target)
#   VG_REF=<git rev>        build from `git archive <rev>` instead of the working tree
#   VG_KEEP=1               keep the temp dir (logs) instead of removing it
#   VG_START_TIMEOUT=240 VG_DRIVE_TIMEOUT=900 VG_STOP_TIMEOUT=300   (seconds)
#
# Everything lives in one temp dir under ${TMPDIR:-/tmp}; a trap kills only the processes this
# script started (the workload driver, and the session it created for uWSGI: master + workers)
# and removes the temp dir, on success, failure or interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$SECONDS

MP_ENV=${MP_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics_prometheus}
if [[ ! -f $MP_ENV/env ]]; then
  bash t/setup.sh
fi
# shellcheck disable=SC1091
. "$MP_ENV/env"
UWSGI=$UWSGI_PIP_ROUTING
PY=$MP_TOOLS/bin/python
[[ -x $PY ]] || PY=$(command -v python3)

VG_SCRAPES=${VG_SCRAPES:-300}
VG_TARGET_DIR=${VG_TARGET_DIR:-${TMPDIR:-/tmp}/metrics_prometheus-valgrind-target}
VG_START_TIMEOUT=${VG_START_TIMEOUT:-240}
VG_DRIVE_TIMEOUT=${VG_DRIVE_TIMEOUT:-900}
VG_STOP_TIMEOUT=${VG_STOP_TIMEOUT:-300}

log() { printf '[valgrind.sh +%ss] %s\n' "$((SECONDS - START))" "$*" >&2; }

if ! command -v valgrind >/dev/null; then
  log "valgrind missing: installing it (apt-get install -y valgrind)"
  apt-get install -y valgrind >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mp-valgrind.XXXXXX")
VG_PID=""
DRIVER_PID=""

# Kills only what this script started: the driver, and every process of the session created
# for uWSGI (`setsid` below makes the valgrind'd master a session leader; its workers inherit the
# session; Linux never reuses a pid while it is still a session id, so `ps -s` cannot name a
# stranger).
kill_ours() {
  if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
  fi
  if [[ -n $VG_PID ]]; then
    local p
    for p in $(ps -o pid= -s "$VG_PID" 2>/dev/null || true); do
      kill -KILL "$p" 2>/dev/null || true
    done
    wait "$VG_PID" 2>/dev/null || true
  fi
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  kill_ours
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
PLUGIN=$TMP/metrics_prometheus_plugin.so
cp "$VG_TARGET_DIR/release/libmetrics_prometheus.so" "$PLUGIN"
if ! readelf -S "$PLUGIN" | grep -q '\.debug_info'; then
  log "the plugin has no debug info: stacks could not be attributed"
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# 2. Start uWSGI under valgrind.
read -r HTTP_PORT SRV_PORT STATS_PORT < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
UNIX_SOCK=$TMP/metrics.sock

VALGRIND=(
  valgrind --tool=memcheck
  --leak-check=full
  --show-leak-kinds=all       # printed; only definite+indirect are verdicts, "still reachable"
                              # blocks of the plugin are the parser's positive control
  --errors-for-leak-kinds=definite,indirect
  --track-origins=yes                          # origin stacks for uninitialised values
  --trace-children=yes
  --track-fds=no
  --num-callers=50                             # deep enough to reach the plugin's frames
  --error-exitcode=99                          # master's exit code; uWSGI's own leaks set it too
  --vgdb=no                                    # no vgdb FIFOs left in /tmp
  --fullpath-after="$SRC/"                     # plugin sources show as src/<file>.rs
  --log-file="$TMP/vg.%p.log"
)
UWSGI_ARGS=(
  --need-plugin "$PLUGIN"
  --master --workers 2 --threads 2
  --http-socket "127.0.0.1:$HTTP_PORT"
  --wsgi-file "$ROOT/t/apps/app.py"
  --route '^/metrics$ prometheus-metrics:'
  --prometheus-server "127.0.0.1:$SRV_PORT"
  --prometheus-server "$UNIX_SOCK"
  --metric myapp.jobs.done
  --cache2 name=mycache,items=16
  --stats "127.0.0.1:$STATS_PORT"
  --max-requests 150          # workers are respawned (forked from the master) mid-run
  --worker-reload-mercy 240   # a worker's leak check is slow: never SIGKILL it for that
  --reload-mercy 240
)
log "starting uWSGI under valgrind: http $HTTP_PORT, prometheus-server $SRV_PORT + $UNIX_SOCK, stats $STATS_PORT"
# VALGRIND_OPTS from the caller would change the log format the parser reads.
# PYTHONMALLOC=malloc: CPython's pymalloc reads its arena headers in a way memcheck reports as
# invalid reads / uninitialised jumps (address_in_range) unless CPython was built
# --with-valgrind; plain malloc gives exact reports whatever the build.
# PYTHONDONTWRITEBYTECODE: nothing written next to t/apps/app.py.
env -u VALGRIND_OPTS PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' \
  "${VALGRIND[@]}" "$UWSGI" "${UWSGI_ARGS[@]}" >"$TMP/uwsgi.log" 2>&1 </dev/null &
VG_PID=$!

deadline=$((SECONDS + VG_START_TIMEOUT))
until grep -qs 'spawned uWSGI worker 2' "$TMP/uwsgi.log" && [[ -S $UNIX_SOCK ]]; do
  if ! kill -0 "$VG_PID" 2>/dev/null; then
    log "uWSGI exited during startup:"
    tail -30 "$TMP/uwsgi.log" >&2
    exit 2
  fi
  if ((SECONDS > deadline)); then
    log "uWSGI not ready after ${VG_START_TIMEOUT}s:"
    tail -30 "$TMP/uwsgi.log" >&2
    exit 2
  fi
  sleep 0.5
done
grep -m1 '\[metrics_prometheus\]' "$TMP/uwsgi.log" >&2 || true
log "uWSGI up (master pid $VG_PID)"

# ---------------------------------------------------------------------------------------------
# 3. Workload.
cat >"$TMP/drive.py" <<'PY'
"""Workload for t/valgrind.sh: exercises every path of both front ends; asserts the answers so
a run that silently stopped exercising the plugin cannot pass."""
import collections
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

HTTP = ('tcp', int(os.environ['VG_HTTP_PORT']))
SRV = ('tcp', int(os.environ['VG_SRV_PORT']))
UNIX = ('unix', os.environ['VG_UNIX_SOCK'])
STATS = ('tcp', int(os.environ['VG_STATS_PORT']))
N = int(os.environ['VG_SCRAPES'])
OM = 'application/openmetrics-text; version=1.0.0; charset=utf-8'
T = 60  # per-socket timeout: everything is ~20-50x slower under memcheck

lock = threading.Lock()
counts = collections.Counter()
failures = []


def fail(msg):
    with lock:
        failures.append(msg)


def count(name):
    with lock:
        counts[name] += 1


def connect(ep, rcvbuf=None):
    fam = socket.AF_UNIX if ep[0] == 'unix' else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(T)
    s.connect(ep[1] if ep[0] == 'unix' else ('127.0.0.1', ep[1]))
    return s


def rst_close(s):
    """Close with a RST (SO_LINGER 0) instead of a FIN: the peer sees ECONNRESET."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    except OSError:
        pass
    s.close()


def read_all(s):
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def request(ep, raw):
    s = connect(ep)
    try:
        s.sendall(raw)
        data = read_all(s)
    finally:
        s.close()
    head, _, body = data.partition(b'\r\n\r\n')
    lines = head.split(b'\r\n')
    if not lines[0].startswith(b'HTTP/'):
        return None, {}, data
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b':')
        headers[k.strip().lower().decode()] = v.strip().decode('latin-1')
    return status, headers, body


def req(method, path, headers=(), body=b''):
    lines = ['%s %s HTTP/1.1' % (method, path), 'Host: 127.0.0.1', 'Connection: close']
    lines += ['%s: %s' % h for h in headers]
    if body:
        lines.append('Content-Length: %d' % len(body))
    return ('\r\n'.join(lines) + '\r\n\r\n').encode() + body


def expect(name, ep, raw, statuses, check=None):
    if isinstance(statuses, int):
        statuses = (statuses,)
    try:
        status, headers, body = request(ep, raw)
    except OSError as e:
        fail('%s: %r' % (name, e))
        return
    count(name)
    if status not in statuses:
        fail('%s: status %r, expected %r: %r' % (name, status, statuses, body[:200]))
        return
    if check:
        msg = check(headers, body)
        if msg:
            fail('%s: %s' % (name, msg))


def check_text(h, b):
    if not h.get('content-type', '').startswith('text/plain; version=0.0.4'):
        return 'content-type %r' % h.get('content-type')
    if b'\nuwsgi_up 1\n' not in b or int(h.get('content-length', -1)) != len(b):
        return 'bad text body (%d bytes)' % len(b)


def check_om(h, b):
    if not h.get('content-type', '').startswith('application/openmetrics-text'):
        return 'content-type %r' % h.get('content-type')
    if not b.endswith(b'# EOF\n') or int(h.get('content-length', -1)) != len(b):
        return 'bad OpenMetrics body (%d bytes)' % len(b)


def check_head(h, b):
    if b or int(h.get('content-length', 0)) <= 0:
        return 'HEAD: body %d bytes, content-length %r' % (len(b), h.get('content-length'))


def wait_ready(deadline):
    for ep in (HTTP, SRV, UNIX):
        while True:
            try:
                status, _, _ = request(ep, req('GET', '/metrics'))
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit('endpoint %r never answered 200' % (ep,))
            time.sleep(0.5)


# --- scrapes (route action, TCP server, UNIX server), text and OpenMetrics, 4 clients at once
def scraper(idx, n):
    eps = [('route', HTTP), ('tcp', SRV), ('unix', UNIX)]
    for i in range(n):
        name, ep = eps[(idx + i) % 3]
        if (idx + i) % 2:
            expect('scrape %s om' % name, ep, req('GET', '/metrics', [('Accept', OM)]), 200, check_om)
        else:
            expect('scrape %s text' % name, ep, req('GET', '/metrics'), 200, check_text)


# --- application traffic, concurrently with the scrapes
def app_traffic(n):
    for i in range(n):
        expect('app /metric', HTTP, req('GET', '/metric'), 200)
        if i % 4 == 0:
            expect('app /', HTTP, req('GET', '/'), 200)
            expect('app /cache', HTTP, req('GET', '/cache'), 200)
        if i % 8 == 0:
            # the app raises: uWSGI logs the traceback and closes without a response (None)
            expect('app /error', HTTP, req('GET', '/error'), (None, 500))
            expect('app /slow', HTTP, req('GET', '/slow?0.2'), 200)


# --- one connection left half-sent past the server's 10 s deadline
def deadline_conn(result):
    try:
        s = connect(SRV)
        s.sendall(b'GET /metr')
        s.settimeout(40)
        t0 = time.monotonic()
        data = s.recv(4096)  # the server closes it (deadline, or evicted at the connection cap)
        result.append(('closed', round(time.monotonic() - t0, 1), data[:40]))
        s.close()
    except OSError as e:
        result.append(('error', repr(e)))


def edge_cases():
    for ep_name, ep in (('tcp', SRV), ('unix', UNIX)):
        e = lambda name, *a: expect('server %s %s' % (ep_name, name), ep, *a)  # noqa: E731
        e('HEAD', req('HEAD', '/metrics'), 200, check_head)
        e('HEAD om', req('HEAD', '/metrics', [('Accept', OM)]), 200, check_head)
        e('index', req('GET', '/'), 200, lambda h, b: None if b'<html' in b else 'no html')
        e('404', req('GET', '/nope'), 404)
        e('404 subpath', req('GET', '/metrics/x'), 404)
        e('query', req('GET', '/metrics?x=1&y'), (200, 404))
        for m in ('POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'):
            e('405 ' + m, req(m, '/metrics', body=b'x=1' if m in ('POST', 'PUT') else b''), 405)
        e('GET with body', req('GET', '/metrics', body=b'abcdef'), (200, 400), None)
        e('400 tls', b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + bytes(range(256)) + b'\r\n\r\n', 400)
        e('400 bare', b'GET\r\n\r\n', 400)
        e('400 version', b'GET /metrics HTTP/9.9\r\n\r\n', 400)
        e('400 nul', b'GET /metrics HTTP/1.1\r\nX: a\x00b\r\n\r\n', 400)
        e('431 lines', b'GET /metrics HTTP/1.1\r\n' + b'X-A: b\r\n' * 70 + b'\r\n', 431)
        e('431 bytes', b'GET /metrics HTTP/1.1\r\nX: ' + b'a' * 9000 + b'\r\n\r\n', 431)
        e('431 no end', b'GET /metrics HTTP/1.1\r\nX: ' + b'a' * 20000, (431, 400))
        e('http/1.0', b'GET /metrics HTTP/1.0\r\n\r\n', 200, check_text)
        e('pipelined', req('GET', '/metrics') + req('GET', '/'), 200, check_text)
        for acc in ('application/openmetrics-text;q=0.1, text/plain;q=0.9', '*/*',
                    'text/plain;version=0.0.4', 'a,,,;;;q=x,=,;', 'application/openmetrics-text; version=0.0.1',
                    ', '.join(['text/html;q=0.%d' % (i % 10) for i in range(300)])):
            e('accept', req('GET', '/metrics', [('Accept', acc)]), 200)
        # trickle: one byte per send
        try:
            s = connect(ep)
            for byte in req('GET', '/metrics', [('Accept', OM)]):
                s.send(bytes([byte]))
                time.sleep(0.002)
            data = read_all(s)
            s.close()
            count('server %s trickle' % ep_name)
            if not data.startswith(b'HTTP/1.1 200') or not data.endswith(b'# EOF\n'):
                fail('trickle on %s: %r' % (ep_name, data[:100]))
        except OSError as ex:
            fail('trickle on %s: %r' % (ep_name, ex))

    for ep_name, ep in (('route', HTTP),):
        e = lambda name, *a: expect('%s %s' % (ep_name, name), ep, *a)  # noqa: E731
        e('HEAD', req('HEAD', '/metrics'), 200, check_head)
        e('HEAD om', req('HEAD', '/metrics', [('Accept', OM)]), 200, check_head)
        e('query', req('GET', '/metrics?x=1'), 200, check_text)
        for m in ('POST', 'PUT', 'DELETE', 'OPTIONS'):
            e('405 ' + m, req(m, '/metrics', body=b'x=1' if m in ('POST', 'PUT') else b''), 405)
        # (uWSGI's http-socket refuses request heads over --buffer-size, 4096 by default)
        for acc in ('application/openmetrics-text;q=0.1, text/plain;q=0.9', '*/*', 'a,,,;;;q=x,=,;',
                    ', '.join(['text/html;q=0.%d' % (i % 10) for i in range(150)])):
            e('accept', req('GET', '/metrics', [('Accept', acc)]), 200)

    # stats server (JSON), to have uWSGI's own reader of the same tables running too
    for _ in range(3):
        try:
            s = connect(STATS)
            json.loads(read_all(s))
            s.close()
            count('stats json')
        except (OSError, ValueError) as ex:
            fail('stats: %r' % ex)


def abuse():
    """Idle and half-sent connections beyond the server's cap, then closed mid-way; clients that
    reset before or while reading the response; slow readers (partial writes)."""
    held = []
    for i in range(70):
        try:
            s = connect(SRV)
            if i % 3 == 1:
                s.sendall(b'GET /metr')
            elif i % 3 == 2:
                s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n')
            held.append(s)
        except OSError as ex:
            fail('idle connect %d: %r' % (i, ex))
    for i in range(8):
        try:
            s = connect(UNIX)
            if i % 2:
                s.sendall(b'GET /metrics HTTP/1.1\r\n')
            held.append(s)
        except OSError as ex:
            fail('idle unix connect %d: %r' % (i, ex))
    count('idle connections opened (%d)' % len(held))
    # with 78 idle/trickling connections open, a scrape must still get through (eviction)
    for ep_name, ep in (('tcp', SRV), ('unix', UNIX)):
        for _ in range(3):
            expect('scrape at cap %s' % ep_name, ep, req('GET', '/metrics'), 200, check_text)
    for i, s in enumerate(held):
        if i % 2:
            rst_close(s)
        else:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            s.close()

    # half-sent request, then close (FIN or RST)
    for ep in (SRV, UNIX, HTTP):
        for i in range(6):
            try:
                s = connect(ep)
                s.sendall(b'GET /metrics HTTP/1.1\r\nAccept: text/pl')
                time.sleep(0.05)
                rst_close(s) if i % 2 else s.close()
                count('half-sent then closed')
            except OSError as ex:
                fail('half-sent: %r' % ex)

    # full request, then reset before reading anything (the server's write fails)
    for ep in (SRV, UNIX, HTTP):
        for i in range(8):
            try:
                s = connect(ep)
                s.sendall(req('GET', '/metrics', [('Accept', OM)] if i % 2 else []))
                if i % 4 >= 2:
                    time.sleep(0.1)
                rst_close(s) if ep[0] == 'tcp' else s.close()
                count('request then reset')
            except OSError as ex:
                fail('request then reset: %r' % ex)

    # slow readers: tiny receive buffer, read a little, reset mid-response
    for ep in (SRV, UNIX, HTTP):
        for i in range(4):
            try:
                s = connect(ep, rcvbuf=2048)
                s.sendall(req('GET', '/metrics'))
                time.sleep(0.3)
                s.recv(1000)
                time.sleep(0.3)
                if i % 2:
                    read_all(s)  # finish reading: partial writes to the end
                    count('slow reader complete')
                else:
                    rst_close(s) if ep[0] == 'tcp' else s.close()
                    count('slow reader reset')
                s.close()
            except OSError as ex:
                fail('slow reader: %r' % ex)


def main():
    t0 = time.monotonic()
    deadline = t0 + float(os.environ['VG_DRIVE_TIMEOUT'])
    signal.alarm(int(os.environ['VG_DRIVE_TIMEOUT']) + 90)  # hard stop: SIGALRM kills us
    wait_ready(t0 + 120)
    dl_result = []
    dl = threading.Thread(target=deadline_conn, args=(dl_result,), daemon=True)
    dl.start()
    per_client = N * 3 // 4
    threads = [threading.Thread(target=scraper, args=(i, per_client), daemon=True) for i in range(4)]
    threads.append(threading.Thread(target=app_traffic, args=(max(N // 2, 16),), daemon=True))
    threads.append(threading.Thread(target=edge_cases, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, deadline - time.monotonic()))
    dl.join(max(1, min(45, deadline - time.monotonic())))  # before abuse(): not evicted at the cap
    if not dl_result or dl_result[0][0] != 'closed' or dl_result[0][1] < 9:
        fail('half-sent connection not closed by the 10 s deadline: %r' % dl_result)
    abuse()
    # after the abuse, both front ends still answer
    for ep in (HTTP, SRV, UNIX):
        expect('final scrape', ep, req('GET', '/metrics', [('Accept', OM)]), 200, check_om)
    if any(t.is_alive() for t in threads) or time.monotonic() > deadline:
        fail('workload did not finish within VG_DRIVE_TIMEOUT')
    print('workload: %d requests in %.0fs; deadline connection: %s'
          % (sum(counts.values()), time.monotonic() - t0, dl_result))
    for name, n in sorted(counts.items()):
        print('  %5d  %s' % (n, name))
    if failures:
        print('workload FAILURES (%d):' % len(failures))
        for f in failures[:40]:
            print('  ' + f)
        sys.exit(1)


main()
PY

log "workload: $VG_SCRAPES scrapes per endpoint + edge cases"
DRIVE_RC=0
VG_HTTP_PORT=$HTTP_PORT VG_SRV_PORT=$SRV_PORT VG_UNIX_SOCK=$UNIX_SOCK VG_STATS_PORT=$STATS_PORT \
  VG_SCRAPES=$VG_SCRAPES VG_DRIVE_TIMEOUT=$VG_DRIVE_TIMEOUT \
  "$PY" "$TMP/drive.py" >"$TMP/drive.log" 2>&1 &
DRIVER_PID=$!
wait "$DRIVER_PID" || DRIVE_RC=$?
DRIVER_PID=""
sed 's/^/  /' "$TMP/drive.log" >&2

# ---------------------------------------------------------------------------------------------
# Stop: SIGINT to the master, which SIGINTs the workers and waits for them (each runs its leak
# check first: slow under valgrind).
log "stopping uWSGI (SIGINT to $VG_PID)"
kill -INT "$VG_PID" 2>/dev/null || true
deadline=$((SECONDS + VG_STOP_TIMEOUT))
while kill -0 "$VG_PID" 2>/dev/null && ((SECONDS < deadline)); do
  sleep 0.5
done
STOP_OK=1
if kill -0 "$VG_PID" 2>/dev/null; then
  log "uWSGI still running after ${VG_STOP_TIMEOUT}s: killing it (its logs will be incomplete)"
  STOP_OK=0
  kill_ours
fi
MASTER_RC=0
wait "$VG_PID" || MASTER_RC=$?
# workers outliving the master would still be writing their logs
deadline=$((SECONDS + 60))
while [[ -n $(ps -o pid= -s "$VG_PID" 2>/dev/null) ]] && ((SECONDS < deadline)); do
  sleep 0.5
done
VG_PID_DONE=$VG_PID
kill_ours
VG_PID=""
log "uWSGI exited with $MASTER_RC (valgrind's --error-exitcode=99 also counts uWSGI's own leaks; the verdict comes from the logs)"

# ---------------------------------------------------------------------------------------------
# 4. Parse every valgrind log.
cat >"$TMP/parse.py" <<'PY'
"""Reads every vg.<pid>.log, attributes each error / leak record to the plugin or to
uWSGI/Python, prints a report; exit 1 if anything is attributable to the plugin."""
import collections
import glob
import os
import re
import sys

TMP, PLUGIN, SRC, MASTER = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
PLUGIN_BASENAME = os.path.basename(PLUGIN)

# Known noise of uWSGI / CPython / glibc. A rule is only ever applied to a record with NO plugin
# frame in any of its stacks (so it cannot hide a plugin bug); `stack` needles must all appear,
# in order, in the primary stack (function name or object path), `origin` needles in the
# record's other stacks (allocation / origin of an uninitialised value). The uWSGI rules name
# the allocation site in uWSGI's source and the sizes match (e.g. 766 B = t/apps/app.py + NUL);
# the CPython rules only match stacks whose allocation is inside libpython itself.
NOISE = [
    # core/plugins.c uwsgi_load_plugin(): for a plugin given by path it keeps
    # `uwsgi_concat2(plugin, "")` (the path it dlopen()s) and never frees it. Any plugin.
    dict(name='uwsgi-load-plugin-path', kinds=('definite',),
         stack=['uwsgi_concat2', 'uwsgi_load_plugin']),
    # plugins/python/python_plugin.c uwsgi_python_init(): the wide-char program name handed to
    # Py_SetProgramName() must outlive the interpreter; uWSGI never frees it.
    dict(name='uwsgi-python-program-name', kinds=('definite',),
         stack=['uwsgi_calloc', 'uwsgi_python_init']),
    # plugins/python/pyloader.c uwsgi_pyimport_by_filename(): the --wsgi-file source is read into
    # a buffer, compiled, and the buffer is never freed.
    dict(name='uwsgi-wsgi-file-source', kinds=('definite',),
         stack=['uwsgi_simple_file_read', 'uwsgi_pyimport_by_filename']),
    # core/cache.c uwsgi_cache_create(): the values uwsgi_kvlist_parse() copies out of the
    # `--cache2 name=...,items=...` string are not freed.
    dict(name='uwsgi-cache2-options', kinds=('definite', 'indirect'),
         stack=['uwsgi_kvlist_parse', 'uwsgi_cache_create']),
    # core/master.c master_loop(): `struct uwsgi_rbtree *rb_timers = uwsgi_init_rb_timer();` is
    # a local of the master loop, never freed (tree 16 B + its sentinel node, indirect).
    dict(name='uwsgi-master-rb-timers', kinds=('definite', 'indirect'),
         stack=['uwsgi_init_rb_timer', 'master_loop']),
    # plugins/python/python_plugin.c uwsgi_python_fixup(), run by every worker:
    # `uwsgi.p[30] = uwsgi_malloc(sizeof(struct uwsgi_plugin))`, never freed.
    dict(name='uwsgi-python-fixup', kinds=('definite',),
         stack=['uwsgi_malloc', 'uwsgi_python_fixup']),
    # plugins/python/python_plugin.c init_uwsgi_embedded_module() / init_pyargv(): new objects
    # are stored with PyDict_SetItemString(dict, key, PyLong_FromLong(...)) and similar, which
    # does not steal the reference; the extra reference keeps them (and what they hold) alive
    # after the dict lets go of them.
    dict(name='uwsgi-python-module-refs', kinds=('definite', 'indirect'),
         stack=['init_uwsgi_embedded_module']),
    dict(name='uwsgi-python-argv-refs', kinds=('definite', 'indirect'), stack=['init_pyargv']),
    # CPython objects allocated while the interpreter runs Python code (imports, compile(), the
    # app): uWSGI never calls Py_Finalize() (workers and master exit() with the interpreter
    # alive) and CPython does not free everything even when finalised. Only records whose
    # allocation comes straight from libpython (first frame after the allocator) match.
    dict(name='cpython-unfinalized', kinds=('definite', 'indirect'), stack=['libpython3'],
         first_frame='libpython3'),
    # CPython 3.11 int.from_bytes() (_PyLong_FromByteArray) fills the digits of a _PyLong_New()
    # allocation bit by bit; memcheck reports the later uses of that int (during CPython's own
    # imports at startup and the workers' random reseed) as uninitialised. Use and origin are
    # both inside libpython.
    dict(name='cpython-int-from-bytes', kinds=('uninitialised',), stack=['libpython3'],
         origin=['_PyLong_New', '_PyLong_FromByteArray'], first_frame='libpython3'),
    # glibc: the DTV of a thread still running at exit (uWSGI's metrics collector, cache
    # sweeper, stats server, worker core threads); only referenced from the thread descriptor.
    dict(name='glibc-thread-dtv', kinds=('possible',), stack=['_dl_allocate_tls', 'pthread_create']),
    # CPython: GC-tracked objects are referenced by pointers to their body, past the GC header,
    # so memcheck reports the blocks of live objects as "possibly lost" (information only).
    dict(name='cpython-possibly-lost', kinds=('possible',), stack=['libpython3']),
]
ALLOCATORS = ('malloc', 'calloc', 'realloc', 'memalign', 'posix_memalign', 'aligned_alloc',
              'operator new')


def needles_in_order(text, needles):
    pos = 0
    for needle in needles:
        while pos < len(text) and needle not in text[pos]:
            pos += 1
        if pos == len(text):
            return False
        pos += 1
    return True


HEADER = re.compile(r'^==(\d+)== ?(.*)$')
FRAME = re.compile(r'^\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*) \(([^()]*)\)$')
LEAK = re.compile(r'^([\d,]+)(?: \(([\d,]+) direct, ([\d,]+) indirect\))? bytes in ([\d,]+) blocks '
                  r'are (definitely lost|indirectly lost|possibly lost|still reachable) in loss record')
# Rust-only namespaces (C++'s std:: is not in the list; a Rust std:: frame has a .rs file).
RUST_FUNC = re.compile(r'^<?(?:metrics_prometheus|core|alloc|hashbrown|httparse|parking_lot(?:_core)?'
                       r'|lock_api|itoa|sha2|base64|digest|block_buffer|libc)::'
                       r'|__rust_|__rdl_|__rg_|rust_begin_unwind|rust_panic')


def plugin_frame(func, loc):
    if 'metrics_prometheus' in func or func.startswith('uwsgi_rs_') or RUST_FUNC.search(func):
        return True
    if loc.startswith('in '):
        path = loc[3:]
        return path == PLUGIN or os.path.basename(path) == PLUGIN_BASENAME \
            or 'libmetrics_prometheus' in path
    f = loc.rsplit(':', 1)[0]
    return f.endswith('.rs') or f.startswith('src/') or f.startswith(SRC)


def classify_error(msg):
    if msg.startswith('Invalid read'):
        return 'invalid read'
    if msg.startswith('Invalid write'):
        return 'invalid write'
    if msg.startswith(('Invalid free', 'Mismatched free')):
        return 'invalid free'
    if msg.startswith(('Conditional jump or move depends on uninitialised',
                       'Use of uninitialised value')) or 'uninitialised byte' in msg:
        return 'uninitialised value'
    if msg.startswith('Process terminating with default action of signal'):
        return 'crash'
    if msg.startswith('Warning:'):
        return None
    # anything else memcheck prints with a stack: unaddressable syscall params, overlapping
    # memcpy, fishy malloc arguments, jumps to invalid addresses...
    return 'other error'


class Record:
    def __init__(self, pid, kind, lines):
        self.pid, self.kind, self.lines = pid, kind, lines
        self.frames = []        # (func, loc, section) section 0 = primary stack, 1+ = aux
        section = 0
        for line in lines[1:]:
            m = FRAME.match(line)
            if m:
                self.frames.append((m.group(1), m.group(2), section))
            elif line.strip():
                section += 1    # "Address ... alloc'd", "Uninitialised value was created by"...
        self.plugin_frames = [f for f in self.frames if plugin_frame(f[0], f[1])]
        self.bytes = self.blocks = 0
        m = LEAK.match(lines[0])
        if m:
            self.bytes = int((m.group(2) or m.group(1)).replace(',', ''))  # direct bytes if split
            self.blocks = int(m.group(4).replace(',', ''))
        primary = [f for f in self.frames if f[2] == 0]
        others = [f for f in self.frames if f[2] != 0]
        body = [f for f in primary if not f[0].startswith(ALLOCATORS)]
        self.first = body[0] if body else ('?', '?', 0)
        self.signature = (kind, tuple(f[0] for f in body[:6]))
        self.noise = None
        if not self.plugin_frames:
            text = [f[0] + ' ' + f[1] for f in primary]
            otext = [f[0] + ' ' + f[1] for f in others]
            first = self.first[0] + ' ' + self.first[1]
            for rule in NOISE:
                if not any(kind.startswith(k) for k in rule['kinds']):
                    continue
                if 'first_frame' in rule and rule['first_frame'] not in first:
                    continue
                if needles_in_order(text, rule['stack']) and \
                        needles_in_order(otext, rule.get('origin', [])):
                    self.noise = rule['name']
                    break

    def owner(self):
        """Where the first frame after the allocator lives (plugin records aside)."""
        if self.plugin_frames:
            return 'plugin'
        func, loc = self.first[0], self.first[1]
        if 'libpython' in loc or re.match(r'_?Py', func):
            return 'Python'
        if loc.endswith('/uwsgi') or func.startswith(('uwsgi', 'master_', 'init_uwsgi')):
            return 'uWSGI'
        return 'glibc/other'


def parse(path):
    pid = int(re.search(r'vg\.(\d+)\.log$', path).group(1))
    body = []
    with open(path, errors='replace') as f:
        for raw in f:
            m = HEADER.match(raw.rstrip('\n'))
            if m and int(m.group(1)) == pid:
                body.append(m.group(2))
    info = {'pid': pid, 'complete': any(l.startswith('ERROR SUMMARY:') for l in body),
            'command': next((l[9:] for l in body if l.startswith('Command: ')), '?'),
            'summary': next((l for l in body if l.startswith('ERROR SUMMARY:')), 'no ERROR SUMMARY'),
            'parent': next((l[12:] for l in body if l.startswith('Parent PID: ')), '?')}
    records = []
    blocks, cur = [], []
    for line in body + ['']:
        if line.strip() == '':
            if cur:
                blocks.append(cur)
            cur = []
        else:
            cur.append(line)
    for block in blocks:
        first = block[0]
        m = LEAK.match(first)
        if m:
            kind = {'definitely lost': 'definite leak', 'indirectly lost': 'indirect leak',
                    'possibly lost': 'possible leak', 'still reachable': 'reachable'}[m.group(5)]
            records.append(Record(pid, kind, block))
            continue
        kind = classify_error(first)
        if kind and len(block) > 1 and FRAME.match(block[1]):
            records.append(Record(pid, kind, block))
    return info, records


logs = sorted(glob.glob(os.path.join(TMP, 'vg.*.log')))
infos, records = [], []
for path in logs:
    info, recs = parse(path)
    infos.append(info)
    records.extend(recs)
# Positive control: blocks the plugin still holds at exit (its configuration, the metrics
# layout, the server's buffers...) are "still reachable" with plugin frames in their allocation
# stacks. Finding none would mean the attribution cannot see the plugin's frames at all (no
# debug info, demangling changed...), and a clean verdict would mean nothing.
reachable = [r for r in records if r.kind == 'reachable']
records = [r for r in records if r.kind != 'reachable']
control = [r for r in reachable if r.plugin_frames]

print('=== valgrind logs: %d processes ===' % len(infos))
incomplete = 0
for info in infos:
    role = 'master' if str(info['pid']) == MASTER else 'child of %s' % info['parent']
    flag = '' if info['complete'] else '   <-- INCOMPLETE (process killed before its leak check)'
    incomplete += not info['complete']
    print('  pid %-7d %-16s %s%s' % (info['pid'], role, info['summary'], flag))

KINDS = ['invalid read', 'invalid write', 'invalid free', 'uninitialised value', 'crash',
         'other error', 'definite leak', 'indirect leak', 'possible leak']
# unique contexts (same kind + same top frames, across processes: forked workers inherit the
# master's heap, so one leak of the master shows up in every worker's log too)
groups = collections.OrderedDict()
for r in records:
    key = ('plugin' if r.plugin_frames else 'other',) + r.signature
    groups.setdefault(key, []).append(r)

table = {k: collections.Counter() for k in KINDS}
for key, rs in groups.items():
    r0 = rs[0]
    col = 'plugin' if r0.plugin_frames else ('noise' if r0.noise else 'other')
    table[r0.kind][col] += 1
    table[r0.kind][col + '_occ'] += len(rs)
    table[r0.kind][col + '_bytes'] += sum(r.bytes for r in rs)

print()
print('=== findings: unique contexts (occurrences across processes) ===')
print('  %-22s %-18s %-26s %s' % ('', 'plugin', 'uWSGI/Python: known noise', 'uWSGI/Python: other'))
for k in KINDS:
    c = table[k]
    cell = lambda col: '%d (%d)' % (c[col], c[col + '_occ'])  # noqa: E731
    print('  %-22s %-18s %-26s %s' % (k + ('  [info]' if k == 'possible leak' else ''),
                                      cell('plugin'), cell('noise'), cell('other')))

plugin_groups = [(k, rs) for k, rs in groups.items() if k[0] == 'plugin']
verdict = [(k, rs) for k, rs in plugin_groups if k[1] != 'possible leak']
info_only = [(k, rs) for k, rs in plugin_groups if k[1] == 'possible leak']

print()
print('=== uWSGI/Python records (no plugin frame in any stack), "possibly lost" counted only ===')
possible_rules = collections.Counter()
for key, rs in groups.items():
    if key[0] == 'plugin':
        continue
    r0 = rs[0]
    if r0.kind == 'possible leak':
        possible_rules[r0.noise or 'UNEXPLAINED'] += 1
        continue
    frames = [f[0] for f in r0.frames if f[2] == 0 and not f[0].startswith(ALLOCATORS)][:7]
    size = ('%d B each' % (sum(r.bytes for r in rs) // len(rs))) if r0.kind.endswith('leak') else ''
    print('  %-19s %-7s x%-2d %-11s %s' % (r0.kind, r0.owner(), len(rs), size,
                                         r0.noise or 'UNEXPLAINED (not a plugin frame; see stack)'))
    print('      ' + ' <- '.join(frames))
for name, n in sorted(possible_rules.items()):
    print('  possible leak       %4d unique contexts: %s' % (n, name))

for title, items in (('ATTRIBUTABLE TO THE PLUGIN', verdict),
                     ('plugin frames in "possibly lost" records (information only)', info_only)):
    if not items:
        continue
    print()
    print('=== %s: %d ===' % (title, len(items)))
    for key, rs in items:
        r0 = rs[0]
        print('--- %s, in pids %s' % (r0.kind, sorted({r.pid for r in rs})))
        for line in r0.lines:
            print('    ' + line)

print()
print('positive control: %d "still reachable" records (of %d) carry plugin frames, e.g.:'
      % (len(control), len(reachable)))
for r in control[:2]:
    f = next(f for f in r.frames if 'metrics_prometheus' in f[0] or f[1].startswith('src/'))
    print('    pid %d: %s  [%s (%s)]' % (r.pid, r.lines[0], f[0][:80], f[1]))
# Not a verdict: what the plugin still holds at exit, per process. A per-request leak that stays
# reachable (a growing cache, say) is invisible to the leak checker but would show up here as
# growing with the requests the process served.
held = collections.defaultdict(lambda: [0, 0])
for r in control:
    held[r.pid][0] += r.bytes
    held[r.pid][1] += r.blocks
served = collections.Counter()
try:
    with open(os.path.join(TMP, 'uwsgi.log'), errors='replace') as f:
        for line in f:
            m = re.match(r'\[pid: (\d+)\|', line)
            if m:
                served[int(m.group(1))] += 1
except OSError:
    pass
print('plugin-held memory at exit (still reachable), per process (a worker forked while the '
      'master\'s server had connections open keeps an untouched copy of their buffers: the fork '
      'child handler only closes fds; bounded by the 64-connection cap):')
for pid, (b, n) in sorted(held.items()):
    role = 'master' if str(pid) == MASTER else 'worker, %d requests logged' % served[pid]
    print('    pid %-7d %7d B in %4d blocks  (%s)' % (pid, b, n, role))
nplugin = sum(len(rs) for _, rs in verdict)
print('plugin-attributable: %d unique contexts (%d occurrences); uWSGI/Python: %d unique '
      '(%d known noise), possibly-lost info: %d'
      % (len(verdict), nplugin, sum(1 for k in groups if k[0] != 'plugin'),
         sum(1 for k, rs in groups.items() if k[0] != 'plugin' and rs[0].noise), len(info_only)))
if not infos:
    print('no valgrind logs found')
    sys.exit(2)
if verdict:
    sys.exit(1)
if not control:
    print('POSITIVE CONTROL FAILED: no plugin frame recognised anywhere; the verdict is void')
    sys.exit(2)
sys.exit(3 if incomplete else 0)
PY

PARSE_RC=0
"$PY" "$TMP/parse.py" "$TMP" "$PLUGIN" "$SRC" "$VG_PID_DONE" || PARSE_RC=$?

# plugin panics (caught by its guard) are not memory errors, but worth seeing
if grep -q 'metrics_prometheus.*panic' "$TMP/uwsgi.log"; then
  log "WARNING: the plugin logged a panic:"
  grep 'metrics_prometheus.*panic' "$TMP/uwsgi.log" | head -5 >&2
fi
RESPAWNS=$(grep -c 'Respawned uWSGI worker\|respawned uWSGI worker' "$TMP/uwsgi.log" || true)
log "workers respawned during the run: $RESPAWNS"

if ((PARSE_RC == 1)); then
  log "RESULT: memcheck found errors/leaks attributable to the plugin"
  exit 1
fi
if ((PARSE_RC != 0 && PARSE_RC != 3)); then
  log "RESULT: the log parser failed (rc $PARSE_RC)"
  exit 2
fi
if ((DRIVE_RC != 0 || STOP_OK == 0 || PARSE_RC == 3)); then
  log "RESULT: inconclusive (workload rc $DRIVE_RC, clean stop $STOP_OK, incomplete logs $((PARSE_RC == 3)))"
  exit 2
fi
log "RESULT: clean: nothing attributable to the plugin"
exit 0
