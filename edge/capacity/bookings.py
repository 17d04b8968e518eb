"""A machine's `bookings_file`: time sold by a scheduler, re-read on every refresh so it can
change without a reload. A broken file is logged once and the last good list is kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from structlog.typing import FilteringBoundLogger

from edge.config.loader import LoadedPlant
from models.capacity import parse_bookings
from models.plant import Booking, Machine


def bookings_path(loaded: LoadedPlant, machine: Machine) -> Path | None:
    if machine.bookings_file is None:
        return None
    path = Path(machine.bookings_file)
    return path if path.is_absolute() else loaded.path.parent / path


def read_bookings(path: Path) -> list[Booking]:
    """Raises OSError, yaml.YAMLError or ValueError with the reason."""
    return parse_bookings(yaml.safe_load(path.read_text(encoding="utf-8")) or [])


class BookingsFiles:
    def __init__(self, config: Callable[[], LoadedPlant], log: FilteringBoundLogger) -> None:
        self.config = config
        self.log = log
        self._cache: dict[str, list[Booking]] = {}
        self._errors: dict[str, str] = {}

    def bookings(self, machine: Machine) -> list[Booking]:
        path = bookings_path(self.config(), machine)
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
