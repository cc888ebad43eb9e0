"""One module per engine; only these import an engine's own packages (from its virtualenv)."""
