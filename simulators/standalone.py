"""`python -m simulators.<protocol>_server`: one simulated machine on a port until Ctrl-C.

Shared by the protocol servers whose command line is just host, port, seed, time scale and
asset id, so each server module keeps only what is particular to its protocol.
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
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--asset", default=asset)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    model = MachineModel.from_options(args.asset, {"seed": args.seed,
                                                   "time_scale": args.time_scale})

    async def run() -> None:
        async with await serve(model, args.host, args.port):
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
