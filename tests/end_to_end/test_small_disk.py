"""A gateway on a small disk still publishes (issue 12, item 1).

With the old fixed 512 MiB free-disk floor, a state directory on a disk with less free
space refused every envelope even while the broker was connected: nothing was published.
Now the default floor scales with the disk, the floor only stops a backlog from growing,
live data to a connected broker flows, `validate` and the start warn, and the WAL stays
small. A real tmpfs of 40 MiB (default floor: 8 MiB) is filled until 6 MiB are free.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, fill_disk, plant_yaml, small_disk, validate, wait_for

from edge.storage.wal import JOURNAL_SIZE_LIMIT

MIB = 2**20


@pytest.mark.slow
def test_a_disk_below_the_floor_still_delivers_live_data(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/+/+/+/+/telemetry")
    with small_disk(tmp_path / "disk", 40) as disk:
        state = disk / "state"
        state.mkdir()
        fill_disk(disk, 6 * MIB)
        plant = tmp_path / "plant.yaml"
        plant.write_text(plant_yaml(state, [free_port()], mosquitto.port))  # default outbox
        check = validate(plant)
        assert check.returncode == 0 and "free-disk floor of 8.0 MiB" in check.stderr
        gw = GatewayProcess(plant).start()
        try:
            wait_for(lambda: len(col.snapshot()) >= 50, 60, "50 live envelopes on a small disk")
            assert gw.events("disk_below_free_floor")
            wal = state / "outbox.sqlite3-wal"
            assert wal.stat().st_size <= JOURNAL_SIZE_LIMIT + MIB
            gw.signal(signal.SIGTERM)
            assert gw.wait() == 0
        finally:
            gw.kill()
