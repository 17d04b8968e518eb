"""A machine's `bookings_file`: time sold by a scheduler, re-read on every refresh so it can
change without a reload. A broken file is logged once and the last good list is kept."""

from __future__ import annotations

from pathlib import Path

import yaml
from structlog.typing import FilteringBoundLogger

from edge.config.loader import read_yaml_file
from models.capacity import parse_bookings
from models.plant import Booking, Machine


def bookings_path(machine: Machine) -> Path | None:
    """The machine's bookings file: the loader anchored a relative one at the YAML file's
    directory (models/config_path.py)."""
    return None if machine.bookings_file is None else Path(machine.bookings_file)


def read_bookings(path: Path) -> list[Booking]:
    """Raises OSError, yaml.YAMLError or ValueError with the reason; the plant file's limits
    apply (size, nesting, alias expansion)."""
    return parse_bookings(read_yaml_file(path) or [])


class BookingsFiles:
    def __init__(self, log: FilteringBoundLogger) -> None:
        self.log = log
        self._cache: dict[str, list[Booking]] = {}
        self._errors: dict[str, str] = {}

    def bookings(self, machine: Machine) -> list[Booking]:
        path = bookings_path(machine)
        if path is None:
            return []
        try:
            found = read_bookings(path)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            if self._errors.get(machine.id) != str(exc):
                self._errors[machine.id] = str(exc)
                self.log.error(
                    "bookings_file_unreadable_keeping_last",
                    asset=machine.id,
                    path=str(path),
                    error=str(exc),
                )
            return self._cache.get(machine.id, [])
        self._errors.pop(machine.id, None)
        self._cache[machine.id] = found
        return found
