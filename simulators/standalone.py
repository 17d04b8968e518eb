"""`python -m simulators.<protocol>_server`: simulated machines on a port until Ctrl-C.

The command line every simulator shares (host, port, seed, time scale, asset id, and N
machines for the servers that can serve a fleet), so each server module keeps only what is
particular to its protocol. `run_standalone` is the whole of it for the simplest servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from simulators.machine import MachineModel

Serve = Callable[[MachineModel, str, int], Awaitable[AbstractAsyncContextManager[Any]]]
Started = Awaitable[AbstractAsyncContextManager[Any]]


def standalone_parser(
    *, prog: str, description: str, port: int, asset: str, fleet: str | None = None
) -> argparse.ArgumentParser:
    """The options every simulator takes: host, port, seed, time scale, asset id; with
    `fleet` (the help text of `--machines`) also N machines, `--asset` then a prefix."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    if fleet is None:
        parser.add_argument("--asset", default=asset)
    else:
        parser.add_argument("--machines", type=int, default=1, help=fleet)
        parser.add_argument("--asset", default=asset, help="asset id prefix (part of the seed)")
    return parser


def machine_models(args: argparse.Namespace) -> list[MachineModel]:
    """One model per simulated machine: `--asset` itself, or `<asset>-1`..`<asset>-N` for a
    parser made with `fleet`."""
    options: dict[str, Any] = {"seed": args.seed, "time_scale": args.time_scale}
    count = getattr(args, "machines", None)
    if count is None:
        return [MachineModel.from_options(args.asset, options)]
    return [MachineModel.from_options(f"{args.asset}-{i + 1}", options) for i in range(count)]


def serve_until_interrupted(start: Callable[[], Started]) -> None:
    """Log to stderr, run what `start()` serves until Ctrl-C, then close it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        async with await start():
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


class Main(Protocol):
    def __call__(self, argv: Sequence[str] | None = None) -> None: ...


def standalone_main(module: str, description: str, *, port: int, asset: str,
                    serve: Serve) -> Main:
    """The `main(argv=None)` of `module` (`python -m <module>`): one simulated machine on
    `port` until Ctrl-C."""
    prog = f"python -m {module}"

    def main(argv: Sequence[str] | None = None) -> None:
        run_standalone(argv, prog=prog, description=description, port=port, asset=asset,
                       serve=serve)

    main.__doc__ = f"`{prog}`: one simulated machine until Ctrl-C."
    return main


def run_standalone(
    argv: Sequence[str] | None, *, prog: str, description: str, port: int, asset: str,
    serve: Serve,
) -> None:
    """The whole command line of a simulator with nothing particular to its protocol."""
    parser = standalone_parser(prog=prog, description=description, port=port, asset=asset)
    args = parser.parse_args(argv)
    [model] = machine_models(args)
    serve_until_interrupted(lambda: serve(model, args.host, args.port))
