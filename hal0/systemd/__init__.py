"""The systemd unit hal0 ships (``hal0 unit`` prints it)."""
