"""llmnest: deploy an open LLM behind a secured, benchmarked, OpenAI-compatible endpoint."""

__version__ = "0.1.0"
