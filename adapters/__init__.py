"""Protocol adapters, one package per protocol. They see only `models` and `adapters.base`."""
