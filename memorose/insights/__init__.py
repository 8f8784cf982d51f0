"""The L2 insight graph: a tenant's active memories and their edges projected into networkx
(``projection``), Louvain communities with PageRank and centrality (``communities``), and one
insight per community (``synthesis``); ``planner`` turns a pass into the replicated command.
See docs/insights.md."""
