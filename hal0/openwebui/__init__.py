"""Open WebUI run, configured and supervised by hal0 beside the slots (see ``service``)."""

from hal0.openwebui.service import CARD, OpenWebUIService, local_url

__all__ = ["CARD", "OpenWebUIService", "local_url"]
