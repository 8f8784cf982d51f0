"""Memorose: a distributed, multi-tenant memory database for AI agents.

Importing this package starts no server and touches no network.
"""

import os as _os

# Every vector operation here is a small per-request matrix-vector product; OpenBLAS's thread
# pool makes those ~20x slower on a loaded machine (1.8 ms vs 0.1 ms for 2,500 x 384, measured).
# Set before numpy is first imported; an explicit environment value wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
