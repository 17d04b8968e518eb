"""`edge-gateway` command line. User errors print a located message and exit 2; no tracebacks.

Exit codes: 0 ok, 1 runtime failure (broker port busy, plugin failing), 2 invalid input,
130 a command that ends by itself (probe, query, browse...) stopped by Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from edge import package_version
from edge.config.workers import (
    MACHINES_PER_WORKER,
    MAX_DEFAULT_WORKERS,
    WorkerRole,
    as_worker,
    state_files,
    workers_for,
)
from models.errors import ConfigurationError, EdgeError, PlantConfigError
from models.plant import QUERY_METHODS

if TYPE_CHECKING:
    from edge.config.loader import LoadedPlant
    from edge.daemon.gateway import RunOptions
    from edge.parts.energy import EnergyWindows

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
T = TypeVar("T")
CLIENT_COMMANDS = ("query", "verify", "watch")


def _workers_arg(text: str) -> int:
    """`--workers`: a count of 1..64, or `auto` (0 here: one per core, capped)."""
    if text == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 1 <= n <= 64:  # the YAML's gateway.workers bounds
        raise argparse.ArgumentTypeError(f"expected 1..64 or auto, got {text!r}")
    return n


def _depth_arg(text: str) -> int:
    """`browse --depth`: levels below the start, 0 or more."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more levels, got {text!r}")
    return n


def _seconds_arg(text: str) -> float:
    """`--timeout`, `--every`, `--seconds`, `--console-every`: a finite number of seconds
    above 0. Zero or less is a usage error: `watch --every 0` redrew its table in a busy
    loop (millions of lines), `probe --timeout -1` reported "no answer within -1 s"."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return seconds


def _platform_id_arg(text: str) -> str:
    """`keys platform --id`: the kit's check (the YAML's `platforms[].id`); imported when
    used, as the command's other parts."""
    from edge.platform_kit.keys import platform_id_arg

    return platform_id_arg(text)


def _broker_arg(text: str) -> str:
    """`--broker`: checked as the YAML checks a destination's `url`, so a mistyped URL
    (`127.0.0.1:1883`, `tcp://...`) is a usage error (exit 2), not a traceback."""
    from models.plant import Destination

    try:
        Destination(id="cli", url=text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
        ) from None
    return text


def _write_output(command: str, path: Path, text: str) -> int:
    """Write a command's result to `-o FILE`; a path that cannot be written (no such
    directory, no permission) is the user's to fix: one line and exit 2, no traceback."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{command}: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


def _worker_argv(
    args: argparse.Namespace, options: RunOptions, configured: bool, role: WorkerRole
) -> list[str]:
    """How the parent of `run --workers N` starts worker `role`: this command line's
    choices, the worker's slot, no console, and the parent's embedded broker if it runs one."""
    argv = [sys.executable, "-m", "edge.cli", "--log-level", args.log_level]
    if args.log_format:
        argv += ["--log-format", args.log_format]
    argv += ["run", "-c", str(args.config), "--no-console", "--worker",
             f"{role.index}/{role.count}"]
    if args.gateway_id:
        argv += ["--gateway-id", args.gateway_id]
    broker = options.broker_url
    if broker is None and not configured:  # no destinations in the YAML
        host, port = options.embedded_broker
        broker = f"mqtt://{host}:{port}"
    if broker:
        argv += ["--broker", broker]
    if args.with_simulators:
        argv.append("--with-simulators")
    return argv


MOVING = "WATCHDOG=1\nEXTEND_TIMEOUT_USEC=60000000"
"""What systemd hears after each machine's state moved to its new worker: alive (the
watchdog, after a SIGHUP), and a minute more to start (TimeoutStartSec, at a start)."""


def _restart_if_asked(code: int, argv: list[str] | None) -> int:
    """`code`, or, when a SIGHUP changed the worker count (`EXIT_RESTART`: every worker
    stopped as by SIGTERM), this same command (`argv`, default this process's) again in
    this process (`exec`: the pid systemd watches stays), which moves the machines' state
    and starts the new pool."""
    from edge.daemon.gateway import EXIT_RESTART

    if code != EXIT_RESTART:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    again = sys.argv[1:] if argv is None else argv
    os.execv(sys.executable, [sys.executable, "-m", "edge.cli", *again])


GATEWAY_ID_HELP = (
    "which share of a plant split over several gateways (`gateways:`) this host serves; "
    "default: $EDGE_GATEWAY_ID, else the YAML's gateway.id"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gateway", description="Industrial IoT edge gateway")
    p.add_argument("--version", action="version", version=f"edge-gateway {package_version()}")
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"],
        help="default info; error for query, verify and watch, whose output is the result "
        "(their own one line says when the broker cannot be reached)",
    )
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
        "--broker", type=_broker_arg,
        help="mqtt://HOST:PORT: replace the YAML's destinations with one broker"
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
    r.add_argument("--console-every", type=_seconds_arg, default=5.0, help="seconds between tables")
    r.add_argument("--gateway-id", help=GATEWAY_ID_HELP)
    r.add_argument(
        "--workers",
        type=_workers_arg,
        help="spread the machines over N processes (`auto`: one per core, at most "
        f"{MAX_DEFAULT_WORKERS}, at least {MACHINES_PER_WORKER} machines each, kept in the "
        "state directory); default: the YAML's gateway.workers (auto)",
    )
    r.add_argument("--worker", type=WorkerRole.parse, help=argparse.SUPPRESS)  # I/N, internal

    sim = sub.add_parser("simulate", help="serve every machine the YAML marks `simulate: true`")
    sim.add_argument("plant", type=Path)

    k = sub.add_parser("keys", help="the gateway's Ed25519 signing keys, or a platform's")
    k.add_argument(
        "action",
        choices=["generate", "rotate", "show", "platform"],
        help="generate: first key (never overwrites); rotate: new key signs from the "
        "next start or reload, the old public key stays published; show: the JWKS; "
        "platform: a key pair for a platform that queries the gateway (-o DIR)",
    )
    k.add_argument("-c", "--config", type=Path, help="the plant YAML (not for `platform`)")
    k.add_argument("--gateway-id", help=GATEWAY_ID_HELP)
    k.add_argument("-o", "--output", type=Path, help="`platform`: directory for the key pair")
    k.add_argument("--id", type=_platform_id_arg, default="my-platform",
                   help="`platform`: the platform's id")

    pr = sub.add_parser(
        "probe", help="read every point of one machine once and judge it (commissioning)"
    )
    pr.add_argument("-c", "--config", type=Path, required=True)
    pr.add_argument("machine", help="the machine id in the plant YAML")
    pr.add_argument(
        "--timeout", type=_seconds_arg, default=10.0, help="seconds to connect and read"
    )

    b = sub.add_parser(
        "browse", help="an OPC UA server's address space with node ids and YAML point lines"
    )
    b.add_argument("endpoint", help="opc.tcp://HOST:PORT[/path]")
    b.add_argument("--path", default=None, help="start here: a node id or /browse/path")
    b.add_argument("--depth", type=_depth_arg, default=6, help="levels below the start")
    b.add_argument("--timeout", type=_seconds_arg, default=10.0)

    w = sub.add_parser(
        "watch", help="verify and decode every stream from a broker as a live table"
    )
    w.add_argument("--broker", type=_broker_arg, required=True, help="mqtt://HOST:PORT")
    w.add_argument("--machine", help="one machine id; default every machine")
    w.add_argument("--topic", default="edge/#", help="topic filter")
    w.add_argument("--every", type=_seconds_arg, default=2.0, help="seconds between tables")
    w.add_argument("--seconds", type=_seconds_arg, default=None, help="stop after; default Ctrl-C")

    a = sub.add_parser("aas", help="Asset Administration Shell (AAS V3) of the plant's machines")
    a.add_argument("action", choices=["export"])
    a.add_argument("-c", "--config", type=Path, required=True)
    a.add_argument("--asset", help="one machine id; default: every machine in one environment")
    a.add_argument("-o", "--output", type=Path, help="file to write; default stdout")

    b = sub.add_parser(
        "bookings",
        help="platform bookings: list them, accept or decline one waiting for a person",
    )
    b.add_argument("action", choices=["list", "accept", "decline"])
    b.add_argument("booking", nargs="?", help="the booking id (accept, decline)")
    b.add_argument("-c", "--config", type=Path, required=True)
    b.add_argument("--gateway-id", help=GATEWAY_ID_HELP)
    b.add_argument("--reason", help="a note for the signed record (decline: the reason)")
    b.add_argument("--all", action="store_true", help="list: every booking, not only those waiting")

    q = sub.add_parser(
        "query", help="ask a gateway over MQTT as a platform would; prints the verified reply"
    )
    q.add_argument("method", choices=list(QUERY_METHODS))
    q.add_argument(
        "params",
        nargs="*",
        help="NAME=VALUE request parameters, e.g. asset=mill-01 window=today; a VALUE is "
        "read as JSON where it parses (hours=8, state='[\"accepted\",\"released\"]'), "
        "ids and references as written (reference=4711 is text)"
    )
    q.add_argument(
        "--broker", type=_broker_arg, required=True, help="mqtt://HOST:PORT of the gateway's broker"
    )
    q.add_argument(
        "--key", type=Path, required=True, help="the platform's Ed25519 private key (PEM)"
    )
    q.add_argument(
        "--gateway", required=True, help="{prefix}/{site}/{gateway}, e.g. edge/plant-a/gw-01"
    )
    q.add_argument("--timeout", type=_seconds_arg, default=10.0)

    ver = sub.add_parser("verify", help="check signed envelopes: signature, kid, seq, prev chain")
    ver.add_argument(
        "capture",
        nargs="?",
        type=Path,
        help="file with one envelope (or {topic, envelope}) per line; - for stdin",
    )
    ver.add_argument("--jwks", type=Path,
                     help="JWKS file (capture mode); default: the keys messages --save wrote")
    ver.add_argument(
        "--broker", type=_broker_arg, help="mqtt://HOST:PORT: verify live instead of from a file"
    )
    ver.add_argument("--topic", default="edge/#", help="topic filter for --broker")
    ver.add_argument(
        "--seconds", type=_seconds_arg, default=30.0, help="how long to listen (--broker)"
    )
    ver.add_argument("--save", type=Path, help="also write what was received, one per line")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _verify(args: argparse.Namespace) -> int:
    from edge.platform_kit.verifier import (
        KeySet,
        Malformed,
        Report,
        capture_jwks,
        verify_stream,
    )

    report: Report
    if args.broker:
        from edge.platform_kit.capture import verify_live

        try:
            save = args.save.open("w") if args.save else None
        except OSError as exc:
            print(f"verify: cannot write {args.save}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_INPUT
        try:
            report = asyncio.run(_until_stopped(lambda stop: verify_live(
                args.broker, args.topic, args.seconds, sys.stderr, save=save, stop=stop
            )))
        finally:
            if save:
                save.close()
    else:
        if args.capture is None:
            print("verify: give CAPTURE [--jwks FILE], or --broker URL", file=sys.stderr)
            return EXIT_INPUT
        try:
            text = sys.stdin.read() if str(args.capture) == "-" else args.capture.read_text()
        except (OSError, ValueError) as exc:
            print(f"verify: capture {args.capture}: {exc}", file=sys.stderr)
            return EXIT_INPUT
        lines = text.splitlines()
        if args.jwks is not None:  # an explicit JWKS wins over the capture's keys records
            try:
                jwks = KeySet.from_jwks(json.loads(args.jwks.read_text()))
            except (OSError, ValueError, Malformed) as exc:  # named: two files are given
                print(f"verify: JWKS {args.jwks}: {exc}", file=sys.stderr)
                return EXIT_INPUT
            print(f"verify: keys from --jwks {args.jwks}", file=sys.stderr)
        else:
            saved = capture_jwks(lines)
            if saved is None:
                print(f"verify: capture {args.capture} holds no keys message (`verify --broker "
                      "--save` writes them); give --jwks FILE", file=sys.stderr)
                return EXIT_INPUT
            jwks = KeySet.from_jwks(saved)
            print(f"verify: keys from the capture's keys message(s): {len(saved['keys'])} "
                  "key(s)", file=sys.stderr)
        report = verify_stream(lines, jwks)
        for f in report.findings:
            print(
                f"{f.kind}: line {f.line} {f.topic or ''} seq {f.seq}: {f.detail}", file=sys.stderr
            )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.total == 0:
        where = f"on {args.topic}" if args.broker else "in the capture"
        print(f"FAILED: nothing verified: no envelope {where} "
              f"(skipped {report.skipped} status/keys/query message(s))")
    else:
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)
        print(
            f"{'OK' if report.ok else 'FAILED'}: {report.total} envelope(s): {counts or 'none'}; "
            f"missing {report.missing}; skipped {report.skipped} status/keys/query"
        )
    forged = report.counts.get("forgery", 0) + report.counts.get("unknown_key", 0)
    return EXIT_RUNTIME if forged or not report.ok else EXIT_OK


def _energy_windows(loaded: LoadedPlant) -> list[EnergyWindows]:
    """Measured footprints from the state directory's part stores (one process's, or each
    worker's), when the gateway has run there (opened only if they exist: an export
    creates nothing)."""
    from edge.parts.energy import EnergyWindows
    from edge.parts.store import FILENAME, PartStore

    paths = state_files(loaded, FILENAME)
    if not paths:
        return [EnergyWindows(lambda: loaded, None)]
    return [EnergyWindows(lambda: loaded, PartStore(p)) for p in paths]


def _aas(args: argparse.Namespace, loaded: LoadedPlant) -> int:
    """The environment from the YAML (nameplate, calendar, KPI structure) and the measured
    carbon footprint of metered machines when the state directory has part records; live
    state and OEE values are filled in by the running gateway."""
    from models.aas import (
        build_environment,
        build_plant_environment,
        environment_json,
        verify_environment,
    )

    plant = loaded.plant
    every = _energy_windows(loaded)
    carbon = {}
    for m in plant.machines:  # a machine's part records are in one store: its worker's
        found = next((f for w in every if (f := w.footprints(m.id)) is not None), None)
        if found is not None:
            carbon[m.id] = found
    method = every[0].method()
    if args.asset:
        try:
            env = build_environment(
                plant, plant.machine(args.asset), carbon=carbon.get(args.asset),
                carbon_method=method,
            )
        except KeyError:
            ids = ", ".join(m.id for m in plant.machines)
            print(
                f"aas: no machine {args.asset!r} in {loaded.path} (machines: {ids})",
                file=sys.stderr,
            )
            return EXIT_INPUT
    else:
        env = build_plant_environment(plant, carbon=carbon, carbon_method=method)
    problems = verify_environment(env)
    if problems:  # our bug, not the user's: refuse to emit an invalid environment
        for p in problems:
            print(f"aas: invalid environment: {p}", file=sys.stderr)
        return EXIT_RUNTIME
    text = json.dumps(environment_json(env), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        return _write_output("aas", args.output, text)
    sys.stdout.write(text)
    return EXIT_OK


def _query(args: argparse.Namespace) -> int:
    from edge.platform_kit.client import load_private_key, params_from_words, query
    from edge.platform_kit.verifier import VerificationError

    try:
        params = params_from_words(args.params)
    except ValueError as exc:
        print(f"query: {exc}", file=sys.stderr)
        return EXIT_INPUT
    key = load_private_key(args.key)
    try:
        record = asyncio.run(
            query(
                args.broker, key, args.gateway.rstrip("/"), args.method, params, wait=args.timeout
            )
        )
    except TimeoutError as exc:
        why = f": {exc}" if str(exc) else ""
        print(f"query: no verified reply within {args.timeout:g} s{why}", file=sys.stderr)
        return EXIT_RUNTIME
    except VerificationError as exc:
        print(f"query: the reply does not verify: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(json.dumps(record, indent=2))
    return EXIT_OK if record.get("ok") else EXIT_RUNTIME


def _disk_warnings(loaded: LoadedPlant) -> list[str]:
    """The state directory's disk already below an outbox's free-disk floor (the gateway
    without destinations uses an embedded broker, with the default outbox settings)."""
    from edge.storage.disk import outbox_floors
    from models.plant import Destination

    dests = loaded.plant.destinations or [Destination(id="embedded", url="mqtt://127.0.0.1")]
    return outbox_floors(dests, loaded.state_dir)[1]


def _keys(args: argparse.Namespace, loaded: LoadedPlant) -> int:
    from edge.config.state_owner import hand_to_state_owner
    from edge.signing.keystore import KeyStore

    store = KeyStore(loaded.keys_dir)
    if args.action == "generate":
        if store.key_path.exists():
            print(f"{store.key_path} exists; use `keys rotate` to replace it", file=sys.stderr)
            return EXIT_INPUT
        signer = store.generate()
        hand_to_state_owner(loaded.state_dir, store.directory)
        print(f"created {store.key_path} kid {signer.kid}")
    elif args.action == "rotate":
        signer = store.rotate()
        hand_to_state_owner(loaded.state_dir, store.directory)
        print(
            f"rotated {store.key_path}: new kid {signer.kid}; previous public keys stay in the "
            "JWKS. Reload the gateway (SIGHUP / systemctl reload) to sign with it."
        )
    else:
        print(json.dumps(store.public_jwks(), indent=2))
    return EXIT_OK


def _bookings(args: argparse.Namespace, loaded: LoadedPlant) -> int:
    from edge.bookings.board import BookingBoard, operator
    from edge.bookings.desk import OperatorDesk, PlantHolds, booking_line
    from edge.bookings.store import FILENAME, BookingStore, Refused
    from edge.capacity.bookings import BookingsFiles
    from edge.observability import get_logger

    # one store, or one per worker (`run --workers N`): each booking lives in one of them
    paths = state_files(loaded, FILENAME) or [loaded.state_dir / FILENAME]
    with contextlib.ExitStack() as opened:
        stores = [opened.enter_context(BookingStore(p)) for p in paths]
        if args.action == "list":
            rows = [r for s in stores for r in s.bookings(states=None if args.all
                                                          else ["requested"])]
            rows.sort(key=lambda r: r.created, reverse=True)
            for row in rows:
                print(booking_line(row))
            if not rows:
                print("no bookings" if args.all else "no booking waits for a decision")
            return EXIT_OK
        if not args.booking:
            print(f"bookings {args.action}: give the booking id", file=sys.stderr)
            return EXIT_INPUT
        # decided and logged as on the status page (`booking_decided`, `via`; on stderr) in
        # the store holding the booking; no flush: the running gateway notices the commit
        # by itself (`booking.poll_seconds`), signs the record and republishes the offer
        log = get_logger(gateway=loaded.plant.gateway.id)
        holds = PlantHolds(lambda: loaded, BookingsFiles(log))
        desks = [OperatorDesk(lambda: loaded, s, holds) for s in stores]
        board = BookingBoard(lambda: desks, lambda: None, log)
        try:
            row = asyncio.run(board.decide(args.booking, accept=args.action == "accept",
                                           reason=args.reason,
                                           via=f"command line by {operator()}"))
        except KeyError:
            print(f"bookings: no booking {args.booking!r}", file=sys.stderr)
            return EXIT_INPUT
        except Refused as exc:
            print(f"bookings: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
        print(booking_line(row))
        return EXIT_OK


def _probe(args: argparse.Namespace, loaded: LoadedPlant) -> int:
    from edge.commissioning.probe import probe, render

    try:
        loaded.plant.machine(args.machine)
    except KeyError:
        ids = ", ".join(m.id for m in loaded.plant.machines)
        print(f"probe: no machine {args.machine!r} in {loaded.path} (machines: {ids})",
              file=sys.stderr)
        return EXIT_INPUT
    result = asyncio.run(probe(loaded, args.machine, args.timeout))
    sys.stdout.write(render(result))
    return EXIT_OK if result.ok else EXIT_RUNTIME


def _browse(args: argparse.Namespace) -> int:
    from edge.commissioning.browse import BrowseError, BrowseInputError, browse, render

    try:
        tree = asyncio.run(browse(args.endpoint, args.path, args.depth, args.timeout))
    except BrowseInputError as exc:
        print(f"browse: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except BrowseError as exc:
        print(f"browse: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    sys.stdout.write(render(tree))
    return EXIT_OK


async def _until_stopped(listen: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """`watch` and `verify --broker` listen until Ctrl-C or SIGTERM, which end the listening
    as `--seconds` does: the report and the exit code still say what was verified (a
    KeyboardInterrupt would skip both and exit 0, as if all was well)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(RuntimeError):  # `main` called off the main thread (tests)
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        return await listen(stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _watch(args: argparse.Namespace) -> int:
    from edge.commissioning.watch import watch

    return asyncio.run(_until_stopped(lambda stop: watch(
        args.broker, args.topic, args.machine, every=args.every, seconds=args.seconds, stop=stop
    )))


def _platform_keys(args: argparse.Namespace) -> int:
    from edge.platform_kit.keys import run

    return run(args.output, args.id)


def _report(exc: PlantConfigError) -> int:
    for line in exc.lines():
        print(line, file=sys.stderr)
    print(f"{exc.total} problem(s) found", file=sys.stderr)
    return EXIT_INPUT


def main(argv: list[str] | None = None) -> int:
    """The command line; output cut short by its reader (`... | head`) is not an error."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader is gone: point stdout at /dev/null so the interpreter's final flush
        # cannot raise again, and exit like a command killed by SIGPIPE (128 + 13)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        # Ctrl-C while a command is still starting (its imports take about a second), before
        # `_main` handles it: a traceback, also from each of `run --workers N`'s workers,
        # which the terminal's Ctrl-C reaches too
        print("edge-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from edge.config.loader import json_schema, load_plant
    from edge.daemon.preflight import load_checked
    from edge.observability import configure_logging

    # stdout carries command results; logs always go to stderr
    if args.log_level is None:
        # a client command's own link is no news beside its result, and its transport's
        # `mqtt_connect_failed` said twice what the command's one line says (the daemon,
        # which has no such line, keeps it)
        args.log_level = "error" if args.command in CLIENT_COMMANDS else "info"
    configure_logging(args.log_format or "auto", args.log_level)
    try:
        if args.command == "schema":
            text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
            if args.output:
                return _write_output("schema", args.output, text)
            else:
                sys.stdout.write(text)
            return EXIT_OK

        if args.command == "validate":
            from edge.config.risks import risky_settings

            loaded = load_checked(args.plant)
            plant = loaded.plant
            for risk in risky_settings(plant):
                print(f"{args.plant}: warning: {risk}", file=sys.stderr)
            adapters = sorted({m.adapter for m in plant.machines})
            print(
                f"{args.plant}: ok: gateway {plant.gateway.id} at site {plant.gateway.site}, "
                f"{len(plant.machines)} machine(s) ({', '.join(adapters)}), "
                + (f"{len(plant.destinations)} destination(s), " if plant.destinations
                   else "no destination: the embedded broker on 127.0.0.1:1883, ")
                + (f"{len(plant.shifts.shifts)} shift(s)" if plant.shifts.shifts
                   else "no shift listed: planned 24/7")
            )
            for warning in _disk_warnings(loaded):
                print(f"{args.plant}: warning: {warning}", file=sys.stderr)
            from edge.storage.state_dir import state_dir_problem

            if (unusable := state_dir_problem(loaded.state_dir)) is not None:
                print(f"{args.plant}: warning: {unusable}; `run` as this user would fail",
                      file=sys.stderr)
            if plant.gateways:
                from edge.config.shares import shares

                for gid, ids in shares(plant).items():
                    print(f"  share {gid}: {len(ids)} machine(s): {', '.join(ids)}")
            return EXIT_OK

        if args.command == "verify":
            return _verify(args)
        if args.command == "query":
            return _query(args)

        if args.command == "browse":
            return _browse(args)
        if args.command == "watch":
            return _watch(args)
        if args.command == "keys" and args.action == "platform":
            return _platform_keys(args)
        if args.command == "keys" and args.config is None:
            print("keys: give -c PLANT.yaml (the gateway's state directory)", file=sys.stderr)
            return EXIT_INPUT
        if args.command == "run":  # this host's share of a split plant
            from edge.daemon.preflight import load_share_checked

            loaded = load_share_checked(args.config, args.gateway_id)
        elif args.command in ("keys", "bookings"):  # this host's state directory
            from edge.config.loader import load_share

            loaded = load_share(args.config, args.gateway_id)
        else:
            config_commands = ("aas", "probe")
            loaded = load_plant(args.config if args.command in config_commands else args.plant)
        if args.command == "bookings":
            return _bookings(args, loaded)
        if args.command == "probe":
            return _probe(args, loaded)
        if args.command == "keys":
            return _keys(args, loaded)
        if args.command == "aas":
            return _aas(args, loaded)
        configure_logging(args.log_format or loaded.plant.gateway.log_format, args.log_level)
        if args.command == "simulate":
            from edge.daemon.simulation import serve_forever

            return asyncio.run(serve_forever(loaded))

        enabled = loaded.enabled_machines()
        # said once per start: by the parent, not again by each of its worker processes
        if (enabled and all(m.simulate for m in enabled) and not args.with_simulators
                and args.worker is None):
            from edge.observability import get_logger

            get_logger().warning(
                "every_machine_is_simulated_but_no_simulator_runs",
                plant=str(loaded.path),
                # said without looking: `edge-gateway simulate` beside it is the documented
                # way to serve them, so the hint must not claim that nothing serves them
                hint="every machine has `simulate: true` and --with-simulators is not given: "
                "fine if `edge-gateway simulate PLANT.yaml` serves them beside this gateway; "
                "otherwise add --with-simulators (the demo) or install a plant of real "
                "machines (config/plant.example.yaml)",
            )
        from edge.daemon import embedded_broker

        if not args.broker and not loaded.plant.destinations and not embedded_broker.available():
            print(f"edge-gateway: {embedded_broker.MISSING}", file=sys.stderr)
            return EXIT_INPUT
        from edge.daemon.gateway import Gateway, RunOptions

        console = sys.stdout.isatty() if args.console is None else args.console
        options = RunOptions(
            broker_url=args.broker,
            with_simulators=args.with_simulators,
            console=console,
            console_every=args.console_every,
        )
        if args.worker is not None:  # a worker process started by `run --workers N`
            from edge.daemon import worker_channel, worker_report

            loaded = as_worker(loaded, args.worker)
            fd = os.environ.get(worker_report.ENV_FD)
            options.stats_fd = int(fd) if fd else None
            channel = os.environ.get(worker_channel.ENV_FD)
            options.channel_fd = int(channel) if channel else None
            options.with_simulators = args.with_simulators
        else:
            options.workers = args.workers
            count = workers_for(loaded, args.workers)
            from edge.daemon import systemd
            from edge.daemon.repartition import Repartition
            from edge.observability import get_logger
            from edge.status.log_keep import restore
            from edge.status.log_tap import TAP

            # the page's history, if a worker-count change restarted this command
            restore(loaded.state_dir, TAP.recent, get_logger(gateway=loaded.plant.gateway.id))

            # every machine's state in its worker's files before any worker opens them
            Repartition(loaded, count, get_logger(gateway=loaded.plant.gateway.id),
                        alive=partial(systemd.notify, MOVING)).run()
            if count > 1:
                from edge.daemon.workers import polls_nothing, serve

                loaded = polls_nothing(loaded)  # no reference to the adapters' settings left
                return _restart_if_asked(asyncio.run(serve(
                    loaded, options, count,
                    partial(_worker_argv, args, options, bool(loaded.plant.destinations)))),
                    argv)
            return _restart_if_asked(asyncio.run(Gateway(loaded, options).run()), argv)
        return asyncio.run(Gateway(loaded, options).run())
    except PlantConfigError as exc:
        return _report(exc)
    except ConfigurationError as exc:  # settings a human must change: invalid input, not a crash
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except EdgeError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:  # Ctrl-C
        if args.command in ("run", "simulate"):
            return EXIT_OK  # the daemons' normal end
        # a command that ends by itself did not finish: its exit 0 read as a good probe, a
        # query answered, keys written (`watch` and `verify --broker` report: _until_stopped)
        print(f"{args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
