"""Home Assistant's Wyoming protocol on hal0's stt and tts slots (see ``service``)."""

from hal0.wyoming.service import WyomingService

__all__ = ["WyomingService"]
