"""hal0: a private, OpenAI-compatible inference appliance for one Linux box."""

__all__ = ["__version__"]

__version__ = "0.1.0"
