"""Real-process test harness shared by tests/cluster and ``memorose bench soak``: subprocess
nodes, Raft proxies that cut links and damage snapshot chunks, careful writers, the checker.

It is part of ``node`` (not tests/) because the soak is a product command and the proxy
needs PySyncObj's encryptor; the node process itself never imports it.
"""
