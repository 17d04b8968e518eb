"""asyncua's own lines about a connection that is already gone, routed to debug.

Why: when a server goes away (stopped, restarted, network lost) the runner says so once, in
a `device_unavailable` line naming the machine and the reason, and retries. asyncua added
lines of its own that name no machine: on the loss, its publish loop's error with a
traceback ("Publish iteration crashed; retrying in 1s", ConnectionError: Connection is
closed) and "close_session was called but connection is closed"; then, at every retry,
"close_secure_channel was called but connection is closed", because the adapter tears each
failed client down with `Client.disconnect()` (which also cancels asyncua's supervisor
tasks) and there was nothing left to close (24 warnings in a 14-minute server outage).
Nothing is hidden by demoting exactly these: the loss itself is reported by the runner.
Every other asyncua warning and error, and a publish-loop crash for any other reason,
comes out unchanged.
"""

from __future__ import annotations

import logging

# asyncua/client/ua_client.py and ua_session.py: the loggers and their exact messages
CLIENT_LOGGER = "asyncua.client.ua_client.UaClient"
SESSION_LOGGER = "asyncua.client.ua_session.UaSession"
NOTHING_TO_CLOSE = {
    CLIENT_LOGGER: "close_secure_channel was called but connection is closed",
    SESSION_LOGGER: "close_session was called but connection is closed",
}
PUBLISH_CRASHED = "Publish iteration crashed; retrying in 1s"


class GoneConnectionFilter(logging.Filter):
    """Demotes those messages to debug (shown only when asyncua logs at debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _about_a_gone_connection(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _about_a_gone_connection(record: logging.LogRecord) -> bool:
    if record.msg == NOTHING_TO_CLOSE.get(record.name):
        return True
    if record.name == SESSION_LOGGER and record.msg == PUBLISH_CRASHED and record.exc_info:
        return isinstance(record.exc_info[1], ConnectionError)
    return False


FILTER = GoneConnectionFilter()


def install() -> None:
    """On asyncua's client and session loggers; idempotent (the adapter calls it on import)."""
    for name in (CLIENT_LOGGER, SESSION_LOGGER):
        logging.getLogger(name).addFilter(FILTER)
