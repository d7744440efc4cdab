"""`medtune serve`: an OpenAI-compatible API (app.py) over the batched generation engine (engine.py), with a
web chat (static/). The engine is also `medtune chat`'s generation path."""
