"""Property tests of the exposition engine against real parsers.

Generates uWSGI metric lists with hypothesis, renders them with the
`engine/examples/render.rs` binary and checks that

* prometheus_client's text parser accepts the text output,
* prometheus_client's OpenMetrics parser accepts the OpenMetrics output,
* both parse to the same samples (same names, labels and values),
* `promtool check metrics` exits 0 and prints nothing (on fewer examples,
  promtool is slow to start).

Environment:
  RENDER_BIN  path of the built example (`cargo build --example render`),
              required: the tests fail without it.
  PROMTOOL    promtool binary (default `promtool`).

Run (after `cargo build -p metrics_prometheus_engine --example render`):
  RENDER_BIN=target/debug/examples/render python3 -m pytest t/test_engine_parsers.py
"""

import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def render_bin():
    path = os.environ.get("RENDER_BIN")
    if not path:
        pytest.fail(
            "RENDER_BIN is not set: build the example with "
            "`cargo build -p metrics_prometheus_engine --example render` and set RENDER_BIN to "
            "target/debug/examples/render"
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"RENDER_BIN={path!r} is not an executable file")
    return path


def promtool_bin():
    path = os.environ.get("PROMTOOL", "promtool")
    found = shutil.which(path)
    if not found:
        pytest.fail(f"promtool not found (PROMTOOL={path!r})")
    return found


# uWSGI's own names (the 68-metric list of --workers 2 --threads 2, one
# socket), so that generated lists mix built-ins with custom names.
WORKER = ["requests", "delta_requests", "failed_requests", "respawns",
          "avg_response_time", "total_tx", "rss_size", "vsz_size",
          "running_time"]
CORE = ["requests", "write_errors", "routed_requests", "static_requests",
        "offloaded_requests", "exceptions", "read_errors"]
BUILTINS = (
    [("core.routed_signals", 0), ("core.unrouted_signals", 0),
     ("core.busy_workers", 1), ("core.idle_workers", 1),
     ("core.overloaded", 0)]
    + [(f"worker.{w}.{n}", {"delta_requests": 2, "avg_response_time": 1,
                              "rss_size": 1, "vsz_size": 1}.get(n, 0))
       for w in range(3) for n in WORKER]
    + [(f"worker.{w}.core.{c}.{n}", 0)
       for w in (1, 2) for c in (0, 1) for n in CORE]
    + [("core.total_tx", 0), ("core.total_rss", 1), ("core.total_vsz", 1),
       ("core.avg_response_time", 1), ("core.total_running_time", 0),
       ("socket.0.listen_queue", 1), ("rss_size", 3), ("vsz_size", 3)]
)
assert len(BUILTINS) == 68

# Segments that exercise the rewrite rules.
TRICKY = ["ms", "us", "ns", "s", "sec", "b", "kb", "m", "h", "d", "per",
          "seconds", "bytes", "minutes", "milliseconds", "kilobytes", "bits",
          "total", "count", "sum", "bucket", "created", "info", "gauge",
          "Counter", "summary", "histogram", "le", "quantile", "worker",
          "core", "socket", "MyApp", "HTTPServer", "getHTTP", "__x", "2x",
          "_", "-", "a:b", 'q"t', "back\\slash", "new\nline", "cr\rx",
          "tab", "é", "日本", "", "0", "1", "007", "12345678901234567890"]

segment = st.one_of(
    st.sampled_from(TRICKY),
    st.from_regex(r"[a-z]{1,6}", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=4),
)
dotted = st.lists(segment, min_size=0, max_size=6).map(".".join)
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
name = st.one_of(dotted, dotted, any_text,
                 st.sampled_from([n for n, _ in BUILTINS]))
metric = st.tuples(name, st.integers(0, 3),
                   st.one_of(st.integers(I64_MIN, I64_MAX),
                             st.integers(-3, 3_000_000)))
metric_list = st.one_of(
    st.lists(metric, max_size=30),
    # The built-in list followed by custom metrics, as uWSGI orders it.
    st.lists(metric, max_size=10).flatmap(
        lambda extra: st.lists(st.integers(0, 10**9), min_size=68,
                               max_size=68).map(
            lambda vals: [(n, t, v) for (n, t), v in zip(BUILTINS, vals, strict=True)]
            + extra)),
)
options = st.fixed_dictionaries({
    "prefix": st.sampled_from(["uwsgi_", "", "_", "app_", "My_App_x_"]),
    "help": st.booleans(),
    "types": st.booleans(),
    "workers": st.booleans(),
})


def escape(name):
    """The render example's name-field escaping."""
    return (name.replace("\\", "\\\\").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\t", "\\t"))


def run_render(fmt, metrics, opts):
    args = [render_bin(), fmt, "--prefix", opts["prefix"]]
    if not opts["help"]:
        args.append("--no-help")
    if not opts["types"]:
        args.append("--no-type")
    if not opts["workers"]:
        args.append("--no-workers")
    stdin = "".join(f"{escape(n)}\t{t}\t{v}\n" for n, t, v in metrics)
    proc = subprocess.run(args, input=stdin.encode(), capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def samples(families):
    out = []
    for fam in families:
        for s in fam.samples:
            out.append((s.name, tuple(sorted(s.labels.items())),
                        float(s.value)))
    return sorted(out)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(metric_list, options)
def test_parsers_accept_both_formats(metrics, opts):
    text = run_render("text", metrics, opts)
    om = run_render("openmetrics", metrics, opts)
    text_families = list(parse_text(text))
    om_families = list(parse_openmetrics(om))
    assert om.endswith("# EOF\n")
    assert samples(text_families) == samples(om_families)
    expected = {"counter", "gauge"} if opts["types"] else {"untyped", "unknown"}
    for fam in text_families + om_families:
        assert fam.type in expected, (fam.name, fam.type)
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name == fam.name + "_total" and s.value >= 0
    if opts["help"]:
        assert all(fam.documentation for fam in text_families + om_families)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(metric_list, options.map(lambda o: {**o, "help": True}))
def test_promtool_is_silent(metrics, opts):
    text = run_render("text", metrics, opts)
    proc = subprocess.run([promtool_bin(), "check", "metrics"],
                          input=text.encode(), capture_output=True,
                          timeout=60, check=False)
    report = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0 and report == "", report + "\n---\n" + text


def test_builtin_list_is_promtool_clean():
    metrics = [(n, t, i * 1000 + 7) for i, (n, t) in enumerate(BUILTINS)]
    text = run_render("text", metrics, {"prefix": "uwsgi_", "help": True,
                                        "types": True, "workers": True})
    assert "uwsgi_worker_core_requests_total{worker=\"2\",core=\"1\"}" in text
    proc = subprocess.run([promtool_bin(), "check", "metrics"],
                          input=text.encode(), capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == b""
