"""Benchmarks that drive a node from the outside, through its public HTTP API.

They start the node under test as a subprocess (``memorose node``), so this package never
imports ``node`` and measures what a client would see.
"""
