"""The Memorose storage-node process: Raft (PySyncObj), HTTP API, background workers.

The only package that imports PySyncObj.
"""
