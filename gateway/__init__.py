"""The stateless gateway: consistent-hash ring of tenants over shards (Raft groups)."""
