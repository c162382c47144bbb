#!/usr/bin/env python3
"""Golden files for engine/tests/app_golden.rs, written by prometheus_client itself.

Registers random metrics (fixed seed) in a fresh registry, updates them, and writes:

* app_input.txt: the families as the plugin's host would hand them to `render_app`
  (one `F` line per family, one `S` line per series; strings hex-encoded UTF-8, doubles as
  the decimal of their IEEE bits; histogram buckets non-cumulative, shuffled, `+Inf`
  sometimes left out when its own count is 0);
* app_golden.txt: `prometheus_client.generate_latest()` (text 0.0.4);
* app_golden.om: `prometheus_client.openmetrics.exposition.generate_latest()`;
* app_floats.txt: `floatToGoString` of special, boundary and random doubles.

`_created` series are disabled (the plugin has no creation times). Run with the tools venv:
    PROMETHEUS_DISABLE_CREATED_SERIES=True ~/.cache/metrics_prometheus/tools/bin/python \
        engine/tests/data/app_golden.py engine/tests/data
"""
import math
import os
import random
import struct
import sys

assert os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES") == "True", "set PROMETHEUS_DISABLE_CREATED_SERIES=True"

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_om
from prometheus_client.utils import floatToGoString

rng = random.Random(20)


def bits(x):
    return str(struct.unpack("<Q", struct.pack("<d", float(x)))[0])


def hx(s):
    return s.encode().hex() or "-"


WORDS = ["method", "code", "path", "queue", "a", "zeta", "lz", "lf", "le_x", "Mixed", "_u", "x1"]
VALUES = ["GET", "200", "/a/b", "", "say \"hi\"", "back\\slash", "two\nlines", "tab\there", "ünï", "{}", "a,b=c"]
HELPS = ["Plain help.", "", "Help with \\ and\nnewline.", "Quote \"q\" here.", "ünïcode ✓"]


def value():
    r = rng.random()
    if r < 0.1:
        return rng.choice([math.inf, -math.inf, math.nan, 0.0, -0.0])
    if r < 0.3:
        return float(rng.randint(-10**7, 10**7))
    if r < 0.5:
        return rng.choice([1e-5, 0.0001, 123456.5, 1234567.0, 1e15, 1e16, 2.5e17, 1e-300, 5e-324, 1.7976931348623157e308])
    if r < 0.7:
        return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
    return struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] if rng.random() < 0.3 else rng.uniform(-1e9, 1e9)


def finite_value():
    v = value()
    return v if math.isfinite(v) else 1.5


def bounds():
    pool = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 0.0, 1e-5, 7.0, 100.0, 1234567.0, 1e7, 1e12, 3e16]
    bs = sorted(set(rng.sample(pool, rng.randint(1, 8))))
    return bs


def main(outdir):
    reg = CollectorRegistry()
    fams = []
    for i in range(40):
        kind = rng.choice(["counter", "gauge", "histogram", "summary"])
        name = "app_%s_%d" % (kind[:4], i)
        help_ = rng.choice(HELPS)
        nlab = rng.randint(0, 3)
        labelnames = rng.sample([w for w in WORDS if not (kind == "histogram" and w == "le")], nlab)
        kwargs = dict(registry=reg, labelnames=labelnames)
        if kind == "counter":
            m = Counter(name, help_, **kwargs)
        elif kind == "gauge":
            m = Gauge(name, help_, **kwargs)
        elif kind == "histogram":
            bs = bounds()
            kwargs["buckets"] = bs + [math.inf]
            m = Histogram(name, help_, **kwargs)
        else:
            m = Summary(name, help_, **kwargs)
        children = []
        for _ in range(rng.randint(1, 4) if nlab else 1):
            lv = tuple(rng.choice(VALUES) for _ in labelnames)
            if lv in [c[0] for c in children]:
                continue
            c = m.labels(*lv) if nlab else m
            children.append((lv, c))
            if kind == "counter":
                for _ in range(rng.randint(0, 3)):
                    v = abs(finite_value()) if rng.random() < 0.95 else math.inf
                    c.inc(v)
            elif kind == "gauge":
                c.set(value())
            else:
                for _ in range(rng.randint(0, 6)):
                    c.observe(abs(finite_value()) if rng.random() < 0.7 else rng.random())
        fams.append((kind, name, help_, labelnames, m, children))

    collected = {mf.name: mf for mf in reg.collect()}
    lines = []
    for kind, name, help_, labelnames, m, children in fams:
        mf = collected[name]
        lines.append("F %s %s %s" % (kind, hx(name), hx(help_)))
        by_labels = {}
        for s in mf.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            by_labels.setdefault(key, []).append(s)
        for lv, _ in children:
            key = tuple(sorted(zip(labelnames, lv)))
            samples = by_labels[key]
            labs = " ".join("%s %s" % (hx(k), hx(v)) for k, v in zip(labelnames, lv))
            head = "S %d%s" % (len(labelnames), (" " + labs) if labs else "")
            if kind in ("counter", "gauge"):
                (s,) = samples
                lines.append("%s %s" % (head, bits(s.value)))
            elif kind == "summary":
                d = {s.name[len(name):]: s.value for s in samples}
                lines.append("%s %s %s" % (head, bits(d["_count"]), bits(d["_sum"])))
            else:
                d = {s.name[len(name):]: s.value for s in samples if s.name != name + "_bucket"}
                cum = [(float(s.labels["le"]), s.value) for s in samples if s.name == name + "_bucket"]
                prev, buckets = 0.0, []
                for le, c in cum:
                    buckets.append((le, c - prev))
                    prev = c
                if buckets[-1][1] == 0 and rng.random() < 0.5:
                    buckets.pop()
                rng.shuffle(buckets)
                bl = " ".join("%s %s" % (bits(le), bits(c)) for le, c in buckets)
                lines.append("%s %s %d%s" % (head, bits(d["_sum"]), len(buckets), (" " + bl) if bl else ""))
    with open(os.path.join(outdir, "app_input.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(outdir, "app_golden.txt"), "wb") as f:
        f.write(generate_latest(reg))
    with open(os.path.join(outdir, "app_golden.om"), "wb") as f:
        f.write(generate_latest_om(reg))

    floats = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
              1.7976931348623157e308, -1.7976931348623157e308, 2.0 ** 53, 2.0 ** 53 + 2, 2.0 ** 64, 0.1, 0.2, 0.3]
    for e in range(-325, 309):
        for m in (1, 1.2345678901234567):
            floats += [m * 10.0 ** e if abs(e) < 300 else float("%re%d" % (m, e))]
    for n in (999999, 1000000, 1000001, 1234567, 9999999, 10 ** 15, 10 ** 16 - 2, 10 ** 16, 10 ** 17, 123456789012):
        floats += [float(n), -float(n), n + 0.5, -(n + 0.5)]
    for _ in range(300):
        floats.append(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0])
        floats.append(round(rng.uniform(-1e7, 1e7), rng.randint(0, 8)))
        floats.append(rng.uniform(0, 1) * 10.0 ** rng.randint(-8, 20))
    # Exact ties between two shortest candidates (Python breaks them to even).
    for _ in range(300):
        e = rng.randint(40, 52)
        floats.append(rng.randint(2 ** e, 2 ** (e + 1)) + rng.choice([0.5, 0.25, 0.75, 0.125, 0.375]))
        floats.append(floats[-1] / 2 ** rng.randint(1, 20))
    with open(os.path.join(outdir, "app_floats.txt"), "w") as f:
        for x in floats:
            f.write("%s %s\n" % (bits(x), floatToGoString(x)))


if __name__ == "__main__":
    main(sys.argv[1])
