"""The gateway on a real clustered broker: three RabbitMQ nodes, the gateway's node killed.

Why: a Mosquitto pair is a stand-in; RabbitMQ (MQTT plugin, 3.1.1) is a broker cluster as
plants run it. bench/rabbitmq_failover.py builds the cluster and counts; this asserts the
promise: nothing lost, nothing reordered, resumed within seconds. Skipped when Debian's
`rabbitmq-server` is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import rabbitmq_failover
from bench.processes import ProcessGroup

pytestmark = pytest.mark.skipif(not rabbitmq_failover.available(),
                                reason="rabbitmq-server is not installed")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rabbitmq_node_killed_loses_nothing(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    try:
        result = rabbitmq_failover.run(group, 0, quick=True)
    finally:
        group.close()
    assert result["gateway_failovers_logged"] >= 1, result
    assert result["envelopes_lost"] == 0 and result["reordered"] == 0, result
    assert result["broken_chain_or_forged"] == 0, result
    assert result["resume_s"] < 6.0, result  # reconnect back-off (1 s) + 5 s
