"""`python -m mmv_zoo` runs the CLI."""

from .cli.app import main

main()
