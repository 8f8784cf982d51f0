"""Benchmarks that drive a node from the outside, through its public HTTP API
(``memorose bench ...``).

They start the node under test as a subprocess (``memorose node`` / ``memorose up``), so this
package never imports ``node`` and measures what a client would see.
"""
