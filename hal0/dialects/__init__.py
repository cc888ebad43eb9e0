"""Client dialects hal0 speaks beside OpenAI's chat API (Ollama, Anthropic, Responses, FIM).

Each module translates (or checks and forwards) one API for the dispatcher. Resolution, auth,
admission and the slot lifecycle stay in ``hal0.dispatch`` and ``hal0.slots``; nothing here
talks to a slot except through a ``Target`` or ``Dispatcher.exchange``."""
