"""The free-disk floor scales with the disk; `validate` warns when the disk is below it."""

from __future__ import annotations

from pathlib import Path

from e2e import plant_yaml, validate

from edge.storage.disk import MIB, DiskSpace, below_floor, default_floor, resolve_floor


def test_default_floor_is_a_share_of_the_disk_within_bounds() -> None:
    assert default_floor(8 * MIB) == 2 * MIB  # a tiny disk: a quarter of it
    assert default_floor(64 * MIB) == 8 * MIB  # the minimum
    assert default_floor(4096 * MIB) == int(4096 * MIB * 0.05)  # 5 %
    assert default_floor(64 * 1024 * MIB) == 512 * MIB  # the maximum


def test_configured_floor_wins_and_an_unmeasurable_disk_has_none() -> None:
    space = DiskSpace(Path("/x"), 4096 * MIB, 100 * MIB)
    assert resolve_floor(0, space) == 0
    assert resolve_floor(123, space) == 123
    assert resolve_floor(None, space) == default_floor(4096 * MIB)
    assert resolve_floor(None, None) == 0


def test_below_floor_says_what_it_means() -> None:
    space = DiskSpace(Path("/state"), 4096 * MIB, 100 * MIB)
    assert below_floor(space, 50 * MIB) is None
    warning = below_floor(space, 200 * MIB)
    assert warning is not None
    assert "100.0 MiB free" in warning and "200.0 MiB" in warning and "live data" in warning


def test_validate_warns_when_the_state_disk_is_below_the_floor(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    floor = 2**62  # more than any disk has free
    dest = (
        f'  - {{id: local, url: "mqtt://127.0.0.1:1883",'
        f" outbox: {{min_free_disk_bytes: {floor}}}}}\n"
    )
    plant.write_text(plant_yaml(tmp_path / "state", [5020], 1883, destinations=dest))
    run = validate(plant)
    assert run.returncode == 0, run.stderr
    assert "below the outbox's free-disk floor" in run.stderr
