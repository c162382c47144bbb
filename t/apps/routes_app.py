"""A Flask-like WSGI app for the route-label tests: with ROUTES_LOGVAR=1 in its environment it
sets the logvar `route` to the template of the URL rule that matched, as a framework middleware
would (`uwsgi.set_logvar('route', request.url_rule.rule)`); without it, it sets nothing, and the
plugin's `--prometheus-route` rules decide.
"""
import os
import re

import uwsgi

LOGVAR = os.environ.get('ROUTES_LOGVAR') == '1'

# (regex, template, status) like a framework's URL map.
URLS = [
    (re.compile(r'^/api/users/[0-9]+$'), '/api/users/<int:id>', '200 OK'),
    (re.compile(r'^/api/items/[a-z]+$'), '/api/items/<name>', '200 OK'),
    (re.compile(r'^/missing/'), '/missing/<path>', '404 Not Found'),
    (re.compile(r'^/label/'), None, '200 OK'),
]


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    status = '200 OK'
    for regex, template, st in URLS:
        if regex.match(path):
            status = st
            if LOGVAR:
                # /label/VALUE: the path's rest as the route, unbounded (an app that puts raw
                # paths in the label: the overflow tests).
                # PEP 3333: PATH_INFO is the request's bytes as latin-1; a framework decodes
                # them as UTF-8, as here.
                label = path[len('/label/'):].encode('latin-1').decode('utf-8', 'replace')
                uwsgi.set_logvar('route', template or label)
            break
    body = b'ok\n'
    start_response(status, [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
