"""prometheus_client values in uWSGI's shared memory, exported by the metrics_prometheus plugin.

Importing this module inside a uWSGI that runs the plugin with ``--prometheus-app-metrics``
replaces ``prometheus_client.values.ValueClass`` (which prometheus_client reads each time it
creates a metric's value) with :class:`UwsgiValue`: every metric created afterwards keeps its
value in the plugin's shared table, one cell per process (the master, each worker, mule and
spooler), and the uWSGI master merges them at scrape time as prometheus_client's multiprocess
mode merges its files. Anywhere else (outside uWSGI, without the plugin, with the option off)
importing it changes nothing and says why in one log line.

The hot path is a memoryview write under the value's lock, as prometheus_client's own
``MutexValue`` does; the plugin is called (through ctypes) only to register a new series and
once per process to learn its row.
"""

import ctypes
import logging
import os
import struct
import threading
import time

__all__ = ['UwsgiValue', 'installed', 'reason']

log = logging.getLogger('metrics_prometheus')

_KINDS = {'counter': 1, 'gauge': 2, 'histogram': 3, 'summary': 4}
_MODES = {m: i for i, m in enumerate(
    ('all', 'liveall', 'min', 'livemin', 'max', 'livemax', 'sum', 'livesum', 'mostrecent',
     'livemostrecent'), start=1)}
_API_VERSION = 1


class _Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64)
                for name in ('version', 'values', 'stamps', 'capacity', 'slots', 'base')]


def _view(address, count, fmt):
    """A writable memoryview of `count` items of struct format `fmt` at `address`."""
    size = struct.calcsize(fmt)
    raw = (ctypes.c_char * (count * size)).from_address(address)
    return memoryview(raw).cast('B').cast(fmt)


class _Api:
    """The plugin's table, as mapped in this process."""

    def __init__(self, lib, info):
        self.capacity = info.capacity
        self.slots = info.slots
        self.values = _view(info.values, info.slots * info.capacity, 'd')
        self.stamps = _view(info.stamps, info.slots * info.capacity, 'd')
        # This process' row (slot * capacity), -1 until looked up: the plugin resets it in
        # every forked child.
        self.base = _view(info.base, 1, 'q')
        self._register = lib.metrics_prometheus_app_register
        self._register.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                   ctypes.c_size_t, ctypes.c_uint8, ctypes.c_uint8]
        self._register.restype = ctypes.c_int64
        self._slot = lib.metrics_prometheus_app_slot
        self._slot.argtypes = []
        self._slot.restype = ctypes.c_int64
        self._get = lib.metrics_prometheus_app_get
        self._get.argtypes = [ctypes.c_size_t]
        self._get.restype = ctypes.c_double

    def register(self, key, help_text, kind, mode):
        return self._register(key, len(key), help_text, len(help_text), kind, mode)

    def row(self):
        base = self.base[0]
        return base if base >= 0 else self._slot()

    def get(self, index):
        return self._get(index)


def _key(metric_name, name, labelnames, labelvalues):
    """The series' identity as the plugin parses it: [u16 length, UTF-8 bytes] fields."""
    out = bytearray()
    fields = [metric_name, name]
    for k, v in zip(labelnames, labelvalues, strict=True):
        fields += [k, v]
    for f in fields:
        b = str(f).encode('utf-8')
        if len(b) > 0xFFFF:
            return None
        out += struct.pack('<H', len(b)) + b
    return bytes(out)


_api = None
# The table's memoryviews and this process' row, bound once the plugin answers.
_values = _stamps = _base = None


class UwsgiValue:
    """A prometheus_client value whose float lives in the plugin's shared table.

    Counters, histograms and summaries add up over every process that ever wrote them (a
    respawned worker continues where its predecessor stopped); gauges follow their
    ``multiprocess_mode`` as in prometheus_client's multiprocess mode. A series the table
    cannot hold (full, or labels too long) keeps its value in this process only, as
    prometheus_client would, and is not exported by the master.

    Each value ends up as an instance of the subclass for its case (a counter-like sample in
    the table, a gauge, a gauge in a ``mostrecent`` mode, a sample kept in-process), so that
    the hot path tests nothing but this process' row.
    """

    _multiprocess = False
    __slots__ = ('_index', '_gauge', '_lock', '_local', '_exemplar')

    def __init__(self, typ, metric_name, name, labelnames, labelvalues, help_text='',
                 multiprocess_mode='', **kwargs):
        self._lock = threading.Lock()
        self._exemplar = None
        self._local = 0.0
        self._gauge = typ == 'gauge'
        kind = _KINDS.get(typ)
        key = _key(metric_name, name, labelnames, labelvalues)
        index = -1
        mode = 0
        if kind is not None and key is not None and _api is not None:
            mode = _MODES.get(multiprocess_mode or 'all', 1) if self._gauge else 0
            help_bytes = str(help_text or '').encode('utf-8')[:0xFFFF]
            index = _api.register(key, help_bytes, kind, mode)
        self._index = index
        if index < 0:
            self.__class__ = _LocalValue
        elif mode in _RECENT_MODES:
            self.__class__ = _RecentGauge
        elif self._gauge:
            self.__class__ = _Gauge

    # The hot path (counters, histograms, summaries): one read of this process' row, one
    # memoryview update under the lock. acquire()/release() rather than `with`: ~30 ns less
    # per call on CPython 3.11 (no bound __enter__/__exit__); the one difference is that an
    # exception raised by a Python signal handler between acquire() returning and the `try`
    # would leave the lock held, where `with` cannot be interrupted there.
    def inc(self, amount):
        row = _base[0]
        if row < 0:
            row = _api.row()
        lock = self._lock
        lock.acquire()
        try:
            _values[row + self._index] += amount
        finally:
            lock.release()

    def set(self, value, timestamp=None):
        row = _base[0]
        if row < 0:
            row = _api.row()
        lock = self._lock
        lock.acquire()
        try:
            _values[row + self._index] = value
        finally:
            lock.release()

    def set_exemplar(self, exemplar):
        with self._lock:
            self._exemplar = exemplar

    def get(self):
        """The value merged over the processes, as the uWSGI master exports it."""
        return _api.get(self._index)

    def get_exemplar(self):
        with self._lock:
            return self._exemplar


class _Gauge(UwsgiValue):
    """A gauge in the table. Its time cell says that this process wrote it (the master merges
    only the processes that did); its modes compare no times, so the time of the first write
    is as good as the last, and later writes need not read the clock."""

    __slots__ = ()

    def inc(self, amount, _time=time.time):
        row = _base[0]
        if row < 0:
            row = _api.row()
        k = row + self._index
        lock = self._lock
        lock.acquire()
        try:
            _values[k] += amount
        finally:
            lock.release()
        if not _stamps[k]:
            _stamps[k] = _time()

    def set(self, value, timestamp=None, _time=time.time):
        row = _base[0]
        if row < 0:
            row = _api.row()
        k = row + self._index
        lock = self._lock
        lock.acquire()
        try:
            _values[k] = value
        finally:
            lock.release()
        if timestamp:
            _stamps[k] = timestamp
        elif not _stamps[k]:
            _stamps[k] = _time()


class _RecentGauge(UwsgiValue):
    """A gauge in a ``mostrecent`` mode: the master exports the value written last, by its
    time (prometheus_client passes one to ``set``)."""

    __slots__ = ()

    def inc(self, amount, _time=time.time):
        row = _base[0]
        if row < 0:
            row = _api.row()
        k = row + self._index
        lock = self._lock
        lock.acquire()
        try:
            _values[k] += amount
        finally:
            lock.release()
        _stamps[k] = _time()

    def set(self, value, timestamp=None, _time=time.time):
        row = _base[0]
        if row < 0:
            row = _api.row()
        k = row + self._index
        lock = self._lock
        lock.acquire()
        try:
            _values[k] = value
        finally:
            lock.release()
        _stamps[k] = timestamp or _time()


class _LocalValue(UwsgiValue):
    """A sample the table does not hold: its value stays in this process."""

    __slots__ = ()

    def inc(self, amount):
        with self._lock:
            self._local += amount

    def set(self, value, timestamp=None):
        with self._lock:
            self._local = value

    def get(self):
        with self._lock:
            return self._local


_RECENT_MODES = (_MODES['mostrecent'], _MODES['livemostrecent'])


def _say(level, msg):
    try:
        import uwsgi
        uwsgi.log('[metrics_prometheus] %s' % msg)
    except (ImportError, AttributeError):
        log.log(level, msg)


def _connect():
    """The plugin's table, or (None, why not)."""
    try:
        import uwsgi  # noqa: F401  (only present inside uWSGI)
    except ImportError:
        return None, 'not running inside uWSGI'
    lib = ctypes.CDLL(None)
    try:
        info_fn = lib.metrics_prometheus_app_info
    except AttributeError:
        return None, 'the metrics_prometheus plugin is not loaded into this uWSGI'
    info_fn.argtypes = [ctypes.POINTER(_Info)]
    info_fn.restype = ctypes.c_int
    info = _Info()
    if not info_fn(ctypes.byref(info)):
        return None, '--prometheus-app-metrics is off'
    if info.version != _API_VERSION:
        return None, ('the plugin speaks version %d of the table, this package %d: install the '
                      'package from the same release as the plugin'
                      % (info.version, _API_VERSION))
    return _Api(lib, info), None


def _install():
    global _api, _values, _stamps, _base
    _api, why = _connect()
    if _api is None:
        _say(logging.INFO if why == 'not running inside uWSGI' else logging.WARNING,
             'application metrics stay in each process (prometheus_client unchanged): %s' % why)
        return False, why
    from prometheus_client import values
    if 'PROMETHEUS_MULTIPROC_DIR' in os.environ or 'prometheus_multiproc_dir' in os.environ:
        _say(logging.WARNING,
             'PROMETHEUS_MULTIPROC_DIR is set but ignored: values go to uWSGI\'s shared memory, '
             'not to its files (a MultiProcessCollector reading them sees nothing; the default '
             'registry shows the merged values)')
    _values, _stamps, _base = _api.values, _api.stamps, _api.base
    values.ValueClass = UwsgiValue
    _say(logging.INFO, 'prometheus_client values now live in uWSGI\'s shared memory '
                       '(%d samples, %d process slots)' % (_api.capacity, _api.slots - 1))
    return True, None


installed, reason = _install()
