"""Issue 17 item 5 on a real clustered broker: RabbitMQ (Debian's package, MQTT plugin).

Three RabbitMQ nodes on this host joined into one cluster (the third only for the MQTT
plugin's Raft quorum), each with an MQTT listener; the gateway connects to node A
(`urls: [A, B]`), a subscriber to node B; node A's Erlang VM gets SIGKILL mid-stream and
the same counting as bench/failover.py follows. RabbitMQ 3.10 speaks MQTT 3.1.1 only: the
gateway's `protocol: auto` falls back by itself.

`python -m bench --only rabbitmq`. Skipped (recorded as such, not failed) when
`rabbitmq-server` is not installed (`apt-get install rabbitmq-server`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .failover import Pair, measure
from .processes import ProcessGroup, free_port, wait_port

SBIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str | None:
    """The scripts under /usr/lib/rabbitmq/bin run as the calling user; the /usr/sbin
    wrappers would switch to the `rabbitmq` account, which cannot use the bench's files."""
    return str(SBIN / name) if (SBIN / name).exists() else shutil.which(name)


def available() -> bool:
    return _tool("rabbitmq-server") is not None and _tool("rabbitmqctl") is not None


def _ctl(node: str, *args: str, timeout: float = 120.0) -> None:
    ctl = _tool("rabbitmqctl")
    assert ctl is not None
    out = subprocess.run([ctl, "-n", node, *args], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)}: {out.stderr.strip()}")


def _node(group: ProcessGroup, name: str) -> tuple[str, int, Path]:
    """Start one node; returns its Erlang name, its MQTT port and its pid file."""
    server = _tool("rabbitmq-server")
    assert server is not None
    d = group.workdir / f"rabbitmq-{name}"
    d.mkdir()
    mqtt_port = free_port()
    (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    (d / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {free_port()}\nmqtt.listeners.tcp.default = {mqtt_port}\n"
        "mqtt.allow_anonymous = true\nloopback_users = none\n")
    node = f"bench-{name}-{os.getpid()}@localhost"
    env = {"RABBITMQ_NODENAME": node, "RABBITMQ_DIST_PORT": str(free_port()),
           "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
           "RABBITMQ_PID_FILE": str(d / "pid"), "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
           "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand")}
    child = group.spawn(f"rabbitmq-{name}", [server], env=env)
    deadline = time.monotonic() + 120
    while True:  # await_startup fails at once until the VM has registered with epmd
        try:
            _ctl(node, "await_startup", timeout=60.0)
            break
        except RuntimeError:
            if time.monotonic() > deadline or not child.alive():
                raise
            time.sleep(0.5)
    return node, mqtt_port, d / "pid"


def rabbitmq_pair(group: ProcessGroup) -> Pair:
    a, a_port, a_pid = _node(group, "a")
    b, b_port, _ = _node(group, "b")
    # a third node only for quorum: RabbitMQ's MQTT plugin registers client ids in a Raft
    # cluster (`mqtt_node`); with two nodes, losing one loses the majority, and B then
    # stalls every new MQTT connection (the gateway's failover among them) until A is back
    c, c_port, _ = _node(group, "c")
    for joining, its_port in ((b, b_port), (c, c_port)):
        _ctl(joining, "stop_app")
        _ctl(joining, "join_cluster", a)
        _ctl(joining, "start_app")
        wait_port(its_port, 60.0)
    # the gateway's persistent MQTT session is a classic queue on the node it first joined
    # (A); unmirrored, B cannot serve its SUBSCRIBE once A is gone and drops the connection,
    # so the session queues are mirrored on every node (RabbitMQ 3.x's documented MQTT HA)
    _ctl(a, "set_policy", "--apply-to", "queues", "mqtt-sessions", "^mqtt-subscription-",
         '{"ha-mode": "all", "ha-sync-mode": "automatic"}')

    def kill_a() -> None:
        pid = int(a_pid.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)  # the Erlang VM of node A, at once

    def close() -> None:
        for node in (c, b, a):  # node A is dead already: its stop fails, quietly
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ctl(node, "stop", timeout=60.0)

    return Pair(a_port, b_port, kill_a, close,
                "RabbitMQ 3.x, three nodes in one cluster (MQTT plugin, 3.1.1; the third for "
                "Raft quorum)")


def run(group: ProcessGroup, _broker_port: int, quick: bool) -> dict[str, Any]:
    if not available():
        return {"skipped": "rabbitmq-server is not installed (apt-get install rabbitmq-server)"}
    return measure(group, rabbitmq_pair(group), quick)
