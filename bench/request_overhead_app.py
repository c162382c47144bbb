"""Trivial WSGI app for bench/request_overhead.sh: 200, a fixed 3-byte body, nothing else; with
BENCH_ROUTE_LOGVAR in its environment, it also sets the logvar `route` to that value, as a
framework middleware does for --prometheus-route-label."""
import os

ROUTE = os.environ.get('BENCH_ROUTE_LOGVAR')
if ROUTE:
    import uwsgi

BODY = b'ok\n'
HEADERS = [('Content-Type', 'text/plain'), ('Content-Length', str(len(BODY)))]


def application(environ, start_response):
    if ROUTE:
        uwsgi.set_logvar('route', ROUTE)
    start_response('200 OK', HEADERS)
    return [BODY]
