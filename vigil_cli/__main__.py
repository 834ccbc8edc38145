"""``python -m vigil_cli``: the ``vigil`` command line."""

from vigil_cli.cli import main

main()
