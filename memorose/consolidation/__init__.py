"""L0 -> L1 consolidation: pluggable stages that turn pending events into memories.

The planner runs on the leader and returns plain memory records; the node proposes them in
one replicated command together with the new cursor.
"""
