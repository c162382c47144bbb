"""Trivial WSGI app for bench/request_overhead.sh: 200, a fixed 3-byte body, nothing else."""

BODY = b'ok\n'
HEADERS = [('Content-Type', 'text/plain'), ('Content-Length', str(len(BODY)))]


def application(environ, start_response):
    start_response('200 OK', HEADERS)
    return [BODY]
