"""Payload formats side by side: records/s and gateway CPU per 1,000 records, one run.

    .venv/bin/python -m bench.bench_formats [--envelopes 400] [--records 50]

Each format runs the real egress path into a real Mosquitto: the sealer signs each poll of
`--records` distinct signals into the SQLite outbox, the destination's sender (or the
Sparkplug session) publishes it, and the clock stops when the outbox is empty (every row
acknowledged, or written for Sparkplug's QoS 0). CPU is this process's (sealing, outbox,
encoding, paho), not the broker's. Signing and storing are the same for every format, so the
differences are the formats' own cost. Prints a table and writes bench/formats.md.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.egress.formats import encoder_for
from edge.egress.formats.sparkplug import SparkplugSender, sparkplug_node_for
from edge.egress.outbox import Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.egress.sender import DestinationSender
from edge.signing.jws import Signer
from edge.transport.mqtt import MqttTransport
from models.plant import Destination, Gateway

from .processes import ProcessGroup, start_mosquitto

HERE = Path(__file__).resolve().parent
TOPIC = "edge/plant-a/hall-1/line-1/m1"
NOTE = """
Signing and storing cost the same for every format (the rows are the same); what differs is
the format's own work. `json` derives the payload and the `jws` property from the stored
envelope (a JSON parse and a base64 decode per row). `json + values` publishes one more,
retained MQTT message per signal per poll (here 50 per envelope), so its cost is per value,
not per envelope. `sparkplug_b` decodes each row's body, keeps every metric's last value and
builds a protobuf DDATA of the changed metrics. Figures vary run to run on a shared machine;
compare the ratios in one run.
"""
FORMATS: list[tuple[str, dict[str, Any]]] = [
    ("envelope", {}),
    ("json", {"format": "json"}),
    ("json + values", {"format": "json", "values": True}),
    ("sparkplug_b", {"format": "sparkplug_b"}),
]


@dataclass
class Figure:
    name: str
    records: int
    seconds: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_ms_per_1000(self) -> float:
        return self.cpu * 1000 / (self.records / 1000)


def poll(i: int, records: int) -> list[dict[str, Any]]:
    ts = "2026-11-22T10:00:00.000Z"
    return [{"signal": f"s{k}", "value": float(i * records + k), "unit": "mm", "ts": ts,
             "quality": "good"} for k in range(records)]


async def measure(name: str, extra: dict[str, Any], port: int, work: Path, *,
                  envelopes: int, records: int) -> Figure:
    log = structlog.get_logger()
    dest = Destination(id="d", url=f"mqtt://127.0.0.1:{port}", **extra)
    outbox = Outbox(work / f"{name.replace(' ', '_')}.sqlite3", caps={"d": OutboxCap(2**30)},
                    logger=log)
    node = sparkplug_node_for(dest, Gateway(id="gw", site="plant-a")) \
        if dest.format == "sparkplug_b" else None
    transport = MqttTransport(dest, f"bench-{name.replace(' ', '-')}",
                              will=node.will if node else None, logger=log)
    sender: DestinationSender | SparkplugSender = (
        SparkplugSender("d", transport, outbox, node, log) if node
        else DestinationSender("d", transport, outbox, log, encoder=encoder_for(dest)))
    sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), outbox, [dest],
                    is_connected=lambda _d: transport.connected)
    await transport.start()
    await transport.wait_connected(10)
    task = asyncio.create_task(sender.run())
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(envelopes):
            sealer.seal(f"{TOPIC}/telemetry", "m1", "telemetry", poll(i, records))
            sender.wake()
            if i % 20 == 0:
                await asyncio.sleep(0)  # let the sender run beside the sealing, as live
        while outbox.pending("d")[0] > 0:  # noqa: ASYNC110 (the outbox has no event to await)
            await asyncio.sleep(0.001)
        return Figure(name, envelopes * records, time.perf_counter() - start,
                      time.process_time() - cpu)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.close()
        await transport.stop()
        outbox.close()


def table(figures: list[Figure], envelopes: int, records: int) -> str:
    base = figures[0]
    lines = [
        f"{envelopes} envelopes of {records} records each, one machine, real Mosquitto "
        "on loopback, measured in one run",
        "",
        "| format | records/s | CPU ms per 1,000 records | CPU vs envelope |",
        "|---|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(f"| {f.name} | {f.per_second:,.0f} | {f.cpu_ms_per_1000:.1f} | "
                     f"{f.cpu_ms_per_1000 / base.cpu_ms_per_1000:.2f}x |")
    return "\n".join(lines) + "\n"


async def run(envelopes: int, records: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work)
        try:
            _, port = start_mosquitto(group)
            return [await measure(name, extra, port, work, envelopes=envelopes, records=records)
                    for name, extra in FORMATS]
        finally:
            group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envelopes", type=int, default=400)
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "formats.md")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    figures = asyncio.run(run(args.envelopes, args.records))
    text = table(figures, args.envelopes, args.records)
    print(text)
    args.out.write_text("# Payload formats\n\n`python -m bench.bench_formats`\n\n" + text + NOTE)


if __name__ == "__main__":
    main()
