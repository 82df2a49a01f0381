"""``python -m plait`` runs the CLI."""

from plait.cli.main import main

main()
