"""Other APIs' dialects translated to and from the OpenAI requests hal0 dispatches."""
