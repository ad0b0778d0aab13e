"""The ``ussafety`` command line."""

from ussafety.cli.main import main

__all__ = ["main"]
