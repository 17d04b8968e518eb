"""Outbox throughput and latency with 1 KiB envelopes; prints figures, asserts nothing.

    .venv/bin/python bench/bench_outbox.py [--rows 20000] [--dir /var/lib/edge-gateway]

Run it on the target's state directory (`--dir`): fsync cost is what separates
`synchronous=NORMAL` from `FULL`, and it differs by orders of magnitude between an NVMe
disk, an SD card and tmpfs. The append latency percentiles are what justify calling the
outbox on the event loop thread (see edge/egress/outbox.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.signing.jws import b64url_encode

PAYLOAD = os.urandom(768).hex().encode()[:1024]  # 1 KiB, incompressible-looking like JWS
TOPIC = "edge/plant-a/area-1/line-1/m1/telemetry"
HASHES = [b64url_encode(hashlib.sha256(str(i).encode()).digest()) for i in range(1 << 16)]


class Quiet:
    """Logger that drops events: the bench prints figures, not the outbox's warnings."""

    def info(self, event: str, *args: object, **kw: object) -> None: ...
    def warning(self, event: str, *args: object, **kw: object) -> None: ...
    def error(self, event: str, *args: object, **kw: object) -> None: ...


def fill(ob: Outbox, n: int, dests: list[str]) -> list[float]:
    """Append `n` envelopes continuing the chain; per-append latency in seconds."""
    seq = ob.load_chain().next(TOPIC)[0]
    lat = []
    for i in range(seq, seq + n):
        t = time.perf_counter()
        ob.append(TOPIC, i, HASHES[i % len(HASHES)], PAYLOAD, retain=False, dests=dests)
        lat.append(time.perf_counter() - t)
    return lat


def report(name: str, n: int, seconds: float, lat: list[float] | None = None) -> None:
    line = f"{name:<44} {n / seconds:>10,.0f} /s"
    if lat:
        q = statistics.quantiles(lat, n=100)
        line += (f"   p50 {q[49] * 1e6:7.0f} us  p99 {q[98] * 1e6:7.0f} us  "
                 f"max {max(lat) * 1e6:7.0f} us")
    print(line)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(root: Path, rows: int) -> None:
    big = OutboxCap(1 << 40)
    for durable in (False, True):
        mode = "FULL" if durable else "NORMAL"
        n = rows if not durable else max(rows // 20, 200)
        for dests in (["a"], ["a", "b"]):
            d = Path(tempfile.mkdtemp(dir=root))
            with Outbox(d / FILENAME, caps={"a": big, "b": big}, durable=durable) as ob:
                lat = fill(ob, n, dests)
                report(f"append {mode}, {len(dests)} dest(s)", n, sum(lat), lat)
            shutil.rmtree(d)

    d = Path(tempfile.mkdtemp(dir=root))
    path = d / FILENAME
    with Outbox(path, caps={"a": big}) as ob:
        fill(ob, rows, ["a"])
        pending_bytes = ob.pending("a")[1]
        ids: list[int] = []
        after = None

        def drain_peek() -> None:
            nonlocal after
            while batch := ob.peek("a", after, 100):
                ids.extend(r.id for r in batch)
                after = batch[-1].id

        report("peek, batches of 100", rows, timed(drain_peek))
    size = path.stat().st_size
    print(f"{'file size / pending bytes':<44} {size / pending_bytes:>10.2f}   "
          f"({size / 1e6:.1f} MB for {pending_bytes / 1e6:.1f} MB of rows)")
    t = time.perf_counter()
    ob = Outbox(path, caps={"a": big})
    print(f"{'open incl. quick_check':<44} {(time.perf_counter() - t) * 1e3:>10.1f} ms "
          f"  ({rows:,} rows)")
    half = len(ids) // 2
    report("ack one id per call (per PUBACK)", half,
           timed(lambda: [ob.ack("a", [i]) for i in ids[:half]]))
    rest = ids[half:]
    report("ack 100 ids per call", len(rest),
           timed(lambda: [ob.ack("a", rest[i:i + 100]) for i in range(0, len(rest), 100)]))
    ob.close()
    shutil.rmtree(d)

    row = len(PAYLOAD) + len(TOPIC)
    caps = {"a": OutboxCap(1000 * row, "drop_oldest"),
            "g": OutboxCap(1 << 40, "drop_oldest", min_free_disk_bytes=1)}
    d = Path(tempfile.mkdtemp(dir=root))
    with Outbox(d / FILENAME, caps=caps, logger=Quiet()) as ob:
        fill(ob, 1000, ["a"])
        lat = fill(ob, rows, ["a"])
        report("append at cap, each evicts one (drop_oldest)", rows, sum(lat), lat)
        lat = fill(ob, rows, ["g"])
        report("append with free-disk guard (statvfs)", rows, sum(lat), lat)
    shutil.rmtree(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dir", type=Path, default=None, help="directory to test in")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"outbox bench in {tmp}, {len(PAYLOAD)} B payloads, Python "
              f"{sys.version.split()[0]}, SQLite {__import__('sqlite3').sqlite_version}")
        bench(Path(tmp), args.rows)


if __name__ == "__main__":
    main()
