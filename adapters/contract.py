"""A reusable contract test suite: does an adapter keep the promises of adapters/base.py?

Third-party adapter packages import this module in their own tests::

    from adapters.contract import AdapterContractSuite, ContractCase, closed_port

    @asynccontextmanager
    async def my_device():              # start a real (or simulated) device...
        server = await start_my_server(port=0)
        try:
            yield {"connection": {"host": "127.0.0.1", "port": server.port}, "points": []}
        finally:
            await server.aclose()       # ...yield the raw settings that reach it

    class TestMyAdapter(AdapterContractSuite):
        case = ContractCase(
            adapter=MyAdapter,
            device=my_device,
            unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port()}},
            invalid=[{"connection": {}}],
            expected_signals={"execution", "part_count"},
        )

pytest collects the `test_*` methods of the subclass. They are plain functions that run
their own event loop (`asyncio.run`), so the third party needs neither pytest-asyncio nor
any fixture of ours; this module does not import pytest at all. Each check is also
available as a coroutine (`check_*`) for other test runners.

What is checked, and why it matters to the gateway:

- the settings model refuses invalid settings (the plant YAML fails at load time, with a
  path, instead of at 3 a.m.), and the constructor refuses a settings object of another
  type with `ConfigurationError`;
- the constructor does no I/O (the gateway builds every adapter before starting any, and
  `edge-gateway validate` builds them with no network at all);
- connect, read, aclose work against a live device, and again on the same instance (the
  runner reconnects that way);
- every sample is well-formed: the asset of the context, a `[a-z0-9_]+` signal name, a
  `Quality`, timezone-aware timestamps, a value canonical JSON can carry (no NaN, no
  integer beyond 2**53 - 1, which the signer would refuse), and the well-known machine state
  signals in the shared vocabulary of models/machine_state.py;
- an unreachable device raises `TransientError` (so the runner backs off), never another
  exception, and within a bounded time;
- reading before connect or after aclose raises `TransientError`;
- aclose is idempotent and safe before connect;
- describe() is JSON-serializable.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from unittest import mock

from pydantic import BaseModel, ValidationError

from adapters.base import Adapter, AdapterContext, PollingAdapter
from adapters.engineering import MAX_SAFE_INTEGER
from models.errors import ConfigurationError, TransientError
from models.machine_state import (
    SIG_BAD_PART_COUNT,
    SIG_ESTOP,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PART_COUNT,
    ControllerMode,
    Execution,
)
from models.sample import Quality, Sample

__all__ = ["AdapterContractSuite", "ContractCase", "closed_port", "run_contract"]

RawSettings = Mapping[str, Any]
SIGNAL_NAME = re.compile(r"^[a-z0-9_]+$")
ASSET = "contract-asset"


@dataclass(frozen=True)
class ContractCase:
    """What the suite needs to know about one adapter.

    `device()` starts a device and yields raw settings (`{"connection": ..., "points": ...}`,
    as in the plant YAML) that reach it; `unreachable()` returns raw settings for an endpoint
    where nothing answers; `invalid` are raw settings the settings model must refuse.
    """

    adapter: type[Adapter]
    device: Callable[[], AbstractAsyncContextManager[RawSettings]]
    unreachable: Callable[[], RawSettings]
    invalid: Sequence[RawSettings] = ()
    expected_signals: frozenset[str] | set[str] = field(default_factory=frozenset)
    unreachable_within: float = 15.0
    """Seconds an unreachable device may take to raise (covers the adapter's own timeout)."""


def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _validate(case: ContractCase, raw: RawSettings) -> BaseModel:
    model = getattr(case.adapter, "settings_model", None)
    assert isinstance(model, type) and issubclass(model, BaseModel), (
        f"{case.adapter.__name__}.settings_model must be a pydantic model class"
    )
    return model.model_validate(dict(raw))


def _make(case: ContractCase, raw: RawSettings) -> Adapter:
    return case.adapter(AdapterContext(asset=ASSET, poll_interval=0.05), _validate(case, raw))


@contextmanager
def _no_io() -> Iterator[list[str]]:
    """Record any attempt to open a socket connection or a file while the block runs."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def hook(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise OSError(f"contract: {what} attempted in the constructor")
        return hook

    with (
        mock.patch.object(socket.socket, "connect", refuse("socket.connect")),
        mock.patch.object(socket.socket, "connect_ex", refuse("socket.connect_ex")),
        mock.patch.object(socket, "create_connection", refuse("socket.create_connection")),
        mock.patch.object(asyncio, "open_connection", refuse("asyncio.open_connection")),
        mock.patch.object(asyncio.BaseEventLoop, "create_connection",
                          refuse("loop.create_connection")),
        mock.patch("os.open", refuse("os.open")),
    ):
        yield attempts


async def _first_batch(adapter: Adapter, within: float) -> Sequence[Sample]:
    async with asyncio.timeout(within):
        if isinstance(adapter, PollingAdapter):
            return await adapter.read_once()
        stream: AsyncIterator[Sequence[Sample]] = adapter.stream()
        try:
            return await anext(stream)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def check_samples(samples: Sequence[Sample], asset: str = ASSET,
                  expected: frozenset[str] | set[str] = frozenset()) -> None:
    """Every sample well-formed; the well-known state signals in the shared vocabulary."""
    assert samples, "the first read returned no samples"
    for s in samples:
        where = f"sample {s!r}"
        assert isinstance(s, Sample), f"{where}: not a models.sample.Sample"
        assert s.asset == asset, f"{where}: asset {s.asset!r}, expected {asset!r}"
        assert SIGNAL_NAME.match(s.signal), f"{where}: signal name must match [a-z0-9_]+"
        assert isinstance(s.quality, Quality), f"{where}: quality must be a Quality"
        assert s.gateway_ts.tzinfo is not None, f"{where}: gateway_ts must be timezone-aware"
        assert s.source_ts is None or s.source_ts.tzinfo is not None, (
            f"{where}: source_ts must be timezone-aware"
        )
        assert s.value is None or isinstance(s.value, (bool, int, float, str)), (
            f"{where}: value must be bool, int, float, str or None"
        )
        if isinstance(s.value, float) and s.quality is Quality.GOOD:
            assert math.isfinite(s.value), f"{where}: NaN/inf must not be quality good"
        if isinstance(s.value, int) and not isinstance(s.value, bool):
            assert abs(s.value) <= MAX_SAFE_INTEGER, (
                f"{where}: canonical JSON (RFC 8785) carries numbers as IEEE doubles; send "
                "integers beyond 2**53 - 1 as text"
            )
        json.dumps(s.value)
        if s.quality is not Quality.GOOD or s.value is None:
            continue
        if s.signal == SIG_EXECUTION:
            assert s.value in {e.value for e in Execution}, f"{where}: not an Execution word"
        elif s.signal == SIG_MODE:
            assert s.value in {m.value for m in ControllerMode}, (
                f"{where}: not a ControllerMode word"
            )
        elif s.signal == SIG_ESTOP:
            assert isinstance(s.value, bool), f"{where}: emergency_stop must be a bool"
        elif s.signal in (SIG_PART_COUNT, SIG_BAD_PART_COUNT):
            assert isinstance(s.value, int) and not isinstance(s.value, bool), (
                f"{where}: counters are integers"
            )
            assert s.value >= 0, f"{where}: counters are non-negative"
    missing = set(expected) - {s.signal for s in samples}
    assert not missing, f"expected signals missing from the first read: {sorted(missing)}"


async def check_settings(case: ContractCase) -> None:
    for raw in case.invalid:
        try:
            _validate(case, raw)
        except ValidationError:
            continue
        raise AssertionError(f"settings model accepted invalid settings {dict(raw)!r}")

    class Other(BaseModel):
        pass

    try:
        case.adapter(AdapterContext(asset=ASSET), Other())
    except ConfigurationError:
        return
    except Exception as exc:
        raise AssertionError(
            f"a settings object of another type must raise ConfigurationError, not {exc!r}"
        ) from exc
    raise AssertionError("a settings object of another type was accepted")


async def check_constructor_no_io(case: ContractCase) -> None:
    raw = case.unreachable()
    settings = _validate(case, raw)
    with _no_io() as attempts:
        started = time.monotonic()
        adapter = case.adapter(AdapterContext(asset=ASSET, poll_interval=0.05), settings)
        took = time.monotonic() - started
    assert not attempts, f"the constructor did I/O: {attempts}"
    assert took < 0.5, f"the constructor took {took:.2f}s; it must not block"
    await adapter.aclose()  # before connect: must be harmless
    await adapter.aclose()


async def check_lifecycle(case: ContractCase) -> None:
    async with case.device() as raw:
        adapter = _make(case, raw)
        try:
            await adapter.connect()
            check_samples(await _first_batch(adapter, 10.0), expected=case.expected_signals)
            json.dumps(adapter.describe(), default=str)
            await adapter.aclose()
            await adapter.aclose()  # idempotent
            # the runner reconnects on the same instance
            await adapter.connect()
            check_samples(await _first_batch(adapter, 10.0), expected=case.expected_signals)
        finally:
            await adapter.aclose()
        await _expect_transient(adapter, "a read after aclose()", 5.0)


async def _expect_transient(adapter: Adapter, what: str, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await _first_batch(adapter, within)
    except TransientError:
        return
    except TimeoutError as exc:
        raise AssertionError(f"{what} hung instead of raising TransientError") from exc
    except Exception as exc:
        raise AssertionError(f"{what} must raise TransientError, not {exc!r}") from exc
    raise AssertionError(f"{what} returned samples instead of raising TransientError")


async def check_unreachable(case: ContractCase) -> None:
    adapter = _make(case, case.unreachable())
    try:
        async with asyncio.timeout(case.unreachable_within):
            await adapter.connect()
            await _first_batch(adapter, case.unreachable_within)
    except TransientError:
        pass
    except TimeoutError as exc:
        raise AssertionError(
            f"an unreachable device did not fail within {case.unreachable_within}s"
        ) from exc
    except Exception as exc:
        raise AssertionError(
            f"an unreachable device must raise TransientError, not {exc!r}"
        ) from exc
    else:
        raise AssertionError("an unreachable device produced samples")
    finally:
        await adapter.aclose()
        await adapter.aclose()


async def check_read_before_connect(case: ContractCase) -> None:
    adapter = _make(case, case.unreachable())
    try:
        await _expect_transient(adapter, "a read before connect()", 5.0)
    finally:
        await adapter.aclose()


CHECKS: dict[str, Callable[[ContractCase], Coroutine[Any, Any, None]]] = {
    "settings": check_settings,
    "constructor_no_io": check_constructor_no_io,
    "lifecycle": check_lifecycle,
    "unreachable": check_unreachable,
    "read_before_connect": check_read_before_connect,
}


async def run_contract(case: ContractCase) -> None:
    """Every check in turn; the first failure raises AssertionError naming the check."""
    for name, check in CHECKS.items():
        try:
            await check(case)
        except AssertionError as exc:
            raise AssertionError(
                f"{case.adapter.__name__} fails contract check {name}: {exc}"
            ) from exc


class AdapterContractSuite:
    """Subclass as `Test...` and set `case`; pytest then runs one test per check."""

    case: ClassVar[ContractCase]

    def _run(self, name: str) -> None:
        asyncio.run(CHECKS[name](self.case))

    def test_settings_validation(self) -> None:
        self._run("settings")

    def test_constructor_does_no_io(self) -> None:
        self._run("constructor_no_io")

    def test_connect_read_aclose(self) -> None:
        self._run("lifecycle")

    def test_unreachable_device_is_transient(self) -> None:
        self._run("unreachable")

    def test_read_before_connect_is_transient(self) -> None:
        self._run("read_before_connect")
