"""WSGI app used by the demo and the integration tests."""
import mmap
import os
import sys
import time

# /grow and /reserve keep what they allocate for the life of the worker.
HELD = []


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    if path == '/slow':
        time.sleep(float(environ.get('QUERY_STRING') or 2))
    elif path == '/error':
        raise RuntimeError('requested failure')
    elif path == '/grow':
        # /grow?MB: MB more resident memory (the bytes are written, so the pages are touched).
        HELD.append(b'x' * (int(environ.get('QUERY_STRING') or 1) << 20))
    elif path == '/reserve':
        # /reserve?MB: MB more address space, untouched (an anonymous mapping).
        HELD.append(mmap.mmap(-1, int(environ.get('QUERY_STRING') or 1) << 20))
    elif path == '/sys-exit':
        sys.exit(int(environ.get('QUERY_STRING') or 3))
    elif path == '/os-exit':
        os._exit(int(environ.get('QUERY_STRING') or 3))
    elif path == '/metric':
        import uwsgi
        uwsgi.metric_inc('myapp.jobs.done')
    elif path == '/cache':
        import uwsgi
        uwsgi.cache_update('key', 'value', 0, 'mycache')
        uwsgi.cache_get('key', 'mycache')
        uwsgi.cache_get('missing', 'mycache')
    status = '200 OK'
    if path == '/status':
        # /status?404 answers with that status (the request-histogram tests).
        code = environ.get('QUERY_STRING') or '200'
        status = '%s %s' % (code, 'Status')
    body = ('hello from %s\n' % path).encode()
    start_response(status, [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
