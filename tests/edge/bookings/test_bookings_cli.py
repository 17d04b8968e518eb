"""`edge-gateway bookings` without a gateway running: the person's side of the store. A
waiting request is listed, declined with a note, and refused a second decision; an unknown
id is a user error (exit 2), a decision the store refuses a runtime one (exit 1). Each
decision, taken or refused, is logged as one taken on the status page is (who, what, why)."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from e2e import ROOT, plant_yaml

from edge.bookings.store import FILENAME, BookingStore
from models.booking import Candidate, parse_reserve
from models.plant import BookingRules, ShiftCalendar


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "bookings", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    """The JSON log lines (stderr is no terminal) of event `name`."""
    lines = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [e for e in lines if e.get("event") == name]


def test_list_decline_and_errors(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [5020], 1883))
    now = datetime.now(UTC)
    with BookingStore(tmp_path / "state" / FILENAME) as store:
        req = parse_reserve(
            {
                "asset": "m1",
                "reference": "po-9",
                "start": (now + timedelta(hours=2)).isoformat(),
                "end": (now + timedelta(hours=3)).isoformat(),
            }
        )
        row, _ = store.reserve(
            "p1",
            req,
            [Candidate("m1")],
            calendar=ShiftCalendar(),
            rules=BookingRules(auto_accept=False),
            now=now,
        )
    listed = cli("list", "-c", str(plant))
    assert listed.returncode == 0, listed.stderr
    assert row.id in listed.stdout and "p1/po-9" in listed.stdout
    assert "auto_accept: false" in listed.stdout and "held until 20" in listed.stdout

    declined = cli("decline", row.id, "--reason", "tooling not free", "-c", str(plant))
    assert declined.returncode == 0, declined.stderr
    assert "declined" in declined.stdout and "tooling not free" in declined.stdout
    # logged as a decision on the page is: who (the login), what, why; on stderr only
    (decided,) = events(declined.stderr, "booking_decided")
    assert (decided["booking"], decided["asset"], decided["state"], decided["by"],
            decided["reason"]) == (row.id, "m1", "declined", "operator", "tooling not free")
    assert decided["via"] == f"command line by {getpass.getuser()}"
    assert "booking_decided" not in declined.stdout
    assert "no booking waits" in cli("list", "-c", str(plant)).stdout
    assert row.id in cli("list", "--all", "-c", str(plant)).stdout

    again = cli("accept", row.id, "-c", str(plant))
    assert again.returncode == 1 and "is declined, not waiting" in again.stderr
    (refused,) = events(again.stderr, "booking_decision_refused")
    assert (refused["booking"], refused["decision"]) == (row.id, "accept")
    assert refused["via"] == decided["via"] and "is declined" in refused["error"]
    unknown = cli("accept", "b-nope", "-c", str(plant))
    assert unknown.returncode == 2 and "no booking 'b-nope'" in unknown.stderr
    missing = cli("accept", "-c", str(plant))
    assert missing.returncode == 2 and "give the booking id" in missing.stderr

    with BookingStore(tmp_path / "state" / FILENAME) as store:
        states = [r["state"] for _, _, r in store.unpublished()]
    assert states == ["requested", "declined"]  # the running gateway would sign these


def test_list_all_shows_what_a_refused_request_asked_and_no_stale_wait(tmp_path: Path) -> None:
    """`bookings list --all` printed `None .. None` for a request declined before it had
    a window, and an accepted booking still read `waits for: ...` as if it waited."""
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [5020], 1883))
    now = datetime.now(UTC)
    far, near = now + timedelta(days=30), now + timedelta(hours=2)
    with BookingStore(tmp_path / "state" / FILENAME) as store:
        rows = [
            store.reserve(
                "p1",
                parse_reserve({"asset": "m1", "reference": ref, "start": start.isoformat(),
                               "end": (start + timedelta(hours=1)).isoformat()}),
                [Candidate("m1")],
                calendar=ShiftCalendar(),
                rules=BookingRules(auto_accept=False, max_horizon_days=7),
                now=now,
            )[0]
            for ref, start in (("po-far", far), ("po-near", near))
        ]
    refused, waiting = rows
    assert (refused.state, refused.start, waiting.state) == ("declined", None, "requested")
    assert cli("accept", waiting.id, "-c", str(plant)).returncode == 0
    listed = cli("list", "--all", "-c", str(plant))
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "None" not in listed.stdout
    assert f"asked: start {far:%Y-%m-%dT%H:%M:%S}" in lines[refused.id]
    assert "accepted" in lines[waiting.id] and "waits for" not in lines[waiting.id]
