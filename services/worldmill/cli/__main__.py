"""``python -m worldmill.cli``."""

from worldmill.cli.main import main

main()
