"""Memorose: a distributed, multi-tenant memory database for AI agents.

Importing this package starts no server, touches no network and leaves the host process's
environment alone (the BLAS thread setting lives in the CLI entry point, memorose/cli.py).
"""

__version__ = "0.1.0"
