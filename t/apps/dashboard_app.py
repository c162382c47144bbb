"""t/apps/app.py plus two cache paths for the dashboard test and picture (t/dashload.py), on the
cache `mycache`:
  /cachekey?KEY   looks KEY up, and stores it when missing (a hit, or a miss and a store,
                  refused once the cache is full);
  /cacheclear     empties the cache.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app import application as base  # noqa: E402


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    if path not in ('/cachekey', '/cacheclear'):
        return base(environ, start_response)
    import uwsgi
    if path == '/cacheclear':
        uwsgi.cache_clear('mycache')
        body = b'cleared\n'
    else:
        key = environ.get('QUERY_STRING') or 'key'
        body = b'hit\n'
        if uwsgi.cache_get(key, 'mycache') is None:
            uwsgi.cache_set(key, 'value', 0, 'mycache')
            body = b'miss\n'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
