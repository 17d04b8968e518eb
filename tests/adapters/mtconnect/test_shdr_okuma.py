"""The SHDR adapter on the real OKUMA recording (IMTS 2022), replayed over TCP.

Expected figures were read off the recording by hand (grep of `pexecution`/`ppartcount`),
not computed by the code under test:

| run | program | ACTIVE from -> to (device clock) | ACTIVE s |
|---|---|---|---|
| 1 | IMTS-2022-2-HOB.MIN  | 13:51:36.7711738 -> 13:54:43.5007997 | 186.7296259 |
| 2 | IMTS-2022-1E-mm.MIN  | 13:37:22.7959508 -> 13:47:27.7586294 | 604.9626786 |
| 3 | IMTS-2022-4B-mm.MIN  | 14:21:10.5107196 -> 14:30:19.4426011 | 548.9318815 |
| 4 | IMTS-2022-3-TRAN.MIN | 13:57:44.3292338 -> 13:58:01.0811320 | 16.7518982 |

Part counting rule (docs/mtconnect.md): parts = sum of `CounterTracker` increments of the
cumulative `part_count`; a drop is a reset whose new value is the increment. The device
shows 0,1 | 0,1 | 2,3 | 0,1: 5 parts, of which 4 were completed under our eyes
(PROGRAM_COMPLETED) and one (1 -> 2 before run 3) while the recording was off.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path

import pytest

from adapters.base import AdapterContext
from adapters.mtconnect.settings import ShdrSettings
from adapters.mtconnect.shdr import ShdrAdapter
from models.machine_state import CounterTracker
from models.sample import Sample
from simulators.shdr_replay import replay

# vendored with licence and provenance: tests/fixtures/mtconnect-cppagent/README.md
MATERIAL = Path(__file__).resolve().parents[2] / "fixtures" / "mtconnect-cppagent"
RECORDING = MATERIAL / "okuma.txt.gz"
DEVICES = MATERIAL / "demo_Devices.xml"

RUNS = [
    ("IMTS-2022-2-HOB.MIN", 186.7296259),
    ("IMTS-2022-1E-mm.MIN", 604.9626786),
    ("IMTS-2022-4B-mm.MIN", 548.9318815),
    ("IMTS-2022-3-TRAN.MIN", 16.7518982),
]


async def read_recording(use_model: bool) -> tuple[ShdrAdapter, list[Sample]]:
    server = await replay(RECORDING, port=0, speed=100_000)
    conn: dict[str, object] = {"host": "127.0.0.1", "port": server.port()}
    points: list[dict[str, str]] = []
    if use_model:
        conn |= {"device_model": str(DEVICES), "device": "OKUMA"}
    else:  # no Devices.xml: the plant YAML types the three keys that matter
        points = [{"key": "pexecution", "type": "EXECUTION"},
                  {"key": "pprogram", "type": "PROGRAM"},
                  {"key": "ppartcount", "type": "PART_COUNT"}]
    settings = ShdrSettings.model_validate({"connection": conn, "points": points})
    a = ShdrAdapter(AdapterContext("okuma"), settings)
    await a.connect()
    got: list[Sample] = []
    try:
        async with asyncio.timeout(30):
            async for batch in a.stream():
                got += batch
                if server.finished.is_set() and a.lines >= 10_770:
                    break
    finally:
        await a.aclose()
        await server.aclose()
    return a, got


def runs(samples: list[Sample]) -> list[tuple[str, float, list[int]]]:
    """(program, ACTIVE seconds by device clock, part counts) per program run."""
    out: list[tuple[str, float, list[int]]] = []
    active_since = None
    for s in samples:
        if s.signal == "program":
            out.append((str(s.value), 0.0, []))
            active_since = None
        elif s.signal == "execution" and out:
            assert s.source_ts is not None
            if active_since is not None:
                prog, t, counts = out[-1]
                out[-1] = (prog, t + (s.source_ts - active_since).total_seconds(), counts)
            active_since = s.source_ts if s.value == "active" else None
        elif s.signal == "part_count" and out and isinstance(s.value, int):
            out[-1][2].append(s.value)
    return out


@pytest.mark.parametrize("use_model", [True, False], ids=["devices_xml", "points"])
async def test_four_runs_in_order_with_active_time(use_model: bool) -> None:
    a, samples = await read_recording(use_model)
    seen = runs(samples)
    assert [p for p, _, _ in seen] == [p for p, _ in RUNS]
    for (prog, active, _), (_, expected) in zip(seen, RUNS, strict=True):
        assert active == pytest.approx(expected, abs=1e-5), prog
    assert a.clock_jumps == 2  # runs 2 and 4 start on an earlier clock than the run before
    assert a.lines >= 10_770
    assert a.refused_assets == 0 and len(a.assets) > 0
    # every condition line of the recording (`system|NORMAL||||`...) was read as one
    assert not any(s.signal.endswith("_cond") or s.signal == "system" for s in samples)


async def test_part_counting_rule() -> None:
    _a, samples = await read_recording(True)
    seen = runs(samples)
    assert [c for _, _, c in seen] == [[0, 1], [0, 1], [2, 3], [0, 1]]
    tracker = CounterTracker()
    increments = [tracker.update(c) for _, _, counts in seen for c in counts]
    assert min(increments) >= 0
    assert sum(increments) == 5
    completed = [s for s in samples if s.signal == "execution" and s.value == "program_completed"]
    assert len(completed) == 4


async def test_feed_rate_converted_from_native_units() -> None:
    """Devices.xml: p1Fact `units="MILLIMETER/SECOND" nativeUnits="MILLIMETER/MINUTE"`; the
    OKUMA adapter sends mm/min (up to 49999.875), the agent would divide by 60, so do we."""
    text = gzip.decompress(RECORDING.read_bytes()).decode()
    recorded = [float(v) for v in re.findall(r"\|p1Fact\|([^|\r\n]*)", text)
                if v != "UNAVAILABLE"]
    assert max(recorded) == 49999.875
    _a, samples = await read_recording(True)
    feed = [s for s in samples if s.signal == "feed_rate" and s.value is not None]
    assert {s.unit for s in feed} == {"mm/s"}
    assert [s.value for s in feed] == pytest.approx([v / 60 for v in recorded])
