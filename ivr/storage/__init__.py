"""The storage layer: the engine and its deadline, the tables, the migrations, the audit store
and stored Merkle tree, the flow store, the spool files, web sessions and rate-limit counters."""
