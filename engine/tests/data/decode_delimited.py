"""Decodes a delimited stream of io.prometheus.client.MetricFamily messages (stdin) with
Google's protobuf library and prints it in the canonical line form of
engine/tests/format_protobuf.rs (`canonical`), for the cross-check `python_decoder_agrees`.

    python decode_delimited.py engine/tests/data < stream

Needs `protobuf` and `grpcio-tools` (for protoc); metrics.proto is compiled into a
temporary directory on each run.
"""

import importlib
import json
import os
import struct
import subprocess
import sys
import tempfile

from google.protobuf.internal.decoder import _DecodeVarint


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def labels(ls):
    return json.dumps([[l.name, l.value] for l in ls])


def exemplar(e):
    ts = e.timestamp
    return "ex %s %d %d %d" % (labels(e.label), bits(e.value), ts.seconds, ts.nanos)


def main():
    proto_dir = sys.argv[1]
    with tempfile.TemporaryDirectory() as out:
        subprocess.check_call(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
             "--python_out", out, "metrics.proto"])
        sys.path.insert(0, out)
        pb = importlib.import_module("metrics_pb2")
    data = sys.stdin.buffer.read()
    pos = 0
    lines = []
    while pos < len(data):
        length, pos = _DecodeVarint(data, pos)
        f = pb.MetricFamily()
        f.ParseFromString(data[pos:pos + length])
        pos += length
        lines.append("family %s %d %s %s" % (f.name, f.type, json.dumps(f.help), json.dumps(f.unit)))
        for m in f.metric:
            lines.append("metric " + labels(m.label))
            if m.HasField("counter"):
                lines.append("counter %d" % bits(m.counter.value))
            if m.HasField("gauge"):
                lines.append("gauge %d" % bits(m.gauge.value))
            if m.HasField("histogram"):
                h = m.histogram
                lines.append("hist %d %d" % (h.sample_count, bits(h.sample_sum)))
                for b in h.bucket:
                    lines.append("bucket %d %d" % (b.cumulative_count, bits(b.upper_bound)))
                    if b.HasField("exemplar"):
                        lines.append(exemplar(b.exemplar))
                lines.append("native %d %d %d" % (h.schema, bits(h.zero_threshold), h.zero_count))
                for s in h.positive_span:
                    lines.append("span %d %d" % (s.offset, s.length))
                lines.append("deltas " + json.dumps(list(h.positive_delta)))
                for e in h.exemplars:
                    lines.append(exemplar(e))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
