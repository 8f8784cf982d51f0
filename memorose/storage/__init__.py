"""Storage engines: RocksDB (source of truth), LanceDB and Tantivy (derived indexes)."""
