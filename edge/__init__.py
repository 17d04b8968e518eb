"""The gateway daemon and its tools (see docs/architecture.md)."""

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed distribution's version; `0+unknown` when run from a bare checkout."""
    try:
        return version("edge-gateway")
    except PackageNotFoundError:
        return "0+unknown"
