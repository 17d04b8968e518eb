"""The reusable contract suite (adapters/contract.py) against every built-in adapter.

Each adapter is checked against its own simulator over real sockets: the same suite a
third-party package runs (see examples/edge-gateway-example-adapter/tests/).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from adapters import contract
from adapters.base import AdapterContext, PollingAdapter
from adapters.contract import AdapterContractSuite, ContractCase, closed_port
from adapters.focas.adapter import FocasAdapter
from adapters.haas.adapter import HaasAdapter
from adapters.modbus.adapter import ModbusAdapter
from adapters.s7.adapter import S7Adapter
from models.sample import Sample, utc_now
from simulators.focas_server import serve_focas
from simulators.haas_server import serve_haas
from simulators.machine import MachineModel
from simulators.modbus_server import start_modbus_simulator
from simulators.s7_server import serve_s7

STATE = {"execution", "controller_mode", "part_count"}


def model(asset: str) -> MachineModel:
    return MachineModel.from_options(asset, {"seed": 3, "time_scale": 60})


# --- Modbus -------------------------------------------------------------------------------

MODBUS_POINTS: list[dict[str, Any]] = [
    {"name": "execution", "register": "holding", "address": 0,
     "map": {0: "ready", 1: "active", 2: "interrupted", 3: "feed_hold", 4: "stopped",
             5: "program_stopped", 6: "program_completed", 7: "wait", 8: "optional_stop"}},
    {"name": "controller_mode", "register": "holding", "address": 1,
     "map": {0: "automatic", 1: "manual", 2: "mdi", 3: "edit", 4: "semi_automatic"}},
    {"name": "part_count", "register": "holding", "address": 10, "data_type": "uint32"},
    {"name": "program", "register": "holding", "address": 40, "data_type": "string", "length": 8},
]


@asynccontextmanager
async def modbus_device() -> AsyncIterator[Mapping[str, Any]]:
    sim = await start_modbus_simulator(model("contract-asset"), port=0)
    try:
        yield {"connection": {"host": "127.0.0.1", "port": sim.endpoints[0].port,
                              "timeout": 1.0}, "points": MODBUS_POINTS}
    finally:
        await sim.aclose()


class TestModbusContract(AdapterContractSuite):
    case = ContractCase(
        adapter=ModbusAdapter,
        device=modbus_device,
        unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port(),
                                            "timeout": 0.5}, "points": MODBUS_POINTS},
        invalid=[{"connection": {"host": "h"}, "points": []},
                 {"connection": {"transport": "rtu"}, "points": MODBUS_POINTS}],
        expected_signals=STATE,
    )


# --- Haas ---------------------------------------------------------------------------------

HAAS_POINTS = [{"name": "spindle_speed", "macro": 3027, "unit": "1/min"},
               {"name": "bad_part_count", "macro": 3902, "data_type": "int"}]


@asynccontextmanager
async def haas_device() -> AsyncIterator[Mapping[str, Any]]:
    m = model("contract-asset")
    sim = await serve_haas(m, port=0)
    try:
        yield {"connection": {"host": "127.0.0.1", "port": sim.ports[m.asset], "timeout": 1.0},
               "points": HAAS_POINTS}
    finally:
        await sim.aclose()


class TestHaasContract(AdapterContractSuite):
    case = ContractCase(
        adapter=HaasAdapter,
        device=haas_device,
        unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port(),
                                            "timeout": 0.5}},
        invalid=[{"connection": {}}, {"connection": {"transport": "serial"}},
                 {"connection": {"host": "h"}, "points": [{"name": "X", "macro": 1}]}],
        expected_signals={"execution", "controller_mode", "serial_number", "model",
                          "control_version", "spindle_speed"},
    )


# --- FOCAS --------------------------------------------------------------------------------

FOCAS_POINTS = [{"name": "part_count", "source": "parameter", "number": 6711,
                 "data_type": "int"},
                {"name": "bad_part_count", "source": "macro", "number": 500, "data_type": "int"}]


@asynccontextmanager
async def focas_device() -> AsyncIterator[Mapping[str, Any]]:
    m = model("contract-asset")
    sim = await serve_focas(m, port=0)
    try:
        yield {"connection": {"host": "127.0.0.1", "port": sim.ports[m.asset], "timeout": 1.0},
               "points": FOCAS_POINTS}
    finally:
        await sim.aclose()


class TestFocasContract(AdapterContractSuite):
    case = ContractCase(
        adapter=FocasAdapter,
        device=focas_device,
        unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port(),
                                            "timeout": 0.5}},
        invalid=[{"connection": {}}, {"connection": {"host": "h", "port": 0}}],
        expected_signals=STATE | {"emergency_stop", "program", "model"},
    )


# --- S7 -----------------------------------------------------------------------------------

S7_POINTS: list[dict[str, Any]] = [
    {"name": "execution", "address": "DB10.DBW0", "data_type": "INT",
     "map": {0: "ready", 1: "active", 2: "interrupted", 3: "feed_hold", 4: "stopped",
             5: "program_stopped", 6: "program_completed", 7: "wait", 8: "optional_stop"}},
    {"name": "controller_mode", "address": "DB10.DBW2", "data_type": "INT",
     "map": {0: "automatic", 1: "manual", 2: "mdi", 3: "edit", 4: "semi_automatic"}},
    {"name": "emergency_stop", "address": "DB10.DBX4.0"},
    {"name": "part_count", "address": "DB10.DBD8", "data_type": "DINT"},
    {"name": "program", "address": "DB10.DBB16", "data_type": "STRING", "length": 32},
]


@asynccontextmanager
async def s7_device() -> AsyncIterator[Mapping[str, Any]]:
    m = model("contract-asset")
    sim = await serve_s7(m, port=0)
    try:
        yield {"connection": {"host": "127.0.0.1", "port": sim.ports[m.asset], "timeout": 1.0},
               "points": S7_POINTS}
    finally:
        await sim.aclose()


class TestS7Contract(AdapterContractSuite):
    case = ContractCase(
        adapter=S7Adapter,
        device=s7_device,
        unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port(),
                                            "timeout": 0.5}, "points": S7_POINTS},
        invalid=[{"connection": {"host": "h"}, "points": []},
                 {"connection": {"host": "h"}, "points": [{"name": "x", "address": "DB1.DBW0.1"}]},
                 {"connection": {"host": "h", "local_tsap": 256}, "points": S7_POINTS}],
        expected_signals=STATE | {"emergency_stop", "program"},
    )


# --- the suite catches what it promises to catch ------------------------------------------



class _Conn(BaseModel):
    host: str
    port: int


class _Settings(BaseModel):
    connection: _Conn
    points: list[Any] = []


class Leaky(PollingAdapter):
    """Connects in its constructor, lets OSError escape, names its signals badly."""

    settings_model: ClassVar[type[BaseModel]] = _Settings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, _Settings)
        self.sock = socket.socket()
        with suppress(OSError):
            self.sock.connect((settings.connection.host, settings.connection.port))

    async def connect(self) -> None:
        s = self.settings
        assert isinstance(s, _Settings)
        await asyncio.open_connection(s.connection.host, s.connection.port)  # OSError escapes

    async def read_once(self) -> Sequence[Sample]:
        return [Sample(self.context.asset, "Bad Name", 1, None, utc_now())]

    async def aclose(self) -> None:
        self.sock.close()


LEAKY = ContractCase(
    adapter=Leaky,
    device=haas_device,  # anything listening will do
    unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port()}},
    invalid=[{"connection": {"host": "h", "port": 1}}],  # valid: the model must "refuse" it
)


@pytest.mark.parametrize(("check", "message"), [
    ("settings", "accepted invalid settings"),
    ("constructor_no_io", "did I/O"),
    ("unreachable", "must raise TransientError"),
    ("lifecycle", "signal name"),
])
def test_suite_catches_a_broken_adapter(check: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        asyncio.run(contract.CHECKS[check](LEAKY))


def test_suite_refuses_integers_canonical_json_cannot_carry() -> None:
    big = Sample(contract.ASSET, "energy", 2**53, None, utc_now())
    with pytest.raises(AssertionError, match="canonical JSON"):
        contract.check_samples([big])
    contract.check_samples([Sample(contract.ASSET, "energy", 2**53 - 1, None, utc_now())])
