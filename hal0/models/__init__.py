"""Models on disk: the registry index and how a slot's model reference resolves."""
