"""Example third-party edge-gateway adapter for the imaginary LineMeter protocol."""

from .adapter import LineMeterAdapter, LineMeterSettings
from .device import LineMeterDevice, start_device

__all__ = ["LineMeterAdapter", "LineMeterDevice", "LineMeterSettings", "start_device"]
