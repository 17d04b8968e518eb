"""asyncua's "Received data for unknown subscription" warning for a subscription still being
created: routed down to debug, and only that case.

Why it happens: asyncua's client registers a subscription's callback only once it has
parsed the CreateSubscriptionResponse, while its publish loop keeps a PublishRequest parked
at the server. A server that answers a new subscription's first keep-alive at once (asyncua's
own server does, so the bundled simulator does) can have that PublishResponse handled before
the CreateSubscriptionResponse, and asyncua warns about an unknown subscription id. That
first message cannot carry data (the subscription has no monitored items yet), so nothing
is lost, but a plant engineer reads a warning as a fault.

The adapter avoids the case where it can: alarm events share the data subscription, so a
machine needs one subscription and no publish is parked while it is created. Only a
machine whose items need several subscriptions (MaxMonitoredItemsPerSubscription) still
creates one while a publish is parked; this filter demotes the warning while the adapter
has a CreateSubscription in flight, and lets every other "unknown subscription" warning
(a real one) through unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

# asyncua/client/ua_session.py: UaSession.logger and the exact message of _publish_loop
SESSION_LOGGER = "asyncua.client.ua_session.UaSession"
UNKNOWN_SUBSCRIPTION = "Received data for unknown subscription %s active are %s"


class SubscriptionStartupFilter(logging.Filter):
    """Demotes the unknown-subscription warning to debug while a CreateSubscription of ours
    is in flight (process-wide count: the record does not say which session it is from)."""

    def __init__(self) -> None:
        super().__init__()
        self._in_flight = 0

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Around one `Client.create_subscription` call."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def filter(self, record: logging.LogRecord) -> bool:
        if self._in_flight == 0 or record.msg != UNKNOWN_SUBSCRIPTION:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


STARTUP_FILTER = SubscriptionStartupFilter()
logging.getLogger(SESSION_LOGGER).addFilter(STARTUP_FILTER)
