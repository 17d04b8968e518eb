"""S7Adapter against python-snap7's server holding known values, over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from recording_logger import RecordingLogger
from s7_plc import EXPECTED, POINTS, REFUSED, known_plc
from snap7.type import SrvArea

from adapters.base import AdapterContext
from adapters.s7.adapter import S7Adapter, explain
from adapters.s7.settings import S7Settings
from models.errors import DeviceUnavailable
from models.sample import Quality, Sample


def adapter(port: int, points: list[dict[str, Any]] = POINTS, logger: Any = None,
            **conn: Any) -> S7Adapter:
    settings = S7Settings.model_validate({
        "connection": {"host": "127.0.0.1", "port": port, "timeout": 1.0, **conn},
        "points": points,
    })
    return S7Adapter(AdapterContext(asset="plc-1", poll_interval=0.05, logger=logger), settings)


def by_name(samples: Any) -> dict[str, Sample]:
    return {s.signal: s for s in samples}


@pytest.mark.parametrize("pdu", [240, 480])
async def test_reads_every_data_type_decoded(pdu: int) -> None:
    with known_plc() as plc:
        a = adapter(plc.port, pdu_size=pdu)
        await a.connect()
        try:
            got = by_name(await a.read_once())
        finally:
            await a.aclose()
    assert {k: s.value for k, s in got.items()} == EXPECTED
    assert all(s.quality is Quality.GOOD for s in got.values())
    assert got["spindle_speed"].unit == "1/min"
    assert a.plan.pdu == pdu
    # a 256-byte STRING does not fit a 240-byte PDU: read in two chunks and put together
    assert a.last_cycle_requests == len(a.plan.requests)


async def test_reads_are_coalesced_into_few_requests() -> None:
    with known_plc() as plc:
        a = adapter(plc.port)
        await a.connect()
        try:
            await a.read_once()
            facts = a.describe()
        finally:
            await a.aclose()
    # DB5 (88 bytes), DB6 (256), M, I, Q as items of multi-variable reads; T and C alone
    assert facts["requests_per_cycle"] == 3
    assert facts["minimum_requests"] == 1
    assert facts["pdu"] == 480
    assert facts["last_cycle_requests"] == 3


async def test_refused_items_spoil_only_their_points_and_are_explained() -> None:
    log = RecordingLogger()
    with known_plc() as plc:
        a = adapter(plc.port, POINTS + REFUSED, logger=log)
        await a.connect()
        try:
            first = by_name(await a.read_once())
            second = by_name(await a.read_once())
        finally:
            await a.aclose()
    for got in (first, second):
        assert got["missing_db"].quality is Quality.BAD and got["missing_db"].value is None
        assert got["past_the_end"].quality is Quality.BAD
        assert got["part_count"].value == 4711 and got["part_count"].quality is Quality.GOOD
    refused = [kw for event, kw in log.events if event == "s7_read_refused"]
    texts = " ".join(kw["error"] for kw in refused)
    assert "Object does not exist" in texts and "Optimized block access" in texts
    assert len(refused) == len({tuple(kw["items"]) for kw in refused}), "logged once per request"


async def test_values_follow_the_plc() -> None:
    with known_plc() as plc:
        a = adapter(plc.port)
        await a.connect()
        try:
            assert by_name(await a.read_once())["part_count"].value == 4711
            plc.set_bytes(SrvArea.DB, 5, 84, (4712).to_bytes(4, "big"))
            assert by_name(await a.read_once())["part_count"].value == 4712
        finally:
            await a.aclose()


async def test_tsap_connection() -> None:
    with known_plc() as plc:
        a = adapter(plc.port, local_tsap=0x1000, remote_tsap=0x0301)
        assert a.endpoint.endswith("tsap=1000/0301")
        await a.connect()
        try:
            assert by_name(await a.read_once())["program"].value == "Hello"
        finally:
            await a.aclose()


async def test_server_gone_is_device_unavailable() -> None:
    with known_plc() as plc:
        a = adapter(plc.port)
        await a.connect()
        await a.read_once()
        plc.server.stop()
        with pytest.raises(DeviceUnavailable):
            async with asyncio.timeout(5):
                for _ in range(3):  # the first read may still find the socket half-open
                    await a.read_once()
        await a.aclose()


@pytest.mark.parametrize(("code", "words"), [
    (0x03, ["not allowed", "PUT/GET", "Optimized block access"]),
    (0x05, ["Invalid address", "Optimized block access"]),
    (0x0A, ["does not exist", "DB number"]),
    (0x06, ["Data type not supported"]),
])
def test_refusals_name_the_fix(code: int, words: list[str]) -> None:
    text = explain(code)
    assert all(w in text for w in words), text
