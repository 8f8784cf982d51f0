"""Benchmarks run against the public HTTP API of a node (``memorose bench ...``)."""
