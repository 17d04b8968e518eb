"""Pure data and rules of the gateway: no I/O, no asyncio, imports nothing of the project."""
