"""The ``worldmill`` command line (typer + rich). Talks to the stack through the runtime only."""
