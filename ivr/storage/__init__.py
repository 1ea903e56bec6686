"""The storage layer: the engine and its deadline, the tables, the migrations, the flow store,
the spool files, web sessions and rate-limit counters."""
