"""`edge-gateway` command line. User errors print a located message and exit 2; no tracebacks.

Exit codes: 0 ok, 1 runtime failure (broker port busy, plugin failing), 2 invalid input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from models.errors import EdgeError, PlantConfigError

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT = 0, 1, 2


def _version() -> str:
    try:
        return version("edge-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gateway", description="Industrial IoT edge gateway")
    p.add_argument("--version", action="version", version=f"edge-gateway {_version()}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default=None,
        choices=["auto", "json", "console"],
        help="default: the YAML's gateway.log_format (auto: console on a TTY, else JSON)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a plant YAML; print every error with file:line:col")
    v.add_argument("plant", type=Path)

    s = sub.add_parser("schema", help="print the plant YAML JSON Schema")
    s.add_argument("-o", "--output", type=Path)

    r = sub.add_parser("run", help="run the gateway")
    r.add_argument("-c", "--config", type=Path, required=True)
    r.add_argument(
        "--broker", help="mqtt://HOST:PORT: replace the YAML's destinations with one broker"
    )
    r.add_argument(
        "--with-simulators",
        action="store_true",
        help="also serve the machines marked `simulate: true` (used by `make demo`)",
    )
    r.add_argument(
        "--console",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print a machine table every few seconds (default: when stdout is a TTY)",
    )
    r.add_argument("--console-every", type=float, default=5.0, help="seconds between tables")

    sim = sub.add_parser("simulate", help="serve every machine the YAML marks `simulate: true`")
    sim.add_argument("plant", type=Path)
    return p


def _report(exc: PlantConfigError) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
    return EXIT_INPUT


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from edge.config import json_schema, load_plant
    from edge.observability import configure_logging

    try:
        if args.command == "schema":
            text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
            if args.output:
                args.output.write_text(text)
            else:
                sys.stdout.write(text)
            return EXIT_OK

        if args.command == "validate":
            loaded = load_plant(args.plant)
            plant = loaded.plant
            adapters = sorted({m.adapter for m in plant.machines})
            print(
                f"{args.plant}: ok: gateway {plant.gateway.id} at site {plant.gateway.site}, "
                f"{len(plant.machines)} machine(s) ({', '.join(adapters)}), "
                f"{len(plant.destinations) or 'no'} destination(s), "
                f"{len(plant.shifts.shifts)} shift(s)"
            )
            return EXIT_OK

        loaded = load_plant(args.config if args.command == "run" else args.plant)
        configure_logging(args.log_format or loaded.plant.gateway.log_format, args.log_level)
        if args.command == "simulate":
            from edge.simulation import serve_forever

            return asyncio.run(serve_forever(loaded))

        from edge.pipeline import Gateway, RunOptions

        console = sys.stdout.isatty() if args.console is None else args.console
        options = RunOptions(
            broker_url=args.broker,
            with_simulators=args.with_simulators,
            console=console,
            console_every=args.console_every,
        )
        if args.broker:
            from models.plant import Destination

            try:
                Destination(id="cli", url=args.broker)
            except ValueError:
                print(
                    f"--broker {args.broker!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
                    file=sys.stderr,
                )
                return EXIT_INPUT
        return asyncio.run(Gateway(loaded, options).run())
    except PlantConfigError as exc:
        return _report(exc)
    except EdgeError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
