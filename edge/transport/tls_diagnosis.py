"""Say what went wrong with TLS in words an operator can act on.

Why: under TLS 1.3 a broker that requires a client certificate (mTLS) completes the
handshake and only then sends the `certificate_required` alert, which paho sees as "the
connection closed before CONNACK" with reason "Unspecified error" and then the transport
took the broker for a 3.1.1-only one and fell back (issue 12 item 14). The alert text
paho had in hand is only written to its logger, so `PahoSocketErrors` keeps the last one
and `tls_refusal` turns it into a hint: no protocol fallback for a refusal that has
nothing to do with the protocol.
"""

from __future__ import annotations

import logging

__all__ = ["PahoSocketErrors", "tls_refusal"]

# OpenSSL alert names (as in `[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]`) -> what to do
_NO_CLIENT_CERT = ("CERTIFICATE_REQUIRED", "PEER DID NOT RETURN A CERTIFICATE")
_CLIENT_CERT_REFUSED = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN",
                        "ALERT_CERTIFICATE_EXPIRED", "ALERT_CERTIFICATE_REVOKED",
                        "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_ACCESS_DENIED")


class PahoSocketErrors(logging.Handler):
    """Receives paho's error-level log records (`enable_logger`) and keeps the last one."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()

    def take(self) -> str:
        last, self.last = self.last, ""
        return last

    def logger(self, name: str) -> logging.Logger:
        """A logger outside the logging tree (no propagation): paho's errors are folded into
        our own `mqtt_connect_failed` line instead of being printed a second time."""
        log = logging.Logger(name, logging.ERROR)
        log.propagate = False
        log.addHandler(self)
        return log


def tls_refusal(detail: str, has_client_cert: bool) -> str | None:
    """What to do when `detail` (a connection failure) is the broker refusing our TLS client
    side; None when it is something else."""
    upper = detail.upper()
    if any(a in upper for a in _NO_CLIENT_CERT):
        if has_client_cert:
            return "the broker did not accept the client certificate it was offered"
        return ("the broker requires a client certificate (mTLS): set tls.cert_file and "
                "tls.key_file of this destination")
    if any(a in upper for a in _CLIENT_CERT_REFUSED):
        return ("the broker refused the gateway's client certificate: check it is signed by "
                "a CA the broker trusts (its cafile), not expired and not revoked")
    return None
