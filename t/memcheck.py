"""Memcheck verdicts for the plugin: reads valgrind memcheck logs, says what is the plugin's.

    python3 t/memcheck.py LOGDIR [LOGDIR...]   # exit 0: nothing attributable to the plugin
                                               # exit 1: an error/leak whose stack involves it
                                               # exit 2: inconclusive (no logs, incomplete
                                               #         logs, or the positive control failed)

A LOGDIR holds the logs of ONE uWSGI instance run under
`valgrind --tool=memcheck --trace-children=yes --log-file=LOGDIR/vg.%p.log ...` (one log per
process: the master, its forked workers, respawned ones). Stdlib only; t/conftest.py imports it
(MP_VALGRIND=1), t/valgrind.sh runs it, t/test_memcheck.py tests it on the saved logs in
t/data/valgrind/.

The rules:
- every error (invalid read/write/free, uninitialised values, syscall params, crashes...) and
  every "definitely lost" / "indirectly lost" record is attributed to the PLUGIN when ANY frame
  of ANY of its stacks (access, alloc/free, origin) is in the plugin: a `metrics_prometheus`
  symbol, the C shim (`uwsgi_rs_*`), a Rust frame (a `.rs` file or a Rust-only crate path:
  uWSGI and Python contain no Rust, so any Rust frame is in the plugin's .so), a file under the
  plugin's source tree, or the .so itself;
- everything else is uWSGI/Python/glibc's; known, explained noise is named (NOISE below);
- "possibly lost" records are information only, plugin frames or not;
- positive control: blocks the plugin still holds at exit are "still reachable" with plugin
  frames in their allocation stacks. Finding none means the attribution cannot see the plugin
  at all (no debug info, demangling changed, wrong plugin path...): the verdict is void;
- a log without its ERROR SUMMARY belongs to a process killed before its leak check: the run
  is incomplete (unless the caller accepts that for forked children, e.g. a test that SIGKILLs
  workers: their errors up to the kill are still read, only their leak check is missing).

Noise is ignored here, never with valgrind suppression files: a suppression matches stack frames
top-down and cannot say "and no plugin frame below", so it could hide a plugin leak made through
a uWSGI helper (uwsgi_malloc, uwsgi_concat2...). A NOISE rule only ever applies to a record with
no plugin frame at all.
"""
import argparse
import collections
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_BASENAME = 'metrics_prometheus_plugin.so'

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
    # core/socket.c uwsgi_new_socket(): for a socket on port 0 (`--http-socket 127.0.0.1:0`,
    # "port auto-assigned") the port string from uwsgi_num2str() (11 B) is copied into the
    # socket's name and never freed.
    dict(name='uwsgi-auto-port', kinds=('definite',), stack=['uwsgi_num2str', 'uwsgi_new_socket']),
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
    dict(name='glibc-thread-dtv', kinds=('possible',),
         stack=['_dl_allocate_tls', 'pthread_create']),
    # CPython: GC-tracked objects are referenced by pointers to their body, past the GC header,
    # so memcheck reports the blocks of live objects as "possibly lost" (information only).
    dict(name='cpython-possibly-lost', kinds=('possible',), stack=['libpython3']),
]
ALLOCATORS = ('malloc', 'calloc', 'realloc', 'memalign', 'posix_memalign', 'aligned_alloc',
              'operator new')
# Verdict kinds, in report order ("possible leak" is information only; "reachable" records are
# the positive control, never findings).
KINDS = ['invalid read', 'invalid write', 'invalid free', 'uninitialised value', 'crash',
         'other error', 'definite leak', 'indirect leak', 'possible leak']

HEADER = re.compile(r'^==(\d+)== ?(.*)$')
FRAME = re.compile(r'^\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*) \(([^()]*)\)$')
LEAK = re.compile(r'^([\d,]+)(?: \(([\d,]+) direct, ([\d,]+) indirect\))? bytes '
                  r'in ([\d,]+) blocks are '
                  r'(definitely lost|indirectly lost|possibly lost|still reachable) in loss record')
LEAK_KINDS = {'definitely lost': 'definite leak', 'indirectly lost': 'indirect leak',
              'possibly lost': 'possible leak', 'still reachable': 'reachable'}
# Rust-only namespaces (C++'s std:: is not in the list; a Rust std:: frame has a .rs file).
RUST_FUNC = re.compile(r'^<?(?:metrics_prometheus|core|alloc|hashbrown|httparse'
                       r'|parking_lot(?:_core)?|lock_api|itoa|sha2|base64|digest|block_buffer|libc)::'
                       r'|__rust_|__rdl_|__rg_|rust_begin_unwind|rust_panic')
LOG_NAME = re.compile(r'(?:^|/)vg\.(\d+)(?:\.\d+)?\.log$')


class Plugin:
    """What counts as "in the plugin": its .so (by path or file name) and its source tree."""

    def __init__(self, paths=(), src=ROOT):
        self.paths = {os.path.abspath(p) for p in paths}
        self.basenames = {os.path.basename(p) for p in paths} | {PLUGIN_BASENAME}
        self.src = src.rstrip('/') + '/'

    def frame(self, func, loc):
        """True when a stack frame `func (loc)` is in the plugin."""
        if 'metrics_prometheus' in func or func.startswith('uwsgi_rs_') or RUST_FUNC.search(func):
            return True
        if loc.startswith('in '):
            path = loc[3:]
            return path in self.paths or os.path.basename(path) in self.basenames \
                or 'libmetrics_prometheus' in path
        f = loc.rsplit(':', 1)[0]
        return f.endswith('.rs') or f.startswith('src/') or f.startswith(self.src)


def needles_in_order(text, needles):
    pos = 0
    for needle in needles:
        while pos < len(text) and needle not in text[pos]:
            pos += 1
        if pos == len(text):
            return False
        pos += 1
    return True


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
    """One error or loss record of one process: its text, frames and attribution."""

    def __init__(self, pid, kind, lines, plugin, log=None):
        self.pid, self.kind, self.lines, self.log = pid, kind, lines, log
        self.frames = []        # (func, loc, section) section 0 = primary stack, 1+ = aux
        section = 0
        for line in lines[1:]:
            m = FRAME.match(line)
            if m:
                self.frames.append((m.group(1), m.group(2), section))
            elif line.strip() and self.frames:
                section += 1    # "Address ... alloc'd", "Uninitialised value was created by"...
            # (a line before the first frame belongs to the title: a crash's "Access not
            # within mapped region at address 0x0")
        self.plugin_frames = [f for f in self.frames if plugin.frame(f[0], f[1])]
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

    @property
    def plugin(self):
        return bool(self.plugin_frames)

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

    def text(self, indent='    '):
        return '\n'.join(indent + line for line in self.lines)


class Log:
    """The valgrind log of one process."""

    def __init__(self, path, pid, lines):
        self.path, self.pid = path, pid
        self.complete = any(line.startswith('ERROR SUMMARY:') for line in lines)
        self.command = next((line[9:] for line in lines if line.startswith('Command: ')), '?')
        self.summary = next((line for line in lines if line.startswith('ERROR SUMMARY:')),
                            'no ERROR SUMMARY')
        self.parent = next((line[12:] for line in lines if line.startswith('Parent PID: ')), '?')
        self.root = True        # no parent among the logs of its set (the uWSGI master)
        self.records = []


def log_pid(path):
    m = LOG_NAME.search(path)
    if not m:
        raise ValueError('%s: not a valgrind log name (vg.<pid>.log)' % path)
    return int(m.group(1))


def parse_log(path, plugin=None):
    """Parses one vg.<pid>.log: its lines for that pid only, split into records."""
    plugin = plugin or Plugin()
    pid = log_pid(path)
    body = []
    with open(path, errors='replace') as f:
        for raw in f:
            m = HEADER.match(raw.rstrip('\n'))
            if m and int(m.group(1)) == pid:
                body.append(m.group(2))
    log = Log(path, pid, body)
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
            log.records.append(Record(pid, LEAK_KINDS[m.group(5)], block, plugin, log))
            continue
        kind = classify_error(first)
        if kind and any(FRAME.match(line) for line in block[1:3]):
            log.records.append(Record(pid, kind, block, plugin, log))
    return log


def parse_dir(logdir, plugin=None):
    """The logs of one instance (one directory); marks each log's `root`."""
    logs = [parse_log(p, plugin) for p in sorted(glob.glob(os.path.join(logdir, 'vg.*.log')),
                                                   key=lambda p: (log_pid(p), p))]
    pids = {str(lg.pid) for lg in logs}
    for lg in logs:
        lg.root = lg.parent not in pids
    return logs


class Result:
    """The verdict over one or more instances (log directories)."""

    def __init__(self, logs, allow_incomplete_children=False):
        self.logs = logs
        self.allow_incomplete_children = allow_incomplete_children
        records = [r for lg in logs for r in lg.records]
        self.reachable = [r for r in records if r.kind == 'reachable']
        self.records = [r for r in records if r.kind != 'reachable']
        self.control = [r for r in self.reachable if r.plugin_frames]
        self.incomplete = [lg for lg in logs if not lg.complete]
        # unique contexts (same kind + same top frames, across processes: forked workers inherit
        # the master's heap, so one leak of the master shows up in every worker's log too)
        self.groups = collections.OrderedDict()
        for r in self.records:
            key = ('plugin' if r.plugin_frames else 'other',) + r.signature
            self.groups.setdefault(key, []).append(r)
        plugin_groups = [(k, rs) for k, rs in self.groups.items() if k[0] == 'plugin']
        self.verdict = [(k, rs) for k, rs in plugin_groups if k[1] != 'possible leak']
        self.info_only = [(k, rs) for k, rs in plugin_groups if k[1] == 'possible leak']

    @property
    def blamed(self):
        """Records attributable to the plugin (every occurrence)."""
        return [r for _, rs in self.verdict for r in rs]

    def incomplete_blocking(self):
        """Incomplete logs that make the run inconclusive."""
        if self.allow_incomplete_children:
            return [lg for lg in self.incomplete if lg.root]
        return self.incomplete

    def problems(self):
        """Why the verdict is not clean: [] when clean, else sentences (plugin first)."""
        out = []
        if self.verdict:
            out.append('%d unique contexts (%d occurrences) attributable to the plugin'
                       % (len(self.verdict), len(self.blamed)))
        if not self.logs:
            out.append('no valgrind logs found')
            return out
        if not self.control:
            out.append('POSITIVE CONTROL FAILED: no plugin frame recognised anywhere; '
                       'the verdict is void')
        for lg in self.incomplete_blocking():
            out.append('incomplete log %s (pid %d: no ERROR SUMMARY, killed before its leak '
                       'check)' % (lg.path, lg.pid))
        return out

    def exit_code(self):
        """0 clean, 1 something is the plugin's, 2 inconclusive."""
        if not self.logs:
            return 2
        if self.verdict:
            return 1
        if not self.control or self.incomplete_blocking():
            return 2
        return 0


def analyse(logdirs, plugin_paths=(), src=ROOT, allow_incomplete_children=False):
    """Parses every instance directory and returns the Result."""
    plugin = Plugin(plugin_paths, src)
    if isinstance(logdirs, str):
        logdirs = [logdirs]
    logs = [lg for d in logdirs for lg in parse_dir(d, plugin)]
    return Result(logs, allow_incomplete_children)


def served_requests(logdirs):
    """Requests per pid from the uWSGI logs (`[pid: N|...` lines) found next to the logs."""
    served = collections.Counter()
    for d in logdirs:
        try:
            with open(os.path.join(d, 'uwsgi.log'), errors='replace') as f:
                for line in f:
                    m = re.match(r'\[pid: (\d+)\|', line)
                    if m:
                        served[int(m.group(1))] += 1
        except OSError:
            pass
    return served


def print_summary(res, out=sys.stdout, served=None):
    """The human report: processes, findings table, uWSGI/Python records, plugin records."""
    p = lambda *a: print(*a, file=out)  # noqa: E731
    served = served or collections.Counter()
    p('=== valgrind logs: %d processes ===' % len(res.logs))
    for lg in res.logs:
        role = 'master' if lg.root else 'child of %s' % lg.parent
        flag = '' if lg.complete else '   <-- INCOMPLETE (process killed before its leak check)'
        p('  pid %-7d %-16s %s%s' % (lg.pid, role, lg.summary, flag))

    table = {k: collections.Counter() for k in KINDS}
    for rs in res.groups.values():
        r0 = rs[0]
        col = 'plugin' if r0.plugin_frames else ('noise' if r0.noise else 'other')
        table[r0.kind][col] += 1
        table[r0.kind][col + '_occ'] += len(rs)
        table[r0.kind][col + '_bytes'] += sum(r.bytes for r in rs)
    p()
    p('=== findings: unique contexts (occurrences across processes) ===')
    p('  %-22s %-18s %-26s %s' % ('', 'plugin', 'uWSGI/Python: known noise', 'uWSGI/Python: other'))
    for k in KINDS:
        cells = ['%d (%d)' % (table[k][col], table[k][col + '_occ'])
                 for col in ('plugin', 'noise', 'other')]
        p('  %-22s %-18s %-26s %s' % (k + ('  [info]' if k == 'possible leak' else ''), *cells))

    p()
    p('=== uWSGI/Python records (no plugin frame in any stack), "possibly lost" counted only ===')
    possible_rules = collections.Counter()
    for key, rs in res.groups.items():
        if key[0] == 'plugin':
            continue
        r0 = rs[0]
        if r0.kind == 'possible leak':
            possible_rules[r0.noise or 'UNEXPLAINED'] += 1
            continue
        frames = [f[0] for f in r0.frames if f[2] == 0 and not f[0].startswith(ALLOCATORS)][:7]
        size = (('%d B each' % (sum(r.bytes for r in rs) // len(rs)))
                if r0.kind.endswith('leak') else '')
        p('  %-19s %-7s x%-2d %-11s %s' % (r0.kind, r0.owner(), len(rs), size,
                                         r0.noise or 'UNEXPLAINED (not a plugin frame; see stack)'))
        p('      ' + ' <- '.join(frames))
    for name, n in sorted(possible_rules.items()):
        p('  possible leak       %4d unique contexts: %s' % (n, name))

    for title, items in (('ATTRIBUTABLE TO THE PLUGIN', res.verdict),
                         ('plugin frames in "possibly lost" records (information only)',
                          res.info_only)):
        if not items:
            continue
        p()
        p('=== %s: %d ===' % (title, len(items)))
        for _key, rs in items:
            r0 = rs[0]
            p('--- %s, in pids %s (%s)' % (r0.kind, sorted({r.pid for r in rs}),
                                           r0.log.path if r0.log else '?'))
            p(r0.text())

    p()
    p('positive control: %d "still reachable" records (of %d) carry plugin frames, e.g.:'
      % (len(res.control), len(res.reachable)))
    for r in res.control[:2]:
        f = next((f for f in r.plugin_frames
                  if 'metrics_prometheus' in f[0] or f[1].startswith('src/')), r.plugin_frames[0])
        p('    pid %d: %s  [%s (%s)]' % (r.pid, r.lines[0], f[0][:80], f[1]))
    # Not a verdict: what the plugin still holds at exit, per process. A per-request leak that
    # stays reachable (a growing cache, say) is invisible to the leak checker but would show up
    # here as growing with the requests the process served.
    held = collections.defaultdict(lambda: [0, 0])
    for r in res.control:
        held[r.pid][0] += r.bytes
        held[r.pid][1] += r.blocks
    roots = {lg.pid for lg in res.logs if lg.root}
    p('plugin-held memory at exit (still reachable), per process (a worker forked while the '
      'master\'s server had connections open keeps an untouched copy of their buffers: the fork '
      'child handler only closes fds; bounded by the 64-connection cap):')
    for pid, (b, n) in sorted(held.items()):
        role = 'master' if pid in roots else 'worker, %d requests logged' % served[pid]
        p('    pid %-7d %7d B in %4d blocks  (%s)' % (pid, b, n, role))
    p('plugin-attributable: %d unique contexts (%d occurrences); uWSGI/Python: %d unique '
      '(%d known noise), possibly-lost info: %d'
      % (len(res.verdict), len(res.blamed), sum(1 for k in res.groups if k[0] != 'plugin'),
         sum(1 for k, rs in res.groups.items() if k[0] != 'plugin' and rs[0].noise),
         len(res.info_only)))
    for problem in res.problems():
        p(problem)
    p('verdict: %s' % {0: 'clean: nothing attributable to the plugin',
                       1: 'errors/leaks attributable to the plugin',
                       2: 'inconclusive'}[res.exit_code()])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('logdirs', nargs='+', metavar='LOGDIR',
                    help='directory of one instance\'s vg.<pid>.log files')
    ap.add_argument('--plugin', action='append', default=[],
                    help='path of the plugin .so as loaded (repeatable); any file named %s '
                         'counts anyway' % PLUGIN_BASENAME)
    ap.add_argument('--src', default=ROOT, help='plugin source tree (default: %(default)s)')
    ap.add_argument('--allow-incomplete-children', action='store_true',
                    help='a forked child killed before its leak check (no ERROR SUMMARY) does '
                         'not make the run inconclusive; the master\'s log still must be complete')
    ap.add_argument('-q', '--quiet', action='store_true', help='print only the verdict lines')
    args = ap.parse_args(argv)
    for d in args.logdirs:
        if not os.path.isdir(d):
            ap.error('%s: not a directory' % d)
    res = analyse(args.logdirs, args.plugin, args.src, args.allow_incomplete_children)
    if args.quiet:
        for problem in res.problems():
            print(problem)
    else:
        print_summary(res, served=served_requests(args.logdirs))
    return res.exit_code()


if __name__ == '__main__':
    sys.exit(main())
