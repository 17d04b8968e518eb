"""The gateway daemon: runner, twin, OEE, egress (envelope, signing, outbox, transport)."""
