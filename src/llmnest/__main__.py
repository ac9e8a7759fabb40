"""`python -m llmnest` runs the CLI."""

from .cli.main import run

run()
