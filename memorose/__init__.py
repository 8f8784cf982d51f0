"""Memorose: a distributed, multi-tenant memory database for AI agents.

Importing this package starts no server and touches no network.
"""

__version__ = "0.1.0"
