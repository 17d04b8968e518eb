"""Part records: the overhead per 1,000 parts, CPU and bytes on the wire, beside the
telemetry the same machine already sends (figures and ratios from one run).

    .venv/bin/python bench/bench_parts.py [--parts 1000] [--cycle 20] [--dir DIR]

Prints figures, asserts nothing. One machine polled every second (execution, counters,
program, spindle load, two temperatures: 7 signals) through the real `AssetTwin`, its meter
(power and kWh) polled every second too; each part is a `--cycle`-second cut then 4 s of
loading, every 10th part has a feed hold, every 25th is scrapped. Two paths run on the same
reads, each on a fresh state directory, with the real signer, sealer and SQLite outbox:

* telemetry (what the gateway does anyway): the twin's fold and one signed telemetry
  envelope per poll of each device;
* part records (what this feature adds): `PartRecorder.on_batch` for every machine and
  meter poll (the pure tracker, a save per state change and closed part, the heartbeat every
  5 s) and one signed `part` envelope per part, with its envelope kept in `parts.sqlite3`.

CPU is process time of each path; bytes are the MQTT payloads (the JWS JSON) of each
stream, per 1,000 parts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metered_plant import metered_machines_yaml
from edge.config.loader import LoadedPlant, load_plant
from edge.devices.twin import AssetTwin
from edge.egress.outbox import FILENAME as OUTBOX
from edge.egress.outbox import Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.parts.recorder import PartRecorder
from edge.parts.store import FILENAME as PARTS
from edge.parts.store import PartStore
from edge.signing.jws import Signer
from models.envelope import Stream, telemetry_record
from models.plant import Destination, machine_topic
from models.sample import Sample

YAML = """
gateway: {id: gw-1, site: plant-a, carbon: {kg_per_kwh: 0.38, source: bench, year: 2025}}
""" + metered_machines_yaml("O1000", 20, ["spindle_load", "spindle_temperature",
                                         "coolant_temperature"])
T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


class Quiet:
    def info(self, event: str, *args: object, **kw: object) -> None: ...
    def warning(self, event: str, *args: object, **kw: object) -> None: ...
    def error(self, event: str, *args: object, **kw: object) -> None: ...
    def debug(self, event: str, *args: object, **kw: object) -> None: ...


class SealingSink:
    """The egress as the stages see it, sealing at once (no batching) and counting bytes."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.bytes = 0
        self.envelopes = 0
        sealer.observers["part"] = [self._count]
        sealer.observers["telemetry"] = [self._count]

    def _count(self, asset: str | None, records: list[dict[str, Any]],
               envelope: dict[str, Any]) -> None:
        self.bytes += len(json.dumps(envelope, separators=(",", ":")))
        self.envelopes += 1

    def emit(self, topic: str, asset: str | None, stream: Stream,
             records: list[dict[str, Any]]) -> None:
        self.sealer.seal(topic, asset, stream, records)

    def add(self, topic: str, asset: str, records: list[dict[str, Any]], *,
            complete: bool = False) -> None:
        self.sealer.seal(topic, asset, "telemetry", records)


def reads(parts: int, cycle: int) -> list[tuple[str, list[Sample]]]:
    """Every poll of the machine and the meter, in order."""
    out: list[tuple[str, list[Sample]]] = []
    t, count, bad, kwh = 0, 0, 0, 1000.0
    for p in range(parts):
        hold = p % 10 == 9
        phases = [("active", cycle // 2), ("feed_hold", 3)] if hold else []
        phases += [("active", cycle - (cycle // 2 if hold else 0)), ("ready", 4)]
        for execution, seconds in phases:
            for _ in range(seconds):
                at = T0 + timedelta(seconds=t)
                cutting = execution == "active"
                if execution == "ready" and _ == 0:
                    count += 1
                    bad += p % 25 == 24
                watts = 9000.0 if cutting else 3700.0 if execution == "feed_hold" else 2200.0
                kwh += watts / 3.6e6
                load = 35.0 + (t % 7) if cutting else 0.0
                values: dict[str, Any] = {
                    "execution": execution, "part_count": count, "bad_part_count": bad,
                    "program": "O1000", "spindle_load": load,
                    "spindle_temperature": 31.5 + (t % 13) / 10,
                    "coolant_temperature": 24.0 + (t % 11) / 10}
                out.append(("m1", [Sample("m1", k, v, None, at) for k, v in values.items()]))
                out.append(("meter", [Sample("meter", "watts", watts, "W", at),
                                      Sample("meter", "kwh", kwh, "kWh", at)]))
                t += 1
    return out


def sealer(state: Path) -> Sealer:
    outbox = Outbox(state / OUTBOX, caps={"local": OutboxCap(2**34, "drop_oldest", 0)},
                    logger=Quiet())
    return Sealer("gw-1", Signer(Ed25519PrivateKey.generate()), outbox,
                  [Destination(id="local", url="mqtt://127.0.0.1")], is_connected=lambda d: True)


def timed(fn: Callable[[], None]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def run(parts: int, cycle: int, base: Path) -> dict[str, float]:
    polls = reads(parts, cycle)
    loaded: LoadedPlant
    (base / "plant.yaml").write_text(YAML)
    loaded = load_plant(base / "plant.yaml")
    plant = loaded.plant

    tele_dir = base / "telemetry"
    tele_dir.mkdir()
    tele = SealingSink(sealer(tele_dir))
    twins = {"m1": AssetTwin("m1"), "meter": AssetTwin("meter")}
    topics = {a: machine_topic(plant, plant.machine(a), "telemetry") for a in twins}

    def telemetry() -> None:
        for asset, batch in polls:
            twins[asset].apply(batch)
            tele.add(topics[asset], asset, [telemetry_record(s) for s in batch], complete=True)

    parts_dir = base / "parts"
    parts_dir.mkdir()
    part_sink = SealingSink(sealer(parts_dir))
    store = PartStore(parts_dir / PARTS)
    recorder = PartRecorder(lambda: loaded, store, part_sink, Quiet(), save_every=5)  # type: ignore[arg-type]
    part_sink.sealer.observers["part"].append(recorder.on_sealed)
    twin = AssetTwin("m1")
    states = []
    for asset, batch in polls:  # the twin's fold is the telemetry path's cost, not ours
        states.append(twin.apply(batch)[0] if asset == "m1" else None)

    def part_records() -> None:
        last_tick = T0
        for (asset, batch), state in zip(polls, states, strict=True):
            recorder.on_batch(asset, batch, state)
            at = batch[0].gateway_ts
            if at - last_tick >= timedelta(seconds=5):
                recorder.tick(at)
                last_tick = at

    cpu_tele = timed(telemetry)
    cpu_parts = timed(part_records)
    store.close()
    per = 1000 / parts
    published = part_sink.envelopes
    return {
        "parts": parts, "published": published, "polls": len(polls),
        "cpu_parts_s": cpu_parts * per, "cpu_telemetry_s": cpu_tele * per,
        "bytes_parts": part_sink.bytes * per, "bytes_telemetry": tele.bytes * per,
        "store_bytes": (parts_dir / PARTS).stat().st_size * per,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=1000)
    ap.add_argument("--cycle", type=int, default=20, help="seconds of cutting per part")
    ap.add_argument("--dir", type=Path, help="where the state directories go (default: tmp)")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-parts-", dir=args.dir))
    try:
        r = run(args.parts, args.cycle, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{r['parts']} parts, {r['published']} part envelopes, {r['polls']} polls "
          f"(machine + meter, 1 s), cycle {args.cycle} s + 4 s loading; per 1,000 parts:")
    ratio = r["cpu_parts_s"] / r["cpu_telemetry_s"]
    print(f"  CPU   part records {r['cpu_parts_s'] * 1000:8.0f} ms   telemetry "
          f"{r['cpu_telemetry_s'] * 1000:8.0f} ms   ratio {ratio:.3f}")
    print(f"  wire  part stream {r['bytes_parts'] / 1e6:8.2f} MB    telemetry "
          f"{r['bytes_telemetry'] / 1e6:8.2f} MB    ratio "
          f"{r['bytes_parts'] / r['bytes_telemetry']:.3f}   "
          f"({r['bytes_parts'] / 1000:,.0f} B per part)")
    print(f"  disk  parts.sqlite3 {r['store_bytes'] / 1e6:8.2f} MB (records, envelopes, "
          "energy per minute, WAL checkpointed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
