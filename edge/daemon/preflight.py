"""Check every file and secret a plant YAML refers to, as `run` would use it.

`validate` runs this, so systemd's ExecStartPre catches what `run` (or a SIGHUP reload)
would fail on: platform keys (public_key_file / jwks_file), TLS ca/cert/key files and the
key password, `{file: ...}` and `{env: ...}` secrets, bookings files. Each problem is
located at the YAML field that names the file; messages name the file (as the gateway
looks for it: a relative one beside the YAML) or variable, never a secret's value.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import yaml

from edge.capacity.bookings import bookings_path, read_bookings
from edge.config.loader import LoadedPlant, Loc, format_path, load_plant, share_of
from edge.config.secret_refs import resolve_secret
from edge.query.handler import load_platform_keys
from edge.transport.mqtt import MqttTransport
from models.errors import ConfigProblem, ConfigurationError, PlantConfigError
from models.plant import SecretRef


def check_references(loaded: LoadedPlant) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    file = str(loaded.path)

    def problem(loc: Loc, message: str) -> None:
        line, col = loaded.locate(loc)
        problems.append(ConfigProblem(file, line, col, format_path(loc), message))

    plant = loaded.plant
    for i, p in enumerate(plant.platforms):
        field = "jwks_file" if p.jwks_file is not None else "public_key_file"
        try:
            load_platform_keys([p])
        except ConfigurationError as exc:
            problem(("platforms", i, field), str(exc))

    for i, d in enumerate(plant.destinations):
        secrets: list[tuple[Loc, SecretRef]] = []
        if d.password is not None:
            secrets.append((("destinations", i, "password"), d.password))
        if d.tls is not None and d.tls.key_password is not None:
            secrets.append((("destinations", i, "tls", "key_password"), d.tls.key_password))
        bad_secret = False  # one located problem per cause, not a second vaguer one
        for loc, ref in secrets:
            try:
                resolve_secret(ref)
            except ConfigurationError as exc:
                problem(loc, str(exc))
                bad_secret = True
        for name in ("ca_file", "cert_file", "key_file"):
            tls_file = getattr(d.tls, name) if d.tls is not None else None
            if tls_file is not None and not Path(tls_file).is_file():
                problem(("destinations", i, "tls", name), f"no such file: {tls_file}")
                bad_secret = True
        if bad_secret:
            continue
        try:  # the transport's own checks: username, mqtts://, TLS files as ssl loads them
            MqttTransport(d, client_id="preflight").prepare()
        except ConfigurationError as exc:
            problem(("destinations", i, "tls" if d.tls is not None else "url"), str(exc))

    web = plant.gateway.web
    if web.enabled and web.token is not None:
        try:
            resolve_secret(web.token)
        except ConfigurationError as exc:
            problem(("gateway", "web", "token"), str(exc))

    for i, m in enumerate(plant.machines):
        path = bookings_path(m)
        if path is None:
            continue
        try:
            read_bookings(path)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problem(("machines", i, "bookings_file"), f"cannot use {path}: {reason}")
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return problems


def load_checked(path: str | Path) -> LoadedPlant:
    """The YAML and every file and secret it names: what `run` or a reload would fail on."""
    loaded = load_plant(path)
    # located in the file as the user named it, as the schema's problems are
    # (`plant.yaml:3:31`), not as the absolute path the gateway keeps; the files it refers to
    # are named where the gateway looks for them (anchored at the YAML file's directory)
    problems = check_references(replace(loaded, path=Path(path)))
    if problems:
        raise PlantConfigError(problems)
    return loaded


def load_share_checked(path: str | Path, gateway_id: str | None) -> LoadedPlant:
    """`load_checked`, narrowed to this host's share when the plant is split over gateways
    (edge.config.shares); the whole file is checked first, so locations stay right."""
    return share_of(load_checked(path), gateway_id)


async def load_for_reload(path: str | Path, gateway_id: str | None) -> LoadedPlant:
    """`load_share_checked` for a SIGHUP, off the event loop in a daemon thread that a stop
    need not wait for.

    Why not `asyncio.to_thread`: the loader's limits bound a file's parse, not its time. A
    4 MiB file of schema errors (under every limit) took 80-120 s on a loaded 2-core host,
    mostly locating each problem, and the interpreter joins the default executor's threads
    at exit, so a SIGTERM meanwhile stopped the gateway only when the parse ended (121 s
    measured). A stop cancels this await; the thread's result is then dropped, and the
    process exits without joining it."""
    future: Future[LoadedPlant] = Future()

    def parse() -> None:
        if not future.set_running_or_notify_cancel():  # the reload was cancelled first
            return
        try:
            future.set_result(load_share_checked(path, gateway_id))
        except BaseException as exc:  # handed to the awaiting reload, which reports it
            future.set_exception(exc)

    threading.Thread(target=parse, name="reload-parse", daemon=True).start()
    return await asyncio.wrap_future(future)
