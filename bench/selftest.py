"""`python -m bench selftest`: the load tool's own parsers checked against the specs' corner
cases, every input also fed split at every byte and one byte at a time."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import gcstats
from bench.plot import sweep_plot
from bench.sse import Event, SSEParser
from bench.wire import BodyReader, ChunkedDecoder, HeadReader, WireError

CASES: list[tuple[str, bytes, list[tuple[str, bytes, str | None]]]] = [
    ("LF", b"id: 1\nevent: task\ndata: {\"a\":1}\n\n", [("task", b'{"a":1}', "1")]),
    ("CRLF", b"id: 2\r\nevent: task\r\ndata: x\r\n\r\n", [("task", b"x", "2")]),
    ("CR", b"id: 3\revent: task\rdata: y\r\r", [("task", b"y", "3")]),
    ("mixed", b"data: a\r\ndata: b\rdata: c\n\r\n", [("message", b"a\nb\nc", None)]),
    ("multi-line data", b"data: one\ndata: two\ndata:\ndata:  three\n\n", [("message", b"one\ntwo\n\n three", None)]),
    ("comments and ping", b": ping\n:\n: hi\n\ndata: z\n\n", [("message", b"z", None)]),
    ("no space after colon", b"data:x\nevent:task\n\n", [("task", b"x", None)]),
    ("field without colon", b"data\n\ndata\ndata\n\n", [("message", b"", None), ("message", b"\n", None)]),
    ("no data, no event", b"event: task\nid: 9\n\ndata: q\n\n", [("message", b"q", "9")]),
    ("id persists", b"id: 5\ndata: a\n\ndata: b\n\n", [("message", b"a", "5"), ("message", b"b", "5")]),
    ("id with NUL ignored", b"id: 7\ndata: a\n\nid: 8\x00\ndata: b\n\n", [("message", b"a", "7"), ("message", b"b", "7")]),
    ("empty id resets", b"id: 7\ndata: a\n\nid\ndata: b\n\n", [("message", b"a", "7"), ("message", b"b", "")]),
    ("BOM", b"\xef\xbb\xbfdata: bom\n\n", [("message", b"bom", None)]),
    ("unknown field", b"foo: bar\ndata: k\n\n", [("message", b"k", None)]),
    ("unfinished event dropped", b"data: done\n\ndata: cut", [("message", b"done", None)]),
    ("utf-8", "data: héllo ✓\n\n".encode(), [("message", "héllo ✓".encode(), None)]),
    ("nchan id", b": hi\n\nid: 1795334985:0\ndata: {\"version\":2}\n\n",
     [("message", b'{"version":2}', "1795334985:0")]),
]


def _events(chunks: list[bytes]) -> tuple[list[Event], SSEParser]:
    parser = SSEParser()
    out: list[Event] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out, parser


def _splits(raw: bytes) -> list[list[bytes]]:
    ways = [[raw], [raw[i : i + 1] for i in range(len(raw))]]
    ways += [[raw[:i], raw[i:]] for i in range(1, len(raw))]
    return ways


def check_sse(fail: Callable[[str], None]) -> int:
    count = 0
    for name, raw, expected in CASES:
        for chunks in _splits(raw):
            events, _ = _events(chunks)
            got = [(e.event, e.data, e.id) for e in events]
            count += 1
            if got != expected:
                fail(f"sse {name!r} split {[len(c) for c in chunks]}: got {got}, expected {expected}")
                break
    _, parser = _events([b"retry: 2500\nretry: x1\n: c\n"])
    if parser.retry != 2500 or parser.comments != 1:
        fail(f"sse retry/comment: retry={parser.retry} comments={parser.comments}")
    return count


def check_wire(fail: Callable[[str], None]) -> int:
    body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n"
    count = 0
    for chunks in _splits(body):
        decoder = ChunkedDecoder()
        out = b"".join(decoder.feed(c) for c in chunks)
        count += 1
        if out != b"Wikipedia in \r\n\r\nchunks." or not decoder.done:
            fail(f"chunked split {[len(c) for c in chunks]}: {out!r} done={decoder.done}")
            break
    try:
        ChunkedDecoder().feed(b"zz\r\n")
        fail("chunked: a bad size was accepted")
    except WireError:
        pass
    head_raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    for chunks in _splits(head_raw):
        reader = HeadReader()
        got = None
        rest = b""
        for c in chunks:
            if got is None:
                got = reader.feed(c)
                if got is not None:
                    rest = got[1]
            else:
                rest += c
        count += 1
        if got is None or got[0].status != 200 or not got[0].chunked or rest != b"5\r\nhello\r\n":
            fail(f"head split {[len(c) for c in chunks]}: {got}")
            break
    reader_204 = HeadReader().feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert reader_204 is not None
    if not BodyReader(reader_204[0]).done:
        fail("a 204 must have no body")
    sized = HeadReader().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef")
    assert sized is not None
    sized_body = BodyReader(sized[0])
    if sized_body.feed(sized[1]) != b"abc" or not sized_body.done:
        fail("content-length body")
    open_ended = HeadReader().feed(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n")
    assert open_ended is not None
    if not BodyReader(open_ended[0]).until_close:
        fail("a body without length or chunking must run until close (nchan EventSource)")
    return count


def check_plot(fail: Callable[[str], None]) -> None:
    levels = {
        "Relay": [{"streams": 1000, "probe_p99_ms": 5.0, "probe_p50_ms": 2.0, "rss_mb": 80.0},
                  {"streams": 5000, "probe_p99_ms": 9.0, "probe_p50_ms": 3.0, "rss_mb": 150.0}],
        "nchan": [{"streams": 1000, "probe_p99_ms": 1.0, "probe_p50_ms": 0.5, "rss_mb": 10.0},
                  {"streams": 5000, "probe_p99_ms": 2.0, "probe_p50_ms": 0.7, "rss_mb": 20.0}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        sweep_plot(path, levels)
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 1000:
            fail("plot: not a PNG")


METRICS = """# HELP relay_gc_pause_seconds Garbage collection pauses of this process
# TYPE relay_gc_pause_seconds histogram
relay_gc_pause_seconds_bucket{{generation="2",le="0.005"}} {a}
relay_gc_pause_seconds_bucket{{generation="2",le="0.02"}} {b}
relay_gc_pause_seconds_bucket{{generation="2",le="0.05"}} {c}
relay_gc_pause_seconds_bucket{{generation="2",le="+Inf"}} {n}
relay_gc_pause_seconds_count{{generation="2"}} {n}
relay_gc_pause_seconds_sum{{generation="2"}} {s}
relay_gc_pause_seconds_created{{generation="2"}} 1.7000000005e+09
relay_ingest_seconds_created 1.7000000001e+09
"""


def check_gc(fail: Callable[[str], None]) -> None:
    """Prometheus parsing, the before/after difference and the bucket figures."""
    pid, before = gcstats.parse_prometheus(METRICS.format(a=3.0, b=4.0, c=4.0, n=4.0, s=0.03))
    pid2, after = gcstats.parse_prometheus(METRICS.format(a=5.0, b=7.0, c=9.0, n=10.0, s=0.5))
    if pid != pid2 or pid != repr(1.7000000001e9):
        fail(f"gc: process identity {pid!r} / {pid2!r}")
    got = gcstats.difference({pid: before}, {pid: after}, "test", 1)
    gen2, total = got["generations"]["2"], got["total"]
    want = {"collections": 6, "over_5ms": 4, "over_20ms": 3, "over_50ms": 1, "longest": "> 50 ms"}
    if any(gen2[k] != v for k, v in want.items()) or total["collections"] != 6:
        fail(f"gc: difference {gen2}")
    if abs(gen2["pause_ms"] - 470) > 1e-6 or got["generations"]["0"]["longest"] != "-":
        fail(f"gc: pause sum / empty generation {got}")
    try:
        gcstats.parse_prometheus("# TYPE relay_http_requests_total counter\n")
        fail("gc: a /metrics without the GC histogram was accepted")
    except ValueError:
        pass
    _, small = gcstats.parse_prometheus(METRICS.format(a=5.0, b=7.0, c=7.0, n=7.0, s=0.1))
    if gcstats.difference({pid: before}, {pid: small}, "t", 1)["total"]["longest"] != "≤ 20 ms":
        fail("gc: longest bucket")


def check_scaleout(fail: Callable[[str], None]) -> None:
    """bench.scaleout: the hub figures read from /metrics, the spread placement, medians, the
    churn phase's leftover subscriptions."""
    from bench import scaleout

    text = ("# HELP relay_hub_messages_total x\n# TYPE relay_hub_messages_total counter\n"
            "relay_hub_messages_total 1234.0\nrelay_hub_messages_created 1.7e9\n"
            "relay_hub_channels 200.0\nrelay_open_streams 199.0\n")
    want = {"relay_hub_messages_total": 1234.0, "relay_hub_channels": 200.0, "relay_open_streams": 199.0}
    if scaleout.hub_metrics(text) != want:
        fail(f"scaleout: hub metrics {scaleout.hub_metrics(text)}")
    spots = [scaleout.placement("spread", i, 2) for i in range(8)]
    if sorted(spots) != sorted([(0, 0), (1, 0), (0, 1), (1, 1)] * 2):
        fail(f"scaleout: spread placement {spots}")
    if {scaleout.placement("bystander", i, 3) for i in range(9)} != {(0, 0)}:
        fail("scaleout: bystander placement")
    if scaleout.split(16, 3) != [6, 5, 5]:
        fail(f"scaleout: split {scaleout.split(16, 3)}")
    got = scaleout.median_of([{"a": 1, "b": {"c": 3.0}, "p": "x"}, {"a": 5, "b": {"c": 1.0}, "p": "x"},
                              {"a": 2, "b": {"c": 2.0}, "p": "x"}])
    if got != {"a": 2, "b": {"c": 2.0}, "p": "x"}:
        fail(f"scaleout: medians {got}")
    found = {"1": {"channels": ["relay:events"], "shardchannels": []},
             "2": {"channels": ["relay:events", "relay:events:t1"], "shardchannels": ["relay:{s3.1}:events:t2"]}}
    if scaleout.leftover("single", found) != ["2: relay:events:t1", "2: relay:{s3.1}:events:t2"]:
        fail(f"scaleout: leftover (single) {scaleout.leftover('single', found)}")
    if scaleout.leftover("cluster", found) != ["2: relay:{s3.1}:events:t2"]:
        fail(f"scaleout: leftover (cluster) {scaleout.leftover('cluster', found)}")
    from bench import servers

    info = servers.info_fields("# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n")
    if info != {"cluster_state": "ok", "cluster_slots_ok": "16384"}:
        fail(f"scaleout: info fields {info}")


def run() -> int:
    problems: list[str] = []
    sse = check_sse(problems.append)
    wire = check_wire(problems.append)
    check_plot(problems.append)
    check_gc(problems.append)
    check_scaleout(problems.append)
    for problem in problems:
        print("FAIL", problem)
    print(f"selftest: {sse} SSE parses, {wire} framing parses, plot, GC and scale-out figures: "
          f"{'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
